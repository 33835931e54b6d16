"""The data-platform forwarder: ``order.paid`` and ``order.cancelled`` to the platform, at least
once, with the event's stable ``event_id`` (the receiver dedupes).

It is the outbox's ``platform`` group, so orders never wait on the platform: they only
append to the outbox. A batch is posted concurrently; the events that fail are retried with
exponential backoff up to ``max_attempts`` times, then kept in the dead-letter stream for an
operator to replay (:func:`replay_dead_letters`). Entries are acknowledged only once
delivered or dead-lettered, so a forwarder that dies loses nothing: another claims its
entries after ``reclaim_idle_ms``. Forwarders may run side by side; order does not matter.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import msgspec
import redis

from engine.events import OrderCancelled, OrderPaid, decode
from engine.models import Order
from engine.outbox import DeadLetters, Entry, Outbox
from rushorder.settings import Settings
from workers.backoff import Backoff

log = logging.getLogger("rushorder.workers.platform")

ORDER_EVENTS = frozenset({"order.paid", "order.cancelled"})
PARALLEL = 16  # posts in flight at once per forwarder


class _Kind(msgspec.Struct):
    type: str


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /events``: the contract's shape."""

    event_id: str
    type: str
    occurred_at: datetime
    order: Order


_KIND = msgspec.json.Decoder(_Kind)
_ENCODER = msgspec.json.Encoder()


class Undeliverable(Exception):
    """Raised when an outbox entry cannot be turned into a delivery (never retried)."""


def delivery_of(data: bytes) -> bytes | None:
    """The platform's body for an outbox event, or None for events the platform never gets."""
    try:
        kind = _KIND.decode(data).type
        event = decode(data) if kind in ORDER_EVENTS else None
    except msgspec.MsgspecError as exc:
        raise Undeliverable(f"undecodable order event: {exc}") from exc
    if not isinstance(event, OrderPaid | OrderCancelled):
        return None
    return _ENCODER.encode(
        Delivery(event_id=event.event_id, type=kind, occurred_at=event.at, order=event.order))


