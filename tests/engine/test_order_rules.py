"""Issue 27's order rules: options per line, the sale's status and window on Redis' clock,
the per-customer limit, in the contract's order (take_order in engine/lua/_lib.lua,
Shop.take_order in tests/engine/model.py), through orders, checkout, cancel and the cart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from engine import Engine, Idempotency
from engine.errors import (
    EngineError,
    InsufficientBalance,
    OptionNotFound,
    OutOfStock,
    ProductNotFound,
    ProductNotOnSale,
    PurchaseLimitExceeded,
    ValidationFailed,
)
from engine.models import NewOption, Product
from tests.engine.support import allot, flush_db

UNKNOWN = 9_000_000_000
Drop = Callable[..., Awaitable[Product]]


@pytest.fixture
def drop(engine: Engine) -> Drop:
    """A new product with options (name, extra price, stock), 1,000 won, on sale unless
    told otherwise (any create_product keyword passes through)."""

    async def make(*options: tuple[str, int, int], **kw: Any) -> Product:
        kw.setdefault("options", [NewOption(name=n, extra_price=e, stock=s)
                                  for n, e, s in options or (("260", 0, 10),)])
        return await engine.create_product(kw.pop("name", "sneaker"), kw.pop("price", 1_000),
                                           **kw)

    return make


async def redis_ms(r: aioredis.Redis) -> int:
    """Redis' clock (TIME), the one the order script decides the window on."""
    s, us = await r.time()
    return int(s) * 1000 + int(us) // 1000


def at_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def option_stock(product: Product) -> dict[int, int]:
    return {o.id: o.stock for o in product.options}


async def refusal(call: Awaitable[Any]) -> EngineError:
    """The domain error a call raised (the test fails if it succeeded)."""
    try:
        await call
    except EngineError as error:
        return error
    raise AssertionError("the call succeeded")


# -- options per line -------------------------------------------------------------------


async def test_an_option_line_takes_the_options_units_at_price_plus_extra(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(50_000)
    made = await drop(("260", 0, 10), ("270", 500, 10), price=2_000)
    o260, o270 = made.options
    order = await engine.place_order(user, [(made.id, 2, o270.id), (made.id, 1, o260.id)])
    assert [(i.product_id, i.option_id, i.option_name, i.unit_price, i.quantity)
            for i in order.items] == [(made.id, o270.id, "270", 2_500, 2),
                                      (made.id, o260.id, "260", 2_000, 1)]
    assert order.total_amount == 7_000
    now = await engine.product(made.id)
    assert option_stock(now) == {o260.id: 9, o270.id: 8} and now.stock == 17


async def test_a_plain_line_answers_null_option_fields_in_the_stored_json(
    engine: Engine, funded_user, new_product, r
) -> None:
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 1)])
    assert (order.items[0].option_id, order.items[0].option_name) == (None, None)
    stored = await r.hget(engine.layout.of(user).order(int(order.id)), "json")
    assert b'"option_id":null,"option_name":null' in stored


