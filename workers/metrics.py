"""The workers' own Prometheus metrics: what each worker process has done, how far behind.

``rushorder worker`` (:func:`workers.main.run`) supervises one process per consumer group.
Like the API's processes, they write their values to shared files (prometheus_client's
multiprocess mode) and the supervisor, which does nothing else, serves the sum on
``RUSHORDER_WORKER_METRICS_PORT`` (:func:`served`); a process restarted by the supervisor
keeps counting where the dead one left off. ``python -m workers.main GROUP`` (one process,
no supervisor) serves its own values on that port instead.

Every metric is ``rushorder_worker_<name>{group}``:

| name | kind | what |
| --- | --- | --- |
| batches_applied_total | counter | batches the Postgres writer committed |
| entries_applied_total | counter | outbox entries it applied (duplicates excluded) |
| events_forwarded_total | counter | events the platform took from the forwarder |
| retries_total | counter | deliveries the forwarder sent again |
| dead_lettered_total | counter | events it gave up on (dead letters) |
| replayed_total | counter | dead letters delivered by replays the console asked for |
| entries_acked_total | counter | outbox entries acknowledged |
| entries_set_aside_total | counter | entries the Postgres writer set aside (refused) |
| set_aside_entries | gauge | entries set aside and not yet retried (the writer counts) |
| lag_seconds | gauge | age of the last acknowledged batch's oldest entry (0: none waits) |
| backlog | gauge | entries the group has not acknowledged (read every heartbeat) |
| heartbeat_timestamp_seconds | gauge | the last heartbeat, epoch seconds |

Counting costs the jobs nothing per event: the writer and the forwarder keep plain counts
(``applied``, ``batches``, ``delivered``, ``retries``), which the heartbeat thread copies
into the metrics every few seconds (:meth:`WorkerMetrics.sync`) and once more when a job
ends; acknowledgements and dead letters are counted where they are written
(:class:`CountedOutbox`, :class:`CountedDeadLetters`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import WSGIApplication as WSGIApp

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app, values
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from engine.keys import Layout
from engine.outbox import DeadLetters, Entry, Outboxes, split_key

log = logging.getLogger("rushorder.workers")

# The running job's own counts, by attribute, and the counter each goes to.
JOB_COUNTS = {"batches": "batches", "applied": "entries", "delivered": "forwarded",
              "retries": "retries", "set_aside": "set_aside"}


def multiprocess() -> bool:
    """Whether prometheus_client writes values to shared files (see :func:`served`)."""
    return values.ValueClass is not values.MutexValue


class WorkerMetrics:
    """One worker process's metrics; ``totals`` are what its heartbeat tells the console."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.registry = CollectorRegistry()
        own = None if multiprocess() else self.registry

        def counter(name: str, doc: str) -> Any:
            return Counter(f"rushorder_worker_{name}", doc, ["group"], registry=own).labels(group)

        def gauge(name: str, doc: str, mode: str) -> Any:
            return Gauge(f"rushorder_worker_{name}", doc, ["group"], registry=own,
                         multiprocess_mode=mode).labels(group)  # type: ignore[arg-type]

        self.counters: dict[str, Any] = {
            "batches": counter("batches_applied", "Batches the Postgres writer committed."),
            "entries": counter("entries_applied", "Outbox entries applied to Postgres."),
            "forwarded": counter("events_forwarded", "Events the data platform took."),
            "retries": counter("retries", "Deliveries to the data platform sent again."),
            "dead_lettered": counter("dead_lettered", "Events given up on (dead letters)."),
            "replayed": counter("replayed", "Dead letters delivered by console replays."),
            "acked": counter("entries_acked", "Outbox entries acknowledged."),
            "set_aside": counter("entries_set_aside", "Outbox entries the Postgres writer "
                                 "set aside: Postgres refused them (rushorder outbox retry)."),
        }
        self.lag = gauge("lag_seconds", "Age of the oldest entry of the last acknowledged "
                         "batch when it was acknowledged (0 once nothing waits).", "livemax")
        self.backlog = gauge("backlog", "Entries the group has not acknowledged.", "livemax")
        self.set_aside = gauge("set_aside_entries", "Outbox entries set aside and not yet "
                               "retried (rushorder audit lists them).", "livemax")
        self.beat = gauge("heartbeat_timestamp_seconds", "The last heartbeat, epoch seconds.",
                          "max")
        self.totals: dict[str, float] = dict.fromkeys(self.counters, 0)
        self._lock = threading.Lock()
        self._job: object | None = None
        self._seen: dict[str, int] = {}

    def add(self, name: str, n: float = 1) -> None:
        """Count ``n`` more of ``name``."""
        if n > 0:
            with self._lock:
                self.counters[name].inc(n)
                self.totals[name] += n

    def sync(self, job: object | None) -> None:
        """Count what the running job did since the last sync (a new job starts from 0)."""
        with self._lock:
            if job is not self._job:
                self._job, self._seen = job, {}
            for attribute, name in JOB_COUNTS.items():
                now = int(getattr(job, attribute, 0) or 0)
                if (grown := now - self._seen.get(attribute, 0)) > 0:
                    self.counters[name].inc(grown)
                    self.totals[name] += grown
                self._seen[attribute] = now
            if (waiting := getattr(job, "set_aside_waiting", None)) is not None:
                self.set_aside.set(waiting)

    def acked(self, ids: Sequence[str]) -> None:
        """Entries were acknowledged: count them, and the age of the oldest."""
        if ids:
            oldest_ms = min(int(split_key(i)[1].split("-", 1)[0]) for i in ids)
            self.lag.set(max(0.0, time.time() - oldest_ms / 1000))
            self.add("acked", len(ids))

    def waiting(self, backlog: int) -> None:
        """The group's backlog, as the heartbeat read it."""
        self.backlog.set(backlog)
        if not backlog:
            self.lag.set(0)


