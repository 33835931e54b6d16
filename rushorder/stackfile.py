"""``<data_dir>/stack.json``: where the ``rushorder up`` running from a data dir has its servers.

``rushorder up`` writes it as soon as its Redis and Postgres answer (before migrating) and
removes it first thing when it stops; it holds the supervisor's pid and the resolved
Redis, Postgres, API and data-platform URLs. Commands run by hand with a server URL unset
read it (:func:`find`) and use those servers, but only while that pid lives and the
servers answer: a file left behind by a killed ``up`` is never used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from rushorder.settings import Settings, redact

FILE_NAME = "stack.json"
PROBE_TIMEOUT_S = 2


class RunningStack(msgspec.Struct, frozen=True, kw_only=True):
    """What ``stack.json`` holds: who runs the stack and where its servers answer."""

    pid: int  # of the `rushorder up` supervisor
    redis_url: str
    database_url: str
    api_url: str  # where the API listens (ready once `up` prints its banner)
    platform_url: str  # where the workers send order events
    started_at: datetime


class NotRunning(Exception):
    """Raised when no usable ``rushorder up`` runs from a data dir; the message says why."""


def path_in(data_dir: Path) -> Path:
    """The stack file of a data dir."""
    return data_dir / FILE_NAME


def record_of(resolved: Settings, pid: int) -> RunningStack:
    """The stack file's content for a supervisor ``pid`` running on ``resolved`` settings."""
    assert resolved.redis_url is not None and resolved.database_url is not None
    host = "127.0.0.1" if resolved.http_host in ("0.0.0.0", "") else resolved.http_host
    return RunningStack(pid=pid, redis_url=resolved.redis_url,
                        database_url=resolved.database_url,
                        api_url=f"http://{host}:{resolved.http_port}",
                        platform_url=resolved.platform_url, started_at=datetime.now(UTC))


def publish(resolved: Settings) -> Path:
    """Write this process's stack file (owner-only: external URLs may carry passwords)."""
    path = path_in(resolved.data_path)
    partial = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(record_of(resolved, os.getpid())) + b"\n")
    os.replace(partial, path)  # readers never see half a file
    return path


def read(data_dir: Path) -> RunningStack | None:
    """The stack file of a data dir, None if there is none or it cannot be read."""
    try:
        return msgspec.json.decode(path_in(data_dir).read_bytes(), type=RunningStack)
    except (OSError, msgspec.MsgspecError):
        return None


def withdraw(data_dir: Path, pid: int) -> None:
    """Remove the stack file if process ``pid`` wrote it (not another ``up``'s)."""
    running = read(data_dir)
    if running is not None and running.pid == pid:
        path_in(data_dir).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """A process ``pid`` exists (perhaps another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def redis_answers(url: str) -> bool:
    """Redis at ``url`` answers PING."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_S,
                                  socket_connect_timeout=PROBE_TIMEOUT_S) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def postgres_answers(url: str) -> bool:
    """Postgres at ``url`` (any driver's URL form) accepts a connection."""
    import psycopg

    try:
        with psycopg.connect(re.sub(r"^postgresql\+\w+://", "postgresql://", url),
                             connect_timeout=PROBE_TIMEOUT_S) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


PROBES = {"redis_url": redis_answers, "database_url": postgres_answers}


def find(settings: Settings, servers: Iterable[str] = tuple(PROBES)) -> RunningStack:
    """The ``rushorder up`` running from ``settings.data_dir`` whose ``servers`` (fields:
    ``redis_url``, ``database_url``) answer; :class:`NotRunning` says why there is none."""
    where = settings.data_dir
    running = read(settings.data_path)
    if running is None:
        raise NotRunning(f"no `rushorder up` is running from {where}")
    if not pid_alive(running.pid):
        raise NotRunning(f"no `rushorder up` is running from {where} (its {FILE_NAME} is "
                         f"left from pid {running.pid}, which has exited)")
    for field in servers:
        url = getattr(running, field)
        if not PROBES[field](url):
            raise NotRunning(f"the `rushorder up` running from {where} (pid {running.pid}) "
                             f"does not answer at {redact(url)}")
    return running


def fill(settings: Settings, running: RunningStack) -> Settings:
    """``settings`` with every server URL left unset taken from a running stack."""
    return settings.replace(
        redis_url=settings.redis_url or running.redis_url,
        database_url=settings.database_url or running.database_url,
        data_platform_url=settings.data_platform_url or running.platform_url)
