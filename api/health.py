"""Operations endpoints: liveness, readiness and the Prometheus scrape.

A failing readiness check names what failed in a word anyone may read ("unreachable",
"no live state"); its details (the server's address, the driver's error, memory figures)
go only to an admin's bearer token, since they map the network behind the API. /metrics
is open unless ``RUSHORDER_METRICS_TOKEN`` is set; then it needs that bearer token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, NamedTuple, TypeVar

import msgspec
import psycopg
from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST

from api.answers import Answer
from api.auth import Authenticator
from api.console import top_lines, top_of
from api.docs import problems
from api.inbound import header
from api.metrics import Metrics, redis_lines
from api.problems import problem
from engine import Engine
from engine.errors import EngineError, StateMissing
from engine.ops.gauges import MB
from rushorder.settings import Settings

T = TypeVar("T")

PROBE_TIMEOUT_S = 2.0


class Liveness(msgspec.Struct, frozen=True):
    """The answer of /health/live."""

    status: str


LIVE = Liveness("ok")
PASSING = ("ok", "not configured")


class Check(NamedTuple):
    """One readiness check: ``word`` says what failed, for anyone; ``detail`` says why
    (addresses, errors, figures), for admins only."""

    word: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        """Whether this check lets the process take traffic."""
        return self.word in PASSING

    @property
    def told(self) -> str:
        """The word and the detail, as an admin reads it."""
        return f"{self.word}: {self.detail}" if self.detail else self.word


OK = Check("ok")


async def _redis(engine: Engine) -> Check:
    """Redis answers, holds live state and knows every script (loading them if a restarted
    Redis lost them)."""
    try:
        if not await asyncio.wait_for(engine.ready(), PROBE_TIMEOUT_S):
            await asyncio.wait_for(engine.load(), PROBE_TIMEOUT_S)
        return OK
    except StateMissing as exc:
        return Check("no live state", exc.detail)
    except (TimeoutError, EngineError, OSError) as exc:
        return Check("unreachable", f"{exc!s:.200}")


async def _select_one(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT 1")


async def _postgres(url: str | None) -> Check:
    """Postgres accepts a connection and runs SELECT 1 (skipped when none is configured)."""
    if url is None:
        return Check("not configured")
    try:
        await asyncio.wait_for(_select_one(url), PROBE_TIMEOUT_S)
        return OK
    except (TimeoutError, psycopg.Error, OSError) as exc:
        return Check("unreachable", f"{exc!s:.200}")


async def _memory(engine: Engine, high_water: int) -> Check:
    """Redis' memory is under the high-water mark (unchecked when Redis is unreachable:
    the redis check says so)."""
    try:
        used = (await asyncio.wait_for(engine.gauges(), PROBE_TIMEOUT_S)).used_memory
    except (TimeoutError, EngineError):
        return OK
    if high_water and used >= high_water:
        return Check("over the high-water mark",
                     f"{used / MB:.0f} MB used, at or over the high-water mark of "
                     f"{high_water / MB:.0f} MB (RUSHORDER_REDIS_MEMORY_HIGH_WATER_MB)")
    return OK


class SetAsideCheck(NamedTuple):
    """What /health/ready says of the outbox entries the Postgres writer set aside."""

    word: str
    entries: int = 0


async def _set_aside(engine: Engine, url: str | None) -> SetAsideCheck:
    """Outbox entries the Postgres writer set aside (Postgres refused them): said in the
    answer, never failed on. One bad record must not take every API process out of
    rotation; the audit fails on it and the workers' metrics alert."""
    if url is None:
        return SetAsideCheck("not configured")
    try:
        found = await asyncio.wait_for(engine.archive.set_aside(0), PROBE_TIMEOUT_S)
    except (TimeoutError, EngineError):
        return SetAsideCheck("unknown")  # the postgres check says why (or: not migrated)
    if not found.count:
        return SetAsideCheck("ok")
    return SetAsideCheck(f"{found.count} outbox entries set aside: `rushorder audit` lists "
                         "them, `rushorder outbox retry` applies them once fixed", found.count)


def _is_admin(auth: Authenticator, request: Request[Any, Any, Any]) -> bool:
    """Whether the request carries a valid admin bearer token (a probe sends none, and a
    bad one is no reason to fail the probe: it just reads the public answer)."""
    if header(request, b"authorization") is None:
        return False
    try:
        return auth.identify(request).admin
    except HTTPException:
        return False


def _not_ready(checks: dict[str, Check], admin: bool) -> Answer:
    """The 503: what failed in plain words; with each check's details for an admin."""
    failed = ", ".join(f"{name} {check.told if admin else check.word}"
                       for name, check in checks.items() if not check.passed)
    context = {name: check.told if admin else check.word for name, check in checks.items()}
    return problem("SERVICE_UNAVAILABLE", f"not ready: {failed}", context=context)


async def _read(reading: Awaitable[T]) -> T | None:
    """What Redis answered, or None if it did not in time (the process' own metrics still
    tell a lot) or holds no live state."""
    try:
        return await asyncio.wait_for(reading, PROBE_TIMEOUT_S)
    except (TimeoutError, EngineError):
        return None


def routes(engine: Engine, settings: Settings, metrics: Metrics,
           auth: Authenticator | None = None) -> list[HTTPRouteHandler]:
    """Liveness, readiness and metrics of this process (``auth`` tells admins, who read
    why a check failed; by default one over the settings' secret)."""
    high_water = settings.redis_memory_high_water_mb * MB
    auth = auth or Authenticator(settings.jwt_secret)

    @get("/health/live", sync_to_thread=False)
    def live() -> Liveness:
        """The process is up and serving."""
        return LIVE

    @get("/health/ready", responses=problems())
    async def ready(request: Request[Any, Any, Any]) -> Answer:
        """Redis and Postgres are reachable, Redis holds live state and knows the scripts;
        503 otherwise, saying what failed (and why, to an admin's bearer token)."""
        redis, postgres, memory, set_aside = await asyncio.gather(
            _redis(engine), _postgres(settings.database_url), _memory(engine, high_water),
            _set_aside(engine, settings.database_url))
        checks = {"redis": redis, "postgres": postgres, "redis_memory": memory}
        if all(check.passed for check in checks.values()):
            words = {name: check.word for name, check in checks.items()}
            return Answer({"status": "ready, with outbox entries set aside"
                           if set_aside.entries else "ready",
                           "checks": {**words, "outbox_set_aside": set_aside.word}})
        return _not_ready(checks, _is_admin(auth, request))

    @get("/metrics", media_type=CONTENT_TYPE_LATEST, responses=problems(401))
    async def scrape(request: Request[Any, Any, Any]) -> Any:
        """Prometheus text: requests and latency by route and status, orders by outcome;
        Redis' memory, the outbox's backlog and lag per consumer group, the dead letters;
        the top 5 and their stock. Needs ``Bearer <RUSHORDER_METRICS_TOKEN>`` if set."""
        if not settings.may_scrape(header(request, b"authorization")):
            return problem("UNAUTHORIZED", "Authorization: the metrics token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        gauges, top = await asyncio.gather(_read(engine.gauges()), _read(top_of(engine)))
        return metrics.exposition() + redis_lines(gauges, high_water) + top_lines(top)

    return [live, ready, scrape]
