"""The operators' console over HTTP: its feed counts what was really placed and refused,
summed over API processes; only admins get it (bearer, or a server-side session opened by
the login, with CSRF on the replay); a logout revokes the session; login and logout refuse
other origins and missing CSRF tokens; the cookie is Secure over TLS or behind a trusted
proxy; the page loads nothing but its own files; a replay goes to a forwarder."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.console import quantile
from api.sessions import CSRF_COOKIE, SESSION_COOKIE
from engine import keys, state
from engine.ops import replays
from engine.ops.replays import ReplayState
from rushorder.settings import Settings
from tests.api.actors import Actor, assert_problem
from tests.api.support import SECRET

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


def origin_of(client: httpx.AsyncClient) -> str:
    """The console's origin as a browser names it: scheme://host:port."""
    return str(client.base_url).rstrip("/")


@contextlib.asynccontextmanager
async def browser_of(client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """A browser on the console's page: a client of the same API that keeps cookies, with
    the pre-login CSRF token that loading /ops gives."""
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as browser:
        assert (await browser.get("/ops")).status_code == 200
        assert browser.cookies.get(CSRF_COOKIE)
        yield browser


async def log_in(browser: httpx.AsyncClient, token: str, **extra: Any) -> httpx.Response:
    """The page's login: its origin, its CSRF token, the admin token."""
    headers = {"Origin": origin_of(browser),
               "X-CSRF-Token": browser.cookies.get(CSRF_COOKIE) or ""} | extra
    return await browser.post("/ops/login", json={"token": token}, headers=headers)


def set_cookies(resp: httpx.Response) -> dict[str, str]:
    """The Set-Cookie headers of an answer, by cookie name."""
    return {c.split("=", 1)[0]: c for c in resp.headers.get_list("set-cookie")}


def session_keys(url: str) -> list[bytes]:
    """The console sessions Redis holds."""
    with redis.Redis.from_url(url) as client:
        return sorted(client.scan_iter(match=keys.OPS_SESSION_PREFIX + "*"))


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
        # The cookie is a session id now, never a token: an admin's own JWT in it is refused.
        async with cookie_client(client, {SESSION_COOKIE: admin.token}) as with_cookie:
            assert_problem(await with_cookie.request(method, path), 401, "UNAUTHORIZED")
    assert (await client.get("/api/v1/admin/ops", headers=admin.headers)).status_code == 200


async def test_a_login_opens_a_server_side_session_in_an_http_only_strict_cookie(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor], console_url: str,
) -> None:
    client, user = two_apis[0], people[1]
    admin = Actor(1003, SECRET, admin=True, ttl_s=86_400)  # a token that outlasts 8 h
    async with browser_of(client) as browser:
        refused = await log_in(browser, user.token)
        assert_problem(refused, 403, "FORBIDDEN")
        assert_problem(await log_in(browser, "forged"), 401, "UNAUTHORIZED")
        assert "set-cookie" not in refused.headers and session_keys(console_url) == []
        resp = await log_in(browser, admin.token)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"user_id": admin.id, "expires_in_s": 8 * 3600}
        cookies = set_cookies(resp)
        session_id = browser.cookies[SESSION_COOKIE]
        assert len(session_id) == 43 and admin.token not in cookies[SESSION_COOKIE]
        for flag in ("HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"):
            assert flag in cookies[SESSION_COOKIE]
        assert "Secure" not in cookies[SESSION_COOKIE]  # plain HTTP on loopback
        assert "HttpOnly" not in cookies[CSRF_COOKIE]  # the page reads it for the replay
        # Redis keeps it under a hash of the id (what Redis holds is no cookie), 8 h.
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        assert session_keys(console_url) == [keys.ops_session(digest).encode()]
        with redis.Redis.from_url(console_url) as r:
            assert 8 * 3600 * 1000 - 60_000 < r.pttl(keys.ops_session(digest)) <= 8 * 3600 * 1000
        feed = await browser.get("/api/v1/admin/ops")  # by the session alone
        assert feed.status_code == 200, feed.text
        other = two_apis[1]  # the session is in Redis: every API process knows it
        async with cookie_client(other, {SESSION_COOKIE: session_id}) as elsewhere:
            assert (await elsewhere.get("/api/v1/admin/ops")).status_code == 200
        form = await browser.post("/ops/login", headers={"Origin": origin_of(browser)}, data={
            "token": admin.token, "csrf": browser.cookies[CSRF_COOKIE]})
        assert form.status_code == 303 and form.headers["location"] == "/ops"
        assert browser.cookies[SESSION_COOKIE] != session_id  # a login opens a new one
        assert len(session_keys(console_url)) == 1  # and ends the one it came with


