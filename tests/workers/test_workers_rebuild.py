"""Rebuilding Redis from Postgres: the engine answers as before; refusals; new ids follow on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from engine import Engine
from engine.errors import CouponAlreadyIssued
from engine.models import Coupon, Product
from engine.outbox import PLATFORM, Outbox
from rushorder.rebuild import rebuild
from rushorder.settings import Settings


async def answers(engine: Engine, users: list[int], items: list[Product],
                  coupons: list[Coupon]) -> dict[str, Any]:
    """Everything a client can read that Postgres keeps."""
    return {
        "products": await engine.products(limit=100),
        "each product": [await engine.product(p.id) for p in items],
        "top": (await engine.top()).items,
        "coupons": [await engine.coupon(c.id) for c in coupons],
        "balances": [await engine.balance(u) for u in users],
        "history": [await engine.history(u, limit=100) for u in users],
        "orders": [await engine.orders(u, limit=100) for u in users],
        "each order": [await engine.order(u, o.id) for u in users
                       for o in (await engine.orders(u, limit=100)).items],
        "user coupons": [await engine.user_coupons(u, limit=100) for u in users],
    }


async def busy_day(engine: Engine, items: list[Product], coupons: list[Coupon]) -> list[int]:
    """Charges, restocks, coupons issued and used, orders placed and cancelled."""
    users = list(range(1, 9))
    await engine.update_product(items[0].id, stock_delta=25, price=1_500)
    for user in users:
        await engine.charge(user, 200_000)
        issued = await engine.issue_coupon(user, coupons[user % 2].id)
        first = await engine.place_order(user, [(items[user % 3].id, user), (items[3].id, 1)],
                                         issued.id)
        await engine.place_order(user, [(items[(user + 1) % 3].id, 2)])
        if user % 3 == 0:
            await engine.cancel_order(user, first.id)
    return users


async def test_a_rebuilt_redis_answers_exactly_as_before(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    items = await products(4, stock=500)
    coupons = [await coupon(quantity=20, kind="PERCENT", value=10), await coupon(quantity=20)]
    users = await busy_day(engine, items, coupons)
    before = await answers(engine, users, items, coupons)
    seq = r.hgetall("{ro}:seq")
    drain()

    r.flushdb()  # Redis lost everything
    assert rebuild(wsettings) == 0

    assert await answers(engine, users, items, coupons) == before
    assert {k: v for k, v in r.hgetall("{ro}:seq").items() if v != b"0"} == seq
    again = await engine.place_order(users[0], [(items[0].id, 1)])
    assert int(again.id) == int(seq[b"order"]) + 1  # ids carry on; none reused
    with pytest.raises(CouponAlreadyIssued):
        await engine.issue_coupon(users[1], coupons[users[1] % 2].id)  # holders came back


async def test_rebuild_refuses_a_redis_with_state_unless_forced(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], capsys: pytest.CaptureFixture[str],
) -> None:
    (item,) = await products(1, stock=10)
    drain()
    await engine.update_product(item.id, stock_delta=5)  # in Redis, not yet in Postgres

    assert rebuild(wsettings) == 1
    assert "--force" in capsys.readouterr().err
    assert rebuild(wsettings, force=True) == 1  # would lose the unapplied event
    assert "drains" in capsys.readouterr().err
    assert (await engine.product(item.id)).stock == 15  # nothing was touched

    drain()
    forwarder = Outbox(r, PLATFORM, "forwarder")  # the platform has had every event too
    while taken := forwarder.read(100):
        forwarder.ack([e.id for e in taken])
    r.set("{ro}:bal:99", 12345)  # stray state Postgres does not know
    assert rebuild(wsettings, force=True) == 0
    assert r.get("{ro}:bal:99") is None
    assert (await engine.product(item.id)).stock == 15
