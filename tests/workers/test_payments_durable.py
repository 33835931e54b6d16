"""Issue 28's payments in Postgres: every deferred order's life lands there as Redis has it,
the audit checks the payments, a rebuild brings pending orders back with their due times,
and the platform never hears of an order that was never paid."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
import redis
from sqlalchemy.engine import Engine as Database

from engine import Engine, Idempotency
from engine.errors import OrderNotPayable
from engine.models import Order, Product
from engine.outbox.settle import Settled, Settler
from engine.restore import Snapshot
from rushorder.audit import audit
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from workers.forwarder import delivery_of


@pytest.fixture
def settle(engine: Engine, r: redis.Redis, drain: Callable[..., int]) -> Callable[[], Settled]:
    """Write everything to Postgres, wait out a 1 s retention, settle what is due."""

    def run() -> Settled:
        drain()
        time.sleep(1.1)
        return Settler(r, 1.0, engine.layout).settle_all()

    return run


async def every_life(engine: Engine, item: Product) -> dict[str, Order]:
    """One order of each kind: one-step, one-step cancelled, deferred paid, deferred paid
    then cancelled, deferred cancelled unpaid, deferred expired, deferred still pending."""
    for user in range(1, 8):
        await engine.charge(user, 50_000)
    place = engine.place_order
    made = {"one-step": await place(1, [(item.id, 1)]),
            "one-step cancelled": await place(2, [(item.id, 2)])}
    await engine.cancel_order(2, made["one-step cancelled"].id)
    for user, kind in enumerate(("paid", "paid then cancelled", "cancelled unpaid", "expired",
                                 "pending"), start=3):
        made[kind] = await place(user, [(item.id, user)], deferred=True)
    await engine.pay_order(3, made["paid"].id)
    await engine.pay_order(4, made["paid then cancelled"].id)
    await engine.cancel_order(4, made["paid then cancelled"].id)
    await engine.cancel_order(5, made["cancelled unpaid"].id)
    g = engine.layout.of(6)
    await engine.conn.execute("HSET", g.order(made["expired"].id), "due", 1)
    await engine.conn.execute("ZADD", g.pending, 1, made["expired"].id)
    assert await engine.expire_due() == 1
    return {kind: await engine.order(int(o.user_id), o.id) for kind, o in made.items()}


def rows(db: Database, sql: str) -> dict[int, tuple]:
    with db.connect() as conn:
        return {int(row[0]): tuple(row[1:]) for row in conn.exec_driver_sql(sql)}


async def test_every_life_of_an_order_lands_in_postgres_as_redis_answers_it(
    engine: Engine, db: Database, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (item,) = await products(1, stock=100)
    orders = await every_life(engine, item)
    drain()

    stored = rows(db, "SELECT id, status, paid_amount, payment_due_at IS NOT NULL FROM orders")
    payments = rows(db, "SELECT order_id, status, amount FROM payments")
    for kind, o in orders.items():
        oid = int(o.id)
        assert stored[oid] == (o.status, o.paid_amount, kind not in ("one-step",
                                                                    "one-step cancelled")), kind
        p = o.payment
        assert payments.get(oid) == (None if p is None else (p.status, p.amount)), kind
    # Stock: the expired and the unpaid cancelled orders' units came back, the pending one's
    # are held: 100 - 1 (one-step) - 3 (paid) - 7 (pending).
    assert rows(db, "SELECT id, stock FROM products")[item.id] == (89,)
    assert (await engine.product(item.id)).stock == 89
    # Sales: only the paid orders that stand (one-step 1, deferred paid 3).
    sold = rows(db, "SELECT product_id, sum(units) FROM sales_hourly GROUP BY product_id")
    assert sold[item.id] == (4,)


async def test_the_audit_passes_with_orders_in_every_state(
    engine: Engine, drain: Callable[..., int], wsettings: Settings,
    products: Callable[..., Awaitable[list[Product]]], capsys: pytest.CaptureFixture[str],
) -> None:
    (item,) = await products(1, stock=100)
    await every_life(engine, item)
    drain()
    code = audit(wsettings, wait_s=1)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "OK   order payments agree" in report


async def test_the_audit_names_a_payment_that_disagrees(
    engine: Engine, drain: Callable[..., int], wsettings: Settings, db: Database,
    products: Callable[..., Awaitable[list[Product]]], capsys: pytest.CaptureFixture[str],
) -> None:
    (item,) = await products(1, stock=100)
    orders = await every_life(engine, item)
    drain()
    with db.begin() as conn:
        conn.exec_driver_sql(f"UPDATE payments SET amount = amount + 1 "
                             f"WHERE order_id = {int(orders['paid'].id)}")
    assert audit(wsettings, wait_s=1) == 1
    report = capsys.readouterr().out
    assert "FAIL order payments agree" in report
    assert f"order {orders['paid'].id}: redis COMPLETED 3000, postgres COMPLETED 3001" in report
    assert "payments whose amount is not their order's paid_amount" in report


async def test_a_rebuild_brings_pending_orders_back_with_their_due_times(
    engine: Engine, r: redis.Redis, drain: Callable[..., int], wsettings: Settings,
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (item,) = await products(1, stock=100)
    orders = await every_life(engine, item)
    before = {kind: await engine.order(o.user_id, o.id) for kind, o in orders.items()}
    drain()
    r.flushdb()
    assert rebuild(wsettings) == 0

    after = {kind: await engine.order(o.user_id, o.id) for kind, o in orders.items()}
    assert after == before
    pending = orders["pending"]
    g = engine.layout.of(pending.user_id)
    assert r.zrange(g.pending, 0, -1, withscores=True) == [
        (pending.id.encode(), float(int(pending.payment_due_at.timestamp() * 1000)))]  # type: ignore[union-attr]
    assert (await engine.product(item.id)).stock == 89
    paid = await engine.pay_order(pending.user_id, pending.id)  # it is payable as before
    assert paid.status == "PAID"
    # And the one paid then cancelled after the rebuild takes its sale out of its pay hour.
    assert {t.product_id: t.sold_quantity for t in (await engine.top()).items}[item.id] == 4 + 7


def test_the_platform_never_hears_of_an_order_that_was_never_paid() -> None:
    def event(kind: str, payment: str, due: str) -> bytes:
        return (f'{{"type":"{kind}","at":"2026-12-08T04:00:00.000Z","event_id":"9:x",'
                f'"order":{{"id":"9","user_id":1,"status":"CANCELLED","items":[],'
                f'"total_amount":0,"discount_amount":0,"paid_amount":0,'
                f'"issued_coupon_id":null,"created_at":"2026-12-08T04:00:00.000Z"'
                f'{payment}{due}}},"balance_after":0,"history":null,'
                f'"coupon_restored":false}}').encode()

    paid = ',"payment":{"id":"9","amount":0,"status":"CANCELLED",' \
           '"paid_at":"2026-12-08T04:00:00.000Z","cancelled_at":null}'
    due = ',"payment_due_at":"2026-12-08T04:10:00.000Z"'
    assert delivery_of(event("order.pending", ',"payment":null', due)) is None
    assert delivery_of(event("order.expired", ',"payment":null', due)) is None
    assert delivery_of(event("order.cancelled", ',"payment":null', due)) is None
    assert delivery_of(event("order.cancelled", paid, due)) is not None  # paid, then cancelled
    assert delivery_of(event("order.cancelled", paid, "")) is not None  # one-step
    assert delivery_of(event("order.cancelled", "", "")) is not None  # written before issue 28


async def test_settle_drops_ended_orders_but_never_a_pending_one(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (item,) = await products(1, stock=100)
    orders = await every_life(engine, item)
    before = {kind: await engine.order(o.user_id, o.id) for kind, o in orders.items()}
    settle()
    held = {kind: r.exists(engine.layout.of(o.user_id).order(o.id)) for kind, o in orders.items()}
    assert held == {kind: int(kind == "pending") for kind in orders}  # expired ones leave too
    assert {kind: await engine.order(o.user_id, o.id) for kind, o in orders.items()} == before
    pending = orders["pending"]
    assert (await engine.pay_order(pending.user_id, pending.id)).status == "PAID"
    again = await engine.pay_order(orders["paid"].user_id, orders["paid"].id)  # settled: as is
    assert again == before["paid"]


async def test_a_rebuild_past_the_retention_still_brings_every_pending_order_back(
    engine: Engine, r: redis.Redis, drain: Callable[..., int], wsettings: Settings,
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (item,) = await products(1, stock=100)
    orders = await every_life(engine, item)
    pending = orders["pending"]
    later = await engine.place_order(pending.user_id, [(item.id, 1)])  # settled: older
    listed = await engine.orders(pending.user_id)
    with redis.Redis.from_url(wsettings.redis_url or "") as client:
        bought = Snapshot(client, engine.layout).bought()
    drain()
    time.sleep(1.1)
    r.flushdb()
    assert rebuild(wsettings.replace(redis_retention_s=1.0)) == 0

    assert r.exists(engine.layout.of(pending.user_id).order(pending.id))  # not below a floor
    assert [o.id for o in (await engine.orders(pending.user_id)).items] == [later.id, pending.id]
    assert await engine.orders(pending.user_id) == listed
    assert not r.exists(engine.layout.of(3).order(orders["paid"].id))  # settled, as settle would
    assert (await engine.order(pending.user_id, pending.id)).status == "PENDING_PAYMENT"
    with redis.Redis.from_url(wsettings.redis_url or "") as client:
        assert Snapshot(client, engine.layout).bought() == bought  # pending units held too
    assert (await engine.pay_order(pending.user_id, pending.id)).status == "PAID"


async def test_an_order_not_payable_is_an_idempotency_keys_kept_answer(
    engine: Engine, products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (item,) = await products(1, stock=10)
    await engine.charge(1, 10_000)
    order = await engine.place_order(1, [(item.id, 1)], deferred=True)
    await engine.cancel_order(1, order.id)
    first, again = Idempotency("p", "POST pay"), Idempotency("p", "POST pay")
    for key in (first, again):
        with pytest.raises(OrderNotPayable):
            await engine.pay_order(1, order.id, idem=key)
    assert (first.replayed, again.replayed) == (False, True)


def test_a_deferred_orders_sale_counts_in_the_hour_it_was_paid() -> None:
    from datetime import UTC, datetime, timedelta

    from engine.models import OrderLine, Payment
    from engine.outbox.events import OrderCancelled, OrderPaid
    from engine.restore import HOUR_MS, ms, order_fields
    from workers.projection import hour_of, project

    placed = datetime(2026, 12, 8, 3, 59, tzinfo=UTC)
    paid_at = placed + timedelta(hours=2)
    order = Order(id="9", user_id=1, status="PAID", items=[OrderLine(
        product_id=4, name="p", unit_price=10, quantity=3)], total_amount=30,
        discount_amount=0, paid_amount=30, issued_coupon_id=None, created_at=placed,
        payment=Payment(id="9", amount=30, status="COMPLETED", paid_at=paid_at),
        payment_due_at=placed + timedelta(minutes=10))
    hour = ms(paid_at) // HOUR_MS
    assert hour_of(order) == hour != ms(placed) // HOUR_MS
    assert order_fields(order)["hour"] == hour  # a rebuilt order's cancel uncounts that hour
    paid = project([(1, OrderPaid(at=paid_at, event_id="9:paid", order=order,
                                  balance_after=0, history=None))])
    assert dict(paid.sales) == {(hour, 4): 3}
    assert paid.orders == [] and paid.lines == [] and not paid.stock  # came with its pending
    cancelled = project([(2, OrderCancelled(at=paid_at, event_id="9:cancelled", order=order,
                                            balance_after=30, history=None,
                                            coupon_restored=False))])
    assert dict(cancelled.sales) == {(hour, 4): -3}
