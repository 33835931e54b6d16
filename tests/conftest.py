"""Shared pytest fixtures.

Sections, top to bottom: private servers and settings (this part), then engine / app
fixtures, added by their owners below the marked line. Keep each section self-contained.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse, urlunparse

import pytest

from rushorder.servers import PostgresServer, RedisServer, ServerError, free_port
from rushorder.settings import Settings

# =======================================================================================
# Servers: one private Redis and one private Postgres per test session, on free ports in
# a temp dir, stopped at session end. Set RUSHORDER_TEST_REDIS_URL /
# RUSHORDER_TEST_DATABASE_URL to point the suite at servers of your own instead.
# Like `make up`'s, they are closed to other local users (rushorder/servers.py): Redis asks
# for a password, Postgres for SCRAM ones, so every URL handed out here carries its
# password; a test that connects by host and port alone is refused.
#
# RUSHORDER_TEST_CLUSTER=1 (`make test-cluster`) runs the suite on cluster-enabled Redis
# servers that hold every slot, where keys of two slots in one script or command fail with
# CROSSSLOT. Such a server has database 0 only, so each test folder's database is then a
# server of its own (``redis_databases``), and RQ, which a cluster refuses, gets a plain one.
# =======================================================================================

S = TypeVar("S", RedisServer, PostgresServer)
CLUSTER = os.environ.get("RUSHORDER_TEST_CLUSTER") == "1"

# The fixtures that start a server or hand out one's URL. A test whose fixture closure
# (its fixtures and theirs, down to the leaves) holds one of them is marked ``servers``;
# the others are pure and run in seconds: ``make test-fast`` = ``pytest -m "not servers"``.
# A test that starts servers itself, not through a fixture, says so with the mark. Only
# ``servers`` tests depend on the pass (plain or cluster Redis), so `make test` runs the
# pure ones once and the others in both passes.
SERVER_FIXTURES = frozenset({
    "redis_server", "postgres_server", "redis_url", "database_url",
    "redis_databases", "redis_db", "rq_redis_db", "settings",
    "throwaway_redis_url",  # tests/engine/conftest.py's fallback server
    "redis_cluster",  # asked for by a test that starts a Redis of its own in the pass's mode
})


def needs_servers(item: pytest.Item) -> bool:
    """Whether a collected test uses a server fixture, directly or through another one."""
    return not SERVER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the session's servers ``servers`` (the slow tier)."""
    for item in items:
        if needs_servers(item):
            item.add_marker(pytest.mark.servers)


def with_db(url: str, db: int) -> str:
    """The same server URL pointed at another logical database."""
    return urlunparse(urlparse(url)._replace(path=f"/{db}"))


def _start_on_free_port(make: Callable[[int], S], attempts: int = 3) -> S:
    """Start a server; another process may grab the free port first, so retry."""
    for attempt in range(attempts):
        try:
            return make(free_port()).start()
        except ServerError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def server_root() -> Iterator[Path]:
    """A temp dir for the session's servers; not pytest's, whose parent is mode 0700."""
    root = Path(tempfile.mkdtemp(prefix="rushorder-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(server_root: Path) -> Iterator[RedisServer]:
    """A private Redis (AOF, fsync always, noeviction) for the whole session; in cluster
    mode a cluster-enabled one."""
    server = _start_on_free_port(
        lambda port: RedisServer(server_root / "redis", port, cluster=CLUSTER))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(server_root: Path) -> Iterator[PostgresServer]:
    """A private Postgres with database ``rushorder`` for the whole session."""
    server = _start_on_free_port(lambda port: PostgresServer(server_root / "postgres", port))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """RUSHORDER_TEST_REDIS_URL, else the private server's URL (started only if needed)."""
    return os.environ.get("RUSHORDER_TEST_REDIS_URL") or request.getfixturevalue(
        "redis_server").url


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    """RUSHORDER_TEST_DATABASE_URL, else the private server's ``postgresql://`` URL."""
    return os.environ.get("RUSHORDER_TEST_DATABASE_URL") or request.getfixturevalue(
        "postgres_server").url


class RedisDatabases:
    """The test folders' separate Redis databases, by number. Plain mode: logical database
    ``n`` of the session's Redis. Cluster mode: a cluster-enabled server of its own per
    ``n`` (database 0 is the session's), and RQ's jobs in database ``n`` of one plain Redis."""

    def __init__(self, session_url: str, root: Path) -> None:
        self.session_url = session_url
        self.root = root
        self.cluster = CLUSTER
        self.servers: dict[str, RedisServer] = {}

    def url(self, db: int) -> str:
        """Where database ``db`` is."""
        if not self.cluster:
            return with_db(self.session_url, db)
        if db == 0:
            return self.session_url
        return self._server(f"redis-db{db}", cluster=True).url

    def rq_url(self, db: int) -> str | None:
        """``rq_redis_url`` for database ``db``: None (RQ beside the state) in plain mode."""
        if not self.cluster:
            return None
        return with_db(self._server("redis-rq", cluster=False).url, db)

    def _server(self, name: str, cluster: bool) -> RedisServer:
        """The private server ``name``, started on first use."""
        if name not in self.servers:
            self.servers[name] = _start_on_free_port(
                lambda port: RedisServer(self.root / name, port, cluster=cluster))
        return self.servers[name]

    def stop(self) -> None:
        """Stop every server started here."""
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def redis_databases(redis_url: str, server_root: Path) -> Iterator[RedisDatabases]:
    """Separate Redis databases for the test folders (see :class:`RedisDatabases`)."""
    databases = RedisDatabases(redis_url, server_root)
    yield databases
    databases.stop()


@pytest.fixture(scope="session")
def redis_db(redis_databases: RedisDatabases) -> Callable[[int], str]:
    """The URL of the test folders' separate Redis database ``n``."""
    return redis_databases.url


@pytest.fixture(scope="session")
def rq_redis_db(redis_databases: RedisDatabases) -> Callable[[int], str | None]:
    """``rq_redis_url`` for the tests on database ``n`` (None: RQ sits beside the state)."""
    return redis_databases.rq_url


@pytest.fixture(scope="session")
def redis_cluster() -> bool:
    """The suite runs in cluster mode: a Redis a test starts for state is to be
    ``RedisServer(..., cluster=redis_cluster)``."""
    return CLUSTER


@pytest.fixture
def cluster_only(redis_cluster: bool) -> None:
    """Skip the test unless the suite runs in cluster mode (RUSHORDER_TEST_CLUSTER=1)."""
    if not redis_cluster:
        pytest.skip("cluster mode only: RUSHORDER_TEST_CLUSTER=1 (make test-cluster)")


@pytest.fixture(scope="session")
def settings(redis_url: str, database_url: str, server_root: Path,
             redis_databases: RedisDatabases) -> Settings:
    """Settings pointing at the session's servers; tests derive variants with .replace()."""
    return Settings(redis_url=redis_url, rq_redis_url=redis_databases.rq_url(0),
                    database_url=database_url, data_dir=str(server_root / "data"),
                    http_port=free_port(), platform_port=free_port())


# =======================================================================================
# Engine / app fixtures go below this line.
# =======================================================================================
