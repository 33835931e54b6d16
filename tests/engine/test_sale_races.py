"""Issue 27's flash sale under real concurrency: 4 OS processes, each with its own Engine
and loop, all firing at once (races.py). A drop of 10 options sells exactly its units, a
limit of one a customer holds across processes, and the sale's opening and its
suspension hold to the instant Redis decides them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import redis

from engine import Engine
from engine.models import NewOption, Product
from engine.outbox.events import OrderPaid
from engine.restore import Snapshot
from tests.engine.races import race, race_mixed
from tests.engine.support import Outbox

SIZES = 10


async def a_drop(engine: Engine, units: int, **sale: object) -> Product:
    """A product of SIZES options (sizes 260, 270, ...) of ``units`` units each."""
    return await engine.create_product(
        "sneaker drop", 1_000, options=[NewOption(name=str(260 + 10 * i), stock=units)
                                        for i in range(SIZES)], **sale)  # type: ignore[arg-type]


async def buyers_in_every_group(engine: Engine, new_user: Callable[[], Awaitable[int]],
                                count: int, balance: int) -> list[int]:
    """``count`` new users, charged, spanning every user group."""
    buyers = [await new_user() for _ in range(count)]
    assert {engine.layout.of(b) for b in buyers} == set(engine.layout.all)
    await asyncio.gather(*(engine.charge(b, balance) for b in buyers))
    return buyers


async def test_800_buyers_of_10_options_of_50_units_sell_exactly_500_50_of_each(
    engine: Engine, engine_redis_url: str, new_user, outbox: Outbox, r
) -> None:
    """Each option is a reserve and 4 allotments of its own (~6 units a group): the
    refills and pull-backs between them race, and nothing is oversold or left behind."""
    drop = await a_drop(engine, 50)
    options = [o.id for o in drop.options]
    buyers = await buyers_in_every_group(engine, new_user, 800, 10_000)
    mark = await outbox.mark()
    calls = [(b, drop.id, 1, options[i % SIZES]) for i, b in enumerate(buyers)]

    outcomes = await asyncio.to_thread(race, engine_redis_url, "order", calls)

    assert Counter(code for code, _ in outcomes) == {"OK": 500, "OUT_OF_STOCK": 300}
    sold = Counter(call[3] for call, (code, _) in zip(calls, outcomes, strict=True)
                   if code == "OK")
    assert sold == dict.fromkeys(options, 50)
    after = await engine.product(drop.id)
    assert after.stock == 0 and all(o.stock == 0 and o.sold_out for o in after.options)
    await engine.allotments.sweep(older_than_ms=0)  # nothing should be left to deliver
    with redis.Redis.from_url(engine_redis_url) as client:
        snap = Snapshot(client, engine.layout)
        assert [snap.option_stock()[o] for o in options] == [0] * SIZES
        assert snap.stock()[drop.id] == 0
        bought = snap.bought()
    winners = [call[0] for call, (code, _) in zip(calls, outcomes, strict=True) if code == "OK"]
    assert all(bought[w] == {drop.id: 1} for w in winners)
    balances = await asyncio.gather(*(engine.balance(b) for b in buyers))
    assert sum(b.balance for b in balances) + 500 * 1_000 == 800 * 10_000
    paid = [line.option_id for e in await outbox.since(mark) if isinstance(e, OrderPaid)
            for line in e.order.items if line.product_id == drop.id]
    assert Counter(paid) == dict.fromkeys(options, 50)
    for slot in [engine.allotments.reserve, *engine.allotments.slots]:
        records = (await r.hgetall(slot.transfers_out)).values()
        assert not [v for v in records if v.split()[0] == b"o"
                    and int(v.split()[1]) in options]


async def test_a_limit_of_one_against_50_orders_of_one_user_from_4_processes_buys_one(
    engine: Engine, engine_redis_url: str, funded_user
) -> None:
    """The orders ask for different options of the product: the limit counts them all."""
    drop = await a_drop(engine, 100, max_per_user=1)
    user = await funded_user(100_000)
    calls = [(user, drop.id, 1, drop.options[i % SIZES].id) for i in range(50)]

    outcomes = await asyncio.to_thread(race, engine_redis_url, "order", calls)

    assert Counter(code for code, _ in outcomes) == {"OK": 1, "PURCHASE_LIMIT_EXCEEDED": 49}
    assert (await engine.product(drop.id)).stock == SIZES * 100 - 1
    assert (await engine.balance(user)).balance == 100_000 - 1_000
    (order,) = (await engine.orders(user)).items
    await engine.cancel_order(user, order.id)  # the allowance comes back, once
    again = await asyncio.to_thread(race, engine_redis_url, "order", calls[:8])
    assert Counter(code for code, _ in again) == {"OK": 1, "PURCHASE_LIMIT_EXCEEDED": 7}


async def test_orders_racing_the_opening_instant_none_succeeds_before_it(
    engine: Engine, engine_redis_url: str, new_user
) -> None:
    """The opening is set 500 ms ahead once every process is running; orders start over
    1.5 s from then. Each success's created_at (Redis' clock, where the order was decided)
    is at or after the opening; the orders before it were refused."""
    drop = await a_drop(engine, 1_000,
                        sale_starts_at=datetime.now(UTC) + timedelta(hours=1))
    buyers = await buyers_in_every_group(engine, new_user, 400, 10_000)
    calls = [("open_in", drop.id, 500)] + [
        ("timed_order", b, drop.id, drop.options[i % SIZES].id, i * 1_500 // len(buyers))
        for i, b in enumerate(buyers)]

    outcomes = await asyncio.to_thread(race_mixed, engine_redis_url, calls)

    (opened_code, _, opens_ms), orders = outcomes[0], outcomes[1:]
    assert opened_code == "OK"
    codes = Counter(code for code, _, _ in orders)
    assert set(codes) == {"OK", "PRODUCT_NOT_ON_SALE"}, codes  # the race straddled it
    assert min(at for code, _, at in orders if code == "OK") >= opens_ms
    assert (await engine.product(drop.id)).stock == SIZES * 1_000 - codes["OK"]


async def test_a_sale_suspended_mid_race_sells_nothing_after_the_suspension_answered(
    engine: Engine, engine_redis_url: str, new_user
) -> None:
    """Orders start over 1.2 s; 400 ms in, another process suspends the sale. Every
    order that started after the suspension's answer is refused: the status was in every
    group's copy before the answer."""
    drop = await a_drop(engine, 1_000)
    buyers = await buyers_in_every_group(engine, new_user, 400, 10_000)
    calls = [("suspend", drop.id, 400)] + [
        ("timed_order", b, drop.id, drop.options[i % SIZES].id, i * 1_200 // len(buyers))
        for i, b in enumerate(buyers)]

    outcomes = await asyncio.to_thread(race_mixed, engine_redis_url, calls)

    (suspended_code, answered, _), orders = outcomes[0], outcomes[1:]
    assert suspended_code == "OK"
    after = [code for code, started, _ in orders if started > answered]
    assert after and set(after) == {"PRODUCT_NOT_ON_SALE"}
    sold = sum(code == "OK" for code, _, _ in orders)
    assert sold > 0  # the sale was on until then
    assert (await engine.product(drop.id)).stock == SIZES * 1_000 - sold
