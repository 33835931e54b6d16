"""Redis holds the live working set and a recent tail, Postgres the history: once the
writer has committed them and the retention has passed, orders, history lines and used
coupons leave Redis, and every read, list and cancel of them behaves exactly as before."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
from sqlalchemy.engine import Engine as Database

from engine import Engine, keys
from engine.errors import EngineUnavailable, OrderNotCancellable, OrderNotFound
from engine.models import Coupon, NewOption, Page, Product
from engine.outbox import POSTGRES, Outboxes
from engine.outbox.settle import Settled, Settler
from engine.restore import every_group
from persistence.archive import PostgresArchive
from rushorder.audit import audit
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from tests.workers.drain_support import TcpProxy, answers, busy_day
from workers.postgres import PostgresWriter

RETENTION_S = 1.0
L = keys.layout(keys.DEFAULT_GROUPS)  # the engine fixture's
T = TypeVar("T")


@pytest.fixture
def settle(r: redis.Redis, drain: Callable[..., int]) -> Callable[[], Settled]:
    """Write everything to Postgres, wait out the retention, settle what is due."""

    def run() -> Settled:
        drain()
        time.sleep(RETENTION_S + 0.1)
        return Settler(r, RETENTION_S, L).settle_all()

    return run


def order_keys(r: redis.Redis) -> list[bytes]:
    """Every order hash Redis holds."""
    return list(r.scan_iter(match=every_group(keys.Group.order)))


async def test_settled_orders_read_list_and_answer_exactly_as_before(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    items = await products(4, stock=500)
    coupons = [await coupon(quantity=20, kind="PERCENT", value=10), await coupon(quantity=20)]
    users = await busy_day(engine, items, coupons)
    before = await answers(engine, users, items, coupons)

    done = settle()
    assert done.orders == 16 and done.lines > 16 and done.coupons == 6  # 8 used, 2 given back
    assert order_keys(r) == [] and r.llen(L.of(users[0]).user_orders(users[0])) == 0
    assert r.llen(L.of(users[0]).history(users[0])) == 0
    assert await answers(engine, users, items, coupons) == before


async def test_a_settled_order_cancels_once_with_stock_money_and_coupon_back(
    engine: Engine, r: redis.Redis, db: Database, settle: Callable[[], Settled],
    drain: Callable[..., int], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    (user,) = await funded_users(1, 10_000)
    (item,) = await products(1, stock=10)
    issued = await engine.issue_coupon(user, (await coupon(value=300)).id)
    placed = await engine.place_order(user, [(item.id, 2)], issued.id)
    settle()
    assert not r.exists(L.owner(int(placed.id)).order(placed.id))
    assert not r.exists(L.owner(issued.id).issued_coupon(issued.id))

    cancels = await asyncio.gather(*(engine.cancel_order(user, placed.id) for _ in range(3)),
                                   return_exceptions=True)
    done = [c for c in cancels if not isinstance(c, BaseException)]
    assert len(done) == 1 and done[0].status == "CANCELLED", cancels
    assert all(isinstance(c, OrderNotCancellable) for c in cancels if c not in done)
    assert (await engine.product(item.id)).stock == 10
    assert (await engine.balance(user)).balance == 10_000
    mine = (await engine.user_coupons(user)).items
    assert [(c.id, c.status) for c in mine] == [(issued.id, "AVAILABLE")]
    again = await engine.place_order(user, [(item.id, 1)], issued.id)  # usable again
    assert again.discount_amount == 300

    drain()
    settle()
    cancelled = await engine.order(user, placed.id)  # from Postgres again, as cancelled
    assert cancelled == done[0]
    with pytest.raises(OrderNotCancellable):
        await engine.cancel_order(user, placed.id)
    assert (await engine.balance(user)).balance == 10_000 - again.paid_amount


async def test_pages_across_the_seam_have_no_gap_and_no_duplicate(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    user, other = await funded_users(2, 1_000_000)
    (item,) = await products(1)
    for n in range(23):
        await engine.place_order(user if n % 3 else other, [(item.id, 1)])
        await engine.issue_coupon(user, (await coupon(quantity=5)).id)
    used = (await engine.user_coupons(user, limit=100)).items
    for issued in used[::2]:  # some used (settle drops them), some kept
        await engine.place_order(user, [(item.id, 1)], issued.id)
    settle()
    for _ in range(9):  # a tail newer than the seam
        await engine.place_order(user, [(item.id, 1)])
        await engine.issue_coupon(user, (await coupon(quantity=5)).id)
    assert r.llen(L.of(user).user_orders(user)) == 9

    orders = await full_list(lambda limit, cursor: engine.orders(user, limit, cursor))
    lines = await full_list(lambda limit, cursor: engine.history(user, limit, cursor))
    held = await full_list(lambda limit, cursor: engine.user_coupons(user, limit, cursor))
    for size in (1, 2, 5, 7, 100):
        assert await full_list(lambda limit, c: engine.orders(user, limit, c), size) == orders
        assert await full_list(lambda limit, c: engine.history(user, limit, c), size) == lines
        assert await full_list(lambda limit, c: engine.user_coupons(user, limit, c),
                               size) == held
    assert len(orders) == 15 + 12 + 9 and len(held) == 23 + 9
    assert len(lines) == 1 + len(orders)  # the charge and one USE line an order
    assert all(o.user_id == user for o in orders)
    assert sum(c.status == "USED" for c in held) == 12


async def full_list(page: Callable[[int, str | None], Awaitable[Page[T]]],
                    size: int = 3) -> list[T]:
    """Every item of a list, page by page; ids strictly falling, none twice."""
    seen: list[T] = []
    cursor: str | None = None
    while True:
        got = await page(size, cursor)
        seen += got.items
        cursor = got.next_cursor
        if cursor is None:
            ids = [int(item.id) for item in seen]  # type: ignore[attr-defined]
            assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
            return seen



async def test_with_postgres_down_the_tail_and_writes_go_on_and_settled_reads_are_503(
    engine: Engine, cuttable: Engine, proxy: TcpProxy, settle: Callable[[], Settled],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (user,) = await funded_users(1, 100_000)
    (item,) = await products(1)
    old = [await engine.place_order(user, [(item.id, 1)]) for _ in range(3)]
    settle()
    new = [await engine.place_order(user, [(item.id, 1)]) for _ in range(3)]
    full = (await cuttable.orders(user, limit=10)).items

    proxy.cut()
    assert (await cuttable.orders(user, limit=2)).items == new[::-1][:2]  # the tail alone
    placed = await cuttable.place_order(user, [(item.id, 1)])  # writes never need Postgres
    cancelled = await cuttable.cancel_order(user, new[0].id)
    for settled_read in (cuttable.orders(user, limit=10), cuttable.order(user, old[0].id),
                         cuttable.cancel_order(user, old[1].id), cuttable.history(user)):
        with pytest.raises(EngineUnavailable):
            await settled_read
    proxy.restore()

    after = (await cuttable.orders(user, limit=10)).items
    assert after == [placed, *[cancelled if o.id == new[0].id else o for o in full]]
    assert (await cuttable.cancel_order(user, old[1].id)).status == "CANCELLED"


class SlowFirst(PostgresArchive):
    """The real archive, whose first order read takes longer than bring_back's window
    (a quarter of the retention): as if Postgres answered late."""

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self.reads = 0

    async def order(self, order_id: int) -> dict[str, object] | None:
        self.reads += 1
        if self.reads == 1:
            await asyncio.sleep(RETENTION_S / 4 + 0.2)
        return await super().order(order_id)


async def test_a_copy_of_a_settled_order_that_comes_too_late_is_read_again(
    engine: Engine, workers_redis_url: str, workers_database_url: str,
    settle: Callable[[], Settled], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (user,) = await funded_users(1, 10_000)
    (item,) = await products(1, stock=10)
    placed = await engine.place_order(user, [(item.id, 1)])
    settle()
    slow = SlowFirst(workers_database_url)
    late = Engine(workers_redis_url, archive=slow)
    try:
        assert (await late.cancel_order(user, placed.id)).status == "CANCELLED"
        assert slow.reads == 2  # the late copy was refused (RETRY), a fresh one taken
    finally:
        await late.close()
        await slow.close()
    assert (await engine.balance(user)).balance == 10_000


async def test_another_users_settled_order_is_not_found_and_not_brought_back(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    owner, stranger = await funded_users(2, 10_000)
    (item,) = await products(1, stock=100)
    placed = await engine.place_order(owner, [(item.id, 1)])
    # The stranger's floor must end above it (ids of two groups are counted apart).
    while int((await engine.place_order(stranger, [(item.id, 1)])).id) < int(placed.id):
        pass
    settle()
    assert int(r.hget(L.of(stranger).floor(stranger), "o") or 0) > int(placed.id)
    for call in (engine.order(stranger, placed.id), engine.cancel_order(stranger, placed.id)):
        with pytest.raises(OrderNotFound):
            await call
    assert not r.exists(L.owner(int(placed.id)).order(placed.id))
    assert (await engine.order(owner, placed.id)) == placed


async def test_a_rebuild_loads_the_working_set_and_the_tail_and_answers_as_before(
    engine: Engine, r: redis.Redis, wsettings: Settings, settle: Callable[[], Settled],
    drain: Callable[..., int], capsys: pytest.CaptureFixture[str],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    items = await products(4, stock=500)
    coupons = [await coupon(quantity=20, kind="PERCENT", value=10), await coupon(quantity=20)]
    users = await busy_day(engine, items, coupons)
    settle()
    time.sleep(1.0)  # the day is over 2 s old
    tail = await engine.place_order(users[0], [(items[0].id, 1)])  # newer than the retention
    before = await answers(engine, users, items, coupons)
    drain()

    r.flushdb()  # Redis lost everything
    retention = time.time() - tail.created_at.timestamp() + 1.0  # the tail, not the day
    assert rebuild(wsettings.replace(redis_retention_s=retention)) == 0
    # Only the tail came back.
    assert order_keys(r) == [L.owner(int(tail.id)).order(tail.id).encode()]
    assert await answers(engine, users, items, coupons) == before
    assert audit(wsettings, wait_s=5) == 0, capsys.readouterr().out

    r.hdel(L.of(users[1]).floor(users[1]), "o")  # Redis forgets that it settled a user's orders
    assert audit(wsettings, wait_s=5) == 1
    assert "order statuses agree" in capsys.readouterr().out


async def test_the_writer_settles_what_it_committed_beside_its_writing(
    engine: Engine, r: redis.Redis, db: Database,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (user,) = await funded_users(1, 100_000)
    (item,) = await products(1)
    placed = [await engine.place_order(user, [(item.id, 1)]) for _ in range(5)]
    outbox = Outboxes(r, POSTGRES, "settling-writer")
    outbox.create_groups()
    writer = PostgresWriter(outbox, db, batch=500, block_ms=100, retention_s=RETENTION_S)
    await asyncio.to_thread(writer.run, time.monotonic() + RETENTION_S + 2, threading.Event())
    assert writer.applied > 0 and order_keys(r) == []  # settled by the writer's own settler
    assert (await engine.orders(user, limit=10)).items == placed[::-1]


async def test_a_settled_order_of_options_reads_as_before_and_its_cancel_gives_back_the_sizes(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    (user,) = await funded_users(1, 1_000_000)
    drop = await engine.create_product("sneaker", 90_000, options=[
        NewOption(name="260", stock=10), NewOption(name="270", extra_price=5_000, stock=10)],
        max_per_user=5)
    small, large = (o.id for o in drop.options)
    placed = await engine.place_order(user, [(drop.id, 2, small), (drop.id, 1, large)])
    settle()
    assert not r.exists(L.owner(int(placed.id)).order(placed.id))

    assert await engine.order(user, placed.id) == placed  # option_id and name from Postgres
    assert (await engine.orders(user)).items == [placed]
    await engine.cancel_order(user, placed.id)  # brought back, each size given back

    sizes = (await engine.product(drop.id)).options
    assert [(o.id, o.stock) for o in sizes] == [(small, 10), (large, 10)]
    assert r.hgetall(L.of(user).bought(user)) == {}  # and the allowance
