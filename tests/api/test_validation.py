"""Bad input stops at the boundary: 400 VALIDATION_ERROR naming the field, never a 500;
unknown routes 404, wrong methods 405, bodies too large 413, all as problem documents."""

from __future__ import annotations

import httpx
import pytest

from tests.api.actors import assert_problem


async def test_malformed_json_names_the_body(client: httpx.AsyncClient, new_user) -> None:
    resp = await client.post("/api/v1/balance/charge", content=b'{"amount": 10',
                             headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names="body")


@pytest.mark.parametrize(("body", "field"), [
    ({"amount": "10000"}, "amount"), ({"amount": 10000.5}, "amount"),
    ({"amount": None}, "amount"), ({"amount": True}, "amount"), ({}, "amount"),
    ({"amount": 10000, "currency": "KRW"}, "currency"), ([10000], "body"),
])
async def test_charge_body_of_the_wrong_shape_names_the_field(
    client: httpx.AsyncClient, new_user, body: object, field: str
) -> None:
    resp = await client.post("/api/v1/balance/charge", json=body, headers=new_user().headers)
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names=field)
    assert doc["detail"].startswith(field)


async def test_an_empty_body_names_the_missing_field(client: httpx.AsyncClient, new_user) -> None:
    resp = await client.post("/api/v1/balance/charge", headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names="amount")


@pytest.mark.parametrize(("body", "field"), [
    ({"items": []}, "items"),
    ({"items": [{"product_id": p, "quantity": 1} for p in range(1, 52)]}, "items"),
    ({"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]}, "items"),
    ({"items": [{"product_id": 1, "quantity": 0}]}, "items[0].quantity"),
    ({"items": [{"product_id": 1, "quantity": 1001}]}, "items[0].quantity"),
    ({"items": [{"product_id": 1, "quantity": "2"}]}, "items[0].quantity"),
    ({"items": [{"product_id": 0, "quantity": 1}]}, "items[0].product_id"),
    ({"items": [{"product_id": 10**20, "quantity": 1}]}, "items[0].product_id"),
    ({"items": [{"product_id": 1}]}, "items[0].quantity"),
    ({"items": [{"product_id": 1, "quantity": 1, "price": 1}]}, "items[0].price"),
    ({"items": [{"product_id": 1, "quantity": 1}], "issued_coupon_id": "x"}, "issued_coupon_id"),
    ({"items": {"product_id": 1}}, "items"),
])
async def test_order_body_errors_name_the_field(
    client: httpx.AsyncClient, new_user, body: dict, field: str
) -> None:
    resp = await client.post("/api/v1/orders", json=body, headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


@pytest.mark.parametrize(("change", "field"), [
    ({"discount_type": "PERCENT", "discount_value": 101}, "discount_value"),
    ({"discount_type": "PERCENT", "discount_value": 0}, "discount_value"),
    ({"discount_type": "FIXED", "discount_value": 10_000_001}, "discount_value"),
    ({"discount_type": "HALF"}, "discount_type"),
    ({"total_quantity": 0}, "total_quantity"),
    ({"total_quantity": 10_000_001}, "total_quantity"),
    ({"valid_from": "2030-01-02T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}, "valid_until"),
    ({"valid_from": "2030-01-01T00:00:00Z", "valid_until": "2030-01-01T00:00:00Z"}, "valid_until"),
    ({"valid_from": "2030-01-01T00:00:00"}, "valid_from"),
    ({"valid_until": "tomorrow"}, "valid_until"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
])
async def test_coupon_definition_ranges(
    client: httpx.AsyncClient, admin, change: dict, field: str
) -> None:
    body = {"name": "c", "discount_type": "FIXED", "discount_value": 100, "total_quantity": 5,
            "valid_from": "2030-01-01T00:00:00Z", "valid_until": "2030-01-02T00:00:00+09:00",
            **change}
    resp = await client.post("/api/v1/admin/coupons", json=body, headers=admin.headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "price": 0, "stock": 1}, "price"),
    ({"name": "x", "price": 100_000_001, "stock": 1}, "price"),
    ({"name": "x", "price": 1, "stock": -1}, "stock"),
    ({"name": "x", "price": 1, "stock": 1_000_000_001}, "stock"),
    ({"price": 1, "stock": 1}, "name"),
    ({"name": "x" * 201, "price": 1, "stock": 1}, "name"),
])
async def test_product_ranges(client: httpx.AsyncClient, admin, body: dict, field: str) -> None:
    resp = await client.post("/api/v1/admin/products", json=body, headers=admin.headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


@pytest.mark.parametrize("quantity", [0, -1, 1001, "3"])
async def test_cart_quantity_is_1_to_1000(
    client: httpx.AsyncClient, new_user, quantity: object
) -> None:
    resp = await client.put("/api/v1/cart/items/1", json={"quantity": quantity},
                            headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names="quantity")


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5", "1e3", "%20%31", "100000000000000",
                                 "99999999999999999999999"])
@pytest.mark.parametrize("path", ["/api/v1/products/{}", "/api/v1/coupons/{}"])
async def test_path_ids_that_are_not_positive_integers_are_400(
    client: httpx.AsyncClient, raw: str, path: str
) -> None:
    resp = await client.get(path.format(raw))
    field = "product_id" if "products" in path else "coupon_id"
    assert_problem(resp, 400, "VALIDATION_ERROR", names=field)


async def test_user_path_ids_are_checked_after_auth(client: httpx.AsyncClient, new_user) -> None:
    assert_problem(await client.post("/api/v1/coupons/abc/issue"), 401, "UNAUTHORIZED")
    resp = await client.post("/api/v1/coupons/abc/issue", headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names="coupon_id")
    resp = await client.delete("/api/v1/cart/items/x", headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names="product_id")


@pytest.mark.parametrize("order_id", ["abc", "0", "-1", "9" * 40])
async def test_order_ids_that_name_no_order_are_404(
    client: httpx.AsyncClient, new_user, order_id: str
) -> None:
    user = new_user()
    assert_problem(await client.get(f"/api/v1/orders/{order_id}", headers=user.headers), 404,
                   "ORDER_NOT_FOUND")
    resp = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=user.headers)
    assert_problem(resp, 404, "ORDER_NOT_FOUND")


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=", "limit"),
    ("cursor=abc", "cursor"), ("cursor=-5", "cursor"), ("cursor=" + "9" * 30, "cursor"),
])
async def test_list_parameters(client: httpx.AsyncClient, query: str, field: str) -> None:
    assert_problem(await client.get(f"/api/v1/products?{query}"), 400, "VALIDATION_ERROR",
                   names=field)


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "caf\u00e9", "\u00ff"])
async def test_a_malformed_idempotency_key_is_400(
    client: httpx.AsyncClient, new_user, key: str
) -> None:
    headers = [("Authorization", new_user().headers["Authorization"]),
               ("Idempotency-Key", key.encode("utf-8"))]
    resp = await client.post("/api/v1/balance/charge", json={"amount": 1000}, headers=headers)
    assert_problem(resp, 400, "VALIDATION_ERROR", names="Idempotency-Key")