async def test_a_session_does_not_outlive_its_admin_token(
    two_apis: list[httpx.AsyncClient], console_url: str,
) -> None:
    short = Actor(1002, SECRET, admin=True, ttl_s=120)
    async with browser_of(two_apis[0]) as browser:
        resp = await log_in(browser, short.token)
        assert resp.status_code == 200 and resp.json()["expires_in_s"] <= 120
        assert f"Max-Age={resp.json()['expires_in_s']}" in set_cookies(resp)[SESSION_COOKIE]


async def test_a_logout_revokes_the_session_and_the_old_cookie_no_longer_works(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor], console_url: str,
) -> None:
    client, admin = two_apis[0], people[0]
    async with browser_of(client) as browser:
        assert (await log_in(browser, admin.token)).status_code == 200
        stolen = {SESSION_COOKIE: browser.cookies[SESSION_COOKIE]}
        csrf = browser.cookies[CSRF_COOKIE]
        out = await browser.post("/ops/logout", headers={"Origin": origin_of(browser),
                                                         "X-CSRF-Token": csrf})
        assert out.status_code == 200, out.text
        assert "Max-Age=0" in set_cookies(out)[SESSION_COOKIE]
        assert browser.cookies[CSRF_COOKIE] != csrf  # a fresh pre-login token
        assert session_keys(console_url) == []
    async with cookie_client(client, stolen | {CSRF_COOKIE: csrf}) as replayed:
        assert_problem(await replayed.get("/api/v1/admin/ops"), 401, "UNAUTHORIZED")
        assert_problem(await replayed.post("/api/v1/admin/ops/replay",
                                           headers={"X-CSRF-Token": csrf}), 401, "UNAUTHORIZED")


