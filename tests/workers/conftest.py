"""Fixtures of the workers' tests: real Redis, real Postgres, real worker processes.

They run on the session's servers (``redis_url``/``database_url`` of tests/conftest.py)
but apart from the other test folders: Redis logical DB 3 (in cluster mode a server of its
own, and RQ's jobs on a plain one) and the Postgres database ``rushorder_workers_test``.
Rebuild and audit look at the whole state, so each test starts from empty ones (all are
this folder's own).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
import redis
import sqlalchemy as sa
from fakeredis import FakeStrictRedis
from psycopg import sql
from sqlalchemy.engine import Engine as Database

from engine import Engine, state
from engine.models import Coupon, Product
from engine.outbox import POSTGRES, Outboxes
from persistence.archive import PostgresArchive
from persistence.database import create_engine
from persistence.migrate import upgrade
from rushorder.servers import free_port
from rushorder.settings import Settings
from tests.workers.drain_support import CART_TABLES, TABLES, Platform, Process, TcpProxy
from workers.postgres import LINGER_MS, PostgresWriter

WORKERS_DB = 3  # engine tests use 1, API tests 2
WORKERS_DATABASE = "rushorder_workers_test"


def with_path(url: str, path: str) -> str:
    """The same server URL with another path (Redis DB number, Postgres database)."""
    return urlunparse(urlparse(url)._replace(path=path))


@pytest.fixture(scope="session")
def workers_redis_url(redis_db: Callable[[int], str]) -> str:
    """Logical DB 3 of the session's Redis."""
    return redis_db(WORKERS_DB)


@pytest.fixture(scope="session")
def workers_rq_url(rq_redis_db: Callable[[int], str | None]) -> str | None:
    """Where the workers' RQ jobs go: None (DB 3 too) but in cluster mode."""
    return rq_redis_db(WORKERS_DB)


