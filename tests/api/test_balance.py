"""Balance: read, charge within the policy and the cap, history newest first."""

from __future__ import annotations

import httpx
import pytest

from tests.api.actors import assert_problem


async def test_a_user_never_seen_has_balance_0(client: httpx.AsyncClient, new_user) -> None:
    user = new_user()
    resp = await client.get("/api/v1/balance", headers=user.headers)
    assert resp.status_code == 200
    assert resp.json() == {"user_id": user.id, "balance": 0}


async def test_charge_answers_the_new_balance(client: httpx.AsyncClient, new_user) -> None:
    user = new_user()
    first = await client.post("/api/v1/balance/charge", json={"amount": 1_000},
                              headers=user.headers)
    second = await client.post("/api/v1/balance/charge", json={"amount": 1_000_000},
                               headers=user.headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert second.json() == {"user_id": user.id, "balance": 1_001_000, "charged": 1_000_000}


@pytest.mark.parametrize("amount", [999, 1_005, 1_000_010, 0, -1_000, 10**30])
async def test_amounts_outside_the_policy_are_invalid(
    client: httpx.AsyncClient, new_user, amount: int
) -> None:
    user = new_user()
    resp = await client.post("/api/v1/balance/charge", json={"amount": amount},
                             headers=user.headers)
    assert resp.status_code == 400
    assert resp.json()["code"] in ("INVALID_AMOUNT", "VALIDATION_ERROR")
    assert (await client.get("/api/v1/balance", headers=user.headers)).json()["balance"] == 0


async def test_a_charge_over_the_cap_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, funded_user
) -> None:
    user = await funded_user(9_500_000)
    resp = await client.post("/api/v1/balance/charge", json={"amount": 500_010},
                             headers=user.headers)
    assert_problem(resp, 409, "BALANCE_LIMIT_EXCEEDED")
    ok = await client.post("/api/v1/balance/charge", json={"amount": 500_000},
                           headers=user.headers)
    assert ok.json()["balance"] == 10_000_000


async def test_history_lists_movements_newest_first(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user = await funded_user(10_000)
    product = await new_product(price=3_000)
    order = (await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [{"product_id": product["id"], "quantity": 1}]})).json()
    await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=user.headers)
    resp = await client.get("/api/v1/balance/history", headers=user.headers)
    assert resp.status_code == 200
    lines = resp.json()["items"]
    assert [(line["type"], line["amount"], line["balance_after"], line["order_id"])
            for line in lines] == [("REFUND", 3_000, 10_000, order["id"]),
                                   ("USE", 3_000, 7_000, order["id"]),
                                   ("CHARGE", 10_000, 10_000, None)]
    assert all(isinstance(line["id"], int) and line["created_at"].endswith("Z")
               for line in lines)
    assert resp.json()["next_cursor"] is None


async def test_history_pages_with_the_cursor(client: httpx.AsyncClient, new_user) -> None:
    user = new_user()
    for amount in (1_000, 2_000, 3_000, 4_000, 5_000):
        await client.post("/api/v1/balance/charge", json={"amount": amount},
                          headers=user.headers)
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/balance/history", params=params,
                                 headers=user.headers)).json()
        seen += [line["amount"] for line in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [5_000, 4_000, 3_000, 2_000, 1_000]
