"""The console's replays of the dead letters, done in a platform forwarder's process.

A thread of each platform worker process (:class:`ReplayListener`) waits for the requests
the console queues (``engine/ops/replays.py``); each goes to exactly one process, which says
it is running, replays exactly as ``rushorder replay`` does
(:func:`workers.forwarder.replay_dead_letters`: one more post of each dead letter with its
own ``event_id``, and those delivered leave the dead-letter stream), telling its progress
as it goes, and says what it delivered and what is left. Nothing here reads or writes the
outbox, so the Postgres writer can never see an event twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis

from engine.ops import replays
from engine.ops.replays import ReplayState
from engine.outbox import DeadLetters
from workers.context import WorkerContext
from workers.forwarder import replay_dead_letters

log = logging.getLogger("rushorder.workers.platform")

TAKE_S = 1.0  # how long one wait for a request blocks (and so how soon a stop is seen)
TELL_EVERY_S = 0.5  # how often a running replay writes its progress


class Told:
    """A replay's progress, written to its request's state now and then."""

    def __init__(self, client: redis.Redis, request: str, worker: str) -> None:
        self.client, self.request, self.worker = client, request, worker
        self.done, self.total = 0, 0
        self._told = 0.0

    def state(self, phase: replays.ReplayPhase = "running", **more: object) -> ReplayState:
        """The request's state as of now."""
        return ReplayState(state=phase, done=self.done, total=self.total, worker=self.worker,
                           **more)  # type: ignore[arg-type]

    def tell(self, phase: replays.ReplayPhase = "running", **more: object) -> None:
        """Write the state now."""
        replays.answer(self.client, self.request, self.state(phase, **more))
        self._told = time.monotonic()

    def stage(self, name: str, total: int | None = None, unit: str = "items") -> None:
        """The replay knows how many dead letters there are."""
        self.total = total or 0
        self.tell()

    def advance(self, n: int = 1) -> None:
        """One more dead letter handled; the state is written if it is due."""
        self.done += n
        if time.monotonic() - self._told >= TELL_EVERY_S:
            self.tell()


class ReplayListener(threading.Thread):
    """Takes the console's replay requests and does them (a daemon of the platform process)."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="console-replays", daemon=True)
        self.ctx = ctx
        self.finished = threading.Event()
        # A client of its own: a wait for requests holds its connection for TAKE_S.
        self.client = redis.Redis.from_url(ctx.redis_url, socket_timeout=TAKE_S + 5,
                                           socket_connect_timeout=5)

    def run(self) -> None:
        """Wait for requests until :meth:`finish`."""
        while not self.finished.is_set():
            try:
                request = replays.take(self.client, TAKE_S)
            except redis.RedisError as exc:
                log.debug("replay requests unreadable: %s", exc)
                self.finished.wait(TAKE_S)
                continue
            if request is not None:
                self.serve(request)
        self.client.close()

    def serve(self, request: str) -> None:
        """Do one replay, saying how it goes."""
        told = Told(self.client, request, self.ctx.consumer)
        try:
            told.tell()
            delivered = replay_dead_letters(self.ctx.settings, progress=told)
            left = DeadLetters(self.client).count()
            told.tell("done", delivered=delivered, left=left)
            self.ctx.metrics.add("replayed", delivered)
            log.info("console replay %s: %d dead letters delivered, %d left", request,
                     delivered, left)
        except Exception as exc:  # the console must hear why, whatever it was
            log.exception("console replay %s failed", request)
            with contextlib.suppress(redis.RedisError):
                told.tell("failed", error=f"{type(exc).__name__}: {exc!s:.300}")

    def finish(self) -> None:
        """Stop taking requests (one under way is finished first)."""
        self.finished.set()
