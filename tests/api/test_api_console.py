"""The operators' console over HTTP: its feed counts what was really placed and refused,
summed over API processes; only admins get it (bearer or the login's cookie, with CSRF on
the replay); the page loads nothing but its own files; a replay goes to a forwarder."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from actors import Actor, assert_problem
from conftest import SECRET

from api.app import create_app
from api.auth import CSRF_COOKIE, TOKEN_COOKIE, Authenticator
from api.console import quantile
from engine import replays, state
from engine.replays import ReplayState
from rushorder.settings import Settings

CONSOLE_DB = 7  # the console's counts are the whole database's: a database of its own


@pytest.fixture
def console_url(redis_db: Callable[[int], str]) -> Iterator[str]:
    """An empty database holding live state, for the tests of this module alone."""
    url = redis_db(CONSOLE_DB)
    with redis.Redis.from_url(url) as client:
        client.flushdb()
        state.mark(client, "tests")
    yield url


@pytest.fixture
async def two_apis(serve_app: Callable[[Any], AsyncIterator[str]], api_settings: Settings,
                   console_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two API apps on that database, as two API processes (each its own metrics)."""
    settings = api_settings.replace(redis_url=console_url)
    serving = [serve_app(create_app(settings)), serve_app(create_app(settings))]
    urls = [await anext(s) for s in serving]
    clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
    yield clients
    for client in clients:
        await client.aclose()
    for s in serving:
        with pytest.raises(StopAsyncIteration):
            await anext(s)


@pytest.fixture
def people() -> tuple[Actor, Actor]:
    """An admin and a user of the console's database."""
    return Actor(1000, SECRET, admin=True), Actor(1, SECRET)


def cookie_client(client: httpx.AsyncClient, cookies: dict[str, str]) -> httpx.AsyncClient:
    """A client of the same API that sends these cookies, as a browser would."""
    return httpx.AsyncClient(base_url=str(client.base_url), cookies=cookies, timeout=30)


