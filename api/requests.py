"""What clients send: one frozen, strict msgspec Struct per request body, and how to read one.

Bodies are decoded straight from bytes in one strict pass (no ``"10"`` for ``10``, no
unknown fields); a failure names the offending field. Ranges are the contract's
(shared/API.md); rules that need live state (stock, balance, coupon windows) stay in
the engine's scripts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar.params import Parameter, PathParameter
from msgspec import Meta

from engine.errors import ValidationFailed
from engine.policy import MAX_ID

T = TypeVar("T")

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Price = Annotated[int, Meta(ge=1, le=100_000_000)]
Stock = Annotated[int, Meta(ge=0, le=1_000_000_000)]
StockDelta = Annotated[int, Meta(ge=-1_000_000_000, le=1_000_000_000)]
Quantity = Annotated[int, Meta(ge=1, le=1_000)]
Count = Annotated[int, Meta(ge=1, le=10_000_000)]
Moment = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a UTC offset")]


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body: immutable, keyword-only, unknown fields refused."""


class ChargeIn(Body, frozen=True):
    """POST /balance/charge. The amount policy (multiple of 10, 1,000..1,000,000) is the
    engine's, so that a refusal carries the contract's INVALID_AMOUNT code."""

    amount: int


class ProductIn(Body, frozen=True):
    """POST /admin/products."""

    name: Name
    price: Price
    stock: Stock


class ProductPatch(Body, frozen=True):
    """PATCH /admin/products/{id}: each field optional; absent or null changes nothing."""

    name: Name | None = None
    price: Price | None = None
    stock_delta: StockDelta = 0


class CouponIn(Body, frozen=True):
    """POST /admin/coupons."""

    name: Name
    discount_type: Literal["FIXED", "PERCENT"]
    discount_value: Count
    total_quantity: Count
    valid_from: Moment
    valid_until: Moment

    def __post_init__(self) -> None:
        if self.discount_type == "PERCENT" and self.discount_value > 100:
            raise ValueError("discount_value: a PERCENT discount is 1 to 100")
        if self.valid_from >= self.valid_until:
            raise ValueError("valid_until: must be after valid_from")


class OrderLineIn(Body, frozen=True):
    """One line of an order."""

    product_id: Id
    quantity: Quantity


class OrderIn(Body, frozen=True):
    """POST /orders: 1..50 lines, each product at most once."""

    items: Annotated[list[OrderLineIn], Meta(min_length=1, max_length=50)]
    issued_coupon_id: Id | None = None

    def __post_init__(self) -> None:
        if len({line.product_id for line in self.items}) != len(self.items):
            raise ValueError("items: a product may appear only once")

    def lines(self) -> list[tuple[int, int]]:
        """The ``(product_id, quantity)`` pairs the engine takes."""
        return [(line.product_id, line.quantity) for line in self.items]


class CartItemIn(Body, frozen=True):
    """PUT /cart/items/{product_id}."""

    quantity: Quantity


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


def positive_id(value: str, field: str) -> int:
    """A path segment that must be a positive integer id (no sign, no spaces, ASCII digits)."""
    if value.isascii() and value.isdigit() and len(value) <= 19 and 1 <= int(value) <= MAX_ID:
        return int(value)
    raise ValidationFailed(f"{field}: must be a positive integer id", field=field)


Limit = Annotated[int, Parameter(ge=1, le=100, description="page size, 1..100")]
Cursor = Annotated[str | None, Parameter(
    description="next_cursor of the previous page (empty or absent: the first page)")]
# The pattern is documentation only (schema_extra): handlers check ids with positive_id,
# which is cheaper than Litestar's validation and answers the same 400.
PathId = Annotated[str, PathParameter(description="a positive integer id",
                                      schema_extra={"pattern": "^[1-9][0-9]{0,13}$"})]
OrderId = Annotated[str, PathParameter(description="an order id, as the order answered it")]
