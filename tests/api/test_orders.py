"""Orders: all or nothing, in the contract's order of refusals; reads and cancels only by
the owner."""

from __future__ import annotations

import httpx

from tests.api.actors import assert_problem
from tests.api.support import PLAIN_LINE


def line(product: dict, quantity: int = 1) -> dict:
    return {"product_id": product["id"], "quantity": quantity}


async def balance(client: httpx.AsyncClient, user) -> int:
    return (await client.get("/api/v1/balance", headers=user.headers)).json()["balance"]


async def stock(client: httpx.AsyncClient, product: dict) -> int:
    return (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"]


async def test_an_order_takes_stock_and_money_and_answers_201(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user = await funded_user(50_000)
    mug, pen = await new_product(price=12_000, stock=5, name="mug"), await new_product(price=500)
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [line(mug, 2), line(pen, 3)]})
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert isinstance(order["id"], str) and order["user_id"] == user.id
    assert order["status"] == "PAID" and order["issued_coupon_id"] is None
    assert order["items"] == [
        {"product_id": mug["id"], "name": "mug", "unit_price": 12_000, "quantity": 2,
         **PLAIN_LINE},
        {"product_id": pen["id"], "name": "widget", "unit_price": 500, "quantity": 3,
         **PLAIN_LINE}]
    assert (order["total_amount"], order["discount_amount"], order["paid_amount"]) == (
        25_500, 0, 25_500)
    assert order["created_at"].endswith("Z")
    assert await balance(client, user) == 24_500 and await stock(client, mug) == 3


async def test_an_unknown_product_is_404(client: httpx.AsyncClient, funded_user) -> None:
    user = await funded_user(10_000)
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [{"product_id": 55555555, "quantity": 1}]})
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")


async def test_out_of_stock_names_the_product_and_changes_nothing(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user = await funded_user(10_000)
    plenty, scarce = await new_product(price=100), await new_product(price=100, stock=1)
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [line(plenty, 5), line(scarce, 2)]})
    assert_problem(resp, 409, "OUT_OF_STOCK", names=str(scarce["id"]))
    assert await stock(client, plenty) == 100 and await stock(client, scarce) == 1
    assert await balance(client, user) == 10_000


async def test_insufficient_balance_changes_nothing(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product = await funded_user(1_000), await new_product(price=1_001)
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [line(product)]})
    assert_problem(resp, 409, "INSUFFICIENT_BALANCE")
    assert await balance(client, user) == 1_000 and await stock(client, product) == 100


async def test_refusals_come_in_the_contract_order(
    client: httpx.AsyncClient, new_user, new_product
) -> None:
    poor, scarce = new_user(), await new_product(price=100, stock=0)
    missing = {"product_id": 55555556, "quantity": 1}
    resp = await client.post("/api/v1/orders", headers=poor.headers,
                             json={"items": [line(scarce), missing], "issued_coupon_id": 999})
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")
    resp = await client.post("/api/v1/orders", headers=poor.headers,
                             json={"items": [line(scarce)], "issued_coupon_id": 999})
    assert_problem(resp, 409, "OUT_OF_STOCK")
    plenty = await new_product(price=100)
    resp = await client.post("/api/v1/orders", headers=poor.headers,
                             json={"items": [line(plenty)], "issued_coupon_id": 999})
    assert_problem(resp, 409, "COUPON_NOT_USABLE")
    resp = await client.post("/api/v1/orders", headers=poor.headers, json={"items": [line(plenty)]})
    assert_problem(resp, 409, "INSUFFICIENT_BALANCE")


async def test_fixed_and_percent_discounts_are_capped_at_the_total(
    client: httpx.AsyncClient, funded_user, new_product, new_coupon
) -> None:
    user = await funded_user(10_000)
    product = await new_product(price=999)
    fixed = await new_coupon(discount_type="FIXED", discount_value=5_000)
    percent = await new_coupon(discount_type="PERCENT", discount_value=15)
    cases = [(fixed, 999, 0), (percent, 149, 850)]
    for coupon, discount, paid in cases:
        issued = (await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                    headers=user.headers)).json()
        order = (await client.post("/api/v1/orders", headers=user.headers, json={
            "items": [line(product)], "issued_coupon_id": issued["id"]})).json()
        assert (order["discount_amount"], order["paid_amount"]) == (discount, paid)
        assert order["issued_coupon_id"] == issued["id"]
    assert await balance(client, user) == 10_000 - 850


