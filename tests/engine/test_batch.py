"""Orders of one tick share one place_orders call (engine/batch.py), never an outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from engine import Engine, Idempotency
from engine.batch import OrderBatcher
from engine.connection import ReplyError
from engine.errors import (
    CouponNotUsable,
    EngineUnavailable,
    IdempotencyKeyReused,
    InsufficientBalance,
    OutOfStock,
)
from engine.models import Order
from tests.engine.support import allot


@contextmanager
def calls_of(engine: Engine) -> Iterator[list[int]]:
    """The number of orders of each place_orders call written while inside."""
    sent: list[int] = []
    real = engine.conn.send
    sha = engine.scripts["place_orders"].sha

    def spy(*args: Any, now: bool = False) -> Any:
        if args[:2] == ("EVALSHA", sha):
            sent.append(int(args[2 + int(args[2]) + 5]))  # ARGV[5], the number of orders
        return real(*args, now=now)

    engine.conn.send = spy  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        engine.conn.send = real  # type: ignore[method-assign]


async def outcomes(calls: list[Any]) -> list[Any]:
    """Each call's answer or the exception it raised, all started in the same tick."""
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_one_ticks_orders_leave_as_one_call_each_with_its_own_answer(
    engine: Engine, group_mates, new_product
) -> None:
    users = await group_mates(5, 10_000)
    made = await new_product(price=1_000, stock=3)
    await allot(engine, users[0], made.id, 3)  # every unit in the users' group
    await engine.balance(users[0])  # connected, so the batch goes the direct way
    with calls_of(engine) as sent:
        answers = await outcomes([engine.place_order(u, [(made.id, 1)]) for u in users])
    # The last two came back SHORT, found no unit anywhere and came again to be refused.
    assert sent == [5, 2]
    # First come, first served in the order the callers arrived.
    assert [type(a) for a in answers] == [Order, Order, Order, OutOfStock, OutOfStock]
    assert [a.user_id for a in answers[:3]] == users[:3]
    assert (await engine.product(made.id)).stock == 0
    assert [(await engine.balance(u)).balance for u in users] == [9_000] * 3 + [10_000] * 2


async def test_orders_of_one_batch_see_each_others_writes(
    engine, funded_user, new_product, issued
) -> None:
    user = await funded_user(2_500)
    made = await new_product(price=1_000)
    coupon = await issued(user, value=500)
    answers = await outcomes([
        engine.place_order(user, [(made.id, 1)], coupon.id),
        engine.place_order(user, [(made.id, 1)], coupon.id),  # the coupon is used by now
        engine.place_order(user, [(made.id, 1)]),
        engine.place_order(user, [(made.id, 1)]),  # 500 + 1,000 spent: 1,000 left
        engine.place_order(user, [(made.id, 1)]),
    ])
    assert [type(a) for a in answers] == [Order, CouponNotUsable, Order, Order,
                                          InsufficientBalance]
    assert (await engine.balance(user)).balance == 0
    assert (await engine.product(made.id)).stock == 97


