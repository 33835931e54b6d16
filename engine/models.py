"""What the engine answers: the contract's shapes, decoded from the scripts' JSON.

The Lua scripts build these documents once (the same JSON goes to the caller, to the
stored order and to the outbox), so these Structs mirror ``shared/API.md`` field for field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

import msgspec

HistoryType = Literal["CHARGE", "USE", "REFUND"]
DiscountType = Literal["FIXED", "PERCENT"]
# PENDING_PAYMENT and EXPIRED only ever for an order placed with "payment": "DEFERRED".
OrderStatus = Literal["PAID", "CANCELLED", "PENDING_PAYMENT", "EXPIRED"]
PaymentStatus = Literal["COMPLETED", "CANCELLED"]
ProductStatus = Literal["ON_SALE", "SUSPENDED"]
IssuedCouponStatus = Literal["AVAILABLE", "USED", "EXPIRED"]


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every answer: immutable, keyword-only."""


class Balance(Model, frozen=True):
    """A user's balance; 0 for a user never seen."""

    user_id: int
    balance: int


class Charge(Model, frozen=True):
    """The answer to a charge."""

    user_id: int
    balance: int
    charged: int


class HistoryLine(Model, frozen=True):
    """One balance movement."""

    id: int
    type: HistoryType
    amount: int
    balance_after: int
    order_id: str | None
    created_at: datetime


class ProductOption(Model, frozen=True):
    """One option of a product (a size, a colour) with its own live stock; its unit price
    is the product's price plus ``extra_price``."""

    id: int
    product_id: int
    name: str
    extra_price: int
    stock: int
    sold_out: bool


class NewOption(Model, frozen=True):
    """An option to create (with its product, or added to it later)."""

    name: str
    extra_price: int = 0
    stock: int = 0


class Product(Model, frozen=True):
    """A product with its live stock (the sum of its options' when it has options) and
    whether it is on sale now (status and window, on Redis' clock)."""

    id: int
    name: str
    price: int
    stock: int
    status: ProductStatus = "ON_SALE"
    on_sale: bool = True
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    max_per_user: int | None = None
    category: str | None = None
    options: list[ProductOption] = []


class TopProduct(Model, frozen=True):
    """One of the best sellers of the window."""

    rank: int
    product_id: int
    name: str
    price: int
    sold_quantity: int
    stock: int


class Top(Model, frozen=True):
    """The best sellers of the last ``top_window_hours`` hours."""

    items: list[TopProduct]
    window_start: datetime
    window_end: datetime


class Coupon(Model, frozen=True):
    """A first-come-first-served coupon with its live remaining count."""

    id: int
    name: str
    discount_type: DiscountType
    discount_value: int
    total_quantity: int
    remaining: int
    valid_from: datetime
    valid_until: datetime
    min_order_amount: int | None = None
    max_discount_amount: int | None = None
    description: str = ""


class CouponCounts(Coupon, frozen=True):
    """A coupon as an admin lists it: with how many units were issued (``total_quantity -
    remaining``, live) and how many are on paid orders now."""

    issued_count: int = 0
    used_count: int = 0


class IssuedCoupon(Model, frozen=True):
    """A coupon held by a user."""

    id: int
    coupon_id: int
    user_id: int
    name: str
    discount_type: DiscountType
    discount_value: int
    status: IssuedCouponStatus
    issued_at: datetime
    expires_at: datetime
    order_id: str | None = None
    min_order_amount: int | None = None
    max_discount_amount: int | None = None
    description: str = ""


class OrderLine(Model, frozen=True):
    """One product (and option) of an order, at the price paid."""

    product_id: int
    name: str
    unit_price: int
    quantity: int
    option_id: int | None = None
    option_name: str | None = None


class Payment(Model, frozen=True):
    """An order's payment from the prepaid balance (issue 28): its id is the order's; a
    cancel refunds it (CANCELLED)."""

    id: str
    amount: int
    status: PaymentStatus
    paid_at: datetime
    cancelled_at: datetime | None = None


class Order(Model, frozen=True):
    """An order and its payment (null while a deferred order awaits it, or once one
    expired). ``payment_due_at`` is only ever there for a deferred order (absent from a
    one-step order's answer, as before issue 28)."""

    id: str
    user_id: int
    status: OrderStatus
    items: list[OrderLine]
    total_amount: int
    discount_amount: int
    paid_amount: int
    issued_coupon_id: int | None
    created_at: datetime
    cancelled_at: datetime | None = None
    payment: Payment | None = None
    payment_due_at: datetime | msgspec.UnsetType = msgspec.UNSET


class PreviewLine(Model, frozen=True):
    """One line of an order's preview: its price now and whether it could be bought now
    (on sale, in stock, within the per-customer limit)."""

    product_id: int
    option_id: int | None
    name: str
    option_name: str | None
    unit_price: int
    quantity: int
    line_total: int
    available: bool
    stock: int


class PreviewCoupon(Model, frozen=True):
    """The coupon an order's preview names: whether the order could use it, else why."""

    issued_coupon_id: int
    usable: bool
    reason: str | None


class Preview(Model, frozen=True):
    """What an order would cost and whether it would go through, read live but not
    atomically (issue 28): nothing is written."""

    total_amount: int
    discount_amount: int
    paid_amount: int
    balance: int
    balance_sufficient: bool
    lines: list[PreviewLine]
    coupon: PreviewCoupon | None


class CartLine(Model, frozen=True):
    """One product in a cart, priced live."""

    product_id: int
    name: str
    unit_price: int
    quantity: int
    line_total: int
    in_stock: bool
    option_id: int | None = None
    option_name: str | None = None


class Cart(Model, frozen=True):
    """A user's cart, priced live."""

    items: list[CartLine]
    total_amount: int


T = TypeVar("T")


class Page(Model, Generic[T], frozen=True):
    """One page of a list; ``next_cursor`` is None on the last page."""

    items: list[T]
    next_cursor: str | None
