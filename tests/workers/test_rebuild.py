"""Rebuilding Redis from Postgres: the engine answers as before; refusals; new ids follow on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import redis

from engine import Engine, keys, state
from engine.errors import CouponAlreadyIssued, ProductNotOnSale, PurchaseLimitExceeded
from engine.models import Coupon, Product
from engine.outbox import PLATFORM, Outboxes
from rushorder import progress
from rushorder.cli import main
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from rushorder.stack import Stack
from tests.workers.drain_support import answers, busy_day, fill_carts, flash_sale


async def test_a_rebuilt_redis_answers_exactly_as_before(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    items = await products(4, stock=500)
    coupons = [await coupon(quantity=20, kind="PERCENT", value=10), await coupon(quantity=20)]
    users = await busy_day(engine, items, coupons)
    await fill_carts(engine, users, items)
    before = await answers(engine, users, items, coupons)  # carts among them
    assert sum(bool(cart.items) for cart in before["carts"]) == len(users) - 1
    seq = r.hgetall(keys.SEQ)
    layout = engine.layout
    highest = max(int(r.hget(g.seq, "order") or 0) for g in layout.all)
    drain()

    r.flushdb()  # Redis lost everything
    assert rebuild(wsettings) == 0

    assert await answers(engine, users, items, coupons) == before
    assert r.hgetall(keys.SEQ) == seq  # the catalog's ids carry on
    again = await engine.place_order(users[0], [(items[0].id, 1)])
    # Each group's ids carry on above every id there was: none reused, the group in the id.
    assert layout.counter(int(again.id)) == highest + 1
    assert layout.owner(int(again.id)) is layout.of(users[0])
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
    forwarder = Outboxes(r, PLATFORM, "forwarder")  # the platform has had every event too
    while taken := forwarder.read(100):
        forwarder.ack([e.key for e in taken])
    stray = engine.layout.of(99).balance(99)
    r.set(stray, 12345)  # stray state Postgres does not know
    assert rebuild(wsettings, force=True) == 0
    assert r.get(stray) is None
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
    await engine.put_cart_item(1, item.id, 2)  # kept as it is in Redis
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


async def test_a_rebuild_lays_the_state_out_in_another_group_count_and_answers_as_before(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    items = await products(4, stock=500)
    coupons = [await coupon(quantity=20, kind="PERCENT", value=10), await coupon(quantity=20)]
    users = await busy_day(engine, items, coupons)
    before = await answers(engine, users, items, coupons)
    drain()
    forwarder = Outboxes(r, PLATFORM, "forwarder")  # the platform has had every event too
    while taken := forwarder.read(100):
        forwarder.ack([e.key for e in taken])
    other = wsettings.groups + 3
    regroup = wsettings.replace(groups=other)

    # A stack started with another count must not serve the state as it is laid out.
    assert rebuild(regroup, if_needed=True) == 1
    assert f"not the {other} of RUSHORDER_GROUPS" in capsys.readouterr().err
    assert rebuild(regroup, force=True) == 0
    regrouped = Engine(regroup.redis_url or "", groups=other)
    try:
        assert await regrouped.ready()
        assert await answers(regrouped, users, items, coupons) == before
        placed = [await regrouped.place_order(u, [(items[0].id, 1)]) for u in users]
        old_ids = {int(o.id) for u in users for o in (await regrouped.orders(u, 100)).items
                   if o not in placed}
        assert min(int(o.id) for o in placed) > max(old_ids)  # none reused
        with pytest.raises(CouponAlreadyIssued):  # holders came back in their new groups
            await regrouped.issue_coupon(users[1], coupons[users[1] % 2].id)
    finally:
        await regrouped.close()


def bought(r: redis.Redis, engine: Engine, users: list[int]) -> dict[int, dict[bytes, bytes]]:
    """Each user's ``<g>:bought:<user>``."""
    return {u: r.hgetall(engine.layout.of(u).bought(u)) for u in users}  # type: ignore[misc]


async def test_a_rebuild_brings_back_options_how_products_are_sold_and_what_users_bought(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
) -> None:
    items, users = await flash_sale(engine)
    await fill_carts(engine, users, items[:1], checkout=False)  # "<product>:<option>" lines
    before = await answers(engine, users, items, [])
    held, seq = bought(r, engine, users), r.hgetall(keys.SEQ)
    assert held[1] == {str(items[0].id).encode(): b"3", str(items[2].id).encode(): b"2"}
    drain()

    r.flushdb()
    assert rebuild(wsettings) == 0

    assert await answers(engine, users, items, []) == before  # options, fields, lines
    assert bought(r, engine, users) == held
    assert r.hgetall(keys.SEQ) == seq  # the option ids carry on too
    drop, tomorrow, plain = items
    again = await engine.add_option(drop.id, "290", stock=5)
    assert again.id == max(o.id for o in before["each product"][0].options) + 1
    with pytest.raises(PurchaseLimitExceeded):  # user 1 holds 3 of 3
        await engine.place_order(1, [(drop.id, 1, again.id)])
    await engine.place_order(2, [(drop.id, 1, again.id)])  # user 2 holds 2: one left
    for closed in (tomorrow, plain):
        with pytest.raises(ProductNotOnSale):
            await engine.place_order(4, [(closed.id, 1)])
