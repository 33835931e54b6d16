"""The contract's fixed limits (shared/API.md), each defined once.

The engine checks every command against these itself, whoever calls it; the API derives
its msgspec bounds, and through them its OpenAPI document, from the same values, so a
limit changed here changes everywhere. What a deployment may configure (the charge
policy, the balance cap, windows and TTLs) is :class:`engine.policy.Policy` instead.
"""

from __future__ import annotations

from collections.abc import Sized
from dataclasses import dataclass

from engine.errors import ValidationFailed
from engine.models import DiscountType


@dataclass(frozen=True, slots=True)
class Bounds:
    """An inclusive range: of an integer, or of the length of a string or list."""

    low: int
    high: int

    def __contains__(self, value: object) -> bool:
        """Whether ``value`` is an integer (not a bool, not a float) within the bounds."""
        return type(value) is int and self.low <= value <= self.high

    def check(self, value: int, field: str) -> None:
        """Refuse ``value`` unless it is an integer within the bounds, naming ``field``."""
        if value not in self:
            raise ValidationFailed(
                f"{field}: must be an integer from {self.low} to {self.high}", field=field)

    def check_length(self, value: Sized, field: str, unit: str) -> None:
        """Refuse ``value`` unless its length is within the bounds, naming ``field``."""
        if not self.low <= len(value) <= self.high:
            raise ValidationFailed(f"{field}: {self.low} to {self.high} {unit}", field=field)


# The largest id a script can carry: Lua prints numbers with 14 significant digits.
MAX_ID = 10**14 - 1
ID = Bounds(1, MAX_ID)
PAGE_SIZE = Bounds(1, 100)
IDEMPOTENCY_KEY_LENGTH = Bounds(1, 255)  # of printable ASCII

NAME_LENGTH = Bounds(1, 200)  # of products and coupons
PRICE = Bounds(1, 100_000_000)
STOCK = Bounds(0, 1_000_000_000)
STOCK_DELTA = Bounds(-STOCK.high, STOCK.high)

ORDER_LINES = Bounds(1, 50)
QUANTITY = Bounds(1, 1_000)  # of an order line
CART_QUANTITY = Bounds(1, 1_000)  # of a cart line (0 is no removal: DELETE removes)
CART_LINES = 50  # the most products one cart holds

COUPON_QUANTITY = Bounds(1, 10_000_000)
DISCOUNT: dict[DiscountType, Bounds] = {
    "FIXED": Bounds(1, 10_000_000),  # won
    "PERCENT": Bounds(1, 100),
}
DISCOUNT_VALUE = Bounds(min(b.low for b in DISCOUNT.values()),
                        max(b.high for b in DISCOUNT.values()))  # whatever the type


def check_idempotency_key(key: str) -> None:
    """Refuse a key that is not 1 to 255 printable ASCII characters."""
    if not (len(key) in IDEMPOTENCY_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise ValidationFailed(
            f"Idempotency-Key: {IDEMPOTENCY_KEY_LENGTH.low} to {IDEMPOTENCY_KEY_LENGTH.high} "
            "printable ASCII characters", field="Idempotency-Key")
