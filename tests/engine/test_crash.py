"""A Redis killed (SIGKILL) in the middle of a flood of batched orders keeps every order
it answered and takes nothing twice: with appendfsync always an answer leaves only once its
batch is in the AOF, and a batch is logged whole (one MULTI/EXEC), counters included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis

from engine import Engine, state
from engine.errors import EngineUnavailable
from engine.models import Order
from engine.outbox import events
from rushorder.servers import RedisServer, free_port

USERS = range(1, 201)
BALANCE, PRICE, STOCK = 100_000, 10, 1_000_000


async def flood(engine: Engine, product_id: int, seconds: float, server: RedisServer
                ) -> list[Order]:
    """Every user orders one unit after another until Redis is killed; the answered ones."""
    answered: list[Order] = []

    async def buyer(user: int) -> None:
        while True:
            try:
                answered.append(await engine.place_order(user, [(product_id, 1)]))
            except EngineUnavailable:
                return

    buyers = [asyncio.create_task(buyer(u)) for u in USERS]
    await asyncio.sleep(seconds)
    assert server.proc is not None
    server.proc.kill()  # no shutdown, no last fsync
    server.proc.wait()
    await asyncio.gather(*buyers)
    return answered


async def test_a_redis_killed_mid_flood_keeps_every_answered_order_and_nothing_twice(
    tmp_path: Path, redis_cluster: bool,
) -> None:
    server = RedisServer(tmp_path / "redis", free_port(), cluster=redis_cluster).start()
    try:
        with redis.Redis.from_url(server.url) as client:
            state.mark(client, "tests")  # in the AOF like everything else: back after the crash
        engine = Engine(server.url)
        product = await engine.create_product("hot", PRICE, STOCK)
        await asyncio.gather(*(engine.charge(u, BALANCE) for u in USERS))
        answered = await flood(engine, product.id, 0.5, server)
        await engine.close()
        assert len(answered) > 100  # the flood did run

        server.start()  # loads the AOF, a torn last batch dropped
        engine = Engine(server.url)
        for order in answered:
            assert await engine.order(order.user_id, order.id) == order
        with redis.Redis.from_url(server.url) as client:
            layout = engine.layout
            counters = {g: int(client.hget(g.seq, "order") or 0) for g in layout.all}
            placed = sum(counters.values())
            listed = sum(client.llen(layout.of(u).user_orders(u)) for u in USERS)
            paid = [e for g in layout.all for _, fields in client.xrange(g.outbox)
                    if isinstance(e := events.decode(fields[b"e"]), events.OrderPaid)]
        assert len(answered) <= placed == listed == len(paid)
        # Every group's ids run 1..its counter, none missing, none twice.
        assert sorted(int(e.order.id) for e in paid) == sorted(
            layout.make_id(n, g.index) for g, top in counters.items() for n in range(1, top + 1))
        assert (await engine.product(product.id)).stock == STOCK - placed
        balances = await asyncio.gather(*(engine.balance(u) for u in USERS))
        assert sum(b.balance for b in balances) == len(USERS) * BALANCE - PRICE * placed
        g = layout.of(1)
        assert int((await engine.place_order(1, [(product.id, 1)])).id) == layout.make_id(
            counters[g] + 1, g.index)
        await engine.close()
    finally:
        server.stop()
