"""Catalog endpoints: public reads, admin writes."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, patch, post

from api.access import Routes
from api.docs import ANSWER_ID, link, operation, problems
from api.idempotency import answered, idempotency_of
from api.inbound import read_body
from api.requests import Cursor, Limit, PathId, ProductIn, ProductPatch, parse, positive_id
from engine import Engine
from engine.models import Page, Product, Top

# What a client does next with a product it has made or read.
PRODUCT_LINKS = {
    "read_product": link("get_product", "Read the product again, with live stock",
                         path={"product_id": ANSWER_ID}),
    "update_product": link("update_product", "Rename, reprice or restock it (admin)",
                           path={"product_id": ANSWER_ID}),
    "order_product": link("place_order", "Order one unit of it",
                          body={"items": [{"product_id": ANSWER_ID, "quantity": 1}]}),
    "put_in_cart": link("put_cart_item", "Put it in the cart", path={"product_id": ANSWER_ID}),
}


def routes(engine: Engine) -> Routes:
    """The catalog endpoints over ``engine``."""

    @get("/products", responses=problems(400))
    async def list_products(limit: Limit = 20, cursor: Cursor = None) -> Page[Product]:
        """The catalog by id ascending, with live stock."""
        return await engine.products(limit, cursor or None)

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
            data.name, data.price, data.stock, admin_id=request.user.user_id, idem=idem), 201)

    @patch("/products/{product_id:str}",
           operation_class=operation(ProductPatch, links={200: PRODUCT_LINKS}),
           responses=problems(400, 401, 403, 404, 409, 413))
    async def update_product(request: Request[Any, Any, Any], product_id: PathId) -> Product:
        """Rename, reprice or restock a product; stock never goes below 0 (admin)."""
        pid = positive_id(product_id, "product_id")
        data = parse(ProductPatch, await read_body(request))
        return await engine.update_product(
            pid, name=data.name, price=data.price, stock_delta=data.stock_delta)

    return Routes(public=[list_products, top_products, get_product],
                  admin=[create_product, update_product])
