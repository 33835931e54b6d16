"""Cart: priced live, checked against stock, checked out as one order."""

from __future__ import annotations

import httpx

from tests.api.actors import assert_problem
from tests.api.support import PLAIN_LINE


async def test_a_new_cart_is_empty(client: httpx.AsyncClient, new_user) -> None:
    resp = await client.get("/api/v1/cart", headers=new_user().headers)
    assert resp.status_code == 200
    assert resp.json() == {"items": [], "total_amount": 0}


async def test_put_sets_the_quantity_and_answers_the_cart(
    client: httpx.AsyncClient, new_user, new_product
) -> None:
    user, product = new_user(), await new_product(price=700, stock=5, name="cup")
    url = f"/api/v1/cart/items/{product['id']}"
    await client.put(url, json={"quantity": 4}, headers=user.headers)
    resp = await client.put(url, json={"quantity": 2}, headers=user.headers)
    assert resp.status_code == 200
    assert resp.json() == {"items": [{"product_id": product["id"], "name": "cup",
                                      "unit_price": 700, "quantity": 2, "line_total": 1_400,
                                      "in_stock": True, **PLAIN_LINE}],
                           "total_amount": 1_400}


async def test_more_than_the_stock_is_409(
    client: httpx.AsyncClient, new_user, new_product
) -> None:
    user, product = new_user(), await new_product(stock=3)
    resp = await client.put(f"/api/v1/cart/items/{product['id']}", json={"quantity": 4},
                            headers=user.headers)
    assert_problem(resp, 409, "OUT_OF_STOCK")


async def test_an_unknown_product_is_404(client: httpx.AsyncClient, new_user) -> None:
    resp = await client.put("/api/v1/cart/items/44444444", json={"quantity": 1},
                            headers=new_user().headers)
    assert_problem(resp, 404, "PRODUCT_NOT_FOUND")


async def test_delete_answers_204_even_when_absent(
    client: httpx.AsyncClient, new_user, new_product
) -> None:
    user, product = new_user(), await new_product()
    url = f"/api/v1/cart/items/{product['id']}"
    await client.put(url, json={"quantity": 1}, headers=user.headers)
    for _ in range(2):
        resp = await client.delete(url, headers=user.headers)
        assert resp.status_code == 204 and resp.content == b""
    assert (await client.get("/api/v1/cart", headers=user.headers)).json()["items"] == []


async def test_checkout_orders_the_cart_and_empties_it(
    client: httpx.AsyncClient, funded_user, new_product, new_coupon
) -> None:
    user = await funded_user(10_000)
    a, b = await new_product(price=1_000), await new_product(price=2_000)
    for product, quantity in ((b, 1), (a, 3)):
        await client.put(f"/api/v1/cart/items/{product['id']}", json={"quantity": quantity},
                         headers=user.headers)
    coupon = await new_coupon(discount_value=500)
    issued = (await client.post(f"/api/v1/coupons/{coupon['id']}/issue",
                                headers=user.headers)).json()
    resp = await client.post("/api/v1/cart/checkout", json={"issued_coupon_id": issued["id"]},
                             headers=user.headers)
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert [(i["product_id"], i["quantity"]) for i in order["items"]] == [(a["id"], 3),
                                                                        (b["id"], 1)]
    assert (order["total_amount"], order["paid_amount"]) == (5_000, 4_500)
    assert (await client.get("/api/v1/cart", headers=user.headers)).json()["items"] == []
    balance = (await client.get("/api/v1/balance", headers=user.headers)).json()["balance"]
    assert balance == 5_500


async def test_checkout_without_a_body(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, product = await funded_user(10_000), await new_product(price=100)
    await client.put(f"/api/v1/cart/items/{product['id']}", json={"quantity": 1},
                     headers=user.headers)
    assert (await client.post("/api/v1/cart/checkout", headers=user.headers)).status_code == 201


async def test_an_empty_cart_cannot_be_checked_out(client: httpx.AsyncClient, new_user) -> None:
    resp = await client.post("/api/v1/cart/checkout", json={}, headers=new_user().headers)
    assert_problem(resp, 409, "CART_EMPTY")


async def test_a_failed_checkout_keeps_the_cart(
    client: httpx.AsyncClient, new_user, new_product
) -> None:
    user, product = new_user(), await new_product(price=100)
    await client.put(f"/api/v1/cart/items/{product['id']}", json={"quantity": 2},
                     headers=user.headers)
    resp = await client.post("/api/v1/cart/checkout", headers=user.headers)
    assert_problem(resp, 409, "INSUFFICIENT_BALANCE")
    cart = (await client.get("/api/v1/cart", headers=user.headers)).json()
    assert cart["total_amount"] == 200
