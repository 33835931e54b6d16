"""Users' balances and their history lines."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement

from persistence.bulk import Insert, Row, Statement, insert_rows, largest, stream
from persistence.models import HistoryLine, User

USERS = cast(sa.Table, User.__table__)
HISTORY = cast(sa.Table, HistoryLine.__table__)


class BalanceRow(Row):
    """A user's balance as of outbox entry ``version``."""

    id: int
    balance: int
    version: int


class HistoryRow(Row):
    """One balance movement, as the engine numbered it."""

    id: int
    user_id: int
    type: str
    amount: int
    balance_after: int
    order_id: int | None
    created_at: datetime


class LedgerMismatch(Row):
    """A user whose balance is not charges - uses + refunds."""

    user_id: int
    balance: int
    from_history: int


def _set_balances() -> ClauseElement:
    stmt = insert_rows(USERS, BalanceRow)
    return stmt.on_conflict_do_update(
        index_elements=[USERS.c.id],
        set_={"balance": stmt.excluded.balance, "version": stmt.excluded.version},
        where=USERS.c.version < stmt.excluded.version)


SET_BALANCES = Statement(_set_balances)
ADD_HISTORY = Insert.of(HISTORY, HistoryRow)


class Balances:
    """Repository of users' balances and balance history. ``fresh``: rows written come from
    outbox entries just claimed, so none can be there yet (see ``persistence.bulk``)."""

    def __init__(self, conn: Connection, *, fresh: bool = False) -> None:
        self.conn = conn
        self.fresh = fresh

    def set(self, rows: Sequence[BalanceRow]) -> None:
        """Store balances; a row older than the stored one (by outbox entry) changes nothing."""
        SET_BALANCES.run(self.conn, rows)

    def add_history(self, rows: Sequence[HistoryRow]) -> None:
        """Record history lines (unless fresh, a line already there is kept)."""
        ADD_HISTORY.run(self.conn, rows, fresh=self.fresh)

    def all(self) -> Iterator[BalanceRow]:
        """Every user's balance."""
        query = sa.select(USERS.c.id, USERS.c.balance, USERS.c.version)
        return (BalanceRow(*row) for row in stream(self.conn, query))

    def history(self, since: datetime | None = None) -> Iterator[HistoryRow]:
        """Every history line, by user then id; with ``since``, only the lines above each
        user's floor (:meth:`history_floors`): Redis' recent tail."""
        query = sa.select(*HISTORY.c)
        if since is not None:
            floors = self._floors(since).subquery()
            query = query.outerjoin(floors, floors.c.user_id == HISTORY.c.user_id).where(
                HISTORY.c.id > sa.func.coalesce(floors.c.top, 0))
        query = query.order_by(HISTORY.c.user_id, HISTORY.c.id)
        return (HistoryRow(*row) for row in stream(self.conn, query))

    def history_floors(self, since: datetime) -> dict[int, int]:
        """Each user's newest history line written before ``since``, by user."""
        return {int(user): int(top) for user, top in stream(self.conn, self._floors(since))}

    @staticmethod
    def _floors(since: datetime) -> sa.Select[Any]:
        return (sa.select(HISTORY.c.user_id, sa.func.max(HISTORY.c.id).label("top"))
                .where(HISTORY.c.created_at < since).group_by(HISTORY.c.user_id))

    def count(self) -> int:
        """How many users have a balance."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(USERS)) or 0)

    def count_history(self) -> int:
        """How many history lines there are."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(HISTORY)) or 0)

    def last_history_id(self) -> int:
        """The largest history id given out (0 if none)."""
        return largest(self.conn, HISTORY.c.id)

    def ledger_mismatches(self) -> list[LedgerMismatch]:
        """Users whose balance differs from the sum of their history lines."""
        signed = sa.case((HISTORY.c.type == "USE", -HISTORY.c.amount), else_=HISTORY.c.amount)
        sums = (sa.select(HISTORY.c.user_id, sa.func.sum(signed).label("total"))
                .group_by(HISTORY.c.user_id).subquery())
        total = sa.func.coalesce(sums.c.total, 0)
        query = (sa.select(USERS.c.id, USERS.c.balance, total)
                 .select_from(USERS.outerjoin(sums, sums.c.user_id == USERS.c.id))
                 .where(USERS.c.balance != total).order_by(USERS.c.id))
        return [LedgerMismatch(*row) for row in self.conn.execute(query)]

