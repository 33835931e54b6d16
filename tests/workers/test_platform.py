"""The data platform: a forwarder process and the mock platform, failing, stalling, rejecting,
killed mid-batch; in-process forwarders on several streams, backing off, losing the outbox."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, cast

import msgspec
import pytest
import redis

from engine import Engine, keys
from engine.models import Product
from engine.outbox import PLATFORM, DeadLetters, Entry, Outbox, Outboxes
from rushorder.settings import Settings
from tests.workers.drain_support import Platform, Process, orders_and_cancels, wait_for
from workers.backoff import Backoff
from workers.forwarder import Forwarder, replay_dead_letters
from workers.platform_http import Platform as PlatformApi
from workers.platform_http import Session

MODES = ["batch", "single"]


@pytest.fixture
def patient(wsettings: Settings) -> Settings:
    """Enough attempts (backing off to ~30 s) to outlast the short outages of these tests."""
    return wsettings.replace(platform_max_attempts=10)


def delivered(platform: Platform, expected: set[str]) -> bool:
    """Every expected event arrived, each once in the receiver's list."""
    ids = platform.event_ids()
    assert len(ids) == len(set(ids)), "an event is listed twice"
    return set(ids) == expected


class _EventId(msgspec.Struct):
    event_id: str


def dead_event_ids(r: redis.Redis) -> list[str]:
    """The event ids in the dead-letter stream."""
    return [msgspec.json.decode(letter.data, type=_EventId).event_id
            for letter in DeadLetters(r).all()]


def used_only(platform: Platform, mode: str) -> None:
    """The forwarder spoke to the platform's endpoint of ``mode`` and never to the other."""
    requests = platform.stats()["requests"]
    other = "single" if mode == "batch" else "batch"
    assert requests[mode] > 0 and requests[other] == 0, requests


