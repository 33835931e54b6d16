"""Schemathesis hooks of tests/api/test_api_schema.py (loaded through SCHEMATHESIS_HOOKS).

Two rules of the contract that JSON Schema cannot state, applied to the cases schemathesis
means to be valid, so that they reach the business rules instead of a 400:

- an integer is written as one: JSON Schema's ``integer`` admits ``2.0``, and schemathesis
  sends such whole floats on purpose, but money is never a float here and the API's strict
  decoding refuses them;
- a coupon's ``valid_from`` comes before its ``valid_until``, both within 1970..9999 in
  UTC (what every store holds; a time with a large offset near either end leaves it).

And one choice: a coupon that has already ended is made to end a year from now (its start
kept). Generated times cluster around 2000, so otherwise every coupon would be over before
it is made, and issuing one (then ordering with it) could only ever be COUPON_NOT_ACTIVE;
coupons that start in the future still are.

Cases meant to be invalid are sent as generated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis
from schemathesis.core import NOT_SET

from engine.limits import FIRST_MOMENT as FIRST
from engine.limits import LAST_MOMENT as LAST


def _integral(value: Any) -> Any:
    """``value`` with every whole float, however deep, written as the integer it is."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _window(body: Any) -> Any:
    """A coupon body with its window in order and not over yet (see the module's docstring)."""
    if not isinstance(body, dict):
        return body
    start, end = _moment(body.get("valid_from")), _moment(body.get("valid_until"))
    if start is None or end is None or start.tzinfo is None or end.tzinfo is None:
        return body
    start, end = min(start, end), max(start, end)
    start, end = max(start, FIRST), min(end, LAST)
    now = datetime.now(UTC)
    if end <= now:
        end = now + timedelta(days=365)
    start = min(start, end - timedelta(seconds=1))
    return {**body, "valid_from": start.isoformat(), "valid_until": end.isoformat()}


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """Write the valid cases' bodies as a client that knows those two rules would."""
    if case.meta is None or not case.meta.generation.mode.is_positive or case.body is NOT_SET:
        return
    case.body = _window(_integral(case.body))
