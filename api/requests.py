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
from engine.models import NewOption, ProductStatus

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
ExtraPrice = Annotated[int, within(limits.EXTRA_PRICE)]
MaxPerUser = Annotated[int, within(limits.MAX_PER_USER)]
Category = Annotated[str, sized(limits.CATEGORY_LENGTH), Meta(pattern=limits.PLAIN_TEXT_PATTERN)]
Quantity = Annotated[int, within(limits.QUANTITY)]
CartQuantity = Annotated[int, within(limits.CART_QUANTITY)]
CouponQuantity = Annotated[int, within(limits.COUPON_QUANTITY)]
# Whatever the type; each type's own range is CouponIn's to check (and api.docs' to document).
DiscountValue = Annotated[int, within(limits.DISCOUNT_VALUE)]
# Issue 28: a coupon's rules.
OrderAmount = Annotated[int, within(limits.ORDER_AMOUNT)]
Description = Annotated[str, sized(limits.DESCRIPTION_LENGTH),
                        Meta(pattern=limits.PLAIN_TEXT_PATTERN)]
Moment = Annotated[datetime, Meta(
    tz=True, description=f"RFC 3339 with a UTC offset, from {limits.FIRST_MOMENT:%Y-%m-%d} "
                         f"to {limits.LAST_MOMENT:%Y-%m-%d} in UTC")]


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body: immutable, keyword-only, unknown fields refused."""


class ChargeIn(Body, frozen=True):
    """POST /balance/charge. The amount is left to the engine's configured charge policy, so
    that a refusal carries the contract's INVALID_AMOUNT code (api.docs states the policy)."""

    amount: int


class OptionIn(Body, frozen=True):
    """One option of a product (POST /admin/products/{id}/options, or in a product's
    create): its units are its own, its unit price the product's plus ``extra_price``."""

    name: Name
    extra_price: ExtraPrice = 0
    stock: Stock = 0

    def __post_init__(self) -> None:
        try:
            limits.check_text(self.name, "name")
        except ValidationFailed as exc:  # as a ValueError, msgspec puts the path in front
            raise ValueError(exc.detail) from None  # (options[2].name in a product's create)

    def new(self) -> NewOption:
        """The option as the engine takes it."""
        return NewOption(name=self.name, extra_price=self.extra_price, stock=self.stock)


def _check_window(starts: datetime | None, ends: datetime | None) -> None:
    """A sale window's ends (each optional) within the stores' times, the start first."""
    if starts is not None:
        limits.check_moment(starts, "sale_starts_at")
    if ends is not None:
        limits.check_moment(ends, "sale_ends_at")
    if starts is not None and ends is not None and starts >= ends:
        raise ValueError("sale_ends_at: must be after sale_starts_at")


def _set(value: T | None | msgspec.UnsetType) -> T | None:
    """A PATCH field's new value, or None when it is absent or cleared."""
    return None if value is msgspec.UNSET else value


class ProductIn(Body, frozen=True):
    """POST /admin/products. A product with options has their stock, so ``stock`` is
    required exactly when ``options`` is absent or empty (issue 27); the other new fields
    are optional and leaving them out makes a product as before issue 27."""

    name: Name
    price: Price
    stock: Stock | msgspec.UnsetType = msgspec.UNSET
    options: Annotated[list[OptionIn], sized(limits.OPTIONS)] = []
    status: ProductStatus = "ON_SALE"
    sale_starts_at: Moment | None = None
    sale_ends_at: Moment | None = None
    max_per_user: MaxPerUser | None = None
    category: Category | None = None

    def __post_init__(self) -> None:
        limits.check_text(self.name, "name")
        if self.category is not None:
            limits.check_text(self.category, "category")
        if self.options and self.stock is not msgspec.UNSET:
            raise ValueError("stock: a product with options has its options' stock; "
                             "leave stock out")
        if not self.options and self.stock is msgspec.UNSET:
            raise ValueError("stock: required for a product without options")
        _check_window(self.sale_starts_at, self.sale_ends_at)

    def own_stock(self) -> int:
        """The product's own units: 0 for a product with options."""
        return 0 if self.stock is msgspec.UNSET else self.stock


