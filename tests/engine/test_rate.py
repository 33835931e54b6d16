"""The per-user write rate (RUSHORDER_RATE_LIMIT_PER_S): a token bucket in the user's
group slot, decided inside the write's own script call; past it TOO_MANY_REQUESTS with
the seconds to wait, and nothing changes. Rates here are slow enough (one token back in
1000 s) that no token comes back during a test: every count is exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from engine import Engine, Idempotency, Policy
from engine.errors import TooManyRequests
from tests.engine.races import race

BURST = 3
SLOW = Policy(rate_limit_per_s=0.001, rate_limit_burst=BURST)


@pytest.fixture
async def limited(engine_redis_url: str) -> AsyncIterator[Engine]:
    """An engine whose users may write BURST times, then once every 1000 s."""
    eng = Engine(engine_redis_url, SLOW)
    await eng.load()
    yield eng
    await eng.close()


async def outcomes(calls: Sequence[Awaitable[Any]]) -> list[str]:
    """Each call's code: OK or the refusal's."""
    got = await asyncio.gather(*calls, return_exceptions=True)
    return [getattr(g, "code", "OK") if isinstance(g, Exception) else "OK" for g in got]


async def test_a_burst_passes_and_the_next_write_waits_with_nothing_changed(
    limited: Engine, new_user
) -> None:
    user = await new_user()
    for _ in range(BURST):
        await limited.charge(user, 1_000)
    with pytest.raises(TooManyRequests) as caught:
        await limited.charge(user, 1_000)
    assert caught.value.retry_after_s == 1000  # one token back every 1000 s
    assert (await limited.balance(user)).balance == BURST * 1_000
    assert len((await limited.history(user)).items) == BURST


async def test_the_limit_is_per_user(limited: Engine, new_user) -> None:
    alice, bob = await new_user(), await new_user()
    for _ in range(BURST):
        await limited.charge(alice, 1_000)
    assert (await limited.charge(bob, 1_000)).balance == 1_000


async def test_one_place_orders_call_takes_each_users_tokens_apart(
    limited: Engine, group_mates, new_product
) -> None:
    """Orders of one group leave in one call (engine/batch.py): of 5 orders of one user
    exactly BURST pass, and its group mate's orders in the same call are its own."""
    busy, mate = await group_mates(2, 100_000)  # charged once each by the fixture's engine
    made = await new_product(stock=1_000)
    calls = [limited.place_order(busy, [(made.id, 1)]) for _ in range(5)]
    calls += [limited.place_order(mate, [(made.id, 1)]) for _ in range(2)]
    got = await outcomes(calls)
    assert got[:5].count("OK") == BURST and got[:5].count("TOO_MANY_REQUESTS") == 5 - BURST
    assert got[5:] == ["OK", "OK"]
    assert (await limited.product(made.id)).stock == 1_000 - BURST - 2


async def test_every_state_changing_write_takes_a_token(
    limited: Engine, engine: Engine, new_user, new_product, new_coupon
) -> None:
    made, coupon = await new_product(stock=1_000), await new_coupon(quantity=100)
    writes: dict[str, Callable[[int], Awaitable[Any]]] = {
        "charge": lambda u: limited.charge(u, 1_000),
        "order": lambda u: limited.place_order(u, [(made.id, 1)]),
        "cancel": lambda u: limited.cancel_order(u, "999999999999"),
        "checkout": lambda u: limited.checkout(u),
        "put_cart_item": lambda u: limited.put_cart_item(u, made.id, 1),
        "remove_cart_item": lambda u: limited.remove_cart_item(u, made.id),
        "issue_coupon": lambda u: limited.issue_coupon(u, coupon.id),
    }
    for name, write in writes.items():
        user = await new_user()
        await engine.charge(user, 100_000)  # the unlimited engine: no token taken
        for _ in range(BURST):  # a refusal for the business' rules still took its token
            await outcomes([write(user)])
        assert await outcomes([write(user)]) == ["TOO_MANY_REQUESTS"], name


async def test_an_order_sent_again_after_short_takes_one_token(
    engine_redis_url: str, engine: Engine, funded_user, new_product
) -> None:
    """An order whose group holds too few units goes back and comes again once units
    moved in (engine/allotments.py): one request, one token."""
    one = Engine(engine_redis_url, Policy(rate_limit_per_s=0.001, rate_limit_burst=1))
    try:
        user = await funded_user(100_000)
        made = await new_product(stock=10)
        order = await one.place_order(user, [(made.id, 10)])  # more than the group's deal
        assert order.paid_amount == 10_000 and one.short_orders == 1
    finally:
        await one.close()


async def test_a_replay_is_a_write_request_too(limited: Engine, new_user) -> None:
    user = await new_user()
    key = Idempotency("k", "charge")
    for _ in range(BURST):
        await limited.charge(user, 1_000, key)
    with pytest.raises(TooManyRequests):
        await limited.charge(user, 1_000, key)
    assert (await limited.balance(user)).balance == 1_000


async def test_zero_is_off(engine: Engine, new_user, r) -> None:
    user = await new_user()
    for _ in range(BURST + 5):
        await engine.charge(user, 1_000)
    assert not await r.exists(engine.layout.of(user).rate(user))


async def test_four_processes_racing_one_users_writes_pass_exactly_the_burst(
    engine_redis_url: str, new_user
) -> None:
    user = await new_user()
    policy = {"rate_limit_per_s": 0.001, "rate_limit_burst": 7}
    got = await asyncio.to_thread(race, engine_redis_url, "charge", [(user, 1_000)] * 40,
                                  policy=policy)
    codes = [code for code, _ in got]
    assert codes.count("OK") == 7 and codes.count("TOO_MANY_REQUESTS") == 33
    check = Engine(engine_redis_url)
    try:
        assert (await check.balance(user)).balance == 7_000
    finally:
        await check.close()
