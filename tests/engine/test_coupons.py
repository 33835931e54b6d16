"""First-come-first-served coupons: the window, the quantity, one per user, the check order."""

from __future__ import annotations

import asyncio

import pytest

from engine import Engine
from engine.errors import (
    CouponAlreadyIssued,
    CouponNotActive,
    CouponNotFound,
    CouponSoldOut,
    ValidationFailed,
)
from tests.engine.support import window

UNKNOWN_COUPON = 9_000_000_000


async def test_created_coupon_reads_back_with_full_remaining(engine: Engine) -> None:
    start, end = window()
    made = await engine.create_coupon("ten off", "PERCENT", 10, 3, start, end)
    assert (made.discount_type, made.discount_value, made.total_quantity, made.remaining) == (
        "PERCENT", 10, 3, 3)
    assert made.valid_from.timestamp() == pytest.approx(start.timestamp(), abs=0.001)
    assert made.valid_until.timestamp() == pytest.approx(end.timestamp(), abs=0.001)
    assert await engine.coupon(made.id) == made


async def test_coupon_window_must_not_be_empty(engine) -> None:
    start, _ = window()
    with pytest.raises(ValidationFailed):
        await engine.create_coupon("empty", "FIXED", 100, 1, start, start)


async def test_unknown_coupon_reads_as_coupon_not_found(engine) -> None:
    with pytest.raises(CouponNotFound):
        await engine.coupon(UNKNOWN_COUPON)


async def test_issue_gives_an_available_coupon_expiring_with_its_window(
    engine, new_coupon, new_user
) -> None:
    made, user = await new_coupon(value=700), await new_user()
    got = await engine.issue_coupon(user, made.id)
    assert (got.coupon_id, got.user_id, got.status, got.discount_value) == (
        made.id, user, "AVAILABLE", 700)
    assert got.expires_at == made.valid_until
    assert (await engine.coupon(made.id)).remaining == made.remaining - 1
    assert (await engine.user_coupons(user)).items == [got]


async def test_issue_of_unknown_coupon_is_coupon_not_found(engine, new_user) -> None:
    with pytest.raises(CouponNotFound):
        await engine.issue_coupon(await new_user(), UNKNOWN_COUPON)


async def test_issue_before_the_window_is_coupon_not_active(engine, new_coupon, new_user) -> None:
    made = await new_coupon(starts_s=3600, ends_s=7200)
    with pytest.raises(CouponNotActive):
        await engine.issue_coupon(await new_user(), made.id)
    assert (await engine.coupon(made.id)).remaining == made.remaining


async def test_issue_after_the_window_is_coupon_not_active(engine, new_coupon, new_user) -> None:
    made = await new_coupon(starts_s=-7200, ends_s=-3600)
    with pytest.raises(CouponNotActive):
        await engine.issue_coupon(await new_user(), made.id)


async def test_second_issue_to_the_same_user_is_coupon_already_issued(
    engine, new_coupon, new_user
) -> None:
    made, user = await new_coupon(quantity=5), await new_user()
    await engine.issue_coupon(user, made.id)
    with pytest.raises(CouponAlreadyIssued):
        await engine.issue_coupon(user, made.id)
    assert (await engine.coupon(made.id)).remaining == 4
    assert len((await engine.user_coupons(user)).items) == 1


async def test_issue_after_the_last_unit_is_coupon_sold_out(engine, new_coupon, new_user) -> None:
    made = await new_coupon(quantity=2)
    for _ in range(2):
        await engine.issue_coupon(await new_user(), made.id)
    with pytest.raises(CouponSoldOut):
        await engine.issue_coupon(await new_user(), made.id)
    assert (await engine.coupon(made.id)).remaining == 0


async def test_not_active_is_checked_before_already_issued_and_sold_out(
    engine, new_coupon, new_user
) -> None:
    made, user = await new_coupon(quantity=1, starts_s=-3600, ends_s=1.5), await new_user()
    await engine.issue_coupon(user, made.id)  # now held by user, and sold out
    await asyncio.sleep(1.6)
    with pytest.raises(CouponNotActive):
        await engine.issue_coupon(user, made.id)


async def test_already_issued_is_checked_before_sold_out(engine, new_coupon, new_user) -> None:
    made, user = await new_coupon(quantity=1), await new_user()
    await engine.issue_coupon(user, made.id)
    with pytest.raises(CouponAlreadyIssued):
        await engine.issue_coupon(user, made.id)
    with pytest.raises(CouponSoldOut):
        await engine.issue_coupon(await new_user(), made.id)


async def test_issued_coupon_reads_expired_once_its_window_ends(
    engine, new_coupon, new_user
) -> None:
    made, user = await new_coupon(starts_s=-10, ends_s=1.0), await new_user()
    await engine.issue_coupon(user, made.id)
    assert [c.status for c in (await engine.user_coupons(user)).items] == ["AVAILABLE"]
    await asyncio.sleep(1.1)
    assert [c.status for c in (await engine.user_coupons(user)).items] == ["EXPIRED"]


async def test_user_coupons_page_newest_first(engine, new_coupon, new_user) -> None:
    user = await new_user()
    held = [await engine.issue_coupon(user, (await new_coupon()).id) for _ in range(5)]
    seen, cursor = [], None
    while True:
        page = await engine.user_coupons(user, limit=2, cursor=cursor)
        seen += [c.id for c in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [c.id for c in reversed(held)]
