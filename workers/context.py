"""What the jobs of one worker process share: settings, clients, the stop flag.

RQ jobs are plain functions, so each process installs one context before it starts
working (``workers.main.work``) and the jobs look it up. Clients are made on first use,
inside the process that uses them: nothing connects at import time, and nothing made
before a fork is used after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from functools import cached_property
from typing import TypeVar

import redis
from sqlalchemy.engine import Engine

from engine import keys, state
from engine.keys import Layout
from engine.outbox import DeadLetters, Outboxes
from persistence.database import create_engine
from rushorder.settings import Settings
from workers.metrics import CountedDeadLetters, CountedOutbox, WorkerMetrics
from workers.platform_http import Platform

log = logging.getLogger("rushorder.workers")
J = TypeVar("J")

STATE_POLL_S = 2.0


class WorkerContext:
    """One worker process's settings and lazily made clients."""

    def __init__(self, settings: Settings, group: str = "all") -> None:
        if not settings.redis_url:
            raise ValueError("the outbox workers need RUSHORDER_REDIS_URL")
        self.settings = settings
        self.redis_url = settings.redis_url
        self.stop = threading.Event()  # set by SIGTERM/SIGINT: jobs finish their batch, return
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"
        self.state_lost = False  # said once, not on every job, until the state is back
        self.metrics = WorkerMetrics(group)
        self.job: object | None = None  # the running writer or forwarder (see running())

    @cached_property
    def rq_redis(self) -> redis.Redis:
        """RQ's Redis (``rq_redis_url``), for enqueuing jobs; the outbox's client when it is
        the same server."""
        rq_url = self.settings.rq_url
        if rq_url == self.redis_url or rq_url is None:
            return self.redis
        return redis.Redis.from_url(rq_url, socket_timeout=10, socket_connect_timeout=5,
                                    health_check_interval=30)

    @cached_property
    def redis(self) -> redis.Redis:
        """A bytes client for the outbox (socket timeout above the blocking reads' 1 s)."""
        return redis.Redis.from_url(self.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                    health_check_interval=30)

    @cached_property
    def db(self) -> Engine:
        """The pooled Postgres engine."""
        if not self.settings.database_url:
            raise ValueError("the Postgres writer needs RUSHORDER_DATABASE_URL")
        return create_engine(self.settings.database_url)

    @cached_property
    def platform(self) -> Platform:
        """The data platform (its pooled HTTP client is opened by each forwarder run)."""
        return Platform.from_settings(self.settings)

    @cached_property
    def layout(self) -> Layout:
        """The user groups the state is laid out in (RUSHORDER_GROUPS)."""
        return keys.layout(self.settings.groups)

    def outbox(self, group: str) -> Outboxes:
        """This process's consumer of one group over every outbox stream (every group of
        every stream exists once this returns)."""
        outbox = CountedOutbox(self.redis, group, self.consumer, layout=self.layout,
                               metrics=self.metrics)
        outbox.create_groups()
        return outbox

    def wait_for_live_state(self, why: str, until: float) -> bool:
        """Redis lost its data: write nothing and make nothing (least of all a new, empty
        outbox) until a rebuild marks the state live again, the ``time.monotonic()``
        deadline passes or we are asked to stop. Whether the state is back."""
        if not self.state_lost:
            log.error("outbox worker stopped: %s. It reads, writes and creates nothing until "
                      "the live state is back, then resumes by itself.", why)
            self.state_lost = True
        while not self.stop.is_set() and time.monotonic() < until:
            try:
                made = state.marker(self.redis)
            except redis.RedisError:
                made = None
            if made is not None:
                log.warning("outbox worker resumes: %s", made.describe())
                self.state_lost = False
                return True
            self.stop.wait(STATE_POLL_S)
        return False

    def dead_letters(self) -> DeadLetters:
        """The forwarder's dead-letter stream (what goes in is counted)."""
        return CountedDeadLetters(self.redis, self.metrics)

    @contextlib.contextmanager
    def running(self, job: J) -> Iterator[J]:
        """Run ``job`` (a writer or forwarder) as this process's: the heartbeat copies its
        counts into the metrics while it runs, and once more when it ends."""
        self.job = job
        try:
            yield job
        finally:
            self.metrics.sync(job)
            self.job = None

    def close(self) -> None:
        """Close whatever was opened."""
        for name, closer in (("rq_redis", "close"), ("redis", "close"), ("db", "dispose")):
            if name in self.__dict__:
                getattr(self.__dict__.pop(name), closer)()


_current: WorkerContext | None = None


def install(settings: Settings, group: str = "all") -> WorkerContext:
    """Make ``settings`` this process's context, working for ``group`` (replacing any
    earlier one)."""
    global _current
    if _current is not None:
        _current.close()
    _current = WorkerContext(settings, group)
    return _current


def current() -> WorkerContext:
    """This process's context; a job run by a plain ``rq worker`` reads RUSHORDER_* itself."""
    return _current or install(Settings.from_env())
