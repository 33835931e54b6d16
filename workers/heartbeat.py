"""Every worker process's heartbeat thread: liveness for the console, samples for metrics.

Every :data:`EVERY_S` seconds the thread copies the running job's counts into the
process's metrics (``workers/metrics.py``), reads its group's backlog, and writes the
process's heartbeat (``engine/ops/heartbeat.py``) with what it has done so far. It runs beside
the jobs, on a Redis client of its own, so a job busy with a long batch still beats; a
process that is gone, or stuck so hard that no thread runs, stops beating, and the console
shows it dead after three missed beats. A beat that fails (Redis away, no live state) is
skipped; nothing else depends on it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from engine.ops import heartbeat
from engine.ops.heartbeat import Heartbeat
from engine.outbox import Outboxes
from workers.context import WorkerContext

log = logging.getLogger("rushorder.workers")

EVERY_S = 2.0


class Heartbeats(threading.Thread):
    """The heartbeat thread of one worker process (a daemon: it dies with the process)."""

    def __init__(self, ctx: WorkerContext, group: str, metrics_port: int | None,
                 every_s: float = EVERY_S) -> None:
        super().__init__(name=f"heartbeat-{group}", daemon=True)
        self.ctx, self.group, self.every_s = ctx, group, every_s
        self.metrics_port = metrics_port
        self.started_ms = int(time.time() * 1000)
        self.finished = threading.Event()
        self.client = redis.Redis.from_url(ctx.redis_url, socket_timeout=5,
                                           socket_connect_timeout=5)

    def heartbeat(self) -> Heartbeat:
        """This process's heartbeat, now."""
        return Heartbeat(
            process=self.ctx.consumer, group=self.group, host=socket.gethostname(),
            pid=os.getpid(), started_ms=self.started_ms, every_s=self.every_s,
            state="stopping" if self.ctx.stop.is_set() else "working",
            metrics_port=self.metrics_port, counters=dict(self.ctx.metrics.totals))

    def once(self) -> bool:
        """Sample and beat; whether the beat was written."""
        metrics = self.ctx.metrics
        metrics.sync(self.ctx.job)
        try:
            metrics.waiting(Outboxes(self.client, self.group, self.ctx.consumer,
                                     layout=self.ctx.layout).backlog())
            beaten = heartbeat.beat(self.client, self.heartbeat())
        except redis.RedisError as exc:
            log.debug("heartbeat skipped: %s", exc)
            return False
        if beaten:
            metrics.beat.set(time.time())
        return beaten

    def run(self) -> None:
        """Beat until :meth:`finish`."""
        while True:
            self.once()
            if self.finished.wait(self.every_s):
                break
        self.client.close()

    def finish(self) -> None:
        """Stop beating (the console then sees the process go quiet)."""
        self.finished.set()