@pytest.fixture(scope="session")
def workers_database_url(database_url: str) -> str:
    """Our own database on the session's Postgres, created and migrated once."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (WORKERS_DATABASE,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(WORKERS_DATABASE)))
    url = with_path(database_url, f"/{WORKERS_DATABASE}")
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def wsettings(settings: Settings, workers_redis_url: str, workers_rq_url: str | None,
              workers_database_url: str) -> Settings:
    """Settings on our DBs, tuned for tests: quick takeovers, short platform timeouts."""
    return settings.replace(
        redis_url=workers_redis_url, rq_redis_url=workers_rq_url,
        database_url=workers_database_url,
        platform_port=free_port(), outbox_reclaim_idle_ms=1500, platform_timeout_s=0.5,
        platform_max_attempts=4, outbox_batch=500, worker_metrics_port=0)


@pytest.fixture(scope="session")
def db(workers_database_url: str) -> Iterator[Database]:
    """A Postgres engine on our database, to look at what the workers wrote."""
    engine = create_engine(workers_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def r(workers_redis_url: str) -> Iterator[redis.Redis]:
    """A plain Redis client on our DB (bytes)."""
    client = redis.Redis.from_url(workers_redis_url)
    yield client
    client.close()


@pytest.fixture
def rq(wsettings: Settings) -> Iterator[redis.Redis]:
    """A plain client on where RQ keeps our jobs (``r``'s DB but in cluster mode)."""
    assert wsettings.rq_url is not None
    client = redis.Redis.from_url(wsettings.rq_url)
    yield client
    client.close()


@pytest.fixture
def fake_rq() -> Iterator[FakeStrictRedis]:
    """An in-memory Redis for RQ's plumbing alone (queues, jobs, registries), as RQ's own
    testing docs do: no server, so such a test is pure. Never for the engine, whose scripts
    need a real Redis (cjson, cluster slots, WAIT)."""
    client = FakeStrictRedis()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def empty_state(request: pytest.FixtureRequest) -> None:
    """Each test on servers starts with empty Redis DB 3 holding live state, no RQ jobs, and
    empty tables (an empty shop, as a first start makes it). A pure test (no ``servers``
    mark) has nothing to clean, and asking for the clients here would start the servers."""
    if request.node.get_closest_marker("servers") is None:
        return
    r: redis.Redis = request.getfixturevalue("r")
    rq: redis.Redis = request.getfixturevalue("rq")
    db: Database = request.getfixturevalue("db")
    r.flushdb()
    rq.flushdb()
    state.mark(r, "tests")
    with db.begin() as conn:
        conn.execute(sa.text(
            f"TRUNCATE {', '.join((*TABLES, 'outbox_set_aside', *CART_TABLES))}"))


@pytest.fixture
async def engine(workers_redis_url: str, workers_database_url: str) -> AsyncIterator[Engine]:
    """A fresh engine on our Redis DB, reading what Redis settled from our Postgres."""
    eng = Engine(workers_redis_url, archive=PostgresArchive(workers_database_url))
    await eng.load()
    yield eng
    await eng.close()
    await eng.archive.close()


@pytest.fixture
def funded_users(engine: Engine) -> Callable[[int, int], Awaitable[list[int]]]:
    """``n`` users (ids 1..n) with ``balance`` won each."""

    async def make(n: int, balance: int = 1_000_000) -> list[int]:
        for user in range(1, n + 1):
            await engine.charge(user, balance)
        return list(range(1, n + 1))

    return make


@pytest.fixture
def products(engine: Engine) -> Callable[..., Awaitable[list[Product]]]:
    """``n`` products (1,000 won; ``stock`` units each)."""

    async def make(n: int, stock: int = 1_000_000) -> list[Product]:
        return [await engine.create_product(f"product {i}", 1_000, stock) for i in range(n)]

    return make


@pytest.fixture
def coupon(engine: Engine) -> Callable[..., Awaitable[Coupon]]:
    """A coupon valid from an hour ago to an hour from now."""

    async def make(quantity: int = 10, kind: str = "FIXED", value: int = 300) -> Coupon:
        now = datetime.now(UTC)
        return await engine.create_coupon("test coupon", kind, value, quantity,  # type: ignore[arg-type]
                                          now - timedelta(hours=1), now + timedelta(hours=1))

    return make


@pytest.fixture
def writer(r: redis.Redis, db: Database) -> Callable[..., PostgresWriter]:
    """An in-process Postgres writer (consumer ``name``) on our DBs."""

    def make(name: str = "test-writer", reclaim_idle_ms: int = 1500,
             linger_ms: int = LINGER_MS) -> PostgresWriter:
        outbox = Outboxes(r, POSTGRES, name)
        outbox.create_groups()
        return PostgresWriter(outbox, db, batch=500, reclaim_idle_ms=reclaim_idle_ms,
                              block_ms=100, linger_ms=linger_ms)

    return make


@pytest.fixture
def drain(writer: Callable[..., PostgresWriter], r: redis.Redis) -> Callable[..., int]:
    """Apply the whole outbox to Postgres in-process; entries applied."""

    def run(timeout_s: float = 30.0) -> int:
        w = writer("drain")
        deadline = time.monotonic() + timeout_s
        while w.outbox.backlog() and time.monotonic() < deadline:
            w.run(time.monotonic() + 0.5, threading.Event())
        assert not w.outbox.backlog(), "the outbox did not drain"
        return w.applied

    return run


@pytest.fixture
def spawn(wsettings: Settings, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start child processes (``python -m module args``); all stopped at the end."""
    started: list[Process] = []

    def make(module: str, *args: str, settings: Settings | None = None) -> Process:
        log = tmp_path / f"{module}-{'-'.join(args) or 'all'}-{len(started)}.log"
        process = Process(settings or wsettings, log, module, *args).start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture
def worker(spawn: Callable[..., Process]) -> Callable[..., Process]:
    """Start one worker process for a group (``postgres`` or ``platform``)."""

    def make(group: str = POSTGRES, settings: Settings | None = None) -> Process:
        return spawn("workers.main", group, settings=settings)

    return make


@pytest.fixture
def platform(wsettings: Settings, tmp_path: Path) -> Iterator[Platform]:
    """The mock data platform, running and answering."""
    mock = Platform(wsettings, tmp_path / "platform.log").start()
    yield mock
    mock.process.stop()


@pytest.fixture
def proxy(workers_database_url: str) -> Iterator[TcpProxy]:
    """A cuttable way to Postgres."""
    port = int(workers_database_url.rsplit(":", 1)[1].split("/", 1)[0])
    cut = TcpProxy(port)
    yield cut
    cut.cut()


@pytest.fixture
async def cuttable(workers_redis_url: str, workers_database_url: str,
                   proxy: TcpProxy) -> AsyncIterator[Engine]:
    """An engine whose way to the durable record can be cut."""
    via = workers_database_url.replace(
        workers_database_url.rsplit("@", 1)[1].split("/", 1)[0], f"127.0.0.1:{proxy.port}")
    eng = Engine(workers_redis_url, archive=PostgresArchive(via))
    yield eng
    await eng.close()
    await eng.archive.close()
