"""Issue 28 over HTTP: the payment in every order answer, the preview, deferred orders and
their pay."""

from __future__ import annotations

import httpx

from tests.api.actors import assert_problem


def line(product: dict, quantity: int = 1) -> dict:
    return {"product_id": product["id"], "quantity": quantity}


async def test_an_order_answers_its_payment_and_no_due_time(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, mug = await funded_user(10_000), await new_product(price=1_200)
    resp = await client.post("/api/v1/orders", headers=user.headers, json={"items": [line(mug, 2)]})
    assert resp.status_code == 201, resp.text
    order = resp.json()
    assert order["payment"] == {"id": order["id"], "amount": 2_400, "status": "COMPLETED",
                                "paid_at": order["created_at"], "cancelled_at": None}
    assert "payment_due_at" not in order and order["status"] == "PAID"
    cancelled = (await client.post(f"/api/v1/orders/{order['id']}/cancel",
                                   headers=user.headers)).json()
    assert cancelled["payment"]["status"] == "CANCELLED"
    assert cancelled["payment"]["cancelled_at"] == cancelled["cancelled_at"]


async def test_a_deferred_order_answers_pending_then_pay_answers_paid(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, mug = await funded_user(10_000), await new_product(price=1_000, stock=5)
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [line(mug, 2)], "payment": "DEFERRED"})
    assert resp.status_code == 201, resp.text
    pending = resp.json()
    assert (pending["status"], pending["payment"], pending["paid_amount"]) == (
        "PENDING_PAYMENT", None, 0)
    assert pending["payment_due_at"].endswith("Z")
    paid = await client.post(f"/api/v1/orders/{pending['id']}/pay", headers=user.headers)
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "PAID" and paid.json()["payment"]["amount"] == 2_000
    again = await client.post(f"/api/v1/orders/{pending['id']}/pay", headers=user.headers,
                              json={})
    assert again.status_code == 200 and again.json() == paid.json()


async def test_pay_refusals_carry_their_codes(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, mug = await funded_user(1_000), await new_product(price=1_500)
    pending = (await client.post("/api/v1/orders", headers=user.headers,
                                 json={"items": [line(mug)], "payment": "DEFERRED"})).json()
    url = f"/api/v1/orders/{pending['id']}/pay"
    assert_problem(await client.post(url, headers=user.headers), 409, "INSUFFICIENT_BALANCE")
    assert_problem(await client.post(url, headers=user.headers,
                                     json={"issued_coupon_id": 987654}),
                   409, "COUPON_NOT_USABLE")
    await client.post(f"/api/v1/orders/{pending['id']}/cancel", headers=user.headers)
    assert_problem(await client.post(url, headers=user.headers), 409, "ORDER_NOT_PAYABLE")
    assert_problem(await client.post("/api/v1/orders/123456789/pay", headers=user.headers),
                   404, "ORDER_NOT_FOUND")


async def test_bad_payment_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, mug = await funded_user(5_000), await new_product()
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [line(mug)], "payment": "LATER"})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="payment")
    resp = await client.post("/api/v1/orders", headers=user.headers,
                             json={"items": [line(mug)], "payment": "DEFERRED",
                                   "issued_coupon_id": 5})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="issued_coupon_id")
    resp = await client.post("/api/v1/orders/1/pay", headers=user.headers,
                             json={"issued_coupon_id": "x"})
    assert_problem(resp, 400, "VALIDATION_ERROR", names="issued_coupon_id")


async def test_a_preview_answers_without_writing(
    client: httpx.AsyncClient, funded_user, new_product
) -> None:
    user, mug = await funded_user(1_000), await new_product(price=800, stock=1)
    resp = await client.post("/api/v1/orders/preview", headers=user.headers,
                             json={"items": [line(mug, 2)]})
    assert resp.status_code == 200, resp.text
    seen = resp.json()
    assert (seen["total_amount"], seen["paid_amount"], seen["balance"],
            seen["balance_sufficient"], seen["coupon"]) == (1_600, 1_600, 1_000, False, None)
    assert seen["lines"] == [{"product_id": mug["id"], "option_id": None, "name": "widget",
                              "option_name": None, "unit_price": 800, "quantity": 2,
                              "line_total": 1_600, "available": False, "stock": 1}]
    assert (await client.get(f"/api/v1/products/{mug['id']}")).json()["stock"] == 1
    assert_problem(await client.post("/api/v1/orders/preview", headers=user.headers,
                                     json={"items": [{"product_id": 77777777, "quantity": 1}]}),
                   404, "PRODUCT_NOT_FOUND")
    assert_problem(await client.post("/api/v1/orders/preview", headers=user.headers,
                                     json={"items": []}), 400, "VALIDATION_ERROR")
