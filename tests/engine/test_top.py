"""Top 5: units sold in paid, not cancelled orders over the current hour and the 71 before it.

The ranking is global, so every test here starts with FLUSHDB on the engine's own DB
(support.flush_db, which keeps the user-id counter).
Old hours are simulated by writing hour buckets ({ro}:sales:h:<hour>) and the window
bookkeeping ({ro}:sales:window, {ro}:sales:rolled) directly, as the scripts leave them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from engine import Engine
from tests.engine.support import flush_db


@pytest.fixture(autouse=True)
async def clean_window(r: aioredis.Redis) -> None:
    """Sales are global: start from an empty database."""
    await flush_db(r)


async def redis_hour(r: aioredis.Redis) -> int:
    """The current UTC hour on Redis' clock, as the scripts count it."""
    seconds, _ = await r.time()
    return seconds // 3600


async def sell(engine: Engine, user: int, product_id: int, quantity: int) -> str:
    """One paid order of ``quantity`` units; answers its id."""
    return (await engine.place_order(user, [(product_id, quantity)])).id


def ranking(top) -> list[tuple[int, int, int]]:
    return [(t.rank, t.product_id, t.sold_quantity) for t in top.items]


async def test_top_is_empty_when_nothing_sold(engine) -> None:
    top = await engine.top()
    assert top.items == []


async def test_top_ranks_the_five_best_sellers_by_units(engine, funded_user, new_product) -> None:
    user = await funded_user(1_000_000)
    products = [await new_product(price=10, stock=1_000) for _ in range(7)]
    for units, p in zip([5, 1, 7, 3, 9, 2, 4], products, strict=True):
        await sell(engine, user, p.id, units)
    top = await engine.top()
    assert ranking(top) == [
        (1, products[4].id, 9), (2, products[2].id, 7), (3, products[0].id, 5),
        (4, products[6].id, 4), (5, products[3].id, 3)]


async def test_top_sums_units_over_orders_and_lines(engine, funded_user, new_product) -> None:
    user = await funded_user(1_000_000)
    a, b = await new_product(price=10), await new_product(price=10)
    await engine.place_order(user, [(a.id, 2), (b.id, 3)])
    await engine.place_order(user, [(a.id, 4)])
    assert ranking(await engine.top()) == [(1, a.id, 6), (2, b.id, 3)]


async def test_top_breaks_ties_by_smaller_product_id(engine, funded_user, new_product) -> None:
    user = await funded_user(1_000_000)
    # Ids 1..12: 9, 10, 11 and 12 tie, and as strings "10" < "9" — the numeric id must win.
    products = [await new_product(price=10) for _ in range(12)]
    for p in products[8:]:
        await sell(engine, user, p.id, 5)
    await sell(engine, user, products[0].id, 6)
    await sell(engine, user, products[1].id, 5)
    top = await engine.top()
    assert [t.product_id for t in top.items] == [1, 2, 9, 10, 11]
    assert [t.sold_quantity for t in top.items] == [6, 5, 5, 5, 5]


async def test_top_shows_each_products_current_name_and_price(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=10, name="old")
    await sell(engine, user, made.id, 1)
    await engine.update_product(made.id, name="new", price=20)
    [item] = (await engine.top()).items
    assert (item.name, item.price) == ("new", 20)


