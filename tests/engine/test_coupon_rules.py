"""Issue 28's coupon rules: a minimum order total, a cap on a PERCENT discount, a
description; copied into the issued coupon at issue and applied by the order step."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine import Engine, coupons, limits
from engine.coupons import CouponRules
from engine.errors import CouponNotUsable, ValidationFailed
from engine.models import Coupon, Product
from tests.engine.support import window

NewCoupon = Callable[..., Awaitable[Coupon]]


@pytest.fixture
def ruled_coupon(engine: Engine) -> NewCoupon:
    """A coupon open for issue now, with the rules given."""

    async def make(discount_type: str = "PERCENT", value: int = 50, quantity: int = 10,
                   **rules: Any) -> Coupon:
        start, end = window()
        return await engine.create_coupon(
            "ruled", discount_type, value, quantity, start, end,  # type: ignore[arg-type]
            rules=CouponRules(**rules))

    return make


async def test_rules_read_back_on_the_coupon_the_issued_coupon_and_the_users_list(
    engine: Engine, ruled_coupon: NewCoupon, new_user: Callable[[], Awaitable[int]]
) -> None:
    made = await ruled_coupon(min_order_amount=20_000, max_discount_amount=3_000,
                              description="spring sale, 50% off up to 3,000 won")
    rules = (20_000, 3_000, "spring sale, 50% off up to 3,000 won")
    assert (made.min_order_amount, made.max_discount_amount, made.description) == rules
    assert await engine.coupon(made.id) == made
    user = await new_user()
    got = await engine.issue_coupon(user, made.id)
    assert (got.min_order_amount, got.max_discount_amount, got.description) == rules
    assert (await engine.user_coupons(user)).items == [got]


async def test_a_coupon_without_rules_answers_null_rules_and_an_empty_description(
    engine: Engine, new_coupon: NewCoupon, new_user: Callable[[], Awaitable[int]]
) -> None:
    made = await new_coupon()
    assert (made.min_order_amount, made.max_discount_amount, made.description) == (
        None, None, "")
    got = await engine.issue_coupon(await new_user(), made.id)
    assert (got.min_order_amount, got.max_discount_amount, got.description) == (None, None, "")


@pytest.mark.parametrize(("dtype", "rules", "field"), [
    ("FIXED", {"min_order_amount": 0}, "min_order_amount"),
    ("FIXED", {"min_order_amount": limits.ORDER_AMOUNT.high + 1}, "min_order_amount"),
    ("PERCENT", {"max_discount_amount": 0}, "max_discount_amount"),
    ("FIXED", {"max_discount_amount": 1_000}, "max_discount_amount"),
    ("FIXED", {"description": "x" * 1_001}, "description"),
    ("FIXED", {"description": "two\nlines"}, "description"),
])
async def test_a_rule_out_of_range_is_refused_naming_it(
    ruled_coupon: NewCoupon, dtype: str, rules: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await ruled_coupon(dtype, 10, **rules)
    assert refused.value.context["field"] == field


async def test_rules_at_their_bounds_are_taken(ruled_coupon: NewCoupon) -> None:
    made = await ruled_coupon(min_order_amount=limits.ORDER_AMOUNT.high,
                              max_discount_amount=1, description="d" * 1_000)
    assert (made.min_order_amount, made.max_discount_amount, len(made.description)) == (
        limits.ORDER_AMOUNT.high, 1, 1_000)


async def test_an_order_below_the_minimum_is_coupon_not_usable_naming_the_minimum(
    engine: Engine, ruled_coupon: NewCoupon, new_product: Callable[..., Awaitable[Product]],
    funded_user: Callable[[int], Awaitable[int]],
) -> None:
    made, product = await ruled_coupon("FIXED", 1_000, min_order_amount=5_000), \
        await new_product(price=1_000)
    user = await funded_user(10_000)
    got = await engine.issue_coupon(user, made.id)
    with pytest.raises(CouponNotUsable) as refused:
        await engine.place_order(user, [(product.id, 4)], got.id)
    assert refused.value.context == {"issued_coupon_id": got.id, "min_order_amount": 5_000}
    assert "5000" in refused.value.detail
    assert (await engine.balance(user)).balance == 10_000
    assert (await engine.product(product.id)).stock == product.stock
    assert (await engine.user_coupons(user)).items[0].status == "AVAILABLE"
    order = await engine.place_order(user, [(product.id, 5)], got.id)  # at the minimum
    assert (order.total_amount, order.discount_amount, order.paid_amount) == (5_000, 1_000, 4_000)


async def test_a_cart_checkout_below_the_minimum_is_coupon_not_usable(
    engine: Engine, ruled_coupon: NewCoupon, new_product: Callable[..., Awaitable[Product]],
    funded_user: Callable[[int], Awaitable[int]],
) -> None:
    made, product = await ruled_coupon("FIXED", 100, min_order_amount=3_000), \
        await new_product(price=1_000)
    user = await funded_user(10_000)
    got = await engine.issue_coupon(user, made.id)
    await engine.put_cart_item(user, product.id, 2)
    with pytest.raises(CouponNotUsable) as refused:
        await engine.checkout(user, got.id)
    assert refused.value.context["min_order_amount"] == 3_000


@pytest.mark.parametrize(("cap", "discount"), [(3_000, 3_000), (9_999, 5_000), (None, 5_000)])
async def test_a_percent_discount_stops_at_its_cap(
    engine: Engine, ruled_coupon: NewCoupon, new_product: Callable[..., Awaitable[Product]],
    funded_user: Callable[[int], Awaitable[int]], cap: int | None, discount: int,
) -> None:
    made, product = await ruled_coupon("PERCENT", 50, max_discount_amount=cap), \
        await new_product(price=2_000)
    user = await funded_user(20_000)
    got = await engine.issue_coupon(user, made.id)
    order = await engine.place_order(user, [(product.id, 5)], got.id)
    assert (order.total_amount, order.discount_amount, order.paid_amount) == (
        10_000, discount, 10_000 - discount)


async def test_a_coupon_made_before_its_rules_existed_applies_as_before(
    engine: Engine, r: Any, new_product: Callable[..., Awaitable[Product]],
    funded_user: Callable[[int], Awaitable[int]],
) -> None:
    """An old coupon's hashes hold no rule fields at all (not ''): no minimum, no cap."""
    start, end = window()
    made = await engine.create_coupon("old", "PERCENT", 100, 5, start, end)
    fields = ("min_order_amount", "max_discount_amount", "description")
    await r.hdel(f"{{ro}}:coupon:{made.id}", *fields)
    for g in engine.layout.all:
        await r.hdel(g.coupon(made.id), *fields)
    user, product = await funded_user(1_000), await new_product(price=700)
    got = await engine.issue_coupon(user, made.id)
    assert (got.min_order_amount, got.max_discount_amount, got.description) == (None, None, "")
    order = await engine.place_order(user, [(product.id, 1)], got.id)
    assert (order.discount_amount, order.paid_amount) == (700, 0)