class Platform:
    """The platform's ``POST /events``, one delivery per call."""

    def __init__(self, http: httpx.Client, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/") + "/events"

    def post(self, body: bytes) -> tuple[bool, str | None]:
        """Deliver one body: ``(retryable, error)``; error None once the platform took it."""
        try:
            answer = self.http.post(self.url, content=body,
                                    headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            return True, f"{type(exc).__name__}: {exc}"
        if answer.is_success:
            return True, None
        # The platform refusing the body itself will refuse it again: no point retrying.
        retryable = answer.status_code >= 500 or answer.status_code in (408, 429)
        return retryable, f"HTTP {answer.status_code}: {answer.text[:200]}"


class Forwarder:
    """Drains the outbox's ``platform`` group into the data platform."""

    def __init__(
        self, outbox: Outbox, dead: DeadLetters, platform: Platform, *, batch: int = 200,
        max_attempts: int = 8, reclaim_idle_ms: int = 30_000, block_ms: int = 1000,
        backoff: Backoff | None = None,
    ) -> None:
        self.outbox = outbox
        self.dead = dead
        self.platform = platform
        self.batch = batch
        self.max_attempts = max_attempts
        self.reclaim_idle_ms = reclaim_idle_ms
        self.block_ms = block_ms
        self.backoff = backoff or Backoff(base_s=0.25, cap_s=30.0)
        self.delivered = 0

    def run(self, until: float, stop: threading.Event) -> int:
        """Forward until the ``time.monotonic()`` deadline or ``stop``; events delivered."""
        before = self.delivered
        trouble = Backoff()
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="platform-post") as pool:
            while not (stop.is_set() or time.monotonic() >= until):
                try:
                    self._step(pool, until, stop)
                    trouble.reset()
                except redis.RedisError as exc:
                    log.warning("platform forwarder: %s: %s; retrying", type(exc).__name__, exc)
                    trouble.wait(stop)
        self._leave()
        return self.delivered - before

    def _step(self, pool: ThreadPoolExecutor, until: float, stop: threading.Event) -> None:
        entries = self.outbox.reclaim(self.reclaim_idle_ms, self.batch)
        if not entries:
            wait_ms = min(self.block_ms, int((until - time.monotonic()) * 1000))
            entries = self.outbox.read(self.batch, block_ms=max(1, wait_ms))
        if entries:
            self.forward(pool, entries, stop)

    def forward(
        self, pool: ThreadPoolExecutor, entries: list[Entry], stop: threading.Event
    ) -> None:
        """Deliver a batch, retrying failures; dead-letter what never goes through; XACK.

        Asked to stop before giving up on an event, the forwarder leaves it pending (not
        acknowledged) for the next one.
        """
        bodies, errors = self._bodies(entries)
        attempts = 0
        while bodies and attempts < self.max_attempts and not stop.is_set():
            holding = [e.id for e in entries]
            if attempts and not self._pause(self.backoff.delay(attempts), holding, stop):
                break
            attempts += 1
            bodies, errors = self._attempt(pool, bodies, errors)
        held = bodies if attempts < self.max_attempts else {}
        for entry in entries:
            if entry.id in errors and entry.id not in held:
                self.dead.add(entry, errors[entry.id], attempts)
                log.error("platform forwarder: dead-lettered %s: %s", entry.id, errors[entry.id])
        self.outbox.ack([e.id for e in entries if e.id not in held])

    def _pause(self, delay_s: float, holding: list[str], stop: threading.Event) -> bool:
        """Wait before a retry, keeping the entries we hold fresh so that no other forwarder
        takes them over as a dead one's; False if asked to stop meanwhile."""
        until = time.monotonic() + delay_s
        while (left := until - time.monotonic()) > 0:
            self.outbox.touch(holding)
            if stop.wait(min(left, self.reclaim_idle_ms / 3000)):
                return False
        self.outbox.touch(holding)
        return True

    def _bodies(self, entries: Iterable[Entry]) -> tuple[dict[str, bytes], dict[str, str]]:
        """The deliveries of a batch by entry id, and entries that cannot be delivered at all."""
        bodies: dict[str, bytes] = {}
        errors: dict[str, str] = {}
        for entry in entries:
            try:
                if (body := delivery_of(entry.data)) is not None:
                    bodies[entry.id] = body
            except Undeliverable as exc:
                errors[entry.id] = str(exc)
        return bodies, errors

    def _attempt(
        self, pool: ThreadPoolExecutor, bodies: dict[str, bytes], errors: dict[str, str]
    ) -> tuple[dict[str, bytes], dict[str, str]]:
        """Post every body once; what is left to retry, and the errors so far."""
        results = dict(zip(bodies, pool.map(self.platform.post, bodies.values()), strict=True))
        retry: dict[str, bytes] = {}
        for entry_id, (retryable, error) in results.items():
            if error is None:
                self.delivered += 1
                errors.pop(entry_id, None)
                continue
            errors[entry_id] = error
            if retryable:
                retry[entry_id] = bodies[entry_id]
        return retry, errors

    def _leave(self) -> None:
        """Leave the group if we hold nothing (tidy, not needed: forwarders never wait)."""
        with contextlib.suppress(redis.RedisError):
            self.outbox.leave()


def replay_dead_letters(settings: Settings) -> int:
    """Send every dead letter to the platform once more; those delivered leave the dead-letter
    stream. How many were delivered (the rest stay for another try)."""
    if not settings.redis_url:
        raise ValueError("replaying dead letters needs RUSHORDER_REDIS_URL")
    delivered = 0
    with redis.Redis.from_url(settings.redis_url) as client, \
            httpx.Client(timeout=settings.platform_timeout_s) as http:
        dead, platform = DeadLetters(client), Platform(http, settings.platform_url)
        for letter in dead.all():
            body = delivery_of(letter.data)
            if body is not None and platform.post(body)[1] is not None:
                continue
            dead.remove([letter.id])
            delivered += body is not None
        log.info("replayed %d dead letters, %d left", delivered, dead.count())
    return delivered