async def test_top_items_carry_live_stock(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(price=10, stock=30)
    await sell(engine, user, made.id, 4)
    await engine.update_product(made.id, stock_delta=-6)
    [item] = (await engine.top()).items
    assert (item.sold_quantity, item.stock) == (4, 20)


async def test_cancelled_order_is_uncounted(engine, funded_user, new_product) -> None:
    user = await funded_user(1_000_000)
    a, b = await new_product(price=10), await new_product(price=10)
    await sell(engine, user, a.id, 3)
    gone = await sell(engine, user, b.id, 5)
    await sell(engine, user, b.id, 1)
    await engine.cancel_order(user, gone)
    assert ranking(await engine.top()) == [(1, a.id, 3), (2, b.id, 1)]


async def test_fully_cancelled_product_leaves_the_top(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(price=10)
    await engine.cancel_order(user, await sell(engine, user, made.id, 2))
    assert (await engine.top()).items == []


async def test_window_runs_from_the_start_of_the_hour_71_hours_ago_until_now(engine, r) -> None:
    hour = await redis_hour(r)
    top = await engine.top()
    assert top.window_start == datetime.fromtimestamp((hour - 71) * 3600, UTC)
    assert abs(top.window_end.timestamp() - datetime.now(UTC).timestamp()) < 5


async def test_only_the_last_72_hour_buckets_count(engine, r, funded_user, new_product) -> None:
    user = await funded_user(10_000)
    g = engine.layout.of(user)  # the buyer's group: its counters are rolled by its sale
    old, edge, fresh = [await new_product(price=10) for _ in range(3)]
    hour = await redis_hour(r)
    # As the scripts would have left it an hour ago: two buckets in the window.
    await r.zadd(g.sales_hour(hour - 72), {str(old.id): 100})
    await r.zadd(g.sales_hour(hour - 71), {str(edge.id): 50})
    await r.zadd(g.sales_window, {str(old.id): 100, str(edge.id): 50})
    await r.set(g.sales_rolled, hour - 73)
    await sell(engine, user, fresh.id, 7)
    assert ranking(await engine.top()) == [(1, edge.id, 50), (2, fresh.id, 7)]
    assert not await r.exists(g.sales_hour(hour - 72))
    assert await r.exists(g.sales_hour(hour - 71))


async def test_buckets_roll_off_even_after_days_without_sales(engine, r, new_product) -> None:
    made = await new_product(price=10)
    g = engine.layout.all[-1]  # top() rolls every group's window
    hour = await redis_hour(r)
    await r.zadd(g.sales_hour(hour - 200), {str(made.id): 9})
    await r.zadd(g.sales_window, {str(made.id): 9})
    await r.set(g.sales_rolled, hour - 201)
    assert (await engine.top()).items == []
    assert await r.zcard(g.sales_window) == 0


async def test_cancel_of_an_order_from_a_rolled_off_hour_uncounts_nothing(
    engine, r, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=10)
    g = engine.layout.of(user)
    hour = await redis_hour(r)
    await sell(engine, user, made.id, 3)
    old = await sell(engine, user, made.id, 2)
    # Pretend `old` was placed 72 hours ago: its 2 units have already left the window.
    await r.hset(g.order(old), "hour", hour - 72)
    await r.zincrby(g.sales_hour(hour), -2, str(made.id))
    await r.zincrby(g.sales_window, -2, str(made.id))
    await engine.cancel_order(user, old)
    assert ranking(await engine.top()) == [(1, made.id, 3)]
    assert (await engine.product(made.id)).stock == 100 - 3


async def test_a_product_in_no_groups_head_still_tops_the_sum_of_the_groups(
    engine, funded_user, new_product
) -> None:
    # One buyer per group; each group's head (2 x top size) holds only its own ten best
    # sellers, so the product every group sold a little of is in no head at first.
    buyers: dict[int, int] = {}
    while len(buyers) < engine.layout.groups:
        user = await funded_user(1_000_000)
        buyers.setdefault(engine.layout.of(user).index, user)
    everywhere = await new_product(price=10)
    for user in buyers.values():
        for _ in range(2 * engine.policy.top_size):
            await sell(engine, user, (await new_product(price=10)).id, 4)
        await sell(engine, user, everywhere.id, 3)
    top = ranking(await engine.top())
    assert top[0] == (1, everywhere.id, 3 * engine.layout.groups)
    assert [sold for *_, sold in top[1:]] == [4] * (engine.policy.top_size - 1)
