"""Placing orders: lines, all-or-nothing over stock, coupon and balance, discounts, check order."""

from __future__ import annotations

import asyncio

import pytest

from engine import Engine
from engine.errors import (
    CouponNotUsable,
    InsufficientBalance,
    OrderNotFound,
    OutOfStock,
    ProductNotFound,
    ValidationFailed,
)
from tests.engine.support import snapshot

UNKNOWN_PRODUCT = 9_000_000_000


async def test_order_takes_stock_and_money_and_answers_the_paid_order(
    engine: Engine, funded_user, new_product
) -> None:
    user = await funded_user(50_000)
    a, b = await new_product(price=1_200, stock=10, name="a"), await new_product(price=300)
    order = await engine.place_order(user, [(a.id, 3), (b.id, 2)])
    assert (order.user_id, order.status, order.issued_coupon_id) == (user, "PAID", None)
    assert [(i.product_id, i.name, i.unit_price, i.quantity) for i in order.items] == [
        (a.id, "a", 1_200, 3), (b.id, "widget", 300, 2)]
    assert (order.total_amount, order.discount_amount, order.paid_amount) == (4_200, 0, 4_200)
    assert (await engine.balance(user)).balance == 45_800
    assert (await engine.product(a.id)).stock == 7
    assert (await engine.product(b.id)).stock == 98


async def test_order_writes_a_use_history_line_naming_the_order(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product(price=2_500)
    order = await engine.place_order(user, [(made.id, 2)])
    newest = (await engine.history(user)).items[0]
    assert (newest.type, newest.amount, newest.balance_after, newest.order_id) == (
        "USE", 5_000, 5_000, order.id)


async def test_order_may_spend_the_balance_to_exactly_zero(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(3_000), await new_product(price=1_000)
    await engine.place_order(user, [(made.id, 3)])
    assert (await engine.balance(user)).balance == 0


async def test_order_may_take_the_last_units(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(stock=4)
    await engine.place_order(user, [(made.id, 4)])
    assert (await engine.product(made.id)).stock == 0


async def test_order_with_fifty_lines_is_accepted(engine, funded_user, new_product) -> None:
    user = await funded_user(100_000)
    products = [await new_product(price=10) for _ in range(50)]
    order = await engine.place_order(user, [(p.id, 1) for p in products])
    assert len(order.items) == 50 and order.total_amount == 500


async def test_quantity_of_one_thousand_is_accepted(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(price=1, stock=1_000)
    assert (await engine.place_order(user, [(made.id, 1_000)])).total_amount == 1_000


@pytest.mark.parametrize("lines", [0, 51])
async def test_order_outside_one_to_fifty_lines_is_a_validation_error(
    engine, funded_user, new_product, lines
) -> None:
    user = await funded_user(10_000)
    products = [await new_product(price=10) for _ in range(lines)]
    with pytest.raises(ValidationFailed):
        await engine.place_order(user, [(p.id, 1) for p in products])


@pytest.mark.parametrize("quantity", [0, -1, 1_001])
async def test_quantity_outside_one_to_one_thousand_is_a_validation_error(
    engine, funded_user, new_product, quantity
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=2_000)
    with pytest.raises(ValidationFailed):
        await engine.place_order(user, [(made.id, quantity)])
    assert (await engine.product(made.id)).stock == 2_000


async def test_order_naming_a_product_twice_is_a_validation_error(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    with pytest.raises(ValidationFailed):
        await engine.place_order(user, [(made.id, 1), (made.id, 2)])


async def test_order_fails_whole_when_one_line_is_out_of_stock(
    engine, funded_user, new_product, issued, outbox
) -> None:
    user = await funded_user(100_000)
    plenty, scarce = await new_product(stock=50), await new_product(stock=2)
    coupon = await issued(user)
    before = await snapshot(engine, outbox, user, [plenty.id, scarce.id])
    with pytest.raises(OutOfStock) as refused:
        await engine.place_order(user, [(plenty.id, 5), (scarce.id, 3)], coupon.id)
    assert refused.value.context["product_id"] == scarce.id
    assert str(scarce.id) in refused.value.detail
    assert await snapshot(engine, outbox, user, [plenty.id, scarce.id]) == before


async def test_order_fails_whole_when_one_product_is_unknown(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product()
    before = await snapshot(engine, outbox, user, [made.id])
    with pytest.raises(ProductNotFound) as refused:
        await engine.place_order(user, [(made.id, 1), (UNKNOWN_PRODUCT, 1)])
    assert refused.value.context["product_id"] == UNKNOWN_PRODUCT
    assert await snapshot(engine, outbox, user, [made.id]) == before


async def test_order_fails_whole_when_the_balance_is_short(
    engine, funded_user, new_product, issued, outbox
) -> None:
    user, made = await funded_user(5_890), await new_product(price=1_000)
    coupon = await issued(user, value=100)
    before = await snapshot(engine, outbox, user, [made.id])
    with pytest.raises(InsufficientBalance):
        await engine.place_order(user, [(made.id, 6)], coupon.id)  # 6,000 - 100 > 5,890
    assert await snapshot(engine, outbox, user, [made.id]) == before


async def test_order_fails_whole_when_the_coupon_is_not_usable(
    engine, funded_user, new_user, new_product, issued, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product()
    someone_elses = await issued(await new_user())
    before = await snapshot(engine, outbox, user, [made.id])
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(made.id, 1)], someone_elses.id)
    assert await snapshot(engine, outbox, user, [made.id]) == before


async def test_product_not_found_wins_over_out_of_stock(engine, funded_user, new_product) -> None:
    user, empty = await funded_user(10_000), await new_product(stock=0)
    with pytest.raises(ProductNotFound):
        await engine.place_order(user, [(empty.id, 1), (UNKNOWN_PRODUCT, 1)])


async def test_out_of_stock_wins_over_an_unusable_coupon(engine, funded_user, new_product) -> None:
    user, empty = await funded_user(10_000), await new_product(stock=0)
    with pytest.raises(OutOfStock):
        await engine.place_order(user, [(empty.id, 1)], issued_coupon_id=UNKNOWN_PRODUCT)


async def test_unusable_coupon_wins_over_insufficient_balance(
    engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(made.id, 1)], issued_coupon_id=UNKNOWN_PRODUCT)


async def test_unknown_coupon_is_not_usable(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product()
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(made.id, 1)], issued_coupon_id=UNKNOWN_PRODUCT)


async def test_another_users_coupon_is_not_usable(
    engine, funded_user, new_user, new_product, issued
) -> None:
    user, made = await funded_user(10_000), await new_product()
    theirs = await issued(await new_user())
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(made.id, 1)], theirs.id)


async def test_used_coupon_is_not_usable_again(engine, funded_user, new_product, issued) -> None:
    user, made = await funded_user(10_000), await new_product()
    coupon = await issued(user)
    await engine.place_order(user, [(made.id, 1)], coupon.id)
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(made.id, 1)], coupon.id)


