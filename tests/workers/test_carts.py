"""Durable carts (issue 28): every cart change reaches Postgres through the outbox, whole and
in entry order; an idle cart leaves Redis once Postgres holds it and comes back, as it was,
on its next read or write; a rebuild brings carts back."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine as Database

from engine import Engine, keys
from engine.errors import EngineUnavailable
from engine.models import Cart, NewOption, Product
from engine.outbox.events import CartItem, CartUpdated
from engine.outbox.settle import Settled, Settler
from engine.restore import every_group
from persistence.archive import PostgresArchive
from rushorder.audit import audit
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from tests.workers.drain_support import TcpProxy, fill_carts
from workers.postgres import write
from workers.projection import project

RETENTION_S = 1.0
L = keys.layout(keys.DEFAULT_GROUPS)  # the engine fixture's
Line = tuple[int, int | None, int]


@pytest.fixture
def settle(r: redis.Redis, drain: Callable[..., int]) -> Callable[[], Settled]:
    """Write everything to Postgres, wait out the retention, settle what is due."""

    def run() -> Settled:
        drain()
        time.sleep(RETENTION_S + 0.1)
        return Settler(r, RETENTION_S, L).settle_all()

    return run


@pytest.fixture
async def shop(engine: Engine, products: Callable[..., Awaitable[list[Product]]]
               ) -> list[Product]:
    """Three plain products and one in two sizes."""
    plain = await products(3, stock=1_000)
    sized = await engine.create_product("shoe", 2_000, options=[
        NewOption(name="260", stock=100), NewOption(name="270", extra_price=500, stock=100)])
    return [sized, *plain]


def cart_keys(r: redis.Redis) -> list[bytes]:
    """Every cart hash Redis holds."""
    return list(r.scan_iter(match=every_group(keys.Group.cart)))


def lines_of(cart: Cart) -> list[Line]:
    return sorted((i.product_id, i.option_id, i.quantity) for i in cart.items)


def stored(db: Database, user: int) -> tuple[int | None, list[Line]]:
    """The user's cart in Postgres: its version and lines."""
    with db.connect() as conn:
        version = conn.scalar(sa.text("SELECT version FROM carts WHERE user_id = :u"),
                              {"u": user})
        rows = conn.execute(sa.text("SELECT product_id, option_id, quantity FROM cart_lines "
                                    "WHERE user_id = :u"), {"u": user}).all()
    return version, sorted((int(p), None if o is None else int(o), int(q)) for p, o, q in rows)


