"""Orders with their lines and payment.

A deferred order (issue 28) arrives PENDING_PAYMENT without a payment (:class:`PendingOrder`),
then is paid (:class:`OrderPayment`: amounts, coupon and the payment row), cancelled, or
expired (:class:`Expiry`); the batch writes them in that order, so one order's whole life
may sit in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import Insert, Row, Statement, largest, relation, rows_of, stream
from persistence.models import Order, OrderLine, Payment

ORDERS = cast(sa.Table, Order.__table__)
LINES = cast(sa.Table, OrderLine.__table__)
PAYMENTS = cast(sa.Table, Payment.__table__)


class OrderRow(Row):
    """An order's header: who, status, amounts, times."""

    id: int
    user_id: int
    status: str
    total_amount: int
    discount_amount: int
    paid_amount: int
    issued_coupon_id: int | None
    created_at: datetime
    cancelled_at: datetime | None
    payment_due_at: datetime | None = None


class LineRow(Row):
    """One product (and option, or None) of an order at the price paid; ``position`` is its
    place in the order."""

    order_id: int
    position: int
    product_id: int
    name: str
    unit_price: int
    quantity: int
    option_id: int | None = None
    option_name: str | None = None


class PaidOrder(Row):
    """An order as paid, the way the writer records it: its status is PAID, and its payment
    is its paid amount from the user's balance at its own time (so the one row gives both)."""

    id: int
    user_id: int
    total_amount: int
    discount_amount: int
    paid_amount: int
    issued_coupon_id: int | None
    created_at: datetime


class PendingOrder(Row):
    """A deferred order placed: PENDING_PAYMENT until ``payment_due_at``, nothing paid."""

    id: int
    user_id: int
    total_amount: int
    created_at: datetime
    payment_due_at: datetime


class OrderPayment(Row):
    """A deferred order paid at ``paid_at``: its amounts, coupon and payment row."""

    id: int
    user_id: int
    discount_amount: int
    paid_amount: int
    issued_coupon_id: int | None
    paid_at: datetime


class Expiry(Row):
    """A deferred order expired unpaid."""

    id: int


class Cancellation(Row):
    """An order cancelled at ``cancelled_at``."""

    id: int
    cancelled_at: datetime


class PaymentRow(Row):
    """An order's payment as stored (issue 28 shows it in every order answer)."""

    amount: int
    status: str
    paid_at: datetime
    cancelled_at: datetime | None


class FullOrder(Row):
    """An order with its lines in order, and its payment (None: never paid)."""

    order: OrderRow
    lines: list[LineRow]
    payment: PaymentRow | None = None


class Inconsistency(Row):
    """How many rows break one rule tying orders, lines and payments together."""

    rule: str
    rows: int


def _add_paid(kept: bool) -> ClauseElement:
    """Orders and their payments from one relation of PaidOrder rows, in one statement."""
    paid = sa.select(*rows_of(ORDERS, PaidOrder).c).cte("paid")
    fields = list(PaidOrder.__struct_fields__)
    orders = pg_insert(ORDERS).from_select(
        [*fields, "status"], sa.select(*(paid.c[f] for f in fields), sa.literal("PAID")))
    payments = pg_insert(PAYMENTS).from_select(
        ["order_id", "user_id", "amount", "status", "paid_at"],
        sa.select(paid.c.id, paid.c.user_id, paid.c.paid_amount, sa.literal("COMPLETED"),
                  paid.c.created_at))
    if kept:
        orders, payments = orders.on_conflict_do_nothing(), payments.on_conflict_do_nothing()
    return payments.add_cte(orders.cte("paid_orders"))


def _cancel(table: sa.Table, key: sa.Column[int], active: str) -> Callable[[], ClauseElement]:
    def build() -> ClauseElement:
        new = relation("cancels", Cancellation, {"id": sa.BigInteger(),
                                                  "cancelled_at": sa.DateTime(timezone=True)})
        # (an OR, not IN: an IN's expanding parameter cannot be compiled once, bulk.Statement)
        return (sa.update(table).where(key == new.c.id,
                                       sa.or_(*(table.c.status == s for s in active.split())))
                .values(status="CANCELLED", cancelled_at=new.c.cancelled_at))

    return build


