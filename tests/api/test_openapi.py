"""One source for each limit: the API's msgspec bounds and the served OpenAPI document carry
exactly engine/limits.py's values (and the app's charge policy), the Idempotency-Key is
documented where it is honoured, and the links between operations name real operations,
parameters and answer fields."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.requests import (
    ID_PATTERN,
    CartItemIn,
    ChargeIn,
    CheckoutIn,
    CouponIn,
    OptionIn,
    OptionPatch,
    OrderIn,
    ProductIn,
    ProductPatch,
    parse,
)
from engine import limits
from engine.errors import ValidationFailed
from engine.limits import Bounds
from rushorder.settings import Settings

IDEMPOTENT = {("/api/v1/balance/charge", "post"), ("/api/v1/orders", "post"),
              ("/api/v1/orders/{order_id}/cancel", "post"), ("/api/v1/cart/checkout", "post"),
              ("/api/v1/coupons/{coupon_id}/issue", "post"),
              ("/api/v1/admin/products", "post"), ("/api/v1/admin/coupons", "post"),
              ("/api/v1/admin/products/{product_id}/options", "post"),
              ("/api/v1/orders/{order_id}/pay", "post")}
LISTS = ["/api/v1/products", "/api/v1/balance/history", "/api/v1/orders",
         "/api/v1/users/me/coupons", "/api/v1/coupons", "/api/v1/admin/coupons"]
COUPON_RULES = {"min_order_amount", "max_discount_amount", "description"}  # issue 28, optional
COUPON = {"name": "c", "discount_type": "FIXED", "discount_value": 1, "total_quantity": 1,
          "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z"}
LINE = {"product_id": 1, "quantity": 1}

Body = dict[str, Any]
# (Struct, a valid body with the value under test put in, the field a refusal names, bounds,
# whether the bounds are of a length)
BOUNDED: dict[str, tuple[type, Callable[[Any], Body], str, Bounds, bool]] = {
    "product name": (ProductIn, lambda v: {"name": v, "price": 1, "stock": 0}, "name",
                     limits.NAME_LENGTH, True),
    "price": (ProductIn, lambda v: {"name": "n", "price": v, "stock": 0}, "price",
              limits.PRICE, False),
    "stock": (ProductIn, lambda v: {"name": "n", "price": 1, "stock": v}, "stock",
              limits.STOCK, False),
    "options": (ProductIn, lambda v: {"name": "n", "price": 1, "options": [
                    {"name": "o"}] * len(v)} if v else {"name": "n", "price": 1, "stock": 0},
                "options", limits.OPTIONS, True),
    "option name": (ProductIn, lambda v: {"name": "n", "price": 1, "options": [{"name": v}]},
                    "options[0].name", limits.NAME_LENGTH, True),
    "option extra_price": (OptionIn, lambda v: {"name": "o", "extra_price": v}, "extra_price",
                           limits.EXTRA_PRICE, False),
    "option stock": (OptionIn, lambda v: {"name": "o", "stock": v}, "stock", limits.STOCK,
                     False),
    "max_per_user": (ProductIn, lambda v: {"name": "n", "price": 1, "stock": 0,
                                           "max_per_user": v}, "max_per_user",
                     limits.MAX_PER_USER, False),
    "category": (ProductIn, lambda v: {"name": "n", "price": 1, "stock": 0, "category": v},
                 "category", limits.CATEGORY_LENGTH, True),
    "new category": (ProductPatch, lambda v: {"category": v}, "category",
                     limits.CATEGORY_LENGTH, True),
    "new max_per_user": (ProductPatch, lambda v: {"max_per_user": v}, "max_per_user",
                         limits.MAX_PER_USER, False),
    "new extra_price": (OptionPatch, lambda v: {"extra_price": v}, "extra_price",
                        limits.EXTRA_PRICE, False),
    "option stock_delta": (OptionPatch, lambda v: {"stock_delta": v}, "stock_delta",
                           limits.STOCK_DELTA, False),
    "new name": (ProductPatch, lambda v: {"name": v}, "name", limits.NAME_LENGTH, True),
    "new price": (ProductPatch, lambda v: {"price": v}, "price", limits.PRICE, False),
    "stock_delta": (ProductPatch, lambda v: {"stock_delta": v}, "stock_delta",
                    limits.STOCK_DELTA, False),
    "coupon name": (CouponIn, lambda v: {**COUPON, "name": v}, "name", limits.NAME_LENGTH, True),
    "FIXED": (CouponIn, lambda v: {**COUPON, "discount_value": v}, "discount_value",
              limits.DISCOUNT["FIXED"], False),
    "PERCENT": (CouponIn, lambda v: {**COUPON, "discount_type": "PERCENT", "discount_value": v},
                "discount_value", limits.DISCOUNT["PERCENT"], False),
    "total_quantity": (CouponIn, lambda v: {**COUPON, "total_quantity": v}, "total_quantity",
                       limits.COUPON_QUANTITY, False),
    "order lines": (OrderIn, lambda v: {"items": [{"product_id": p + 1, "quantity": 1}
                                                  for p in range(len(v))]},  # len(v) lines
                    "items", limits.ORDER_LINES, True),
    "line quantity": (OrderIn, lambda v: {"items": [{**LINE, "quantity": v}]},
                      "items[0].quantity", limits.QUANTITY, False),
    "line option": (OrderIn, lambda v: {"items": [{**LINE, "option_id": v}]},
                    "items[0].option_id", limits.ID, False),
    "line product": (OrderIn, lambda v: {"items": [{**LINE, "product_id": v}]},
                     "items[0].product_id", limits.ID, False),
    "order coupon": (OrderIn, lambda v: {"items": [LINE], "issued_coupon_id": v},
                     "issued_coupon_id", limits.ID, False),
    "cart quantity": (CartItemIn, lambda v: {"quantity": v}, "quantity",
                      limits.CART_QUANTITY, False),
    "checkout coupon": (CheckoutIn, lambda v: {"issued_coupon_id": v}, "issued_coupon_id",
                        limits.ID, False),
}


def _values(bounds: Bounds, length: bool, inside: bool) -> list[Any]:
    """The values on the bounds (inside) or just past them, as strings of that length if the
    bounds are of a length."""
    edges = [bounds.low, bounds.high] if inside else [bounds.low - 1, bounds.high + 1]
    return [("n" * edge if length else edge) for edge in edges if edge >= 0 or not length]


@pytest.mark.parametrize("case", BOUNDED)
def test_request_bodies_accept_exactly_the_engines_bounds(case: str) -> None:
    kind, body, field, bounds, length = BOUNDED[case]
    for value in _values(bounds, length, inside=True):
        parse(kind, json.dumps(body(value)).encode())
    for value in _values(bounds, length, inside=False):
        with pytest.raises(ValidationFailed) as refused:
            parse(kind, json.dumps(body(value)).encode())
        assert refused.value.context == {"field": field}, value


def body_schema(doc: dict, path: str, method: str) -> dict:
    """The request body's JSON Schema of an operation in the served document."""
    return doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def integer(bounds: Bounds) -> dict[str, Any]:
    return {"type": "integer", "minimum": bounds.low, "maximum": bounds.high}


