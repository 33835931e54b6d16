"""The console with real worker processes: a replay asked from the console delivers every
dead letter once and Postgres nothing twice; heartbeats show who is alive; the workers'
own metrics count what they did; `rushorder replay` shows its progress."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import redis
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine as Database

from api.app import create_app
from engine import Engine
from engine.models import Product
from engine.outbox import PLATFORM, POSTGRES, DeadLetters, Entry, Outboxes
from rushorder.servers import free_port
from rushorder.settings import Settings
from rushorder.tokens import mint_token
from tests.workers.drain_support import (
    REPO,
    Platform,
    Process,
    counts,
    env_of,
    orders_and_cancels,
    wait_for,
)
from workers.forwarder import replay_dead_letters

SECRET = "workers-console-tests-secret-of-32-bytes+"


@pytest.fixture
def csettings(wsettings: Settings) -> Settings:
    """The workers' settings, with a secret for the console's admin token."""
    return wsettings.replace(jwt_secret=SECRET)


@pytest.fixture
async def console(csettings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API on the workers' databases, as an admin of its console."""
    admin = mint_token(SECRET, 1000, admin=True, ttl_s=600)
    async with AsyncTestClient(create_app(csettings), timeout=60) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        yield client


async def fed(console: httpx.AsyncClient) -> dict:
    """The console's feed."""
    resp = await console.get("/api/v1/admin/ops")
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


async def fed_until(console: httpx.AsyncClient, check: Callable[[dict], bool],
                    timeout_s: float = 20) -> dict:
    """The feed, polled until ``check`` holds."""
    deadline = time.monotonic() + timeout_s
    while not check(found := await fed(console)):
        assert time.monotonic() < deadline, f"the feed never got there: {found}"
        time.sleep(0.2)
    return found


def delivered_once(platform: Platform, expected: set[str]) -> bool:
    """Every expected event arrived, each once in the receiver's list."""
    ids = platform.event_ids()
    assert len(ids) == len(set(ids)), "an event is listed twice"
    return set(ids) == expected


