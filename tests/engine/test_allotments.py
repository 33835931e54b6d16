"""Stock as a reserve and per-group allotments (engine/allotments.py): deals, refills,
pull-backs, transfers a crash interrupted, and the count that alone may refuse."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal

import pytest
import redis

from engine import Engine, keys
from engine.allotments import PRODUCT, new_transfer
from engine.errors import CouponSoldOut, OutOfStock
from engine.restore import Snapshot
from tests.engine.support import allot


async def _units(r, engine: Engine, product_id: int) -> tuple[int, list[int]]:
    """The reserve's units and each group's allotment of a product."""
    reserve = int(await r.hget(keys.product(product_id), "stock"))
    groups = [int(await r.hget(g.product(product_id), "stock") or 0) for g in engine.layout.all]
    return reserve, groups


async def _records(r, product_id: int) -> list[bytes]:
    """The reserve's transfers of a product still recorded."""
    return [v for v in (await r.hgetall(keys.TRANSFERS_OUT)).values()
            if v.split()[:2] == [b"p", str(product_id).encode()]]


def _snapshot_stock(url: str, engine: Engine, product_id: int) -> int:
    with redis.Redis.from_url(url) as client:
        return Snapshot(client, engine.layout).stock()[product_id]


async def _user_in(engine: Engine, funded_user, index: int, balance: int = 100_000) -> int:
    """A funded user of group ``index``."""
    while True:
        user = await funded_user(balance)
        if engine.layout.of(user).index == index:
            return user


async def test_a_new_product_deals_half_its_stock_to_the_groups(engine, new_product, r) -> None:
    made = await new_product(stock=80)
    assert await _units(r, engine, made.id) == (40, [10, 10, 10, 10])
    assert made.stock == 80 and (await engine.product(made.id)).stock == 80
    assert await _records(r, made.id) == []  # every deal delivered


async def test_a_small_stock_is_dealt_out_whole(engine, new_product, r) -> None:
    made = await new_product(stock=50)  # under SMALL_STOCK (16) a group
    assert await _units(r, engine, made.id) == (2, [12, 12, 12, 12])
    assert (await engine.product(made.id)).stock == 50


async def test_a_pull_back_takes_half_of_what_each_other_group_holds(
    engine, new_product, funded_user, r
) -> None:
    made = await new_product(price=10, stock=80)  # 10 units dealt to each group, 40 kept
    holder = await _user_in(engine, funded_user, 0)
    await allot(engine, holder, made.id, 40)  # the reserve empty, 50 in group 0
    buyer = await _user_in(engine, funded_user, 3)
    await asyncio.sleep(0.15)  # past HOLD_MS
    await engine.place_order(buyer, [(made.id, 11)])  # 1 more than group 3 holds
    reserve, groups = await _units(r, engine, made.id)
    assert groups[:3] == [25, 5, 5]  # each gave half back, not the 1 the order lacked
    assert reserve + groups[3] == 80 - 11 - 35  # every unit but the 11 sold


async def test_the_refill_after_a_pull_back_is_not_capped_by_the_fair_share(
    engine, new_product, funded_user, r
) -> None:
    made = await new_product(price=10, stock=80)  # 10 units dealt to each group, 40 kept
    holder = await _user_in(engine, funded_user, 0)
    await allot(engine, holder, made.id, 40)  # the reserve empty, 50 in group 0
    buyer = await _user_in(engine, funded_user, 3)
    engine.allotments._last[(3, "p", made.id)] = 20  # group 3's refills have grown to 40
    await asyncio.sleep(0.15)  # past HOLD_MS
    await engine.place_order(buyer, [(made.id, 11)])
    # 35 pulled back for group 3: all of them go there, not ceil(35 / 4) = 9 of them.
    assert await _units(r, engine, made.id) == (0, [25, 5, 5, 10 + 35 - 11])


async def test_a_group_short_of_units_is_refilled_from_the_reserve(
    engine, new_product, funded_user, r
) -> None:
    made = await new_product(stock=80)  # 10 units dealt to each group, 40 in the reserve
    user = await _user_in(engine, funded_user, 1)
    order = await engine.place_order(user, [(made.id, 15)])
    assert order.status == "PAID"
    reserve, groups = await _units(r, engine, made.id)
    assert reserve < 40 and groups[1] == 10 + (40 - reserve) - 15
    assert (await engine.product(made.id)).stock == 65


