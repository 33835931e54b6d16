"""The Idempotency-Key header: checked here, honoured atomically by the engine's scripts.

A replay (of a success or of a kept refusal) is sent with ``Idempotent-Replayed: true``,
Stripe's header, so a client and an operator can tell it from a first answer.
"""

from __future__ import annotations

from collections.abc import Awaitable
from hashlib import blake2b
from typing import Any, TypeVar, cast

from litestar import Request

from api import problems
from api.answers import Answer
from api.inbound import header
from engine.errors import EngineError, ValidationFailed
from engine.limits import IDEMPOTENCY_KEY_LENGTH
from engine.policy import Idempotency

T = TypeVar("T")
HEADER = b"idempotency-key"
REPLAYED = {"idempotent-replayed": "true"}


def _printable_ascii(raw: bytes) -> bool:
    return len(raw) in IDEMPOTENCY_KEY_LENGTH and raw.isascii() and raw.decode().isprintable()


def fingerprint(request: Request[Any, Any, Any], body: bytes) -> str:
    """What makes two requests "the same": method, path and the raw body."""
    scope = request.scope
    digest = blake2b(digest_size=16)
    digest.update(f"{scope['method']} {scope['path']}\n".encode("utf-8", "surrogatepass"))
    digest.update(body)
    return digest.hexdigest()


def idempotency_of(request: Request[Any, Any, Any], body: bytes) -> Idempotency | None:
    """The request's Idempotency-Key with its fingerprint; None when no key was sent."""
    raw = header(request, HEADER)
    if raw is None:
        return None
    if not _printable_ascii(raw):
        raise ValidationFailed(f"Idempotency-Key: {IDEMPOTENCY_KEY_LENGTH.low} to "
                               f"{IDEMPOTENCY_KEY_LENGTH.high} printable ASCII characters",
                               field="Idempotency-Key")
    return Idempotency(raw.decode(), fingerprint(request, body))


def replayed(idem: Idempotency | None) -> bool:
    """Whether the engine answered the request from its key's record."""
    return idem is not None and idem.replayed


async def answered(idem: Idempotency | None, running: Awaitable[T], status_code: int) -> T:
    """The engine's answer to a write; a replay is sent marked ``Idempotent-Replayed``
    (its refusal too, as the problem it was). Litestar sends an Answer a handler returns
    as it is, so the handler's annotation still documents the usual answer."""
    try:
        result = await running
    except EngineError as exc:
        if not replayed(idem):
            raise
        return cast(T, problems.problem(exc.code, exc.detail, context=exc.context,
                                        headers=REPLAYED))
    if not replayed(idem):
        return result
    return cast(T, Answer(result, status_code=status_code, headers=REPLAYED))
