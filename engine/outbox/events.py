"""The outbox: one event per state change, written by the same script that made the change.

Each stream entry of ``{ro}:outbox`` has one field, ``e``: the event as JSON, tagged by
``type``. The engine's scripts write them; the workers read them with :data:`DECODER`.
Events carry everything Postgres and the data platform need, so a consumer never reads
Redis state to apply one.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from engine.models import Coupon, HistoryLine, IssuedCoupon, Order, Product

EVENT_FIELD = "e"


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
    """An admin created a product."""

    product: Product


class ProductUpdated(Event, frozen=True, tag="product.updated"):
    """An admin changed a product's name, price or stock; ``product`` is the state after."""

    product: Product
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


class OrderCancelled(Event, frozen=True, tag="order.cancelled"):
    """An order was cancelled: stock and money came back, the coupon if still valid."""

    event_id: str
    order: Order
    balance_after: int
    history: HistoryLine | None
    coupon_restored: bool


AnyEvent = (
    BalanceCharged | ProductCreated | ProductUpdated | CouponCreated | CouponIssued
    | OrderPaid | OrderCancelled
)

DECODER = msgspec.json.Decoder(AnyEvent)


def decode(raw: bytes | str) -> AnyEvent:
    """Decode one outbox entry's ``e`` field."""
    return DECODER.decode(raw)
