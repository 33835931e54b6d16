"""Real worker processes: killed mid-batch, Postgres away, RQ jobs lost or doubled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse, urlunparse

import redis
from sqlalchemy.engine import Engine as Database

from engine import Engine
from engine.models import Product
from engine.outbox import POSTGRES, Outboxes
from rushorder.settings import Settings
from tests.workers.drain_support import Process, TcpProxy, counts, scalar, wait_for


async def place(engine: Engine, users: list[int], items: list[Product], rounds: int) -> float:
    """``rounds`` orders per user, two lines each; the slowest answer, in seconds."""
    slowest = 0.0

    async def one(user: int, n: int) -> None:
        nonlocal slowest
        started = time.monotonic()
        await engine.place_order(user, [(items[n % len(items)].id, 1),
                                        (items[(n + 1) % len(items)].id, 2)])
        slowest = max(slowest, time.monotonic() - started)

    for n in range(rounds):
        await asyncio.gather(*(one(user, n) for user in users))
    return slowest


def drained(r: redis.Redis, db: Database, orders: int) -> bool:
    """The outbox is empty for Postgres and every order is there."""
    return not Outboxes(r, POSTGRES, "probe").backlog() and counts(db)["orders"] == orders


async def assert_postgres_matches(engine: Engine, db: Database, users: list[int],
                                  items: list[Product], orders: int) -> None:
    """Every order once, with its two lines and payment; balances and stock as in Redis."""
    rows = counts(db)
    assert (rows["orders"], rows["payments"], rows["order_lines"]) == (orders, orders, 2 * orders)
    assert rows["balance_history"] == orders + len(users)  # a USE each, plus the charges
    assert scalar(db, "SELECT count(DISTINCT id) FROM orders") == orders
    for user in users:
        assert scalar(db, "SELECT balance FROM users WHERE id = :u",
                      u=user) == (await engine.balance(user)).balance
    for p in items:
        assert scalar(db, "SELECT stock FROM products WHERE id = :p",
                      p=p.id) == (await engine.product(p.id)).stock


async def test_a_worker_killed_mid_batch_restarts_and_every_order_lands_exactly_once(
    engine: Engine, db: Database, r: redis.Redis, worker: Callable[..., Process],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, items = await funded_users(200), await products(3)
    await place(engine, users, items, rounds=40)  # 8,000 orders waiting
    outbox = Outboxes(r, POSTGRES, "probe")

    killed_mid_batch = False
    for _ in range(5):
        first = worker(POSTGRES)
        wait_for(lambda: counts(db)["orders"] > 0 and outbox.pending(), 30, 0.01,
                 "the worker to be busy")
        first.kill()
        if outbox.pending():  # it died holding a batch it had not acknowledged
            killed_mid_batch = True
            break
    assert killed_mid_batch
    assert counts(db)["orders"] < 8_000

    worker(POSTGRES)
    wait_for(lambda: drained(r, db, 8_000), 60, what="the backlog to drain")
    await assert_postgres_matches(engine, db, users, items, 8_000)


async def test_orders_go_on_while_postgres_is_down_and_the_backlog_drains_after(
    engine: Engine, db: Database, r: redis.Redis, wsettings: Settings,
    worker: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    assert wsettings.database_url
    url = urlparse(wsettings.database_url)
    proxy = TcpProxy(url.port or 5432)
    via_proxy = wsettings.replace(database_url=urlunparse(
        url._replace(netloc=url.netloc.replace(f":{url.port}", f":{proxy.port}"))))
    users, items = await funded_users(50), await products(2)
    worker(POSTGRES, settings=via_proxy)
    await place(engine, users, items, rounds=2)
    wait_for(lambda: drained(r, db, 100), 30, what="the first orders")

    proxy.cut()
    slowest = await place(engine, users, items, rounds=20)  # 1,000 orders, Postgres away
    await asyncio.sleep(2)  # the worker fails, backs off, retries
    assert counts(db)["orders"] == 100
    assert slowest < 1.0

    proxy.restore()
    wait_for(lambda: drained(r, db, 1_100), 60, what="the backlog to drain")
    await assert_postgres_matches(engine, db, users, items, 1_100)
    proxy.cut()


async def test_draining_needs_no_enqueued_job_and_survives_lost_and_doubled_jobs(
    engine: Engine, db: Database, r: redis.Redis, rq: redis.Redis,
    worker: Callable[..., Process],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, items = await funded_users(20), await products(2)
    first = worker(POSTGRES)  # nothing was enqueued: the worker queues its own job
    await place(engine, users, items, rounds=5)
    wait_for(lambda: drained(r, db, 100), 30, what="the first orders")

    first.kill()  # its job dies with it, and RQ forgets everything it knew
    for key in rq.scan_iter(match="rq:*"):
        rq.delete(key)
    await place(engine, users, items, rounds=5)
    worker(POSTGRES)
    worker(POSTGRES)  # two at once: each runs a drain job, they take turns
    await place(engine, users, items, rounds=5)
    wait_for(lambda: drained(r, db, 300), 60, what="every order")
    await assert_postgres_matches(engine, db, users, items, 300)
