"""Cart endpoints: the caller's cart, priced live, and its checkout."""

from __future__ import annotations

from litestar import delete, get, post, put

from api.access import Routes
from api.auth import UserRequest
from api.docs import link, operation, problems
from api.idempotency import answered, idempotency_of
from api.inbound import read_body
from api.metrics import Metrics
from api.orders import ORDER_LINKS, counted
from api.requests import CartItemIn, CheckoutIn, PathId, parse, positive_id
from engine import Engine
from engine.models import Cart, Order

# What a client does next with the cart it has filled.
CART_LINKS = {"check_out": link("checkout", "Order what the cart holds")}


def routes(engine: Engine, metrics: Metrics) -> Routes:
    """The cart endpoints over ``engine``; checkouts count as orders."""

    @get("/cart", responses=problems(401))
    async def get_cart(request: UserRequest) -> Cart:
        """The caller's cart with live prices and stock."""
        return await engine.cart(request.user.user_id)

    @put("/cart/items/{product_id:str}",
         operation_class=operation(CartItemIn, links={200: CART_LINKS}),
         responses=problems(400, 401, 404, 409, 413, 429))
    async def put_cart_item(request: UserRequest, product_id: PathId) -> Cart:
        """Set a product's quantity in the cart (checked against live stock)."""
        pid = positive_id(product_id, "product_id")
        data = parse(CartItemIn, await read_body(request))
        return await engine.put_cart_item(request.user.user_id, pid, data.quantity)

    @delete("/cart/items/{product_id:str}", responses=problems(400, 401, 429))
    async def remove_cart_item(request: UserRequest, product_id: PathId) -> None:
        """Take a product out of the cart (absent is fine)."""
        pid = positive_id(product_id, "product_id")
        await engine.remove_cart_item(request.user.user_id, pid)

    @put("/cart/items/{product_id:str}/options/{option_id:str}",
         operation_class=operation(CartItemIn, links={200: CART_LINKS}),
         responses=problems(400, 401, 404, 409, 413, 429))
    async def put_cart_option(request: UserRequest, product_id: PathId,
                              option_id: PathId) -> Cart:
        """Set the quantity of one option of a product in the cart (checked as an order
        checks it: the option is the product's, the product on sale, the option's live
        stock)."""
        pid = positive_id(product_id, "product_id")
        oid = positive_id(option_id, "option_id")
        data = parse(CartItemIn, await read_body(request))
        return await engine.put_cart_item(request.user.user_id, pid, data.quantity, oid)

    @delete("/cart/items/{product_id:str}/options/{option_id:str}",
            responses=problems(400, 401, 429))
    async def remove_cart_option(request: UserRequest, product_id: PathId,
                                 option_id: PathId) -> None:
        """Take one option of a product out of the cart (absent is fine)."""
        pid = positive_id(product_id, "product_id")
        oid = positive_id(option_id, "option_id")
        await engine.remove_cart_item(request.user.user_id, pid, oid)

    @post("/cart/checkout", status_code=201,
          operation_class=operation(CheckoutIn, idempotent=True, links={201: ORDER_LINKS}),
          responses=problems(400, 401, 404, 409, 413, 422, 429))
    async def checkout(request: UserRequest) -> Order:
        """Order everything in the cart; the bought lines leave it; honours Idempotency-Key."""
        body = await read_body(request)
        data = parse(CheckoutIn, body)
        idem = idempotency_of(request, body)
        placing = engine.checkout(request.user.user_id, data.issued_coupon_id, idem)
        return await answered(idem, counted(metrics, placing, idem), 201)

    return Routes(user=[get_cart, put_cart_item, remove_cart_item, put_cart_option,
                        remove_cart_option, checkout])
