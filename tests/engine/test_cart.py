"""The cart: put against live stock, remove, read priced live, check out."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.errors import CartEmpty, OutOfStock, ProductNotFound, ValidationFailed
from engine.models import NewOption
from engine.outbox.events import CartUpdated
from tests.engine.support import snapshot

UNKNOWN_PRODUCT = 9_000_000_000


async def test_empty_cart_reads_empty(engine: Engine, new_user) -> None:
    cart = await engine.cart(await new_user())
    assert (cart.items, cart.total_amount) == ([], 0)


async def test_put_sets_the_quantity_and_answers_the_priced_cart(
    engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product(price=1_200, stock=5, name="mug")
    await engine.put_cart_item(user, made.id, 2)
    cart = await engine.put_cart_item(user, made.id, 3)  # sets, does not add
    [line] = cart.items
    assert (line.product_id, line.name, line.unit_price, line.quantity, line.line_total,
            line.in_stock) == (made.id, "mug", 1_200, 3, 3_600, True)
    assert cart.total_amount == 3_600
    assert await engine.cart(user) == cart


async def test_cart_lines_are_in_product_id_order(engine, new_user, new_product) -> None:
    user = await new_user()
    first, second = await new_product(), await new_product()
    await engine.put_cart_item(user, second.id, 1)
    cart = await engine.put_cart_item(user, first.id, 1)
    assert [line.product_id for line in cart.items] == [first.id, second.id]


async def test_put_above_live_stock_is_out_of_stock(engine, new_user, new_product) -> None:
    user, made = await new_user(), await new_product(stock=2)
    with pytest.raises(OutOfStock):
        await engine.put_cart_item(user, made.id, 3)
    assert (await engine.cart(user)).items == []


async def test_put_of_unknown_product_is_product_not_found(engine, new_user) -> None:
    with pytest.raises(ProductNotFound):
        await engine.put_cart_item(await new_user(), UNKNOWN_PRODUCT, 1)


@pytest.mark.parametrize("quantity", [0, -1, 1_001])
async def test_put_quantity_outside_one_to_one_thousand_is_a_validation_error(
    engine, new_user, new_product, quantity
) -> None:
    user, made = await new_user(), await new_product(stock=5_000)
    with pytest.raises(ValidationFailed):
        await engine.put_cart_item(user, made.id, quantity)


async def test_remove_takes_the_line_out_and_absent_is_fine(engine, new_user, new_product) -> None:
    user, made = await new_user(), await new_product()
    await engine.put_cart_item(user, made.id, 1)
    await engine.remove_cart_item(user, made.id)
    await engine.remove_cart_item(user, made.id)
    assert (await engine.cart(user)).items == []


async def test_cart_reads_live_price_and_stock(engine, new_user, new_product) -> None:
    user, made = await new_user(), await new_product(price=1_000, stock=5)
    await engine.put_cart_item(user, made.id, 4)
    await engine.update_product(made.id, price=2_000, stock_delta=-2)
    [line] = (await engine.cart(user)).items
    assert (line.unit_price, line.line_total, line.in_stock) == (2_000, 8_000, False)


async def test_checkout_orders_the_whole_cart_and_empties_it(
    engine, funded_user, new_product
) -> None:
    user = await funded_user(20_000)
    a, b = await new_product(price=1_000), await new_product(price=3_000)
    await engine.put_cart_item(user, b.id, 1)
    await engine.put_cart_item(user, a.id, 2)
    order = await engine.checkout(user)
    assert [(i.product_id, i.quantity) for i in order.items] == [(a.id, 2), (b.id, 1)]
    assert (order.status, order.paid_amount) == ("PAID", 5_000)
    assert (await engine.cart(user)).items == []
    assert (await engine.balance(user)).balance == 15_000
    assert (await engine.product(a.id)).stock == 98


async def test_checkout_applies_the_coupon(engine, funded_user, new_product, issued) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000)
    coupon = await issued(user, discount_type="PERCENT", value=10)
    await engine.put_cart_item(user, made.id, 3)
    order = await engine.checkout(user, coupon.id)
    assert (order.discount_amount, order.paid_amount) == (300, 2_700)


async def test_checkout_of_an_empty_cart_is_cart_empty(engine, funded_user) -> None:
    with pytest.raises(CartEmpty):
        await engine.checkout(await funded_user(1_000))


async def test_failed_checkout_changes_nothing_and_keeps_the_cart(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product(price=1_000, stock=5)
    await engine.put_cart_item(user, made.id, 5)
    await engine.update_product(made.id, stock_delta=-1)  # the cart now asks for too much
    before = await snapshot(engine, outbox, user, [made.id])
    with pytest.raises(OutOfStock):
        await engine.checkout(user)
    assert await snapshot(engine, outbox, user, [made.id]) == before


async def test_cart_holds_at_most_fifty_products(engine, new_user, new_product) -> None:
    user = await new_user()
    products = [await new_product(price=10) for _ in range(51)]
    for p in products[:50]:
        await engine.put_cart_item(user, p.id, 1)
    with pytest.raises(ValidationFailed):
        await engine.put_cart_item(user, products[50].id, 1)
    assert len((await engine.put_cart_item(user, products[0].id, 2)).items) == 50


def _lines(event: CartUpdated) -> list[tuple[int, int | None, int]]:
    return sorted((i.product_id, i.option_id, i.quantity) for i in event.items)


async def test_each_cart_write_emits_the_whole_cart_after_it(
    engine, new_user, new_product, outbox
) -> None:
    user, plain = await new_user(), await new_product()
    sized = await engine.create_product("shoe", 1_000, options=[NewOption(name="270", stock=5)])
    size = sized.options[0].id
    mark = await outbox.mark()
    await engine.put_cart_item(user, plain.id, 2)
    await engine.put_cart_item(user, sized.id, 1, size)
    await engine.put_cart_item(user, plain.id, 3)
    await engine.remove_cart_item(user, plain.id)
    await engine.remove_cart_item(user, plain.id)  # absent: nothing changed, nothing emitted
    events = await outbox.since(mark)
    assert all(isinstance(e, CartUpdated) and e.user_id == user for e in events)
    assert [_lines(e) for e in events] == [  # type: ignore[arg-type]
        [(plain.id, None, 2)], [(plain.id, None, 2), (sized.id, size, 1)],
        [(plain.id, None, 3), (sized.id, size, 1)], [(sized.id, size, 1)]]


async def test_a_cart_with_lines_keeps_the_entry_of_its_last_change_in_the_floor(
    engine, r, new_user, new_product, outbox
) -> None:
    user, made = await new_user(), await new_product()
    floor = engine.layout.of(user).floor(user)
    await engine.put_cart_item(user, made.id, 1)
    last = (await r.xrevrange(engine.layout.of(user).outbox, count=1))[0][0]
    assert await r.hget(floor, "k") == last  # settle.lua drops the cart once it is committed
    await engine.remove_cart_item(user, made.id)
    assert await r.hget(floor, "k") is None  # an empty cart: nothing for settle.lua to drop
