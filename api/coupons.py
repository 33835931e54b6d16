"""Coupon endpoints: admin definitions, public reads, first-come-first-served issuing."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post

from api.access import Routes
from api.auth import UserRequest
from api.docs import ANSWER_ID, coupon_schema, link, operation, problems
from api.idempotency import answered, idempotency_of
from api.inbound import read_body
from api.requests import CouponIn, Cursor, Limit, PathId, parse, positive_id
from engine import Engine
from engine.coupons import CouponRules
from engine.models import Coupon, CouponCounts, IssuedCoupon, Page

# What a client does next with a coupon it has defined or read, and with one issued to it.
COUPON_LINKS = {
    "read_coupon": link("get_coupon", "Read the coupon again, with live remaining",
                        path={"coupon_id": ANSWER_ID}),
    "issue_coupon": link("issue_coupon", "Ask for one unit of it", path={"coupon_id": ANSWER_ID}),
}
ISSUED_LINKS = {
    "order_with_coupon": link("place_order", "Use it on an order",
                              body={"issued_coupon_id": ANSWER_ID}),
    "check_out_with_coupon": link("checkout", "Use it on the cart's checkout",
                                  body={"issued_coupon_id": ANSWER_ID}),
}


def routes(engine: Engine) -> Routes:
    """The coupon endpoints over ``engine``."""

    @post("/coupons", status_code=201,
          operation_class=operation(CouponIn, idempotent=True, schema=coupon_schema(),
                                    links={201: COUPON_LINKS}),
          responses=problems(400, 401, 403, 413, 422, 429))
    async def create_coupon(request: Request[Any, Any, Any]) -> Coupon:
        """Define a coupon (admin); honours Idempotency-Key."""
        body = await read_body(request)
        data = parse(CouponIn, body)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.create_coupon(
            data.name, data.discount_type, data.discount_value, data.total_quantity,
            data.valid_from, data.valid_until, admin_id=request.user.user_id, idem=idem,
            rules=CouponRules(min_order_amount=data.min_order_amount,
                              max_discount_amount=data.max_discount_amount,
                              description=data.description or "")), 201)

    @get("/coupons", responses=problems(400))
    async def list_coupons(limit: Limit = 20, cursor: Cursor = None) -> Page[Coupon]:
        """The coupons open for issue now (inside their window, some left), by id
        ascending, with live remaining; the cursor is the last id answered."""
        return await engine.open_coupons(limit, cursor or None)

    @get("/coupons", responses=problems(400, 401, 403))
    async def list_all_coupons(limit: Limit = 20, cursor: Cursor = None) -> Page[CouponCounts]:
        """Every coupon by id ascending (admin), with live remaining and how many were
        issued and are used on orders now."""
        return await engine.coupon_counts(limit, cursor or None)

    @get("/coupons/{coupon_id:str}", operation_class=operation(links={200: COUPON_LINKS}),
         responses=problems(400, 404))
    async def get_coupon(coupon_id: PathId) -> Coupon:
        """One coupon with its live remaining count."""
        return await engine.coupon(positive_id(coupon_id, "coupon_id"))

    @post("/coupons/{coupon_id:str}/issue", status_code=201,
          operation_class=operation(idempotent=True, links={201: ISSUED_LINKS}),
          responses=problems(400, 401, 404, 409, 413, 422, 429))
    async def issue_coupon(request: UserRequest, coupon_id: PathId) -> IssuedCoupon:
        """Give the caller one unit of the coupon, once per user; honours Idempotency-Key."""
        cid = positive_id(coupon_id, "coupon_id")
        body = await read_body(request)
        idem = idempotency_of(request, body)
        return await answered(idem, engine.issue_coupon(request.user.user_id, cid, idem), 201)

    @get("/users/me/coupons", responses=problems(400, 401))
    async def my_coupons(
        request: UserRequest, limit: Limit = 20, cursor: Cursor = None
    ) -> Page[IssuedCoupon]:
        """The caller's issued coupons, newest first, with live status."""
        return await engine.user_coupons(request.user.user_id, limit, cursor or None)

    return Routes(public=[list_coupons, get_coupon], user=[issue_coupon, my_coupons],
                  admin=[create_coupon, list_all_coupons])