async def test_an_idempotency_key_of_255_printable_characters_is_fine(
    client: httpx.AsyncClient, new_user
) -> None:
    key = ("k-" + "".join(chr(c) for c in range(0x21, 0x7F)) * 3)[:255]
    resp = await client.post("/api/v1/balance/charge", json={"amount": 1000},
                             headers=new_user().with_key(key))
    assert resp.status_code == 200, resp.text


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert_problem(await client.get("/"), 404, "NOT_FOUND")


@pytest.mark.parametrize(("method", "path"), [
    ("DELETE", "/api/v1/products"), ("PUT", "/api/v1/orders"), ("GET", "/api/v1/balance/charge"),
    ("POST", "/health/live"), ("PATCH", "/api/v1/cart"),
])
async def test_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await client.request(method, path)
    assert_problem(resp, 405, "METHOD_NOT_ALLOWED")
    assert "allow" in resp.headers


async def test_a_body_too_large_is_413(client: httpx.AsyncClient, new_user) -> None:
    big = b'{"items": [' + b" " * 100_000 + b"]}"
    resp = await client.post("/api/v1/orders", content=big, headers=new_user().headers)
    assert_problem(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_validation_comes_before_not_found(client: httpx.AsyncClient, new_user) -> None:
    body = {"items": [{"product_id": 999_999_999, "quantity": 0}]}
    resp = await client.post("/api/v1/orders", json=body, headers=new_user().headers)
    assert_problem(resp, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"null", b"1", b'"x"', b"{}" * 3,
                                     b'{"items": [null]}', b'{"items": [[1, 2]]}'])
async def test_junk_bodies_never_answer_500(
    client: httpx.AsyncClient, new_user, payload: bytes
) -> None:
    for path in ("/api/v1/orders", "/api/v1/balance/charge", "/api/v1/cart/checkout"):
        resp = await client.post(path, content=payload, headers=new_user().headers)
        assert_problem(resp, 400, "VALIDATION_ERROR")


@pytest.mark.parametrize(("valid_from", "valid_until", "field"), [
    ("0001-01-01T00:00:00+14:00", "2030-01-01T00:00:00Z", "valid_from"),  # year 0 in UTC
    ("2030-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "valid_until"),  # year 10000
    ("1969-12-31T23:59:59Z", "2030-01-01T00:00:00Z", "valid_from"),
])
async def test_coupon_times_outside_what_every_store_holds_are_400(
    client: httpx.AsyncClient, admin, valid_from: str, valid_until: str, field: str
) -> None:
    """They answered 500 yet were written, and the writer looped on the outbox entry."""
    resp = await client.post("/api/v1/admin/coupons", headers=admin.headers, json={
        "name": "edge", "discount_type": "FIXED", "discount_value": 100,
        "total_quantity": 5, "valid_from": valid_from, "valid_until": valid_until})
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names=field)
    assert doc["detail"].startswith(field)


async def test_coupon_times_at_the_edges_of_the_range_are_fine(
    client: httpx.AsyncClient, admin
) -> None:
    resp = await client.post("/api/v1/admin/coupons", headers=admin.headers, json={
        "name": "edges", "discount_type": "FIXED", "discount_value": 100,
        "total_quantity": 5, "valid_from": "1970-01-01T14:00:00+14:00",
        "valid_until": "9999-12-31T09:59:59-14:00"})
    assert resp.status_code == 201, resp.text
    assert (resp.json()["valid_from"], resp.json()["valid_until"]) == (
        "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z")


@pytest.mark.parametrize("cursor", ["%C2%B2", "%D9%A1", "%EF%BC%95", str(2**63)])
async def test_a_cursor_in_unicode_digits_or_past_the_ids_is_400_even_without_a_token(
    client: httpx.AsyncClient, cursor: str
) -> None:
    """GET /api/v1/products?cursor=%C2%B2 was a 500, with no token at all."""
    resp = await client.get(f"/api/v1/products?cursor={cursor}")
    assert_problem(resp, 400, "VALIDATION_ERROR", names="cursor")
