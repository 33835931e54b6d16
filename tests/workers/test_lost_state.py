"""Redis loses its data under load (FLUSHDB: an operator's mistake, a lost disk, a failover
to an empty replica): no write succeeds against the empty state, the workers stop instead
of recreating the outbox, nothing wrong reaches Postgres, and after a rebuild every answer
is the one from before the loss, and the workers carry on by themselves."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import redis
from sqlalchemy.engine import Engine as Database

from engine import Engine, keys
from engine.errors import EngineError, StateMissing
from engine.models import Coupon, Product
from engine.outbox import PLATFORM, POSTGRES, Outboxes
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from tests.workers.drain_support import Process, answers, busy_day, counts, scalar, wait_for

SHOPPERS = 12


class Load:
    """Shoppers that charge, order and cancel without pause; it tallies what they got."""

    def __init__(self, engine: Engine, users: list[int], items: list[Product]) -> None:
        self.engine, self.users, self.items = engine, users, items
        self.running = asyncio.Event()
        self.succeeded = self.refused = 0
        self.other: list[BaseException] = []
        self.tasks = [asyncio.create_task(self._shopper(n)) for n in range(SHOPPERS)]
        self.idle = [asyncio.Event() for _ in self.tasks]

    async def _step(self, rng: random.Random) -> None:
        user, item = rng.choice(self.users), rng.choice(self.items)
        kind = rng.random()
        if kind < 0.2:
            await self.engine.charge(user, 1_000)
        elif kind < 0.9:
            await self.engine.place_order(user, [(item.id, 1)])
        else:
            mine = (await self.engine.orders(user, limit=1)).items
            if mine and mine[0].status == "PAID":
                await self.engine.cancel_order(user, mine[0].id)

    async def _shopper(self, n: int) -> None:
        rng = random.Random(n)
        while True:
            if not self.running.is_set():
                self.idle[n].set()
                await self.running.wait()
                self.idle[n].clear()
            try:
                await self._step(rng)
                self.succeeded += 1
            except StateMissing:
                self.refused += 1
            except EngineError:
                pass  # out of stock, balance short, cancelled twice: business as usual
            except Exception as exc:  # noqa: BLE001 - kept to fail the test with it
                self.other.append(exc)

    def go(self) -> None:
        """Shoppers shop."""
        self.succeeded = self.refused = 0
        self.running.set()

    async def hold(self) -> None:
        """Shoppers stop after the call they are in."""
        self.running.clear()
        await asyncio.gather(*(idle.wait() for idle in self.idle))

    async def close(self) -> None:
        """Shoppers go home."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def backlog(r: redis.Redis, group: str) -> int:
    """What the group has not acknowledged yet."""
    return Outboxes(r, group, "probe").backlog()


def rushorder_keys(r: redis.Redis) -> list[bytes]:
    """Every key of rushorder's state (RQ's own keys live beside them)."""
    return [*r.scan_iter(match="{ro}:*"), *r.scan_iter(match=f"{keys.GROUP_TAGS}:*")]


async def test_a_flushed_redis_serves_nothing_and_a_rebuild_brings_every_answer_back(
    engine: Engine, r: redis.Redis, db: Database, wsettings: Settings,
    worker: Callable[..., Process], platform: object,
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    items = await products(4, stock=100_000)
    coupons = [await coupon(quantity=20, kind="PERCENT", value=10), await coupon(quantity=20)]
    writer, forwarder = worker(POSTGRES), worker(PLATFORM)
    users = await busy_day(engine, items, coupons)
    load = Load(engine, users, items)
    try:
        load.go()
        await asyncio.sleep(1.0)
        await load.hold()
        assert load.succeeded > 50 and not load.other, load.other
        wait_for(lambda: backlog(r, POSTGRES) == 0 == backlog(r, PLATFORM), 60,
                 what="the outbox to drain")
        before = await answers(engine, users, items, coupons)
        written = counts(db)

        r.flushdb()  # the loss, while the workers run
        load.go()  # and the shoppers shop on
        await asyncio.sleep(1.5)
        await load.hold()
        assert load.succeeded == 0 and load.refused > 50 and not load.other, load.other
        await asyncio.sleep(3.0)  # time for the workers to loop, recreate, write: they must not
        assert rushorder_keys(r) == []
        assert counts(db) == written
        for process in (writer, forwarder):
            assert process.proc is not None and process.proc.poll() is None
            assert "outbox worker stopped" in process.output()

        assert rebuild(wsettings) == 0
        assert await answers(engine, users, items, coupons) == before
        await engine.charge(users[0], 10_000)  # the load may have spent all of it
        placed = await engine.place_order(users[0], [(items[0].id, 1)])
        wait_for(lambda: scalar(db, "SELECT count(*) FROM orders WHERE id = :id",
                                id=int(placed.id)) == 1, 30, what="the workers to resume")
        assert "outbox worker resumes" in writer.output()
    finally:
        await load.close()


def test_workers_started_on_a_redis_without_live_state_make_nothing(
    r: redis.Redis, worker: Callable[..., Process], platform: object,
) -> None:
    r.flushdb()  # no marker: a lost Redis, or one never loaded
    started = [worker(POSTGRES), worker(PLATFORM)]
    wait_for(lambda: all("outbox worker stopped" in p.output() for p in started), 30,
             what="both workers to say they stopped")
    assert rushorder_keys(r) == []  # no outbox, no group, no dead letters
    assert all(p.proc is not None and p.proc.poll() is None for p in started)
