"""The Postgres writer: applies the outbox to Postgres, one transaction per batch, in order.

One writer at a time applies the ``postgres`` group, strictly in stream order, so that
an order's ``order.paid`` is always written before its ``order.cancelled``, a product
before the orders of it, and so on. Any number of writers may run (two RQ jobs at once,
one per worker process): they take turns through a Postgres session advisory lock.

* The batch transactions run on the very connection that holds the lock, so a writer that
  lost its session (Postgres restart, network cut, killed) cannot commit anything more.
* A writer that takes over first waits until every other consumer of the group has been
  quiet for ``reclaim_idle_ms`` (a writer that lost its lock unknowingly may still be
  reading), then claims their pending entries (XAUTOCLAIM after that idle time) and
  applies them before reading anything new. A writer that stops cleanly acknowledges
  everything and removes itself from the group, so the next one need not wait.
* Every batch claims its entry ids in ``outbox_applied`` in the same transaction: an entry
  applied twice (a crash between COMMIT and XACK) changes nothing the second time.
* A batch is first written as new (:func:`apply_new`): BEGIN, the claim, every write and
  COMMIT in one pipeline (one round trip), with plain INSERTs. Should an entry have been
  applied before, its claim raises a unique violation, the transaction rolls back, and the
  batch is written again the careful way (:func:`apply_batch`): claim first, project only
  the entries that were new, and keep any row already there (ON CONFLICT DO NOTHING), so
  that no row Postgres holds can refuse an event the engine committed.
* No entry stops the others. Should Postgres refuse a batch for its data (a NUL in a name,
  a value out of range: :data:`REFUSED`, never a connection error, which is retried), the
  batch is written again in halves, down to the one entry it refuses (:meth:`_sift`).
  That entry, and one that cannot be decoded, is *set aside*: kept in
  ``outbox_set_aside`` with the error (``persistence/setaside.py``), acknowledged, and
  not settled; every later entry that depends on it (its user's; orders of a product whose
  entry was set aside, ``workers/holds.py``) is set aside behind it, and every other entry
  is written. ``rushorder outbox retry`` applies them once the cause is fixed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import msgspec
import psycopg
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from engine.keys import Group
from engine.outbox import Entry, Outboxes, entry_number
from engine.outbox.events import AnyEvent, decode
from engine.outbox.settle import Settler, record
from persistence.balances import Balances
from persistence.carts import Carts
from persistence.catalog import Catalog
from persistence.coupons import Coupons
from persistence.database import autocommit, pipelined, transaction
from persistence.orders import Orders
from persistence.outbox import AppliedEntries
from persistence.sales import Sales
from persistence.setaside import SetAside, SetAsideRow
from workers.backoff import Backoff
from workers.holds import Holds, Key, describe, owned
from workers.projection import Changes, project

log = logging.getLogger("rushorder.workers.postgres")

LOCK = sa.text("SELECT pg_try_advisory_lock(hashtext(:name))")
UNLOCK = sa.text("SELECT pg_advisory_unlock_all()")
# Postgres or Redis away, or a batch Postgres refused: retried with backoff. (Errors of a
# pipelined block come straight from psycopg, not wrapped by SQLAlchemy.)
TROUBLE = (SQLAlchemyError, psycopg.Error, redis.RedisError)
# What an entry's own data can make Postgres (or the projection) refuse: the entry is set
# aside and the others go on. Connection and server trouble (OperationalError and the
# like) is not among them: that is retried, whatever the batch holds.
REFUSED = (psycopg.DataError, psycopg.IntegrityError, sa.exc.DataError, sa.exc.IntegrityError,
           ValueError, OverflowError)
STANDBY_S = 0.5  # how often a writer without the lock tries again
MAINTAIN_EVERY_S = 5.0  # trim the stream, prune applied entries, pick up stragglers
# A read after one that did not fill its batch waits until this long after that one: a
# writer that keeps up would otherwise commit a few entries at a time, each batch costing
# ~1 ms of CPU in the writer and in Postgres whatever its size. 60 rather than 20 ms: on
# the whole stack under load (load/bench_stack.py, interleaved) the writer's CPU per order
# fell 26% and Postgres' 16%, and orders/s rose 8-11%; commits lag the answers by at most
# that much more, which no reader sees (reads are Redis' until an order is settled).
LINGER_MS = 60


def write(conn: Connection, changes: Changes, *, fresh: bool = False) -> None:
    """Write a batch's row sets: parents before the rows that refer to them. ``fresh``: every
    row comes from an entry claimed as new in this transaction (plain INSERTs)."""
    balances, catalog = Balances(conn, fresh=fresh), Catalog(conn, fresh=fresh)
    coupons, orders = Coupons(conn, fresh=fresh), Orders(conn, fresh=fresh)
    balances.set(list(changes.balances.values()))
    balances.add_history(changes.history)
    catalog.add(changes.products)
    catalog.add_options(changes.options)
    catalog.set_details(list(changes.details.values()))
    catalog.set_option_details(list(changes.option_details.values()))
    catalog.record_changes(changes.product_changes)
    catalog.record_option_changes(changes.option_changes)
    catalog.move_stock(changes.stock_moves())
    catalog.move_option_stock(changes.option_stock_moves())
    Sales(conn).add(changes.sales_rows())
    coupons.add(changes.coupons)
    coupons.take_issued(changes.issue_rows())
    coupons.issue(changes.issued)
    coupons.set_states(list(changes.issued_states.values()))
    orders.add_pending(changes.pending)  # issue 28: a deferred order's life, in its order
    orders.add(changes.orders, changes.lines)
    orders.pay(changes.payments)
    orders.cancel(changes.cancels)
    Carts(conn).replace(*changes.cart_rows())
    orders.expire(changes.expiries)


def apply_new(conn: Connection, events: Sequence[tuple[int, AnyEvent]],
              names: Sequence[tuple[int, int]], changes: Changes) -> int:
    """Apply entries none of which was applied before, in the caller's transaction, in one
    round trip; how many (all). ``names``: each entry's (stream, entry number). Raises
    ``psycopg.errors.UniqueViolation`` if one was: the caller then rolls back and uses
    :func:`apply_batch`."""
    with pipelined(conn):
        AppliedEntries(conn).claim_new(names)
        write(conn, changes, fresh=True)
    return len(events)


def apply_batch(
    conn: Connection, events: Sequence[tuple[int, AnyEvent]],
    names: Sequence[tuple[int, int]], changes: Changes | None = None,
) -> int:
    """Apply ``(entry number, event)`` pairs not applied before, in the caller's transaction;
    how many were new. ``names``: each one's (stream, entry number); ``changes``: the
    projection of all of them, if already made."""
    fresh = AppliedEntries(conn).claim(names)
    if changes is None or len(fresh) < len(events):
        changes = project(pair for pair, name in zip(events, names, strict=True)
                          if name in fresh)
    with pipelined(conn):  # a dozen statements, one round trip
        write(conn, changes)
    return len(fresh)


class Item(NamedTuple):
    """One entry of a batch: its (stream, entry number) in ``outbox_applied``, and its event
    (None if it cannot be decoded, ``error`` saying why)."""

    entry: Entry
    name: tuple[int, int]
    event: AnyEvent | None
    error: str = ""


class Batch(NamedTuple):
    """Entries read from the outbox, decoded and, if every one decoded, projected (else
    ``changes`` is None), ready to write."""

    entries: list[Entry]
    items: list[Item]
    changes: Changes | None


def decode_or_why(raw: bytes | str) -> tuple[AnyEvent | None, str]:
    """An outbox entry's event, or None and why it does not decode (such an entry is set
    aside, never retried forever)."""
    try:
        return decode(raw), ""
    except msgspec.MsgspecError as exc:
        return None, f"undecodable outbox entry: {exc}"


def decoded(outbox: Outboxes, entry: Entry) -> Item:
    """An entry as an Item: decoded, or with why not."""
    return Item(entry, (outbox.source(entry), entry_number(entry.id)),
                *decode_or_why(entry.data))


def pairs(items: Sequence[Item]) -> list[tuple[int, AnyEvent]]:
    """``(entry number, event)`` of decoded items."""
    return [(item.name[1], item.event) for item in items if item.event is not None]


def prepare(outbox: Outboxes, entries: list[Entry]) -> Batch:
    """Decode and project entries (CPU only: runs while the previous batch is written).
    ``entries``: the catalog's first, each stream's in stream order."""
    items = [decoded(outbox, e) for e in entries]
    if any(item.event is None for item in items):
        return Batch(entries, items, None)
    try:
        return Batch(entries, items, project(pairs(items)))
    except REFUSED:  # an event the projection cannot map: found again entry by entry
        return Batch(entries, items, None)


def in_order(outbox: Outboxes, entries: Sequence[Entry]) -> list[Entry]:
    """Entries as a batch must be applied: the catalog's first (groups' events name its
    products and coupons), each stream's by id; an entry read twice once."""
    catalog = outbox.layout.outboxes[-1]
    unique = {e.key: e for e in entries}.values()
    return sorted(unique, key=lambda e: (e.stream != catalog, e.stream, entry_number(e.id)))


