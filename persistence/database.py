"""Connections to Postgres: psycopg 3 under SQLAlchemy's connection pool.

Nothing here connects at import time; call :func:`create_engine` in the process that will
use it (a worker builds its own after RQ has forked).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.pq import PipelineStatus, TransactionStatus
from sqlalchemy.engine import Connection, Engine

# A transaction left open this long is a stalled worker: Postgres ends its session, which
# rolls the batch back and frees the outbox lock for another worker.
IDLE_IN_TRANSACTION_MS = 60_000


def sqlalchemy_url(database_url: str) -> str:
    """``postgresql://``, ``postgres://`` or another driver's URL, for psycopg 3."""
    return re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql+psycopg://", database_url)


def create_engine(database_url: str, pool_size: int = 2) -> Engine:
    """A pooled engine; connections are checked before use, so a restarted Postgres heals."""
    return sa.create_engine(
        sqlalchemy_url(database_url),
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 5,
            "options": f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}",
            # A server gone silent (a cut network, not a refused connection) is noticed in
            # ~25 s instead of blocking a worker forever.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )


def driver(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one (same session, same transaction)."""
    return conn.connection.driver_connection  # type: ignore[return-value]


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """Send the statements executed inside as one psycopg pipeline: one round trip for all
    of them (their results, and any error, arrive when the block ends; reading a result
    inside costs a round trip of its own). Inside a pipeline already, it adds nothing."""
    psycopg_conn = driver(conn)
    if psycopg_conn.pgconn.pipeline_status != PipelineStatus.OFF:
        yield
        return
    with psycopg_conn.pipeline():
        yield


def autocommit(conn: Connection) -> Connection:
    """The connection with the driver in autocommit mode, for :func:`transaction` (the pool
    resets it when the connection goes back). Not inside a transaction."""
    return conn.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """One transaction in one round trip: BEGIN, the statements executed inside and COMMIT
    go as one pipeline. On any error (a statement's arrives when the block ends) the
    transaction is rolled back and the error raised. For a connection in autocommit mode
    (:func:`autocommit`): psycopg would otherwise open each transaction with a BEGIN of its
    own and wait for its answer, and SQLAlchemy's COMMIT would wait for another."""
    psycopg_conn = driver(conn)
    try:
        with psycopg_conn.pipeline():
            psycopg_conn.execute(b"BEGIN")
            yield
            psycopg_conn.execute(b"COMMIT")
    except BaseException:
        if psycopg_conn.info.transaction_status != TransactionStatus.IDLE:
            with suppress(psycopg.Error):  # a broken connection: the caller's error tells
                psycopg_conn.execute(b"ROLLBACK")
        raise
