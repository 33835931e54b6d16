"""The engine enforces every fixed limit of the contract itself, whoever calls it: a value
just outside a bound is a VALIDATION_ERROR naming the field and writes nothing, a value
on the bound is accepted. The values here are the contract's (shared/API.md), written out,
so that a limit drifting in engine/limits.py fails here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest

from engine import Engine, Idempotency
from engine.errors import ValidationFailed
from tests.engine.support import window

MAX_ID = 10**14 - 1


class Things(NamedTuple):
    """A funded user and a product (1 won, 5,000 units) of this test."""

    user: int
    product: int


Call = Callable[[Engine, Things], Awaitable[Any]]


def coupon(name: str = "c", kind: str = "FIXED", value: int = 100, quantity: int = 1) -> Call:
    """create_coupon with one argument spoiled, over an active window."""
    start, end = window()
    return lambda e, t: e.create_coupon(name, kind, value, quantity, start, end)  # type: ignore[arg-type]


def keyed(key: str) -> Call:
    """An order sent with ``key`` as its Idempotency-Key."""
    return lambda e, t: e.place_order(t.user, [(t.product, 1)], idem=Idempotency(key, "fp"))


REFUSED: dict[str, tuple[Call, str]] = {
    "product name empty": (lambda e, t: e.create_product("", 1, 0), "name"),
    "product name of 201 characters": (lambda e, t: e.create_product("n" * 201, 1, 0), "name"),
    "price 0": (lambda e, t: e.create_product("p", 0, 0), "price"),
    "price over 100,000,000": (lambda e, t: e.create_product("p", 100_000_001, 0), "price"),
    "price not an integer": (lambda e, t: e.create_product("p", 1.5, 0), "price"),  # type: ignore[arg-type]
    "stock below 0": (lambda e, t: e.create_product("p", 1, -1), "stock"),
    "stock over 1,000,000,000": (lambda e, t: e.create_product("p", 1, 1_000_000_001), "stock"),
    "rename to empty": (lambda e, t: e.update_product(t.product, name=""), "name"),
    "rename to 201 characters": (lambda e, t: e.update_product(t.product, name="n" * 201),
                                 "name"),
    "reprice to 0": (lambda e, t: e.update_product(t.product, price=0), "price"),
    "reprice over 100,000,000": (lambda e, t: e.update_product(t.product, price=100_000_001),
                                 "price"),
    "stock_delta over 1,000,000,000": (
        lambda e, t: e.update_product(t.product, stock_delta=1_000_000_001), "stock_delta"),
    "stock_delta under -1,000,000,000": (
        lambda e, t: e.update_product(t.product, stock_delta=-1_000_000_001), "stock_delta"),
    "update of product 0": (lambda e, t: e.update_product(0, stock_delta=1), "product_id"),
    "restock over 1,000,000,000 units in all": (  # the product holds 5,000
        lambda e, t: e.update_product(t.product, stock_delta=1_000_000_000 - 4_999),
        "stock_delta"),
    "balance of user 0": (lambda e, t: e.balance(0), "user_id"),
    "cart removal for user 0": (lambda e, t: e.remove_cart_item(0, t.product), "user_id"),
    "cart removal of product 0": (lambda e, t: e.remove_cart_item(t.user, 0), "product_id"),
    "read of product 0": (lambda e, t: e.product(0), "product_id"),
    "read of a product id over 14 digits": (lambda e, t: e.product(MAX_ID + 1), "product_id"),
    "PERCENT 150": (coupon(kind="PERCENT", value=150), "discount_value"),
    "PERCENT 101": (coupon(kind="PERCENT", value=101), "discount_value"),
    "PERCENT 0": (coupon(kind="PERCENT", value=0), "discount_value"),
    "FIXED 0": (coupon(kind="FIXED", value=0), "discount_value"),
    "FIXED over 10,000,000": (coupon(kind="FIXED", value=10_000_001), "discount_value"),
    "discount type HALF": (coupon(kind="HALF"), "discount_type"),
    "coupon name of 201 characters": (coupon(name="n" * 201), "name"),
    "coupon name empty": (coupon(name=""), "name"),
    "total_quantity 0": (coupon(quantity=0), "total_quantity"),
    "total_quantity over 10,000,000": (coupon(quantity=10_000_001), "total_quantity"),
    "read of coupon 0": (lambda e, t: e.coupon(0), "coupon_id"),
    "issue of coupon 0": (lambda e, t: e.issue_coupon(t.user, 0), "coupon_id"),
    "order of product 0": (lambda e, t: e.place_order(t.user, [(0, 1)]), "items.product_id"),
    "order with quantity 1,001": (lambda e, t: e.place_order(t.user, [(t.product, 1_001)]),
                                  "items.quantity"),
    "order with issued coupon 0": (
        lambda e, t: e.place_order(t.user, [(t.product, 1)], issued_coupon_id=0),
        "issued_coupon_id"),
    "order with an issued coupon id over 14 digits": (
        lambda e, t: e.place_order(t.user, [(t.product, 1)], issued_coupon_id=MAX_ID + 1),
        "issued_coupon_id"),
    "checkout with issued coupon 0": (lambda e, t: e.checkout(t.user, issued_coupon_id=0),
                                      "issued_coupon_id"),
    "cart quantity 0": (lambda e, t: e.put_cart_item(t.user, t.product, 0), "quantity"),
    "cart quantity 1,001": (lambda e, t: e.put_cart_item(t.user, t.product, 1_001), "quantity"),
    "cart line of product 0": (lambda e, t: e.put_cart_item(t.user, 0, 1), "product_id"),
    "catalog page of 0": (lambda e, t: e.products(limit=0), "limit"),
    "catalog page of 101": (lambda e, t: e.products(limit=101), "limit"),
    "orders page of 0": (lambda e, t: e.orders(t.user, limit=0), "limit"),
    "history page of 101": (lambda e, t: e.history(t.user, limit=101), "limit"),
    "coupons page of 101": (lambda e, t: e.user_coupons(t.user, limit=101), "limit"),
    "orders of user 0": (lambda e, t: e.orders(0), "user_id"),
    "cart of user 0": (lambda e, t: e.cart(0), "user_id"),
    "Idempotency-Key empty": (keyed(""), "Idempotency-Key"),
    "Idempotency-Key of 256 characters": (keyed("k" * 256), "Idempotency-Key"),
    "Idempotency-Key not ASCII": (keyed("clé"), "Idempotency-Key"),
    "Idempotency-Key with a newline": (keyed("a\nb"), "Idempotency-Key"),
}

ACCEPTED: dict[str, Call] = {
    "product at every upper bound": lambda e, t: e.create_product(
        "n" * 200, 100_000_000, 1_000_000_000),
    "product at every lower bound": lambda e, t: e.create_product("n", 1, 0),
    "update at every bound": lambda e, t: e.update_product(
        t.product, name="n" * 200, price=100_000_000, stock_delta=1_000_000_000 - 5_000),
    "PERCENT 100": coupon(kind="PERCENT", value=100),
    "PERCENT 1": coupon(kind="PERCENT", value=1),
    "FIXED 10,000,000 of 10,000,000": coupon(value=10_000_000, quantity=10_000_000),
    "coupon name of 200 characters": coupon(name="n" * 200),
    "cart quantity 1,000": lambda e, t: e.put_cart_item(t.user, t.product, 1_000),
    "history page of 100": lambda e, t: e.history(t.user, limit=100),
    "orders page of 1": lambda e, t: e.orders(t.user, limit=1),
    "Idempotency-Key of 255 printable characters": keyed(" ~" + "k" * 253),
}


@pytest.fixture
async def things(new_product, funded_user) -> Things:
    return Things(await funded_user(10_000), (await new_product(price=1, stock=5_000)).id)


@pytest.mark.parametrize("case", REFUSED)
async def test_a_value_outside_its_bound_is_refused_naming_the_field_and_writes_nothing(
    engine: Engine, things: Things, outbox, case: str
) -> None:
    call, field = REFUSED[case]
    mark = await outbox.mark()
    with pytest.raises(ValidationFailed) as refused:
        await call(engine, things)
    assert refused.value.context == {"field": field}
    assert refused.value.detail.startswith(f"{field}: ")
    assert await outbox.since(mark) == []


@pytest.mark.parametrize("case", ACCEPTED)
async def test_a_value_on_its_bound_is_accepted(
    engine: Engine, things: Things, case: str
) -> None:
    await ACCEPTED[case](engine, things)