async def feed_when(client: httpx.AsyncClient, admin: Actor,
                    done: Callable[[dict[str, Any]], bool], timeout_s: float = 10) -> dict:
    """The feed, polled until ``done`` holds for it."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await client.get("/api/v1/admin/ops", headers=admin.headers)
        assert resp.status_code == 200, resp.text
        fed = resp.json()
        if done(fed) or time.monotonic() > deadline:
            return fed
        await asyncio.sleep(0.2)


def test_quantiles_interpolate_within_their_bucket_as_prometheus_does() -> None:
    bounds = (0.001, 0.01, 0.1)
    assert quantile(0.5, [0, 10, 0, 0], bounds) == pytest.approx(0.0055)
    assert quantile(0.99, [50, 0, 50, 0], bounds) == pytest.approx(0.0982)
    assert quantile(0.99, [0, 0, 1, 9], bounds) == 0.1  # in +Inf: the highest bound
    assert quantile(0.5, [0, 0, 0, 0], bounds) is None


async def test_the_feed_counts_what_every_api_process_placed_and_refused(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor],
) -> None:
    one, two = two_apis
    admin, buyer = people
    broke = Actor(2, SECRET)
    made = await one.post("/api/v1/admin/products", headers=admin.headers,
                          json={"name": "hot", "price": 1_000, "stock": 5})
    product = made.json()["id"]
    charged = await two.post("/api/v1/balance/charge", json={"amount": 100_000},
                             headers=buyer.headers)
    assert charged.status_code == 200
    line = {"items": [{"product_id": product, "quantity": 1}]}
    statuses = [(await one.post("/api/v1/orders", json=line, headers=buyer.headers)).status_code
                for _ in range(8)]  # 5 placed, then 3 OUT_OF_STOCK
    statuses += [(await two.post("/api/v1/orders", json=line, headers=broke.headers)).status_code
                 for _ in range(2)]  # OUT_OF_STOCK comes first: stock is gone
    restock = await two.patch(f"/api/v1/admin/products/{product}", headers=admin.headers,
                              json={"stock_delta": 1})
    assert restock.status_code == 200
    poor = await two.post("/api/v1/orders", json=line, headers=broke.headers)
    assert_problem(poor, 409, "INSUFFICIENT_BALANCE")
    assert statuses == [201] * 5 + [409] * 5

    fed = await feed_when(two, admin, lambda f: f["placed_in_window"] >= 5 and sum(
        f["refused_in_window"].values()) >= 6)
    assert fed["placed_in_window"] == 5  # placed through one process, read through the other
    assert fed["refused_in_window"] == {"INSUFFICIENT_BALANCE": 1, "OUT_OF_STOCK": 5}
    assert sum(s["placed"] for s in fed["seconds"]) == 5 and len(fed["seconds"]) == 300
    assert fed["latency"]["count"] == 11 and fed["latency"]["route"] == "POST /api/v1/orders"
    assert 0 < fed["latency"]["p50_ms"] <= fed["latency"]["p99_ms"]
    assert fed["top"] == [{"rank": 1, "product_id": product, "name": "hot", "price": 1_000,
                           "sold_quantity": 5, "stock": 1}]
    assert fed["outbox"]["length"] >= 7 and fed["dead_letters"] == {"count": 0, "oldest": []}
    assert fed["redis"]["used_bytes"] > 0 and fed["live_state"] == "ok"
    assert fed["problems"] == []
    scraped = (await one.get("/metrics")).text  # the same counts, this process's alone
    assert "rushorder_orders_placed_total 5.0" in scraped
    assert f'rushorder_top_stock{{rank="1",product_id="{product}",name="hot"}} 1' in scraped
    assert "rushorder_outbox_dead_letters 0" in scraped


async def test_the_feed_and_the_replay_need_an_admin(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor],
) -> None:
    client, (admin, user) = two_apis[0], people
    for method, path in (("GET", "/api/v1/admin/ops"), ("POST", "/api/v1/admin/ops/replay")):
        assert_problem(await client.request(method, path), 401, "UNAUTHORIZED")
        assert_problem(await client.request(method, path, headers={"Authorization": "Bearer x"}),
                       401, "UNAUTHORIZED")
        assert_problem(await client.request(method, path, headers=user.headers), 403,
                       "FORBIDDEN")
        async with cookie_client(client, {TOKEN_COOKIE: user.token}) as with_cookie:
            assert_problem(await with_cookie.request(method, path), 403, "FORBIDDEN")
    assert (await client.get("/api/v1/admin/ops", headers=admin.headers)).status_code == 200


async def test_the_login_keeps_only_an_admin_token_in_an_http_only_cookie(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor],
) -> None:
    client, (admin, user) = two_apis[0], people
    refused = await client.post("/ops/login", json={"token": user.token})
    assert_problem(refused, 403, "FORBIDDEN")
    assert_problem(await client.post("/ops/login", json={"token": "forged"}), 401, "UNAUTHORIZED")
    assert "set-cookie" not in refused.headers
    resp = await client.post("/ops/login", json={"token": admin.token})
    assert resp.status_code == 200, resp.text
    token_cookie, csrf_cookie = resp.headers.get_list("set-cookie")
    assert token_cookie.startswith(f"{TOKEN_COOKIE}={admin.token};")
    assert "HttpOnly" in token_cookie and "SameSite=Strict" in token_cookie
    assert csrf_cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" not in csrf_cookie
    form = await client.post("/ops/login", data={"token": admin.token})
    assert form.status_code == 303 and form.headers["location"] == "/ops"
    with_cookie = httpx.AsyncClient(base_url=str(client.base_url), cookies=resp.cookies)
    async with with_cookie:
        assert (await with_cookie.get("/api/v1/admin/ops")).status_code == 200
        out = await with_cookie.post("/ops/logout")
        assert all("Max-Age=0" in c for c in out.headers.get_list("set-cookie"))


@pytest.fixture
def forwarder(console_url: str) -> Iterator[list[str]]:
    """A stand-in platform forwarder: takes replay requests and answers them done."""
    taken: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        with redis.Redis.from_url(console_url) as client:
            while not stop.is_set():
                if (request := replays.take(client, 0.2)) is not None:
                    taken.append(request)
                    replays.answer(client, request, ReplayState(
                        state="done", done=2, total=2, delivered=2, left=0, worker="stand-in"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield taken
    stop.set()
    thread.join(5)


async def test_a_replay_by_cookie_needs_the_csrf_token_of_that_cookie(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor], forwarder: list[str],
) -> None:
    client, (admin, _) = two_apis[0], people
    login = await client.post("/ops/login", json={"token": admin.token})
    csrf = login.cookies[CSRF_COOKIE]
    another = Authenticator(SECRET).csrf_of(Actor(1001, SECRET, admin=True).token)
    async with cookie_client(client, {TOKEN_COOKIE: admin.token, CSRF_COOKIE: csrf}) as browser:
        refused = [await browser.post("/api/v1/admin/ops/replay")]  # what another site can do
        for wrong in ("0" * 64, another, csrf.upper(), admin.token):
            refused.append(await browser.post("/api/v1/admin/ops/replay",
                                              headers={"X-CSRF-Token": wrong}))
        for resp in refused:
            assert_problem(resp, 403, "FORBIDDEN", names="x-csrf-token")
        assert forwarder == []  # nothing was asked
        done = await browser.post("/api/v1/admin/ops/replay", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200, done.text
    assert done.json() | {"request_id": "-"} == {
        "request_id": "-", "state": "done", "done": 2, "total": 2, "delivered": 2, "left": 0,
        "worker": "stand-in"}
    assert forwarder == [done.json()["request_id"]]
    bearer = await client.post("/api/v1/admin/ops/replay", headers=admin.headers)
    assert bearer.status_code == 200  # a bearer header needs no CSRF token


async def test_a_replay_that_no_forwarder_takes_is_withdrawn_and_answers_503(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor], console_url: str,
) -> None:
    resp = await two_apis[0].post("/api/v1/admin/ops/replay", headers=people[0].headers)
    assert_problem(resp, 503, "SERVICE_UNAVAILABLE", names="rushorder worker")
    with redis.Redis.from_url(console_url) as client:
        assert replays.take(client, 0.1) is None  # not left for a forwarder that comes later


async def test_the_page_loads_only_files_rushorder_serves(client: httpx.AsyncClient) -> None:
    page = await client.get("/ops")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert 'id="login-form"' in page.text  # the only thing it shows without a token
    loaded = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(loaded) == ["/ops/ops.css", "/ops/ops.js"]
    for path, kind in (("/ops/ops.js", "text/javascript"), ("/ops/ops.css", "text/css")):
        asset = await client.get(path)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert not re.search(r"https?://|//[a-z]", asset.text.replace("// ", "")), path
    assert_problem(await client.get("/ops/ops.html"), 404, "NOT_FOUND")
    assert_problem(await client.get("/ops/secret.py"), 404, "NOT_FOUND")


async def test_the_console_is_not_in_the_shops_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith(("/ops", "/api/v1/admin/ops"))]
