"""Every route the app has, fed bad values in every path and query parameter and in every
free-text body field, answers a 4xx problem with a contract code: never a 500, never a 2xx.

The cases are made from the app's own route table (``app.routes``, each handler's path and
query parameters) and from its OpenAPI document (the request bodies), not from a list kept
here, so a route added later is covered without editing this file. Each route is called
with the token it needs: an admin's on the admin router, a user's elsewhere (a public
route ignores it).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from api.app import create_app
from api.problems import PROBLEM_JSON, STATUS
from rushorder.settings import Settings
from tests.api.actors import Actor, assert_problem

SKIPPED_METHODS = {"OPTIONS", "HEAD"}  # Litestar's own answers, with no parameter read
NOT_PARAMETERS = {"request", "scope", "data", "socket", "state", "headers", "cookies"}
ADMIN_PREFIX = "/api/v1/admin"

# Unicode digits that str.isdigit() takes, NUL and other controls, 10 kB of text, numbers
# past every range (Lua's 14 digits, Postgres' bigint, any machine word), signs, floats.
BAD_VALUES = {
    "superscript-two": "²", "arabic-indic-one": "١", "fullwidth-five": "５",
    "digit-then-superscript": "1²", "nul": "\x00", "digit-then-nul": "1\x00",
    "soh": "\x01", "unit-separator": "\x1f", "del": "\x7f", "next-line": "\u0085",
    "newline": "1\n", "10kB": "a" * 10_000, "30-nines": "9" * 30,
    "bigint-plus-one": str(2**63), "20-digits": "9" * 20, "15-digits": "9" * 15,
    "minus-one": "-1", "float": "1.5", "exponent": "1e3", "space": " 1", "hex": "0x1f",
    "empty-looking": "%00",
}
BAD_TEXT = {"nul": "a\x00b", "soh": "\x01", "tab": "a\tb", "newline": "a\nb",
            "final-newline": "ab\n", "escape": "\x1b[31mred", "del": "a\x7f",
            "c1": "a\u0085b", "only-nul": "\x00"}


def _routes() -> Iterator[tuple[str, str, list[str], list[str]]]:
    """(method, path template, path parameters, query parameters) of every route handler."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", jwt_secret="x" * 40))
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            path_names = list(route.path_parameters)
            query = [name for name in handler.parsed_fn_signature.parameters
                     if name not in NOT_PARAMETERS and name not in path_names]
            for method in sorted(set(getattr(handler, "http_methods", ())) - SKIPPED_METHODS):
                yield method, route.path, path_names, query


def _path(template: str, values: dict[str, str]) -> str:
    """The template with each ``{name:type}`` replaced by its value, percent-encoded."""
    path = template
    for name, value in values.items():
        start = path.index("{" + name)
        path = path[:start] + quote(value, safe="") + path[path.index("}", start) + 1:]
    return path


# Query parameters that are free text (issue 27's category filter): most of BAD_VALUES is a
# fine category, so these are fed what no text parameter takes instead.
TEXT_QUERY = {"category"}
BAD_QUERY_TEXT = {**BAD_TEXT, "empty": "", "10kB": "a" * 10_000}


def _bad_values(name: str) -> dict[str, str]:
    return BAD_QUERY_TEXT if name in TEXT_QUERY else BAD_VALUES


def _cases() -> Iterator[Any]:
    for method, template, path_names, query in _routes():
        filler = dict.fromkeys(path_names, "1")
        for (what, value), name in itertools.product(BAD_VALUES.items(), path_names):
            yield pytest.param(method, _path(template, {**filler, name: value}), template, {},
                               id=f"{method} {template} path {name}={what}")
        for name in query:
            for what, value in _bad_values(name).items():
                yield pytest.param(method, _path(template, filler), template, {name: value},
                                   id=f"{method} {template} query {name}={what}")


def _token(template: str, admin: Actor, user: Actor) -> dict[str, str]:
    return (admin if template.startswith(ADMIN_PREFIX) else user).headers


def assert_contract_problem(resp: httpx.Response) -> dict:
    """A 4xx RFC 9457 problem whose code is one of the contract's."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"] == PROBLEM_JSON, resp.headers
    doc = resp.json()
    assert doc["code"] in STATUS and STATUS[doc["code"]] == resp.status_code, doc
    return doc


def test_the_route_table_has_parameters_to_feed() -> None:
    """The walk finds the routes' parameters (else every case below would vanish)."""
    found = {(m, t, tuple(p), tuple(q)) for m, t, p, q in _routes()}
    assert ("GET", "/api/v1/products/{product_id:str}", ("product_id",), ()) in found
    assert ("GET", "/api/v1/orders", (), ("limit", "cursor")) in found
    # issue 27's routes and filters
    assert ("GET", "/api/v1/products", (), ("limit", "cursor", "category", "in_stock",
                                            "on_sale")) in found
    assert ("POST", "/api/v1/admin/products/{product_id:str}/options", ("product_id",),
            ()) in found
    for method, template in (
            ("PATCH", "/api/v1/admin/products/{product_id:str}/options/{option_id:str}"),
            ("PUT", "/api/v1/cart/items/{product_id:str}/options/{option_id:str}"),
            ("DELETE", "/api/v1/cart/items/{product_id:str}/options/{option_id:str}")):
        assert (method, template, ("product_id", "option_id"), ()) in found