class ProductPatch(Body, frozen=True):
    """PATCH /admin/products/{id}: each field optional. Absent changes nothing; null
    changes nothing for name, price and status, and clears the window's ends, the limit
    and the category (which a product may be without)."""

    name: Name | None = None
    price: Price | None = None
    stock_delta: StockDelta = 0
    status: ProductStatus | None = None
    sale_starts_at: Moment | None | msgspec.UnsetType = msgspec.UNSET
    sale_ends_at: Moment | None | msgspec.UnsetType = msgspec.UNSET
    max_per_user: MaxPerUser | None | msgspec.UnsetType = msgspec.UNSET
    category: Category | None | msgspec.UnsetType = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.name is not None:
            limits.check_text(self.name, "name")
        _check_window(_set(self.sale_starts_at), _set(self.sale_ends_at))
        if isinstance(self.category, str):
            limits.check_text(self.category, "category")


class OptionPatch(Body, frozen=True):
    """PATCH /admin/products/{id}/options/{option_id}: absent or null changes nothing."""

    name: Name | None = None
    extra_price: ExtraPrice | None = None
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
    min_order_amount: OrderAmount | None = None
    max_discount_amount: OrderAmount | None = None
    description: Description | None = None

    def __post_init__(self) -> None:
        limits.check_text(self.name, "name")
        if self.description is not None:
            limits.check_text(self.description, "description")
        if self.max_discount_amount is not None and self.discount_type != "PERCENT":
            raise ValueError("max_discount_amount: only a PERCENT coupon has a cap")
        limits.check_moment(self.valid_from, "valid_from")
        limits.check_moment(self.valid_until, "valid_until")
        bounds = limits.DISCOUNT[self.discount_type]
        if not bounds.low <= self.discount_value <= bounds.high:
            raise ValueError(f"discount_value: a {self.discount_type} discount is "
                             f"{bounds.low} to {bounds.high}")
        if self.valid_from >= self.valid_until:
            raise ValueError("valid_until: must be after valid_from")


class OrderLineIn(Body, frozen=True):
    """One line of an order; ``option_id`` names one of the product's options, required
    exactly when it has options (the engine's rule: it knows the product)."""

    product_id: Id
    quantity: Quantity
    option_id: Id | None = None


class OrderIn(Body, frozen=True):
    """POST /orders (and /orders/preview): each (product, option) on one line at most.
    ``payment`` (issue 28): NOW pays in the same step (as before); DEFERRED takes the units
    only, PENDING_PAYMENT until POST /orders/{id}/pay, and names its coupon there."""

    items: Annotated[list[OrderLineIn], sized(limits.ORDER_LINES)]
    issued_coupon_id: Id | None = None
    payment: Literal["NOW", "DEFERRED"] = "NOW"

    def __post_init__(self) -> None:
        if len({(line.product_id, line.option_id) for line in self.items}) != len(self.items):
            raise ValueError("items: a (product, option) may appear only once")

    def lines(self) -> list[tuple[int, int] | tuple[int, int, int]]:
        """The lines as the engine takes them: ``(product_id, quantity)``, with the
        ``option_id`` third on an option's line."""
        return [(line.product_id, line.quantity) if line.option_id is None
                else (line.product_id, line.quantity, line.option_id) for line in self.items]


class PayIn(Body, frozen=True):
    """POST /orders/{id}/pay (issue 28); the body may be empty."""

    issued_coupon_id: Id | None = None


class CartItemIn(Body, frozen=True):
    """PUT /cart/items/{product_id}."""

    quantity: CartQuantity


class CheckoutIn(Body, frozen=True):
    """POST /cart/checkout; the body may be empty."""

    issued_coupon_id: Id | None = None


REQUEST_BODIES: tuple[type[Body], ...] = (
    ChargeIn, ProductIn, ProductPatch, OptionIn, OptionPatch, CouponIn, OrderIn, CartItemIn,
    CheckoutIn, PayIn)

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {kind: msgspec.json.Decoder(kind)
                                                    for kind in REQUEST_BODIES}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"field `(?P<name>[^`]+)`")


def _field(message: str) -> tuple[str, str]:
    """The field a msgspec error is about, and the message without its location."""
    match = _AT.match(message)
    msg, path = (match["msg"], match["path"] or "") if match else (message, "")
    if ": " in msg and msg.split(": ", 1)[0].isidentifier():  # our __post_init__, maybe
        name, msg = msg.split(": ", 1)                        # of a nested Struct
        return (f"{path}.{name}" if path else name), msg
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
