"""A user's prepaid balance: read it, charge it, page through its history.

The balance is one string per user in its group's slot (``<g>:bal:<user>``); every change
writes a history line and an outbox event in the same script (charge.lua; an order's
payment and a cancel's refund are in orders.py).
"""

from __future__ import annotations

import asyncio

import msgspec

from engine.core import (
    NO_STATE,
    Core,
    below,
    bound,
    check_user,
    guards,
    idem_keys,
    list_of,
    to_page,
)
from engine.errors import StateMissing
from engine.models import Balance, Charge, HistoryLine, Page
from engine.policy import Idempotency
from engine.replies import answer, keyed


class HistoryTail(msgspec.Struct, frozen=True):
    """list_history.lua's lines and floor."""

    floor: int
    lines: list[HistoryLine]


class BalanceCommands(Core):
    """The balance's use cases (a mixin of :class:`~engine.Engine`)."""

    async def balance(self, user_id: int) -> Balance:
        """The user's balance (0 for a user never seen)."""
        check_user(user_id)
        g = self.layout.of(user_id)
        live, raw = await asyncio.gather(self.conn.execute("EXISTS", g.live),
                                         self.conn.execute("GET", g.balance(user_id)))
        if not live:
            raise StateMissing(NO_STATE)
        return Balance(user_id=user_id, balance=int(raw or 0))

    async def charge(self, user_id: int, amount: int, idem: Idempotency | None = None) -> Charge:
        """Add ``amount`` won to the balance, within the charge policy and the cap."""
        p = self.policy
        g, ids = self._group(user_id)
        idem_key, fp = idem_keys(g, user_id, idem)
        reply = await self._run(
            "charge",
            [user_id, amount, fp, p.idempotency_ttl_s,
             p.charge_min, p.charge_max, p.charge_unit, p.balance_max, *ids, *self._limits()],
            live=g.live, balance=g.balance(user_id), history=g.history(user_id), seq=g.seq,
            outbox=g.outbox, idem=idem_key, **guards(g, user_id),
        )
        return keyed(reply, Charge, idem)

    async def history(
        self, user_id: int, limit: int = 20, cursor: str | None = None
    ) -> Page[HistoryLine]:
        """The user's balance history, newest first: Redis' tail, then what only the
        durable record holds (lines never change, so either copy will do)."""
        at = list_of(user_id, limit, cursor)
        g = self.layout.of(user_id)
        tail = answer(await self._run("list_history", [at, limit], live=g.live,
                                       history=g.history(user_id), floor=g.floor(user_id)),
                       HistoryTail)
        items = tail.lines
        if tail.floor and len(items) <= limit:  # Redis ran out below the cursor
            edge = below(items[-1].id if items else bound(at), tail.floor + 1)
            items = [*items, *await self.archive.history_below(user_id, edge,
                                                               limit + 1 - len(items))]
        return to_page(items, limit)
