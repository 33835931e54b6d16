"""Outbox entries set aside: what the Postgres writer could not apply, kept with why.

Postgres may refuse an entry's data (a NUL in a name, a time out of its range) or the
writer may not be able to decode it; retrying it forever would stop every entry after it,
everybody's. So the writer keeps it here, in a transaction of its own, acknowledges it in
the stream and goes on (``workers/postgres.py``); ``rushorder audit``, the workers'
metrics, ``/health/ready`` and the console show it, and ``rushorder outbox retry``
applies it once an operator fixed the cause. One row per (stream, entry): setting the
same entry aside twice (a crash before the acknowledgement) keeps the first row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.models import SetAsideEntry

SET_ASIDE = cast(sa.Table, SetAsideEntry.__table__)
ERROR_CHARS = 1000  # an error message kept, at most
# Catalog entries first (a group's events name its products and coupons), then each
# stream's in stream order: the order the writer applies them in.
IN_ORDER = (SET_ASIDE.c.stream != -1, SET_ASIDE.c.stream, SET_ASIDE.c.entry)


class SetAsideRow(msgspec.Struct, frozen=True, kw_only=True):
    """One set-aside entry as stored."""

    id: int
    stream: int  # a user group's index, -1 the catalog's (as in outbox_applied)
    entry: int  # the stream id ms-seq as ms * 1_000_000 + seq
    raw: bytes
    error: str
    attempts: int
    set_aside_at: datetime
    tried_at: datetime

    @property
    def type(self) -> str | None:
        """The event's type, if its JSON says (it may not decode as an event)."""
        return event_type(self.raw)


class SetAsideSummary(msgspec.Struct, frozen=True, kw_only=True):
    """How many entries are set aside, and the oldest few (for /health/ready, the console)."""

    count: int
    oldest: list[dict[str, Any]]  # id, stream, entry, type, error, set_aside_at


class _Typed(msgspec.Struct):
    type: str | None = None


def event_type(raw: bytes) -> str | None:
    """The ``type`` of an event's JSON; None if it is not JSON with one."""
    try:
        return msgspec.json.decode(raw, type=_Typed).type
    except msgspec.MsgspecError:
        return None


def clean(error: str) -> str:
    """An error as stored: no NUL (Postgres refuses it in text), at most ERROR_CHARS."""
    return error.replace("\x00", "\\x00")[:ERROR_CHARS]


class SetAside:
    """Repository of set-aside entries. Each write is one statement: on a connection in
    autocommit mode (the writer's), a transaction of its own."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, stream: int, entry: int, raw: bytes, error: str) -> None:
        """Keep an entry and why; an entry kept already keeps its first error."""
        self.conn.execute(pg_insert(SET_ASIDE).values(
            stream=stream, entry=entry, raw=raw, error=clean(error),
        ).on_conflict_do_nothing(index_elements=["stream", "entry"]))

    def all(self, ids: Sequence[int] | None = None) -> list[SetAsideRow]:
        """Every entry set aside (or those of ``ids``), in the order they apply in."""
        query = sa.select(SET_ASIDE).order_by(*IN_ORDER)
        if ids is not None:
            query = query.where(SET_ASIDE.c.id.in_(list(ids)))
        return [SetAsideRow(**row) for row in self.conn.execute(query).mappings()]

    def count(self) -> int:
        """How many entries are set aside."""
        return int(self.conn.scalar(sa.select(sa.func.count()).select_from(SET_ASIDE)) or 0)

    def remove(self, row_id: int) -> None:
        """Forget an entry (it is applied now)."""
        self.conn.execute(sa.delete(SET_ASIDE).where(SET_ASIDE.c.id == row_id))

    def failed_again(self, row_id: int, error: str) -> None:
        """A retry failed: count it and keep its error."""
        self.conn.execute(sa.update(SET_ASIDE).where(SET_ASIDE.c.id == row_id).values(
            error=clean(error), attempts=SET_ASIDE.c.attempts + 1, tried_at=sa.func.now()))


async def summary(db: AsyncEngine, shown: int = 5) -> SetAsideSummary:
    """How many entries are set aside and the oldest ``shown``, over the API's pool (the
    archive's ``db``): what /health/ready and the console show."""
    columns = (SET_ASIDE.c.id, SET_ASIDE.c.stream, SET_ASIDE.c.entry, SET_ASIDE.c.raw,
               SET_ASIDE.c.error, SET_ASIDE.c.set_aside_at)
    async with db.connect() as conn:
        count = int(await conn.scalar(sa.select(sa.func.count()).select_from(SET_ASIDE)) or 0)
        rows = (await conn.execute(sa.select(*columns).order_by(SET_ASIDE.c.id)
                                   .limit(shown))).mappings().all() if count else []
    return SetAsideSummary(count=count, oldest=[
        {"id": r["id"], "stream": r["stream"], "entry": r["entry"],
         "type": event_type(r["raw"]), "error": r["error"],
         "set_aside_at": r["set_aside_at"].isoformat()} for r in rows])
