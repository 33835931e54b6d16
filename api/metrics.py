"""Prometheus metrics: requests and latency by route template and status, orders by outcome.

Several worker processes serve one port and a scrape lands on any of them, so under
``serve()`` the metrics use prometheus_client's multiprocess mode: every process writes
its values to mmap files in one folder and the scraped process sums all the files.
``serve()`` makes that folder and switches the mode on before the workers start; an app
run any other way (tests, a single uvicorn) keeps plain in-process values.
"""

from __future__ import annotations

from collections.abc import Awaitable
from time import perf_counter
from typing import Any, TypeVar

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from engine.errors import EngineError

T = TypeVar("T")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def multiprocess() -> bool:
    """Whether prometheus_client writes values to shared files (see ``serve``)."""
    return values.ValueClass is not values.MutexValue


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
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        series = self._series.get((method, route, status))
        if series is None:
            labels = (method, route, str(status))
            series = (self.requests.labels(*labels), self.latency.labels(*labels))
            self._series[(method, route, status)] = series
        series[0].inc()
        series[1].observe(seconds)

    async def count_order(self, placing: Awaitable[T]) -> T:
        """Await an order being placed, counting it as placed or rejected by code."""
        try:
            order = await placing
        except EngineError as exc:
            self.orders_rejected.labels(exc.code).inc()
            raise
        self.orders_placed.inc()
        return order

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (of every process, when shared)."""
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
