"""The OpenAPI document at ``/schema`` (JSON) and its interactive page at ``/schema/swagger``.

Handlers read their own bodies (api/inbound.py) instead of taking a ``data`` parameter,
so Litestar cannot see the request bodies; :func:`operation` documents them, with schemas
made by msgspec from the same Structs that decode them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from api.problems import PROBLEM_JSON, Problem
from api.requests import Body

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


IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key", param_in=ParamType.HEADER, required=False,
    description="Replays the first answer for the same request within 24 h",
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=255,
                  pattern="^[\\x20-\\x7E]+$"),
)


def _request_body(kind: type[Body]) -> RequestBody:
    media = OpenAPIMediaType(schema=body_schema(kind))  # type: ignore[arg-type]
    return RequestBody(required=len(kind.__struct_defaults__) < len(kind.__struct_fields__),
                       content={"application/json": media})


@cache
def operation(body: type[Body] | None = None, idempotent: bool = False) -> type[Operation]:
    """An Operation class documenting a request body decoded by the handler itself, and the
    Idempotency-Key header where it is honoured."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            if body is not None:
                self.request_body = _request_body(body)
            if idempotent:
                self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]

    return Documented


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The problem answers an operation may give, for its OpenAPI responses."""
    return {status: ResponseSpec(data_container=Problem, generate_examples=False,
                                 description=_REASONS.get(status, "Problem"),
                                 media_type=PROBLEM_JSON)
            for status in (*statuses, 503)}


def openapi_config() -> OpenAPIConfig:
    """OpenAPI at /schema (JSON, also /schema/openapi.json), Swagger UI at /schema/swagger."""
    return OpenAPIConfig(
        title="rushorder",
        version="1.0.0",
        description="An e-commerce order service that stays correct under flash-sale load.",
        path="/schema",
        use_handler_docstrings=True,
        render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), SwaggerRenderPlugin()],
        components=Components(
            security_schemes={BEARER: SecurityScheme(type="http", scheme="bearer",
                                                     bearer_format="JWT")},
        ),
    )