def _add_pending(kept: bool) -> ClauseElement:
    new = rows_of(ORDERS, PendingOrder)
    fields = list(PendingOrder.__struct_fields__)
    stmt = pg_insert(ORDERS).from_select(
        [*fields, "status", "discount_amount", "paid_amount"],
        sa.select(*(new.c[f] for f in fields), sa.literal("PENDING_PAYMENT"), sa.literal(0),
                  sa.literal(0)))
    return stmt.on_conflict_do_nothing() if kept else stmt


def _payments() -> sa.Subquery:
    """The ``rows`` parameter as a relation of OrderPayment rows."""
    types = {c.name: c.type for c in ORDERS.columns} | {"paid_at": PAYMENTS.c.paid_at.type}
    return relation("pays", OrderPayment, types)


def _pay() -> ClauseElement:
    """Pending orders paid, and their payments, in one statement."""
    new = _payments()
    orders = (sa.update(ORDERS).where(ORDERS.c.id == new.c.id,
                                      ORDERS.c.status == "PENDING_PAYMENT")
              .values(status="PAID", discount_amount=new.c.discount_amount,
                      paid_amount=new.c.paid_amount, issued_coupon_id=new.c.issued_coupon_id))
    paid = sa.select(*_payments().c).cte("paid")
    payments = pg_insert(PAYMENTS).from_select(
        ["order_id", "user_id", "amount", "status", "paid_at"],
        sa.select(paid.c.id, paid.c.user_id, paid.c.paid_amount, sa.literal("COMPLETED"),
                  paid.c.paid_at)).on_conflict_do_nothing()
    return payments.add_cte(orders.cte("paid_orders"))


def _expire() -> ClauseElement:
    new = relation("expiries", Expiry, {"id": sa.BigInteger()})
    return (sa.update(ORDERS).where(ORDERS.c.id == new.c.id,
                                    ORDERS.c.status == "PENDING_PAYMENT")
            .values(status="EXPIRED"))


ADD_PAID = Insert(_add_paid)
ADD_PENDING = Insert(_add_pending)
PAY_ORDERS = Statement(_pay)
EXPIRE_ORDERS = Statement(_expire)
ADD_LINES = Insert.of(LINES, LineRow)
CANCEL_ORDERS = Statement(_cancel(ORDERS, ORDERS.c.id, "PAID PENDING_PAYMENT"))
CANCEL_PAYMENTS = Statement(_cancel(PAYMENTS, PAYMENTS.c.order_id, "COMPLETED"))


