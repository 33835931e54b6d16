"""Exact counts under real concurrency: 4 OS processes, each with its own Engine and loop,
all firing at once (see races.py). Nothing may be oversold, issued twice or overdrawn."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis

from engine import Engine
from engine.restore import Snapshot
from tests.engine.races import race
from tests.engine.support import allot


async def test_800_buyers_for_100_units_sell_exactly_100_and_conserve_money(
    engine: Engine, engine_redis_url, new_user, new_product, outbox
) -> None:
    made = await new_product(price=1_000, stock=100)
    buyers = [await new_user() for _ in range(800)]
    assert {engine.layout.of(b) for b in buyers} == set(engine.layout.all)  # every group
    await asyncio.gather(*(engine.charge(b, 10_000) for b in buyers))
    mark = await outbox.mark()

    outcomes = await asyncio.to_thread(
        race, engine_redis_url, "order", [(b, made.id, 1) for b in buyers])

    codes = Counter(code for code, _ in outcomes)
    assert codes == {"OK": 100, "OUT_OF_STOCK": 700}
    assert (await engine.product(made.id)).stock == 0
    balances = await asyncio.gather(*(engine.balance(b) for b in buyers))
    paid = sum(p for _, p in outcomes)
    assert sum(b.balance for b in balances) + paid == 800 * 10_000
    orders = await asyncio.gather(*(engine.orders(b) for b in buyers))
    assert sum(len(page.items) for page in orders) == 100
    paid_events = [e for e in await outbox.since(mark) if e.order.items[0].product_id == made.id]
    assert len(paid_events) == 100


async def test_600_requests_from_300_users_issue_exactly_50_coupons_none_twice(
    engine, engine_redis_url, new_user, new_coupon, r
) -> None:
    made = await new_coupon(quantity=50)
    users = [await new_user() for _ in range(300)]
    assert {engine.layout.of(u) for u in users} == set(engine.layout.all)  # every group
    # Each user asks twice; round-robin over 4 processes puts the twins in different ones.
    calls = [(u, made.id) for u in users] + [(u, made.id) for u in users]

    outcomes = await asyncio.to_thread(race, engine_redis_url, "issue", calls)

    codes = Counter(code for code, _ in outcomes)
    assert codes["OK"] == 50
    assert set(codes) <= {"OK", "COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED"}
    winners = [call[0] for call, (code, _) in zip(calls, outcomes, strict=True) if code == "OK"]
    assert len(set(winners)) == 50
    assert (await engine.coupon(made.id)).remaining == 0
    holders = [await r.scard(g.holders(made.id)) for g in engine.layout.all]
    assert sum(holders) == 50 and len([n for n in holders if n]) > 1  # several groups raced
    held = await asyncio.gather(*(engine.user_coupons(u) for u in users))
    assert sorted(len(page.items) for page in held)[-1] == 1
    assert sum(len(page.items) for page in held) == 50


async def test_one_balance_of_10000_against_50_orders_of_1000_pays_exactly_10(
    engine, engine_redis_url, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000, stock=1_000)

    outcomes = await asyncio.to_thread(
        race, engine_redis_url, "order", [(user, made.id, 1)] * 50)

    assert Counter(code for code, _ in outcomes) == {"OK": 10, "INSUFFICIENT_BALANCE": 40}
    assert (await engine.balance(user)).balance == 0
    assert (await engine.product(made.id)).stock == 990
    uses = [h for h in (await engine.history(user, limit=100)).items if h.type == "USE"]
    assert len(uses) == 10 and min(h.balance_after for h in uses) == 0


async def test_refills_racing_pull_backs_sell_exactly_the_stock_and_leave_none_in_flight(
    engine: Engine, engine_redis_url, new_user, new_product, r
) -> None:
    """Most units start in one group with few buyers, buyers of every group race for
    them: the others' refills race pull-backs out of it (engine/allotments.py), from 4
    processes. Without the pull-backs 30 units would stay unsold there."""
    made = await new_product(price=10, stock=64)  # 8 units dealt to each group
    buyers: list[int] = []
    while len(buyers) < 200:
        user = await new_user()
        if engine.layout.of(user).index or sum(
                engine.layout.of(b).index == 0 for b in buyers) < 10:
            buyers.append(user)
    await asyncio.gather(*(engine.charge(b, 1_000) for b in buyers))
    holder = next(b for b in buyers if engine.layout.of(b).index == 0)
    await allot(engine, holder, made.id, 32)  # the whole reserve into the group of 10

    outcomes = await asyncio.to_thread(
        race, engine_redis_url, "order", [(b, made.id, 1) for b in buyers])

    assert Counter(code for code, _ in outcomes) == {"OK": 64, "OUT_OF_STOCK": 136}
    await engine.allotments.sweep(older_than_ms=0)  # nothing should be left to deliver
    assert (await engine.product(made.id)).stock == 0
    with redis.Redis.from_url(engine_redis_url) as client:
        assert Snapshot(client, engine.layout).stock()[made.id] == 0
    for slot in [engine.allotments.reserve, *engine.allotments.slots]:
        records = (await r.hgetall(slot.transfers_out)).values()
        assert not [v for v in records if v.split()[:2] == [b"p", str(made.id).encode()]]
