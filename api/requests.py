"""What clients send: one frozen, strict msgspec Struct per request body, and how to read one.

Bodies are decoded straight from bytes in one strict pass (no ``"10"`` for ``10``, no
unknown fields); a failure names the offending field. Every range is the engine's own
(:mod:`engine.limits`, which the engine enforces too), so the bounds here and the OpenAPI
document made from them never drift from what the engine accepts; rules that need live
state (stock, balance, coupon windows) stay in the engine's scripts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar.params import Parameter, PathParameter
from msgspec import Meta

from engine import limits
from engine.errors import ValidationFailed
from engine.limits import Bounds

T = TypeVar("T")


def within(bounds: Bounds) -> Meta:
    """msgspec's bounds of an integer in ``bounds``."""
    return Meta(ge=bounds.low, le=bounds.high)


def sized(bounds: Bounds) -> Meta:
    """msgspec's bounds of a string or list whose length is in ``bounds``."""
    return Meta(min_length=bounds.low, max_length=bounds.high)


Id = Annotated[int, within(limits.ID)]
# No control characters (limits.check_text): the pattern documents it and refuses most;
# each body with a name checks it whole in __post_init__ (a pattern's "$" lets one
# final newline through in Python).
Name = Annotated[str, sized(limits.NAME_LENGTH), Meta(pattern=limits.PLAIN_TEXT_PATTERN)]
Price = Annotated[int, within(limits.PRICE)]
Stock = Annotated[int, within(limits.STOCK)]
StockDelta = Annotated[int, within(limits.STOCK_DELTA)]
Quantity = Annotated[int, within(limits.QUANTITY)]
CartQuantity = Annotated[int, within(limits.CART_QUANTITY)]
CouponQuantity = Annotated[int, within(limits.COUPON_QUANTITY)]
# Whatever the type; each type's own range is CouponIn's to check (and api.docs' to document).
DiscountValue = Annotated[int, within(limits.DISCOUNT_VALUE)]
Moment = Annotated[datetime, Meta(
    tz=True, description=f"RFC 3339 with a UTC offset, from {limits.FIRST_MOMENT:%Y-%m-%d} "
                         f"to {limits.LAST_MOMENT:%Y-%m-%d} in UTC")]


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body: immutable, keyword-only, unknown fields refused."""


class ChargeIn(Body, frozen=True):
    """POST /balance/charge. The amount is left to the engine's configured charge policy, so
    that a refusal carries the contract's INVALID_AMOUNT code (api.docs states the policy)."""

    amount: int


class ProductIn(Body, frozen=True):
    """POST /admin/products."""

    name: Name
    price: Price
    stock: Stock

    def __post_init__(self) -> None:
        limits.check_text(self.name, "name")


class ProductPatch(Body, frozen=True):
    """PATCH /admin/products/{id}: each field optional; absent or null changes nothing."""

    name: Name | None = None
    price: Price | None = None
    stock_delta: StockDelta = 0

    def __post_init__(self) -> None:
        if self.name is not None:
            limits.check_text(self.name, "name")


class CouponIn(Body, frozen=True):
    """POST /admin/coupons; valid_from must be before valid_until."""

    name: Name
    discount_type: Literal["FIXED", "PERCENT"]
    discount_value: DiscountValue
    total_quantity: CouponQuantity
    valid_from: Moment
    valid_until: Moment

    def __post_init__(self) -> None:
        limits.check_text(self.name, "name")
        limits.check_moment(self.valid_from, "valid_from")
        limits.check_moment(self.valid_until, "valid_until")
        bounds = limits.DISCOUNT[self.discount_type]
        if not bounds.low <= self.discount_value <= bounds.high:
            raise ValueError(f"discount_value: a {self.discount_type} discount is "
                             f"{bounds.low} to {bounds.high}")
        if self.valid_from >= self.valid_until:
            raise ValueError("valid_until: must be after valid_from")


class OrderLineIn(Body, frozen=True):
    """One line of an order."""

    product_id: Id
    quantity: Quantity


class OrderIn(Body, frozen=True):
    """POST /orders: each product on one line at most."""

    items: Annotated[list[OrderLineIn], sized(limits.ORDER_LINES)]
    issued_coupon_id: Id | None = None

    def __post_init__(self) -> None:
        if len({line.product_id for line in self.items}) != len(self.items):
            raise ValueError("items: a product may appear only once")

    def lines(self) -> list[tuple[int, int]]:
        """The ``(product_id, quantity)`` pairs the engine takes."""
        return [(line.product_id, line.quantity) for line in self.items]


class CartItemIn(Body, frozen=True):
    """PUT /cart/items/{product_id}."""

    quantity: CartQuantity


class CheckoutIn(Body, frozen=True):
    """POST /cart/checkout; the body may be empty."""

    issued_coupon_id: Id | None = None


REQUEST_BODIES: tuple[type[Body], ...] = (
    ChargeIn, ProductIn, ProductPatch, CouponIn, OrderIn, CartItemIn, CheckoutIn)

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {kind: msgspec.json.Decoder(kind)
                                                    for kind in REQUEST_BODIES}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"field `(?P<name>[^`]+)`")


def _field(message: str) -> tuple[str, str]:
    """The field a msgspec error is about, and the message without its location."""
    match = _AT.match(message)
    msg, path = (match["msg"], match["path"] or "") if match else (message, "")
    if ": " in msg and not path and msg.split(": ", 1)[0].isidentifier():  # our __post_init__
        name, msg = msg.split(": ", 1)
        return name, msg
    if named := _NAMED.search(msg):  # a missing or unknown field: name it, under its parent
        path = f"{path}.{named['name']}" if path else named["name"]
    return path or "body", msg


def parse(kind: type[T], body: bytes) -> T:
    """Decode a request body into ``kind``, or raise a VALIDATION_ERROR naming the field."""
    try:
        return _DECODERS[kind].decode(body or b"{}")  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        field, message = _field(str(exc))
        raise ValidationFailed(f"{field}: {message}", field=field) from None
    except msgspec.DecodeError as exc:
        raise ValidationFailed(f"body: not valid JSON ({exc})", field="body") from None


_ID_DIGITS = limits.ID_DIGITS


def positive_id(value: str, field: str) -> int:
    """A path segment that must be a positive integer id (no sign, no spaces, ASCII digits)."""
    return limits.digits(value, field, limits.ID, "must be a positive integer id")


Limit = Annotated[int, Parameter(
    ge=limits.PAGE_SIZE.low, le=limits.PAGE_SIZE.high,
    description=f"page size, {limits.PAGE_SIZE.low}..{limits.PAGE_SIZE.high}")]
Cursor = Annotated[str | None, Parameter(
    description="next_cursor of the previous page (empty or absent: the first page)")]
# 1..MAX_ID as digits: MAX_ID is all nines, so "no leading zero, at most its digits" is
# exactly that range.
ID_PATTERN = f"^[1-9][0-9]{{0,{_ID_DIGITS - 1}}}$"
# The pattern is documentation only (schema_extra): handlers check ids with positive_id,
# which is cheaper than Litestar's validation and answers the same 400.
PathId = Annotated[str, PathParameter(description="a positive integer id",
                                      schema_extra={"pattern": ID_PATTERN})]
OrderId = Annotated[str, PathParameter(description="an order id, as the order answered it")]
