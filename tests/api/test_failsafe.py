"""Fail safe and fail fast, through HTTP: a Redis that lost its data is never served from,
and a Redis that stops answering costs a request the reply deadline, not forever."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api.app import create_app
from engine import state
from rushorder.servers import RedisServer, free_port
from rushorder.settings import Settings
from tests.api.actors import Actor, assert_problem
from tests.api.support import SECRET

LOST_DB = 6  # a database of the session's Redis with no live state
DEADLINE_S = 1.0
MARGIN_S = 1.5  # scheduling on a busy 2-core box, uvicorn and the client
BUYERS = 40


async def test_a_redis_without_live_state_answers_503_and_is_not_ready(
    serve_app, api_settings: Settings, redis_db: Callable[[int], str]
) -> None:
    lost_url = redis_db(LOST_DB)
    with redis.Redis.from_url(lost_url) as client:
        client.flushdb()
    user, admin = Actor(1, SECRET), Actor(2, SECRET, admin=True)
    async for url in serve_app(create_app(api_settings.replace(redis_url=lost_url))):
        async with httpx.AsyncClient(base_url=url) as http:
            ready = assert_problem(await http.get("/health/ready"), 503,
                                   "SERVICE_UNAVAILABLE", names="no live state")
            assert ready["context"]["redis"].startswith("no live state")
            assert (await http.get("/health/live")).status_code == 200
            for method, path, body, who in [
                ("POST", "/api/v1/balance/charge", {"amount": 1_000}, user),
                ("POST", "/api/v1/orders", {"items": [{"product_id": 1, "quantity": 1}]}, user),
                ("POST", "/api/v1/admin/products", {"name": "w", "price": 1, "stock": 1}, admin),
                ("GET", "/api/v1/balance", None, user),
                ("GET", "/api/v1/products", None, user),
                ("DELETE", "/api/v1/cart/items/1", None, user),
            ]:
                resp = await http.request(method, path, json=body, headers=who.headers)
                doc = assert_problem(resp, 503, "SERVICE_UNAVAILABLE", names="rushorder rebuild")
                assert resp.headers["retry-after"] == "1", doc
    with redis.Redis.from_url(lost_url) as client:
        assert client.dbsize() == 0  # nothing written, nothing made


@pytest.fixture
def stoppable(tmp_path: Path, redis_cluster: bool) -> Iterator[RedisServer]:
    """A Redis of this test's own, as the managed stack runs it, holding live state."""
    server = RedisServer(tmp_path / "redis", free_port(), cluster=redis_cluster).start()
    with redis.Redis.from_url(server.url) as client:
        state.mark(client, "tests")
    yield server
    if server.pid is not None:
        os.kill(server.pid, signal.SIGCONT)
    server.stop()


async def test_orders_to_a_stopped_redis_answer_503_within_the_deadline_and_apply_once(
    serve_app, api_settings: Settings, stoppable: RedisServer
) -> None:
    settings = api_settings.replace(redis_url=stoppable.url, redis_timeout_s=DEADLINE_S,
                                    database_url=None)
    admin, buyers = Actor(1, SECRET, admin=True), [Actor(100 + n, SECRET) for n in range(BUYERS)]
    async for url in serve_app(create_app(settings)):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            made = await http.post("/api/v1/admin/products", headers=admin.headers,
                                   json={"name": "hot", "price": 100, "stock": 1_000})
            product = made.json()["id"]
            for buyer in buyers:
                await http.post("/api/v1/balance/charge", json={"amount": 1_000},
                                headers=buyer.headers)

            async def order(buyer: Actor, product: int = product) -> httpx.Response:
                return await http.post(
                    "/api/v1/orders", headers=buyer.with_key(f"order-of-{buyer.id}"),
                    json={"items": [{"product_id": product, "quantity": 1}]})

            assert stoppable.pid is not None
            os.kill(stoppable.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                stopped = await asyncio.gather(*(order(b) for b in buyers))
                waited = time.monotonic() - started
                health = await http.get("/health/ready")
                await asyncio.sleep(max(0.0, 2 * DEADLINE_S - (time.monotonic() - started)))
            finally:
                os.kill(stoppable.pid, signal.SIGCONT)
            for resp in stopped:
                assert_problem(resp, 503, "SERVICE_UNAVAILABLE", names="no reply within")
            assert waited < DEADLINE_S + MARGIN_S, waited  # none hangs
            assert_problem(health, 503, "SERVICE_UNAVAILABLE")

            retried = await asyncio.gather(*(order(b) for b in buyers))
            assert [r.status_code for r in retried] == [201] * BUYERS
            replayed = await asyncio.gather(*(order(b) for b in buyers))
            assert [r.json() for r in replayed] == [r.json() for r in retried]
            after = (await http.get(f"/api/v1/products/{product}")).json()
            assert after["stock"] == 1_000 - BUYERS  # each order exactly once
            for buyer in buyers[:5]:
                mine = (await http.get("/api/v1/orders", headers=buyer.headers)).json()
                assert len(mine["items"]) == 1
                balance = (await http.get("/api/v1/balance", headers=buyer.headers)).json()
                assert balance["balance"] == 900
