"""A Redis without the live-state marker (it lost its data, or was never loaded) serves
nothing: every read and write the engine offers answers StateMissing and writes nothing,
batched orders included, and readiness says why. Marked again, it serves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from engine import Engine, keys, state
from engine.errors import EngineUnavailable, StateMissing
from engine.scripts import LIBRARY, LUA_DIR

LOST_DB = 5  # a database of its own, flushed at will

NOW = datetime.now(UTC)
CALLS: dict[str, Callable[[Engine], Awaitable[Any]]] = {
    "balance": lambda e: e.balance(1),
    "charge": lambda e: e.charge(1, 1_000),
    "history": lambda e: e.history(1),
    "create_product": lambda e: e.create_product("widget", 100, 5),
    "update_product": lambda e: e.update_product(1, price=50),
    "add_option": lambda e: e.add_option(1, "size 260", stock=5),
    "update_option": lambda e: e.update_option(1, 1, stock_delta=1),
    "product": lambda e: e.product(1),
    "products": lambda e: e.products(),
    "top": lambda e: e.top(),
    "create_coupon": lambda e: e.create_coupon("c", "FIXED", 100, 5, NOW - timedelta(hours=1),
                                               NOW + timedelta(hours=1)),
    "coupon": lambda e: e.coupon(1),
    "issue_coupon": lambda e: e.issue_coupon(1, 1),
    "user_coupons": lambda e: e.user_coupons(1),
    "open_coupons": lambda e: e.open_coupons(),
    "coupon_counts": lambda e: e.coupon_counts(),
    "place_order": lambda e: e.place_order(1, [(1, 1)]),
    "checkout": lambda e: e.checkout(1),
    "cancel_order": lambda e: e.cancel_order(1, "1"),
    "pay_order": lambda e: e.pay_order(1, "1"),  # issue 28
    "preview_order": lambda e: e.preview_order(1, [(1, 1)]),
    "expire_due": lambda e: e.expire_due(),
    "order": lambda e: e.order(1, "1"),
    "orders": lambda e: e.orders(1),
    "cart": lambda e: e.cart(1),
    "put_cart_item": lambda e: e.put_cart_item(1, 1, 1),
    "remove_cart_item": lambda e: e.remove_cart_item(1, 1),
}


@pytest.fixture
def lost_url(redis_db: Callable[[int], str]) -> str:
    """An emptied database: what a FLUSHALL, a lost disk or an empty replica leaves."""
    url = redis_db(LOST_DB)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
async def lost(lost_url: str) -> AsyncIterator[Engine]:
    """An engine on that database."""
    eng = Engine(lost_url)
    yield eng
    await eng.close()


def test_every_engine_method_is_checked_here() -> None:
    public = {name for name in dir(Engine) if not name.startswith("_")
              and asyncio.iscoroutinefunction(getattr(Engine, name))}
    assert public - {"load", "ready", "close", "gauges"} == set(CALLS)  # gauges: no state


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_without_the_marker_every_call_is_refused_and_writes_nothing(
    lost: Engine, lost_url: str, name: str
) -> None:
    with pytest.raises(StateMissing) as refused:
        await CALLS[name](lost)
    assert isinstance(refused.value, EngineUnavailable)  # the API's 503
    assert refused.value.code == "SERVICE_UNAVAILABLE"
    assert "rushorder rebuild" in refused.value.detail
    with redis.Redis.from_url(lost_url) as client:
        assert client.dbsize() == 0  # no key made, least of all an outbox


async def test_a_deferred_order_without_the_marker_is_refused_and_writes_nothing(
    lost: Engine, lost_url: str
) -> None:
    with pytest.raises(StateMissing):
        await lost.place_order(1, [(1, 1)], deferred=True)
    with redis.Redis.from_url(lost_url) as client:
        assert client.dbsize() == 0


async def test_a_batch_of_orders_without_the_marker_refuses_each_of_them(
    lost: Engine, lost_url: str
) -> None:
    answers = await asyncio.gather(*(lost.place_order(u, [(1, 1)]) for u in range(1, 21)),
                                   return_exceptions=True)
    assert all(isinstance(a, StateMissing) for a in answers), answers
    with redis.Redis.from_url(lost_url) as client:
        assert client.dbsize() == 0


async def test_ready_says_the_state_is_missing_until_it_is_marked(
    lost: Engine, lost_url: str
) -> None:
    await lost.load()
    with pytest.raises(StateMissing):
        await lost.ready()
    with redis.Redis.from_url(lost_url) as client:
        made = state.marker(client) or state.mark(client, "a test")
    assert await lost.ready()
    assert "a test" in made.describe()
    product = await lost.create_product("widget", 100, 5)
    assert (await lost.product(product.id)).stock == 5


async def test_losing_the_marker_mid_run_stops_serving_at_once(
    lost: Engine, lost_url: str
) -> None:
    with redis.Redis.from_url(lost_url) as client:
        state.mark(client, "a test")
        product = await lost.create_product("widget", 100, 5)
        await lost.charge(1, 1_000)
        group = lost.layout.of(1).product(product.id)
        before = client.hmget(keys.product(product.id), "stock") + client.hmget(group, "stock")
        assert state.unmark(client)
        with pytest.raises(StateMissing):
            await lost.place_order(1, [(product.id, 1)])
        assert client.hmget(keys.product(product.id), "stock") + client.hmget(
            group, "stock") == before  # no unit taken, wherever they are (a small stock is
        # dealt out whole: engine/allotments.py)
        assert state.marker(client) is None


def test_every_script_checks_the_marker_before_touching_anything() -> None:
    for path in Path(str(LUA_DIR)).glob("*.lua"):
        if path.name == LIBRARY:
            continue
        body = path.read_text()
        assert any(f"-- KEYS[1] live marker {which}" in body for which in (
            "{ro}:live", "<g>:live", "of the slot")), path.name
        guard = body.find("state_missing(K.live")
        assert guard > 0, f"{path.name} does not check the live-state marker"
        assert "redis.call" not in body[:guard], f"{path.name} touches Redis before the check"


@pytest.mark.parametrize("other", [True, False], ids=["other count", "before groups"])
async def test_ready_refuses_state_laid_out_in_another_group_count(
    lost: Engine, lost_url: str, other: bool
) -> None:
    await lost.load()
    marked = {"groups": lost.layout.groups + 1} if other else {}
    with redis.Redis.from_url(lost_url) as client:
        client.set(keys.LIVE, json.dumps({"origin": "a test", "at_ms": 0, **marked}))
        with pytest.raises(StateMissing) as refused:
            await lost.ready()
        assert f"not the {lost.layout.groups} of RUSHORDER_GROUPS" in refused.value.detail
        assert "rebuild --force" in refused.value.detail
        state.mark(client, "a test", lost.layout.groups)
    assert await lost.ready()


GROUP_WRITES = ["charge", "issue_coupon", "place_order", "checkout", "cancel_order"]


@pytest.mark.parametrize("name", GROUP_WRITES)
async def test_a_write_to_state_laid_out_in_another_group_count_is_refused(
    lost: Engine, lost_url: str, name: str
) -> None:
    with redis.Redis.from_url(lost_url) as client:
        state.mark(client, "a test", lost.layout.groups * 2)
        with pytest.raises(StateMissing) as refused:
            await CALLS[name](lost)
        assert f"the {lost.layout.groups} of RUSHORDER_GROUPS" in refused.value.detail
        assert all(k.endswith(b":live") for k in client.scan_iter())  # markers only
