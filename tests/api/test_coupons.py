"""Coupons: definitions, live remaining count, first-come-first-served issuing."""

from __future__ import annotations

import httpx

from tests.api.actors import assert_problem


async def test_create_answers_201_with_remaining(client: httpx.AsyncClient, admin) -> None:
    resp = await client.post("/api/v1/admin/coupons", headers=admin.headers, json={
        "name": "spring", "discount_type": "PERCENT", "discount_value": 15,
        "total_quantity": 3, "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2027-01-01T09:00:00+09:00"})
    assert resp.status_code == 201, resp.text
    coupon = resp.json()
    assert coupon == {"id": coupon["id"], "name": "spring", "discount_type": "PERCENT",
                      "discount_value": 15, "total_quantity": 3, "remaining": 3,
                      "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z",
                      "min_order_amount": None, "max_discount_amount": None, "description": ""}
    assert (await client.get(f"/api/v1/coupons/{coupon['id']}")).json() == coupon


async def test_issue_answers_201_and_counts_down(
    client: httpx.AsyncClient, new_user, new_coupon
) -> None:
    coupon, user = await new_coupon(total_quantity=2), new_user()
    resp = await client.post(f"/api/v1/coupons/{coupon['id']}/issue", headers=user.headers)
    assert resp.status_code == 201, resp.text
    issued = resp.json()
    assert issued["coupon_id"] == coupon["id"] and issued["status"] == "AVAILABLE"
    assert {"id", "coupon_id", "name", "discount_type", "discount_value", "status", "issued_at",
            "expires_at"} <= issued.keys()
    assert issued["expires_at"] == coupon["valid_until"]
    assert (await client.get(f"/api/v1/coupons/{coupon['id']}")).json()["remaining"] == 1


async def test_one_coupon_per_user(client: httpx.AsyncClient, new_user, new_coupon) -> None:
    coupon, user = await new_coupon(), new_user()
    url = f"/api/v1/coupons/{coupon['id']}/issue"
    assert (await client.post(url, headers=user.headers)).status_code == 201
    assert_problem(await client.post(url, headers=user.headers), 409, "COUPON_ALREADY_ISSUED")


async def test_sold_out(client: httpx.AsyncClient, new_user, new_coupon) -> None:
    coupon = await new_coupon(total_quantity=1)
    url = f"/api/v1/coupons/{coupon['id']}/issue"
    assert (await client.post(url, headers=new_user().headers)).status_code == 201
    assert_problem(await client.post(url, headers=new_user().headers), 409, "COUPON_SOLD_OUT")


async def test_outside_the_window_is_not_active(
    client: httpx.AsyncClient, new_user, new_coupon
) -> None:
    for window in ((3600, 7200), (-7200, -3600)):
        coupon = await new_coupon(start_s=window[0], end_s=window[1])
        resp = await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                 headers=new_user().headers)
        assert_problem(resp, 409, "COUPON_NOT_ACTIVE")


async def test_unknown_coupon_is_404(client: httpx.AsyncClient, new_user) -> None:
    assert_problem(await client.get("/api/v1/coupons/77777777"), 404, "COUPON_NOT_FOUND")
    resp = await client.post("/api/v1/coupons/77777777/issue", headers=new_user().headers)
    assert_problem(resp, 404, "COUPON_NOT_FOUND")


async def test_not_active_is_checked_before_already_issued_and_sold_out(
    client: httpx.AsyncClient, new_user, new_coupon
) -> None:
    coupon = await new_coupon(total_quantity=1, start_s=3600, end_s=7200)
    resp = await client.post(f"/api/v1/coupons/{coupon['id']}/issue", headers=new_user().headers)
    assert_problem(resp, 409, "COUPON_NOT_ACTIVE")


async def test_already_issued_is_checked_before_sold_out(
    client: httpx.AsyncClient, new_user, new_coupon
) -> None:
    coupon, user = await new_coupon(total_quantity=1), new_user()
    url = f"/api/v1/coupons/{coupon['id']}/issue"
    await client.post(url, headers=user.headers)
    assert_problem(await client.post(url, headers=user.headers), 409, "COUPON_ALREADY_ISSUED")


async def test_my_coupons_lists_newest_first_with_live_status(
    client: httpx.AsyncClient, funded_user, new_coupon, new_product
) -> None:
    user = await funded_user(10_000)
    first, second = await new_coupon(), await new_coupon(discount_value=300)
    a = (await client.post(f"/api/v1/coupons/{first['id']}/issue", headers=user.headers)).json()
    b = (await client.post(f"/api/v1/coupons/{second['id']}/issue", headers=user.headers)).json()
    product = await new_product(price=1_000)
    resp = await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [{"product_id": product["id"], "quantity": 1}], "issued_coupon_id": a["id"]})
    assert resp.status_code == 201
    page = (await client.get("/api/v1/users/me/coupons", headers=user.headers)).json()
    assert [(c["id"], c["status"]) for c in page["items"]] == [(b["id"], "AVAILABLE"),
                                                              (a["id"], "USED")]
    assert page["next_cursor"] is None


async def test_an_issued_coupon_past_its_window_reads_expired(
    client: httpx.AsyncClient, new_user, new_coupon
) -> None:
    import asyncio

    user, coupon = new_user(), await new_coupon(start_s=-10, end_s=1.5)
    await client.post(f"/api/v1/coupons/{coupon['id']}/issue", headers=user.headers)
    await asyncio.sleep(2)
    page = (await client.get("/api/v1/users/me/coupons", headers=user.headers)).json()
    assert [c["status"] for c in page["items"]] == ["EXPIRED"]