@pytest.mark.parametrize("mode", MODES)
async def test_a_platform_down_never_fails_an_order_and_gets_every_event_once_back(
    mode: str, engine: Engine, platform: Platform, worker: Callable[..., Process],
    patient: Settings, funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("fail")
    worker(PLATFORM, settings=patient.replace(platform_mode=mode))
    users, (item,) = await funded_users(30), await products(1)
    started = time.monotonic()
    expected = await orders_and_cancels(engine, item, users)
    assert time.monotonic() - started < 5  # 45 writes, none waiting on the platform
    time.sleep(1.5)
    platform.control("throttle")  # 429s: retried too
    time.sleep(1.0)
    assert platform.event_ids() == []
    failed = platform.stats()["requests"]["failed"]
    assert failed >= 2  # it did come back

    platform.control("ok")
    wait_for(lambda: delivered(platform, expected), 30, what="every event")
    assert platform.events()["duplicates"] == 0  # a 500 keeps nothing, so nothing came twice
    used_only(platform, mode)


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


@pytest.mark.parametrize("mode", MODES)
async def test_only_the_events_the_platform_rejects_are_dead_lettered(
    mode: str, engine: Engine, r: redis.Redis, platform: Platform, patient: Settings,
    worker: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    rule = r"[37]:"  # the events of orders whose id ends in 3 or 7
    platform.control("ok", reject_pattern=rule)
    users, (item,) = await funded_users(40), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    rejected = {e for e in expected if re.search(rule, e)}
    worker(PLATFORM, settings=patient.replace(platform_mode=mode, platform_batch=25))

    dead = DeadLetters(r)
    wait_for(lambda: Outboxes(r, PLATFORM, "probe").backlog() == 0, 30, what="the outbox")
    assert sorted(dead_event_ids(r)) == sorted(rejected)
    assert all("matches" in letter.error and letter.attempts == 1 for letter in dead.all())
    assert delivered(platform, expected - rejected)
    assert platform.stats()["rejected"] == len(rejected)  # each refused once: never retried
    used_only(platform, mode)


@pytest.mark.parametrize("mode", MODES)
async def test_events_that_never_get_through_are_dead_lettered_and_replayed_later(
    mode: str, engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    worker: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("fail")
    give_up_fast = wsettings.replace(platform_max_attempts=2, platform_mode=mode)
    worker(PLATFORM, settings=give_up_fast)
    users, (item,) = await funded_users(6), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    dead = DeadLetters(r)
    wait_for(lambda: dead.count() == len(expected), 30, what="the dead letters")
    assert Outboxes(r, PLATFORM, "probe").backlog() == 0  # given up on, so acknowledged
    assert all(letter.attempts == 2 for letter in dead.all())
    assert platform.event_ids() == []

    replay = asyncio.to_thread(replay_dead_letters, give_up_fast)  # the CLI runs its own loop
    assert await replay == 0  # still failing: all kept
    assert dead.count() == len(expected)
    platform.control("ok")
    assert await asyncio.to_thread(replay_dead_letters, give_up_fast) == len(expected)
    assert dead.count() == 0
    assert delivered(platform, expected)
    used_only(platform, mode)


async def test_a_forwarder_killed_mid_batch_loses_nothing_and_the_platform_keeps_each_once(
    engine: Engine, r: redis.Redis, platform: Platform, patient: Settings,
    worker: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(100), await products(1)
    expected = await orders_and_cancels(engine, item, users)  # 150 events: 6 batches of 25
    platform.control("stall", stall_s=1.0)  # each batch is held a second at the platform
    batches = patient.replace(platform_batch=25, platform_timeout_s=5.0)
    first = worker(PLATFORM, settings=batches)
    wait_for(lambda: platform.stats()["requests"]["batch"] >= 2, 30, 0.02,
             "the second batch to be in flight")
    first.kill()
    assert Outboxes(r, PLATFORM, "probe").pending() > 0  # it died holding what it had not acked
    assert len(platform.event_ids()) < len(expected)

    platform.control("ok")  # the stalled batch still lands (its sender is gone)
    worker(PLATFORM, settings=batches)
    wait_for(lambda: Outboxes(r, PLATFORM, "probe").backlog() == 0, 30, what="every ack")
    assert delivered(platform, expected)
    assert platform.events()["duplicates"] >= 1  # the batch in flight was sent again
    assert DeadLetters(r).count() == 0


def split_outbox(r: redis.Redis, streams: list[str]) -> None:
    """Deal every outbox stream's entries out over ``streams``."""
    entries: list[Any] = []
    for stream in keys.layout(keys.DEFAULT_GROUPS).outboxes:
        entries += cast(Any, r.xrange(stream))
    for n, (_, fields) in enumerate(entries):
        r.xadd(streams[n % len(streams)], fields)


def run_until(forwarder: Forwarder, done: Callable[[], bool], timeout_s: float = 20) -> None:
    """Run a forwarder in a thread until ``done()``; fail after ``timeout_s``."""
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(forwarder.run, time.monotonic() + timeout_s, stop)
        try:
            wait_for(done, timeout_s, what="the forwarder")
        finally:
            stop.set()
            running.result(10)


async def test_one_forwarder_drives_several_streams_with_a_batch_in_flight_on_each(
    engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(40), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    streams = ["{ro}:test-outbox-a", "{ro}:test-outbox-b"]
    split_outbox(r, streams)
    outboxes = [Outbox(r, PLATFORM, "multi", stream=s, consumer_groups=[PLATFORM]) for s in streams]
    for outbox in outboxes:
        outbox.create_groups()
    platform.control("stall", stall_s=0.3)  # so that the two batches surely overlap
    forwarder = Forwarder(outboxes, DeadLetters(r), PlatformApi.from_settings(
        wsettings.replace(platform_batch=10, platform_timeout_s=5.0)), block_ms=100)
    run_until(forwarder, lambda: delivered(platform, expected))
    assert platform.stats()["most_in_flight"] == 2
    assert [o.backlog() for o in outboxes] == [0, 0]


class Gone(Exception):
    """Stands for an error of the outbox that is not Redis' (the stream was lost)."""


class Failing(Outboxes):
    """An outbox whose reads fail with ``errors``, one per read, then work."""

    def __init__(self, r: redis.Redis, errors: list[Exception]) -> None:
        super().__init__(r, PLATFORM, "failing")
        self.errors = errors

    def read(self, count: int, block_ms: int | None = None) -> list[Entry]:
        if self.errors:
            raise self.errors.pop(0)
        return super().read(count, block_ms)


async def test_redis_errors_are_retried_and_any_other_outbox_error_ends_the_run_as_itself(
    engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(4), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    flaky = Failing(r, [redis.ConnectionError("lost"), redis.TimeoutError("slow")])
    flaky.create_groups()
    api = PlatformApi.from_settings(wsettings)
    run_until(Forwarder([flaky], DeadLetters(r), api, block_ms=100),
              lambda: delivered(platform, expected))

    lost = Failing(r, [Gone("the stream is gone")])
    forwarder = Forwarder([lost, Outboxes(r, PLATFORM, "other")], DeadLetters(r), api,
                          in_flight=2, block_ms=100)
    with pytest.raises(Gone):
        await asyncio.to_thread(forwarder.run, time.monotonic() + 10, threading.Event())


class DownTransport:
    """A platform that answers every request 503 (retryable), counting the posts."""

    def __init__(self) -> None:
        self.posts = 0

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        self.posts += 1
        return 503, b"down"

    async def close(self) -> None:
        pass


class Down(PlatformApi):
    """The platform's API over :class:`DownTransport`."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.transport = DownTransport()

    @asynccontextmanager
    async def session(self, connections: int = 1) -> AsyncIterator[Session]:
        yield Session(self, self.transport)


async def test_a_forwarder_backing_off_keeps_its_events_from_other_forwarders(
    engine: Engine, r: redis.Redis, funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(3), await products(1)
    await orders_and_cancels(engine, item, users)
    down, outbox = Down(), Outboxes(r, PLATFORM, "busy")
    outbox.create_groups()
    busy = Forwarder([outbox], DeadLetters(r), down,
                     max_attempts=50, reclaim_idle_ms=600, backoff=Backoff(0.5, 2.0))
    stop = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(busy.run, time.monotonic() + 30, stop)
        try:
            await asyncio.sleep(3)  # backing off in steps longer than 600 ms
            assert Outboxes(r, PLATFORM, "other").reclaim(600, 100) == []  # none looks abandoned
        finally:
            stop.set()
            running.result(10)
    assert down.transport.posts >= 2  # it did retry (one batch of 5 order events)
    assert Outboxes(r, PLATFORM, "probe").pending() == 5  # left pending for the next one


async def test_a_forwarder_that_keeps_up_lingers_and_posts_a_trickle_in_few_batches(
    engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(100), await products(1)
    outbox = Outboxes(r, PLATFORM, "trickle")
    outbox.create_groups()
    forwarder = Forwarder([outbox], DeadLetters(r), PlatformApi.from_settings(wsettings),
                          block_ms=100, linger_ms=200)
    stop = threading.Event()
    thread = threading.Thread(target=forwarder.run, args=(time.monotonic() + 30, stop))
    thread.start()
    try:
        started = time.monotonic()
        expected = set()
        for user in users:  # an order every ~5 ms for ~0.5-1 s
            expected.add(f"{(await engine.place_order(user, [(item.id, 1)])).id}:paid")
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        wait_for(lambda: delivered(platform, expected), 10, what="the forwarder")
    finally:
        stop.set()
        thread.join(10)
    # one request per linger, not one per order (without it: ~one per order)
    assert platform.stats()["requests"]["batch"] <= elapsed / 0.2 + 3
