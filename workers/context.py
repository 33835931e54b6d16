"""What the jobs of one worker process share: settings, clients, the stop flag.

RQ jobs are plain functions, so each process installs one context before it starts
working (``workers.main.work``) and the jobs look it up. Clients are made on first use,
inside the process that uses them: nothing connects at import time, and nothing made
before a fork is used after it.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import cached_property

import httpx
import redis
from sqlalchemy.engine import Engine

from engine.outbox import DeadLetters, Outbox
from persistence.database import create_engine
from rushorder.settings import Settings


class WorkerContext:
    """One worker process's settings and lazily made clients."""

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("the outbox workers need RUSHORDER_REDIS_URL")
        self.settings = settings
        self.redis_url = settings.redis_url
        self.stop = threading.Event()  # set by SIGTERM/SIGINT: jobs finish their batch, return
        self.consumer = f"{socket.gethostname()}:{os.getpid()}"

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
    def http(self) -> httpx.Client:
        """The data platform's HTTP client: keep-alive, one timeout per delivery."""
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        return httpx.Client(timeout=self.settings.platform_timeout_s, limits=limits)

    def outbox(self, group: str) -> Outbox:
        """This process's consumer of one group (every group exists once this returns)."""
        outbox = Outbox(self.redis, group, self.consumer)
        outbox.create_groups()
        return outbox

    def dead_letters(self) -> DeadLetters:
        """The forwarder's dead-letter stream."""
        return DeadLetters(self.redis)

    def close(self) -> None:
        """Close whatever was opened."""
        for name, closer in (("redis", "close"), ("db", "dispose"), ("http", "close")):
            if name in self.__dict__:
                getattr(self.__dict__.pop(name), closer)()


_current: WorkerContext | None = None


def install(settings: Settings) -> WorkerContext:
    """Make ``settings`` this process's context (replacing any earlier one)."""
    global _current
    if _current is not None:
        _current.close()
    _current = WorkerContext(settings)
    return _current


def current() -> WorkerContext:
    """This process's context; a job run by a plain ``rq worker`` reads RUSHORDER_* itself."""
    return _current or install(Settings.from_env())
