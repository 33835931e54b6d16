"""Order endpoints: place, read, list and cancel the caller's orders."""

from __future__ import annotations

from litestar import get, post

from api.access import Routes
from api.auth import UserRequest
from api.docs import operation, problems
from api.idempotency import idempotency_of
from api.inbound import read_body
from api.metrics import Metrics
from api.requests import Cursor, Limit, OrderId, OrderIn, parse
from engine import Engine
from engine.models import Order, Page


def routes(engine: Engine, metrics: Metrics) -> Routes:
    """The order endpoints over ``engine``; placed and refused orders are counted."""

    @post("/orders", status_code=201, operation_class=operation(OrderIn, idempotent=True),
          responses=problems(400, 401, 404, 409, 413, 422))
    async def place_order(request: UserRequest) -> Order:
        """Take stock of every line, the coupon and the balance in one atomic step, or
        nothing; honours Idempotency-Key."""
        body = await read_body(request)
        data = parse(OrderIn, body)
        placing = engine.place_order(request.user.user_id, data.lines(), data.issued_coupon_id,
                                     idempotency_of(request, body))
        return await metrics.count_order(placing)

    @get("/orders/{order_id:str}", responses=problems(401, 404))
    async def get_order(request: UserRequest, order_id: OrderId) -> Order:
        """One of the caller's orders; anyone else's reads as not found."""
        return await engine.order(request.user.user_id, order_id)

    @get("/orders", responses=problems(400, 401))
    async def list_orders(
        request: UserRequest, limit: Limit = 20, cursor: Cursor = None
    ) -> Page[Order]:
        """The caller's orders, newest first."""
        return await engine.orders(request.user.user_id, limit, cursor or None)

    @post("/orders/{order_id:str}/cancel", status_code=200,
          operation_class=operation(idempotent=True),
          responses=problems(400, 401, 404, 409, 413, 422))
    async def cancel_order(request: UserRequest, order_id: OrderId) -> Order:
        """Cancel one of the caller's orders: stock, money and (if still valid) the coupon
        come back; honours Idempotency-Key."""
        body = await read_body(request)
        return await engine.cancel_order(request.user.user_id, order_id,
                                         idempotency_of(request, body))

    return Routes(user=[place_order, get_order, list_orders, cancel_order])
