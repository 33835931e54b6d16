"""Every failure as an RFC 9457 problem document; the one place that maps errors to HTTP.

Domain errors carry the contract's stable ``code`` (engine/errors.py); Litestar's own
HTTP exceptions (no route, wrong method, bad query parameter, 401/403 from auth) are
named by status. Anything else is a server bug: logged, and answered with a 500 problem.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException, ValidationException

from api.answers import Answer
from engine.errors import EngineError

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger("rushorder.api")

# The contract's status for every stable code.
STATUS: dict[str, int] = {
    "VALIDATION_ERROR": 400,
    "INVALID_AMOUNT": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "PRODUCT_NOT_FOUND": 404,
    "COUPON_NOT_FOUND": 404,
    "ORDER_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "BALANCE_LIMIT_EXCEEDED": 409,
    "OUT_OF_STOCK": 409,
    "COUPON_NOT_ACTIVE": 409,
    "COUPON_ALREADY_ISSUED": 409,
    "COUPON_SOLD_OUT": 409,
    "COUPON_NOT_USABLE": 409,
    "INSUFFICIENT_BALANCE": 409,
    "ORDER_NOT_CANCELLABLE": 409,
    "CART_EMPTY": 409,
    "IDEMPOTENCY_KEY_IN_FLIGHT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "TOO_MANY_REQUESTS": 429,  # a user's write rate, or its Idempotency-Key records
    "INTERNAL_ERROR": 500,
    "SERVICE_UNAVAILABLE": 503,
}

# Litestar's HTTP exceptions, by status; a 4xx not listed here keeps its status.
CODE_OF_STATUS: dict[int, str] = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    503: "SERVICE_UNAVAILABLE",
}

class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document with the contract's stable ``code``."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    context: dict[str, Any] | None = None


def problem(code: str, detail: str, status: int | None = None,
            context: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Answer:
    """The problem answer for one code."""
    status = status or STATUS.get(code, 500)
    doc = Problem(type=f"urn:rushorder:problem:{code.lower().replace('_', '-')}",
                  title=code.replace("_", " ").capitalize(), status=status, detail=detail,
                  code=code, context=context or None)
    return Answer(doc, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _from_engine(exc: EngineError) -> Answer:
    headers = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s else None
    if exc.code not in STATUS:  # a script answered a code we do not know: a bug
        log.error("engine answered an unknown code %s: %s", exc.code, exc.detail)
        return problem("INTERNAL_ERROR", "the server failed; this is a bug")
    return problem(exc.code, exc.detail, context=exc.context, headers=headers)


def _validation_detail(exc: ValidationException) -> str:
    """Name the offending field, as Litestar lists it in ``extra``."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    named = [f"{e['key']}: {e['message']}" for e in extra if isinstance(e, dict) and "key" in e]
    return "; ".join(named) or str(exc.detail)


_ROUTING_DETAIL = {404: "no route for {method} {path}", 405: "{method} is not allowed on {path}"}


def _http_detail(request: Request[Any, Any, Any], exc: HTTPException) -> str:
    if isinstance(exc, ValidationException):
        return _validation_detail(exc)
    if exc.status_code in _ROUTING_DETAIL and exc.detail in ("Not Found", "Method Not Allowed"):
        return _ROUTING_DETAIL[exc.status_code].format(method=request.method,
                                                       path=request.scope["path"])
    return str(exc.detail)


def _from_http(request: Request[Any, Any, Any], exc: HTTPException) -> Answer:
    status = exc.status_code
    if status >= 500:
        if status != 503:
            log.error("server error %s: %s", status, exc.detail, exc_info=exc)
        return problem(CODE_OF_STATUS.get(status, "INTERNAL_ERROR"), str(exc.detail), status)
    return problem(CODE_OF_STATUS.get(status, f"HTTP_{status}"), _http_detail(request, exc), status,
                   headers=dict(exc.headers or {}) or None)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Answer:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem("INTERNAL_ERROR", "the server failed; this is a bug")


def handle(request: Request[Any, Any, Any], exc: Exception) -> Answer:
    """Litestar's exception handler for every exception: the problem answer."""
    if isinstance(exc, EngineError):
        return _from_engine(exc)
    if isinstance(exc, HTTPException):
        return _from_http(request, exc)
    return _unexpected(request, exc)