async def test_the_last_units_are_pulled_back_from_the_other_groups(
    engine, new_product, funded_user, r
) -> None:
    made = await new_product(price=10, stock=80)  # 10 units dealt to each group, 40 kept
    holder = await _user_in(engine, funded_user, 0)
    await allot(engine, holder, made.id, 40)  # the whole reserve in group 0: 50 there
    buyer = await _user_in(engine, funded_user, 3)
    await asyncio.sleep(0.15)  # past HOLD_MS: group 0 has had its units a while
    order = await engine.place_order(buyer, [(made.id, 80)])
    assert order.items[0].quantity == 80
    assert await _units(r, engine, made.id) == (0, [0, 0, 0, 0])
    with pytest.raises(OutOfStock) as refused:
        await engine.place_order(buyer, [(made.id, 1)])
    assert refused.value.context == {"product_id": made.id, "stock": 0}


async def test_a_sold_out_thing_is_counted_first_and_sells_again_once_units_come_back(
    engine, new_product, funded_user, monkeypatch
) -> None:
    made = await new_product(price=10, stock=8)  # dealt out whole: 2 a group
    buyer, other = (await _user_in(engine, funded_user, 0), await _user_in(engine, funded_user, 1))
    await asyncio.sleep(0.15)  # past HOLD_MS
    await engine.place_order(other, [(made.id, 2)])
    await engine.place_order(buyer, [(made.id, 6)])  # every other unit, pulled into group 0
    with pytest.raises(OutOfStock):
        await engine.place_order(buyer, [(made.id, 1)])
    tried: list[int] = []
    move = engine.allotments.move
    async def counted_move(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a spy
        tried.append(1)
        return await move(*args, **kwargs)
    monkeypatch.setattr(engine.allotments, "move", counted_move)
    with pytest.raises(OutOfStock):  # remembered sold out: the count alone refuses
        await engine.place_order(buyer, [(made.id, 1)])
    assert tried == []  # no refill nor pull-back tried
    # A cancel in group 1 puts 2 units there: group 0's next order is not refused on memory.
    (bought,) = [o for o in (await engine.orders(other)).items if o.status == "PAID"]
    await engine.cancel_order(other, bought.id)
    await asyncio.sleep(0.15)
    order = await engine.place_order(buyer, [(made.id, 2)])
    assert order.items[0].quantity == 2 and (await engine.product(made.id)).stock == 0


async def test_refusals_asked_together_share_a_count(
    engine, new_product, funded_user, monkeypatch
) -> None:
    made = await new_product(price=10, stock=4)  # dealt out whole: 1 a group
    users = [await _user_in(engine, funded_user, i % 4) for i in range(16)]
    await asyncio.sleep(0.15)  # past HOLD_MS
    counts: list[int] = []
    count = engine.allotments.count
    async def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a spy
        counts.append(1)
        return await count(*args, **kwargs)
    monkeypatch.setattr(engine.allotments, "count", counted)
    outcomes = await asyncio.gather(*(engine.place_order(u, [(made.id, 1)]) for u in users),
                                    return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 4
    assert all(isinstance(o, OutOfStock) for o in outcomes if isinstance(o, BaseException))
    assert len(counts) < 4  # 12 refusals in 4 groups: fewer counts than groups
    assert (await engine.product(made.id)).stock == 0


async def test_an_order_for_more_than_every_slot_holds_is_refused_with_the_sum(
    engine, new_product, funded_user
) -> None:
    made = await new_product(stock=12)  # dealt out whole: 3 a group
    user = await _user_in(engine, funded_user, 2)
    with pytest.raises(OutOfStock) as refused:
        await engine.place_order(user, [(made.id, 13)])
    assert refused.value.context == {"product_id": made.id, "stock": 12}
    assert (await engine.product(made.id)).stock == 12


async def test_a_negative_restock_takes_from_the_reserve_then_the_groups(
    engine, new_product, r
) -> None:
    made = await new_product(stock=80)
    await asyncio.sleep(0.15)  # past HOLD_MS
    assert (await engine.update_product(made.id, stock_delta=-70)).stock == 10
    reserve, groups = await _units(r, engine, made.id)
    assert reserve + sum(groups) == 10
    with pytest.raises(OutOfStock) as refused:
        await engine.update_product(made.id, stock_delta=-11)
    assert refused.value.context == {"product_id": made.id, "stock": 10}
    assert (await engine.update_product(made.id, stock_delta=-10)).stock == 0


async def test_a_new_price_reaches_every_groups_copy(engine, new_product, funded_user) -> None:
    made = await new_product(price=1_000, stock=80)
    await engine.update_product(made.id, price=700, name="cheaper")
    for index in range(engine.layout.groups):
        user = await _user_in(engine, funded_user, index)
        order = await engine.place_order(user, [(made.id, 1)])
        assert (order.items[0].name, order.paid_amount) == ("cheaper", 700)


async def test_refills_of_a_product_in_demand_grow(engine, new_product, funded_user) -> None:
    made = await new_product(stock=4_000)  # 500 dealt to each group
    user = await _user_in(engine, funded_user, 0, balance=10_000_000)
    before = engine.allotments.transfers
    for _ in range(150):  # 1,500 units, 1,000 of them refilled into group 0
        await engine.place_order(user, [(made.id, 10)])
    assert engine.allotments.transfers - before <= 8


# -- a transfer a crash interrupted ---------------------------------------------------------


def _crash_between_steps(url: str, product_id: int, group: int, steps: int) -> None:
    """Process entry point: move 5 units from the reserve to ``group``, but die by SIGKILL
    after ``steps`` of the transfer's three steps."""
    async def run() -> None:
        engine = Engine(url)
        a = engine.allotments
        transfer, dest = new_transfer(), a.slots[group]
        taken = await a._out(a.reserve, PRODUCT, product_id, transfer, group, 5, 5)
        assert taken is not None
        if steps == 2:
            await a._call("transfer_in", dest, [taken[0], "stock", 3600, "", *taken[1]],
                          holder=dest.holder(PRODUCT, product_id),
                          received=dest.received(transfer))
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(run())


@pytest.mark.parametrize("steps", [1, 2])
async def test_kill_9_between_a_transfers_steps_then_the_sweeper_loses_and_doubles_nothing(
    engine, engine_redis_url, new_product, r, steps: int
) -> None:
    made = await new_product(stock=80)
    proc = mp.get_context("spawn").Process(
        target=_crash_between_steps, args=(engine_redis_url, made.id, 2, steps))
    proc.start()
    await asyncio.to_thread(proc.join, 60)
    assert proc.exitcode == -signal.SIGKILL
    assert len(await _records(r, made.id)) == 1  # the units are in flight, recorded
    # The live read counts units in flight at their source until its record is dropped:
    # once they arrived too (step 2 done), twice, until the sweeper finishes the transfer.
    assert (await engine.product(made.id)).stock == (80 if steps == 1 else 85)
    assert _snapshot_stock(engine_redis_url, engine, made.id) == 80  # the audit's count

    assert await engine.allotments.sweep(older_than_ms=0) == 1
    assert await engine.allotments.sweep(older_than_ms=0) == 0
    assert await _records(r, made.id) == []
    assert await _units(r, engine, made.id) == (35, [10, 10, 15, 10])
    assert (await engine.product(made.id)).stock == 80
    assert _snapshot_stock(engine_redis_url, engine, made.id) == 80


async def test_one_groups_users_get_every_unit_of_a_coupon_then_sold_out(
    engine, new_coupon, funded_user, r
) -> None:
    made = await new_coupon(quantity=8)  # a small stock: 2 units dealt to each group
    assert int(await r.hget(engine.layout.all[1].coupon(made.id), "remaining")) == 2
    users = [await _user_in(engine, funded_user, 0) for _ in range(9)]
    await asyncio.sleep(0.15)  # past HOLD_MS: the other groups' units may be pulled back
    for user in users[:8]:
        assert (await engine.issue_coupon(user, made.id)).coupon_id == made.id
    with pytest.raises(CouponSoldOut):
        await engine.issue_coupon(users[8], made.id)
    assert (await engine.coupon(made.id)).remaining == 0


async def test_a_sweeping_engine_delivers_a_transfer_left_in_flight(
    engine, new_product, r
) -> None:
    made = await new_product(stock=80)
    a = engine.allotments
    assert await a._out(a.reserve, PRODUCT, made.id, new_transfer(), 3, 5, 5) is not None
    async with engine.sweeping(every_s=0.05):  # as every API process does (api/app.py)
        for _ in range(100):
            if not await _records(r, made.id):
                break
            await asyncio.sleep(0.05)
    assert await _records(r, made.id) == []
    assert await _units(r, engine, made.id) == (35, [10, 10, 10, 15])
