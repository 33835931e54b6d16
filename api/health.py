"""Operations endpoints: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

import asyncio

import msgspec
import psycopg
from litestar import get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CONTENT_TYPE_LATEST

from api.answers import Answer
from api.docs import problems
from api.metrics import Metrics
from api.problems import problem
from engine import Engine
from engine.errors import EngineError, StateMissing
from rushorder.settings import Settings

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


def routes(engine: Engine, settings: Settings, metrics: Metrics) -> list[HTTPRouteHandler]:
    """Liveness, readiness and metrics of this process."""

    @get("/health/live", sync_to_thread=False)
    def live() -> Liveness:
        """The process is up and serving."""
        return LIVE

    @get("/health/ready", responses=problems())
    async def ready() -> Answer:
        """Redis and Postgres are reachable, Redis holds live state and knows the scripts;
        503 otherwise, saying why."""
        redis, postgres = await asyncio.gather(_redis(engine), _postgres(settings.database_url))
        checks = {"redis": redis, "postgres": postgres}
        if redis == "ok" and postgres in ("ok", "not configured"):
            return Answer({"status": "ready", "checks": checks})
        return problem("SERVICE_UNAVAILABLE", f"not ready: redis {redis}, postgres {postgres}",
                       context=checks)

    @get("/metrics", media_type=CONTENT_TYPE_LATEST, sync_to_thread=False)
    def scrape() -> bytes:
        """Prometheus text: requests and latency by route and status, orders by outcome."""
        return metrics.exposition()

    return [live, ready, scrape]
