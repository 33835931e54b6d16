"""Fixtures of the API's tests: the app served over real HTTP (uvicorn, in this test
process's event loop) on the session's Redis, logical DB 2 (in cluster mode a server of
its own), and clients acting as new users.

Every test makes its own users, products and coupons, so tests never clean up after
each other; the database is flushed once, when the session starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
import uvicorn
from psycopg import sql

from api.app import create_app
from api.server import HTTP_PROTOCOL
from engine import state
from persistence.migrate import upgrade
from rushorder.servers import free_port
from rushorder.settings import Settings
from tests.api.actors import Actor
from tests.api.support import SECRET, ServerProcess, rfc3339

API_DB = 2  # the engine's tests use DB 1
API_DATABASE = "rushorder_api_tests"
USER_SEQ = "test:api:user"  # outside {ro}: not the engine's


@pytest.fixture(scope="session")
def api_redis_url(redis_db: Callable[[int], str]) -> str:
    """DB 2 of the session's Redis, flushed once at the start, holding live state."""
    url = redis_db(API_DB)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
        state.mark(client, "tests")
    return url


@pytest.fixture(scope="session")
def api_database_url(database_url: str) -> str:
    """A database of the API tests' own on the session's Postgres, migrated as ``up`` does
    (the console and /health/ready read what the writer set aside from it)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (API_DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(API_DATABASE)))
    url = urlsplit(database_url)._replace(path=f"/{API_DATABASE}").geturl()
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def api_settings(settings: Settings, api_redis_url: str, api_database_url: str) -> Settings:
    """The session's settings on the API's database, with the tests' JWT secret and no write
    rate limit (tests hammer one account; test_api_idempotency.py serves one with it)."""
    return settings.replace(redis_url=api_redis_url, database_url=api_database_url,
                            jwt_secret=SECRET, log_level="WARNING", rate_limit_per_s=0)


async def _serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app over HTTP on a free port until the fixture ends."""
    port = free_port()
    # The production server's HTTP protocol (one write per answer), so every API test
    # runs through it.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           http=HTTP_PROTOCOL, log_level="warning",
                                           access_log=False))
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def base_url(api_settings: Settings) -> AsyncIterator[str]:
    """The API (create_app, its own engine) served over real HTTP for the whole session."""
    async for url in _serve(create_app(api_settings)):
        yield url


@pytest.fixture(scope="session")
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the session's API."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        yield http


@pytest.fixture(scope="session")
def serve_app() -> Callable[[Any], AsyncIterator[str]]:
    """Serve another app (other settings) over HTTP: ``async for url in serve_app(app)``."""
    return _serve


# -- unique actors and things per test -----------------------------------------------------


@pytest.fixture(scope="session")
def new_user(api_redis_url: str) -> Callable[..., Actor]:
    """A user id nobody has used in this database, with a token (admin if asked)."""
    counter = redis.Redis.from_url(api_redis_url)

    def make(admin: bool = False, ttl_s: int = 3600) -> Actor:
        return Actor(int(counter.incr(USER_SEQ)), SECRET, admin=admin, ttl_s=ttl_s)

    return make


@pytest.fixture(scope="session")
def admin(new_user: Callable[..., Actor]) -> Actor:
    """An admin of the catalog and coupons."""
    return new_user(admin=True)


@pytest.fixture
def funded_user(
    client: httpx.AsyncClient, new_user: Callable[..., Actor]
) -> Callable[[int], Awaitable[Actor]]:
    """A new user charged with ``balance`` won through the API."""

    async def make(balance: int) -> Actor:
        user = new_user()
        while balance > 0:
            step = min(balance, 1_000_000)
            resp = await client.post("/api/v1/balance/charge", json={"amount": step},
                                     headers=user.headers)
            assert resp.status_code == 200, resp.text
            balance -= step
        return user

    return make


@pytest.fixture
def new_product(client: httpx.AsyncClient, admin: Actor) -> Callable[..., Awaitable[dict]]:
    """A new product (defaults: 1,000 won, 100 units), as the API answered it."""

    async def make(price: int = 1_000, stock: int = 100, name: str = "widget") -> dict:
        resp = await client.post("/api/v1/admin/products", headers=admin.headers,
                                 json={"name": name, "price": price, "stock": stock})
        assert resp.status_code == 201, resp.text
        return resp.json()

    return make


@pytest.fixture
def new_coupon(client: httpx.AsyncClient, admin: Actor) -> Callable[..., Awaitable[dict]]:
    """A new coupon valid from an hour ago to an hour from now unless told otherwise."""

    async def make(discount_type: str = "FIXED", discount_value: int = 500,
                   total_quantity: int = 10, start_s: float = -3600,
                   end_s: float = 3600) -> dict:
        now = datetime.now(UTC)
        resp = await client.post("/api/v1/admin/coupons", headers=admin.headers, json={
            "name": "test coupon", "discount_type": discount_type,
            "discount_value": discount_value, "total_quantity": total_quantity,
            "valid_from": rfc3339(now + timedelta(seconds=start_s)),
            "valid_until": rfc3339(now + timedelta(seconds=end_s))})
        assert resp.status_code == 201, resp.text
        return resp.json()

    return make


# -- API servers in their own processes ----------------------------------------------------


@pytest.fixture(scope="session")
def api_servers(
    api_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Two API servers, one of each kind (``api_server``), with two workers each, sharing the
    session's Redis and Postgres."""
    logs = tmp_path_factory.mktemp("api-servers")
    servers = [ServerProcess(api_settings.replace(http_port=free_port(), api_workers=2,
                                                  api_server=kind), logs / f"api-{kind}.log")
               for kind in ("uvicorn", "granian")]
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()
