"""The data-platform forwarder: ``order.paid`` and ``order.cancelled`` to the platform, at least
once, with the event's stable ``event_id`` (the receiver dedupes).

It is the outbox's ``platform`` group, so orders never wait on the platform: they only
append to the outbox. The forwarder is one event loop (inside the synchronous RQ job)
driving *lanes*: each lane reads a batch from its stream (``XREADGROUP``, in a thread:
the outbox client is synchronous redis-py), sends it (``POST /events/batch``, or one
``POST /events`` per event in single mode, :mod:`workers.platform_http`), and
acknowledges it once the platform answered 2xx. A request that got no answer, 408, 429 or
5xx is sent again whole, with exponential backoff, up to ``max_attempts`` times; then its
events go to the dead-letter stream. So do the events the platform rejected, and only
those. A lane holds one batch at a time; a forwarder runs ``in_flight`` lanes per stream
and takes several streams at once. Entries are acknowledged only once delivered or
dead-lettered, so a forwarder that dies loses nothing: another claims its entries after
``reclaim_idle_ms``. Forwarders may run side by side; order does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

import msgspec
import redis

from engine.models import Order
from engine.outbox import DeadLetters, Entry, Outbox, Outboxes
from rushorder.settings import Settings
from workers.backoff import Backoff, sleep_unless_stopped
from workers.platform_http import Item, Outcome, Platform, Request, Session
from workers.progress import Progress, Quiet

log = logging.getLogger("rushorder.workers.platform")
# A lane's read after one that did not fill its batch waits until this long after that one
# (as the Postgres writer's LINGER_MS): a forwarder that keeps up would otherwise post a
# few events at a time, and a batch's read, POST and XACK cost about the same CPU, in the
# forwarder, the platform and Redis, whatever its size. It adds at most this to the lag.
LINGER_MS = 20

# order.pending and order.expired (issue 28) are Postgres' only: the platform hears of an
# order once it is paid, and of its cancel only if it was paid (never_paid).
ORDER_EVENTS = frozenset({"order.paid", "order.cancelled"})
T = TypeVar("T")


class _OrderEvent(msgspec.Struct, frozen=True):
    """What the platform needs of an outbox event (the rest is skipped, not decoded)."""

    type: str
    event_id: str | None = None
    at: datetime | None = None
    order: Order | None = None


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /events`` (and an element of a batch): the contract's shape."""

    event_id: str
    type: str
    occurred_at: datetime
    order: Order


_EVENT = msgspec.json.Decoder(_OrderEvent)
_ENCODER = msgspec.json.Encoder()


class Undeliverable(Exception):
    """Raised when an outbox entry cannot be turned into a delivery (never retried)."""


def delivery_of(data: bytes) -> tuple[str, bytes] | None:
    """The ``event_id`` and platform body of an outbox event, or None for events the platform
    never gets."""
    try:
        event = _EVENT.decode(data)
    except msgspec.MsgspecError as exc:
        raise Undeliverable(f"undecodable outbox event: {exc}") from exc
    if event.type not in ORDER_EVENTS or never_paid(event.order):
        return None
    if event.event_id is None or event.at is None or event.order is None:
        raise Undeliverable(f"an {event.type} event without event_id, at or order")
    return event.event_id, _ENCODER.encode(Delivery(
        event_id=event.event_id, type=event.type, occurred_at=event.at, order=event.order))


def never_paid(order: Order | None) -> bool:
    """A deferred order cancelled before it was paid (issue 28): the platform never saw it."""
    return order is not None and order.payment is None and \
        order.payment_due_at is not msgspec.UNSET


class Sent(msgspec.Struct, frozen=True):
    """A request's last outcome after ``attempts`` tries; None if a stop came first."""

    request: Request
    outcome: Outcome | None
    attempts: int


class Disposition(msgspec.Struct):
    """What to do with a read batch: events delivered, dead letters, entries to acknowledge."""

    delivered: int = 0
    dead: list[tuple[Entry, str, int]] = []
    ack: list[str] = []


