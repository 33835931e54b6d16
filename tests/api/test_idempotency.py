"""Idempotency-Key: the first answer replayed (status and body, rejections included),
another request under the same key refused, concurrent duplicates taking effect once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.app import create_app
from tests.api.actors import assert_problem
from tests.api.support import rfc3339


def key() -> str:
    return f"k-{uuid.uuid4()}"


async def balance(client: httpx.AsyncClient, user) -> int:
    return (await client.get("/api/v1/balance", headers=user.headers)).json()["balance"]


async def test_a_replayed_charge_answers_the_same_and_charges_once(
    client: httpx.AsyncClient, new_user
) -> None:
    user, k = new_user(), key()
    first = await client.post("/api/v1/balance/charge", json={"amount": 5_000},
                              headers=user.with_key(k))
    again = await client.post("/api/v1/balance/charge", json={"amount": 5_000},
                              headers=user.with_key(k))
    assert (first.status_code, first.content) == (again.status_code, again.content) == (
        200, first.content)
    assert await balance(client, user) == 5_000


async def test_a_replayed_order_answers_201_with_the_same_order(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product, k = await funded_user(10_000), await new_product(price=1_000), key()
    body = {"items": [{"product_id": product["id"], "quantity": 2}]}
    first = await client.post("/api/v1/orders", json=body, headers=user.with_key(k))
    again = await client.post("/api/v1/orders", json=body, headers=user.with_key(k))
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert await balance(client, user) == 8_000
    orders = (await client.get("/api/v1/orders", headers=user.headers)).json()["items"]
    assert len(orders) == 1


async def test_a_rejection_is_replayed_even_after_things_change(
    client: httpx.AsyncClient, new_user, new_product
) -> None:
    user, product, k = new_user(), await new_product(price=1_000), key()
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    first = await client.post("/api/v1/orders", json=body, headers=user.with_key(k))
    assert_problem(first, 409, "INSUFFICIENT_BALANCE")
    await client.post("/api/v1/balance/charge", json={"amount": 10_000}, headers=user.headers)
    again = await client.post("/api/v1/orders", json=body, headers=user.with_key(k))
    assert (again.status_code, again.json()) == (409, first.json())
    assert await balance(client, user) == 10_000


async def test_cancel_checkout_and_issue_replay(
    client: httpx.AsyncClient, funded_user, new_product, new_coupon
) -> None:
    user, product, coupon = await funded_user(10_000), await new_product(price=1_000), \
        await new_coupon()
    order = (await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [{"product_id": product["id"], "quantity": 1}]})).json()
    await client.put(f"/api/v1/cart/items/{product['id']}", json={"quantity": 1},
                     headers=user.headers)
    for path, status in ((f"/api/v1/orders/{order['id']}/cancel", 200),
                         ("/api/v1/cart/checkout", 201),
                         (f"/api/v1/coupons/{coupon['id']}/issue", 201)):
        k = key()
        first = await client.post(path, headers=user.with_key(k))
        again = await client.post(path, headers=user.with_key(k))
        assert first.status_code == again.status_code == status, (path, first.text)
        assert first.content == again.content
    assert await balance(client, user) == 9_000
    assert (await client.get(f"/api/v1/coupons/{coupon['id']}")).json()["remaining"] == 9


@pytest.mark.parametrize(("path", "body"), [
    ("/api/v1/balance/charge", {"amount": 2_000}),
    ("/api/v1/orders", {"items": [{"product_id": 1, "quantity": 1}]}),
])
async def test_the_same_key_for_another_request_is_422(
    client: httpx.AsyncClient, new_user, path: str, body: dict
) -> None:
    user, k = new_user(), key()
    await client.post("/api/v1/balance/charge", json={"amount": 1_000}, headers=user.with_key(k))
    assert_problem(await client.post(path, json=body, headers=user.with_key(k)), 422,
                   "IDEMPOTENCY_KEY_REUSED")
    assert await balance(client, user) == 1_000


async def test_a_body_differing_only_in_bytes_is_another_request(
    client: httpx.AsyncClient, new_user
) -> None:
    user, k = new_user(), key()
    await client.post("/api/v1/balance/charge", content=b'{"amount":1000}',
                      headers=user.with_key(k))
    resp = await client.post("/api/v1/balance/charge", content=b'{"amount": 1000}',
                             headers=user.with_key(k))
    assert_problem(resp, 422, "IDEMPOTENCY_KEY_REUSED")


async def test_keys_belong_to_one_user(client: httpx.AsyncClient, new_user) -> None:
    alice, bob, k = new_user(), new_user(), key()
    for user in (alice, bob):
        resp = await client.post("/api/v1/balance/charge", json={"amount": 3_000},
                                 headers=user.with_key(k))
        assert resp.json() == {"user_id": user.id, "balance": 3_000, "charged": 3_000}


async def test_concurrent_duplicates_take_effect_once(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product, k = await funded_user(100_000), await new_product(price=1_000), key()
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    answers = await asyncio.gather(*(
        client.post("/api/v1/orders", json=body, headers=user.with_key(k)) for _ in range(20)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.content for a in answers}) == 1
    assert await balance(client, user) == 99_000
    assert (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 99


async def test_without_a_key_every_request_counts(client: httpx.AsyncClient, new_user) -> None:
    user = new_user()
    for _ in range(2):
        await client.post("/api/v1/balance/charge", json={"amount": 1_000}, headers=user.headers)
    assert await balance(client, user) == 2_000


async def test_a_validation_failure_is_not_recorded(client: httpx.AsyncClient, new_user) -> None:
    user, k = new_user(), key()
    bad = await client.post("/api/v1/balance/charge", json={"amount": "x"},
                            headers=user.with_key(k))
    assert_problem(bad, 400, "VALIDATION_ERROR")
    ok = await client.post("/api/v1/balance/charge", json={"amount": 1_000},
                           headers=user.with_key(k))
    assert ok.status_code == 200


# -- issue 25: Stripe's rules, the replay mark, the bound, admin creates ---------------------


async def test_a_replay_is_marked_idempotent_replayed_and_a_first_answer_is_not(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product = await funded_user(1_000), await new_product(price=1_000)
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    for k in (key(), key()):  # an order, then a kept refusal (the balance is spent)
        first = await client.post("/api/v1/orders", json=body, headers=user.with_key(k))
        again = await client.post("/api/v1/orders", json=body, headers=user.with_key(k))
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        assert (again.status_code, again.content) == (first.status_code, first.content)
    k = key()
    charged = [await client.post("/api/v1/balance/charge", json={"amount": 1_000},
                                 headers=user.with_key(k)) for _ in range(2)]
    assert [c.headers.get("idempotent-replayed") for c in charged] == [None, "true"]


async def test_a_cancel_of_an_order_that_does_not_exist_keeps_no_record(
    client: httpx.AsyncClient, new_user
) -> None:
    user, k = new_user(), key()
    missing = await client.post("/api/v1/orders/999999999999/cancel", headers=user.with_key(k))
    assert_problem(missing, 404, "ORDER_NOT_FOUND")
    # Nothing kept under the key: another request may use it (no 422).
    charged = await client.post("/api/v1/balance/charge", json={"amount": 1_000},
                                headers=user.with_key(k))
    assert charged.status_code == 200 and "idempotent-replayed" not in charged.headers


@pytest.mark.parametrize("path", ["/api/v1/admin/products", "/api/v1/admin/coupons"])
async def test_a_retried_admin_create_under_one_key_creates_once(
    client: httpx.AsyncClient, admin, path: str
) -> None:
    now = datetime.now(UTC)
    body = {"name": "once", "price": 1_000, "stock": 7} if "products" in path else {
        "name": "once", "discount_type": "FIXED", "discount_value": 500, "total_quantity": 7,
        "valid_from": rfc3339(now - timedelta(hours=1)),
        "valid_until": rfc3339(now + timedelta(hours=1))}
    k = key()
    first = await client.post(path, json=body, headers=admin.with_key(k))
    again = await client.post(path, json=body, headers=admin.with_key(k))
    assert first.status_code == again.status_code == 201, first.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = await client.post(path, json=body, headers=admin.headers)  # no key: a new one
    assert other.json()["id"] == first.json()["id"] + 1
    changed = await client.post(path, json={**body, "name": "twice"}, headers=admin.with_key(k))
    assert_problem(changed, 422, "IDEMPOTENCY_KEY_REUSED")


@pytest.fixture(scope="module")
async def bounded(serve_app, api_settings) -> AsyncIterator[httpx.AsyncClient]:
    """An API whose users hold at most 2 live records and write twice, then once in
    1000 s (no token comes back during a test)."""
    settings = api_settings.replace(idempotency_max_per_user=2, rate_limit_per_s=0.001,
                                    rate_limit_burst=4)
    async for url in serve_app(create_app(settings)):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http


async def test_a_new_key_past_the_bound_is_429_with_retry_after_and_a_replay_still_works(
    bounded: httpx.AsyncClient, new_user
) -> None:
    user, keys = new_user(), [key(), key(), key()]
    for k in keys[:2]:
        ok = await bounded.post("/api/v1/balance/charge", json={"amount": 1_000},
                                headers=user.with_key(k))
        assert ok.status_code == 200
    over = await bounded.post("/api/v1/balance/charge", json={"amount": 1_000},
                              headers=user.with_key(keys[2]))
    doc = assert_problem(over, 429, "TOO_MANY_REQUESTS")
    assert 86_390 <= int(over.headers["retry-after"]) <= 86_400
    assert doc["context"]["retry_after_s"] == int(over.headers["retry-after"])
    again = await bounded.post("/api/v1/balance/charge", json={"amount": 1_000},
                               headers=user.with_key(keys[0]))
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert await balance(bounded, user) == 2_000


async def test_writes_past_the_users_rate_are_429_with_retry_after(
    bounded: httpx.AsyncClient, new_user
) -> None:
    user, other = new_user(), new_user()
    answers = [await bounded.post("/api/v1/balance/charge", json={"amount": 1_000},
                                  headers=user.headers) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 4 + [429] * 2
    assert_problem(answers[-1], 429, "TOO_MANY_REQUESTS")
    assert answers[-1].headers["retry-after"] == "1000"
    put = await bounded.put("/api/v1/cart/items/1", json={"quantity": 1}, headers=user.headers)
    assert put.status_code in (404, 429)  # the product is checked first: no token for a 404
    assert await balance(bounded, user) == 4_000  # reads are never limited
    assert (await bounded.post("/api/v1/balance/charge", json={"amount": 1_000},
                               headers=other.headers)).status_code == 200


async def test_a_replay_is_not_counted_as_placed(
    serve_app, api_settings, new_user, admin
) -> None:
    """The orders-placed counter (and the console's tallies, fed by the same count) counts
    an order once, however often its key is replayed; a refusal too."""
    async for url in serve_app(create_app(api_settings)):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            user = new_user()
            made = (await http.post("/api/v1/admin/products", headers=admin.headers,
                                    json={"name": "p", "price": 1_000, "stock": 9})).json()
            await http.post("/api/v1/balance/charge", json={"amount": 1_000},
                            headers=user.headers)
            body = {"items": [{"product_id": made["id"], "quantity": 1}]}
            for k in (key(), key()):  # placed, then INSUFFICIENT_BALANCE; each thrice
                for _ in range(3):
                    await http.post("/api/v1/orders", json=body, headers=user.with_key(k))
            scraped = (await http.get("/metrics")).text
    assert "rushorder_orders_placed_total 1.0" in scraped
    assert 'rushorder_orders_rejected_total{code="INSUFFICIENT_BALANCE"} 1.0' in scraped
