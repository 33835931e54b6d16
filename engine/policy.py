"""The business limits the scripts enforce, passed to them on every call."""

from __future__ import annotations

import msgspec

# The largest id a script can carry: Lua prints numbers with 14 significant digits.
MAX_ID = 10**14 - 1


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Configurable rules; defaults are the contract's (shared/API.md)."""

    charge_min: int = 1_000
    charge_max: int = 1_000_000
    charge_unit: int = 10
    balance_max: int = 10_000_000
    idempotency_ttl_s: int = 86_400
    top_window_hours: int = 72
    top_size: int = 5
    cart_max_lines: int = 50
    order_max_lines: int = 50
    max_quantity: int = 1_000


class Idempotency(msgspec.Struct, frozen=True):
    """An Idempotency-Key and the fingerprint (method, path, body) of the request it came with."""

    key: str
    fingerprint: str
