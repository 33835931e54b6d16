"""Cancelling: stock and money come back once, the coupon only while its window is open."""

from __future__ import annotations

import asyncio

import pytest

from engine import Engine
from engine.errors import OrderNotCancellable, OrderNotFound


async def test_cancel_gives_back_stock_and_money_with_a_refund_line(
    engine: Engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_500, stock=10)
    order = await engine.place_order(user, [(made.id, 4)])
    cancelled = await engine.cancel_order(user, order.id)
    assert cancelled.status == "CANCELLED" and cancelled.cancelled_at is not None
    assert (cancelled.id, cancelled.items, cancelled.paid_amount) == (
        order.id, order.items, order.paid_amount)
    assert (await engine.product(made.id)).stock == 10
    assert (await engine.balance(user)).balance == 10_000
    refund = (await engine.history(user)).items[0]
    assert (refund.type, refund.amount, refund.balance_after, refund.order_id) == (
        "REFUND", 6_000, 10_000, order.id)


async def test_cancelled_order_reads_cancelled(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 1)])
    cancelled = await engine.cancel_order(user, order.id)
    assert await engine.order(user, order.id) == cancelled
    assert (await engine.orders(user)).items == [cancelled]


async def test_refund_is_never_refused_for_the_balance_cap(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000_000), await new_product(price=1_000_000)
    order = await engine.place_order(user, [(made.id, 1)])
    await engine.charge(user, 1_000_000)  # back at the cap
    await engine.cancel_order(user, order.id)
    assert (await engine.balance(user)).balance == 11_000_000
    assert (await engine.history(user)).items[0].type == "REFUND"


async def test_cancel_of_a_fully_discounted_order_writes_no_refund_line(
    engine, new_user, new_product, issued
) -> None:
    user, made = await new_user(), await new_product(price=500)
    coupon = await issued(user, discount_type="FIXED", value=500)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    await engine.cancel_order(user, order.id)
    assert (await engine.history(user)).items == []
    assert (await engine.balance(user)).balance == 0


async def test_cancel_within_the_window_gives_the_coupon_back_for_reuse(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(10_000), await new_product()
    coupon = await issued(user, value=200)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    await engine.cancel_order(user, order.id)
    [held] = (await engine.user_coupons(user)).items
    assert (held.status, held.order_id) == ("AVAILABLE", None)
    again = await engine.place_order(user, [(made.id, 1)], coupon.id)
    assert again.discount_amount == 200


async def test_cancel_after_the_window_keeps_the_coupon_used(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(10_000), await new_product()
    coupon = await issued(user, starts_s=-10, ends_s=1.0)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    await asyncio.sleep(1.1)
    await engine.cancel_order(user, order.id)
    [held] = (await engine.user_coupons(user)).items
    assert held.status == "USED"
    assert (await engine.balance(user)).balance == 10_000


async def test_cancelling_twice_is_order_not_cancellable_and_refunds_once(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=10)
    order = await engine.place_order(user, [(made.id, 2)])
    await engine.cancel_order(user, order.id)
    length = await outbox.length()
    with pytest.raises(OrderNotCancellable):
        await engine.cancel_order(user, order.id)
    assert (await engine.balance(user)).balance == 10_000
    assert (await engine.product(made.id)).stock == 10
    assert await outbox.length() == length


async def test_cancelling_another_users_order_is_order_not_found_and_changes_nothing(
    engine, funded_user, new_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=10)
    order = await engine.place_order(user, [(made.id, 2)])
    with pytest.raises(OrderNotFound):
        await engine.cancel_order(await new_user(), order.id)
    assert (await engine.order(user, order.id)).status == "PAID"
    assert (await engine.product(made.id)).stock == 8


async def test_cancelling_an_unknown_order_is_order_not_found(engine, new_user) -> None:
    with pytest.raises(OrderNotFound):
        await engine.cancel_order(await new_user(), "999999999999")
