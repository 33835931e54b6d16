"""The outbox: every state change appends exactly one event, carrying what a consumer needs;
rejections, replays and reads append nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from engine import Engine, Idempotency
from engine.errors import EngineError
from engine.models import NewOption, Product, ProductOption
from engine.outbox.events import (
    BalanceCharged,
    CartUpdated,
    CouponCreated,
    CouponIssued,
    OptionCreated,
    OptionState,
    OptionUpdated,
    OrderCancelled,
    OrderPaid,
    ProductCreated,
    ProductState,
    ProductUpdated,
)
from tests.engine.support import window


def option_state(option: ProductOption) -> OptionState:
    """An option as the outbox carries it."""
    return OptionState(id=option.id, name=option.name, extra_price=option.extra_price,
                       stock=option.stock)


def state(product: Product, with_options: bool = True) -> ProductState:
    """A product as the outbox carries it (product.updated carries no options)."""
    return ProductState(
        id=product.id, name=product.name, price=product.price, stock=product.stock,
        status=product.status, sale_starts_at=product.sale_starts_at,
        sale_ends_at=product.sale_ends_at, max_per_user=product.max_per_user,
        category=product.category,
        options=[option_state(o) for o in product.options] if with_options else [])


async def test_charge_emits_balance_charged_with_its_history_line(
    engine: Engine, new_user, outbox
) -> None:
    user = await new_user()
    mark = await outbox.mark()
    await engine.charge(user, 3_000)
    [event] = await outbox.since(mark)
    assert isinstance(event, BalanceCharged)
    assert (event.user_id, event.amount, event.balance_after) == (user, 3_000, 3_000)
    assert event.history == (await engine.history(user)).items[0]


async def test_product_creation_emits_product_created(engine, outbox) -> None:
    mark = await outbox.mark()
    made = await engine.create_product("lamp", 4_000, 9)
    [event] = await outbox.since(mark)
    assert isinstance(event, ProductCreated) and event.product == state(made)


async def test_product_update_emits_product_updated_with_the_delta(
    engine, new_product, outbox
) -> None:
    made = await new_product(stock=5)
    mark = await outbox.mark()
    after = await engine.update_product(made.id, price=777, stock_delta=-2)
    [event] = await outbox.since(mark)
    assert isinstance(event, ProductUpdated)
    assert (event.product, event.stock_delta) == (state(after), -2)


async def test_a_product_with_options_emits_them_and_how_it_is_sold(engine, outbox) -> None:
    opens = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    mark = await outbox.mark()
    made = await engine.create_product(
        "sneaker", 90_000, options=[NewOption(name="260", stock=50),
                                    NewOption(name="270", extra_price=5_000, stock=40)],
        sale_starts_at=opens, max_per_user=1, category="shoes")
    [event] = await outbox.since(mark)
    assert isinstance(event, ProductCreated) and event.product == state(made)
    assert (event.product.stock, event.product.sale_starts_at) == (90, opens)
    assert [(o.name, o.extra_price, o.stock) for o in event.product.options] == [
        ("260", 0, 50), ("270", 5_000, 40)]


async def test_a_change_of_definition_emits_the_whole_product_without_its_options(
    engine, outbox
) -> None:
    made = await engine.create_product("sneaker", 90_000, options=[NewOption(name="260")],
                                       max_per_user=2, category="shoes")
    mark = await outbox.mark()
    after = await engine.update_product(made.id, status="SUSPENDED", category=None)
    [event] = await outbox.since(mark)
    assert isinstance(event, ProductUpdated)
    assert (event.product, event.stock_delta) == (state(after, with_options=False), 0)
    assert (event.product.status, event.product.max_per_user, event.product.category) == (
        "SUSPENDED", 2, None)


async def test_adding_and_changing_an_option_emit_option_events(engine, outbox) -> None:
    made = await engine.create_product("sneaker", 90_000, options=[NewOption(name="260")])
    mark = await outbox.mark()
    added = await engine.add_option(made.id, "280", extra_price=1_000, stock=30)
    changed = await engine.update_option(made.id, added.id, name="280mm", stock_delta=-5)
    created, updated = await outbox.since(mark)
    assert isinstance(created, OptionCreated) and isinstance(updated, OptionUpdated)
    assert (created.product_id, created.option) == (made.id, OptionState(
        id=added.id, name="280", extra_price=1_000, stock=30))
    assert (updated.product_id, updated.option, updated.stock_delta) == (
        made.id, option_state(changed), -5)
    assert updated.option.stock == 25


async def test_coupon_creation_emits_coupon_created(engine, outbox) -> None:
    mark = await outbox.mark()
    made = await engine.create_coupon("c", "PERCENT", 15, 4, *window())
    [event] = await outbox.since(mark)
    assert isinstance(event, CouponCreated) and event.coupon == made


async def test_issue_emits_coupon_issued_with_its_groups_remaining_count(
    engine, new_coupon, new_user, outbox, r
) -> None:
    # 400 over 4 groups: 50 units dealt to each (engine/allotments.py, a half-deal)
    made, user = await new_coupon(quantity=400), await new_user()
    mark = await outbox.mark()
    got = await engine.issue_coupon(user, made.id)
    [event] = await outbox.since(mark)
    assert isinstance(event, CouponIssued)
    # What the user's group holds after the issue (engine/allotments.py), not the total.
    assert (event.issued, event.remaining) == (got, 49)
    assert int(await r.hget(engine.layout.of(user).coupon(made.id), "remaining")) == 49


async def test_order_emits_order_paid_with_the_order_balance_and_use_line(
    engine, funded_user, new_product, issued, outbox
) -> None:
    user = await funded_user(10_000)
    a, b = await new_product(price=1_000), await new_product(price=250)
    coupon = await issued(user, value=100)
    mark = await outbox.mark()
    order = await engine.place_order(user, [(a.id, 2), (b.id, 4)], coupon.id)
    [event] = await outbox.since(mark)
    assert isinstance(event, OrderPaid)
    assert (event.event_id, event.order, event.balance_after) == (
        f"{order.id}:paid", order, 10_000 - 2_900)
    assert event.history == (await engine.history(user)).items[0]
    assert event.at == order.created_at


async def test_fully_discounted_order_emits_order_paid_without_a_history_line(
    engine, new_user, new_product, issued, outbox
) -> None:
    user, made = await new_user(), await new_product(price=100)
    coupon = await issued(user, discount_type="PERCENT", value=100)
    mark = await outbox.mark()
    await engine.place_order(user, [(made.id, 1)], coupon.id)
    [event] = await outbox.since(mark)
    assert isinstance(event, OrderPaid)
    assert (event.history, event.balance_after, event.order.paid_amount) == (None, 0, 0)


async def test_checkout_emits_order_paid_then_the_emptied_cart(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product()
    await engine.put_cart_item(user, made.id, 2)
    mark = await outbox.mark()
    order = await engine.checkout(user)
    [paid, cart] = await outbox.since(mark)
    assert isinstance(paid, OrderPaid) and paid.order == order
    assert isinstance(cart, CartUpdated) and (cart.user_id, cart.items) == (user, [])


@pytest.mark.parametrize("expire_first", [False, True])
async def test_cancel_emits_order_cancelled_with_refund_and_coupon_outcome(
    engine, funded_user, new_product, issued, outbox, expire_first
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    coupon = await issued(user, value=300, starts_s=-10, ends_s=1.0 if expire_first else 3600)
    order = await engine.place_order(user, [(made.id, 1)], coupon.id)
    if expire_first:
        await asyncio.sleep(1.1)
    mark = await outbox.mark()
    cancelled = await engine.cancel_order(user, order.id)
    [event] = await outbox.since(mark)
    assert isinstance(event, OrderCancelled)
    assert (event.event_id, event.order, event.balance_after) == (
        f"{order.id}:cancelled", cancelled, 10_000)
    assert event.history is not None
    assert (event.history.type, event.history.amount) == ("REFUND", 700)
    assert event.coupon_restored is not expire_first


async def test_rejections_replays_and_reads_append_nothing(
    engine, funded_user, new_user, new_product, new_coupon, outbox
) -> None:
    user, capped = await funded_user(10_000), await funded_user(10_000_000)
    made, coupon = await new_product(stock=1), await new_coupon(quantity=1)
    await engine.issue_coupon(await new_user(), coupon.id)
    order = await engine.place_order(user, [(made.id, 1)], idem=Idempotency("k", "fp"))
    await engine.cancel_order(user, order.id)
    length = await outbox.length()
    refusals = [
        engine.charge(user, 5), engine.charge(capped, 1_000),
        engine.update_product(made.id, stock_delta=-2), engine.issue_coupon(user, coupon.id),
        engine.place_order(user, [(made.id, 2)]), engine.cancel_order(user, order.id),
        engine.checkout(user), engine.put_cart_item(user, made.id, 5),
    ]
    for call in refusals:
        with pytest.raises(EngineError):
            await call
    await engine.place_order(user, [(made.id, 1)], idem=Idempotency("k", "fp"))  # a replay
    await engine.remove_cart_item(user, made.id)  # a line the cart does not hold
    for read in (engine.balance(user), engine.history(user), engine.product(made.id),
                 engine.products(), engine.top(), engine.coupon(coupon.id),
                 engine.user_coupons(user), engine.orders(user), engine.order(user, order.id),
                 engine.cart(user)):
        await read
    assert await outbox.length() == length
