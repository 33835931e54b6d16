"""The scripts' replies, decoded in one place.

Every script answers ``{code, payload}``: ``OK`` and a JSON payload, or a contract code
(``OUT_OF_STOCK``...) and ``{"detail", "context"}``, which :func:`refuse` raises as the
domain error of that code (engine/errors.py). A few codes are steps of a conversation
with the engine rather than outcomes (``SHORT``, ``ARCHIVED``, ``ABSENT``...): the caller
looks at the code first and decodes their payloads with :func:`short` and :func:`asked`.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

import msgspec

from engine.errors import raise_for
from engine.policy import Idempotency

T = TypeVar("T")

_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}
_ERROR = msgspec.json.Decoder(dict[str, Any])
_ASKED = msgspec.json.Decoder(dict[str, int])
_ENCODER = msgspec.json.Encoder()


class Short(msgspec.Struct, frozen=True):
    """A SHORT answer: the group holds ``have`` of the ``quantity`` units of a product
    (or coupon) ``id`` that the request needs; of an option when ``kind`` is ``"o"``
    (``product_id`` then names its product)."""

    id: int
    quantity: int
    have: int
    kind: str = "p"
    product_id: int = 0


_SHORT = msgspec.json.Decoder(Short)


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    if kind not in _DECODERS:
        _DECODERS[kind] = msgspec.json.Decoder(kind)
    return _DECODERS[kind]


def refuse(code: bytes, payload: bytes) -> NoReturn:
    """Raise the domain error a script answered with (its code and error payload)."""
    error = _ERROR.decode(payload)
    raise_for(code.decode(), error.get("detail", ""), error.get("context") or {})
    raise AssertionError("unreachable")


def ok(reply: list[bytes]) -> bytes:
    """An OK reply's raw payload, or the domain error the script answered with, raised."""
    if reply[0] != b"OK":
        refuse(reply[0], reply[1])
    return reply[1]


def answer(reply: list[bytes], kind: type[T]) -> T:
    """Decode an OK payload, or raise the domain error the script answered with."""
    decoded: T = _decoder(kind).decode(ok(reply))
    return decoded


def keyed(reply: list[Any], kind: type[T], idem: Idempotency | None) -> T:
    """:func:`answer` for a write that took an Idempotency-Key: first tell the caller
    whether the answer is the key's replay (a third element of the reply, 1)."""
    if idem is not None:
        idem.replayed = len(reply) > 2 and reply[2] == 1
    return answer(reply, kind)


def short_of(reply: list[bytes]) -> Short:
    """A SHORT answer's payload."""
    return _SHORT.decode(reply[1])


def asked(reply: list[bytes], field: str = "asked_ms") -> int:
    """A value of an ARCHIVED / ARCHIVED_COUPON answer's payload."""
    return _ASKED.decode(reply[1])[field]


def detail(code: bytes, why: str) -> list[bytes]:
    """A reply of ``code`` whose error payload says ``why``."""
    return [code, _ENCODER.encode({"detail": why})]
