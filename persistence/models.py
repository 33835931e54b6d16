"""The durable system of record: SQLAlchemy 2 typed models of what the outbox carries.

Ids are the engine's: Redis allocates every id (users, history lines, products, coupons,
issued coupons, orders) and Postgres keeps it, so a rebuilt Redis answers with the same
ids. Order ids are the engine's decimal-digit strings, kept as BIGINT (``str(id)`` is the
order id of the contract).

No constraint here may refuse an event the engine already committed: the outbox is the
only road in, and a refused batch would stop it for good. So rules such as "stock never
below 0" or "one coupon per user" are checked by ``rushorder.audit``, not by Postgres;
only shapes (enums) are. Order lines and payments refer to their order without a declared
foreign key: the writer inserts all three from one event in one transaction, and the
per-row checks cost a fifth of the apply time; the audit looks for orphans instead.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base: every int is BIGINT, every time is timestamptz."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {int: BigInteger, str: Text, datetime: DateTime(timezone=True)}


def _id() -> Mapped[int]:
    """A primary key allocated by the engine, never by Postgres."""
    return mapped_column(primary_key=True, autoincrement=False)


class User(Base):
    """A user's balance; ``version`` is the outbox entry that last set it."""

    __tablename__ = "users"

    id: Mapped[int] = _id()
    balance: Mapped[int]
    version: Mapped[int]


class HistoryLine(Base):
    """One balance movement (CHARGE, USE, REFUND), with the engine's history id."""

    __tablename__ = "balance_history"
    __table_args__ = (
        CheckConstraint("type IN ('CHARGE', 'USE', 'REFUND')", name="type"),
        Index(None, "user_id", "id"),  # a user's history, newest first (backward scan)
    )

    id: Mapped[int] = _id()
    user_id: Mapped[int]
    type: Mapped[str]
    amount: Mapped[int]
    balance_after: Mapped[int]
    order_id: Mapped[int | None]
    created_at: Mapped[datetime]


class Product(Base):
    """A product with its live stock (of one with options, the sum of theirs) and how it is
    sold; ``initial_stock`` is its stock at creation (its options' of then included)."""

    __tablename__ = "products"
    __table_args__ = (CheckConstraint("status IN ('ON_SALE', 'SUSPENDED')", name="status"),)

    id: Mapped[int] = _id()
    name: Mapped[str]
    price: Mapped[int]
    stock: Mapped[int]
    initial_stock: Mapped[int]
    created_at: Mapped[datetime]
    version: Mapped[int]  # the outbox entry that last set the definition (name, price, ...)
    status: Mapped[str] = mapped_column(server_default="ON_SALE")
    sale_starts_at: Mapped[datetime | None]
    sale_ends_at: Mapped[datetime | None]
    max_per_user: Mapped[int | None]
    category: Mapped[str | None]


class ProductOption(Base):
    """An option of a product (a size, a colour) with its own live stock. ``initial_stock``
    is its stock when its product was created: 0 for an option added later, whose first
    stock is its first change (``option_changes``), so that every ledger adds each unit
    once."""

    __tablename__ = "product_options"
    __table_args__ = (Index(None, "product_id", "id"),)  # a product's options, in order

    id: Mapped[int] = _id()
    product_id: Mapped[int]
    name: Mapped[str]
    extra_price: Mapped[int]
    stock: Mapped[int]
    initial_stock: Mapped[int]
    created_at: Mapped[datetime]
    version: Mapped[int]  # the outbox entry that last set name and extra_price


class OptionChange(Base):
    """An admin's change to an option (added to its product later, restocked, renamed,
    repriced): with ``product_changes``, the restocks of the audit."""

    __tablename__ = "option_changes"
    __table_args__ = (Index(None, "option_id"), Index(None, "product_id"))

    entry: Mapped[int] = _id()  # the outbox entry of the change
    option_id: Mapped[int]
    product_id: Mapped[int]
    stock_delta: Mapped[int]
    name: Mapped[str]
    extra_price: Mapped[int]
    changed_at: Mapped[datetime]


class ProductChange(Base):
    """An admin's change to a product (restock, rename, reprice): the restocks of the audit."""

    __tablename__ = "product_changes"
    __table_args__ = (Index(None, "product_id"),)

    entry: Mapped[int] = _id()  # the outbox entry of the change
    product_id: Mapped[int]
    stock_delta: Mapped[int]
    name: Mapped[str]
    price: Mapped[int]
    changed_at: Mapped[datetime]


class Coupon(Base):
    """A first-come-first-served coupon and how many units are left."""

    __tablename__ = "coupons"
    __table_args__ = (CheckConstraint("discount_type IN ('FIXED', 'PERCENT')", name="type"),)

    id: Mapped[int] = _id()
    name: Mapped[str]
    discount_type: Mapped[str]
    discount_value: Mapped[int]
    total_quantity: Mapped[int]
    remaining: Mapped[int]
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime]
    created_at: Mapped[datetime]
    # Issue 28: the coupon's rules (null: none), which its issued coupons follow.
    min_order_amount: Mapped[int | None]
    max_discount_amount: Mapped[int | None]
    description: Mapped[str] = mapped_column(server_default="")


