"""Issue 28's deferred payment under real concurrency: 4 OS processes, each with its own
Engine and loop, all firing at once (races.py). A pay racing the expiry, or a cancel, of
one pending order: exactly one of them takes the pending order, and the books balance; 200
deferred orders for 100 units hold exactly 100, and give all back once they expire."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict

import redis

from engine import Engine
from engine.models import Order
from engine.outbox.events import OrderCancelled, OrderExpired, OrderPaid, OrderPending
from engine.restore import Snapshot
from tests.engine.races import race, race_mixed
from tests.engine.support import Outbox

ORDERS = 40
PRICE = 100


async def pending_orders(engine: Engine, new_user, units: int) -> tuple[int, list[Order]]:
    """A product of ``units`` units and ORDERS users, each with a deferred order of one."""
    made = await engine.create_product("deferred", PRICE, stock=units)
    users = [await new_user() for _ in range(ORDERS)]
    await asyncio.gather(*(engine.charge(u, 10_000) for u in users))
    orders = [await engine.place_order(u, [(made.id, 1)], deferred=True) for u in users]
    return made.id, orders


def lives(events: list, orders: list[Order]) -> dict[str, list[str]]:
    """Each order's events after the mark, by order id (type, and a cancel's payment)."""
    ids = {o.id for o in orders}
    seen: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if isinstance(e, OrderPaid | OrderCancelled | OrderExpired | OrderPending) and \
                e.order.id in ids:
            paid = "" if not isinstance(e, OrderCancelled) else (
                " paid" if e.order.payment is not None else " unpaid")
            seen[e.order.id].append(type(e).__name__ + paid)
    return seen


async def test_pay_racing_the_expiry_of_one_order_applies_exactly_one(
    engine: Engine, engine_redis_url: str, new_user, outbox: Outbox
) -> None:
    product, orders = await pending_orders(engine, new_user, ORDERS)
    mark = await outbox.mark()
    rng = random.Random(28)
    targets = [(o.user_id, o.id) for o in orders]
    calls: list[tuple] = [("due_in", targets, 150)]
    for o in orders:  # two pays an order, spread around its due time
        calls += [("pay", o.user_id, o.id, rng.randrange(0, 350)) for _ in range(2)]
    calls += [("expire", delay) for delay in range(100, 400, 15)]

    outcomes = await asyncio.to_thread(race_mixed, engine_redis_url, calls)

    finals = {o.id: (await engine.order(o.user_id, o.id)).status for o in orders}
    assert set(finals.values()) <= {"PAID", "EXPIRED"}
    assert 0 < Counter(finals.values())["PAID"] < ORDERS, finals  # both won some
    paid_ok: Counter[str] = Counter()
    for call, (code, _) in zip(calls, outcomes, strict=True):
        if call[0] == "pay":
            assert code in ("OK", "ORDER_NOT_PAYABLE"), code
            paid_ok[call[2]] += code == "OK"
    for oid, status in finals.items():
        assert (paid_ok[oid] > 0) == (status == "PAID"), (oid, status, paid_ok[oid])
    history = lives(await outbox.since(mark), orders)
    for oid, status in finals.items():
        assert history[oid] == ["OrderPaid" if status == "PAID" else "OrderExpired"]
    paid = [o for o in orders if finals[o.id] == "PAID"]
    assert (await engine.product(product)).stock == ORDERS - len(paid)
    balances = await asyncio.gather(*(engine.balance(o.user_id) for o in orders))
    assert sum(b.balance for b in balances) == ORDERS * 10_000 - len(paid) * PRICE
    with redis.Redis.from_url(engine_redis_url) as client:
        bought = Snapshot(client, engine.layout).bought()
    assert all(bought.get(o.user_id) == ({product: 1} if o in paid else None) for o in orders)


async def test_pay_racing_a_cancel_of_one_order_never_takes_money_for_a_cancelled_one(
    engine: Engine, engine_redis_url: str, new_user, outbox: Outbox
) -> None:
    product, orders = await pending_orders(engine, new_user, ORDERS)
    mark = await outbox.mark()
    rng = random.Random(280)
    calls: list[tuple] = []
    for o in orders:  # a pay and a cancel an order, in random order and processes
        pair = [("pay", o.user_id, o.id, rng.randrange(0, 60)),
                ("cancel", o.user_id, o.id, rng.randrange(0, 60))]
        rng.shuffle(pair)
        calls += pair

    outcomes = await asyncio.to_thread(race_mixed, engine_redis_url, calls)

    assert all(code in ("OK", "ORDER_NOT_PAYABLE") for code, _ in outcomes)
    history = lives(await outbox.since(mark), orders)
    # Exactly one takes the pending order: a cancel (nothing was paid) or the pay (then
    # the cancel cancels a paid order: refunded), never a pay of a cancelled one.
    shapes = Counter(tuple(h) for h in history.values())
    assert set(shapes) <= {("OrderCancelled unpaid",), ("OrderPaid", "OrderCancelled paid")}
    assert sum(shapes.values()) == ORDERS and len(shapes) == 2, shapes
    pays = {call[2]: code for call, (code, _) in zip(calls, outcomes, strict=True)
            if call[0] == "pay"}
    for oid, h in history.items():
        assert (pays[oid] == "OK") == (h[0] == "OrderPaid")
    assert {(await engine.order(o.user_id, o.id)).status for o in orders} == {"CANCELLED"}
    assert (await engine.product(product)).stock == ORDERS
    balances = await asyncio.gather(*(engine.balance(o.user_id) for o in orders))
    assert all(b.balance == 10_000 for b in balances)


async def test_200_deferred_orders_for_100_units_take_100_and_give_all_back_on_expiry(
    engine: Engine, engine_redis_url: str, new_user, outbox: Outbox
) -> None:
    made = await engine.create_product("held", PRICE, stock=100)
    mark = await outbox.mark()
    buyers = [await new_user() for _ in range(200)]
    assert {engine.layout.of(b) for b in buyers} == set(engine.layout.all)

    outcomes = await asyncio.to_thread(
        race, engine_redis_url, "defer", [(b, made.id, 1) for b in buyers],
        policy={"payment_timeout_s": 2})

    assert Counter(code for code, _ in outcomes) == {"OK": 100, "OUT_OF_STOCK": 100}
    assert (await engine.product(made.id)).stock == 0
    held = [(b, str(oid)) for b, (code, oid) in zip(buyers, outcomes, strict=True)
            if code == "OK"]
    assert {(await engine.order(b, oid)).status for b, oid in held} == {"PENDING_PAYMENT"}
    await asyncio.sleep(2.1)
    assert await engine.expire_due() == 100
    assert (await engine.product(made.id)).stock == 100
    assert {(await engine.order(b, oid)).status for b, oid in held} == {"EXPIRED"}
    with redis.Redis.from_url(engine_redis_url) as client:
        snap = Snapshot(client, engine.layout)
        assert snap.stock()[made.id] == 100
        assert not any(snap.bought().get(b) for b in buyers)
    assert sum(1 for e in await outbox.since(mark) if isinstance(e, OrderExpired)
               and e.order.items[0].product_id == made.id) == 100