async def test_login_and_logout_refuse_cross_site_posts(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor], console_url: str,
) -> None:
    client, admin = two_apis[0], people[0]
    evil = "https://evil.example"
    async with browser_of(client) as browser:
        csrf = browser.cookies[CSRF_COOKIE]
        # What another site's page can make a browser send: its own Origin, a form, and
        # (SameSite=Strict) none of our cookies.
        async with cookie_client(client, {}) as cross_site:
            form = await cross_site.post("/ops/login", data={"token": admin.token},
                                         headers={"Origin": evil})
            assert_problem(form, 403, "FORBIDDEN", names="Origin")
        for headers in ({"Origin": evil, "X-CSRF-Token": csrf}, {"X-CSRF-Token": csrf},
                        {"Origin": "null", "X-CSRF-Token": csrf},
                        {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf},
                        {"Origin": origin_of(browser).replace("http:", "https:"),
                         "X-CSRF-Token": csrf}):
            resp = await browser.post("/ops/login", json={"token": admin.token},
                                      headers=headers)
            assert_problem(resp, 403, "FORBIDDEN", names="Origin")
        for wrong in ("", "0" * 43, csrf.upper()):  # the right origin, a wrong CSRF token
            resp = await log_in(browser, admin.token, **{"X-CSRF-Token": wrong})
            assert_problem(resp, 403, "FORBIDDEN", names="x-csrf-token")
        async with cookie_client(client, {}) as no_cookie:  # a token sent, no cookie to match
            resp = await no_cookie.post("/ops/login", json={"token": admin.token}, headers={
                "Origin": origin_of(no_cookie), "X-CSRF-Token": csrf})
            assert_problem(resp, 403, "FORBIDDEN", names="x-csrf-token")
        assert session_keys(console_url) == []
        # A browser's own fetch may leave Origin out, but then says it is same-origin.
        same = await browser.post("/ops/login", json={"token": admin.token}, headers={
            "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf})
        assert same.status_code == 200, same.text
        session_csrf = browser.cookies[CSRF_COOKIE]
        for headers in ({"Origin": evil, "X-CSRF-Token": session_csrf},
                        {"Origin": origin_of(browser)},
                        {"Origin": origin_of(browser), "X-CSRF-Token": csrf}):  # pre-login's
            resp = await browser.post("/ops/logout", headers=headers)
            assert_problem(resp, 403, "FORBIDDEN")
        assert len(session_keys(console_url)) == 1  # still logged in
        assert (await browser.get("/api/v1/admin/ops")).status_code == 200


async def test_the_cookies_are_secure_over_tls_or_from_a_trusted_proxy_only(
    serve_app: Callable[[Any], AsyncIterator[str]], api_settings: Settings, console_url: str,
    people: tuple[Actor, Actor],
) -> None:
    admin = people[0]
    plain = api_settings.replace(redis_url=console_url)

    async def login_over(url: str, settings: Settings, **headers: str) -> httpx.Response:
        async with AsyncTestClient(create_app(settings), base_url=url) as browser:
            # Sent by hand: a client's jar keeps a Secure cookie from plain http to itself.
            csrf = (await browser.get("/ops")).cookies.get(CSRF_COOKIE) or ""
            return await browser.post("/ops/login", json={"token": admin.token}, headers={
                "X-CSRF-Token": csrf, "Cookie": f"{CSRF_COOKIE}={csrf}", **headers})

    tls = await login_over("https://console.test", plain, Origin="https://console.test")
    assert tls.status_code == 200, tls.text
    assert "; Secure" in set_cookies(tls)[SESSION_COOKIE]
    assert "; Secure" in set_cookies(tls)[CSRF_COOKIE]
    forced = await login_over("http://console.test", plain.replace(console_secure_cookie=True),
                              Origin="https://console.test")
    assert "; Secure" in set_cookies(forced)[SESSION_COOKIE]
    # A proxy's word counts only from a trusted address (the test client is "testclient").
    claimed = await login_over("http://console.test", plain, Origin="http://console.test",
                               **{"X-Forwarded-Proto": "https"})
    assert claimed.status_code == 200 and "Secure" not in set_cookies(claimed)[SESSION_COOKIE]
    serving = serve_app(create_app(plain.replace(trusted_proxies="10.0.0.0/8, 127.0.0.1")))
    url = await anext(serving)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as browser:
            page = await browser.get("/ops", headers={"X-Forwarded-Proto": "https"})
            assert "; Secure" in set_cookies(page)[CSRF_COOKIE]
            csrf = page.cookies.get(CSRF_COOKIE) or ""
            proxied = await browser.post("/ops/login", json={"token": admin.token}, headers={
                "Origin": url.replace("http:", "https:"), "X-Forwarded-Proto": "http, https",
                "X-CSRF-Token": csrf, "Cookie": f"{CSRF_COOKIE}={csrf}"})
        assert proxied.status_code == 200, proxied.text
        assert "; Secure" in set_cookies(proxied)[SESSION_COOKIE]
    finally:
        with pytest.raises(StopAsyncIteration):
            await anext(serving)


def test_a_bad_trusted_proxy_setting_is_refused_naming_it(api_settings: Settings) -> None:
    with pytest.raises(ValueError, match="RUSHORDER_TRUSTED_PROXIES"):
        create_app(api_settings.replace(trusted_proxies="10.0.0.0/8, proxy.example"))


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


async def test_a_replay_by_session_needs_the_csrf_token_of_that_session(
    two_apis: list[httpx.AsyncClient], people: tuple[Actor, Actor], forwarder: list[str],
) -> None:
    client, (admin, _) = two_apis[0], people
    async with browser_of(two_apis[1]) as another:  # another admin's session
        assert (await log_in(another, Actor(1001, SECRET, admin=True).token)).status_code == 200
        theirs = another.cookies[CSRF_COOKIE]
    async with browser_of(client) as browser:
        before = browser.cookies[CSRF_COOKIE]
        assert (await log_in(browser, admin.token)).status_code == 200
        csrf = browser.cookies[CSRF_COOKIE]
        assert csrf != before  # the session has a CSRF token of its own
        refused = [await browser.post("/api/v1/admin/ops/replay")]  # what another site can do
        for wrong in ("0" * 43, before, theirs, csrf.upper(), browser.cookies[SESSION_COOKIE]):
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
