"""The data platform: a forwarder process and the mock platform, failing, stalling, back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from drain_support import Platform, Process, wait_for

from engine import Engine
from engine.models import Order, Product
from engine.outbox import PLATFORM, DeadLetters, Outbox
from rushorder.settings import Settings
from workers.backoff import Backoff
from workers.platform import Forwarder, replay_dead_letters


async def orders_and_cancels(engine: Engine, item: Product, users: list[int]) -> set[str]:
    """An order per user and a cancel of every other one; the event ids they emit."""
    placed: list[Order] = [await engine.place_order(u, [(item.id, 1)]) for u in users]
    for order in placed[::2]:
        await engine.cancel_order(order.user_id, order.id)
    return {f"{o.id}:paid" for o in placed} | {f"{o.id}:cancelled" for o in placed[::2]}


@pytest.fixture
def patient(wsettings: Settings) -> Settings:
    """Enough attempts (backing off to ~30 s) to outlast the short outages of these tests."""
    return wsettings.replace(platform_max_attempts=10)


def delivered(platform: Platform, expected: set[str]) -> bool:
    """Every expected event arrived, each once in the receiver's list."""
    ids = platform.event_ids()
    assert len(ids) == len(set(ids)), "an event is listed twice"
    return set(ids) == expected


async def test_a_platform_down_never_fails_an_order_and_gets_every_event_once_back(
    engine: Engine, platform: Platform, worker: Callable[..., Process], patient: Settings,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("fail")
    worker(PLATFORM, settings=patient)
    users, (item,) = await funded_users(30), await products(1)
    started = time.monotonic()
    expected = await orders_and_cancels(engine, item, users)
    assert time.monotonic() - started < 5  # 45 writes, none waiting on the platform
    time.sleep(1.5)
    assert platform.event_ids() == []

    platform.control("ok")
    wait_for(lambda: delivered(platform, expected), 30, what="every event")
    assert platform.events()["duplicates"] == 0  # a 500 keeps nothing, so nothing came twice


async def test_a_stalling_platform_times_out_yet_lists_every_event_once(
    engine: Engine, platform: Platform, worker: Callable[..., Process], patient: Settings,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("stall", stall_s=1.0)  # longer than the forwarder's 0.5 s timeout
    worker(PLATFORM, settings=patient)
    users, (item,) = await funded_users(10), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    time.sleep(2.5)
    platform.control("ok")
    wait_for(lambda: delivered(platform, expected), 30, what="every event")
    assert platform.events()["received"] >= len(expected)


async def test_events_that_never_get_through_are_dead_lettered_and_replayed_later(
    engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    worker: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("fail")
    give_up_fast = wsettings.replace(platform_max_attempts=2)
    worker(PLATFORM, settings=give_up_fast)
    users, (item,) = await funded_users(6), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    dead = DeadLetters(r)
    wait_for(lambda: dead.count() == len(expected), 30, what="the dead letters")
    assert Outbox(r, PLATFORM, "probe").backlog() == 0  # given up on, so acknowledged
    assert platform.event_ids() == []

    assert replay_dead_letters(give_up_fast) == 0  # still failing: all kept
    assert dead.count() == len(expected)
    platform.control("ok")
    assert replay_dead_letters(give_up_fast) == len(expected)
    assert dead.count() == 0
    assert delivered(platform, expected)


class Down:
    """A platform that refuses everything (retryable), counting the posts."""

    def __init__(self) -> None:
        self.posts = 0

    def post(self, body: bytes) -> tuple[bool, str | None]:
        self.posts += 1
        return True, "HTTP 503: down"


async def test_a_forwarder_backing_off_keeps_its_events_from_other_forwarders(
    engine: Engine, r: redis.Redis, funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(3), await products(1)
    await orders_and_cancels(engine, item, users)
    down, outbox = Down(), Outbox(r, PLATFORM, "busy")
    outbox.create_groups()
    busy = Forwarder(outbox, DeadLetters(r), down,  # type: ignore[arg-type]
                     max_attempts=50, reclaim_idle_ms=600, backoff=Backoff(0.5, 2.0))
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(busy.run, time.monotonic() + 30, stop)
        try:
            await asyncio.sleep(3)  # backing off in steps longer than 600 ms
            assert Outbox(r, PLATFORM, "other").reclaim(600, 100) == []  # none looks abandoned
        finally:
            stop.set()
            running.result(10)
    assert down.posts >= 2 * 5  # it did retry (5 order events)
    assert Outbox(r, PLATFORM, "probe").pending() == 5  # left pending for the next one
