"""The contract's fixed limits (shared/API.md), each defined once.

The engine checks every command against these itself, whoever calls it; the API derives
its msgspec bounds, and through them its OpenAPI document, from the same values, so a
limit changed here changes everywhere. What a deployment may configure (the charge
policy, the balance cap, windows and TTLs) is :class:`engine.policy.Policy` instead.
"""

from __future__ import annotations

import re
from collections.abc import Sized
from dataclasses import dataclass
from datetime import UTC, datetime

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
ID_DIGITS = len(str(MAX_ID))
# A cursor is the last id of a page, or any id below which a client wants the next page.
CURSOR = Bounds(0, MAX_ID)
PAGE_SIZE = Bounds(1, 100)
IDEMPOTENCY_KEY_LENGTH = Bounds(1, 255)  # of printable ASCII

NAME_LENGTH = Bounds(1, 200)  # of products and coupons
PRICE = Bounds(1, 100_000_000)
STOCK = Bounds(0, 1_000_000_000)
STOCK_DELTA = Bounds(-STOCK.high, STOCK.high)

# Issue 27: a product's options, sale limit and category.
OPTIONS = Bounds(0, 100)  # options per product
EXTRA_PRICE = Bounds(0, PRICE.high)  # added to the product's price
MAX_PER_USER = Bounds(1, 1_000)  # units of a product one user may hold in paid orders
CATEGORY_LENGTH = Bounds(1, 50)  # characters

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
# Issue 28: a coupon's rules. An amount of an order's total: the largest total there is
# (each of 50 lines of 1,000 units at the highest price and extra price), which a script
# still prints as an integer.
ORDER_AMOUNT = Bounds(1, (PRICE.high + EXTRA_PRICE.high) * QUANTITY.high * ORDER_LINES.high)
DESCRIPTION_LENGTH = Bounds(0, 1_000)  # characters of a coupon's description


def check_idempotency_key(key: str) -> None:
    """Refuse a key that is not 1 to 255 printable ASCII characters."""
    if not (len(key) in IDEMPOTENCY_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise ValidationFailed(
            f"Idempotency-Key: {IDEMPOTENCY_KEY_LENGTH.low} to {IDEMPOTENCY_KEY_LENGTH.high} "
            "printable ASCII characters", field="Idempotency-Key")


# C0 and C1 control characters (NUL, tab, newline, DEL, ...) and lone surrogates: a name
# holding one breaks a terminal, a log line or a CSV, and Postgres refuses a NUL outright,
# which would stop the write-behind at that entry (issue 25).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same rule as a JSON Schema pattern for the API's documents (``$`` is only the end
# of the text there; msgspec's ``re.search`` would also let a final newline through,
# which is why the API checks with :func:`check_text` too).
PLAIN_TEXT_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"


def check_text(value: str, field: str) -> None:
    """Refuse text holding a control character (C0, DEL, C1) or a lone surrogate."""
    if _CONTROL.search(value):
        raise ValidationFailed(f"{field}: must not hold control characters (NUL, tab, "
                               "newline, ...)", field=field)


def check_name(value: str, field: str = "name") -> None:
    """A product's or coupon's name: 1 to 200 characters, none of them a control."""
    NAME_LENGTH.check_length(value, field, "characters")
    check_text(value, field)


def check_category(value: str, field: str = "category") -> None:
    """A product's category: 1 to 50 characters, none of them a control."""
    CATEGORY_LENGTH.check_length(value, field, "characters")
    check_text(value, field)


# The times every store holds: Python's datetime ends with year 9999, the scripts write
# them as four-digit years, Postgres' timestamptz holds both ends; before 1970 is no time
# a coupon can mean. Both in UTC, whatever offset a client wrote.
FIRST_MOMENT = datetime(1970, 1, 1, tzinfo=UTC)
LAST_MOMENT = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)


def check_moment(moment: datetime, field: str) -> None:
    """Refuse a time without an offset, or outside 1970-01-01 .. 9999-12-31 in UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValidationFailed(f"{field}: must carry a UTC offset", field=field)
    if not FIRST_MOMENT <= moment <= LAST_MOMENT:
        raise ValidationFailed(f"{field}: must be from {FIRST_MOMENT:%Y-%m-%d} to "
                               f"{LAST_MOMENT:%Y-%m-%d} in UTC", field=field)


def digits(value: str, field: str, bounds: Bounds, what: str) -> int:
    """An integer written in ASCII digits only (``str.isdigit`` also takes '²', '١', '５')
    and within ``bounds``, else a VALIDATION_ERROR naming ``field``."""
    if (value.isascii() and value.isdigit() and len(value) <= len(str(bounds.high))
            and int(value) in bounds):
        return int(value)
    raise ValidationFailed(f"{field}: {what}", field=field)
