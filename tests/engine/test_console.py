"""The console's side channel: tallies summed over processes per second of Redis' clock,
worker heartbeats, dead-letter summaries, replay requests; nothing written without live
state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import msgspec
import pytest
import redis

from engine import Engine, keys, state
from engine.errors import StateMissing
from engine.ops import heartbeat, replays
from engine.ops.heartbeat import Heartbeat
from engine.ops.replays import ReplayState
from engine.outbox import DeadLetters, Entry

CONSOLE_DB = 9  # flushed by every test here


@pytest.fixture
def console_url(redis_db: Callable[[int], str]) -> Iterator[str]:
    """An empty database of our own, holding live state."""
    url = redis_db(CONSOLE_DB)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
        state.mark(client, "tests")
    yield url


@pytest.fixture
def r(console_url: str) -> Iterator[redis.Redis]:
    """A plain client on it."""
    with redis.Redis.from_url(console_url) as client:
        yield client


@pytest.fixture
async def engines(console_url: str) -> AsyncIterator[list[Engine]]:
    """Two engines, as two API processes would have."""
    made = [Engine(console_url), Engine(console_url)]
    yield made
    for eng in made:
        await eng.close()


def beat_of(process: str, group: str = "postgres", every_s: float = 2.0) -> Heartbeat:
    return Heartbeat(process=process, group=group, host="h", pid=1, started_ms=0,
                     every_s=every_s, counters={"batches": 3})


async def test_tallies_of_several_processes_add_up_in_the_second_of_redis_clock(
    engines: list[Engine],
) -> None:
    one, two = engines
    now_s = await one.console.now_ms() // 1000
    seconds = await asyncio.gather(one.console.tally({"placed": 3, "refused:OUT_OF_STOCK": 1}),
                                   two.console.tally({"placed": 4, "lat:2": 7}))
    assert {s - now_s for s in seconds} <= {0, 1}
    found = await one.console.seconds(now_s - 5, now_s + 2)
    totals: dict[str, int] = {}
    for counts in found.values():
        for field, n in counts.items():
            totals[field] = totals.get(field, 0) + n
    assert totals == {"placed": 7, "refused:OUT_OF_STOCK": 1, "lat:2": 7}
    assert set(found) == set(seconds)


async def test_a_second_is_kept_ten_minutes(engines: list[Engine], r: redis.Redis) -> None:
    second = await engines[0].console.tally({"placed": 1})
    assert 590 < r.ttl(keys.ops_second(second)) <= 600


async def test_heartbeats_are_stamped_by_redis_and_the_stale_are_forgotten(
    engines: list[Engine], r: redis.Redis,
) -> None:
    stale = msgspec.structs.replace(beat_of("old:1"), beat_ms=1)
    r.hset(keys.OPS_WORKERS, "old:1", msgspec.json.encode(stale))
    assert heartbeat.beat(r, beat_of("h:10"))
    assert heartbeat.beat(r, beat_of("h:11", group="platform"))
    now = await engines[0].console.now_ms()
    beats = await engines[0].console.heartbeats()
    assert [(b.process, b.group) for b in beats] == [("h:11", "platform"), ("h:10", "postgres")]
    assert all(b.alive(now) and b.age_s(now) < 1 for b in beats)
    assert beats[1].counters == {"batches": 3}
    assert not beats[0].alive(now + 6_001)  # three beats of 2 s missed


async def test_replay_requests_go_to_one_taker_and_its_answers_come_back(
    engines: list[Engine], r: redis.Redis,
) -> None:
    console = engines[0].console
    await console.ask_replay("a")
    await console.ask_replay("b")
    assert await console.replay("a") == replays.ASKED
    assert replays.take(r, 1) == "a"
    assert await console.withdraw_replay("b")  # nobody took it: withdrawn
    assert replays.take(r, 0.1) is None
    assert not await console.withdraw_replay("a")  # taken: stays taken
    done = ReplayState(state="done", done=3, total=3, delivered=2, left=1, worker="w")
    assert replays.answer(r, "a", done)
    assert await console.replay("a") == done
    assert not replays.answer(r, "never-asked", done)  # no state is made for one never asked
    assert await console.replay("never-asked") is None


async def test_dead_letters_are_counted_and_the_oldest_summarised(
    engines: list[Engine], r: redis.Redis,
) -> None:
    dead = DeadLetters(r)
    for n in range(7):
        data = msgspec.json.encode({"type": "order.paid", "event_id": f"{n}:paid", "x": 1})
        dead.add(Entry(f"1-{n}", data), f"HTTP 500: try {n}", 8)
    dead.add(Entry("2-0", b"not json"), "undecodable", 0)
    count, oldest = await engines[0].console.dead_letters(limit=2)
    assert count == 8
    assert [(d.entry, d.type, d.event_id, d.error, d.attempts) for d in oldest] == [
        ("1-0", "order.paid", "0:paid", "HTTP 500: try 0", 8),
        ("1-1", "order.paid", "1:paid", "HTTP 500: try 1", 8)]
    _, every = await engines[0].console.dead_letters(limit=10)
    assert (every[-1].entry, every[-1].type) == ("2-0", None)


async def test_without_live_state_the_console_writes_nothing(
    engines: list[Engine], r: redis.Redis,
) -> None:
    r.flushdb()
    with pytest.raises(StateMissing):
        await engines[0].console.tally({"placed": 1})
    with pytest.raises(StateMissing):
        await engines[0].console.ask_replay("a")
    assert not heartbeat.beat(r, beat_of("h:1"))
    assert not replays.answer(r, "a", ReplayState(state="done"))
    assert await engines[0].console.heartbeats() == []  # reads still answer
    assert await engines[0].console.dead_letters() == (0, [])
    assert r.dbsize() == 0
