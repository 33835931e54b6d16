"""The outbox entries Postgres has applied: what makes applying a batch twice harmless."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from persistence.bulk import Row, Statement, insert_rows
from persistence.models import AppliedEntry

APPLIED = cast(sa.Table, AppliedEntry.__table__)


class EntryRow(Row):
    """One outbox entry: its stream (a group's index, -1 the catalog's) and its id,
    numbered ``ms * 1_000_000 + seq``."""

    stream: int
    entry: int


CLAIM = Statement(lambda: insert_rows(APPLIED, EntryRow).on_conflict_do_nothing()
                  .returning(APPLIED.c.stream, APPLIED.c.entry))
CLAIM_NEW = Statement(lambda: insert_rows(APPLIED, EntryRow))


class AppliedEntries:
    """Repository of applied outbox entries."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def claim(self, entries: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
        """Mark ``(stream, entry)`` applied; those not applied before (the ones to apply now).

        A concurrent transaction claiming the same entry makes this wait for its outcome,
        so two workers never both apply one entry.
        """
        cursor = CLAIM.run(self.conn, [EntryRow(*e) for e in entries])
        return {(int(row[0]), int(row[1])) for row in cursor} if cursor is not None else set()

    def claim_new(self, entries: Sequence[tuple[int, int]]) -> None:
        """Mark ``(stream, entry)`` applied that none applied before: a plain INSERT, which
        raises ``psycopg.errors.UniqueViolation`` (now, or at the end of a pipeline) if one
        was."""
        CLAIM_NEW.run(self.conn, [EntryRow(*e) for e in entries])

    def prune(self, below: Mapping[int, int]) -> int:
        """Forget each stream's entries below ``below[stream]`` (never redelivered), keeping
        the newest one of all (:meth:`last`)."""
        newest = sa.select(sa.func.max(APPLIED.c.entry)).scalar_subquery()
        gone = 0
        for stream, floor in below.items():
            result = self.conn.execute(sa.delete(APPLIED).where(
                APPLIED.c.stream == stream, APPLIED.c.entry < floor, APPLIED.c.entry < newest))
            gone += int(result.rowcount or 0)
        return gone

    def last(self) -> int | None:
        """The newest entry applied in any stream, if any: a rebuild starts every stream's
        ids above it, whatever the streams were then."""
        value = self.conn.scalar(sa.select(sa.func.max(APPLIED.c.entry)))
        return None if value is None else int(value)
