"""The engine: every read and write of rushorder's live state, as one script call each.

This is the only code that touches Redis state, and :class:`Engine` the one name callers
import. Its use cases live in modules of their own, each a mixin typed against
:class:`~engine.core.Core` (engine/balance.py, catalog.py, coupons.py, orders.py,
cart.py); this module is the facade that composes them and provides the core they share:
the shared pipelining :class:`~engine.connection.Connection`, the scripts, and one way to
call a script with its keys named (``keys``, ``engine/scripts.py``). Replies are decoded in
engine/replies.py. A user's request runs over its group's keys (``keys.Layout.of``); the
top 5 asks every group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from engine import keys, limits, state
from engine.allotments import ABSENT, Allotments, Kind
from engine.archive import Archive, NoArchive, Reader
from engine.balance import BalanceCommands
from engine.batch import OrderBatcher
from engine.cart import CartCommands
from engine.catalog import CatalogCommands
from engine.connection import Connection
from engine.core import NO_STATE, cursor_arg, to_page
from engine.coupons import CouponCommands
from engine.errors import EngineError, StateMissing
from engine.models import Page
from engine.ops import gauges
from engine.ops.console import Console
from engine.ops.gauges import Gauges
from engine.orders import OrderCommands
from engine.policy import Policy
from engine.replies import Short, answer, detail
from engine.scripts import Script, load_scripts, script_keys

log = logging.getLogger(__name__)


class Engine(OrderCommands, CatalogCommands, CouponCommands, BalanceCommands, CartCommands):
    """Typed async access to the scripts; one per process, shared by all its requests."""

    def __init__(self, redis_url: str, policy: Policy | None = None,
                 reply_timeout_s: float = 3.0, archive: Archive | None = None,
                 groups: int = keys.DEFAULT_GROUPS) -> None:
        self.policy = policy or Policy()
        self.archive = Reader(archive or NoArchive())
        self.layout = keys.layout(groups)
        self.conn = Connection(redis_url, reply_timeout_s=reply_timeout_s)
        self.scripts: dict[str, Script] = load_scripts()
        self.batches = OrderBatcher(self.conn, self.scripts["place_orders"], self.policy,
                                    self.layout)
        self.allotments = Allotments(self.conn, self.scripts, self.layout)
        self.short_orders = 0  # orders sent back SHORT at least once (bench_engine prints it)
        self.console = Console(self.conn, self.scripts)  # the operators' console (reads no state)

    # -- the core the use cases share (engine/core.py) ---------------------------------

    async def _run(self, name: str, args: list[Any], live: str = keys.LIVE,
                   **keys_: str) -> list[bytes]:
        """Call a script with its keys named as its ``K`` table names them, a live-state
        marker first (engine/state.py): the catalog's, or for a script over a group's
        keys that group's (``live``)."""
        reply: list[bytes] = await self.scripts[name](
            self.conn, script_keys(name, live=live, **keys_), args)
        return await self._why_missing(reply, live)

    async def _why_missing(self, reply: list[bytes], live: str) -> list[bytes]:
        """A group's STATE_MISSING, told better when the catalog's marker was made in
        another group count (whose groups' markers have other tags than this count's)."""
        if reply[0] != b"STATE_MISSING" or live == keys.LIVE:
            return reply
        raw = await self.conn.execute("GET", keys.LIVE)
        why = None if raw is None else state.decode(raw).mismatch(self.layout.groups)
        return reply if why is None else detail(reply[0], why)

    def _limits(self, first: bool = True) -> list[Any]:
        """The guards' arguments (guard in _lib.lua): most records a user holds, its writes
        a second and burst. A request the engine sends again (after SHORT, ARCHIVED...)
        took its token on the first call, so ``first=False`` turns the rate off."""
        p = self.policy
        return [p.idempotency_max_per_user, p.rate_limit_per_s if first else 0,
                p.rate_limit_burst]

    def _rate(self) -> list[Any]:
        """The write-rate arguments of the cart's scripts."""
        return [self.policy.rate_limit_per_s, self.policy.rate_limit_burst]

    def _group(self, user_id: int) -> tuple[keys.Group, list[int]]:
        """The user's group, and the (index, groups) arguments of the scripts that make
        ids."""
        group = self.layout.of(user_id)
        return group, [group.index, self.layout.groups]

    async def _page_of(self, name: str, kind: Any, limit: int, cursor: str | None,
                       **keys_: str) -> Page[Any]:
        """A page from one of the list scripts, which all take (cursor, limit) and answer
        up to limit + 1 items."""
        limits.PAGE_SIZE.check(limit, "limit")
        reply = await self._run(name, [cursor_arg(cursor), limit], **keys_)
        return to_page(answer(reply, list[kind]), limit)

    async def _flag(self, group: keys.Group, kind: Kind, short: Short) -> str:
        """Move units of a SHORT answer's product or coupon into the group; the flag for
        the next try: '' (units moved), 'absent', or the units there are, all told."""
        got = await self.allotments.acquire(group, kind, short.id, short.quantity, short.have)
        return "" if got is None else got if got == ABSENT else str(got)

    # -- lifecycle ---------------------------------------------------------------------

    async def load(self) -> None:
        """Load every script now, so the first requests need no NOSCRIPT round trip."""
        for script in self.scripts.values():
            await self.conn.execute("SCRIPT", "LOAD", script.source)

    async def ready(self) -> bool:
        """Redis answers, holds live state (else :class:`StateMissing`) and knows every
        script."""
        shas = [script.sha for script in self.scripts.values()]
        live, known, *copies = await asyncio.gather(
            self.conn.execute("GET", keys.LIVE), self.conn.execute("SCRIPT", "EXISTS", *shas),
            *(self.conn.execute("EXISTS", g.live) for g in self.layout.all))
        if live is None:
            raise StateMissing(NO_STATE)
        if (mismatch := state.decode(live).mismatch(self.layout.groups)) is not None:
            raise StateMissing(mismatch)
        if not all(copies):  # a group's slot lost its data (its node, in a cluster)
            raise StateMissing(NO_STATE)
        return all(known)

    async def gauges(self) -> Gauges:
        """Redis' memory and the outbox's backlog and lag per consumer group, read now."""
        return await gauges.read(self.conn, self.layout)

    @contextlib.asynccontextmanager
    async def sweeping(self, every_s: float = 1.0) -> AsyncIterator[None]:
        """While inside, deliver the transfers a crash left in flight (engine/allotments.py)
        and expire the deferred orders whose payment is due (issue 28, expire_orders.lua)
        every ``every_s``: any number of processes may, each step is idempotent."""
        async def sweep() -> None:
            while True:
                await asyncio.sleep(every_s)
                try:
                    await self.allotments.sweep()
                    await self.expire_due()
                except EngineError as exc:  # Redis away or not live: the next round
                    log.debug("sweep skipped: %s", exc)

        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """Close the connection."""
        await self.conn.close()
