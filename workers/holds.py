"""What a set-aside outbox entry holds back: the later entries that depend on it.

When the Postgres writer sets an entry aside (``persistence/setaside.py``), entries after
it may depend on it: the cancel of an order whose payment was set aside would update
nothing and be counted as applied, and settling would then drop from Redis an order
Postgres never got. So every entry *needs* some things and *owns* some of them (its user;
a catalog entry its product or coupon): while a set-aside entry owns something, every
later entry that needs it is set aside behind it, in stream order, and owns its own
things in turn. A retry (``workers/retry.py``) applies them in the same order.

Per user and per catalog item, not per stream: everybody else's entries keep being
written. An entry that cannot be decoded owns what its JSON plainly names (``user_id``
fields; the product or coupon of a catalog event, an option's product), nothing if it is
not JSON at all. An option is held as its product: orders name both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from engine.outbox.events import (
    AnyEvent,
    BalanceCharged,
    CartUpdated,
    CouponCreated,
    CouponIssued,
    OptionCreated,
    OptionUpdated,
    OrderCancelled,
    OrderExpired,
    OrderPaid,
    OrderPending,
    ProductCreated,
    ProductUpdated,
)

Key = tuple[str, int]  # ("user" | "product" | "coupon", id)


def owns(event: AnyEvent) -> set[Key]:
    """What the event changes that later events of others may need."""
    if isinstance(event, BalanceCharged | CartUpdated):
        return {("user", event.user_id)}
    if isinstance(event, ProductCreated | ProductUpdated):
        return {("product", event.product.id)}
    if isinstance(event, OptionCreated | OptionUpdated):  # an option is its product's
        return {("product", event.product_id)}
    if isinstance(event, CouponCreated):
        return {("coupon", event.coupon.id)}
    if isinstance(event, CouponIssued):
        return {("user", event.issued.user_id)}
    return {("user", event.order.user_id)}  # OrderPaid | OrderCancelled | OrderPending...


def needs(event: AnyEvent) -> set[Key]:
    """What must be in Postgres before the event can be: what it owns, and what it names."""
    named: set[Key] = set()
    if isinstance(event, CouponIssued):
        named.add(("coupon", event.issued.coupon_id))
    elif isinstance(event, OrderPaid | OrderCancelled | OrderPending | OrderExpired):
        named |= {("product", line.product_id) for line in event.order.items}
    return owns(event) | named


def owns_raw(raw: bytes) -> set[Key]:
    """What an entry that does not decode as an event owns, as its JSON plainly says."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.MsgspecError:
        return set()
    if not isinstance(data, dict):
        return set()
    found = {("user", v) for v in _values_of(data, "user_id") if isinstance(v, int)}
    kind = str(data.get("type", ""))
    for prefix, field in (("product.", "product"), ("coupon.created", "coupon")):
        item = data.get(field)
        if kind.startswith(prefix) and isinstance(item, dict) and isinstance(item.get("id"), int):
            found.add((field, item["id"]))
    if kind.startswith("option.") and isinstance(data.get("product_id"), int):
        found.add(("product", data["product_id"]))
    return found


def _values_of(data: Any, name: str) -> Iterator[Any]:
    """Every value of a field called ``name`` anywhere in decoded JSON."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == name:
                yield value
            yield from _values_of(value, name)
    elif isinstance(data, list):
        for value in data:
            yield from _values_of(value, name)


def owned(event: AnyEvent | None, raw: bytes) -> set[Key]:
    """What an entry owns, decoded (``event``) or not (None)."""
    return owns(event) if event is not None else owns_raw(raw)


class Holds:
    """What the set-aside entries own: a later entry that needs some of it waits too."""

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self.keys = set(keys)

    def hold(self, keys: Iterable[Key]) -> None:
        """A set-aside entry owns these."""
        self.keys |= set(keys)

    def blocker(self, event: AnyEvent) -> Key | None:
        """Something the event needs that a set-aside entry owns (None: it may go)."""
        return next(iter(sorted(needs(event) & self.keys)), None) if self.keys else None

    def any_blocked(self, events: Iterable[AnyEvent]) -> bool:
        """Some event needs what a set-aside entry owns."""
        return bool(self.keys) and any(needs(event) & self.keys for event in events)


def describe(key: Key) -> str:
    """``user 7``, ``product 3``."""
    return f"{key[0]} {key[1]}"