async def test_a_console_replay_delivers_every_dead_letter_once_and_writes_postgres_nothing(
    engine: Engine, r: redis.Redis, db: Database, platform: Platform, csettings: Settings,
    console: httpx.AsyncClient, worker: Callable[..., Process],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("fail")
    give_up_fast = csettings.replace(platform_max_attempts=2)
    worker(POSTGRES, settings=give_up_fast)
    worker(PLATFORM, settings=give_up_fast)
    users, (item,) = await funded_users(6), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    wait_for(lambda: DeadLetters(r).count() == len(expected), 30, what="the dead letters")
    wait_for(lambda: Outboxes(r, POSTGRES, "probe").backlog() == 0, 30, what="postgres")
    before = await fed_until(console, lambda f: f["dead_letters"]["count"] == len(expected))
    assert {d["event_id"] for d in before["dead_letters"]["oldest"]} <= expected
    written = counts(db)

    platform.control("ok")
    resp = await console.post("/api/v1/admin/ops/replay")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert (answer["state"], answer["delivered"], answer["left"], answer["total"]) == (
        "done", len(expected), 0, len(expected))
    assert answer["worker"] != ""
    assert DeadLetters(r).count() == 0
    assert delivered_once(platform, expected)
    assert platform.events()["duplicates"] == 0
    time.sleep(1.5)  # a writer that saw the events again would have written them by now
    assert Outboxes(r, POSTGRES, "probe").backlog() == 0
    assert counts(db) == written  # nothing applied twice, nothing new
    assert (await fed(console))["dead_letters"]["count"] == 0


async def test_every_worker_process_beats_and_a_killed_one_shows_dead(
    console: httpx.AsyncClient, worker: Callable[..., Process], platform: Platform,
    wsettings: Settings,
) -> None:
    port = free_port()
    writer, forwarder = worker(POSTGRES), worker(PLATFORM, wsettings.replace(
        worker_metrics_port=port))  # alone, it serves its own metrics
    found = await fed_until(console, lambda f: sum(w["alive"] for w in f["workers"]) == 2)
    by_group = {w["group"]: w for w in found["workers"]}
    assert set(by_group) == {POSTGRES, PLATFORM}
    assert by_group[POSTGRES]["process"].endswith(f":{writer.pid}")
    assert by_group[PLATFORM]["process"].endswith(f":{forwarder.pid}")
    assert all(w["beat_age_s"] < 3 and w["state"] == "working" for w in found["workers"])
    assert (by_group[POSTGRES]["metrics_port"], by_group[PLATFORM]["metrics_port"]) == (None, port)
    assert scrape(port)[("rushorder_worker_heartbeat_timestamp_seconds", PLATFORM)] > 0

    writer.kill()
    gone = await fed_until(console, lambda f: not next(
        w["alive"] for w in f["workers"] if w["group"] == POSTGRES), timeout_s=15)
    assert next(w for w in gone["workers"] if w["group"] == PLATFORM)["alive"]
    assert next(w for w in gone["workers"] if w["group"] == POSTGRES)["beat_age_s"] >= 6


def scrape(port: int) -> dict[tuple[str, str], float]:
    """A worker supervisor's metrics: (sample name, group) -> value."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, s.labels.get("group", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_supervisor_serves_what_its_processes_did(
    engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    spawn: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    port = free_port()
    platform.control("fail")
    supervised = wsettings.replace(worker_metrics_port=port, platform_max_attempts=3)
    spawn("workers.main", settings=supervised)  # the supervisor and its two processes
    users, (item,) = await funded_users(4), await products(1)
    failed = await orders_and_cancels(engine, item, users)  # all dead-lettered
    wait_for(lambda: DeadLetters(r).count() == len(failed), 30, what="the dead letters")
    platform.control("ok")
    more = await orders_and_cancels(engine, item, users)
    wait_for(lambda: Outboxes(r, PLATFORM, "probe").backlog() == 0 ==
             Outboxes(r, POSTGRES, "probe").backlog(), 30, what="the outbox to drain")
    entries = 1 + len(users) + len(failed) + len(more)  # a product, charges, orders, cancels
    metrics = wait_for(lambda: (m := scrape(port)).get(
        ("rushorder_worker_events_forwarded_total", PLATFORM)) == len(more) and m.get(
        ("rushorder_worker_entries_applied_total", POSTGRES)) == entries and m, 15,
        what="the forwarded and applied entries in the metrics")
    assert metrics  # wait_for answers a truthy value: the scraped metrics
    assert metrics[("rushorder_worker_dead_lettered_total", PLATFORM)] == len(failed)
    assert metrics[("rushorder_worker_retries_total", PLATFORM)] == 2 * len(failed)
    assert metrics[("rushorder_worker_entries_applied_total", POSTGRES)] == entries
    assert metrics[("rushorder_worker_batches_applied_total", POSTGRES)] >= 2
    assert metrics[("rushorder_worker_entries_acked_total", POSTGRES)] == entries
    assert metrics[("rushorder_worker_entries_acked_total", PLATFORM)] == entries
    assert metrics[("rushorder_worker_backlog", POSTGRES)] == 0
    assert metrics[("rushorder_worker_heartbeat_timestamp_seconds", PLATFORM)] > time.time() - 10


async def test_rushorder_replay_shows_its_progress_in_a_log(
    engine: Engine, r: redis.Redis, platform: Platform, wsettings: Settings,
    worker: Callable[..., Process], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    platform.control("fail")
    worker(PLATFORM, settings=wsettings.replace(platform_max_attempts=1))
    users, (item,) = await funded_users(4), await products(1)
    expected = await orders_and_cancels(engine, item, users)
    wait_for(lambda: DeadLetters(r).count() == len(expected), 30, what="the dead letters")
    platform.control("ok")
    done = subprocess.run([sys.executable, "-m", "rushorder.cli", "replay"], cwd=REPO,
                          env=env_of(wsettings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"{len(expected)} dead letter(s) delivered" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("replay: ")]
    assert lines[0] == "replay: dead letters to the platform: 0/6 letters (0%)", done.stderr
    assert lines[-1].startswith("replay: dead letters to the platform: 6/6 letters (100%)")
    assert "done in" in lines[-1]
    assert delivered_once(platform, expected)


class Recorder:
    """Progress as a list of what it was told."""

    def __init__(self) -> None:
        self.told: list[tuple[str, object]] = []

    def stage(self, name: str, total: int | None = None, unit: str = "items") -> None:
        self.told.append(("stage", total))

    def advance(self, n: int = 1) -> None:
        self.told.append(("advance", n))


def test_a_replay_tells_its_progress_once_per_dead_letter(
    r: redis.Redis, platform: Platform, wsettings: Settings,
) -> None:
    for n in range(3):
        DeadLetters(r).add(Entry(f"1-{n}", b'{"type": "balance.charged"}'), "x", 1)
    recorder = Recorder()
    assert replay_dead_letters(wsettings, progress=recorder) == 0  # none is the platform's
    assert recorder.told == [("stage", 3), ("advance", 1), ("advance", 1), ("advance", 1)]
    assert DeadLetters(r).count() == 0


async def test_the_console_lists_outbox_entries_set_aside(
    db: Database, console: httpx.AsyncClient
) -> None:
    assert (await fed(console))["set_aside"] == {"count": 0, "oldest": []}
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO outbox_set_aside (stream, entry, raw, error) VALUES "
                             "(1, 7, :raw, 'invalid byte sequence')"),
                     {"raw": b'{"type": "order.paid"}'})
    listed = (await fed(console))["set_aside"]
    assert listed["count"] == 1
    assert [(e["stream"], e["entry"], e["type"], e["error"]) for e in listed["oldest"]] == [
        (1, 7, "order.paid", "invalid byte sequence")]