@pytest.mark.parametrize(("method", "path", "template", "query"), list(_cases()))
async def test_every_parameter_of_every_route_refuses_bad_values_with_a_4xx_problem(
    client: httpx.AsyncClient, admin: Actor, new_user, method: str, path: str,
    template: str, query: dict[str, str],
) -> None:
    user = _fuzz_user(new_user)
    resp = await client.request(method, path, params=query, json={},
                                headers=_token(template, admin, user))
    assert_contract_problem(resp)


_USERS: list[Actor] = []


def _fuzz_user(new_user: Any) -> Actor:
    """One user for all the cases (they change nothing, so they may share it)."""
    if not _USERS:
        _USERS.append(new_user())
    return _USERS[0]


# -- bodies ------------------------------------------------------------------------------


def _valid(schema: dict[str, Any], moments: Iterator[str]) -> Any:
    """A small value that ``schema`` admits (times in increasing order)."""
    if "oneOf" in schema or "anyOf" in schema:
        return _valid((schema.get("oneOf") or schema["anyOf"])[0], moments)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _valid(prop, moments) for name, prop in schema["properties"].items()
                if name in schema.get("required", ())}
    if kind == "array":
        return [_valid(schema["items"], moments)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "string" and schema.get("format") == "date-time":
        return next(moments)
    return "x" * max(1, schema.get("minLength", 1))


def _object(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["oneOf"][0] if "oneOf" in schema else schema


def _text_fields(schema: dict[str, Any]) -> list[str]:
    """The free-text properties of a body schema (not enums, consts or times): top-level
    ones by name, those of a list's objects as ``name[0].field`` (issue 27's options)."""
    schema = _object(schema)
    def free_text(prop: dict[str, Any]) -> bool:
        if "anyOf" in prop:  # an optional field: string or null
            return any(free_text(alternative) for alternative in prop["anyOf"])
        return (prop.get("type") == "string" and "format" not in prop
                and "enum" not in prop and "const" not in prop)

    fields = []
    for name, prop in schema.get("properties", {}).items():
        if free_text(prop):
            fields.append(name)
        elif prop.get("type") == "array" and prop["items"].get("type") == "object":
            fields += [f"{name}[0].{inner}" for inner in _text_fields(prop["items"])]
    return fields


def _with_text(schema: dict[str, Any], field: str, text: str) -> dict[str, Any]:
    """A valid body of ``schema`` with ``text`` put in ``field`` (``name[0].inner``: in the
    first object of list ``name``)."""
    body = _valid(schema, _moments())
    if "[0]." not in field:
        return {**body, field: text}
    name, inner = field.split("[0].", 1)
    items = _object(schema)["properties"][name]["items"]
    return {**body, name: [{**_valid(items, _moments()), inner: text}]}


def _body_cases() -> Iterator[Any]:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", jwt_secret="x" * 40))
    doc = app.openapi_schema.to_schema()
    for template, item in doc["paths"].items():
        for method, op in item.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if not body:
                continue
            for field, (what, text) in itertools.product(_text_fields(body["schema"]),
                                                         BAD_TEXT.items()):
                yield pytest.param(method.upper(), template, body["schema"], field, text,
                                   id=f"{method.upper()} {template} {field}={what}")


def _moments() -> Iterator[str]:
    start = datetime.now(UTC)
    return ((start + timedelta(days=n)).isoformat() for n in itertools.count())


def test_the_documents_have_text_fields_to_feed() -> None:
    fields = {(c.values[0], c.values[1], c.values[3]) for c in _body_cases()}
    assert ("POST", "/api/v1/admin/products", "name") in fields
    assert ("POST", "/api/v1/admin/coupons", "name") in fields
    assert ("PATCH", "/api/v1/admin/products/{product_id}", "name") in fields
    for method, template, field in (  # issue 27's
            ("POST", "/api/v1/admin/products", "category"),
            ("PATCH", "/api/v1/admin/products/{product_id}", "category"),
            ("POST", "/api/v1/admin/products/{product_id}/options", "name"),
            ("PATCH", "/api/v1/admin/products/{product_id}/options/{option_id}", "name"),
            ("POST", "/api/v1/admin/products", "options[0].name")):
        assert (method, template, field) in fields


@pytest.mark.parametrize(("method", "template", "schema", "field", "text"),
                         list(_body_cases()))
async def test_every_text_field_of_every_body_refuses_control_characters(
    client: httpx.AsyncClient, admin: Actor, new_user, method: str, template: str,
    schema: dict[str, Any], field: str, text: str,
) -> None:
    body = _with_text(schema, field, text)
    path = re.sub(r"\{[^}]+\}", "1", template)  # any id: the body is checked first
    resp = await client.request(method, path, json=body,
                                headers=_token(template, admin, _fuzz_user(new_user)))
    doc = assert_problem(resp, 400, "VALIDATION_ERROR", names=field)
    assert doc["detail"].startswith(field)
