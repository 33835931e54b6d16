"""The configurable business rules the scripts enforce, passed to them on every call.

The contract's fixed limits (lengths, ranges, line counts) are :mod:`engine.limits`.
"""

from __future__ import annotations

import msgspec

from engine.limits import MAX_ID as MAX_ID  # its home was here; kept importable


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Configurable rules, from the settings; defaults are the contract's (shared/API.md)."""

    charge_min: int = 1_000
    charge_max: int = 1_000_000
    charge_unit: int = 10
    balance_max: int = 10_000_000
    idempotency_ttl_s: int = 86_400
    top_window_hours: int = 72
    top_size: int = 5


class Idempotency(msgspec.Struct, frozen=True):
    """An Idempotency-Key and the fingerprint (method, path, body) of the request it came with."""

    key: str
    fingerprint: str
