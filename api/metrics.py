"""Prometheus metrics: requests and latency by route template and status, orders by outcome.

Several worker processes serve one port and a scrape lands on any of them, so under
``serve()`` the metrics use prometheus_client's multiprocess mode: every process writes
its values to mmap files in one folder and the scraped process sums all the files.
``serve()`` makes that folder and switches the mode on before the workers start; an app
run any other way (tests, a single uvicorn) keeps plain in-process values.

A multiprocess write costs ~3 µs (lock, getpid, mmap write) and a request needs three, so
requests and orders are tallied in plain Python and written once a second (and before
every scrape of this process): another worker's latest second may be missing from a scrape.

What each flush writes is also added up for the operators' console
(:meth:`Metrics.console_counts`): orders placed and refused by code, requests, 5xx and the
order route's latency buckets, which the app hands to the engine once a second
(``Engine.console.tally``), so that the console shows the sum over every API process on
every host, per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections import Counter as Tallies
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any, TypeVar

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from engine.errors import EngineError
from engine.ops.gauges import Gauges

T = TypeVar("T")
Publish = Callable[[Mapping[str, int]], Awaitable[object]]

log = logging.getLogger("rushorder.api")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FLUSH_EVERY_S = 1.0
PUBLISH_TIMEOUT_S = 1.0
# The order route whose latency the console shows (as its Prometheus labels say it).
ORDER_ROUTE = ("POST", "/api/v1/orders")


def redis_lines(gauges: Gauges | None, high_water: int) -> bytes:
    """Prometheus text of Redis' memory and the outbox (the same from every process: read
    from Redis at scrape time); nothing when Redis could not be read."""
    if gauges is None:
        return b""
    lines = [
        "# HELP rushorder_redis_used_memory_bytes Redis' used_memory.",
        "# TYPE rushorder_redis_used_memory_bytes gauge",
        f"rushorder_redis_used_memory_bytes {gauges.used_memory}",
        "# HELP rushorder_redis_memory_high_water_bytes Readiness fails at or above this.",
        "# TYPE rushorder_redis_memory_high_water_bytes gauge",
        f"rushorder_redis_memory_high_water_bytes {high_water}",
        "# HELP rushorder_outbox_length Entries in the outbox stream.",
        "# TYPE rushorder_outbox_length gauge",
        f"rushorder_outbox_length {gauges.outbox_length}",
        "# HELP rushorder_outbox_backlog Entries a consumer group has not acknowledged.",
        "# TYPE rushorder_outbox_backlog gauge",
        *(f'rushorder_outbox_backlog{{group="{name}"}} {group.backlog}'
          for name, group in sorted(gauges.consumers.items())),
        "# HELP rushorder_outbox_oldest_unacked_age_seconds How long a group's oldest "
        "unacknowledged entry has waited.",
        "# TYPE rushorder_outbox_oldest_unacked_age_seconds gauge",
        *(f'rushorder_outbox_oldest_unacked_age_seconds{{group="{name}"}} '
          f'{group.oldest_age_s:.3f}' for name, group in sorted(gauges.consumers.items())),
        "# HELP rushorder_outbox_dead_letters Events the platform forwarder gave up on.",
        "# TYPE rushorder_outbox_dead_letters gauge",
        f"rushorder_outbox_dead_letters {gauges.dead_letters}",
    ]
    return ("\n".join(lines) + "\n").encode()


def multiprocess() -> bool:
    """Whether prometheus_client writes values to shared files (see ``serve``)."""
    return values.ValueClass is not values.MutexValue


class _Tally:
    """One (method, route, status) series: requests not yet written to its metrics."""

    __slots__ = ("buckets", "count", "counter", "histogram", "total")

    def __init__(self, counter: Any, histogram: Any) -> None:
        self.counter, self.histogram = counter, histogram
        self.count, self.total = 0, 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf

    def add(self, seconds: float) -> None:
        """Count one request."""
        self.count += 1
        self.total += seconds
        self.buckets[bisect_left(BUCKETS, seconds)] += 1

    def flush(self, console: Tallies[str] | None = None) -> None:
        """Write the tally to the metrics, as many ``observe`` calls would have; add the
        latency buckets to ``console`` if given."""
        if not self.count:
            return
        if console is not None:
            for i, n in enumerate(self.buckets):
                if n:
                    console[f"lat:{i}"] += n
        self.counter.inc(self.count)
        # prometheus_client has no batch observe; these are the values observe() updates.
        self.histogram._sum.inc(self.total)
        for bucket, n in zip(self.histogram._buckets, self.buckets, strict=True):
            if n:
                bucket.inc(n)
        self.count, self.total = 0, 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)


class Metrics:
    """The API's metrics; one per app, each with its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        shared = multiprocess()
        if shared:
            MultiProcessCollector(self.registry)
        own = None if shared else self.registry
        labels = ("method", "route", "status")
        self.requests = Counter("rushorder_http_requests", "HTTP requests answered.",
                                labels, registry=own)
        self.latency = Histogram("rushorder_http_request_duration_seconds",
                                 "Time from request to the end of the answer.", labels,
                                 buckets=BUCKETS, registry=own)
        self.orders_placed = Counter("rushorder_orders_placed", "Orders paid (order or checkout).",
                                     registry=own)
        self.orders_rejected = Counter("rushorder_orders_rejected",
                                       "Orders refused, by the contract's error code.", ("code",),
                                       registry=own)
        self._tallies: dict[tuple[str, str, int], _Tally] = {}
        self._placed = 0
        self._rejected: dict[str, int] = {}
        self._console: Tallies[str] = Tallies()  # flushed, not yet handed to the console
        self._publish_failed = False

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        tally = self._tallies.get((method, route, status))
        if tally is None:
            labels = (method, route, str(status))
            tally = _Tally(self.requests.labels(*labels), self.latency.labels(*labels))
            self._tallies[(method, route, status)] = tally
        tally.add(seconds)

    def flush(self) -> None:
        """Write every tally to the metrics (and add it to the console's counts)."""
        console = self._console
        for (method, route, status), tally in self._tallies.items():
            if tally.count:
                console["requests"] += tally.count
                if status >= 500:
                    console["errors"] += tally.count
            tally.flush(console if (method, route) == ORDER_ROUTE else None)
        if self._placed:
            self.orders_placed.inc(self._placed)
            console["placed"] += self._placed
            self._placed = 0
        for code, n in self._rejected.items():
            self.orders_rejected.labels(code).inc(n)
            console[f"refused:{code}"] += n
        self._rejected.clear()

    def console_counts(self) -> dict[str, int]:
        """What was flushed since the last call: ``placed``, ``refused:<CODE>``,
        ``requests``, ``errors`` (5xx) and the order route's ``lat:<bucket index>``."""
        counts, self._console = dict(self._console), Tallies()
        return counts

    async def publish(self, publish: Publish | None) -> None:
        """Flush, and hand the console's counts to ``publish``; counts it could not take
        (Redis away) are dropped, said once until it takes them again."""
        self.flush()
        counts = self.console_counts()
        if publish is None or not counts:
            return
        try:
            await asyncio.wait_for(publish(counts), PUBLISH_TIMEOUT_S)
            self._publish_failed = False
        except Exception as exc:  # never the flush loop's end: it keeps /metrics going
            if not self._publish_failed:
                log.warning("console tallies not written (dropped until Redis takes them "
                            "again): %s", exc)
            self._publish_failed = True

    @contextlib.asynccontextmanager
    async def flushing(self, publish: Publish | None = None) -> AsyncIterator[None]:
        """Flush once a second while the app runs, and a last time when it stops; each
        time, hand the console's counts to ``publish``."""

        async def every_second() -> None:
            while True:
                await asyncio.sleep(FLUSH_EVERY_S)
                await self.publish(publish)

        task = asyncio.create_task(every_second())
        try:
            yield
        finally:
            task.cancel()
            await self.publish(publish)

    async def count_order(self, placing: Awaitable[T]) -> T:
        """Await an order being placed, counting it as placed or rejected by code."""
        try:
            order = await placing
        except EngineError as exc:
            self.count_outcome(exc.code)
            raise
        self.count_outcome(None)
        return order

    def count_outcome(self, refused: str | None) -> None:
        """Count one order: placed (``refused`` None) or rejected with that code."""
        if refused is None:
            self._placed += 1
        else:
            self._rejected[refused] = self._rejected.get(refused, 0) + 1

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (of every process, when shared)."""
        self.flush()
        return generate_latest(self.registry)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The one ASGI middleware: times each routed request and records its status."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = perf_counter()
            status = 500

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                self.observe(scope["method"], scope.get("path_template", "?"),  # type: ignore[typeddict-item]
                             status, perf_counter() - start)

        return measured
