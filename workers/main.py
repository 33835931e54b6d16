"""``rushorder worker``: RQ worker processes that carry the outbox to Postgres and the platform.

:func:`run` starts one RQ worker process per consumer group (``postgres``, ``platform``):
a slow or absent data platform then never delays Postgres, and each process runs its
jobs in-process (``SimpleWorker``: no fork per job, so connections live as long as the
process). A process that dies is started again; SIGTERM or SIGINT stops both, each after
its current batch.

Each process beats (``workers/heartbeat.py``: its liveness for the console and the
sampling of its metrics); the platform process also takes the console's replay requests
(``workers/replays.py``). The supervisor serves the processes' summed metrics on
``RUSHORDER_WORKER_METRICS_PORT`` (``workers/metrics.py``).

``python -m workers.main [postgres|platform]`` runs a single worker process (tests do),
serving its own metrics on that port.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis
from rq import SimpleWorker

from engine.outbox import CONSUMER_GROUPS, PLATFORM
from rushorder.settings import Settings
from workers.context import WorkerContext, current, install
from workers.heartbeat import Heartbeats
from workers.jobs import QUEUES, SERIALIZER, ProjectJob, ensure_job
from workers.metrics import serve, served
from workers.replays import ReplayListener

log = logging.getLogger("rushorder.workers")

MAINTENANCE_S = 5  # how often an idle worker makes sure its group's job is queued
WORKER_TTL_S = 20  # an idle worker wakes every WORKER_TTL_S - 15 s (RQ's dequeue timeout)
STOP_TIMEOUT_S = 15.0
PUBSUB_POLL_S = 1.0  # how often RQ's command-channel thread looks at its stop flag


class OutboxWorker(SimpleWorker):
    """An RQ worker for outbox jobs: keeps its group's job queued, stops jobs on SIGTERM.
    It reads jobs as JSON and runs only the project's own (``workers.jobs.ProjectJob``)."""

    def __init__(self, queues: list[str], connection: redis.Redis, **kwargs: Any) -> None:
        super().__init__(queues, connection=connection, job_class=ProjectJob,
                         serializer=SERIALIZER, **kwargs)

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance, then re-enqueue a job RQ lost (the stream still needs draining)."""
        super().run_maintenance_tasks()
        for group, name in QUEUES.items():
            if name in self.queue_names():
                ensure_job(group, self.connection)

    def subscribe(self) -> None:
        """RQ's subscription to its command channel, polled every PUBSUB_POLL_S, not RQ's
        60 s: at a stop RQ unsubscribes, then stops that thread, and an unsubscribed thread
        sleeps a whole poll before it sees the stop, which redis-py 8 waits for; so a
        SIGTERMed worker lingered up to 60 s, past every grace period, and was killed."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=PUBSUB_POLL_S, daemon=True,
            exception_handler=self._pubsub_exception_handler)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Ask the running job to finish its batch, then stop as RQ does (warm shutdown)."""
        current().stop.set()
        super().request_stop(signum, frame)


def work(settings: Settings, group: str, metrics_port: int | None = None,
         ctx: WorkerContext | None = None) -> None:
    """Run one RQ worker for ``group``'s queue in this process until it is told to stop (in
    ``ctx``, or a context installed now); its heartbeat names ``metrics_port`` as where its
    metrics are served."""
    ctx = ctx or install(settings, group)
    assert settings.rq_url is not None
    connection = redis.Redis.from_url(settings.rq_url)  # RQ's, apart from the outbox's
    worker = OutboxWorker([QUEUES[group]], connection=connection,
                          maintenance_interval=MAINTENANCE_S, worker_ttl=WORKER_TTL_S)
    helpers: list[Heartbeats | ReplayListener] = [Heartbeats(ctx, group, metrics_port)]
    if group == PLATFORM:
        helpers.append(ReplayListener(ctx))
    for helper in helpers:
        helper.start()
    try:
        worker.work(logging_level=settings.log_level.upper(), with_scheduler=False)
    finally:
        for helper in helpers:
            helper.finish()
        current().close()
        connection.close()


def work_alone(settings: Settings, group: str) -> None:
    """One worker process without a supervisor, serving its own metrics."""
    ctx = install(settings, group)
    stop = serve(settings.worker_metrics_port, settings.http_host, ctx.metrics.registry,
                 settings.may_scrape)
    try:
        work(settings, group, settings.worker_metrics_port if stop else None, ctx)
    finally:
        if stop is not None:
            stop()


def setup_logging(settings: Settings, label: str = "%(name)s") -> None:
    """Log at the configured level; httpx's line per request only at DEBUG."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s {label}: %(message)s")
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _child(settings: Settings, group: str, parent: int, metrics_port: int | None) -> None:
    """A worker process started by :func:`run`: it leaves when its parent does."""
    _die_with(parent)
    setup_logging(settings, group)
    work(settings, group, metrics_port)


def _die_with(parent: int) -> None:
    """SIGTERM ourselves once ``parent`` is gone (even if it was SIGKILLed)."""

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run(settings: Settings) -> None:
    """Supervise one worker process per consumer group until SIGTERM/SIGINT, serving their
    metrics."""
    with served(settings.worker_metrics_port, settings.http_host,
                settings.may_scrape) as metrics:
        _supervise(settings, metrics.port, metrics.process_died)


def _supervise(settings: Settings, metrics_port: int | None,
               died: Callable[[int], None]) -> None:
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def start(group: str) -> Any:
        process = spawn.Process(target=_child,
                                args=(settings, group, os.getpid(), metrics_port),
                                name=f"rushorder-{group}", daemon=False)
        process.start()
        return process

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    processes = {group: start(group) for group in CONSUMER_GROUPS}
    while not stopping.wait(1.0):
        for group, process in processes.items():
            if not process.is_alive():
                log.warning("%s worker exited with %s; starting another", group,
                            process.exitcode)
                died(process.pid)
                processes[group] = start(group)
    _stop_all(list(processes.values()))


def _stop_all(processes: list[Any]) -> None:
    """SIGTERM each process once (a second signal would be RQ's cold shutdown), then wait."""
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(STOP_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()


def main(argv: list[str]) -> int:
    """``python -m workers.main [group]``: settings from RUSHORDER_*; all groups by default."""
    settings = Settings.from_env()
    setup_logging(settings)
    if len(argv) > 1 and argv[1] in CONSUMER_GROUPS:
        work_alone(settings, argv[1])
    else:
        run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
