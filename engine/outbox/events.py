"""The outbox: one event per state change, written by the same script that made the change.

Each stream entry of ``{ro}:outbox`` has one field, ``e``: the event as JSON, tagged by
``type``. The engine's scripts write them; the workers read them with :data:`DECODER`.
Events carry everything Postgres and the data platform need, so a consumer never reads
Redis state to apply one.

Events are read long after they were written (a stream's tail, an entry set aside), so a
field added to an event has a default: an entry written before it still decodes. Catalog
events carry a product as its state after the change (:class:`ProductState`), not the
engine's answer: the outbox is the record, and its shape is the one written here.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from engine.models import Coupon, HistoryLine, IssuedCoupon, Order, ProductStatus

EVENT_FIELD = "e"


class OptionState(msgspec.Struct, frozen=True, kw_only=True):
    """An option of a product as an event carries it: ``stock`` is its live total after
    the change (reserve, allotments and units in flight)."""

    id: int
    name: str
    extra_price: int = 0
    stock: int = 0


class ProductState(msgspec.Struct, frozen=True, kw_only=True):
    """A product as a catalog event carries it, after the change. ``stock`` of a product
    with options is the sum of theirs; ``options`` is [] for a plain product (and always in
    product.updated: options have events of their own). Issue 27's fields default to what
    a product made before them is."""

    id: int
    name: str
    price: int
    stock: int
    status: ProductStatus = "ON_SALE"
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    max_per_user: int | None = None
    category: str | None = None
    options: list[OptionState] = []


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every outbox event; ``at`` is Redis' clock when the change happened."""

    at: datetime


class BalanceCharged(Event, frozen=True, tag="balance.charged"):
    """A user charged their balance."""

    user_id: int
    amount: int
    balance_after: int
    history: HistoryLine


class ProductCreated(Event, frozen=True, tag="product.created"):
    """An admin created a product (with its options, if any)."""

    product: ProductState


class ProductUpdated(Event, frozen=True, tag="product.updated"):
    """An admin changed a product's definition or stock; ``product`` is the state after
    (``stock_delta`` is 0 for a product with options: their stock moves by option.updated)."""

    product: ProductState
    stock_delta: int


class OptionCreated(Event, frozen=True, tag="option.created"):
    """An admin added an option to an existing product (with its first stock)."""

    product_id: int
    option: OptionState


class OptionUpdated(Event, frozen=True, tag="option.updated"):
    """An admin changed an option's name, extra price or stock; ``option`` is the state
    after."""

    product_id: int
    option: OptionState
    stock_delta: int


class CouponCreated(Event, frozen=True, tag="coupon.created"):
    """An admin created a coupon."""

    coupon: Coupon


class CouponIssued(Event, frozen=True, tag="coupon.issued"):
    """A user got one unit of a coupon."""

    issued: IssuedCoupon
    remaining: int


class OrderPaid(Event, frozen=True, tag="order.paid"):
    """An order was placed and paid: stock, coupon and balance were taken."""

    event_id: str
    order: Order
    balance_after: int
    history: HistoryLine | None


class OrderPending(Event, frozen=True, tag="order.pending"):
    """A deferred order was placed (issue 28): its units taken, nothing paid, awaiting
    payment until ``order.payment_due_at``. Postgres only: never forwarded."""

    event_id: str
    order: Order


class OrderExpired(Event, frozen=True, tag="order.expired"):
    """A deferred order expired unpaid (issue 28): its units came back. Postgres only."""

    event_id: str
    order: Order


class OrderCancelled(Event, frozen=True, tag="order.cancelled"):
    """An order was cancelled: stock and money came back, the coupon if still valid."""

    event_id: str
    order: Order
    balance_after: int
    history: HistoryLine | None
    coupon_restored: bool


class CartItem(msgspec.Struct, frozen=True, kw_only=True):
    """A cart line as cart.updated carries it (``option_id`` None for a plain product)."""

    product_id: int
    option_id: int | None = None
    quantity: int


class CartUpdated(Event, frozen=True, tag="cart.updated"):
    """A user's cart changed (a put, a remove, a checkout's bought lines leaving it):
    ``items`` is the whole cart after the change, so the last event is the cart."""

    user_id: int
    items: list[CartItem]


AnyEvent = (
    BalanceCharged | ProductCreated | ProductUpdated | OptionCreated | OptionUpdated
    | CouponCreated | CouponIssued | OrderPaid | OrderCancelled | CartUpdated | OrderPending
    | OrderExpired
)

DECODER = msgspec.json.Decoder(AnyEvent)


def decode(raw: bytes | str) -> AnyEvent:
    """Decode one outbox entry's ``e`` field."""
    return DECODER.decode(raw)
