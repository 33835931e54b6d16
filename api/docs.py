"""The OpenAPI document at ``/schema`` (JSON) and its interactive page at ``/schema/swagger``.

Handlers read their own bodies (api/inbound.py) instead of taking a ``data`` parameter,
so Litestar cannot see the request bodies; :func:`operation` documents them, with schemas
made by msgspec from the same Structs that decode them, and adds what those cannot say:
the configured charge policy, each discount type's range, and the links from an answer
to the operations a client calls next with it (which a schema-driven fuzzer follows).
Operation ids are the handlers' names, so a link names its target plainly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from litestar import Response, Router
from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Link,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from api.problems import PROBLEM_JSON, Problem, problem
from api.requests import Body, ChargeIn, CouponIn
from engine import Policy, limits
from engine.limits import Bounds

BEARER = "bearer"
SECURED: list[dict[str, list[str]]] = [{BEARER: []}]

_REASONS = {
    400: "Validation failed (the field is named in detail)",
    401: "Missing, malformed, forged or expired token",
    403: "The token's role may not do this",
    404: "Not found",
    409: "Refused by a business rule",
    413: "Body too large",
    422: "Idempotency-Key reused with another request",
    429: "Too many requests: the write rate or the live Idempotency-Key records of the "
         "caller (Retry-After says when to try again)",
    503: "The data store cannot be reached",
}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """A schema with its ``$defs`` references replaced by the definitions themselves."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[1]], defs)
        return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


@cache
def body_schema(kind: type[Body]) -> dict[str, Any]:
    """The JSON Schema of a request body, self-contained: Litestar rebuilds
    ``components/schemas`` from the types it saw itself, so a reference there would dangle."""
    schema = msgspec.json.schema(kind)
    return _inline(schema, schema.get("$defs", {}))  # type: ignore[no-any-return]


def charge_schema(policy: Policy) -> dict[str, Any]:
    """ChargeIn's schema with the charge policy the engine enforces: msgspec leaves the
    amount open, so that a refusal is the contract's INVALID_AMOUNT, but clients (and
    fuzzers) should still be told what passes."""
    schema = copy.deepcopy(body_schema(ChargeIn))
    schema["properties"]["amount"].update(
        minimum=policy.charge_min, maximum=policy.charge_max, multipleOf=policy.charge_unit,
        description=f"won; the balance after the charge may be at most {policy.balance_max}")
    return schema


def coupon_schema() -> dict[str, Any]:
    """CouponIn's schema as one variant per discount type, each with its own range of
    discount_value: one object schema cannot bound a field by another field's value, and a
    fuzzer told only the widest range would mostly make PERCENT coupons that are refused."""
    plain = copy.deepcopy(body_schema(CouponIn))
    rest = {key: value for key, value in plain.items() if key not in ("title", "description")}

    def variant(kind: str, bounds: Bounds) -> dict[str, Any]:
        properties = {**plain["properties"], "discount_type": {"const": kind},
                      "discount_value": {"type": "integer", "minimum": bounds.low,
                                         "maximum": bounds.high}}
        if kind != "PERCENT":  # issue 28: only a PERCENT coupon has a cap
            properties["max_discount_amount"] = {"type": "null"}
        return {**rest, "title": f"{kind} coupon", "properties": properties}

    return {"title": plain["title"], "description": plain["description"],
            "oneOf": [variant(kind, bounds) for kind, bounds in limits.DISCOUNT.items()]}


IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", param_in=ParamType.HEADER, required=False,
    description="Replays the first answer for the same request within 24 h",
    schema=Schema(type=OpenAPIType.STRING, min_length=limits.IDEMPOTENCY_KEY_LENGTH.low,
                  max_length=limits.IDEMPOTENCY_KEY_LENGTH.high, pattern="^[\\x20-\\x7E]+$"),
)

# Where a link takes a value from the answer it hangs on: the answered object's id.
ANSWER_ID = "$response.body#/id"

Links = Mapping[str, Link]


def link(operation_id: str, description: str, *, path: Mapping[str, str] | None = None,
         body: Any = None) -> Link:
    """A link to ``operation_id`` filling its ``path`` parameters and/or (part of) its body,
    each from a runtime expression such as :data:`ANSWER_ID`."""
    parameters = {f"path.{name}": value for name, value in (path or {}).items()}
    return Link(operation_id=operation_id, description=description,
                parameters=parameters or None, request_body=body)


def _request_body(kind: type[Body], schema: dict[str, Any]) -> RequestBody:
    media = OpenAPIMediaType(schema=schema)  # type: ignore[arg-type]
    return RequestBody(required=len(kind.__struct_defaults__) < len(kind.__struct_fields__),
                       content={"application/json": media})


def _response(operation: Operation, status: int) -> OpenAPIResponse:
    response = (operation.responses or {})[str(status)]
    if not isinstance(response, OpenAPIResponse):
        raise TypeError(f"{operation.operation_id}: answer {status} is a reference")
    return response


def operation(body: type[Body] | None = None, idempotent: bool = False, *,
              schema: dict[str, Any] | None = None,
              links: Mapping[int, Links] | None = None) -> type[Operation]:
    """An Operation class documenting a request body decoded by the handler itself (its
    Struct's schema, or ``schema`` when given), the Idempotency-Key header where it is
    honoured, and ``links`` from an answer (by status) to the operations that can follow."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = _request_body(body, schema or body_schema(body))
            if idempotent:
                self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]
            for status, named in (links or {}).items():
                _response(self, status).links = dict(named)

    return Documented


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The problem answers an operation may give, for its OpenAPI responses."""
    return {status: ResponseSpec(data_container=Problem, generate_examples=False,
                                 description=_REASONS.get(status, "Problem"),
                                 media_type=PROBLEM_JSON)
            for status in (*statuses, 503)}


def _not_found_as_problem(response: Response[Any]) -> Response[Any]:
    """Litestar answers an unknown /schema/... path with an HTML page; every other 404 of
    the API is a problem document, and so is this one."""
    if response.status_code == 404:
        return problem("NOT_FOUND", "no such page of the API's documents")
    return response


def openapi_config() -> OpenAPIConfig:
    """OpenAPI at /schema (JSON, also /schema/openapi.json), Swagger UI at /schema/swagger."""
    return OpenAPIConfig(
        openapi_router=Router("/schema", route_handlers=[], include_in_schema=False,
                              after_request=_not_found_as_problem),
        title="rushorder",
        version="1.0.0",
        description="An e-commerce order service that stays correct under flash-sale load.",
        path="/schema",
        use_handler_docstrings=True,
        operation_id_creator=lambda handler, _method, _path: handler.handler_name,
        render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), SwaggerRenderPlugin()],
        components=Components(
            security_schemes={BEARER: SecurityScheme(type="http", scheme="bearer",
                                                     bearer_format="JWT")},
        ),
    )
