"""Idempotency-Key: the first answer replayed (status and body, rejections included),
another request under the same key refused, concurrent duplicates taking effect once."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from actors import assert_problem


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
