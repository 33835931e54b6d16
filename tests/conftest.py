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

import pytest

from rushorder.servers import PostgresServer, RedisServer, ServerError, free_port
from rushorder.settings import Settings

# =======================================================================================
# Servers: one private Redis and one private Postgres per test session, on free ports in
# a temp dir, stopped at session end. Set RUSHORDER_TEST_REDIS_URL /
# RUSHORDER_TEST_DATABASE_URL to point the suite at servers of your own instead.
# =======================================================================================

S = TypeVar("S", RedisServer, PostgresServer)


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
    """A private Redis (AOF, fsync always, noeviction) for the whole session."""
    server = _start_on_free_port(lambda port: RedisServer(server_root / "redis", port))
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


@pytest.fixture(scope="session")
def settings(redis_url: str, database_url: str, server_root: Path) -> Settings:
    """Settings pointing at the session's servers; tests derive variants with .replace()."""
    return Settings(redis_url=redis_url, database_url=database_url,
                    data_dir=str(server_root / "data"), http_port=free_port(),
                    platform_port=free_port())


# =======================================================================================
# Engine / app fixtures go below this line.
# =======================================================================================
