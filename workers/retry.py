"""``rushorder outbox retry``: apply the outbox entries the Postgres writer set aside.

Once an operator fixed what made Postgres refuse an entry (the data, in
``outbox_set_aside.raw``; the schema; a worker that could not decode it, upgraded), a
retry applies the set-aside entries in the order the writer would have (the catalog's
first, then each stream's by id), each in a transaction of its own that also removes it:
its claim in ``outbox_applied`` keeps it from being applied twice, whoever else runs. An
entry that fails again stays with its new error, and so does every entry behind it (one
that needs what it owns, ``workers/holds.py``). Retried entries are not settled: they
stay in Redis too, which costs memory, never correctness.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import msgspec
import psycopg
from sqlalchemy.engine import Connection, Engine

from engine.outbox.events import AnyEvent
from persistence.database import autocommit, transaction
from persistence.setaside import SetAside, SetAsideRow
from workers.holds import Holds, describe, owned
from workers.postgres import REFUSED, apply_batch, decode_or_why

log = logging.getLogger("rushorder.workers")


class Retried(msgspec.Struct, frozen=True, kw_only=True):
    """What a retry did: entries applied, and those still set aside (with their errors)."""

    applied: int
    left: list[SetAsideRow]


def retry_set_aside(db: Engine, ids: Collection[int] | None = None) -> Retried:
    """Apply the set-aside entries of ``ids`` (None: all of them) that now succeed."""
    with db.connect() as plain:
        conn = autocommit(plain)
        holds, applied = Holds(), 0
        for row in SetAside(conn).all():
            event, why = decode_or_why(row.raw)
            if ids is not None and row.id not in ids:
                holds.hold(owned(event, row.raw))  # not retried: what follows it waits
            elif _retry(conn, row, event, why, holds):
                applied += 1
            else:
                holds.hold(owned(event, row.raw))
        return Retried(applied=applied, left=SetAside(conn).all())


def _retry(conn: Connection, row: SetAsideRow, event: AnyEvent | None, why: str,
           holds: Holds) -> bool:
    """Apply one entry and forget it, in one transaction; whether it was applied (``why``:
    why the entry does not decode, when ``event`` is None)."""
    if event is None:
        return _failed(conn, row, why)
    if (blocker := holds.blocker(event)) is not None:
        return _failed(conn, row, f"held back: an earlier entry of {describe(blocker)} is "
                                  "still set aside")
    try:
        with transaction(conn):
            apply_batch(conn, [(row.entry, event)], [(row.stream, row.entry)])
            SetAside(conn).remove(row.id)
    except (*REFUSED, psycopg.errors.UniqueViolation) as exc:
        return _failed(conn, row, f"{type(exc).__name__}: {exc}")
    log.info("outbox retry: entry %d (stream %d, %d) applied", row.id, row.stream, row.entry)
    return True


def _failed(conn: Connection, row: SetAsideRow, error: str) -> bool:
    SetAside(conn).failed_again(row.id, error)
    log.warning("outbox retry: entry %d still set aside: %s", row.id, error[:300])
    return False