async def test_served_schema_declares_the_engines_bounds(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema")).json()
    product = body_schema(doc, "/api/v1/admin/products", "post")["properties"]
    assert product["price"] == integer(limits.PRICE)
    assert product["stock"] == integer(limits.STOCK)
    assert (product["name"]["minLength"], product["name"]["maxLength"]) == (
        limits.NAME_LENGTH.low, limits.NAME_LENGTH.high)
    patch = body_schema(doc, "/api/v1/admin/products/{product_id}", "patch")["properties"]
    assert patch["stock_delta"]["minimum"] == limits.STOCK_DELTA.low
    assert patch["stock_delta"]["maximum"] == limits.STOCK_DELTA.high
    order = body_schema(doc, "/api/v1/orders", "post")["properties"]
    assert (order["items"]["minItems"], order["items"]["maxItems"]) == (
        limits.ORDER_LINES.low, limits.ORDER_LINES.high)
    assert order["items"]["items"]["properties"]["quantity"] == integer(limits.QUANTITY)
    assert order["items"]["items"]["properties"]["product_id"] == integer(limits.ID)
    cart = body_schema(doc, "/api/v1/cart/items/{product_id}", "put")["properties"]
    assert cart["quantity"] == integer(limits.CART_QUANTITY)
    assert (product["options"]["minItems"], product["options"]["maxItems"]) == (
        limits.OPTIONS.low, limits.OPTIONS.high)
    assert product["max_per_user"]["anyOf"][0] == integer(limits.MAX_PER_USER)
    assert (product["category"]["anyOf"][0]["minLength"],
            product["category"]["anyOf"][0]["maxLength"]) == (
        limits.CATEGORY_LENGTH.low, limits.CATEGORY_LENGTH.high)
    option = body_schema(doc, "/api/v1/admin/products/{product_id}/options", "post")
    assert option["properties"]["extra_price"] == {**integer(limits.EXTRA_PRICE), "default": 0}
    assert option["required"] == ["name"]
    assert order["items"]["items"]["properties"]["option_id"]["anyOf"][0] == integer(limits.ID)
    category = [p for p in doc["paths"]["/api/v1/products"]["get"]["parameters"]
                if p["name"] == "category"][0]["schema"]
    assert (category["minLength"], category["maxLength"]) == (
        limits.CATEGORY_LENGTH.low, limits.CATEGORY_LENGTH.high)


async def test_each_discount_type_has_its_own_range(client: httpx.AsyncClient) -> None:
    """PERCENT <= 100 in a form schema-driven clients generate from: one variant per type."""
    doc = (await client.get("/schema")).json()
    variants = body_schema(doc, "/api/v1/admin/coupons", "post")["oneOf"]
    ranges = {v["properties"]["discount_type"]["const"]: v["properties"]["discount_value"]
              for v in variants}
    assert ranges == {kind: integer(bounds) for kind, bounds in limits.DISCOUNT.items()}
    for variant in variants:
        assert variant["properties"]["total_quantity"] == integer(limits.COUPON_QUANTITY)
        assert variant["additionalProperties"] is False
        assert set(variant["required"]) == set(CouponIn.__struct_fields__) - COUPON_RULES
    fixed = next(v for v in variants if v["title"] == "FIXED coupon")
    assert fixed["properties"]["max_discount_amount"] == {"type": "null"}  # a cap is PERCENT's


async def test_ids_and_page_sizes_are_declared(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema")).json()
    for path in LISTS:
        (limit,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "limit"]
        assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (
            limits.PAGE_SIZE.low, limits.PAGE_SIZE.high), path
    ids = [p for ops in doc["paths"].values() for op in ops.values()
           for p in op.get("parameters", []) if p["in"] == "path" and p["name"] != "order_id"]
    # product_id: 2 product routes + 2 option routes + 4 cart routes; option_id: 1 option
    # route + 2 cart routes (both issue 27's); coupon_id: 2
    assert len(ids) == 13 and all(p["schema"]["pattern"] == ID_PATTERN for p in ids)
    assert all(re.fullmatch(ID_PATTERN, good) for good in ("1", "10", str(limits.MAX_ID)))
    assert not any(re.search(ID_PATTERN, bad) for bad in ("0", "01", "-1", str(limits.MAX_ID + 1)))


def test_charge_amount_is_documented_from_the_apps_policy() -> None:
    """msgspec leaves the amount open (a refusal is the engine's INVALID_AMOUNT), but the
    document states the policy of the settings the app was built with."""
    settings = Settings(redis_url="redis://127.0.0.1:9/0", charge_min=2_000, charge_max=50_000,
                        charge_unit=500, balance_max=70_000)
    doc = create_app(settings).openapi_schema.to_schema()
    amount = body_schema(doc, "/api/v1/balance/charge", "post")["properties"]["amount"]
    assert {key: amount[key] for key in ("type", "minimum", "maximum", "multipleOf")} == {
        "type": "integer", "minimum": 2_000, "maximum": 50_000, "multipleOf": 500}
    assert "70000" in amount["description"]
    assert parse(ChargeIn, b'{"amount": 7}').amount == 7


async def test_every_post_that_honours_idempotency_key_documents_it(
    client: httpx.AsyncClient
) -> None:
    doc = (await client.get("/schema")).json()
    keyed = {}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                if param["name"] == "Idempotency-Key":
                    keyed[path, method] = param
    assert keyed.keys() == IDEMPOTENT
    for param in keyed.values():
        schema = param["schema"]
        assert (param["in"], param.get("required", False)) == ("header", False)
        assert (schema["minLength"], schema["maxLength"]) == (
            limits.IDEMPOTENCY_KEY_LENGTH.low, limits.IDEMPOTENCY_KEY_LENGTH.high)
        assert all(re.fullmatch(schema["pattern"], key) for key in (" ~", "k" * 255, "a-1:B"))
        assert not any(re.fullmatch(schema["pattern"], key) for key in ("", "clé", "a\tb"))


# (source operation, status, target operation): what a client does next.
EXPECTED_LINKS = {
    ("create_product", "201", "get_product"), ("create_product", "201", "place_order"),
    ("create_product", "201", "put_cart_item"), ("get_product", "200", "place_order"),
    ("get_product", "200", "put_cart_item"), ("update_product", "200", "get_product"),
    ("place_order", "201", "get_order"), ("place_order", "201", "cancel_order"),
    ("get_order", "200", "cancel_order"), ("checkout", "201", "cancel_order"),
    ("put_cart_item", "200", "checkout"), ("create_product", "201", "add_option"),
    ("add_option", "201", "update_option"), ("add_option", "201", "put_cart_option"),
    ("add_option", "201", "get_product"), ("put_cart_option", "200", "checkout"),
    ("create_coupon", "201", "get_coupon"), ("create_coupon", "201", "issue_coupon"),
    ("get_coupon", "200", "issue_coupon"),
    ("issue_coupon", "201", "place_order"), ("issue_coupon", "201", "checkout"),
}


def _resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _expressions(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [e for item in value.values() for e in _expressions(item)]
    if isinstance(value, list):
        return [e for item in value for e in _expressions(item)]
    return [value] if isinstance(value, str) and value.startswith("$") else []


def _fields_exist(schema: dict, value: Any) -> bool:
    """Every key of a link's body is a property of the target's body schema (or, for a
    oneOf, of one of its variants)."""
    if "oneOf" in schema:
        return any(_fields_exist(variant, value) for variant in schema["oneOf"])
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return all(key in props and _fields_exist(props[key], item) for key, item in value.items())
    if isinstance(value, list):
        return all(_fields_exist(schema["items"], item) for item in value)
    return True


async def test_links_name_real_operations_parameters_and_answer_fields(
    client: httpx.AsyncClient
) -> None:
    doc = (await client.get("/schema")).json()
    ops = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    found = set()
    for source_id, source in ops.items():
        for status, answer in source["responses"].items():
            answered = _resolve(doc, answer.get("content", {}).get("application/json", {})
                                .get("schema", {}))
            for name, link in answer.get("links", {}).items():
                target = ops[link["operationId"]]
                found.add((source_id, status, link["operationId"]))
                params = {(p["in"], p["name"]) for p in target.get("parameters", [])}
                for key in link.get("parameters", {}):
                    assert tuple(key.split(".", 1)) in params, (source_id, name, key)
                if "requestBody" in link:
                    assert _fields_exist(body_schema(doc, *_where(doc, target)),
                                         link["requestBody"]), (source_id, name)
                for expression in _expressions(link):
                    assert expression.startswith("$response.body#/"), expression
                    field = expression.removeprefix("$response.body#/")
                    assert field in answered["properties"], (source_id, name, expression)
    assert not EXPECTED_LINKS - found, EXPECTED_LINKS - found


def _where(doc: dict, operation: dict) -> tuple[str, str]:
    """The (path, method) of an operation."""
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if op is operation or op["operationId"] == operation["operationId"]:
                return path, method
    raise KeyError(operation["operationId"])
