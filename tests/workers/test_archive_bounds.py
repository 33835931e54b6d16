"""Reads that reach the durable record never show its internals (issue 25): a cursor past
Postgres' bigint is refused before any query, the archive reads ids past bigint as absent
instead of failing in SQL, and a failing read is a 503 whose words name no SQL and no host
(those go to the log)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from engine import Engine, keys, limits
from engine.archive import Reader
from engine.errors import EngineUnavailable, ValidationFailed
from engine.models import Product
from engine.outbox.settle import Settler
from persistence.archive import BIGINT_MAX, PostgresArchive

RETENTION_S = 1.0
L = keys.layout(keys.DEFAULT_GROUPS)  # the engine fixture's


async def test_a_cursor_past_bigint_on_settled_orders_is_400_not_an_sql_error(
    engine: Engine, r: redis.Redis, drain: Callable[..., int],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (user,) = await funded_users(1, 100_000)
    (item,) = await products(1)
    placed = [await engine.place_order(user, [(item.id, 1)]) for _ in range(3)]
    drain()
    time.sleep(RETENTION_S + 0.1)
    assert Settler(r, RETENTION_S, L).settle_all().orders == 3  # only Postgres has them now
    for cursor in (str(BIGINT_MAX + 1), str(limits.MAX_ID + 1)):
        with pytest.raises(ValidationFailed) as refused:
            await engine.orders(user, 5, cursor)
        assert refused.value.context.get("field") == "cursor"
    page = await engine.orders(user, 5, str(limits.MAX_ID))
    assert [o.id for o in page.items] == [o.id for o in reversed(placed)]


async def test_the_archive_reads_ids_past_bigint_as_absent(workers_database_url: str) -> None:
    archive = PostgresArchive(workers_database_url)
    try:
        assert await archive.order(BIGINT_MAX + 1) is None
        assert await archive.issued_coupon(2**70) is None
        assert await archive.orders(1, [BIGINT_MAX + 1]) == []
        assert await archive.orders_below(1, 2**70, 5) == []
        assert await archive.history_below(1, BIGINT_MAX + 1, 5) == []
    finally:
        await archive.close()


class Failing:
    """An archive whose every read fails as SQLAlchemy reports a refused statement."""

    unavailable: tuple[type[BaseException], ...] = (RuntimeError,)

    async def orders_below(self, *args: Any) -> Any:
        raise RuntimeError('(psycopg.errors.NumericValueOutOfRange) bigint out of range '
                           '[SQL: SELECT orders.id, orders.user_id FROM orders WHERE '
                           'orders.id < %(id_1)s] (connection to db.internal:5432)')

    async def close(self) -> None:
        """Nothing to close."""


async def test_a_failing_archive_read_is_a_503_naming_no_sql_and_no_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = Reader(Failing())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING), pytest.raises(EngineUnavailable) as failed:
        await reader.orders_below(1, None, 5)
    words = failed.value.detail
    assert "SQL" not in words and "SELECT" not in words and "bigint" not in words
    assert "db.internal" not in words and "retry" in words
    assert "SELECT orders.id" in caplog.text  # the operator still reads what happened
