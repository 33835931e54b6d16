"""Exact counts under races between two API server processes (one uvicorn, one granian, two
workers each) sharing one Redis: no oversell, no coupon twice, no balance below zero, money
conserved."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.api.actors import Actor
from tests.api.support import ServerProcess


@pytest.fixture
async def http(api_servers: list[ServerProcess]) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per server process, each allowed many connections at once."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    clients = [httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits)
               for server in api_servers]
    yield clients
    for client in clients:
        await client.aclose()


Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]
UserCall = Callable[[httpx.AsyncClient, Actor], Awaitable[httpx.Response]]


def _bind(call: UserCall, user: Actor) -> Call:
    return lambda client: call(client, user)


def each(users: list[Actor], call: UserCall) -> list[Call]:
    """One call per user (in the users' order)."""
    return [_bind(call, user) for user in users]


async def spread(http: list[httpx.AsyncClient], calls: list[Call]) -> list[httpx.Response]:
    """Run every call at once, alternating between the servers."""
    return list(await asyncio.gather(*(call(http[i % len(http)]) for i, call in enumerate(calls))))


async def funded(http: list[httpx.AsyncClient], users: list[Actor], amount: int) -> None:
    answers = await spread(http, each(
        users, lambda c, u: c.post("/api/v1/balance/charge", json={"amount": amount},
                                   headers=u.headers)))
    assert {a.status_code for a in answers} == {200}


async def test_100_units_800_buyers_exactly_100_sold_and_money_conserved(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    product = (await http[0].post("/api/v1/admin/products", headers=admin.headers,
                                  json={"name": "flash", "price": 1_000, "stock": 100})).json()
    buyers = [new_user() for _ in range(800)]
    await funded(http, buyers, 1_000)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    answers = await spread(http, each(
        buyers, lambda c, u: c.post("/api/v1/orders", json=body, headers=u.headers)))
    outcome = Counter((a.status_code, a.json().get("code")) for a in answers)
    assert outcome == {(201, None): 100, (409, "OUT_OF_STOCK"): 700}
    stock = (await http[1].get(f"/api/v1/products/{product['id']}")).json()["stock"]
    assert stock == 0
    balances = await spread(http, each(
        buyers, lambda c, u: c.get("/api/v1/balance", headers=u.headers)))
    paid = sum(a.json()["paid_amount"] for a in answers if a.status_code == 201)
    assert paid == 100 * 1_000
    assert sum(b.json()["balance"] for b in balances) + paid == 800 * 1_000
    winners = {a.json()["user_id"] for a in answers if a.status_code == 201}
    assert {b.json()["user_id"] for b in balances if b.json()["balance"] == 0} == winners


async def test_50_coupons_600_requests_from_300_users_50_issued_none_twice(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    coupon = (await http[0].post("/api/v1/admin/coupons", headers=admin.headers, json={
        "name": "flash", "discount_type": "PERCENT", "discount_value": 10, "total_quantity": 50,
        "valid_from": "2020-01-01T00:00:00Z", "valid_until": "2099-01-01T00:00:00Z"})).json()
    users = [new_user() for _ in range(300)]
    url = f"/api/v1/coupons/{coupon['id']}/issue"
    # Each user asks twice, once through each server.
    answers = await spread(http, each(
        [u for u in users for _ in range(2)], lambda c, u: c.post(url, headers=u.headers)))
    issued = [a.json() for a in answers if a.status_code == 201]
    assert len(issued) == 50
    assert len({i["user_id"] for i in issued}) == 50
    assert {a.json()["code"] for a in answers if a.status_code != 201} <= {
        "COUPON_SOLD_OUT", "COUPON_ALREADY_ISSUED"}
    assert (await http[1].get(f"/api/v1/coupons/{coupon['id']}")).json()["remaining"] == 0
    held = await spread(http, each(
        users, lambda c, u: c.get("/api/v1/users/me/coupons", headers=u.headers)))
    counts = Counter(sum(1 for c in h.json()["items"] if c["coupon_id"] == coupon["id"])
                     for h in held)
    assert counts == {1: 50, 0: 250}


async def test_10000_won_against_50_orders_of_1000_exactly_10_succeed(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    product = (await http[0].post("/api/v1/admin/products", headers=admin.headers,
                                  json={"name": "bulk", "price": 1_000, "stock": 1_000})).json()
    user = new_user()
    await funded(http, [user], 10_000)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    answers = await spread(http, [
        lambda c: c.post("/api/v1/orders", json=body, headers=user.headers)] * 50)
    outcome = Counter((a.status_code, a.json().get("code")) for a in answers)
    assert outcome == {(201, None): 10, (409, "INSUFFICIENT_BALANCE"): 40}
    assert (await http[1].get("/api/v1/balance", headers=user.headers)).json()["balance"] == 0
    assert (await http[0].get(f"/api/v1/products/{product['id']}")).json()["stock"] == 990


async def test_concurrent_duplicates_across_servers_take_effect_once(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    product = (await http[0].post("/api/v1/admin/products", headers=admin.headers,
                                  json={"name": "once", "price": 1_000, "stock": 1_000})).json()
    user = new_user()
    await funded(http, [user], 100_000)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    answers = await spread(http, [
        lambda c: c.post("/api/v1/orders", json=body, headers=user.with_key("dup-1"))] * 40)
    assert {a.status_code for a in answers} == {201}
    assert len({a.content for a in answers}) == 1
    assert (await http[1].get("/api/v1/balance", headers=user.headers)).json()["balance"] == 99_000


def requests_total(text: str, route: str) -> float:
    pattern = rf'rushorder_http_requests_total\{{method="GET",route="{re.escape(route)}",' \
              rf'status="200"\}} (\S+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_metrics_of_a_server_sum_all_its_workers(
    http: list[httpx.AsyncClient], admin: Actor
) -> None:
    client, route = http[0], "/api/v1/products/{product_id}"
    product = (await client.post("/api/v1/admin/products", headers=admin.headers,
                                 json={"name": "m", "price": 1, "stock": 1})).json()
    await asyncio.sleep(1.5)  # each worker writes its tallies once a second
    before = requests_total((await client.get("/metrics")).text, route)
    # Many connections at once, so both workers of the server get some.
    await asyncio.gather(*(client.get(f"/api/v1/products/{product['id']}") for _ in range(200)))
    await asyncio.sleep(1.5)
    for _ in range(5):  # whichever worker answers the scrape, it reads every worker's file
        after = requests_total((await client.get("/metrics")).text, route)
        assert after - before == 200


# -- issue 27: options, the per-customer limit, a suspension ------------------------------


async def test_10_sizes_of_50_800_buyers_exactly_500_sold_50_of_each(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    """The small drop: every size sells out exactly, whichever server and user group each
    buyer reaches, and the product's stock (the sizes' sum) ends at 0."""
    product = (await http[0].post("/api/v1/admin/products", headers=admin.headers, json={
        "name": "drop", "price": 1_000,
        "options": [{"name": f"{250 + 5 * i}", "stock": 50} for i in range(10)]})).json()
    sizes = [o["id"] for o in product["options"]]
    buyers = [new_user() for _ in range(800)]
    await funded(http, buyers, 1_000)

    def buy(size: int) -> UserCall:
        body = {"items": [{"product_id": product["id"], "quantity": 1, "option_id": size}]}
        return lambda c, u: c.post("/api/v1/orders", json=body, headers=u.headers)

    answers = await spread(http, [_bind(buy(sizes[i % 10]), u) for i, u in enumerate(buyers)])
    outcome = Counter((a.status_code, a.json().get("code")) for a in answers)
    assert outcome == {(201, None): 500, (409, "OUT_OF_STOCK"): 300}
    sold = Counter(a.json()["items"][0]["option_id"] for a in answers if a.status_code == 201)
    assert sold == dict.fromkeys(sizes, 50)
    now = (await http[1].get(f"/api/v1/products/{product['id']}")).json()
    assert now["stock"] == 0 and all(o["sold_out"] for o in now["options"])


async def test_max_per_user_1_and_50_orders_of_one_user_across_servers_buys_exactly_1(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    product = (await http[0].post("/api/v1/admin/products", headers=admin.headers, json={
        "name": "one each", "price": 1_000, "stock": 1_000, "max_per_user": 1})).json()
    user = new_user()
    await funded(http, [user], 100_000)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    answers = await spread(http, [
        lambda c: c.post("/api/v1/orders", json=body, headers=user.headers)] * 50)
    outcome = Counter((a.status_code, a.json().get("code")) for a in answers)
    assert outcome == {(201, None): 1, (409, "PURCHASE_LIMIT_EXCEEDED"): 49}
    assert (await http[1].get("/api/v1/balance", headers=user.headers)).json()["balance"] == 99_000
    assert (await http[0].get(f"/api/v1/products/{product['id']}")).json()["stock"] == 999


async def test_nothing_sells_after_the_answer_to_a_suspension(
    http: list[httpx.AsyncClient], new_user, admin: Actor
) -> None:
    """Orders race a suspension; every order sent after the PATCH was answered is refused
    PRODUCT_NOT_ON_SALE, whichever server and group it reaches."""
    product = (await http[0].post("/api/v1/admin/products", headers=admin.headers, json={
        "name": "stop", "price": 1, "stock": 100_000})).json()
    buyers = [new_user() for _ in range(200)]
    await funded(http, buyers, 1_000)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}

    def order(c: httpx.AsyncClient, u: Actor) -> Awaitable[httpx.Response]:
        return c.post("/api/v1/orders", json=body, headers=u.headers)

    racing = asyncio.ensure_future(spread(http, each(buyers[:100], order)))
    suspended = await http[1].patch(f"/api/v1/admin/products/{product['id']}",
                                    headers=admin.headers, json={"status": "SUSPENDED"})
    assert suspended.status_code == 200
    after = await spread(http, each(buyers[100:], order))
    assert {(a.status_code, a.json()["code"]) for a in after} == {(409, "PRODUCT_NOT_ON_SALE")}
    during = await racing
    sold = sum(a.status_code == 201 for a in during)
    assert {a.json().get("code") for a in during} <= {None, "PRODUCT_NOT_ON_SALE"}
    assert (await http[0].get(f"/api/v1/products/{product['id']}")).json()["stock"] == \
        100_000 - sold
