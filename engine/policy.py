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
    # Outside the contract, so the engine's own defaults: records a user (or admin) may
    # hold at once (0: no bound); writes a user may make a second, in bursts of
    # ``rate_limit_burst`` (0: no limit, the engine's default; the settings turn it on).
    idempotency_max_per_user: int = 1_000
    rate_limit_per_s: float = 0.0
    rate_limit_burst: int = 40
    top_window_hours: int = 72
    top_size: int = 5
    # How long a deferred order (issue 28) holds its units unpaid, s.
    payment_timeout_s: int = 600


class Idempotency(msgspec.Struct):
    """An Idempotency-Key and the fingerprint (method, path, body) of the request it came
    with. The engine sets ``replayed`` on every call that takes it: whether the answer (or
    the refusal raised) is the key's recorded one, which the API marks
    ``Idempotent-Replayed: true`` and does not count again."""

    key: str
    fingerprint: str
    replayed: bool = False
