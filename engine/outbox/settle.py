"""Settling: Redis keeps the live working set and a recent tail; Postgres the history.

Every order, history line and issued coupon would otherwise stay in Redis forever, about
a kilobyte an order. Once the Postgres writer has committed a batch it appends a record of
what the batch touched (:func:`record`, :meth:`Settler.committed`); once a record is older
than the retention, ``engine/lua/settle.lua`` drops those orders, history lines and used
or expired issued coupons from Redis, unless they changed since, and raises each user's
floor so that reads know where Postgres takes over (``engine/archive.py``). Idle carts
leave too, their floor's ``k`` kept as the marker that Postgres holds them. What decides
an order stays: balances, stock, coupon counters and holders, usable coupons; a settled
order comes back into Redis to be cancelled, a settled cart on its next read or write.

Synchronous redis-py: the Postgres writer, a worker process, calls it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import redis

from engine import keys
from engine.outbox import OutboxGone
from engine.outbox.events import (
    AnyEvent,
    BalanceCharged,
    CartUpdated,
    CouponIssued,
    OrderCancelled,
    OrderExpired,
    OrderPaid,
)
from engine.scripts import load_scripts, script_keys

MIN_RETENTION_S = 1.0  # settle.lua's own floor; minutes are what production wants
# Things a settle.lua call drops at most, so that no call holds Redis long: each costs a
# handful of commands (~10 µs); a batch of 1,000 orders in one call held it ~0.7 s.
CHUNK = 200
PIPELINED = 8  # settle.lua calls sent in one round trip
IDLE_S = 0.5  # how often a settler with nothing due looks again
log = logging.getLogger("rushorder.settle")
_ENCODER = msgspec.json.Encoder()


class Record(msgspec.Struct, frozen=True):
    """What one committed batch touched, up to its last outbox entry; ids as strings."""

    entry: str
    orders: list[tuple[str, str]]  # (order id, user)
    lines: list[tuple[str, str]]  # (user, highest history line id)
    coupons: list[tuple[str, str]]  # (issued coupon id, user)
    carts: list[str] = []  # users whose cart changed


class Settled(msgspec.Struct, frozen=True):
    """What one settle.lua call dropped, and how many records wait."""

    records: int
    orders: int
    lines: int
    coupons: int
    left: int
    carts: int = 0


def record(last_entry: str, events: Iterable[AnyEvent]) -> Record:
    """The record of a batch of events whose last outbox entry is ``last_entry``. A
    deferred order awaiting payment (order.pending, issue 28) is never named: it stays in
    Redis until paid, cancelled or expired, and may leave once that is committed (an
    expired order is named by its event, as a cancelled one)."""
    orders: dict[str, str] = {}
    lines: dict[int, int] = {}
    coupons: dict[str, str] = {}
    carts: dict[str, None] = {}
    for event in events:
        if isinstance(event, CartUpdated):
            carts[str(event.user_id)] = None
            continue
        if isinstance(event, OrderPaid | OrderCancelled):
            order = event.order
            orders[order.id] = str(order.user_id)
            if order.issued_coupon_id is not None:
                coupons[str(order.issued_coupon_id)] = str(order.user_id)
            user, line = order.user_id, event.history
        elif isinstance(event, OrderExpired):
            orders[event.order.id] = str(event.order.user_id)
            continue
        elif isinstance(event, BalanceCharged):
            user, line = event.user_id, event.history
        elif isinstance(event, CouponIssued):
            coupons[str(event.issued.id)] = str(event.issued.user_id)
            continue
        else:
            continue
        if line is not None:
            lines[user] = max(line.id, lines.get(user, 0))
    return Record(entry=last_entry, orders=list(orders.items()),
                  lines=[(str(u), str(h)) for u, h in lines.items()],
                  coupons=list(coupons.items()), carts=list(carts))


def chunks(made: Record) -> list[Record]:
    """``made`` cut into records of at most CHUNK orders, lines, coupons and carts each."""
    things: list[tuple[str, tuple[str, str] | str]] = [
        *(("orders", o) for o in made.orders), *(("lines", x) for x in made.lines),
        *(("coupons", c) for c in made.coupons), *(("carts", u) for u in made.carts)]
    parts = []
    for start in range(0, len(things), CHUNK):
        part: dict[str, list[Any]] = {"orders": [], "lines": [], "coupons": [], "carts": []}
        for kind, thing in things[start:start + CHUNK]:
            part[kind].append(thing)
        parts.append(Record(entry=made.entry, **part))
    return parts


class Settler:
    """The writer's side of settling, on one Redis client that does not decode: each user
    group keeps its own records (its orders, lines and coupons are in its slot)."""

    def __init__(self, client: redis.Redis, retention_s: float, layout: keys.Layout) -> None:
        self.client = client
        self.retention_ms = int(max(retention_s, MIN_RETENTION_S) * 1000)
        self.layout = layout
        self._script = client.register_script(load_scripts()["settle"].source)

    def committed(self, group: keys.Group, made: Record) -> None:
        """A batch of ``group``'s entries is in Postgres: its record waits out the retention
        (in parts of at most CHUNK things, one settle.lua call each)."""
        parts = [_ENCODER.encode(part) for part in chunks(made)]
        if parts:
            self.client.rpush(group.settle, *parts)

    def settle(self, calls: int = PIPELINED) -> tuple[Settled, bool]:
        """Drop what the records older than the retention name: ``calls`` settle.lua calls
        of one record each for every group, sent in one round trip (each call short, the
        round trip once). The totals, and whether some group may have more due."""
        pipe = self.client.pipeline(transaction=False)
        for g in self.layout.all:
            for _ in range(calls):
                self._script(keys=_keys(g),
                             args=[self.retention_ms, 1], client=pipe)
        answers = [_answer(code, payload) for code, payload in pipe.execute()]
        per_group = [answers[i:i + calls] for i in range(0, len(answers), calls)]
        more = any(sum(a.records for a in group) >= calls for group in per_group)
        return Settled(records=sum(a.records for a in answers),
                       orders=sum(a.orders for a in answers),
                       lines=sum(a.lines for a in answers),
                       coupons=sum(a.coupons for a in answers),
                       left=sum(group[-1].left for group in per_group),
                       carts=sum(a.carts for a in answers)), more

    def settle_all(self, calls: int = PIPELINED) -> Settled:
        """Settle until no record old enough is left; the totals."""
        records = orders = lines = coupons = carts = 0
        while True:
            done, more = self.settle(calls)
            records, orders = records + done.records, orders + done.orders
            lines, coupons = lines + done.lines, coupons + done.coupons
            carts += done.carts
            if not more:
                return Settled(records=records, orders=orders, lines=lines,
                               coupons=coupons, left=done.left, carts=carts)

    def run(self, until: float, *stops: threading.Event, idle_s: float = IDLE_S) -> None:
        """Settle what falls due until the ``time.monotonic()`` deadline or one of ``stops``
        is set, on a thread of its own beside the Postgres writer: settling must never hold
        up writing (when it ran between batches, a busy Redis' round trips kept the writer
        settling for seconds while the outbox grew). Redis errors are retried; a Redis that
        lost its state ends it (the writer finds out on its own)."""
        while not any(s.is_set() for s in stops) and time.monotonic() < until:
            try:
                if not self.settle()[1]:
                    stops[0].wait(idle_s)
            except OutboxGone:
                return
            except redis.RedisError as exc:
                log.warning("settler: %s: %s; retrying", type(exc).__name__, exc)
                stops[0].wait(idle_s)


def _keys(g: keys.Group) -> list[str]:
    """settle.lua's keys for group ``g``."""
    return script_keys("settle", live=g.live, settle=g.settle, order_prefix=g.order_prefix,
                       icoupon_prefix=g.issued_coupon_prefix, history_prefix=g.history_prefix,
                       user_orders_prefix=g.user_orders_prefix,
                       user_coupons_prefix=g.user_coupons_prefix, floor_prefix=g.floor_prefix,
                       retention=g.retention, cart_prefix=g.cart_prefix)


def _answer(code: bytes, payload: bytes) -> Settled:
    if code != b"OK":  # STATE_MISSING: Redis lost its data, and its outbox with it
        raise OutboxGone(f"settle.lua: {code.decode()}: {payload.decode()}")
    return msgspec.json.decode(payload, type=Settled)
