"""Operations endpoints: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import msgspec
import psycopg
from litestar import get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST

from api.answers import Answer
from api.console import top_lines, top_of
from api.docs import problems
from api.metrics import Metrics, redis_lines
from api.problems import problem
from engine import Engine
from engine.errors import EngineError, StateMissing
from engine.gauges import MB
from rushorder.settings import Settings

T = TypeVar("T")

PROBE_TIMEOUT_S = 2.0


class Liveness(msgspec.Struct, frozen=True):
    """The answer of /health/live."""

    status: str


LIVE = Liveness("ok")


async def _redis(engine: Engine) -> str:
    """Redis answers, holds live state and knows every script (loading them if a restarted
    Redis lost them)."""
    try:
        if not await asyncio.wait_for(engine.ready(), PROBE_TIMEOUT_S):
            await asyncio.wait_for(engine.load(), PROBE_TIMEOUT_S)
        return "ok"
    except StateMissing as exc:
        return f"no live state: {exc.detail}"
    except (TimeoutError, EngineError, OSError) as exc:
        return f"unreachable: {exc!s:.200}"


async def _select_one(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT 1")


async def _postgres(url: str | None) -> str:
    """Postgres accepts a connection and runs SELECT 1 (skipped when none is configured)."""
    if url is None:
        return "not configured"
    try:
        await asyncio.wait_for(_select_one(url), PROBE_TIMEOUT_S)
        return "ok"
    except (TimeoutError, psycopg.Error, OSError) as exc:
        return f"unreachable: {exc!s:.200}"


async def _memory(engine: Engine, high_water: int) -> str:
    """Redis' memory is under the high-water mark (unchecked when Redis is unreachable:
    the redis check says so)."""
    try:
        used = (await asyncio.wait_for(engine.gauges(), PROBE_TIMEOUT_S)).used_memory
    except (TimeoutError, EngineError):
        return "ok"
    if high_water and used >= high_water:
        return (f"{used / MB:.0f} MB used, at or over the high-water mark of "
                f"{high_water / MB:.0f} MB (RUSHORDER_REDIS_MEMORY_HIGH_WATER_MB)")
    return "ok"


async def _read(reading: Awaitable[T]) -> T | None:
    """What Redis answered, or None if it did not in time (the process' own metrics still
    tell a lot) or holds no live state."""
    try:
        return await asyncio.wait_for(reading, PROBE_TIMEOUT_S)
    except (TimeoutError, EngineError):
        return None


def routes(engine: Engine, settings: Settings, metrics: Metrics) -> list[HTTPRouteHandler]:
    """Liveness, readiness and metrics of this process."""
    high_water = settings.redis_memory_high_water_mb * MB

    @get("/health/live", sync_to_thread=False)
    def live() -> Liveness:
        """The process is up and serving."""
        return LIVE

    @get("/health/ready", responses=problems())
    async def ready() -> Answer:
        """Redis and Postgres are reachable, Redis holds live state and knows the scripts;
        503 otherwise, saying why."""
        redis, postgres, memory = await asyncio.gather(
            _redis(engine), _postgres(settings.database_url), _memory(engine, high_water))
        checks = {"redis": redis, "postgres": postgres, "redis_memory": memory}
        if redis == "ok" and postgres in ("ok", "not configured") and memory == "ok":
            return Answer({"status": "ready", "checks": checks})
        return problem("SERVICE_UNAVAILABLE", f"not ready: redis {redis}, postgres "
                       f"{postgres}, redis memory {memory}", context=checks)

    @get("/metrics", media_type=CONTENT_TYPE_LATEST)
    async def scrape() -> bytes:
        """Prometheus text: requests and latency by route and status, orders by outcome;
        Redis' memory, the outbox's backlog and lag per consumer group, the dead letters;
        the top 5 and their stock."""
        gauges, top = await asyncio.gather(_read(engine.gauges()), _read(top_of(engine)))
        return metrics.exposition() + redis_lines(gauges, high_water) + top_lines(top)

    return [live, ready, scrape]