class CountedOutbox(Outboxes):
    """A consumer of every outbox stream whose acknowledgements are counted."""

    def __init__(self, client: redis.Redis, group: str, consumer: str, *,
                 layout: Layout, metrics: WorkerMetrics) -> None:
        super().__init__(client, group, consumer, layout=layout)
        self.metrics = metrics

    def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge, then count."""
        acked = super().ack(ids)
        self.metrics.acked(ids)
        return acked


class CountedDeadLetters(DeadLetters):
    """The dead-letter stream, counting what goes in."""

    def __init__(self, client: redis.Redis, metrics: WorkerMetrics) -> None:
        super().__init__(client)
        self.metrics = metrics

    def add(self, entry: Entry, error: str, attempts: int) -> str:
        """Keep an undeliverable event, counted."""
        letter = super().add(entry, error, attempts)
        self.metrics.add("dead_lettered")
        return letter


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (wsgiref's name)
        pass


def anyone(authorization: bytes | None) -> bool:
    """Every scrape may read: no metrics token is set."""
    return True


def guarded(app: WSGIApp, may_scrape: Callable[[bytes | None], bool]) -> WSGIApp:
    """``app``, answering 401 to a request ``may_scrape`` refuses (``Settings.may_scrape``,
    the API's /metrics rule too)."""

    def checked(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if may_scrape(environ.get("HTTP_AUTHORIZATION", "").encode("latin-1")):
            return app(environ, start_response)  # type: ignore[no-any-return]
        start_response("401 Unauthorized", [("Content-Type", "text/plain"),
                                            ("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"the metrics token is required\n"]

    return checked


def serve(port: int, host: str, registry: CollectorRegistry,
          may_scrape: Callable[[bytes | None], bool] = anyone) -> Callable[[], None] | None:
    """Serve ``registry`` at ``http://host:port/metrics`` to the scrapes ``may_scrape``
    allows; how to stop it, or None (and a warning) when the port is taken or 0: the worker
    works on without."""
    if not port:
        return None
    try:
        server = make_server(host, port, guarded(make_wsgi_app(registry), may_scrape),
                             ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d: %s", host, port, exc)
        return None
    thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)
    thread.start()
    log.info("worker metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


class Served:
    """The supervisor's metrics: where they are served (None: nowhere), and the folder."""

    def __init__(self, port: int | None, folder: str) -> None:
        self.port = port
        self.folder = folder

    def process_died(self, pid: int) -> None:
        """A worker process is gone: its live-only gauges (lag, backlog) go with it."""
        mark_process_dead(pid, self.folder)


@contextlib.contextmanager
def served(port: int, host: str,
           may_scrape: Callable[[bytes | None], bool] = anyone) -> Iterator[Served]:
    """Shared metrics files for the worker processes started inside the block (they inherit
    the folder through PROMETHEUS_MULTIPROC_DIR), their sum served on ``port``."""
    folder = tempfile.mkdtemp(prefix="rushorder-worker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    values.ValueClass = values.get_value_class()  # chosen at import: choose again
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    stop = serve(port, host, registry, may_scrape)
    try:
        yield Served(port if stop is not None else None, folder)
    finally:
        if stop is not None:
            stop()
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        values.ValueClass = values.get_value_class()
        shutil.rmtree(folder, ignore_errors=True)