class IssuedCoupon(Base):
    """One unit of a coupon held by a user; ``version`` is the entry that last set status."""

    __tablename__ = "issued_coupons"
    __table_args__ = (
        CheckConstraint("status IN ('AVAILABLE', 'USED')", name="status"),
        Index(None, "user_id", "id"),  # a user's coupons, newest first
        Index(None, "coupon_id", "user_id"),  # holders of a coupon; audit's "issued twice"
    )

    id: Mapped[int] = _id()
    coupon_id: Mapped[int]
    user_id: Mapped[int]
    status: Mapped[str]  # EXPIRED is never stored: it is AVAILABLE past expires_at
    order_id: Mapped[int | None]
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    version: Mapped[int]


class Order(Base):
    """A paid (or later cancelled) order; its lines and payment hang off it. A deferred
    order (issue 28) is PENDING_PAYMENT until its ``payment_due_at``, without a payment,
    then PAID, or EXPIRED or CANCELLED without one."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("status IN ('PAID', 'CANCELLED', 'PENDING_PAYMENT', 'EXPIRED')",
                        name="status"),
        Index(None, "user_id", "id"),  # a user's orders, newest first
        # Orders by hour: a BRIN index costs next to nothing on insert-ordered rows.
        Index("ix_orders_created_at_brin", "created_at", postgresql_using="brin"),
    )

    id: Mapped[int] = _id()
    user_id: Mapped[int]
    status: Mapped[str]
    total_amount: Mapped[int]
    discount_amount: Mapped[int]
    paid_amount: Mapped[int]
    issued_coupon_id: Mapped[int | None]
    created_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    payment_due_at: Mapped[datetime | None]  # a deferred order's (issue 28)


class OrderLine(Base):
    """One product (and option: ``option_id`` and its name then, null for a plain product)
    of an order at the price paid; ``position`` keeps the answer's order."""

    __tablename__ = "order_lines"

    order_id: Mapped[int] = mapped_column(primary_key=True)  # orders.id
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    product_id: Mapped[int]
    name: Mapped[str]
    unit_price: Mapped[int]
    quantity: Mapped[int] = mapped_column(Integer)
    option_id: Mapped[int | None]
    option_name: Mapped[str | None]


class Payment(Base):
    """The payment of an order from the prepaid balance: COMPLETED, or CANCELLED (refunded)."""

    __tablename__ = "payments"
    __table_args__ = (CheckConstraint("status IN ('COMPLETED', 'CANCELLED')", name="status"),)

    order_id: Mapped[int] = mapped_column(primary_key=True)  # orders.id
    user_id: Mapped[int]
    amount: Mapped[int]
    status: Mapped[str]
    paid_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]


class Cart(Base):
    """A user's cart as of outbox entry ``version`` (its last cart.updated) and its time:
    the lines are ``cart_lines``, replaced whole by each change."""

    __tablename__ = "carts"

    user_id: Mapped[int] = _id()
    version: Mapped[int]
    updated_at: Mapped[datetime]


class CartLine(Base):
    """One line of a user's cart: a product (and option: ``option_id``, null for a plain
    product's line) and its quantity; ``position`` keeps the event's order."""

    __tablename__ = "cart_lines"

    user_id: Mapped[int] = mapped_column(primary_key=True)  # carts.user_id
    position: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    product_id: Mapped[int]
    option_id: Mapped[int | None]
    quantity: Mapped[int] = mapped_column(Integer)


class SalesHour(Base):
    """Units of a product sold in one UTC hour (hours since the epoch), net of cancels."""

    __tablename__ = "sales_hourly"

    hour: Mapped[int] = mapped_column(primary_key=True)  # the top-5 reads a range of hours
    product_id: Mapped[int] = mapped_column(primary_key=True)
    units: Mapped[int]


class AppliedEntry(Base):
    """An outbox entry already applied: the idempotency of the Postgres consumer."""

    __tablename__ = "outbox_applied"

    # The stream: a user group's index, -1 the catalog's (engine/keys.py Layout.source).
    stream: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    entry: Mapped[int] = _id()  # the stream id ms-seq as ms * 1_000_000 + seq
    applied_at: Mapped[datetime] = mapped_column(server_default=func.now())


class SetAsideEntry(Base):
    """An outbox entry the Postgres writer could not apply, kept with why: acknowledged in
    the stream so that it stops nothing, applied later by ``rushorder outbox retry``."""

    __tablename__ = "outbox_set_aside"
    __table_args__ = (UniqueConstraint("stream", "entry"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)  # the operator's handle
    stream: Mapped[int] = mapped_column(SmallInteger)  # as in outbox_applied
    entry: Mapped[int]  # as in outbox_applied
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the entry's event JSON, as written
    error: Mapped[str]  # why it was set aside, or why its last retry failed
    attempts: Mapped[int] = mapped_column(Integer, server_default="1")
    set_aside_at: Mapped[datetime] = mapped_column(server_default=func.now())
    tried_at: Mapped[datetime] = mapped_column(server_default=func.now())
