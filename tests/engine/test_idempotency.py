"""Idempotency-Key: a replay answers the first answer (a business rule's refusal too), is
marked as a replay and does nothing again; a refusal that changed nothing keeps no record;
a user holds a bounded number of records; admin creates honour the key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from engine import Engine, Idempotency, Policy
from engine.errors import (
    CouponSoldOut,
    EngineError,
    IdempotencyKeyReused,
    InsufficientBalance,
    InvalidAmount,
    TooManyRequests,
)
from tests.engine.support import window

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


async def test_key_first_used_for_a_kept_rejection_is_still_reused_with_another_body(
    engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    with pytest.raises(InsufficientBalance):
        await engine.place_order(user, [(made.id, 1)], idem=idem("k", "order 1"))
    with pytest.raises(IdempotencyKeyReused):
        await engine.charge(user, 1_000, idem("k", "charge 1000"))


# -- Stripe's rule: a refusal that changed nothing keeps no record --------------------------


def record_of(engine: Engine, user: int, key: str) -> str:
    return engine.layout.of(user).idempotency(user, key)


@pytest.mark.parametrize("refusal", ["ORDER_NOT_FOUND", "PRODUCT_NOT_FOUND",
                                     "COUPON_NOT_FOUND", "INVALID_AMOUNT"])
async def test_a_refusal_that_changed_nothing_keeps_no_record_and_a_retry_runs(
    engine: Engine, new_user, new_product, r, refusal: str
) -> None:
    user, made = await new_user(), await new_product()
    refused = {
        "ORDER_NOT_FOUND": lambda: engine.cancel_order(user, "999999999999", idem("k", "f")),
        "PRODUCT_NOT_FOUND": lambda: engine.place_order(user, [(999_999_999, 1)],
                                                        idem=idem("k", "f")),
        "COUPON_NOT_FOUND": lambda: engine.issue_coupon(user, 999_999_999, idem("k", "f")),
        "INVALID_AMOUNT": lambda: engine.charge(user, 1_005, idem("k", "f")),
    }[refusal]
    with pytest.raises(EngineError) as caught:
        await refused()
    assert caught.value.code == refusal
    assert not await r.exists(record_of(engine, user, "k"))
    assert await r.zcard(engine.layout.of(user).idempotency_index(user)) == 0
    # The key is free: another request under it runs (no IDEMPOTENCY_KEY_REUSED).
    assert (await engine.charge(user, 1_000, idem("k", "another"))).balance == 1_000
    assert (await engine.product(made.id)).stock == 100


async def test_a_business_refusal_is_kept_with_its_expiry_in_the_users_index(
    engine: Engine, new_user, new_product, r
) -> None:
    user, made = await new_user(), await new_product()
    with pytest.raises(InsufficientBalance):
        await engine.place_order(user, [(made.id, 1)], idem=idem("k"))
    record, index = record_of(engine, user, "k"), engine.layout.of(user).idempotency_index(user)
    assert await r.exists(record)
    expiry_ms = await r.zscore(index, record)
    assert expiry_ms is not None
    assert abs(expiry_ms - (await r.pexpiretime(record))) <= 5


# -- replays are marked ----------------------------------------------------------------------


async def test_a_replay_and_only_a_replay_is_marked_replayed(
    engine: Engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    charge = idem("c", "charge")
    await engine.charge(user, 5_000, charge)
    assert charge.replayed is False
    await engine.charge(user, 5_000, charge)
    assert charge.replayed is True
    order = idem("o", "order")
    for replayed in (False, True):
        await engine.place_order(user, [(made.id, 1)], idem=order)
        assert order.replayed is replayed
    refused = idem("r", "big order")
    for replayed in (False, True):
        with pytest.raises(InsufficientBalance):
            await engine.place_order(user, [(made.id, 90)], idem=refused)
        assert refused.replayed is replayed


# -- at most RUSHORDER_IDEMPOTENCY_MAX_PER_USER records a user -----------------------------


@pytest.fixture
async def capped(engine_redis_url: str) -> AsyncIterator[Engine]:
    """An engine whose users may hold 3 live records."""
    eng = Engine(engine_redis_url, Policy(idempotency_max_per_user=3))
    yield eng
    await eng.close()


async def test_a_new_key_past_the_bound_is_too_many_requests_and_changes_nothing(
    capped: Engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    for n in range(3):
        await capped.charge(user, 1_000, idem(f"k{n}", f"charge {n}"))
    with pytest.raises(TooManyRequests) as caught:
        await capped.place_order(user, [(made.id, 1)], idem=idem("k3", "order"))
    # Retry-After: until the oldest record expires (24 h).
    assert 86_400 - 10 <= (caught.value.retry_after_s or 0) <= 86_400
    assert (await capped.balance(user)).balance == 3_000
    assert (await capped.product(made.id)).stock == 100


async def test_at_the_bound_replays_and_requests_without_a_key_still_run(
    capped: Engine, new_user, new_product
) -> None:
    user, made = await new_user(), await new_product()
    first = [await capped.charge(user, 1_000, idem(f"k{n}", f"charge {n}")) for n in range(3)]
    again = idem("k0", "charge 0")
    assert await capped.charge(user, 1_000, again) == first[0]
    assert again.replayed
    assert (await capped.place_order(user, [(made.id, 1)])).paid_amount == 1_000
    assert (await capped.balance(user)).balance == 2_000


async def test_the_bound_is_per_user_and_refusals_kept_nowhere_do_not_count(
    capped: Engine, new_user
) -> None:
    alice, bob = await new_user(), await new_user()
    for n in range(5):
        with pytest.raises(InvalidAmount):
            await capped.charge(alice, 1_005, idem(f"bad{n}"))
    for n in range(3):
        await capped.charge(alice, 1_000, idem(f"k{n}"))
        await capped.charge(bob, 1_000, idem(f"k{n}"))
    with pytest.raises(TooManyRequests):
        await capped.charge(bob, 1_000, idem("k3"))


async def test_an_expired_record_frees_its_place(engine_redis_url: str, new_user, r) -> None:
    short = Engine(engine_redis_url, Policy(idempotency_ttl_s=1, idempotency_max_per_user=1))
    try:
        user = await new_user()
        await short.charge(user, 1_000, idem("k0"))
        with pytest.raises(TooManyRequests) as caught:
            await short.charge(user, 1_000, idem("k1"))
        assert caught.value.retry_after_s == 1
        await asyncio.sleep(1.2)
        assert (await short.charge(user, 1_000, idem("k1"))).balance == 2_000
        index = short.layout.of(user).idempotency_index(user)
        assert await r.zrange(index, 0, -1) == [record_of(short, user, "k1").encode()]
    finally:
        await short.close()


async def test_zero_means_no_bound_and_no_index(engine_redis_url: str, new_user, r) -> None:
    free = Engine(engine_redis_url, Policy(idempotency_max_per_user=0))
    try:
        user = await new_user()
        for n in range(5):
            await free.charge(user, 1_000, idem(f"k{n}"))
        assert not await r.exists(free.layout.of(user).idempotency_index(user))
    finally:
        await free.close()


# -- admin creates honour the key --------------------------------------------------------------


async def test_a_retried_product_create_under_one_key_makes_one_product(
    engine: Engine, r
) -> None:
    key = idem(f"create-{uuid.uuid4()}", "POST /admin/products {...}")
    first = await engine.create_product("once", 1_000, 50, admin_id=1, idem=key)
    assert not key.replayed
    before = await r.zcard("{ro}:products")
    again = await engine.create_product("once", 1_000, 50, admin_id=1, idem=key)
    assert key.replayed and again == first
    assert await r.zcard("{ro}:products") == before
    assert (await engine.product(first.id)).stock == 50  # the deal went out once, whole


async def test_a_retried_coupon_create_under_one_key_defines_one_coupon(
    engine: Engine, r
) -> None:
    start, end = window()
    key = idem(f"create-{uuid.uuid4()}", "POST /admin/coupons {...}")
    first = await engine.create_coupon("c", "FIXED", 500, 10, start, end, admin_id=1, idem=key)
    seq = await r.hget("{ro}:seq", "coupon")
    again = await engine.create_coupon("c", "FIXED", 500, 10, start, end, admin_id=1, idem=key)
    assert key.replayed and again == first
    assert await r.hget("{ro}:seq", "coupon") == seq
    assert (await engine.coupon(first.id)).remaining == 10


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
