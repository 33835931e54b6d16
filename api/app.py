"""The app factory: the HTTP API over one engine.

``create_app`` receives its resources and connects to nothing; it hands the engine to
each module's route factory (constructor injection: Litestar's per-request DI resolved
dependencies through an anyio task group, a fifth of an order's cost). The lifespan loads
the scripts when the server starts and closes the engine if the app made it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar

from api import balance, cart, console, coupons, health, orders, problems, products
from api.access import routers
from api.answers import Answer
from api.auth import Authenticator
from api.docs import openapi_config
from api.metrics import Metrics
from engine import Engine, Policy
from engine.errors import EngineUnavailable
from engine.ops.gauges import MB
from persistence.archive import PostgresArchive
from rushorder.settings import MissingSetting, Settings

log = logging.getLogger("rushorder.api")

Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


def policy_of(settings: Settings) -> Policy:
    """The business limits configured in the settings."""
    return Policy(
        charge_min=settings.charge_min, charge_max=settings.charge_max,
        charge_unit=settings.charge_unit, balance_max=settings.balance_max,
        idempotency_ttl_s=settings.idempotency_ttl_s, top_window_hours=settings.top_window_hours,
        idempotency_max_per_user=settings.idempotency_max_per_user,
        rate_limit_per_s=settings.rate_limit_per_s, rate_limit_burst=settings.rate_limit_burst,
        payment_timeout_s=settings.payment_timeout_s,
    )


def engine_of(settings: Settings) -> Engine:
    """An engine for the settings' Redis, reading what Redis settled from the settings'
    Postgres (both connect on first use)."""
    if not settings.redis_url:
        raise MissingSetting("the API", "redis_url")
    archive = PostgresArchive(settings.database_url) if settings.database_url else None
    return Engine(settings.redis_url, policy_of(settings),
                  reply_timeout_s=settings.redis_timeout_s, archive=archive,
                  groups=settings.groups)


def _lifespan(engine: Engine, owned: bool, metrics: Metrics) -> Lifespan:
    """Load the scripts at startup and flush metrics while running (handing the console its
    tallies each second); close the engine at shutdown if the app made it."""

    @asynccontextmanager
    async def running(_: Litestar) -> AsyncIterator[None]:
        try:
            await engine.load()
        except EngineUnavailable as exc:  # serve anyway: /health/ready says why, and
            log.warning("scripts not loaded at startup: %s", exc)  # EVALSHA loads on NOSCRIPT
        try:
            async with metrics.flushing(engine.console.tally), engine.sweeping():
                yield
        finally:
            if owned:
                await engine.close()
                await engine.archive.close()

    return running


def create_app(settings: Settings, engine: Engine | None = None) -> Litestar:
    """The API over ``engine``, or over one made from ``settings`` (and closed with the app)."""
    owned = engine is None
    engine = engine or engine_of(settings)
    metrics = Metrics()
    auth = Authenticator(settings.jwt_secret)
    api = [balance.routes(engine), products.routes(engine), coupons.routes(engine),
           orders.routes(engine, metrics), cart.routes(engine, metrics)]
    ops = console.routes(engine, auth, settings.redis_memory_high_water_mb * MB,
                         policy=console.SessionPolicy.of(settings))
    app = Litestar(
        route_handlers=[*routers(api, auth), *health.routes(engine, settings, metrics), *ops],
        lifespan=[_lifespan(engine, owned, metrics)],
        exception_handlers={Exception: problems.handle},
        middleware=[metrics.middleware],
        response_class=Answer,
        openapi_config=openapi_config(),
        logging_config=None,
    )
    # Litestar's own entry (routing, then each route's middleware) behind the hot path's.
    app.asgi_handler = orders.direct(app.asgi_handler, engine, auth, metrics)
    return app
