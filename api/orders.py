"""Order endpoints: place, preview, pay, read, list and cancel the caller's orders.

POST /api/v1/orders is the flash sale's hot path, so besides its Litestar handler (which
documents it and serves every spelling of the path Litestar routes, such as a trailing
slash) it has a direct entrance, :func:`direct`, in front of Litestar's router. Driven
in-process, Litestar's routing, hooks, signature model and middleware cost about 30 µs of
the 48 µs of Python an order took; the direct entrance runs the very same steps
(:func:`place`) without them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from litestar import Request, get, post
from litestar.types import ASGIApp, Receive, Scope, Send

from api import problems
from api.access import PREFIX, Routes
from api.answers import Answer
from api.auth import Authenticator, UserRequest
from api.docs import ANSWER_ID, link, operation
from api.docs import problems as documented
from api.idempotency import answered, idempotency_of, replayed
from api.inbound import read_body
from api.metrics import Metrics
from api.requests import Cursor, Limit, OrderId, OrderIn, PayIn, parse
from engine import Engine, Idempotency
from engine.errors import EngineError
from engine.models import Order, Page, Preview

ORDERS_PATH = f"{PREFIX}/orders"

# What a client does next with an order it has placed or read.
ORDER_LINKS = {
    "read_order": link("get_order", "Read the order again", path={"order_id": ANSWER_ID}),
    "cancel_order": link("cancel_order", "Cancel it (a second time: ORDER_NOT_CANCELLABLE)",
                         path={"order_id": ANSWER_ID}),
}


async def counted(metrics: Metrics, placing: Awaitable[Order], idem: Idempotency | None
                  ) -> Order:
    """Await an order (or checkout), counting it placed or refused by code, unless it is
    an Idempotency-Key's replay: its first answer was counted."""
    if idem is None:  # the hot path: no key, nothing to tell apart
        return await metrics.count_order(placing)
    try:
        order = await placing
    except EngineError as exc:
        if not replayed(idem):
            metrics.count_outcome(exc.code)
        raise
    if not replayed(idem):
        metrics.count_outcome(None)
    return order


async def place(engine: Engine, metrics: Metrics, user_id: int,
                request: Request[Any, Any, Any]) -> Order:
    """Read and check the body, place the order, count it: the one implementation of
    POST /orders, for the Litestar handler and the direct entrance alike (a replay comes
    back as an Answer marked Idempotent-Replayed)."""
    body = await read_body(request)
    data = parse(OrderIn, body)
    idem = idempotency_of(request, body)
    placing = engine.place_order(user_id, data.lines(), data.issued_coupon_id, idem,
                                 data.payment == "DEFERRED")
    if idem is None:  # the hot path: one coroutine fewer
        return await metrics.count_order(placing)
    return await answered(idem, counted(metrics, placing, idem), 201)


def direct(app: ASGIApp, engine: Engine, auth: Authenticator, metrics: Metrics) -> ASGIApp:
    """``app`` with POST /api/v1/orders answered before it is routed: authenticated as the
    user router does, answered and failed (``problems.handle``) as Litestar would, and
    timed by the same metrics middleware under the same route label."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        request: Request[Any, Any, Any] = Request(scope, receive, send)
        try:
            order = await place(engine, metrics, auth.identify(request).user_id, request)
            response = order if isinstance(order, Answer) else Answer(order, status_code=201)
        except Exception as exc:  # every failure becomes its problem answer, as in Litestar
            response = problems.handle(request, exc)
        await response(scope, receive, send)

    timed = metrics.middleware(answer)

    async def entrance(scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"  # type: ignore[typeddict-item]
                or scope["path"] != ORDERS_PATH):
            await app(scope, receive, send)
            return
        scope["path_template"] = ORDERS_PATH  # type: ignore[typeddict-unknown-key]  # as routing would
        await timed(scope, receive, send)

    return entrance


def routes(engine: Engine, metrics: Metrics) -> Routes:
    """The order endpoints over ``engine``; placed and refused orders are counted."""

    @post("/orders", status_code=201,
          operation_class=operation(OrderIn, idempotent=True, links={201: ORDER_LINKS}),
          responses=documented(400, 401, 404, 409, 413, 422, 429))
    async def place_order(request: UserRequest) -> Order:
        """Take stock of every line, the coupon and the balance in one atomic step, or
        nothing; honours Idempotency-Key."""
        return await place(engine, metrics, request.user.user_id, request)

    @post("/orders/preview", status_code=200, operation_class=operation(OrderIn),
          responses=documented(400, 401, 404, 413, 422))
    async def preview_order(request: UserRequest) -> Preview:
        """What the order would cost and whether it would go through now: totals, the
        discount, each line's availability and whether the balance suffices. Writes
        nothing (no Idempotency-Key, no write-rate token); read live, not atomically."""
        data = parse(OrderIn, await read_body(request))
        return await engine.preview_order(request.user.user_id, data.lines(),
                                          data.issued_coupon_id)

    @post("/orders/{order_id:str}/pay", status_code=200,
          operation_class=operation(PayIn, idempotent=True, links={200: ORDER_LINKS}),
          responses=documented(400, 401, 404, 409, 413, 422, 429))
    async def pay_order(request: UserRequest, order_id: OrderId) -> Order:
        """Pay one of the caller's deferred orders (PENDING_PAYMENT): coupon and balance
        in one step; paid already answers it again; cancelled, expired or past due
        ORDER_NOT_PAYABLE; honours Idempotency-Key."""
        body = await read_body(request)
        data = parse(PayIn, body)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.pay_order(request.user.user_id, order_id,
                                                     data.issued_coupon_id, idem), 200)

    @get("/orders/{order_id:str}", operation_class=operation(links={200: ORDER_LINKS}),
         responses=documented(401, 404))
    async def get_order(request: UserRequest, order_id: OrderId) -> Order:
        """One of the caller's orders; anyone else's reads as not found."""
        return await engine.order(request.user.user_id, order_id)

    @get("/orders", responses=documented(400, 401))
    async def list_orders(
        request: UserRequest, limit: Limit = 20, cursor: Cursor = None
    ) -> Page[Order]:
        """The caller's orders, newest first."""
        return await engine.orders(request.user.user_id, limit, cursor or None)

    @post("/orders/{order_id:str}/cancel", status_code=200,
          operation_class=operation(idempotent=True, links={200: ORDER_LINKS}),
          responses=documented(400, 401, 404, 409, 413, 422, 429))
    async def cancel_order(request: UserRequest, order_id: OrderId) -> Order:
        """Cancel one of the caller's orders: stock, money and (if still valid) the coupon
        come back; honours Idempotency-Key."""
        body = await read_body(request)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.cancel_order(request.user.user_id, order_id, idem),
                              200)

    return Routes(user=[place_order, preview_order, pay_order, get_order, list_orders,
                        cancel_order])
