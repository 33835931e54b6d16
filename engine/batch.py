"""Orders placed in one event-loop tick leave as one ``place_orders`` call.

The connection already sends a tick's commands in one write; this goes one step further
for the hot path and packs the tick's orders into a single EVALSHA, because inside Redis
each call has a cost of its own (parsing, building KEYS/ARGV, running the chunk, reading
the clock, rolling the sales window, reading and writing the id counters) that a batch
pays once. Each order is still checked and written all or nothing on its own, exactly as
if it had been called alone: a batch only shares the call, never an outcome.

Measured with load/bench_engine.py (64 callers, memory-only Valkey): one EVALSHA per
order 14.9k orders/s; one call per tick 20.2k/s, Redis idle while Python handled a whole
tick of replies; full batches written at once 23k/s (8, 16 and 32 orders a batch alike,
50 lower); with the counters and sales written once per batch 26.9k/s.

A call writes one user group's counters, sales and outbox (engine/keys.py), so a batch
holds the orders of one group: each group has its batch, and every group's call of a tick
leaves in the same write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine import keys
from engine.connection import Connection, ReplyError, refusal
from engine.policy import Policy
from engine.scripts import Script, script_keys

_ERR = b"ERR"


@dataclass
class OrderCall:
    """One order as place_orders.lua takes it. ``keys``: its ``ORDER_K`` keys, then each
    line's product and option keys (``LINE_K``); ``lines`` are (product id, quantity,
    option id or None); a SHORT answer changes ``flags`` (one a line) and ``take_token``
    before the order is sent again."""

    keys: list[str]
    user_id: int
    issued_coupon_id: int | None
    fingerprint: str
    lines: Sequence[tuple[int, int, int | None]]
    flags: list[str] = field(default_factory=list)
    take_token: bool = True  # take a token of the user's write rate (the first call only)
    deferred: bool = False  # "payment": "DEFERRED": held PENDING_PAYMENT (issue 28)

    def __post_init__(self) -> None:
        if not self.flags:
            self.flags = [""] * len(self.lines)

    def args(self) -> list[Any]:
        """The order's arguments: user, coupon, fingerprint, token, deferred, line count,
        then per line a product id, a quantity, an option id ('' for none) and its flag (order_lines
        in _lib.lua)."""
        coupon = "" if self.issued_coupon_id is None else self.issued_coupon_id
        out: list[Any] = [self.user_id, coupon, self.fingerprint,
                          "1" if self.take_token else "", "1" if self.deferred else "",
                          len(self.lines)]
        for (product_id, quantity, option_id), flag in zip(self.lines, self.flags,
                                                            strict=True):
            out += (product_id, quantity, "" if option_id is None else option_id, flag)
        return out


# (the order, the caller's future)
_Pending = tuple[OrderCall, "asyncio.Future[list[bytes]]"]


class OrderBatcher:
    """Collects each group's orders and sends them ``max_orders`` to a call.

    A full batch is written at once, while the tick's other callers are still arriving, so
    Redis runs it while Python prepares the next one; what is left goes when the tick ends.
    A caller gets its own order's ``[code, payload, replayed]``; if the call fails as a whole (Redis
    lost, refused the script) every caller of that batch gets the error, and if only its
    order raised inside Redis, only that caller gets a :class:`ReplyError`.
    """

    def __init__(self, conn: Connection, script: Script, policy: Policy, layout: keys.Layout,
                 max_orders: int = 16) -> None:
        self._conn = conn
        self._script = script
        self._ttl, self._hours = str(policy.idempotency_ttl_s), str(policy.top_window_hours)
        # The guards' arguments (guard in _lib.lua), the same for every order of a call.
        self._guards = [policy.idempotency_max_per_user, policy.rate_limit_per_s,
                        policy.rate_limit_burst]
        self._groups = str(layout.groups)
        self._timeout_ms = str(policy.payment_timeout_s * 1000)
        self._max = max_orders
        self._pending: dict[keys.Group, list[_Pending]] = {}
        self.calls = 0  # place_orders calls sent (bench_engine prints orders per call)

    async def place(self, group: keys.Group, order: OrderCall) -> list[bytes]:
        """One order's ``[code, payload, replayed]``; every key of ``order`` but the
        products' is of ``group``."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush_all)
        fut: asyncio.Future[list[bytes]] = loop.create_future()
        pending = self._pending.setdefault(group, [])
        pending.append((order, fut))
        if len(pending) >= self._max:
            self._flush(group)
        reply = await fut
        if reply[0] == _ERR:  # this order raised inside Redis (pcall), alone of its batch
            raise refusal(ReplyError(reply[1].decode(errors="replace")))
        return reply

    def layout(self, group: keys.Group,
               orders: Sequence[OrderCall]) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of one call placing ``orders`` of ``group``'s users."""
        keys_ = script_keys("place_orders", live=group.live, seq=group.seq,
                            order_prefix=group.order_prefix,
                            sales_hours=group.sales_hour_prefix,
                            sales_window=group.sales_window, sales_rolled=group.sales_rolled,
                            outbox=group.outbox, pending=group.pending,
                            coupon_prefix=group.coupon_prefix)
        args: list[Any] = [self._ttl, self._hours, group.index, self._groups, len(orders),
                           *self._guards, self._timeout_ms]
        for order in orders:
            keys_ += order.keys
            args += order.args()
        return keys_, args

    def _flush_all(self) -> None:
        """The tick's end: every group's batch, in one write (the connection's)."""
        groups = list(self._pending)
        for i, group in enumerate(groups):
            self._flush(group, now=i == len(groups) - 1)

    def _flush(self, group: keys.Group, now: bool = True) -> None:
        # A caller cancelled before its batch left (a client gone) has no order placed.
        batch = [pending for pending in self._pending.pop(group, []) if not pending[1].done()]
        if not batch:
            return
        keys_, args = self.layout(group, [order for order, _ in batch])
        self.calls += 1
        sent = self._script.send(self._conn, keys_, args, now=now)
        sent.add_done_callback(lambda reply: _settle(batch, reply))


def _settle(batch: list[_Pending], sent: asyncio.Future[Any]) -> None:
    """Every caller of the batch gets its order's reply, or what happened to the call."""
    if sent.cancelled():
        _fail(batch, asyncio.CancelledError())
    elif (exc := sent.exception()) is not None:
        _fail(batch, exc)
    elif isinstance(reply := sent.result(), ReplyError):
        _fail(batch, refusal(reply))
    else:
        _deliver(batch, reply)


def _deliver(batch: list[_Pending], flat: list[bytes]) -> None:
    for i, (*_, fut) in enumerate(batch):
        if not fut.done():
            fut.set_result(flat[3 * i:3 * i + 3])


def _fail(batch: list[_Pending], error: BaseException) -> None:
    """Every caller of the batch learns what happened to its call."""
    for *_, fut in batch:
        if fut.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            fut.cancel()
        else:
            fut.set_exception(error)