async def test_one_key_twice_in_a_batch_places_one_order_and_answers_it_twice(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    key, other = Idempotency("k", "order 1"), Idempotency("k", "order 2")
    first, again, reused = await outcomes([
        engine.place_order(user, [(made.id, 1)], idem=key),
        engine.place_order(user, [(made.id, 1)], idem=key),
        engine.place_order(user, [(made.id, 2)], idem=other),
    ])
    assert isinstance(first, Order) and again == first
    assert isinstance(reused, IdempotencyKeyReused)
    assert (await engine.product(made.id)).stock == 99


async def test_ids_counters_stock_and_sales_of_a_batch_are_written_once_and_right(
    engine, group_mates, new_product, r
) -> None:
    users = await group_mates(6, 10_000)
    group = engine.layout.of(users[0])
    a, b = await new_product(), await new_product()
    seq_before = [int(n or 0) for n in await r.hmget(group.seq, "order", "hist")]
    window_before = [await r.zscore(group.sales_window, p.id) or 0 for p in (a, b)]
    orders = await asyncio.gather(*(
        engine.place_order(u, [(a.id, 2), (b.id, 1)] if i % 2 else [(a.id, 1)])
        for i, u in enumerate(users)))
    ids = [int(o.id) for o in orders]
    # The group's counter goes up by one an order; the id says the group (keys.Layout).
    made_ids = [engine.layout.make_id(n, group.index)
                for n in range(seq_before[0] + 1, seq_before[0] + 7)]
    assert ids == made_ids and {engine.layout.owner(i) for i in ids} == {group}
    histories = [(await engine.history(u)).items[0] for u in users]
    assert [h.order_id for h in histories] == [o.id for o in orders]
    assert [h.id for h in histories] == [engine.layout.make_id(n, group.index)
                                         for n in range(seq_before[1] + 1, seq_before[1] + 7)]
    assert await r.hmget(group.seq, "order", "hist") == [
        str(seq_before[0] + 6).encode(), str(seq_before[1] + 6).encode()]
    assert [await r.zscore(group.sales_window, p.id) - w
            for p, w in zip((a, b), window_before, strict=True)] == [9, 3]
    assert [(await engine.product(p.id)).stock for p in (a, b)] == [91, 97]
    # The next call of any script continues the counters.
    assert (await engine.charge(users[0], 1_000)).balance == 10_000
    assert (await engine.history(users[0])).items[0].id == histories[-1].id + engine.layout.groups


async def test_orders_of_several_groups_leave_as_one_call_per_group_in_one_tick(
    engine, funded_user, new_product
) -> None:
    users = [await funded_user(10_000) for _ in range(40)]
    made = await new_product(stock=1_000)
    await engine.balance(users[0])
    groups = [engine.layout.of(u) for u in users]
    with calls_of(engine) as sent:
        orders = await asyncio.gather(*(engine.place_order(u, [(made.id, 1)]) for u in users))
    assert sorted(sent) == sorted(groups.count(g) for g in set(groups))
    assert [engine.layout.owner(int(o.id)) for o in orders] == groups
    assert (await engine.product(made.id)).stock == 960


async def test_an_order_raising_inside_redis_fails_alone(
    engine, group_mates, new_product, r
) -> None:
    users = await group_mates(3, 10_000)
    group = engine.layout.of(users[0])
    good, broken = await new_product(), await new_product()
    await r.delete(group.product(broken.id))
    await r.set(group.product(broken.id), "not a hash")  # HMGET on it raises WRONGTYPE
    before = int(await r.hget(group.seq, "order"))
    first, middle, last = await outcomes([
        engine.place_order(users[0], [(good.id, 1)]),
        engine.place_order(users[1], [(broken.id, 1)]),
        engine.place_order(users[2], [(good.id, 1)]),
    ])
    assert isinstance(middle, ReplyError) and "WRONGTYPE" in str(middle)
    assert isinstance(first, Order) and isinstance(last, Order)
    assert [int(first.id), int(last.id)] == [engine.layout.make_id(before + n, group.index)
                                             for n in (1, 2)]
    assert (await engine.balance(users[1])).balance == 10_000
    assert (await engine.product(good.id)).stock == 98
    await r.delete(group.product(broken.id))  # later tests' catalog reads would raise


async def test_more_orders_than_a_batch_holds_leave_in_several_calls(
    engine, group_mates, new_product
) -> None:
    users = await group_mates(40, 1_000)
    made = await new_product(stock=1_000)
    engine.batches = OrderBatcher(engine.conn, engine.scripts["place_orders"],
                                  engine.policy, engine.layout, max_orders=16)
    await engine.balance(users[0])
    with calls_of(engine) as sent:
        orders = await asyncio.gather(*(engine.place_order(u, [(made.id, 1)]) for u in users))
    assert sent == [16, 16, 8]
    assert [o.user_id for o in orders] == users
    assert len({o.id for o in orders}) == 40
    assert (await engine.product(made.id)).stock == 960


async def test_a_caller_cancelled_before_its_batch_left_places_nothing(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    kept = asyncio.ensure_future(engine.place_order(user, [(made.id, 1)]))
    gone = asyncio.ensure_future(engine.place_order(user, [(made.id, 2)]))
    await asyncio.sleep(0)  # both are queued for this tick's batch
    gone.cancel()
    assert isinstance(await kept, Order)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert (await engine.product(made.id)).stock == 99


async def test_a_batch_after_a_script_flush_loads_the_script_and_places_every_order(
    engine, funded_user, new_product, r
) -> None:
    users = [await funded_user(10_000) for _ in range(20)]
    made = await new_product()
    await r.script_flush()
    orders = await asyncio.gather(*(engine.place_order(u, [(made.id, 1)]) for u in users))
    assert [o.user_id for o in orders] == users
    assert (await engine.product(made.id)).stock == 80


async def test_a_batch_on_a_killed_connection_fails_every_caller_and_places_nothing(
    engine, funded_user, new_product, r
) -> None:
    users = [await funded_user(10_000) for _ in range(3)]
    made = await new_product()
    client_id = await engine.conn.execute("CLIENT", "ID")
    await r.execute_command("CLIENT", "PAUSE", 5_000, "WRITE")  # hold the batch in Redis
    try:
        calls = [asyncio.ensure_future(engine.place_order(u, [(made.id, 1)])) for u in users]
        await asyncio.sleep(0.2)
        assert not any(c.done() for c in calls)
        await r.execute_command("CLIENT", "KILL", "ID", client_id)
        answers = await outcomes(calls)
    finally:
        await r.execute_command("CLIENT", "UNPAUSE")
    assert all(isinstance(a, EngineUnavailable) for a in answers)
    assert (await engine.product(made.id)).stock == 100
