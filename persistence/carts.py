"""Users' carts: each cart.updated event carries the whole cart after the change, so a cart
is replaced whole, in entry order (a change older than the one stored changes nothing).

``carts`` holds each user's version (the outbox entry of the last change applied) and its
time; ``cart_lines`` the lines. A batch keeps each user's last event (the projection), and
the three statements run in this order in the batch's transaction: the lines of the users
whose stored version is older go, their new lines come, then their versions move on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import Row, Statement, insert_rows, relation, rows_of, stream
from persistence.models import Cart, CartLine

CARTS = cast(sa.Table, Cart.__table__)
LINES = cast(sa.Table, CartLine.__table__)


class CartRow(Row):
    """A user's cart as of outbox entry ``version`` (its lines are CartLineRows)."""

    user_id: int
    version: int
    updated_at: datetime


class CartLineRow(Row):
    """One line of a user's cart as of ``version``; ``option_id`` None for a plain
    product's line."""

    user_id: int
    position: int
    product_id: int
    option_id: int | None
    quantity: int
    version: int


class StoredCart(Row):
    """A user's cart as Postgres holds it: version, time and lines in order."""

    user_id: int
    version: int
    updated_at: datetime
    lines: list[CartLineRow]


def _newer(user_id: sa.ColumnElement[int], version: sa.ColumnElement[int]) -> Any:
    """No stored cart of the user is as new as ``version``."""
    return ~sa.exists().where(CARTS.c.user_id == user_id, CARTS.c.version >= version)


def _drop_lines() -> ClauseElement:
    new = rows_of(CARTS, CartRow)
    return sa.delete(LINES).where(LINES.c.user_id == new.c.user_id,
                                  _newer(new.c.user_id, new.c.version))


def _add_lines() -> ClauseElement:
    new = relation("new_cart_lines", CartLineRow, {
        **{c.name: c.type for c in LINES.columns}, "version": sa.BigInteger()})
    fields = [f for f in CartLineRow.__struct_fields__ if f != "version"]
    return pg_insert(LINES).from_select(fields, sa.select(*(new.c[f] for f in fields)).where(
        _newer(new.c.user_id, new.c.version)))


def _set_versions() -> ClauseElement:
    stmt = insert_rows(CARTS, CartRow)
    return stmt.on_conflict_do_update(
        index_elements=[CARTS.c.user_id],
        set_={"version": stmt.excluded.version, "updated_at": stmt.excluded.updated_at},
        where=CARTS.c.version < stmt.excluded.version)


DROP_LINES = Statement(_drop_lines)
ADD_LINES = Statement(_add_lines)
SET_VERSIONS = Statement(_set_versions)


class Carts:
    """Repository of users' carts."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def replace(self, carts: Sequence[CartRow], lines: Sequence[CartLineRow]) -> None:
        """Replace each user's cart by its newer version (``lines`` are theirs); a version
        no newer than the stored one changes nothing, so a replay is harmless."""
        DROP_LINES.run(self.conn, carts)
        ADD_LINES.run(self.conn, lines)
        SET_VERSIONS.run(self.conn, carts)

    def all(self) -> Iterator[StoredCart]:
        """Every stored cart with its lines (an empty one with none), by user."""
        query = (sa.select(CARTS.c.user_id, CARTS.c.version, CARTS.c.updated_at,
                           LINES.c.position, LINES.c.product_id, LINES.c.option_id,
                           LINES.c.quantity)
                 .select_from(CARTS.outerjoin(LINES, LINES.c.user_id == CARTS.c.user_id))
                 .order_by(CARTS.c.user_id, LINES.c.position))
        for _, rows in groupby(stream(self.conn, query), key=lambda row: row[0]):
            group = list(rows)
            user, version, at = group[0][:3]
            yield StoredCart(user, version, at, [
                CartLineRow(user, pos, pid, oid, qty, version)
                for _, _, _, pos, pid, oid, qty in group if pos is not None])

    def count(self) -> int:
        """How many users have a stored cart."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(CARTS)) or 0)
