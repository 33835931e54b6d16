"""Catalog endpoints: public reads, admin writes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Request, get, patch, post
from litestar.params import Parameter

from api.access import Routes
from api.docs import ANSWER_ID, link, operation, problems
from api.idempotency import answered, idempotency_of
from api.inbound import read_body
from api.requests import (
    Cursor,
    Limit,
    OptionIn,
    OptionPatch,
    PathId,
    ProductIn,
    ProductPatch,
    parse,
    positive_id,
)
from engine import Engine, limits
from engine.models import Page, Product, ProductOption, Top

# What a client does next with a product it has made or read.
PRODUCT_LINKS = {
    "read_product": link("get_product", "Read the product again, with live stock",
                         path={"product_id": ANSWER_ID}),
    "update_product": link("update_product", "Rename, reprice or restock it (admin)",
                           path={"product_id": ANSWER_ID}),
    "order_product": link("place_order", "Order one unit of it",
                          body={"items": [{"product_id": ANSWER_ID, "quantity": 1}]}),
    "put_in_cart": link("put_cart_item", "Put it in the cart", path={"product_id": ANSWER_ID}),
    "add_option": link("add_option", "Add an option (a size, a colour) with its own stock "
                       "(admin)", path={"product_id": ANSWER_ID}),
}
# What a client does next with an option it has made: the answer names its product.
OPTION_PRODUCT = "$response.body#/product_id"
OPTION_LINKS = {
    "read_product": link("get_product", "Read its product, with every option's live stock",
                         path={"product_id": OPTION_PRODUCT}),
    "update_option": link("update_option", "Rename, reprice or restock the option (admin)",
                          path={"product_id": OPTION_PRODUCT, "option_id": ANSWER_ID}),
    "put_option_in_cart": link("put_cart_option", "Put the option in the cart",
                               path={"product_id": OPTION_PRODUCT, "option_id": ANSWER_ID}),
}

# The catalog's filters. A boolean is written true or false, nothing else (Litestar alone
# would also take 1, yes, on, ...): a filter a client misspells must not pass unnoticed.
Flag = Literal["true", "false"]
CategoryFilter = Annotated[str | None, Parameter(
    description=f"only the products of this category ({limits.CATEGORY_LENGTH.low}.."
                f"{limits.CATEGORY_LENGTH.high} characters)",
    schema_extra={"min_length": limits.CATEGORY_LENGTH.low,  # documents what the engine
                  "max_length": limits.CATEGORY_LENGTH.high,  # checks (check_category)
                  "pattern": limits.PLAIN_TEXT_PATTERN})]
InStock = Annotated[Flag | None, Parameter(
    description="true: only products with stock left; false: only the sold out")]
OnSale = Annotated[Flag | None, Parameter(
    description="true: only products on sale now (status and window); false: only the others")]


def _flag(value: Flag | None) -> bool | None:
    return None if value is None else value == "true"


def routes(engine: Engine) -> Routes:
    """The catalog endpoints over ``engine``."""

    @get("/products", responses=problems(400))
    async def list_products(limit: Limit = 20, cursor: Cursor = None,
                            category: CategoryFilter = None, in_stock: InStock = None,
                            on_sale: OnSale = None) -> Page[Product]:
        """The catalog by id ascending, with live stock; only the products that pass the
        filters given (pages stay correct: the cursor is the last id answered)."""
        return await engine.products(limit, cursor or None, category=category,
                                     in_stock=_flag(in_stock), on_sale=_flag(on_sale))

    @get("/products/top", responses=problems())
    async def top_products() -> Top:
        """The 5 best sellers of the last 72 hours (paid, not cancelled), ties by smaller id."""
        return await engine.top()

    @get("/products/{product_id:str}", operation_class=operation(links={200: PRODUCT_LINKS}),
         responses=problems(400, 404))
    async def get_product(product_id: PathId) -> Product:
        """One product with live stock."""
        return await engine.product(positive_id(product_id, "product_id"))

    @post("/products", status_code=201,
          operation_class=operation(ProductIn, idempotent=True, links={201: PRODUCT_LINKS}),
          responses=problems(400, 401, 403, 413, 422, 429))
    async def create_product(request: Request[Any, Any, Any]) -> Product:
        """Add a product to the catalog (admin); honours Idempotency-Key."""
        body = await read_body(request)
        data = parse(ProductIn, body)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.create_product(
            data.name, data.price, data.own_stock(), admin_id=request.user.user_id, idem=idem,
            options=[option.new() for option in data.options], status=data.status,
            sale_starts_at=data.sale_starts_at, sale_ends_at=data.sale_ends_at,
            max_per_user=data.max_per_user, category=data.category), 201)

    @patch("/products/{product_id:str}",
           operation_class=operation(ProductPatch, links={200: PRODUCT_LINKS}),
           responses=problems(400, 401, 403, 404, 409, 413))
    async def update_product(request: Request[Any, Any, Any], product_id: PathId) -> Product:
        """Rename, reprice, restock, suspend or reopen a product, set or clear its sale
        window, limit and category; stock never goes below 0 (admin). Every group sees the
        change before this answers."""
        pid = positive_id(product_id, "product_id")
        data = parse(ProductPatch, await read_body(request))
        return await engine.update_product(
            pid, name=data.name, price=data.price, stock_delta=data.stock_delta,
            status=data.status, sale_starts_at=data.sale_starts_at,
            sale_ends_at=data.sale_ends_at, max_per_user=data.max_per_user,
            category=data.category)

    @post("/products/{product_id:str}/options", status_code=201,
          operation_class=operation(OptionIn, idempotent=True, links={201: OPTION_LINKS}),
          responses=problems(400, 401, 403, 404, 413, 422, 429))
    async def add_option(request: Request[Any, Any, Any], product_id: PathId) -> ProductOption:
        """Add an option with its own stock to a product (at most 100; a product without
        options must have no stock of its own left); honours Idempotency-Key (admin)."""
        pid = positive_id(product_id, "product_id")
        body = await read_body(request)
        data = parse(OptionIn, body)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.add_option(
            pid, data.name, data.extra_price, data.stock, admin_id=request.user.user_id,
            idem=idem), 201)

    @patch("/products/{product_id:str}/options/{option_id:str}",
           operation_class=operation(OptionPatch, links={200: OPTION_LINKS}),
           responses=problems(400, 401, 403, 404, 409, 413))
    async def update_option(request: Request[Any, Any, Any], product_id: PathId,
                            option_id: PathId) -> ProductOption:
        """Rename, reprice (extra_price) or restock an option; its stock never goes below
        0 (admin)."""
        pid = positive_id(product_id, "product_id")
        oid = positive_id(option_id, "option_id")
        data = parse(OptionPatch, await read_body(request))
        return await engine.update_option(pid, oid, name=data.name,
                                          extra_price=data.extra_price,
                                          stock_delta=data.stock_delta)

    return Routes(public=[list_products, top_products, get_product],
                  admin=[create_product, update_product, add_option, update_option])
