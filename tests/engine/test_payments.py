"""Issue 28: every order's payment record, deferred orders (pending, pay, cancel, expiry)
and the preview."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine import Engine, Idempotency
from engine.errors import (
    CouponNotUsable,
    InsufficientBalance,
    OptionNotFound,
    OrderNotCancellable,
    OrderNotFound,
    OrderNotPayable,
    ProductNotFound,
    ValidationFailed,
)
from engine.models import Order
from engine.outbox import Outbox
from engine.policy import Policy


async def due_now(r: aioredis.Redis, engine: Engine, order: Order) -> None:
    """Move a pending order's due time into the past (its hash and its group's zset)."""
    g = engine.layout.of(order.user_id)
    await r.hset(g.order(order.id), "due", 1)
    await r.zadd(g.pending, {order.id: 1})


async def events(outbox: Outbox, engine: Engine, user: int) -> list[dict[str, Any]]:
    """The user's order events in its group's outbox, in order, as JSON."""
    raw: list[tuple[bytes, dict[bytes, bytes]]] = await outbox.client.xrange(  # type: ignore[assignment, misc]
        engine.layout.of(user).outbox)
    found = [json.loads(fields[b"e"]) for _, fields in raw]
    return [e for e in found if e.get("order", {}).get("user_id") == user]


# -- the payment record ----------------------------------------------------------------


async def test_a_one_step_order_answers_its_completed_payment(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_500)
    order = await engine.place_order(user, [(made.id, 2)])
    p = order.payment
    assert p is not None
    assert (p.id, p.amount, p.status, p.paid_at, p.cancelled_at) == (
        order.id, 3_000, "COMPLETED", order.created_at, None)
    assert await engine.order(user, order.id) == order


async def test_a_one_step_order_has_no_payment_due_at_in_its_answer(
    engine, funded_user, new_product
) -> None:
    import msgspec
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 1)])
    assert "payment_due_at" not in msgspec.json.decode(msgspec.json.encode(order))
    assert order.status == "PAID"


async def test_a_cancel_marks_the_payment_cancelled_at_the_cancel(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_500)
    order = await engine.place_order(user, [(made.id, 2)])
    cancelled = await engine.cancel_order(user, order.id)
    p = cancelled.payment
    assert p is not None
    assert (p.status, p.amount, p.paid_at, p.cancelled_at) == (
        "CANCELLED", 3_000, order.created_at, cancelled.cancelled_at)


# -- deferred orders ---------------------------------------------------------------------


async def test_a_deferred_order_takes_the_units_only_and_awaits_payment(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_500, stock=10)
    order = await engine.place_order(user, [(made.id, 4)], deferred=True)
    assert (order.status, order.payment, order.paid_amount, order.total_amount) == (
        "PENDING_PAYMENT", None, 0, 6_000)
    assert order.payment_due_at == order.created_at + timedelta(seconds=600)
    assert (await engine.product(made.id)).stock == 6
    assert (await engine.balance(user)).balance == 10_000
    assert [h.type for h in (await engine.history(user)).items] == ["CHARGE"]
    assert (await engine.order(user, order.id)) == order


async def test_a_deferred_order_is_refused_with_a_coupon(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product()
    with pytest.raises(ValidationFailed) as refused:
        await engine.place_order(user, [(made.id, 1)], 5, deferred=True)
    assert refused.value.context["field"] == "issued_coupon_id"


async def test_a_deferred_order_needs_no_balance(engine, new_user, new_product) -> None:
    user, made = await new_user(), await new_product(price=5_000)
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    assert order.status == "PENDING_PAYMENT"


async def test_a_deferred_order_is_refused_out_of_stock_as_an_order(
    engine, new_user, new_product
) -> None:
    from engine.errors import OutOfStock
    user, made = await new_user(), await new_product(stock=2)
    with pytest.raises(OutOfStock):
        await engine.place_order(user, [(made.id, 3)], deferred=True)


async def test_the_timeout_comes_from_the_policy(engine_redis_url, funded_user,
                                                 new_product) -> None:
    eng = Engine(engine_redis_url, Policy(payment_timeout_s=42))
    try:
        user, made = await funded_user(1_000), await new_product()
        order = await eng.place_order(user, [(made.id, 1)], deferred=True)
        assert order.payment_due_at == order.created_at + timedelta(seconds=42)
    finally:
        await eng.close()


async def test_pay_takes_the_balance_and_answers_paid_with_its_payment(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_500, stock=10)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    paid = await engine.pay_order(user, order.id)
    assert (paid.status, paid.paid_amount, paid.total_amount) == ("PAID", 3_000, 3_000)
    assert paid.payment is not None and paid.payment.status == "COMPLETED"
    assert paid.payment.amount == 3_000 and paid.payment.id == order.id
    assert (await engine.balance(user)).balance == 7_000
    use = (await engine.history(user)).items[0]
    assert (use.type, use.amount, use.order_id) == ("USE", 3_000, order.id)
    assert (await engine.product(made.id)).stock == 8  # taken once, at placement
    assert await engine.order(user, order.id) == paid


async def test_pay_again_answers_the_paid_order_and_changes_nothing(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    paid = await engine.pay_order(user, order.id)
    assert await engine.pay_order(user, order.id) == paid
    assert (await engine.balance(user)).balance == 9_000


async def test_pay_uses_a_coupon_on_the_orders_total(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(10_000), await new_product(price=2_000)
    coupon = await issued(user, discount_type="PERCENT", value=10)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    paid = await engine.pay_order(user, order.id, coupon.id)
    assert (paid.discount_amount, paid.paid_amount, paid.issued_coupon_id) == (
        400, 3_600, coupon.id)
    assert (await engine.balance(user)).balance == 6_400
    again = await engine.place_order(user, [(made.id, 1)], deferred=True)
    with pytest.raises(CouponNotUsable):
        await engine.pay_order(user, again.id, coupon.id)


async def test_pay_with_too_little_balance_is_refused_and_the_order_stays_pending(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(1_000), await new_product(price=1_500)
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    with pytest.raises(InsufficientBalance):
        await engine.pay_order(user, order.id)
    assert (await engine.order(user, order.id)).status == "PENDING_PAYMENT"
    await engine.charge(user, 1_000)
    assert (await engine.pay_order(user, order.id)).status == "PAID"


async def test_pay_of_another_users_order_reads_as_not_found(
    engine, funded_user, new_product
) -> None:
    user, other = await funded_user(5_000), await funded_user(5_000)
    made = await new_product()
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    with pytest.raises(OrderNotFound):
        await engine.pay_order(other, order.id)
    with pytest.raises(OrderNotFound):
        await engine.pay_order(user, "99999999")


async def test_pay_of_a_cancelled_or_one_step_cancelled_order_is_not_payable(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    await engine.cancel_order(user, order.id)
    with pytest.raises(OrderNotPayable):
        await engine.pay_order(user, order.id)
    one_step = await engine.place_order(user, [(made.id, 1)])
    await engine.cancel_order(user, one_step.id)
    with pytest.raises(OrderNotPayable):
        await engine.pay_order(user, one_step.id)


async def test_pay_past_the_due_time_expires_the_order_there_and_is_refused(
    engine, r, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=5)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    await due_now(r, engine, order)
    with pytest.raises(OrderNotPayable):
        await engine.pay_order(user, order.id)
    assert (await engine.order(user, order.id)).status == "EXPIRED"
    assert (await engine.product(made.id)).stock == 5
    assert (await engine.balance(user)).balance == 10_000


async def test_cancel_of_a_pending_order_gives_the_units_back_and_moves_no_money(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=5)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    cancelled = await engine.cancel_order(user, order.id)
    assert (cancelled.status, cancelled.payment) == ("CANCELLED", None)
    assert cancelled.cancelled_at is not None
    assert (await engine.product(made.id)).stock == 5
    assert (await engine.balance(user)).balance == 10_000
    assert [h.type for h in (await engine.history(user)).items] == ["CHARGE"]
    with pytest.raises(OrderNotCancellable):
        await engine.cancel_order(user, order.id)
    kinds = [e["type"] for e in await events(outbox, engine, user)]
    assert kinds == ["order.pending", "order.cancelled"]


async def test_cancel_of_a_pending_order_past_due_expires_it_instead(
    engine, r, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=5)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    await due_now(r, engine, order)
    with pytest.raises(OrderNotCancellable):
        await engine.cancel_order(user, order.id)
    assert (await engine.order(user, order.id)).status == "EXPIRED"
    assert (await engine.product(made.id)).stock == 5


async def test_cancel_of_a_paid_deferred_order_refunds_it(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000, stock=5)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    await engine.pay_order(user, order.id)
    cancelled = await engine.cancel_order(user, order.id)
    assert cancelled.payment is not None and cancelled.payment.status == "CANCELLED"
    assert (await engine.balance(user)).balance == 10_000
    assert (await engine.product(made.id)).stock == 5


async def test_the_sweep_expires_due_orders_and_gives_their_units_back(
    engine, r, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=5)
    due = await engine.place_order(user, [(made.id, 2)], deferred=True)
    later = await engine.place_order(user, [(made.id, 1)], deferred=True)
    await due_now(r, engine, due)
    assert await engine.expire_due() == 1
    assert (await engine.order(user, due.id)).status == "EXPIRED"
    assert (await engine.order(user, due.id)).payment is None
    assert (await engine.order(user, later.id)).status == "PENDING_PAYMENT"
    assert (await engine.product(made.id)).stock == 4
    assert await engine.expire_due() == 0
    assert [e["type"] for e in await events(outbox, engine, user)] == [
        "order.pending", "order.pending", "order.expired"]


async def test_an_order_expires_by_itself_at_its_due_time_under_the_sweep(
    engine_redis_url, funded_user, new_product
) -> None:
    eng = Engine(engine_redis_url, Policy(payment_timeout_s=1))
    await eng.load()
    try:
        user, made = await funded_user(1_000), await new_product(stock=3)
        order = await eng.place_order(user, [(made.id, 3)], deferred=True)
        async with eng.sweeping(every_s=0.1):
            await asyncio.sleep(1.5)
        assert (await eng.order(user, order.id)).status == "EXPIRED"
        assert (await eng.product(made.id)).stock == 3
    finally:
        await eng.close()


async def test_sales_count_at_pay_not_at_placement(engine, funded_user, new_product) -> None:
    user, made = await funded_user(100_000), await new_product(price=10)
    order = await engine.place_order(user, [(made.id, 7)], deferred=True)
    sold = await engine._sold([made.id])  # the top 5's count, whatever the ranking
    assert sold[made.id] == 0
    await engine.pay_order(user, order.id)
    sold = await engine._sold([made.id])  # the top 5's count, whatever the ranking
    assert sold.get(made.id) == 7
    await engine.cancel_order(user, order.id)
    sold = await engine._sold([made.id])  # the top 5's count, whatever the ranking
    assert sold.get(made.id, 0) == 0


async def test_a_deferred_order_in_a_batch_counts_no_sales_for_its_neighbours_either(
    engine, funded_user, new_product
) -> None:
    a, b = await funded_user(100_000), await funded_user(100_000)
    made = await new_product(price=10)
    await asyncio.gather(engine.place_order(a, [(made.id, 3)], deferred=True),
                         engine.place_order(b, [(made.id, 2)]))
    sold = await engine._sold([made.id])  # the top 5's count, whatever the ranking
    assert sold.get(made.id) == 2


async def test_pay_honours_an_idempotency_key(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    key = Idempotency("k1", "POST /pay")
    first = await engine.pay_order(user, order.id, idem=key)
    again = Idempotency("k1", "POST /pay")
    assert await engine.pay_order(user, order.id, idem=again) == first
    assert again.replayed


async def test_the_events_are_pending_then_paid_with_the_paid_order(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    order = await engine.place_order(user, [(made.id, 1)], deferred=True)
    await engine.pay_order(user, order.id)
    found = await events(outbox, engine, user)
    assert [(e["type"], e["order"]["status"]) for e in found] == [
        ("order.pending", "PENDING_PAYMENT"), ("order.paid", "PAID")]
    assert found[1]["event_id"] == f"{order.id}:paid"
    assert found[1]["order"]["payment"]["amount"] == 1_000


# -- the preview ---------------------------------------------------------------------------


async def test_a_preview_answers_the_totals_and_writes_nothing(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(5_000), await new_product(price=2_000, stock=3)
    coupon = await issued(user, discount_type="FIXED", value=500)
    seen = await engine.preview_order(user, [(made.id, 2)], coupon.id)
    assert (seen.total_amount, seen.discount_amount, seen.paid_amount, seen.balance,
            seen.balance_sufficient) == (4_000, 500, 3_500, 5_000, True)
    line = seen.lines[0]
    assert (line.unit_price, line.line_total, line.available, line.stock) == (
        2_000, 4_000, True, 3)
    assert seen.coupon is not None and seen.coupon.usable and seen.coupon.reason is None
    assert (await engine.product(made.id)).stock == 3
    assert (await engine.balance(user)).balance == 5_000


async def test_a_preview_reports_the_rules_refusals_in_the_answer(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(1_000), await new_product(price=2_000, stock=1)
    seen = await engine.preview_order(user, [(made.id, 2)], 12345)
    assert not seen.lines[0].available
    assert not seen.balance_sufficient
    assert seen.coupon is not None and not seen.coupon.usable and seen.coupon.reason


async def test_a_preview_refuses_what_an_order_refuses_before_its_rules(
    engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    with pytest.raises(ProductNotFound):
        await engine.preview_order(user, [(99_999_999, 1)])
    with pytest.raises(ValidationFailed):
        await engine.preview_order(user, [(made.id, 1, 7)])
    with pytest.raises(ValidationFailed):
        await engine.preview_order(user, [(made.id, 1), (made.id, 2)])


async def test_a_preview_names_an_unknown_option_as_an_order_does(engine, new_user) -> None:
    from engine.models import NewOption
    user = await new_user()
    made = await engine.create_product("shoe", 1_000, options=[NewOption(name="270", stock=5)])
    with pytest.raises(OptionNotFound):
        await engine.preview_order(user, [(made.id, 1, 99_999_999)])
    seen = await engine.preview_order(user, [(made.id, 2, made.options[0].id)])
    assert (seen.lines[0].option_name, seen.lines[0].stock, seen.total_amount) == (
        "270", 5, 2_000)


async def test_pending_units_count_against_the_per_customer_limit(
    engine, funded_user
) -> None:
    from engine.errors import PurchaseLimitExceeded
    user = await funded_user(100_000)
    made = await engine.create_product("drop", 1_000, stock=10, max_per_user=2)
    order = await engine.place_order(user, [(made.id, 2)], deferred=True)
    with pytest.raises(PurchaseLimitExceeded):
        await engine.place_order(user, [(made.id, 1)], deferred=True)
    seen = await engine.preview_order(user, [(made.id, 1)])
    assert not seen.lines[0].available
    await engine.cancel_order(user, order.id)
    assert (await engine.place_order(user, [(made.id, 2)])).status == "PAID"


# -- the model's rules, against the engine -------------------------------------------------


async def test_the_models_deferred_rules_answer_as_the_engine_does(
    engine, r, funded_user, new_product
) -> None:
    """One script of deferred orders through tests/engine/model.py's Shop and the engine:
    every step answers the same code and leaves the same stock, balance and sales."""
    from tests.engine.model import Rejected, Shop
    shop = Shop()
    user, other = await funded_user(4_000), await funded_user(0)
    made = await new_product(price=1_000, stock=6)
    shop.create_product(made.id, made.name, 1_000, 6, max_per_user=None)
    shop.balances[user] = 4_000
    clock = 1_000.0  # the model's seconds; the engine's due times are its own clock's
    ids: dict[str, str] = {}

    async def both(name: str, engine_call, model_call) -> str:
        try:
            got = await engine_call()
            code = "OK"
        except Exception as exc:  # an EngineError: its code
            got, code = None, getattr(exc, "code", repr(exc))
        try:
            expected = model_call()
            want = "OK"
        except Rejected as refused:
            expected, want = None, refused.code
        assert code == want, (name, code, want)
        if got is not None and expected is not None:
            assert got.status == expected.status, name
            ids.setdefault(name, got.id)
        assert (await engine.product(made.id)).stock == shop.products[made.id].stock, name
        assert (await engine.balance(user)).balance == shop.balances[user], name
        sold = await engine._sold([made.id])  # the top 5's count, whatever the ranking
        assert sold.get(made.id, 0) == shop.sold[made.id], name
        return code

    def place(quantity: int, who: int = user):
        return lambda: engine.place_order(who, [(made.id, quantity)], deferred=True)

    await both("a", place(2), lambda: shop.take_order(user, [(made.id, 2, None)], None, clock,
                                                     "A", deferred=600))
    shop.orders[ids["a"]] = shop.orders.pop("A")
    shop.orders[ids["a"]].id = ids["a"]
    await both("b", place(3), lambda: shop.take_order(user, [(made.id, 3, None)], None, clock,
                                                     "B", deferred=600))
    shop.orders[ids["b"]] = shop.orders.pop("B")
    shop.orders[ids["b"]].id = ids["b"]
    await both("too many", place(2, other), lambda: shop.take_order(
        other, [(made.id, 2, None)], None, clock, "C", deferred=600))
    await both("pay a", lambda: engine.pay_order(user, ids["a"]),
               lambda: shop.pay(user, ids["a"], None, clock))
    await both("pay a again", lambda: engine.pay_order(user, ids["a"]),
               lambda: shop.pay(user, ids["a"], None, clock))
    await both("pay b, too little", lambda: engine.pay_order(user, ids["b"]),
               lambda: shop.pay(user, ids["b"], None, clock))
    await due_now(r, engine, await engine.order(user, ids["b"]))
    clock += 601
    await both("cancel b, due", lambda: engine.cancel_order(user, ids["b"]),
               lambda: shop.cancel(user, ids["b"], clock))
    await both("pay b, expired", lambda: engine.pay_order(user, ids["b"]),
               lambda: shop.pay(user, ids["b"], None, clock))
    await both("cancel a, paid", lambda: engine.cancel_order(user, ids["a"]),
               lambda: shop.cancel(user, ids["a"], clock))
    await both("pay a, cancelled", lambda: engine.pay_order(user, ids["a"]),
               lambda: shop.pay(user, ids["a"], None, clock))


async def test_a_preview_says_why_a_coupon_would_not_apply(
    engine, r, funded_user, new_product, issued
) -> None:
    user, other = await funded_user(50_000), await funded_user(0)
    made = await new_product(price=1_000)
    used = await issued(user, discount_type="FIXED", value=100)
    await engine.place_order(user, [(made.id, 1)], used.id)
    theirs = await issued(other, discount_type="FIXED", value=100)
    late = await issued(user, discount_type="FIXED", value=100)
    await r.hset(engine.layout.of(user).issued_coupon(late.id), "expires_ms", 1)
    reasons = {}
    for name, icid in (("used", used.id), ("theirs", theirs.id), ("late", late.id)):
        seen = await engine.preview_order(user, [(made.id, 1)], icid)
        assert seen.coupon is not None and not seen.coupon.usable
        assert (seen.discount_amount, seen.paid_amount) == (0, 1_000)
        reasons[name] = seen.coupon.reason
    assert reasons == {"used": "already used", "theirs": "unknown, or not yours",
                       "late": "expired"}


async def test_a_preview_of_a_product_off_sale_is_unavailable(engine, funded_user) -> None:
    user = await funded_user(10_000)
    made = await engine.create_product("later", 1_000, stock=5, status="SUSPENDED")
    seen = await engine.preview_order(user, [(made.id, 1)])
    assert not seen.lines[0].available and seen.balance_sufficient


async def test_a_preview_follows_a_coupons_rules_as_an_order_does(engine, funded_user) -> None:
    from datetime import UTC, datetime

    from engine.coupons import CouponRules
    user = await funded_user(100_000)
    made = await engine.create_product("ruled", 1_000, stock=100)
    now = datetime.now(UTC)
    coupon = await engine.create_coupon(
        "ruled", "PERCENT", 50, 5, now - timedelta(hours=1), now + timedelta(hours=1),
        rules=CouponRules(min_order_amount=3_000, max_discount_amount=2_000))
    held = await engine.issue_coupon(user, coupon.id)
    small = await engine.preview_order(user, [(made.id, 2)], held.id)
    assert small.coupon is not None and not small.coupon.usable
    assert small.coupon.reason == "the order's total 2000 is below the coupon's minimum 3000"
    big = await engine.preview_order(user, [(made.id, 10)], held.id)
    assert (big.discount_amount, big.paid_amount) == (2_000, 8_000)  # capped, not 5,000
    order = await engine.place_order(user, [(made.id, 10)], held.id)
    assert (order.discount_amount, order.paid_amount) == (2_000, 8_000)  # as the order does