class Orders:
    """Repository of orders, order lines and payments. ``fresh``: rows written come from
    outbox entries just claimed, so none can be there yet (see ``persistence.bulk``)."""

    def __init__(self, conn: Connection, *, fresh: bool = False) -> None:
        self.conn = conn
        self.fresh = fresh

    def add(self, orders: Sequence[PaidOrder], lines: Sequence[LineRow]) -> None:
        """Record paid orders with their payments and lines (unless fresh, ones already
        there are kept)."""
        ADD_PAID.run(self.conn, orders, fresh=self.fresh)
        ADD_LINES.run(self.conn, lines, fresh=self.fresh)

    def add_pending(self, orders: Sequence[PendingOrder]) -> None:
        """Record deferred orders awaiting payment (their lines come with :meth:`add`)."""
        ADD_PENDING.run(self.conn, orders, fresh=self.fresh)

    def pay(self, rows: Sequence[OrderPayment]) -> None:
        """Mark pending orders paid, with their payments."""
        PAY_ORDERS.run(self.conn, rows)

    def expire(self, rows: Sequence[Expiry]) -> None:
        """Mark pending orders expired."""
        EXPIRE_ORDERS.run(self.conn, rows)

    def cancel(self, rows: Sequence[Cancellation]) -> None:
        """Mark paid orders and their payments cancelled."""
        CANCEL_ORDERS.run(self.conn, rows)
        CANCEL_PAYMENTS.run(self.conn, rows)

    def all(self, since: datetime | None = None) -> Iterator[FullOrder]:
        """Every order with its lines, by id; with ``since``, only the orders above each
        user's floor (:meth:`floors`): Redis' recent tail."""
        paid = (PAYMENTS.c.amount, PAYMENTS.c.status, PAYMENTS.c.paid_at,
                PAYMENTS.c.cancelled_at)
        query = (sa.select(*ORDERS.c, *paid, *LINES.c)
                 .select_from(ORDERS.join(LINES, LINES.c.order_id == ORDERS.c.id)
                              .outerjoin(PAYMENTS, PAYMENTS.c.order_id == ORDERS.c.id)))
        if since is not None:
            floors = self._floors(since).subquery()
            # A pending order (issue 28) is always live (its pay, cancel and expiry need it),
            # and so is every later order of its user: a user's list of ids in Redis runs
            # from its oldest order held, as settle.lua leaves it (it drops a list's head
            # only up to the first order still held).
            pending = (sa.select(ORDERS.c.user_id, sa.func.min(ORDERS.c.id).label("first"))
                       .where(ORDERS.c.status == "PENDING_PAYMENT")
                       .group_by(ORDERS.c.user_id).subquery())
            query = (query.outerjoin(floors, floors.c.user_id == ORDERS.c.user_id)
                     .outerjoin(pending, pending.c.user_id == ORDERS.c.user_id)
                     .where(sa.or_(ORDERS.c.id > sa.func.coalesce(floors.c.top, 0),
                                   ORDERS.c.id >= pending.c.first)))
        query = query.order_by(ORDERS.c.id, LINES.c.position)
        width, lines = len(ORDERS.c), len(ORDERS.c) + len(paid)
        for _, rows in groupby(stream(self.conn, query), key=lambda row: row[0]):
            group = list(rows)
            head = OrderRow(*group[0][:width])
            payment = group[0][width:lines]
            yield FullOrder(head, [LineRow(*row[lines:]) for row in group],
                            None if payment[0] is None else PaymentRow(*payment))

    def floors(self, since: datetime) -> dict[int, int]:
        """Each user's newest order whose last change (paid, or cancelled) came before
        ``since``, by user: Redis holds every order of the user's above it after a rebuild."""
        return {int(user): int(top) for user, top in stream(self.conn, self._floors(since))}

    @staticmethod
    def _floors(since: datetime) -> sa.Select[Any]:
        changed = sa.func.coalesce(ORDERS.c.cancelled_at, ORDERS.c.created_at)
        return (sa.select(ORDERS.c.user_id, sa.func.max(ORDERS.c.id).label("top"))
                .where(changed < since).group_by(ORDERS.c.user_id))

    def units(self, first_hour: int) -> Iterator[tuple[int, int, int, int]]:
        """Units of paid orders paid since the UTC hour ``first_hour`` (hours since the
        epoch), as ``(user, hour, product, units)``: what each user's group counted (a
        cancel takes its units out again, so cancelled orders count none; a deferred order
        counts in the hour of its pay, issue 28)."""
        hour = sa.cast(sa.func.floor(sa.extract("epoch", PAYMENTS.c.paid_at) / 3600),
                       sa.BigInteger).label("hour")
        query = (sa.select(ORDERS.c.user_id, hour, LINES.c.product_id,
                           sa.func.sum(LINES.c.quantity))
                 .select_from(ORDERS.join(LINES, LINES.c.order_id == ORDERS.c.id)
                              .join(PAYMENTS, PAYMENTS.c.order_id == ORDERS.c.id))
                 .where(ORDERS.c.status == "PAID",
                        PAYMENTS.c.paid_at >= sa.func.to_timestamp(first_hour * 3600))
                 .group_by(ORDERS.c.user_id, hour, LINES.c.product_id))
        for user, at, product, units in stream(self.conn, query):
            yield int(user), int(at), int(product), int(units)

    def bought(self) -> Iterator[tuple[int, int, int]]:
        """Units each user holds in paid (not cancelled) or pending orders, by product,
        all options together, as ``(user, product, units)`` by user: what ``max_per_user``
        counts (``<g>:bought:<user>``; a pending order holds its units, issue 28)."""
        query = (sa.select(ORDERS.c.user_id, LINES.c.product_id, sa.func.sum(LINES.c.quantity))
                 .select_from(ORDERS.join(LINES, LINES.c.order_id == ORDERS.c.id))
                 .where(ORDERS.c.status.in_(("PAID", "PENDING_PAYMENT")))
                 .group_by(ORDERS.c.user_id, LINES.c.product_id)
                 .order_by(ORDERS.c.user_id, LINES.c.product_id))
        for user, product, units in stream(self.conn, query):
            yield int(user), int(product), int(units)

    def owners(self) -> dict[int, int]:
        """Every order's user, by id."""
        query = sa.select(ORDERS.c.id, ORDERS.c.user_id)
        return {int(oid): int(user) for oid, user in stream(self.conn, query)}

    def payments(self) -> dict[int, str]:
        """Every order's payment as "<status> <amount>" ("none": never paid), by id, as
        ``engine.restore.payment_summary`` reads Redis'."""
        query = (sa.select(ORDERS.c.id, PAYMENTS.c.status, PAYMENTS.c.amount)
                 .select_from(ORDERS.outerjoin(PAYMENTS, PAYMENTS.c.order_id == ORDERS.c.id)))
        return {int(oid): "none" if status is None else f"{status} {amount}"
                for oid, status, amount in stream(self.conn, query)}

    def statuses(self) -> dict[int, str]:
        """Every order's status, by id."""
        query = sa.select(ORDERS.c.id, ORDERS.c.status)
        return {int(oid): str(status) for oid, status in stream(self.conn, query)}

    def count(self) -> int:
        """How many orders there are."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(ORDERS)) or 0)

    def last_id(self) -> int:
        """The largest order id given out (0 if none)."""
        return largest(self.conn, ORDERS.c.id)

    def inconsistencies(self) -> list[Inconsistency]:
        """Rules of the order aggregate that some rows break (lines or payments without an
        order, orders without lines or a payment, a payment whose status disagrees)."""
        def missing(child: sa.Table, key: sa.Column[int], parent: sa.Table,
                    parent_key: sa.Column[int], *only: Any) -> sa.ScalarSelect[int]:
            orphan = ~sa.exists().where(parent_key == key)
            return (sa.select(sa.func.count()).select_from(child).where(orphan, *only)
                    .scalar_subquery())

        # Only a paid order has a payment: every PAID one, and a cancelled one unless it
        # was a deferred order cancelled before it was paid (issue 28; its paid_amount 0).
        paid = sa.or_(ORDERS.c.status == "PAID", sa.and_(
            ORDERS.c.status == "CANCELLED",
            sa.or_(ORDERS.c.payment_due_at.is_(None), ORDERS.c.paid_amount > 0)))
        amounts = (sa.select(sa.func.count()).select_from(
            PAYMENTS.join(ORDERS, ORDERS.c.id == PAYMENTS.c.order_id))
            .where(ORDERS.c.paid_amount != PAYMENTS.c.amount).scalar_subquery())

        disagree = (sa.select(sa.func.count()).select_from(
            PAYMENTS.join(ORDERS, ORDERS.c.id == PAYMENTS.c.order_id))
            .where((ORDERS.c.status == "CANCELLED") != (PAYMENTS.c.status == "CANCELLED"))
            .scalar_subquery())
        rules = {
            "order lines without an order": missing(LINES, LINES.c.order_id, ORDERS, ORDERS.c.id),
            "payments without an order": missing(PAYMENTS, PAYMENTS.c.order_id, ORDERS,
                                                 ORDERS.c.id),
            "orders without lines": missing(ORDERS, ORDERS.c.id, LINES, LINES.c.order_id),
            "orders without a payment": missing(ORDERS, ORDERS.c.id, PAYMENTS,
                                                PAYMENTS.c.order_id, paid),
            "payments whose status disagrees with their order's": disagree,
            "payments whose amount is not their order's paid_amount": amounts,
        }
        counts = self.conn.execute(sa.select(*rules.values())).one()
        return [Inconsistency(rule, int(n)) for rule, n in zip(rules, counts, strict=True) if n]