async def test_two_options_of_one_product_are_two_lines_but_one_option_twice_is_refused(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(10_000)
    made = await drop(("a", 0, 5), ("b", 0, 5))
    a, _ = made.options
    calls = engine.batches.calls
    with pytest.raises(ValidationFailed):
        await engine.place_order(user, [(made.id, 1, a.id), (made.id, 2, a.id)])
    assert engine.batches.calls == calls  # refused before any script ran
    assert option_stock(await engine.product(made.id))[a.id] == 5


async def test_the_script_refuses_one_option_twice_on_its_own(
    engine: Engine, funded_user, drop
) -> None:
    """The (product, option) rule holds in place_orders.lua too, not only in Python."""
    user = await funded_user(10_000)
    made = await drop()
    (a,) = made.options
    order = engine._order(engine.layout.of(user), user, [(made.id, 1, a.id)], None, None)
    order.keys += order.keys[-2:]  # the line's product and option keys again (LINE_K)
    order.lines, order.flags = [*order.lines] * 2, ["", ""]
    reply = await engine.batches.place(engine.layout.of(user), order)
    assert reply[0] == b"VALIDATION_ERROR" and b"at most once" in reply[1]


async def test_a_product_with_options_needs_an_option_named_by_its_line(
    engine: Engine, funded_user, drop, new_product
) -> None:
    user, plain, made = await funded_user(10_000), await new_product(), await drop()
    error = await refusal(engine.place_order(user, [(plain.id, 1), (made.id, 1)]))
    assert isinstance(error, ValidationFailed)
    assert error.context["field"] == "items[1].option_id"


async def test_a_plain_product_takes_no_option(
    engine: Engine, funded_user, drop, new_product
) -> None:
    user, plain, made = await funded_user(10_000), await new_product(), await drop()
    error = await refusal(engine.place_order(user, [(plain.id, 1, made.options[0].id)]))
    assert isinstance(error, ValidationFailed)
    assert error.context["field"] == "items[0].option_id"
    assert (await engine.product(plain.id)).stock == 100


async def test_an_unknown_option_or_another_products_is_option_not_found(
    engine: Engine, funded_user, drop
) -> None:
    user, made, other = await funded_user(10_000), await drop(), await drop()
    for option_id in (UNKNOWN, other.options[0].id):
        error = await refusal(engine.place_order(user, [(made.id, 1, option_id)]))
        assert isinstance(error, OptionNotFound)
        assert error.context == {"product_id": made.id, "option_id": option_id}


async def test_product_not_found_comes_before_the_option_rules(
    engine: Engine, funded_user
) -> None:
    user = await funded_user(10_000)
    with pytest.raises(ProductNotFound):
        await engine.place_order(user, [(UNKNOWN, 1, UNKNOWN)])


async def test_option_not_found_comes_before_the_sale_rules(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(10_000)
    shut, made = await drop(status="SUSPENDED"), await drop()
    with pytest.raises(OptionNotFound):
        await engine.place_order(user, [(shut.id, 1, shut.options[0].id),
                                        (made.id, 1, UNKNOWN)])


async def test_a_sold_out_option_is_out_of_stock_naming_the_option(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(50_000)
    made = await drop(("260", 0, 2), ("270", 0, 50))
    o260 = made.options[0]
    error = await refusal(engine.place_order(user, [(made.id, 3, o260.id)]))
    assert isinstance(error, OutOfStock)
    assert error.context == {"product_id": made.id, "option_id": o260.id, "stock": 2}
    assert "option" in error.detail and "260" in error.detail


async def test_an_options_units_come_from_every_group_until_the_last(
    engine: Engine, funded_user, drop
) -> None:
    """Each buyer's group fetches the option's units (Kind OPTION's acquire), so all of
    them sell, and then none."""
    made = await drop(("only", 0, 5))
    option = made.options[0]
    buyers = [await funded_user(10_000) for _ in range(6)]
    for buyer in buyers[:5]:
        await engine.place_order(buyer, [(made.id, 1, option.id)])
    error = await refusal(engine.place_order(buyers[5], [(made.id, 1, option.id)]))
    assert isinstance(error, OutOfStock) and error.context["stock"] == 0
    assert option_stock(await engine.product(made.id)) == {option.id: 0}


async def test_a_drops_sizes_sold_in_one_batch_rank_their_product_in_the_top(
    engine: Engine, group_mates, drop, r
) -> None:
    """Sales count per product, whatever its options: one batch's sizes add up (the batch
    writes them once per product), and a cancel takes its size's units off again."""
    await flush_db(r)  # the top is global
    a_user, b_user = await group_mates(2, 50_000)
    made = await drop(("a", 0, 50), ("b", 0, 50))
    a, b = made.options
    first, _ = await asyncio.gather(engine.place_order(a_user, [(made.id, 2, a.id)]),
                                    engine.place_order(b_user, [(made.id, 3, b.id)]))
    assert [(t.product_id, t.sold_quantity) for t in (await engine.top()).items] == [
        (made.id, 5)]
    await engine.cancel_order(a_user, first.id)
    assert [(t.product_id, t.sold_quantity) for t in (await engine.top()).items] == [
        (made.id, 3)]


# -- status and window ------------------------------------------------------------------


async def test_a_suspended_product_is_not_on_sale(
    engine: Engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    await engine.update_product(made.id, status="SUSPENDED")
    error = await refusal(engine.place_order(user, [(made.id, 1)]))
    assert isinstance(error, ProductNotOnSale)
    assert error.context == {"product_id": made.id, "status": "SUSPENDED",
                             "sale_starts_at": None, "sale_ends_at": None}
    await engine.update_product(made.id, status="ON_SALE")
    assert (await engine.place_order(user, [(made.id, 1)])).status == "PAID"


async def test_a_sale_that_ended_is_not_on_sale(
    engine: Engine, funded_user, drop, r
) -> None:
    user, now = await funded_user(10_000), await redis_ms(r)
    made = await drop(sale_starts_at=at_ms(now - 60_000), sale_ends_at=at_ms(now - 1_000))
    error = await refusal(engine.place_order(user, [(made.id, 1, made.options[0].id)]))
    assert isinstance(error, ProductNotOnSale)
    assert error.context["sale_ends_at"] == at_ms(now - 1_000).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


async def test_a_sale_opens_at_its_instant_on_redis_clock(
    engine: Engine, funded_user, drop, r
) -> None:
    """Refused while Redis' clock is before the opening, accepted once it is past it: a
    refusal never follows a reading at or past the opening, a success never precedes one."""
    user = await funded_user(10_000)
    opens = await redis_ms(r) + 400
    made = await drop(sale_starts_at=at_ms(opens))
    line = [(made.id, 1, made.options[0].id)]
    refused = 0
    for _ in range(400):
        before = await redis_ms(r)
        try:
            await engine.place_order(user, line)
        except ProductNotOnSale:
            assert before < opens
            refused += 1
            await asyncio.sleep(0.01)
            continue
        assert await redis_ms(r) >= opens
        break
    else:
        raise AssertionError("the sale never opened")
    assert refused >= 1


async def test_not_on_sale_comes_after_not_found_and_before_out_of_stock(
    engine: Engine, funded_user, new_product
) -> None:
    user = await funded_user(10_000)
    empty, shut = await new_product(stock=0), await new_product()
    await engine.update_product(shut.id, status="SUSPENDED")
    with pytest.raises(ProductNotFound):
        await engine.place_order(user, [(shut.id, 1), (UNKNOWN, 1)])
    with pytest.raises(ProductNotOnSale):
        await engine.place_order(user, [(empty.id, 1), (shut.id, 1)])


# -- the per-customer limit ---------------------------------------------------------------


async def test_a_limit_counts_every_option_of_the_product_in_one_order(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(50_000)
    made = await drop(("a", 0, 10), ("b", 0, 10), max_per_user=3)
    a, b = made.options
    error = await refusal(engine.place_order(user, [(made.id, 2, a.id), (made.id, 2, b.id)]))
    assert isinstance(error, PurchaseLimitExceeded)
    assert error.context == {"product_id": made.id, "max_per_user": 3, "remaining": 3}
    await engine.place_order(user, [(made.id, 2, a.id), (made.id, 1, b.id)])


async def test_a_limit_counts_the_users_earlier_orders(
    engine: Engine, funded_user, new_product
) -> None:
    user, other = await funded_user(50_000), await funded_user(50_000)
    made = await engine.create_product("capped", 1_000, 10, max_per_user=2)
    await engine.place_order(user, [(made.id, 2)])
    error = await refusal(engine.place_order(user, [(made.id, 1)]))
    assert isinstance(error, PurchaseLimitExceeded) and error.context["remaining"] == 0
    await engine.place_order(other, [(made.id, 2)])  # another user's allowance is its own


async def test_a_limit_set_later_counts_purchases_made_before_it(
    engine: Engine, funded_user, new_product
) -> None:
    user, made = await funded_user(50_000), await new_product()
    await engine.place_order(user, [(made.id, 2)])
    await engine.update_product(made.id, max_per_user=3)
    error = await refusal(engine.place_order(user, [(made.id, 2)]))
    assert isinstance(error, PurchaseLimitExceeded) and error.context["remaining"] == 1


async def test_cancel_gives_the_allowance_back(
    engine: Engine, funded_user, r
) -> None:
    user = await funded_user(50_000)
    made = await engine.create_product("capped", 1_000, 10, max_per_user=1)
    first = await engine.place_order(user, [(made.id, 1)])
    with pytest.raises(PurchaseLimitExceeded):
        await engine.place_order(user, [(made.id, 1)])
    await engine.cancel_order(user, first.id)
    assert await r.hgetall(engine.layout.of(user).bought(user)) == {}
    await engine.place_order(user, [(made.id, 1)])


async def test_the_limit_holds_between_orders_of_one_batch(
    engine: Engine, funded_user
) -> None:
    """Two orders of one user sent in one tick share a place_orders call: the second sees
    the units the first counted."""
    user = await funded_user(50_000)
    made = await engine.create_product("capped", 1_000, 10, max_per_user=1)
    await allot(engine, user, made.id, 2)  # no SHORT: one call for both
    calls = engine.batches.calls
    outcomes = await asyncio.gather(*(engine.place_order(user, [(made.id, 1)])
                                      for _ in range(2)), return_exceptions=True)
    assert engine.batches.calls == calls + 1
    assert sorted(type(o).__name__ for o in outcomes) == ["Order", "PurchaseLimitExceeded"]


async def test_out_of_stock_comes_before_the_limit_and_the_limit_before_the_balance(
    engine: Engine, funded_user, new_user
) -> None:
    user, broke = await funded_user(50_000), await new_user()
    made = await engine.create_product("capped", 1_000, 1, max_per_user=1)
    with pytest.raises(OutOfStock):
        await engine.place_order(user, [(made.id, 2)])
    roomy = await engine.create_product("roomy", 1_000, 10, max_per_user=1)
    with pytest.raises(PurchaseLimitExceeded):
        await engine.place_order(broke, [(roomy.id, 2)])
    with pytest.raises(InsufficientBalance):
        await engine.place_order(broke, [(roomy.id, 1)])


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_gives_an_option_lines_units_back_to_its_option(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(50_000)
    made = await drop(("a", 0, 5), ("b", 100, 5))
    a, b = made.options
    order = await engine.place_order(user, [(made.id, 2, a.id), (made.id, 3, b.id)])
    cancelled = await engine.cancel_order(user, order.id)
    assert [(i.option_id, i.option_name) for i in cancelled.items] == [(a.id, "a"),
                                                                        (b.id, "b")]
    after = await engine.product(made.id)
    assert option_stock(after) == {a.id: 5, b.id: 5} and after.stock == 10


# -- checkout and the cart ------------------------------------------------------------------


async def test_checkout_orders_option_lines_and_empties_the_cart(
    engine: Engine, funded_user, drop, new_product
) -> None:
    user, plain = await funded_user(50_000), await new_product(price=300)
    made = await drop(("a", 0, 5), ("b", 200, 5))
    a, b = made.options
    await engine.put_cart_item(user, made.id, 2, option_id=b.id)
    await engine.put_cart_item(user, made.id, 1, option_id=a.id)
    await engine.put_cart_item(user, plain.id, 1)
    cart = await engine.cart(user)
    assert [(i.product_id, i.option_id, i.option_name, i.unit_price) for i in cart.items] \
        == sorted([(made.id, a.id, "a", 1_000), (made.id, b.id, "b", 1_200),
                   (plain.id, None, None, 300)], key=lambda t: (t[0], t[1] or 0))
    order = await engine.checkout(user)
    assert order.total_amount == 1_000 + 2 * 1_200 + 300
    assert [(i.product_id, i.option_id) for i in order.items] == [
        (i.product_id, i.option_id) for i in cart.items]
    assert option_stock(await engine.product(made.id)) == {a.id: 4, b.id: 3}
    assert (await engine.cart(user)).items == []


async def test_checkout_of_a_product_suspended_since_the_put_is_not_on_sale(
    engine: Engine, funded_user, drop
) -> None:
    user, made = await funded_user(50_000), await drop()
    await engine.put_cart_item(user, made.id, 1, option_id=made.options[0].id)
    await engine.update_product(made.id, status="SUSPENDED")
    with pytest.raises(ProductNotOnSale):
        await engine.checkout(user)
    assert len((await engine.cart(user)).items) == 1


async def test_checkout_keeps_the_limit(engine: Engine, funded_user, drop) -> None:
    user = await funded_user(50_000)
    made = await drop(("a", 0, 5), ("b", 0, 5), max_per_user=2)
    a, b = made.options
    await engine.put_cart_item(user, made.id, 2, option_id=a.id)
    await engine.put_cart_item(user, made.id, 1, option_id=b.id)
    error = await refusal(engine.checkout(user))
    assert isinstance(error, PurchaseLimitExceeded) and error.context["remaining"] == 2


async def test_checkout_of_a_sold_out_option_names_the_option(
    engine: Engine, funded_user, drop
) -> None:
    user, other = await funded_user(50_000), await funded_user(50_000)
    made = await drop(("a", 0, 2))
    a = made.options[0]
    await engine.put_cart_item(user, made.id, 2, option_id=a.id)
    await engine.place_order(other, [(made.id, 1, a.id)])
    error = await refusal(engine.checkout(user))
    assert isinstance(error, OutOfStock)
    assert error.context == {"product_id": made.id, "option_id": a.id, "stock": 1}


async def test_cart_put_checks_in_the_contracts_order(
    engine: Engine, funded_user, drop, new_product
) -> None:
    user, plain = await funded_user(10_000), await new_product()
    made = await drop(("a", 0, 3), ("b", 0, 10))  # the product's 13 would take 4
    a = made.options[0]
    with pytest.raises(ProductNotFound):
        await engine.put_cart_item(user, UNKNOWN, 1, option_id=UNKNOWN)
    for product_id, option_id in ((made.id, None), (plain.id, a.id)):
        error = await refusal(engine.put_cart_item(user, product_id, 1, option_id=option_id))
        assert isinstance(error, ValidationFailed) and error.context["field"] == "option_id"
    with pytest.raises(OptionNotFound):
        await engine.put_cart_item(user, made.id, 1, option_id=UNKNOWN)
    error = await refusal(engine.put_cart_item(user, made.id, 4, option_id=a.id))
    assert isinstance(error, OutOfStock)
    assert error.context == {"product_id": made.id, "option_id": a.id, "stock": 3}
    await engine.update_product(made.id, status="SUSPENDED")
    with pytest.raises(ProductNotOnSale):  # before OUT_OF_STOCK
        await engine.put_cart_item(user, made.id, 4, option_id=a.id)
    assert (await engine.cart(user)).items == []


async def test_a_cart_prices_two_sizes_of_one_product_with_its_live_stock_once(
    engine: Engine, funded_user, drop
) -> None:
    """Two lines of one product read it once: each size's units are counted once."""
    user, other = await funded_user(10_000), await funded_user(10_000)
    made = await drop(("a", 0, 40), ("b", 0, 40))  # dealt to the groups at creation
    a, b = made.options
    await engine.put_cart_item(user, made.id, 40, option_id=a.id)
    await engine.put_cart_item(user, made.id, 1, option_id=b.id)
    await engine.place_order(other, [(made.id, 1, a.id)])
    assert [(i.option_id, i.in_stock) for i in (await engine.cart(user)).items] == [
        (a.id, False), (b.id, True)]


async def test_removing_an_option_line_leaves_the_products_other_lines(
    engine: Engine, funded_user, drop
) -> None:
    user = await funded_user(10_000)
    made = await drop(("a", 0, 3), ("b", 0, 3))
    a, b = made.options
    await engine.put_cart_item(user, made.id, 1, option_id=a.id)
    await engine.put_cart_item(user, made.id, 2, option_id=b.id)
    await engine.remove_cart_item(user, made.id, option_id=a.id)
    assert [(i.option_id, i.quantity) for i in (await engine.cart(user)).items] == [(b.id, 2)]


# -- replays --------------------------------------------------------------------------------


async def test_a_not_on_sale_refusal_is_kept_by_its_idempotency_key(
    engine: Engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    await engine.update_product(made.id, status="SUSPENDED")
    key = Idempotency("rules-1", "fp")
    with pytest.raises(ProductNotOnSale):
        await engine.place_order(user, [(made.id, 1)], idem=key)
    await engine.update_product(made.id, status="ON_SALE")
    with pytest.raises(ProductNotOnSale):
        await engine.place_order(user, [(made.id, 1)], idem=key)
    assert key.replayed
    assert (await engine.product(made.id)).stock == 100


async def test_a_limit_refusal_is_kept_by_its_idempotency_key(
    engine: Engine, funded_user
) -> None:
    user = await funded_user(10_000)
    made = await engine.create_product("capped", 1_000, 10, max_per_user=1)
    first = await engine.place_order(user, [(made.id, 1)])
    key = Idempotency("rules-2", "fp")
    with pytest.raises(PurchaseLimitExceeded):
        await engine.place_order(user, [(made.id, 1)], idem=key)
    await engine.cancel_order(user, first.id)
    with pytest.raises(PurchaseLimitExceeded):
        await engine.place_order(user, [(made.id, 1)], idem=key)
    assert key.replayed


async def test_an_option_not_found_is_not_kept_by_its_idempotency_key(
    engine: Engine, funded_user, drop
) -> None:
    user, made = await funded_user(10_000), await drop()
    key = Idempotency("rules-3", "fp")
    with pytest.raises(OptionNotFound):
        await engine.place_order(user, [(made.id, 1, UNKNOWN)], idem=key)
    order = await engine.place_order(user, [(made.id, 1, made.options[0].id)],
                                     idem=Idempotency("rules-3", "fp"))
    assert order.status == "PAID"
