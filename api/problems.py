"""Every failure as an RFC 9457 problem document; the one place that maps errors to HTTP.

Domain errors carry the contract's stable ``code`` (engine/errors.py); Litestar's own
HTTP exceptions (no route, wrong method, bad query parameter, 401/403 from auth) are
named by status. Anything else is a server bug: logged, and answered with a 500 problem.
"""

from __future__ import annotations

import logging
import re
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
    "OPTION_NOT_FOUND": 404,  # issue 27: no such option of that product
    "METHOD_NOT_ALLOWED": 405,
    "BALANCE_LIMIT_EXCEEDED": 409,
    "OUT_OF_STOCK": 409,
    "PRODUCT_NOT_ON_SALE": 409,  # issue 27: suspended, or outside its sale window
    "PURCHASE_LIMIT_EXCEEDED": 409,  # issue 27: past the product's max_per_user
    "COUPON_NOT_ACTIVE": 409,
    "COUPON_ALREADY_ISSUED": 409,
    "COUPON_SOLD_OUT": 409,
    "COUPON_NOT_USABLE": 409,
    "INSUFFICIENT_BALANCE": 409,
    "ORDER_NOT_CANCELLABLE": 409,
    "ORDER_NOT_PAYABLE": 409,
    "CART_EMPTY": 409,
    "IDEMPOTENCY_KEY_IN_FLIGHT": 409,
    "REQUEST_TIMEOUT": 408,  # the transport's: a request that stopped arriving
    "PAYLOAD_TOO_LARGE": 413,
    "HEADERS_TOO_LARGE": 431,  # the transport's: too many or too large header fields
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


# What names a server in an error's words: a URL, an IPv4 or bracketed IPv6 address, a
# host:port. A 5xx detail is the only one made from words that are not ours (a driver's,
# a store's), so it is scrubbed of these; the log keeps them.
_INTERNALS = re.compile(r"[a-z][a-z0-9+.-]*://\S+|\[[0-9a-fA-F:.]+\](?::\d+)?"
                        r"|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\b[\w.-]+:\d{2,5}\b")
UNEXPECTED = "the server failed; this is a bug"


def public_detail(detail: str) -> str:
    """``detail`` without the hosts, addresses and URLs it may name (for a 5xx answer)."""
    return _INTERNALS.sub("(an internal server)", detail)


def _from_engine(exc: EngineError) -> Answer:
    headers = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s else None
    if exc.code not in STATUS:  # a script answered a code we do not know: a bug
        log.error("engine answered an unknown code %s: %s", exc.code, exc.detail)
        return problem("INTERNAL_ERROR", UNEXPECTED)
    if STATUS[exc.code] >= 500:
        log.warning("answered %s: %s", exc.code, exc.detail)
        return problem(exc.code, public_detail(exc.detail), context=exc.context,
                       headers=headers)
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
        if status != 503:  # a bug: its words stay in the log
            log.error("server error %s: %s", status, exc.detail, exc_info=exc)
            return problem("INTERNAL_ERROR", UNEXPECTED, status)
        return problem("SERVICE_UNAVAILABLE", public_detail(str(exc.detail)), status)
    return problem(CODE_OF_STATUS.get(status, f"HTTP_{status}"), _http_detail(request, exc), status,
                   headers=dict(exc.headers or {}) or None)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Answer:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem("INTERNAL_ERROR", UNEXPECTED)


def handle(request: Request[Any, Any, Any], exc: Exception) -> Answer:
    """Litestar's exception handler for every exception: the problem answer."""
    if isinstance(exc, EngineError):
        return _from_engine(exc)
    if isinstance(exc, HTTPException):
        return _from_http(request, exc)
    return _unexpected(request, exc)
