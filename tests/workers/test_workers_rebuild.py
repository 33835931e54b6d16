"""Rebuilding Redis from Postgres: the engine answers as before; refusals; new ids follow on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis
from drain_support import answers, busy_day

from engine import Engine, state
from engine.errors import CouponAlreadyIssued
from engine.models import Coupon, Product
from engine.outbox import PLATFORM, Outbox
from rushorder import progress
from rushorder.cli import main
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from rushorder.stack import Stack


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
    assert rebuild(wsettings, if_needed=True) == 0  # live state: nothing to do, and fine
    assert "nothing to rebuild" in capsys.readouterr().out
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


async def test_make_up_rebuilds_a_redis_without_the_marker_however_full_it_looks(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    items = await products(4, stock=500)
    coupons = [await coupon(quantity=20), await coupon(quantity=20)]
    users = await busy_day(engine, items, coupons)
    before = await answers(engine, users, items, coupons)
    drain()
    r.flushdb()  # lost; then what RQ and a worker of old would have left in it
    r.set("rq:workers", "x")
    r.xgroup_create("{ro}:outbox", PLATFORM, mkstream=True)

    stack = Stack(wsettings)
    await asyncio.to_thread(stack.prepare, wsettings, stack.child_env(wsettings))
    assert state.marker(r) is not None
    assert await answers(engine, users, items, coupons) == before


async def test_make_up_leaves_a_redis_with_the_marker_as_it_is(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (item,) = await products(1, stock=10)
    await engine.put_cart_item(1, item.id, 2)  # carts live only in Redis: a rebuild drops them
    drain()
    made = state.marker(r)

    stack = Stack(wsettings)
    await asyncio.to_thread(stack.prepare, wsettings, stack.child_env(wsettings))
    assert state.marker(r) == made
    assert [line.quantity for line in (await engine.cart(1)).items] == [2]


async def test_a_rebuild_through_the_cli_shows_its_progress(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await products(3)
    await engine.charge(1, 10_000)  # a balance and its history line: 5 rows in all
    drain()
    r.flushdb()
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.0)  # a line per row instead of per 5 s
    monkeypatch.setenv("RUSHORDER_REDIS_URL", wsettings.redis_url or "")
    monkeypatch.setenv("RUSHORDER_DATABASE_URL", wsettings.database_url or "")

    assert main(["rebuild"]) == 0

    out, err = capsys.readouterr()
    shown = err.splitlines()
    assert shown[:2] == ["rebuild: counting rows in postgres",
                         "rebuild: rows from postgres into redis: 0/5 rows (0%)"]
    assert [line.split(", ")[0] for line in shown[2:-1]] == [
        f"rebuild: rows from postgres into redis: {n}/5 rows ({n * 20}%)" for n in range(1, 6)]
    assert shown[-1].startswith("rebuild: rows from postgres into redis: 5/5 rows (100%)")
    assert "; done in " in shown[-1]
    assert out.startswith("rebuilt Redis from Postgres: 1 balances, 1 history lines, 3 products")
