"""Fixtures of the engine's tests: a real Redis (logical DB 1), a fresh Engine per test and
unique ids, so tests never clean up after each other.

The databases are the session's (``redis_databases`` from ``tests/conftest.py``: in cluster
mode, a cluster-enabled server per database) when that fixture exists; else logical
databases of a throwaway valkey/redis-server started here.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import pytest
import redis
import redis.asyncio as aioredis

from engine import Engine, state
from engine.models import Coupon, IssuedCoupon, Product
from rushorder.servers import find_redis, free_port
from tests.engine.support import USER_SEQ, Outbox, window

ENGINE_DB = 1  # other test packages use other logical databases


def with_db(url: str, db: int) -> str:
    """The same server URL pointed at another logical database."""
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def _deathsig(args: list[str]) -> list[str]:
    """Make the server die with us even if pytest is SIGKILLed (where setpriv exists)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *args] if setpriv else args


def _wait_for_ping(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis on port {port} exited with {proc.returncode}")
        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                if client.ping():
                    return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis on port {port} did not answer within {timeout_s}s")


@pytest.fixture(scope="session")
def throwaway_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private, memory-only server for this session; stopped at the end."""
    port, data = free_port(), tmp_path_factory.mktemp("engine-redis")
    args = [str(find_redis().path), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
            "--dir", str(data), "--logfile", str(Path(data) / "redis.log")]
    proc = subprocess.Popen(_deathsig(args), stdin=subprocess.DEVNULL)
    try:
        _wait_for_ping(port, proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def redis_db(request: pytest.FixtureRequest) -> Callable[[int], str]:
    """The URL of separate database ``n``: the session's (``redis_databases``) if that
    fixture exists, else a logical database of our own server."""
    try:
        return request.getfixturevalue("redis_databases").url  # type: ignore[no-any-return]
    except pytest.FixtureLookupError:
        base = request.getfixturevalue("throwaway_redis_url")
        return lambda db: with_db(base, db)


@pytest.fixture(scope="session")
def engine_redis_url(redis_db: Callable[[int], str]) -> str:
    """The engine's database (DB 1), holding live state."""
    url = redis_db(ENGINE_DB)
    with redis.Redis.from_url(url) as client:
        state.mark(client, "tests")  # the engine's tests run on live state
    return url


@pytest.fixture
async def r(engine_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the engine's DB, to look at (or tamper with) raw state."""
    client = aioredis.Redis.from_url(engine_redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def engine(engine_redis_url: str) -> AsyncIterator[Engine]:
    """A fresh Engine (and connection) per test, scripts preloaded."""
    eng = Engine(engine_redis_url)
    await eng.load()
    yield eng
    await eng.close()


# -- unique things per test ----------------------------------------------------------------


@pytest.fixture
def new_user(r: aioredis.Redis) -> Callable[[], Awaitable[int]]:
    """A user id nobody has used in this database."""

    async def make() -> int:
        return int(await r.incr(USER_SEQ))

    return make


@pytest.fixture
def funded_user(
    engine: Engine, new_user: Callable[[], Awaitable[int]]
) -> Callable[[int], Awaitable[int]]:
    """A new user charged with ``balance`` won (in charges of at most 1,000,000)."""

    async def make(balance: int) -> int:
        user = await new_user()
        while balance > 0:
            step = min(balance, 1_000_000)
            await engine.charge(user, step)
            balance -= step
        return user

    return make


@pytest.fixture
def group_mates(
    engine: Engine, new_user: Callable[[], Awaitable[int]],
    funded_user: Callable[[int], Awaitable[int]],
) -> Callable[[int, int], Awaitable[list[int]]]:
    """``count`` new users of one group (their orders can share a place_orders call), each
    charged with ``balance`` won."""

    async def make(count: int, balance: int) -> list[int]:
        first = await funded_user(balance)
        mates, group = [first], engine.layout.of(first)
        while len(mates) < count:
            user = await new_user()
            if engine.layout.of(user) is group:
                await engine.charge(user, balance)
                mates.append(user)
        return mates

    return make


@pytest.fixture
def new_product(engine: Engine) -> Callable[..., Awaitable[Product]]:
    """A new product (defaults: 1,000 won, 100 units)."""

    async def make(price: int = 1_000, stock: int = 100, name: str = "widget") -> Product:
        return await engine.create_product(name, price, stock)

    return make


@pytest.fixture
def new_coupon(engine: Engine) -> Callable[..., Awaitable[Coupon]]:
    """A new coupon, valid from an hour ago to an hour from now unless told otherwise."""

    async def make(
        discount_type: str = "FIXED", value: int = 500, quantity: int = 10,
        starts_s: float = -3600, ends_s: float = 3600,
    ) -> Coupon:
        start, end = window(starts_s, ends_s)
        return await engine.create_coupon(
            "test coupon", discount_type, value, quantity, start, end)  # type: ignore[arg-type]

    return make


@pytest.fixture
def issued(
    engine: Engine, new_coupon: Callable[..., Awaitable[Coupon]]
) -> Callable[..., Awaitable[IssuedCoupon]]:
    """A coupon freshly issued to ``user`` (options as ``new_coupon``)."""

    async def make(user: int, **coupon: Any) -> IssuedCoupon:
        made = await new_coupon(**coupon)
        return await engine.issue_coupon(user, made.id)

    return make


@pytest.fixture
def outbox(r: aioredis.Redis) -> Outbox:
    """The engine's outbox stream."""
    return Outbox(r)
