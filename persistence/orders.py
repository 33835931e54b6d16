"""Orders with their lines and payment."""

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


class Cancellation(Row):
    """An order cancelled at ``cancelled_at``."""

    id: int
    cancelled_at: datetime


class FullOrder(Row):
    """An order with its lines in order."""

    order: OrderRow
    lines: list[LineRow]


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
        return (sa.update(table).where(key == new.c.id, table.c.status == active)
                .values(status="CANCELLED", cancelled_at=new.c.cancelled_at))

    return build


ADD_PAID = Insert(_add_paid)
ADD_LINES = Insert.of(LINES, LineRow)
CANCEL_ORDERS = Statement(_cancel(ORDERS, ORDERS.c.id, "PAID"))
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

    def cancel(self, rows: Sequence[Cancellation]) -> None:
        """Mark paid orders and their payments cancelled."""
        CANCEL_ORDERS.run(self.conn, rows)
        CANCEL_PAYMENTS.run(self.conn, rows)

    def all(self, since: datetime | None = None) -> Iterator[FullOrder]:
        """Every order with its lines, by id; with ``since``, only the orders above each
        user's floor (:meth:`floors`): Redis' recent tail."""
        query = (sa.select(*ORDERS.c, *LINES.c)
                 .select_from(ORDERS.join(LINES, LINES.c.order_id == ORDERS.c.id)))
        if since is not None:
            floors = self._floors(since).subquery()
            query = query.outerjoin(floors, floors.c.user_id == ORDERS.c.user_id).where(
                ORDERS.c.id > sa.func.coalesce(floors.c.top, 0))
        query = query.order_by(ORDERS.c.id, LINES.c.position)
        width = len(ORDERS.c)
        for _, rows in groupby(stream(self.conn, query), key=lambda row: row[0]):
            group = list(rows)
            head = OrderRow(*group[0][:width])
            yield FullOrder(head, [LineRow(*row[width:]) for row in group])

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
        """Units of paid orders placed since the UTC hour ``first_hour`` (hours since the
        epoch), as ``(user, hour, product, units)``: what each user's group counted (a
        cancel takes its units out again, so cancelled orders count none)."""
        hour = sa.cast(sa.func.floor(sa.extract("epoch", ORDERS.c.created_at) / 3600),
                       sa.BigInteger).label("hour")
        query = (sa.select(ORDERS.c.user_id, hour, LINES.c.product_id,
                           sa.func.sum(LINES.c.quantity))
                 .select_from(ORDERS.join(LINES, LINES.c.order_id == ORDERS.c.id))
                 .where(ORDERS.c.status == "PAID",
                        ORDERS.c.created_at >= sa.func.to_timestamp(first_hour * 3600))
                 .group_by(ORDERS.c.user_id, hour, LINES.c.product_id))
        for user, at, product, units in stream(self.conn, query):
            yield int(user), int(at), int(product), int(units)

    def bought(self) -> Iterator[tuple[int, int, int]]:
        """Units each user holds in paid (not cancelled) orders, by product, all options
        together, as ``(user, product, units)`` by user: what ``max_per_user`` counts
        (``<g>:bought:<user>``)."""
        query = (sa.select(ORDERS.c.user_id, LINES.c.product_id, sa.func.sum(LINES.c.quantity))
                 .select_from(ORDERS.join(LINES, LINES.c.order_id == ORDERS.c.id))
                 .where(ORDERS.c.status == "PAID")
                 .group_by(ORDERS.c.user_id, LINES.c.product_id)
                 .order_by(ORDERS.c.user_id, LINES.c.product_id))
        for user, product, units in stream(self.conn, query):
            yield int(user), int(product), int(units)

    def owners(self) -> dict[int, int]:
        """Every order's user, by id."""
        query = sa.select(ORDERS.c.id, ORDERS.c.user_id)
        return {int(oid): int(user) for oid, user in stream(self.conn, query)}

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
                    parent_key: sa.Column[int]) -> sa.ScalarSelect[int]:
            orphan = ~sa.exists().where(parent_key == key)
            return sa.select(sa.func.count()).select_from(child).where(orphan).scalar_subquery()

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
                                                PAYMENTS.c.order_id),
            "payments whose status disagrees with their order's": disagree,
        }
        counts = self.conn.execute(sa.select(*rules.values())).one()
        return [Inconsistency(rule, int(n)) for rule, n in zip(rules, counts, strict=True) if n]
