"""One source for each limit: the API's msgspec bounds are exactly engine/limits.py's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from api.requests import (
    CartItemIn,
    CheckoutIn,
    CouponIn,
    OrderIn,
    ProductIn,
    ProductPatch,
    parse,
)
from engine import limits
from engine.errors import ValidationFailed
from engine.limits import Bounds

IDEMPOTENT = {("/api/v1/balance/charge", "post"), ("/api/v1/orders", "post"),
              ("/api/v1/orders/{order_id}/cancel", "post"), ("/api/v1/cart/checkout", "post"),
              ("/api/v1/coupons/{coupon_id}/issue", "post")}
LISTS = ["/api/v1/products", "/api/v1/balance/history", "/api/v1/orders",
         "/api/v1/users/me/coupons"]
COUPON = {"name": "c", "discount_type": "FIXED", "discount_value": 1, "total_quantity": 1,
          "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"}
LINE = {"product_id": 1, "quantity": 1}

Body = dict[str, Any]
# (Struct, a valid body with the value under test put in, the field a refusal names, bounds,
# whether the bounds are of a length)
BOUNDED: dict[str, tuple[type, Callable[[Any], Body], str, Bounds, bool]] = {
    "product name": (ProductIn, lambda v: {"name": v, "price": 1, "stock": 0}, "name",
                     limits.NAME_LENGTH, True),
    "price": (ProductIn, lambda v: {"name": "n", "price": v, "stock": 0}, "price",
              limits.PRICE, False),
    "stock": (ProductIn, lambda v: {"name": "n", "price": 1, "stock": v}, "stock",
              limits.STOCK, False),
    "new name": (ProductPatch, lambda v: {"name": v}, "name", limits.NAME_LENGTH, True),
    "new price": (ProductPatch, lambda v: {"price": v}, "price", limits.PRICE, False),
    "stock_delta": (ProductPatch, lambda v: {"stock_delta": v}, "stock_delta",
                    limits.STOCK_DELTA, False),
    "coupon name": (CouponIn, lambda v: {**COUPON, "name": v}, "name", limits.NAME_LENGTH, True),
    "FIXED": (CouponIn, lambda v: {**COUPON, "discount_value": v}, "discount_value",
              limits.DISCOUNT["FIXED"], False),
    "PERCENT": (CouponIn, lambda v: {**COUPON, "discount_type": "PERCENT", "discount_value": v},
                "discount_value", limits.DISCOUNT["PERCENT"], False),
    "total_quantity": (CouponIn, lambda v: {**COUPON, "total_quantity": v}, "total_quantity",
                       limits.COUPON_QUANTITY, False),
    "order lines": (OrderIn, lambda v: {"items": [{"product_id": p + 1, "quantity": 1}
                                                  for p in range(len(v))]},  # len(v) lines
                    "items", limits.ORDER_LINES, True),
    "line quantity": (OrderIn, lambda v: {"items": [{**LINE, "quantity": v}]},
                      "items[0].quantity", limits.QUANTITY, False),
    "line product": (OrderIn, lambda v: {"items": [{**LINE, "product_id": v}]},
                     "items[0].product_id", limits.ID, False),
    "order coupon": (OrderIn, lambda v: {"items": [LINE], "issued_coupon_id": v},
                     "issued_coupon_id", limits.ID, False),
    "cart quantity": (CartItemIn, lambda v: {"quantity": v}, "quantity",
                      limits.CART_QUANTITY, False),
    "checkout coupon": (CheckoutIn, lambda v: {"issued_coupon_id": v}, "issued_coupon_id",
                        limits.ID, False),
}


def _values(bounds: Bounds, length: bool, inside: bool) -> list[Any]:
    """The values on the bounds (inside) or just past them, as strings of that length if the
    bounds are of a length."""
    edges = [bounds.low, bounds.high] if inside else [bounds.low - 1, bounds.high + 1]
    return [("n" * edge if length else edge) for edge in edges if edge >= 0 or not length]


@pytest.mark.parametrize("case", BOUNDED)
def test_request_bodies_accept_exactly_the_engines_bounds(case: str) -> None:
    kind, body, field, bounds, length = BOUNDED[case]
    for value in _values(bounds, length, inside=True):
        parse(kind, json.dumps(body(value)).encode())
    for value in _values(bounds, length, inside=False):
        with pytest.raises(ValidationFailed) as refused:
            parse(kind, json.dumps(body(value)).encode())
        assert refused.value.context == {"field": field}, value
