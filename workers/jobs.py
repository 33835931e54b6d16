"""The RQ jobs: each drains one consumer group of the outbox for a while, then hands over.

One job runs many batches (RQ manages some hundreds of jobs a second; the outbox carries
thousands of events), for ``JOB_BUDGET_S`` seconds, then enqueues its successor. RQ may
lose or repeat a job, and that is harmless: the stream, not RQ, says what is left to do.
A job that finds the outbox gone (Redis lost its data) waits, writing and making nothing,
until a rebuild marks the state live again (``WorkerContext.wait_for_live_state``).
A lost successor is replaced by the worker's maintenance (:func:`ensure_job`, every few
seconds while idle); a repeated one runs beside the first, and both stay correct (the
Postgres writers take turns, the forwarders share the group).

A worker runs nothing else (:class:`ProjectJob`): RQ would import and call whatever
function a job in its queue names, and anyone who can write to RQ's Redis could queue
``os.system``. Jobs are stored as JSON (:data:`SERIALIZER`), never pickled, so reading
one runs no code either; a job that is not one of ours fails (logged, in RQ's failed
registry) without being called.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from engine.outbox import PLATFORM, POSTGRES, OutboxGone
from workers.context import WorkerContext, current
from workers.forwarder import Forwarder
from workers.postgres import PostgresWriter

log = logging.getLogger("rushorder.workers")

JOB_BUDGET_S = 300.0  # a handover costs a few dozen round trips: not too often
QUEUES = {POSTGRES: "rushorder-outbox-postgres", PLATFORM: "rushorder-outbox-platform"}


class _Drainer(Protocol):
    """A writer or forwarder: drains its group until the deadline or the stop."""

    def run(self, until: float, stop: threading.Event) -> int: ...


def _drain(group: str, make: Callable[[WorkerContext], _Drainer], budget_s: float) -> int:
    """Run the drainer ``make`` builds for ``budget_s`` seconds, then enqueue the successor.
    An outbox found gone (Redis lost its data) is waited out, not recreated."""
    ctx = current()
    until = time.monotonic() + budget_s
    try:
        with ctx.running(make(ctx)) as drainer:
            return drainer.run(until, ctx.stop)
    except OutboxGone as exc:
        ctx.wait_for_live_state(str(exc), until)
        return 0
    finally:
        ensure_job(group, ctx.rq_redis)


def _writer(ctx: WorkerContext) -> PostgresWriter:
    s = ctx.settings
    return PostgresWriter(ctx.outbox(POSTGRES), ctx.db, batch=s.outbox_batch,
                          reclaim_idle_ms=s.outbox_reclaim_idle_ms,
                          retention_s=s.redis_retention_s)


def _forwarder(ctx: WorkerContext) -> Forwarder:
    s = ctx.settings
    return Forwarder([ctx.outbox(PLATFORM)], ctx.dead_letters(), ctx.platform,
                     in_flight=s.platform_in_flight, max_attempts=s.platform_max_attempts,
                     reclaim_idle_ms=s.outbox_reclaim_idle_ms)


def drain_to_postgres(budget_s: float = JOB_BUDGET_S) -> int:
    """Apply the outbox to Postgres for ``budget_s`` seconds; entries applied."""
    return _drain(POSTGRES, _writer, budget_s)


def forward_to_platform(budget_s: float = JOB_BUDGET_S) -> int:
    """Forward order events to the data platform for ``budget_s`` seconds; events delivered."""
    return _drain(PLATFORM, _forwarder, budget_s)


JOBS: dict[str, Callable[[float], int]] = {
    POSTGRES: drain_to_postgres, PLATFORM: forward_to_platform}


# Jobs are JSON in Redis: RQ's default, pickle, runs code while it reads a job.
SERIALIZER = JSONSerializer
# The only functions a worker calls, by the name RQ stores (``module.function``).
ALLOWED: dict[str, Callable[[float], int]] = {
    f"{job.__module__}.{job.__qualname__}": job for job in JOBS.values()}


class ForeignJob(Exception):
    """Raised instead of running a job that is not one of the project's (:data:`ALLOWED`)."""


class ProjectJob(Job):
    """An RQ job that can only be one of ours: its function is looked up in
    :data:`ALLOWED`, never imported by name, and it has no callbacks or webhooks (ours
    set none; one planted in Redis would be imported, or would call out, too)."""

    @property
    def func(self) -> Callable[..., Any]:
        """The project's function the job names; :class:`ForeignJob` (logged) otherwise."""
        name = self.func_name
        func = ALLOWED.get(name or "")
        if func is None or self.instance is not None or not _our_arguments(self.args,
                                                                          self.kwargs):
            log.error("refused RQ job %s from queue %s: %s is not one of the project's jobs "
                      "(%s); failed without running it", self.id, self.origin, name,
                      ", ".join(ALLOWED))
            raise ForeignJob(f"{name} is not one of the project's jobs")
        return func

    @property
    def success_callback(self) -> None:
        """None: our jobs have none."""
        return None

    @property
    def failure_callback(self) -> None:
        """None: our jobs have none."""
        return None

    @property
    def stopped_callback(self) -> None:
        """None: our jobs have none."""
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: our jobs have no webhooks."""


def _our_arguments(args: Any, kwargs: Any) -> bool:
    """The arguments our jobs take: at most a budget in seconds, up to a job's."""
    budget_ok = all(isinstance(a, int | float) and 0 <= a <= JOB_BUDGET_S for a in args)
    return not kwargs and len(args) <= 1 and budget_ok


def queue_of(group: str, connection: redis.Redis) -> Queue:
    """The RQ queue of a group's job, holding :class:`ProjectJob` s as JSON."""
    return Queue(QUEUES[group], connection=connection, job_class=ProjectJob,
                 serializer=SERIALIZER)


def ensure_job(group: str, connection: redis.Redis, budget_s: float = JOB_BUDGET_S) -> Job | None:
    """Enqueue the group's job unless one already waits in its queue; the job, if enqueued.
    ``connection`` is RQ's Redis (``Settings.rq_url``), not necessarily the outbox's."""
    queue = queue_of(group, connection)
    if queue.count:
        return None
    return queue.enqueue(
        JOBS[group], budget_s, job_timeout=int(budget_s) + 300, result_ttl=600,
        failure_ttl=7 * 24 * 3600, description=f"drain the outbox's {group} group")