class Window:
    """Entries committed since the last report, and the worst lag: commit time minus the
    entry's own time (its stream id is Redis' clock at the XADD)."""

    entries = batches = worst_ms = 0

    def add(self, entries: Sequence[Entry]) -> None:
        """A batch just committed."""
        self.entries += len(entries)
        self.batches += 1
        self.worst_ms = max(self.worst_ms, int(time.time() * 1000) - entries[0].ms)

    def report(self) -> str | None:
        """One line about the window, then start a new one; None if nothing was applied."""
        if not self.entries:
            return None
        line = (f"{self.entries} entries in {self.batches} batches; worst lag "
                f"{self.worst_ms} ms from the event to its commit")
        self.entries = self.batches = self.worst_ms = 0
        return line


class PostgresWriter:
    """Drains the outbox's ``postgres`` group into Postgres while it holds the writer lock."""

    def __init__(
        self, outbox: Outboxes, db: Engine, *, batch: int = 1000, reclaim_idle_ms: int = 30_000,
        block_ms: int = 1000, linger_ms: int = LINGER_MS, retention_s: float = 600.0,
    ) -> None:
        self.outbox = outbox
        self.db = db
        self.batch = batch
        self.reclaim_idle_ms = reclaim_idle_ms
        self.block_ms = block_ms
        self.linger_s = linger_ms / 1000
        self._next_read = 0.0  # when the next read may start (see LINGER_MS)
        self.lock_name = f"rushorder:outbox:{outbox.consumer_group}"
        self.settler = Settler(outbox.client, retention_s, outbox.layout)
        self.applied = 0  # entries applied by this writer, duplicates excluded
        self.batches = 0  # batches it committed
        self.set_aside = 0  # entries it set aside
        self.set_aside_waiting: int | None = None  # entries set aside by anyone, not retried
        self.holds = Holds()  # what the set-aside entries own (workers/holds.py)
        self._maintained = 0.0
        self._window = Window()

    def run(self, until: float, stop: threading.Event) -> int:
        """Apply batches until the ``time.monotonic()`` deadline or ``stop``; survives Postgres
        and Redis going away (it retries with backoff). Entries applied. What it commits is
        settled meanwhile by a thread of its own (``engine.settle``)."""
        before = self.applied
        backoff = Backoff()
        ended = threading.Event()
        settler = threading.Thread(target=self.settler.run, args=(until, stop, ended),
                                   name="settler", daemon=True)
        settler.start()
        try:
            self._run(until, stop, backoff)
        finally:
            ended.set()
            settler.join()
        return self.applied - before

    def _run(self, until: float, stop: threading.Event, backoff: Backoff) -> None:
        while not self._over(until, stop):
            try:
                if self._session(until, stop):
                    backoff.reset()
                else:
                    stop.wait(STANDBY_S)
            except TROUBLE as exc:
                log.warning("postgres writer: %s: %s; retrying", type(exc).__name__, exc)
                backoff.wait(stop)

    @staticmethod
    def _over(until: float, stop: threading.Event) -> bool:
        return stop.is_set() or time.monotonic() >= until

    def _session(self, until: float, stop: threading.Event) -> bool:
        """Hold the lock and apply until done; False if another writer holds it."""
        with self.db.connect() as conn:
            if not conn.scalar(LOCK, {"name": self.lock_name}):
                conn.rollback()
                return False
            conn.commit()
            conn = autocommit(conn)  # each batch is a transaction() of ours
            try:
                self._take_over(conn, until, stop)
                self._drain(conn, until, stop)
                self._leave(conn)
            except BaseException:
                conn.invalidate()  # closing the session is what frees its lock
                raise
        return True

    def _take_over(self, conn: Connection, until: float, stop: threading.Event) -> None:
        """Wait out the other consumers, then apply what they left pending, oldest first."""
        self._load_holds(conn)
        while (busy := self._busy_others()) and not self._over(until, stop):
            log.info("postgres writer: waiting for %s to go quiet", ", ".join(busy))
            stop.wait(1.0)
        while not self._over(until, stop) and (left := self._left_over()):
            self._apply(conn, left)
        self.outbox.forget_idle_consumers(self.reclaim_idle_ms)

    def _busy_others(self) -> list[str]:
        return [c.name for c in self.outbox.consumers()
                if c.name != self.outbox.consumer and c.idle_ms < self.reclaim_idle_ms]

    def _left_over(self) -> list[Entry]:
        """Entries pending on us (a previous session) or on quiet consumers: the catalog's
        first, each stream's by id."""
        entries = self.outbox.read_own(self.batch) + self.outbox.reclaim(
            self.reclaim_idle_ms, self.batch)
        return in_order(self.outbox, entries)

    def _drain(self, conn: Connection, until: float, stop: threading.Event) -> None:
        """Read, write, acknowledge; the next batch is read while this one is written."""
        with ThreadPoolExecutor(1, thread_name_prefix="outbox-reader") as reader:
            ahead = reader.submit(self._read, until)
            while True:
                batch = ahead.result()
                over = self._over(until, stop)
                if not over:
                    ahead = reader.submit(self._read, until)
                if batch.entries:
                    self._write(conn, batch)
                if over:
                    return
                if time.monotonic() - self._maintained >= MAINTAIN_EVERY_S:
                    self._maintain(conn)

    def _read(self, until: float) -> Batch:
        """The next batch, read and prepared (in the reader thread), after the linger."""
        if (pause := min(self._next_read, until) - time.monotonic()) > 0:
            time.sleep(pause)
        started = time.monotonic()
        wait_ms = min(self.block_ms, int((until - started) * 1000))
        entries = self.outbox.read(self.batch, block_ms=max(1, wait_ms))
        self._next_read = started + self.linger_s if len(entries) < self.batch else 0.0
        return prepare(self.outbox, entries)

    def _apply(self, conn: Connection, entries: list[Entry]) -> None:
        """Apply entries read some other way (left over, reclaimed)."""
        self._write(conn, prepare(self.outbox, entries))

    def _write(self, conn: Connection, batch: Batch) -> None:
        """One batch, one transaction (more if Postgres refuses some entry), then XACK."""
        written = self._write_all(conn, batch)
        self.batches += 1
        self._committed(batch.items, {item.entry.key for item in written})
        self._window.add(batch.entries)
        self.outbox.ack([e.key for e in batch.entries])

    def _write_all(self, conn: Connection, batch: Batch) -> list[Item]:
        """Write the batch in one transaction if nothing in it is refused or held back;
        else sift it. The items written."""
        events = [item.event for item in batch.items if item.event is not None]
        if batch.changes is not None and not self.holds.any_blocked(events):
            try:
                self.applied += self._commit(conn, batch.items, batch.changes)
                return batch.items
            except REFUSED as exc:
                log.warning("postgres writer: Postgres refused a batch of %d entries (%s: "
                            "%s); finding the entry", len(batch.items), type(exc).__name__,
                            f"{exc}"[:200])
        return self._sift(conn, batch.items)

    def _commit(self, conn: Connection, items: Sequence[Item],
                changes: Changes | None = None) -> int:
        """Apply decoded items in one transaction; how many were new. Raises what Postgres
        raised (rolled back)."""
        events = pairs(items)
        names = [item.name for item in items]
        try:
            with transaction(conn):
                return apply_new(conn, events, names, changes or project(events))
        except psycopg.errors.UniqueViolation:
            log.info("postgres writer: %d entries from %s include some applied before; "
                     "applying the rest", len(items), items[0].entry.key)
            with transaction(conn):
                return apply_batch(conn, events, names)

    def _sift(self, conn: Connection, items: list[Item]) -> list[Item]:
        """Write items in order, each part in a transaction of its own, halving a part
        Postgres refuses down to the one entry it refuses, which is set aside; the items
        written. A part's entries held back by an entry set aside before them (this
        batch's or earlier) are set aside first."""
        ready = [item for item in items if not self._held(conn, item)]
        if not ready:
            return []
        try:
            self.applied += self._commit(conn, ready)
            return ready
        except REFUSED as exc:
            if len(ready) == 1:
                self._set_aside(conn, ready[0], f"{type(exc).__name__}: {exc}")
                return []
        half = len(ready) // 2
        return self._sift(conn, ready[:half]) + self._sift(conn, ready[half:])

    def _held(self, conn: Connection, item: Item) -> bool:
        """Set aside an entry that cannot be decoded, or one that needs what a set-aside
        entry owns; whether it was."""
        if item.event is None:
            self._set_aside(conn, item, item.error)
            return True
        if (blocker := self.holds.blocker(item.event)) is not None:
            self._set_aside(conn, item, f"held back: an earlier entry of {describe(blocker)} "
                                        "is set aside")
            return True
        return False

    def _set_aside(self, conn: Connection, item: Item, error: str) -> None:
        """Keep the entry and why in outbox_set_aside (a transaction of its own); later
        entries that need what it owns wait behind it."""
        SetAside(conn).add(item.name[0], item.name[1], item.entry.data, error)
        self.holds.hold(owned(item.event, item.entry.data))
        self.set_aside += 1
        self.set_aside_waiting = (self.set_aside_waiting or 0) + 1
        log.error("postgres writer: set aside outbox entry %s: %s (`rushorder outbox retry` "
                  "applies it once the cause is fixed)", item.entry.key, error[:300])

    def _load_holds(self, conn: Connection) -> None:
        """What the entries set aside so far own (a retry may have applied some)."""
        rows = SetAside(conn).all()
        self.holds = Holds(key for row in rows for key in _owned(row))
        self.set_aside_waiting = len(rows)

    def _committed(self, items: Sequence[Item], written: set[str]) -> None:
        """Each group's written entries wait to be settled in its group (engine.settle),
        one record per run of written entries: a record covers its stream up to its last
        entry, and must not cover an entry set aside (what that one changed in Redis is
        not in Postgres)."""
        groups = {group.outbox: group for group in self.outbox.layout.all}
        runs: dict[str, list[Item]] = {}
        for item in items:
            run = runs.setdefault(item.entry.stream, [])
            if item.entry.key in written:
                run.append(item)
            elif run:  # a set-aside entry ends the run
                self._settle_run(groups.get(item.entry.stream), run)
                runs[item.entry.stream] = []
        for stream, run in runs.items():
            self._settle_run(groups.get(stream), run)

    def _settle_run(self, group: Group | None, run: list[Item]) -> None:
        if group is not None and run:
            self.settler.committed(group, record(run[-1].entry.id, [
                item.event for item in run if item.event is not None]))

    def _maintain(self, conn: Connection) -> None:
        """Trim what every group acknowledged, forget those applied ids, catch stragglers;
        see what a retry applied of the entries set aside."""
        self._maintained = time.monotonic()
        self._load_holds(conn)
        if report := self._window.report():
            log.info("postgres writer: %s", report)
        floors = self.outbox.trim()
        if floors:  # a statement a stream, each autocommitted
            AppliedEntries(conn).prune({self.outbox.layout.sources[stream]: entry_number(floor)
                                        for stream, floor in floors.items()})
        if stragglers := self.outbox.reclaim(self.reclaim_idle_ms, self.batch):
            # Only a writer that lost its lock without noticing can have read these.
            log.warning("postgres writer: %d entries read by a stale writer", len(stragglers))
            self._apply(conn, stragglers)

    def _leave(self, conn: Connection) -> None:
        """A clean exit: everything acknowledged, so leave the group and free the lock."""
        self.outbox.leave()
        conn.execute(UNLOCK)


def _owned(row: SetAsideRow) -> set[Key]:
    """What a set-aside entry owns, as stored."""
    return owned(decode_or_why(row.raw)[0], row.raw)