class Forwarder:
    """Drains the outbox's ``platform`` group, of one stream or several, into the platform."""

    def __init__(
        self, outboxes: Sequence[Outbox | Outboxes], dead: DeadLetters, platform: Platform, *,
        in_flight: int = 1, max_attempts: int = 8, reclaim_idle_ms: int = 30_000,
        block_ms: int = 1000, linger_ms: int = LINGER_MS, backoff: Backoff | None = None,
    ) -> None:
        self.outboxes = list(outboxes)
        self.dead = dead
        self.platform = platform
        self.in_flight = in_flight
        self.max_attempts = max_attempts
        self.reclaim_idle_ms = reclaim_idle_ms
        self.block_ms = block_ms
        self.linger_s = linger_ms / 1000
        self.backoff = backoff or Backoff(base_s=0.25, cap_s=30.0)
        self.delivered = 0
        self.retries = 0  # events sent again (workers/metrics.py counts them)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def lanes(self) -> int:
        """Batches in flight at once: ``in_flight`` per stream."""
        return self.in_flight * len(self.outboxes)

    def run(self, until: float, stop: threading.Event) -> int:
        """Forward until the ``time.monotonic()`` deadline or ``stop``; events delivered.

        Redis errors are retried; any other error of an outbox call ends the run with it.
        """
        before = self.delivered
        asyncio.run(self._run(until, stop))
        self._leave()
        return self.delivered - before

    async def _run(self, until: float, stop: threading.Event) -> None:
        connections = self.lanes * self.platform.parallel
        with ThreadPoolExecutor(self.lanes + 1, thread_name_prefix="platform-outbox") as pool:
            self._pool = pool
            async with self.platform.session(connections) as session:
                await _all_or_first_error([
                    asyncio.create_task(self._lane(outbox, session, until, stop))
                    for outbox in self.outboxes for _ in range(self.in_flight)])

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """A blocking outbox call, in our thread pool so that the loop runs on."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _lane(self, outbox: Outbox | Outboxes, session: Session, until: float,
                    stop: threading.Event) -> None:
        """Batch after batch from one stream, one at a time, until the deadline or ``stop``."""
        trouble = Backoff()
        reclaim_at = 0.0
        next_read = 0.0  # when this lane's next read may start (LINGER_MS)
        while not (stop.is_set() or time.monotonic() >= until):
            try:
                entries = []
                if time.monotonic() >= reclaim_at:
                    entries = await self._reclaim(outbox)
                    reclaim_at = 0.0 if entries else time.monotonic() + self.reclaim_every_s
                if not entries:
                    await asyncio.sleep(next_read - time.monotonic())
                    started = time.monotonic()
                    entries = await self._read(outbox, until)
                    full = len(entries) >= self.platform.batch
                    next_read = 0.0 if full else started + self.linger_s
                if entries:
                    await self.forward(outbox, session, entries, stop)
                trouble.reset()
            except redis.RedisError as exc:
                log.warning("platform forwarder: %s: %s; retrying", type(exc).__name__, exc)
                await trouble.pause(stop)

    @property
    def reclaim_every_s(self) -> float:
        """How often a lane looks for entries a dead forwarder held: they are only taken
        once idle for ``reclaim_idle_ms``, so a tenth of it delays a takeover by at most 10%
        and spares a round trip per batch."""
        return self.reclaim_idle_ms / 10_000

    async def _reclaim(self, outbox: Outbox | Outboxes) -> list[Entry]:
        return await self._call(outbox.reclaim, self.reclaim_idle_ms, self.platform.batch)

    async def _read(self, outbox: Outbox | Outboxes, until: float) -> list[Entry]:
        wait_ms = min(self.block_ms, int((until - time.monotonic()) * 1000))
        return await self._call(outbox.read, self.platform.batch, max(1, wait_ms))

    async def forward(self, outbox: Outbox | Outboxes, session: Session, entries: list[Entry],
                      stop: threading.Event) -> None:
        """Deliver a batch, retrying failed requests; dead-letter what the platform rejected or
        what never went through; XACK. Asked to stop while backing off, the forwarder leaves
        the batch's undelivered entries pending (not acknowledged) for the next one."""
        by_id = {entry.key: entry for entry in entries}
        items, undeliverable = _items(entries)
        keeper = asyncio.create_task(self._keep_fresh(outbox, list(by_id)))
        try:
            sent = await self._send_all(session, self.platform.requests(items), stop)
        finally:
            await _cancel(keeper)
        disposition = _dispose(by_id, sent, undeliverable)
        for entry, error, _ in disposition.dead:
            log.error("platform forwarder: dead-lettered %s: %s", entry.key, error)
        await self._call(self._write, outbox, disposition)
        self.delivered += disposition.delivered

    def _write(self, outbox: Outbox | Outboxes, disposition: Disposition) -> None:
        """Dead letters first, then the acknowledgement: a crash between repeats, never loses."""
        for entry, error, attempts in disposition.dead:
            self.dead.add(entry, error, attempts)
        outbox.ack(disposition.ack)

    async def _send_all(self, session: Session, requests: list[Request],
                        stop: threading.Event) -> list[Sent]:
        """Send each request until it is answered for good; ``platform.parallel`` at once."""
        gate = asyncio.Semaphore(self.platform.parallel)

        async def one(request: Request) -> Sent:
            async with gate:
                return await self._send(session, request, stop)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _send(self, session: Session, request: Request, stop: threading.Event) -> Sent:
        """One request, again after a backoff while it may be retried."""
        attempt = 0
        while True:
            attempt += 1
            outcome = await session.send(request)
            if outcome.retry is None or attempt >= self.max_attempts:
                return Sent(request, outcome, attempt)
            if not await sleep_unless_stopped(self.backoff.delay(attempt), stop):
                return Sent(request, None, attempt)
            self.retries += len(request.items)

    async def _keep_fresh(self, outbox: Outbox | Outboxes, ids: list[str]) -> None:
        """Reset the idle time of the entries we hold while we work on them, so that no other
        forwarder takes them over as a dead one's."""
        while True:
            await asyncio.sleep(self.reclaim_idle_ms / 3000)
            try:
                await self._call(outbox.touch, ids)
            except redis.RedisError as exc:
                log.warning("platform forwarder: touch: %s: %s", type(exc).__name__, exc)

    def _leave(self) -> None:
        """Leave the group if we hold nothing (tidy, not needed: forwarders never wait)."""
        for outbox in self.outboxes:
            with contextlib.suppress(redis.RedisError):
                outbox.leave()