async def test_expired_coupon_is_not_usable(engine, funded_user, new_product, issued) -> None:
    user, made = await funded_user(10_000), await new_product()
    coupon = await issued(user, starts_s=-10, ends_s=1.0)
    await asyncio.sleep(1.1)
    with pytest.raises(CouponNotUsable):
        await engine.place_order(user, [(made.id, 1)], coupon.id)


async def test_used_coupon_reads_used_with_its_order(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(10_000), await new_product()
    coupon = await issued(user)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    [held] = (await engine.user_coupons(user)).items
    assert (held.status, held.order_id) == ("USED", order.id)


async def test_fixed_discount_comes_off_the_total(engine, funded_user, new_product, issued) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    coupon = await issued(user, discount_type="FIXED", value=300)
    order = await engine.place_order(user, [(made.id, 2)], coupon.id)
    assert (order.total_amount, order.discount_amount, order.paid_amount) == (2_000, 300, 1_700)
    assert order.issued_coupon_id == coupon.id
    assert (await engine.balance(user)).balance == 8_300


async def test_percent_discount_is_floored_to_the_won(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(10_000), await new_product(price=999)
    coupon = await issued(user, discount_type="PERCENT", value=33)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    assert (order.discount_amount, order.paid_amount) == (329, 670)  # 329.67 floored


async def test_fixed_discount_is_capped_at_the_total(
    engine, funded_user, new_product, issued
) -> None:
    user, made = await funded_user(1_000), await new_product(price=700)
    coupon = await issued(user, discount_type="FIXED", value=5_000)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    assert (order.total_amount, order.discount_amount, order.paid_amount) == (700, 700, 0)


async def test_full_discount_writes_no_use_line_and_needs_no_balance(
    engine, new_user, new_product, issued
) -> None:
    user, made = await new_user(), await new_product(price=700)
    coupon = await issued(user, discount_type="PERCENT", value=100)
    order = await engine.place_order(user, [(made.id, 2)], coupon.id)
    assert (order.discount_amount, order.paid_amount) == (1_400, 0)
    assert (await engine.history(user)).items == []
    assert (await engine.balance(user)).balance == 0


async def test_order_keeps_the_price_it_was_paid_at(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    order = await engine.place_order(user, [(made.id, 1)])
    await engine.update_product(made.id, price=5_000, name="dearer")
    kept = await engine.order(user, order.id)
    assert (kept.items[0].unit_price, kept.items[0].name) == (1_000, "widget")
    assert (await engine.place_order(user, [(made.id, 1)])).total_amount == 5_000


async def test_owner_reads_the_order_as_answered(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 1)])
    assert await engine.order(user, order.id) == order


@pytest.mark.parametrize("order_id", ["999999999999", "abc", "", "1 OR 1"])
async def test_unknown_order_is_order_not_found(engine, new_user, order_id) -> None:
    with pytest.raises(OrderNotFound):
        await engine.order(await new_user(), order_id)


async def test_another_users_order_reads_as_order_not_found(
    engine, funded_user, new_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 1)])
    with pytest.raises(OrderNotFound):
        await engine.order(await new_user(), order.id)


async def test_orders_list_answers_any_cursor_with_the_ids_below_it(
    engine, funded_user, new_product
) -> None:
    """The cursor need not be one of the user's ids: another user's orders come between
    theirs, and a client may send any digits. Every cursor from below the first id to
    above the last gets exactly the user's ids below it, newest first."""
    user, other, made = await funded_user(10_000), await funded_user(10_000), await new_product()
    mine = []
    for _ in range(6):
        mine.append(int((await engine.place_order(user, [(made.id, 1)])).id))
        await engine.place_order(other, [(made.id, 1)])
    for cursor in range(mine[0] - 1, mine[-1] + 3):
        page = await engine.orders(user, limit=2, cursor=str(cursor))
        below = [i for i in reversed(mine) if i < cursor]
        assert [int(o.id) for o in page.items] == below[:2], cursor
        assert page.next_cursor == (str(below[1]) if len(below) > 2 else None), cursor
    assert [int(o.id) for o in (await engine.orders(user, limit=10)).items] == mine[::-1]


async def test_orders_list_newest_first_by_cursor(engine, funded_user, new_product) -> None:
    user, made = await funded_user(10_000), await new_product()
    placed = [(await engine.place_order(user, [(made.id, 1)])).id for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = await engine.orders(user, limit=2, cursor=cursor)
        seen += [o.id for o in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(placed))
