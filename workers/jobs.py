"""The RQ jobs: each drains one consumer group of the outbox for a while, then hands over.

One job runs many batches (RQ manages some hundreds of jobs a second; the outbox carries
thousands of events), for ``JOB_BUDGET_S`` seconds, then enqueues its successor. RQ may
lose or repeat a job, and that is harmless: the stream, not RQ, says what is left to do.
A job that finds the outbox gone (Redis lost its data) waits, writing and making nothing,
until a rebuild marks the state live again (``WorkerContext.wait_for_live_state``).
A lost successor is replaced by the worker's maintenance (:func:`ensure_job`, every few
seconds while idle); a repeated one runs beside the first, and both stay correct (the
Postgres writers take turns, the forwarders share the group).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis
from rq import Queue
from rq.job import Job

from engine.outbox import PLATFORM, POSTGRES, OutboxGone
from workers.context import WorkerContext, current
from workers.platform import Forwarder
from workers.postgres import PostgresWriter

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


def ensure_job(group: str, connection: redis.Redis, budget_s: float = JOB_BUDGET_S) -> Job | None:
    """Enqueue the group's job unless one already waits in its queue; the job, if enqueued.
    ``connection`` is RQ's Redis (``Settings.rq_url``), not necessarily the outbox's."""
    queue = Queue(QUEUES[group], connection=connection)
    if queue.count:
        return None
    return queue.enqueue(
        JOBS[group], budget_s, job_timeout=int(budget_s) + 300, result_ttl=600,
        failure_ttl=7 * 24 * 3600, description=f"drain the outbox's {group} group")