def _items(entries: Iterable[Entry]) -> tuple[list[Item], dict[str, str]]:
    """The platform's items of a batch, and the entries that cannot be delivered at all."""
    items: list[Item] = []
    undeliverable: dict[str, str] = {}
    for entry in entries:
        try:
            if (delivery := delivery_of(entry.data)) is not None:
                items.append(Item(entry.key, *delivery))
        except Undeliverable as exc:
            undeliverable[entry.key] = str(exc)
    return items, undeliverable


def _dispose(by_id: dict[str, Entry], sent: list[Sent],
            undeliverable: dict[str, str]) -> Disposition:
    """Sort a batch's entries: delivered, dead (rejected, refused, out of attempts), held
    (a stop came first: left pending), or not the platform's (acknowledged)."""
    disposition = Disposition(dead=[(by_id[key], error, 0) for key, error in undeliverable.items()])
    held: set[str] = set()
    for one in sent:
        outcome = one.outcome
        for item in one.request.items:
            if outcome is None:
                held.add(item.key)
            elif error := outcome.retry or outcome.refused or outcome.rejected.get(item.event_id):
                disposition.dead.append((by_id[item.key], error, one.attempts))
            else:
                disposition.delivered += 1
    disposition.ack = [key for key in by_id if key not in held]
    return disposition


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel a helper task; an error it died of (other than a Redis one) is raised here."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _all_or_first_error(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task; on the first error, cancel the others and raise that error
    itself (not an ExceptionGroup: callers catch it by its own type)."""
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


def replay_dead_letters(settings: Settings, progress: Progress | None = None) -> int:
    """Send every dead letter to the platform once more (in batches in batch mode); those
    delivered leave the dead-letter stream. How many were delivered (the rest stay).
    ``progress`` is told how many there are and each one handled."""
    if not settings.redis_url:
        raise ValueError("replaying dead letters needs RUSHORDER_REDIS_URL")
    shown = progress or Quiet()
    with redis.Redis.from_url(settings.redis_url) as client:
        dead = DeadLetters(client)
        shown.stage("dead letters to the platform", total=dead.count(), unit="letters")
        delivered = asyncio.run(_replay(dead, Platform.from_settings(settings), shown))
        log.info("replayed %d dead letters, %d left", delivered, dead.count())
    return delivered


async def _replay(dead: DeadLetters, platform: Platform, shown: Progress) -> int:
    """One try for every dead letter; remove those taken (and those the platform never gets)."""
    items: list[Item] = []
    for letter in dead.all():
        try:
            delivery = delivery_of(letter.data)
        except Undeliverable:
            shown.advance()
            continue  # it stays: nothing an operator can replay as is
        if delivery is None:
            dead.remove([letter.id])
            shown.advance()
        else:
            items.append(Item(letter.id, *delivery))
    delivered = 0
    async with platform.session() as session:
        for request in platform.requests(items):
            outcome = await session.send(request)
            taken = [i.key for i in request.items
                     if outcome.taken and i.event_id not in outcome.rejected]
            dead.remove(taken)
            delivered += len(taken)
            shown.advance(len(request.items))
    return delivered