async def test_another_users_or_a_used_coupon_is_not_usable(
    client: httpx.AsyncClient, funded_user, new_product, new_coupon
) -> None:
    owner, thief = await funded_user(10_000), await funded_user(10_000)
    product, coupon = await new_product(price=1_000), await new_coupon()
    issued = (await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                headers=owner.headers)).json()
    body = {"items": [line(product)], "issued_coupon_id": issued["id"]}
    assert_problem(await client.post("/api/v1/orders", headers=thief.headers, json=body), 409,
                   "COUPON_NOT_USABLE")
    used = await client.post("/api/v1/orders", headers=owner.headers, json=body)
    assert used.status_code == 201
    assert_problem(await client.post("/api/v1/orders", headers=owner.headers, json=body), 409,
                   "COUPON_NOT_USABLE")


async def test_only_the_owner_reads_an_order(
    client: httpx.AsyncClient, funded_user, new_user, new_product
) -> None:
    user, product = await funded_user(10_000), await new_product()
    order = (await client.post("/api/v1/orders", headers=user.headers,
                               json={"items": [line(product)]})).json()
    mine = await client.get(f"/api/v1/orders/{order['id']}", headers=user.headers)
    assert mine.status_code == 200 and mine.json() == order
    theirs = await client.get(f"/api/v1/orders/{order['id']}", headers=new_user().headers)
    assert_problem(theirs, 404, "ORDER_NOT_FOUND")


async def test_list_is_the_callers_orders_newest_first(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, other = await funded_user(10_000), await funded_user(10_000)
    product = await new_product(price=10)
    ids = []
    for quantity in (1, 2, 3):
        resp = await client.post("/api/v1/orders", headers=user.headers,
                                 json={"items": [line(product, quantity)]})
        ids.append(resp.json()["id"])
    await client.post("/api/v1/orders", headers=other.headers, json={"items": [line(product)]})
    page = (await client.get("/api/v1/orders", params={"limit": 2}, headers=user.headers)).json()
    assert [o["id"] for o in page["items"]] == ids[:0:-1]
    rest = (await client.get("/api/v1/orders", params={"cursor": page["next_cursor"]},
                             headers=user.headers)).json()
    assert [o["id"] for o in rest["items"]] == ids[:1] and rest["next_cursor"] is None


async def test_cancel_gives_back_stock_money_and_the_coupon(
    client: httpx.AsyncClient, funded_user, new_product, new_coupon
) -> None:
    user, product, coupon = await funded_user(10_000), await new_product(price=2_000), \
        await new_coupon(discount_value=500)
    issued = (await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                headers=user.headers)).json()
    order = (await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [line(product, 2)], "issued_coupon_id": issued["id"]})).json()
    assert await balance(client, user) == 6_500
    resp = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=user.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "CANCELLED" and resp.json()["id"] == order["id"]
    assert await balance(client, user) == 10_000 and await stock(client, product) == 100
    mine = (await client.get("/api/v1/users/me/coupons", headers=user.headers)).json()
    assert mine["items"][0]["status"] == "AVAILABLE"
    read = (await client.get(f"/api/v1/orders/{order['id']}", headers=user.headers)).json()
    assert read["status"] == "CANCELLED"