async def test_every_cart_reaches_postgres_whole_and_an_older_change_changes_nothing(
    engine: Engine, db: Database, drain: Callable[..., int], shop: list[Product],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    users = await funded_users(6, 100_000)
    await fill_carts(engine, users, shop)
    drain()
    for user in users:
        assert stored(db, user)[1] == lines_of(await engine.cart(user)), user
    assert stored(db, users[-1]) [1] == [] and stored(db, users[-1])[0] is not None  # checked out

    version, lines = stored(db, users[0])
    assert version is not None
    older = CartUpdated(at=datetime.now(UTC), user_id=users[0],
                        items=[CartItem(product_id=shop[1].id, quantity=9)])
    with db.begin() as conn:  # a change older than the stored one, applied late
        write(conn, project([(version - 1, older)]))
    assert stored(db, users[0]) == (version, lines)


async def test_an_idle_cart_leaves_redis_and_reads_back_as_it_was_then_leaves_again(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled], shop: list[Product],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    users = await funded_users(6, 100_000)
    await fill_carts(engine, users, shop)
    before = [await engine.cart(u) for u in users]
    held = len(cart_keys(r))
    assert held == len(users) - 1  # the last was checked out

    assert settle().carts == held
    assert cart_keys(r) == []
    assert all(r.hget(L.of(u).floor(u), "k") for u in users[:-1])  # the markers stay
    assert [await engine.cart(u) for u in users] == before  # brought back from Postgres
    assert len(cart_keys(r)) == held

    assert settle().carts == held  # brought back, emitted again, idle again: gone again
    assert [await engine.cart(u) for u in users] == before


async def test_writes_to_a_settled_cart_start_from_the_cart_postgres_holds(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled], shop: list[Product],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    sized, a, b, c = shop
    adds, removes, buys = await funded_users(3, 100_000)
    for user in (adds, removes, buys):
        await engine.put_cart_item(user, a.id, 2)
        await engine.put_cart_item(user, sized.id, 1, sized.options[1].id)
    settle()
    assert cart_keys(r) == []

    added = await engine.put_cart_item(adds, c.id, 1)
    assert lines_of(added) == sorted([(a.id, None, 2), (sized.id, sized.options[1].id, 1),
                                      (c.id, None, 1)])
    await engine.remove_cart_item(removes, a.id)
    assert lines_of(await engine.cart(removes)) == [(sized.id, sized.options[1].id, 1)]
    order = await engine.checkout(buys)  # the whole cart, not CART_EMPTY
    assert sorted((i.product_id, i.quantity) for i in order.items) == [(a.id, 2), (sized.id, 1)]
    assert (await engine.cart(buys)).items == []


async def test_a_copy_of_a_settled_cart_goes_back_only_if_it_is_the_one_dropped(
    engine: Engine, r: redis.Redis, settle: Callable[[], Settled], shop: list[Product],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    _, a, b, _ = shop
    (user,) = await funded_users(1, 100_000)
    g = L.of(user)
    await engine.put_cart_item(user, a.id, 2)
    settle()
    dropped = r.hget(g.floor(user), "k")
    assert isinstance(dropped, bytes)
    cart = {"live": g.live, "cart": g.cart(user), "floor": g.floor(user), "outbox": g.outbox}

    stale = await engine._run("read_cart", [user, "1-0", "[]"], **cart)  # read before a change
    assert stale[0] == b"ARCHIVED" and not r.exists(g.cart(user))
    await engine.put_cart_item(user, b.id, 1)  # brought back by another call, and changed
    late = await engine._run("read_cart", [user, dropped.decode(), "[]"], **cart)
    assert late[0] == b"OK"  # Redis' own copy wins over the late one
    assert lines_of(await engine.cart(user)) == sorted([(a.id, None, 2), (b.id, None, 1)])


async def test_concurrent_reads_and_writes_of_a_settled_cart_all_land_on_the_stored_one(
    engine: Engine, workers_redis_url: str, workers_database_url: str,
    settle: Callable[[], Settled], products: Callable[..., Awaitable[list[Product]]],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    items = await products(13, stock=1_000)
    (user,) = await funded_users(1, 100_000)
    for item in items[:3]:
        await engine.put_cart_item(user, item.id, 1)
    settle()
    others = [Engine(workers_redis_url, archive=PostgresArchive(workers_database_url))
              for _ in range(4)]
    try:
        calls = [e.put_cart_item(user, item.id, 2)
                 for e, item in zip(others * 3, items[3:], strict=False)]
        reads = await asyncio.gather(*calls, *(e.cart(user) for e in others))
    finally:
        for e in others:
            await e.close()
            await e.archive.close()
    assert all(len(cart.items) >= 3 for cart in reads)  # never served without the stored lines
    assert lines_of(await engine.cart(user)) == sorted(
        [(i.id, None, 1) for i in items[:3]] + [(i.id, None, 2) for i in items[3:]])



async def test_with_postgres_down_a_settled_cart_is_503_never_an_empty_cart(
    cuttable: Engine, proxy: TcpProxy, engine: Engine, settle: Callable[[], Settled],
    shop: list[Product], funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    _, a, b, _ = shop
    (user,) = await funded_users(1, 100_000)
    before = await engine.put_cart_item(user, a.id, 2)
    settle()
    proxy.cut()
    for call in (cuttable.cart(user), cuttable.put_cart_item(user, b.id, 1),
                 cuttable.remove_cart_item(user, a.id), cuttable.checkout(user)):
        with pytest.raises(EngineUnavailable):
            await call
    proxy.restore()
    assert await cuttable.cart(user) == before


async def test_a_rebuild_leaves_idle_carts_in_postgres_and_they_read_back_as_before(
    engine: Engine, r: redis.Redis, wsettings: Settings, drain: Callable[..., int],
    shop: list[Product], funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    users = await funded_users(6, 100_000)
    await fill_carts(engine, users, shop)
    before = [await engine.cart(u) for u in users]
    drain()
    time.sleep(1.2)

    r.flushdb()
    assert rebuild(wsettings.replace(redis_retention_s=1.0)) == 0
    assert cart_keys(r) == []  # idle: only their markers came back
    assert [await engine.cart(u) for u in users] == before
    again = await engine.put_cart_item(users[0], shop[1].id, 5)
    assert (shop[1].id, None, 5) in lines_of(again)


async def test_the_audit_compares_carts_and_names_one_redis_lost(
    engine: Engine, r: redis.Redis, wsettings: Settings, settle: Callable[[], Settled],
    drain: Callable[..., int], shop: list[Product],
    funded_users: Callable[..., Awaitable[list[int]]], capsys: pytest.CaptureFixture[str],
) -> None:
    users = await funded_users(6, 100_000)
    await fill_carts(engine, users, shop)
    settle()
    await engine.cart(users[0])  # one brought back, the others left in Postgres
    await engine.put_cart_item(users[1], shop[1].id, 7)  # one changed since
    drain()
    assert audit(wsettings, wait_s=5) == 0, capsys.readouterr().out

    g = L.of(users[0])
    r.delete(g.cart(users[0]))
    r.hdel(g.floor(users[0]), "k")  # Redis lost a cart: its next read would be empty
    assert audit(wsettings, wait_s=5) == 1
    assert f"user {users[0]}'s cart" in capsys.readouterr().out


async def _put_and_read(redis_url: str, database_url: str, user: int,
                        product_ids: list[int]) -> list[int]:
    """Put each product once (2 units) into ``user``'s cart, reading it after each put;
    the line counts each read saw."""
    engine = Engine(redis_url, archive=PostgresArchive(database_url))
    try:
        seen = []
        for product_id in product_ids:
            await engine.put_cart_item(user, product_id, 2)
            seen.append(len((await engine.cart(user)).items))
        return seen
    finally:
        await engine.close()
        await engine.archive.close()


def _racer(redis_url: str, database_url: str, user: int, product_ids: list[int],
           barrier: Any, results: Any) -> None:
    """Process entry point: wait for the others, then :func:`_put_and_read`."""
    barrier.wait(timeout=60)
    results.put(asyncio.run(_put_and_read(redis_url, database_url, user, product_ids)))


async def test_processes_racing_to_bring_back_a_settled_cart_keep_every_line(
    engine: Engine, workers_redis_url: str, workers_database_url: str,
    settle: Callable[[], Settled], products: Callable[..., Awaitable[list[Product]]],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    items = await products(19, stock=1_000)
    (user,) = await funded_users(1, 100_000)
    for item in items[:3]:
        await engine.put_cart_item(user, item.id, 1)
    settle()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(
        workers_redis_url, workers_database_url, user,
        [i.id for i in items[3 + n::4]], barrier, results)) for n in range(4)]
    for proc in procs:
        proc.start()
    try:
        seen = [n for _ in procs for n in results.get(timeout=120)]
    finally:
        for proc in procs:
            proc.join(30)
    assert min(seen) >= 4  # every read had the stored lines and its own put
    assert lines_of(await engine.cart(user)) == sorted(
        [(i.id, None, 1) for i in items[:3]] + [(i.id, None, 2) for i in items[3:]])
