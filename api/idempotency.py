"""The Idempotency-Key header: checked here, honoured atomically by the engine's scripts."""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from litestar import Request

from api.inbound import header
from engine.errors import ValidationFailed
from engine.limits import IDEMPOTENCY_KEY_LENGTH
from engine.policy import Idempotency

HEADER = b"idempotency-key"


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