async def test_cancelling_twice_is_409(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product = await funded_user(10_000), await new_product()
    order = (await client.post("/api/v1/orders", headers=user.headers,
                               json={"items": [line(product)]})).json()
    url = f"/api/v1/orders/{order['id']}/cancel"
    assert (await client.post(url, headers=user.headers)).status_code == 200
    assert_problem(await client.post(url, headers=user.headers), 409, "ORDER_NOT_CANCELLABLE")


async def test_another_users_order_cannot_be_cancelled(
    client: httpx.AsyncClient, funded_user, new_user, new_product
) -> None:
    user, product = await funded_user(10_000), await new_product()
    order = (await client.post("/api/v1/orders", headers=user.headers,
                               json={"items": [line(product)]})).json()
    resp = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=new_user().headers)
    assert_problem(resp, 404, "ORDER_NOT_FOUND")
    assert await balance(client, user) == 9_000


async def test_a_free_order_writes_no_use_line(
    client: httpx.AsyncClient, new_user, new_product, new_coupon
) -> None:
    user, product = new_user(), await new_product(price=300)
    coupon = await new_coupon(discount_type="PERCENT", discount_value=100)
    issued = (await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                headers=user.headers)).json()
    order = await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [line(product)], "issued_coupon_id": issued["id"]})
    assert order.status_code == 201 and order.json()["paid_amount"] == 0
    history = (await client.get("/api/v1/balance/history", headers=user.headers)).json()
    assert history["items"] == []


async def test_cancel_keeps_an_expired_coupon_used(
    client: httpx.AsyncClient, funded_user, new_product, new_coupon
) -> None:
    import asyncio

    user, product = await funded_user(10_000), await new_product(price=1_000)
    coupon = await new_coupon(discount_value=100, start_s=-10, end_s=1.5)
    issued = (await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                headers=user.headers)).json()
    order = (await client.post("/api/v1/orders", headers=user.headers, json={
        "items": [line(product)], "issued_coupon_id": issued["id"]})).json()
    await asyncio.sleep(2)
    resp = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=user.headers)
    assert resp.status_code == 200
    assert await balance(client, user) == 10_000
    mine = (await client.get("/api/v1/users/me/coupons", headers=user.headers)).json()
    assert [c["status"] for c in mine["items"]] == ["USED"]


async def test_a_refund_is_never_refused_for_the_balance_cap(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product = await funded_user(10_000_000), await new_product(price=500_000)
    order = (await client.post("/api/v1/orders", headers=user.headers,
                               json={"items": [line(product)]})).json()
    charge = await client.post("/api/v1/balance/charge", json={"amount": 500_000},
                               headers=user.headers)
    assert charge.json()["balance"] == 10_000_000
    resp = await client.post(f"/api/v1/orders/{order['id']}/cancel", headers=user.headers)
    assert resp.status_code == 200
    assert await balance(client, user) == 10_500_000


async def test_the_direct_entrance_answers_as_the_routed_handler_does(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    """POST /api/v1/orders is answered before Litestar routes it (api.orders.direct); the
    trailing-slash spelling still goes through Litestar's handler. Both must agree."""
    user = await funded_user(10_000)
    product = await new_product(price=1_000, stock=1)
    forged = {"Authorization": "Bearer not.a.token"}
    cases = [
        ({}, {"items": [line(product)]}),  # no token
        (forged, {"items": [line(product)]}),
        (user.headers, {"items": []}),  # names the field
        (user.headers, {"items": [line(product)], "surprise": 1}),
        (user.headers, {"items": [{"product_id": 55555555, "quantity": 1}]}),
        (user.headers, {"items": [line(product, 2)]}),  # out of stock
    ]
    for headers, body in cases:
        direct, routed = [await client.post(path, headers=headers, json=body)
                          for path in ("/api/v1/orders", "/api/v1/orders/")]
        assert direct.status_code == routed.status_code >= 400, (body, direct.text)
        assert direct.json() == routed.json()
        assert direct.headers.get("www-authenticate") == routed.headers.get("www-authenticate")
        assert direct.headers["content-type"] == routed.headers["content-type"]
    placed = [await client.post(path, headers=user.headers, json={"items": [line(product)]})
              for path in ("/api/v1/orders/", "/api/v1/orders")]
    assert [p.status_code for p in placed] == [201, 409]  # one unit: the first one wins
    assert placed[1].json()["code"] == "OUT_OF_STOCK"
