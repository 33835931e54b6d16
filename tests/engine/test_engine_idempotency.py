"""Idempotency-Key: a replay answers the first answer (rejections too) and does nothing again."""

from __future__ import annotations

import asyncio

import pytest

from engine import Engine, Idempotency, Policy
from engine.errors import (
    CouponSoldOut,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    OrderNotFound,
)

BODY_A = Idempotency("key-1", "POST /api/v1/balance/charge {\"amount\":5000}")
BODY_B = Idempotency("key-1", "POST /api/v1/balance/charge {\"amount\":6000}")


def idem(key: str, fingerprint: str = "fp") -> Idempotency:
    return Idempotency(key, fingerprint)


async def test_replayed_charge_answers_the_first_answer_and_charges_once(
    engine: Engine, new_user, outbox
) -> None:
    user = await new_user()
    first = await engine.charge(user, 5_000, BODY_A)
    length = await outbox.length()
    again = await engine.charge(user, 5_000, BODY_A)
    assert again == first
    assert (await engine.balance(user)).balance == 5_000
    assert len((await engine.history(user)).items) == 1
    assert await outbox.length() == length


async def test_replayed_order_answers_the_same_order_and_takes_stock_once(
    engine, funded_user, new_product, outbox
) -> None:
    user, made = await funded_user(10_000), await new_product(stock=10)
    first = await engine.place_order(user, [(made.id, 2)], idem=idem("order-1"))
    length = await outbox.length()
    again = await engine.place_order(user, [(made.id, 2)], idem=idem("order-1"))
    assert again == first
    assert (await engine.product(made.id)).stock == 8
    assert (await engine.balance(user)).balance == 8_000
    assert [o.id for o in (await engine.orders(user)).items] == [first.id]
    assert await outbox.length() == length