async def test_a_deferred_orders_pay_applies_the_rules_and_counts_the_use(
    engine: Engine, ruled_coupon: NewCoupon, new_product: Callable[..., Awaitable[Product]],
    funded_user: Callable[[int], Awaitable[int]],
) -> None:
    made, product = await ruled_coupon("PERCENT", 50, min_order_amount=5_000,
                                       max_discount_amount=1_500), await new_product(price=1_000)
    user = await funded_user(20_000)
    got = await engine.issue_coupon(user, made.id)
    small = await engine.place_order(user, [(product.id, 4)], deferred=True)
    with pytest.raises(CouponNotUsable) as refused:
        await engine.pay_order(user, small.id, got.id)
    assert refused.value.context == {"issued_coupon_id": got.id, "min_order_amount": 5_000}
    large = await engine.place_order(user, [(product.id, 6)], deferred=True)
    paid = await engine.pay_order(user, large.id, got.id)
    assert (paid.total_amount, paid.discount_amount, paid.paid_amount) == (6_000, 1_500, 4_500)
    assert await _counts(engine, made.id) == (1, 1)
    await engine.cancel_order(user, paid.id)
    assert await _counts(engine, made.id) == (1, 0)


async def test_the_lists_read_on_past_coupons_left_out_to_fill_a_page(
    engine: Engine, ruled_coupon: NewCoupon, new_coupon: NewCoupon,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One coupon a call (the run's size is the page's): the closed ones between two open
    ones are read past, and the page still holds both."""
    monkeypatch.setattr(coupons, "OPEN_RUN", 1)
    first = await ruled_coupon()
    closed = [await new_coupon(starts_s=3600, ends_s=7200) for _ in range(3)]
    last = await ruled_coupon()
    page = await engine.open_coupons(2, str(first.id - 1))
    assert [c.id for c in page.items] == [first.id, last.id]
    assert page.next_cursor is None  # nothing open after the last
    admin = await engine.coupon_counts(2, str(first.id - 1))
    assert [c.id for c in admin.items] == [first.id, closed[0].id]


async def _counts(engine: Engine, coupon_id: int) -> tuple[int, int]:
    """The coupon's (issued, used) counts as the admin's list has them."""
    (row,) = (await engine.coupon_counts(1, str(coupon_id - 1))).items
    return row.issued_count, row.used_count