async def test_replayed_cancel_answers_the_cancelled_order_and_refunds_once(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    order = await engine.place_order(user, [(made.id, 2)])
    first = await engine.cancel_order(user, order.id, idem("cancel-1"))
    assert await engine.cancel_order(user, order.id, idem("cancel-1")) == first
    assert (await engine.balance(user)).balance == 10_000
    assert [h.type for h in (await engine.history(user)).items].count("REFUND") == 1


async def test_replayed_issue_answers_the_same_coupon_and_takes_one_unit(
    engine, new_user, new_coupon
) -> None:
    user, made = await new_user(), await new_coupon(quantity=5)
    first = await engine.issue_coupon(user, made.id, idem("issue-1"))
    assert await engine.issue_coupon(user, made.id, idem("issue-1")) == first
    assert (await engine.coupon(made.id)).remaining == 4


async def test_replayed_checkout_answers_the_order_not_cart_empty(
    engine, funded_user, new_product
) -> None:
    user, made = await funded_user(10_000), await new_product()
    await engine.put_cart_item(user, made.id, 3)
    first = await engine.checkout(user, idem=idem("checkout-1"))
    assert await engine.checkout(user, idem=idem("checkout-1")) == first
    assert (await engine.product(made.id)).stock == 97


async def test_replayed_rejection_stays_rejected_even_once_it_would_pass(
    engine, new_user, new_product, outbox
) -> None:
    user, made = await new_user(), await new_product(price=1_000)
    with pytest.raises(InsufficientBalance):
        await engine.place_order(user, [(made.id, 1)], idem=idem("order-1"))
    await engine.charge(user, 5_000)
    length = await outbox.length()
    with pytest.raises(InsufficientBalance):
        await engine.place_order(user, [(made.id, 1)], idem=idem("order-1"))
    assert (await engine.balance(user)).balance == 5_000
    assert (await engine.product(made.id)).stock == 100
    assert await outbox.length() == length
    await engine.place_order(user, [(made.id, 1)], idem=idem("order-2"))  # a new key runs


@pytest.mark.parametrize("replay", range(2))
async def test_replayed_invalid_amount_stays_invalid_amount(engine, new_user, replay) -> None:
    user = await new_user()
    for _ in range(1 + replay):
        with pytest.raises(InvalidAmount):
            await engine.charge(user, 1_005, idem("bad-amount"))


async def test_replayed_sold_out_stays_sold_out_after_a_unit_comes_back(
    engine, new_user, new_coupon, funded_user, new_product
) -> None:
    made = await new_coupon(quantity=1)
    holder, late = await funded_user(10_000), await new_user()
    held = await engine.issue_coupon(holder, made.id)
    with pytest.raises(CouponSoldOut):
        await engine.issue_coupon(late, made.id, idem("issue-1"))
    order = await engine.place_order(holder, [((await new_product()).id, 1)], held.id)
    await engine.cancel_order(holder, order.id)  # the coupon returns to its holder, not stock
    with pytest.raises(CouponSoldOut):
        await engine.issue_coupon(late, made.id, idem("issue-1"))


async def test_same_key_with_another_body_is_idempotency_key_reused_and_does_nothing(
    engine, new_user, outbox
) -> None:
    user = await new_user()
    await engine.charge(user, 5_000, BODY_A)
    length = await outbox.length()
    with pytest.raises(IdempotencyKeyReused):
        await engine.charge(user, 6_000, BODY_B)
    assert (await engine.balance(user)).balance == 5_000
    assert await outbox.length() == length


async def test_key_first_used_for_a_charge_is_reused_by_an_order(
    engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    await engine.charge(user, 5_000, idem("shared", "POST /charge"))
    with pytest.raises(IdempotencyKeyReused):
        await engine.place_order(user, [(made.id, 1)], idem=idem("shared", "POST /orders"))
    assert (await engine.product(made.id)).stock == 100


async def test_key_first_used_for_a_rejection_is_still_reused_with_another_body(
    engine, new_user
) -> None:
    user = await new_user()
    with pytest.raises(OrderNotFound):
        await engine.cancel_order(user, "999999999999", idem("k", "cancel 999999999999"))
    with pytest.raises(IdempotencyKeyReused):
        await engine.charge(user, 1_000, idem("k", "charge 1000"))


async def test_keys_are_per_user(engine, new_user) -> None:
    alice, bob = await new_user(), await new_user()
    await engine.charge(alice, 1_000, BODY_A)
    answer = await engine.charge(bob, 5_000, BODY_A)
    assert (answer.user_id, answer.balance) == (bob, 5_000)
    assert (await engine.balance(alice)).balance == 1_000


async def test_record_lives_about_24_hours(engine, new_user, r) -> None:
    user = await new_user()
    await engine.charge(user, 1_000, BODY_A)
    ttl = await r.ttl(engine.layout.of(user).idempotency(user, BODY_A.key))
    assert 86_400 - 10 <= ttl <= 86_400


async def test_key_runs_again_once_its_record_expired(engine_redis_url, new_user) -> None:
    short = Engine(engine_redis_url, Policy(idempotency_ttl_s=1))
    try:
        user = await new_user()
        await short.charge(user, 1_000, BODY_A)
        await asyncio.sleep(1.2)
        assert (await short.charge(user, 1_000, BODY_A)).balance == 2_000
    finally:
        await short.close()


async def test_concurrent_duplicates_charge_once_and_all_answer_alike(engine, new_user) -> None:
    user = await new_user()
    answers = await asyncio.gather(*(engine.charge(user, 5_000, BODY_A) for _ in range(50)))
    assert len(set(answers)) == 1
    assert (await engine.balance(user)).balance == 5_000


async def test_fingerprint_with_newlines_still_replays(engine, new_user) -> None:
    user = await new_user()
    multi_line = Idempotency("k", "POST\n/api/v1/balance/charge\n{\"amount\": 5000}")
    first = await engine.charge(user, 5_000, multi_line)
    assert await engine.charge(user, 5_000, multi_line) == first
    assert (await engine.balance(user)).balance == 5_000
