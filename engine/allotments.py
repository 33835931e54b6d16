"""Stock and coupon quantity as a reserve and per-group allotments (issue 15).

A user's request runs over its group's keys only (engine/keys.py), so the units it takes
must be in its group: each group holds an *allotment* of each product's stock, each
option's stock (issue 27: a product with options has no units of its own) and each
coupon's quantity, beside a copy of the definition (a product's name, price, status, sale
window, limit, category and options list; an option's product, name and extra price; a
coupon's terms). The catalog keeps each one's *reserve*. Units move between the reserve
and a group in a **transfer** of three steps, each one script in one slot:

1. ``transfer_out.lua`` at the source takes the units and records the transfer there
   (debit first: a crash after it leaves units *in flight*, named by the record);
2. ``transfer_in.lua`` at the destination adds them and records the transfer's id there,
   so a replayed step adds nothing (it also brings the destination's copy of the
   definition up to date);
3. ``transfer_done.lua`` at the source drops the record.

Any step may be replayed, by anyone: the :meth:`Allotments.sweep` delivers every transfer
older than a second that its mover did not finish (a process killed between the steps),
and two deliverers at once add the units once. Units go from the reserve to a group
(a *refill*) or from a group back to the reserve (a *pull-back*), never group to group.

**When an order's group holds too few units**, its script answers SHORT and
:meth:`Allotments.acquire` moves units in before the engine places the order again:
a refill from the reserve; if the reserve holds too few, a pull-back from every other
group first; and only when the reserve still holds too few, a count of every unit there
is (the reserve, every allotment, every transfer in flight, read against the reserve's
``moves`` counter so that a unit moving between slots meanwhile is never missed). The
order is refused OUT_OF_STOCK (a coupon COUPON_SOLD_OUT) only when that count is short of
what it asks: units still somewhere else are fetched, waited for (in flight) or swept.

**Refill policy.** A product's creation (and a coupon's) deals each group
``units // (2 * groups)`` at once, so half the units start in the groups: a load spread
over many products then hardly ever moves units. A refill takes at least what the order
lacks and at most ``max(lacking, 2 * the group's last refill of it, DEAL_FLOOR)``, capped
by ``ceil(reserve / groups)``: a product in demand in a group gets refills that double,
so a hot product needs a few transfers per group rather than one per order, while the
cap keeps a fair share of the reserve for the other groups, and an ever smaller one as
the reserve runs low (so units are not stranded in a group that no longer sells them:
those are pulled back when another group needs them).

**Small stocks** (issue 27: a drop of 10 sizes of 50 pairs leaves ~6 a size in each of 4
groups) are where transfers cost most: each refill serves only a few orders, and the sale
ends with every group short in turn. Three rules keep them rare:

- a stock of fewer than ``SMALL_STOCK`` units a group is dealt out *whole* at creation
  (``units // groups`` each, the remainder in the reserve): the half kept back would only
  come out again in refills of a few units each, one transfer per few orders;
- a pull-back takes *half* of what each other group holds (``PULL_SHARE``), not just what
  the order lacks: a group that ran out while others still hold units will run out again
  at once, and half evens the groups out in one round rather than one per order;
- the refill right after a pull-back is not capped by the reserve's fair share: the units
  were pulled back for this group, and capping them left most in the reserve for the next
  order of the same group to fetch again.

Measured (10 products x 50 units, 800 buyers spread over the 4 groups, 32 at a time, one
unit of a random size each; /tmp/notes/e1-27.md has the command): transfers fell from
~105 (13% of the orders) to ~66 (8%), and orders sent back SHORT that then sold from ~24%
to ~8% of the 500 sold; the 300 refused orders all go back once, to be counted.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from engine import keys
from engine.connection import Connection
from engine.errors import EngineUnavailable
from engine.replies import refuse
from engine.scripts import Script, script_keys

# A transfer's id record at its destination outlives any transfer in flight by far (the
# sweeper delivers within seconds): a replay after it expired would add the units twice.
RECEIVED_TTL_S = 7 * 24 * 3600
SWEEP_AFTER_MS = 1000  # a mover finishes within milliseconds; later, the sweeper does
DEAL_FLOOR = 4
# A stock below this many units a group is dealt out whole; a pull-back takes 1/PULL_SHARE
# of what a group holds (module docstring, "Small stocks").
SMALL_STOCK = 16
SHORT_MEMORY = 10_000  # sold-out things a process remembers to count first (_acquire)
PULL_SHARE = 2
PULL_MOST = 10**15  # no bound but the share: more than any stock (limits.STOCK)
# A pull-back takes nothing from a group that received units less than this long ago: it
# was refilled for an order, which runs next (a round trip later); without it, two groups
# short of the last units could take them back and forth from each other for ever. Not
# longer: a small drop's last units wait out the hold of the group holding them, and at
# 100 ms a 500-unit drop sold ~3.7x slower than at 20 ms, its tail all waiting
# (docs/performance.md, "The hold").
HOLD_MS = 20
ROUNDS = 24  # acquire's rounds before it gives up (503) rather than refuse wrongly


@dataclass(frozen=True)
class Kind:
    """What is allotted: a product's stock, an option's stock or a coupon's quantity."""

    letter: str  # in the transfer records
    field: str  # the units' hash field
    definition: tuple[str, ...]  # the fields a group's copy takes from the reserve
    prefix: str  # the reserves' key prefix
    group_prefix: str  # the name of keys.Group's attribute holding its copies' prefix

    def reserve(self, thing_id: int) -> str:
        """The reserve's key of a product, option or coupon."""
        return f"{self.prefix}{thing_id}"

    def reserve_prefix(self) -> str:
        """The reserves' key prefix."""
        return self.prefix

    def copy(self, group: keys.Group, thing_id: int) -> str:
        """A group's copy (and allotment) of a product, option or coupon."""
        return f"{self.copy_prefix(group)}{thing_id}"

    def copy_prefix(self, group: keys.Group) -> str:
        """A group's copies' key prefix."""
        prefix: str = getattr(group, self.group_prefix)
        return prefix


# A product's copy carries every field the order script reads of it (issue 27: its sale
# status, window, per-user limit and options list too), so that a change of any of them
# reaches every group as a new version of the copy.
PRODUCT = Kind("p", "stock", (
    "name", "price", "v", "status", "starts_ms", "ends_ms", "max_per_user", "category",
    "options"), keys.PRODUCT_PREFIX, "product_prefix")
OPTION = Kind("o", "stock", ("product_id", "name", "extra_price", "v"), keys.OPTION_PREFIX,
              "option_prefix")
# A coupon's copy carries its rules too (issue 28), which issue_coupon.lua copies into
# each issued coupon for the order step.
COUPON = Kind("c", "remaining", (
    "id", "name", "discount_type", "discount_value", "total_quantity", "valid_from",
    "valid_until", "valid_from_ms", "valid_until_ms", "v", "min_order_amount",
    "max_discount_amount", "description"), keys.COUPON_PREFIX, "coupon_prefix")
KINDS = {kind.letter: kind for kind in (PRODUCT, OPTION, COUPON)}
RESERVE = -1  # a transfer's destination when it is the reserve


@dataclass(frozen=True)
class Slot:
    """Where units are held: the reserve (``group`` None) or one group."""

    group: keys.Group | None

    @property
    def index(self) -> int:
        return RESERVE if self.group is None else self.group.index

    @property
    def live(self) -> str:
        return keys.LIVE if self.group is None else self.group.live

    @property
    def transfers_out(self) -> str:
        return keys.TRANSFERS_OUT if self.group is None else self.group.transfers_out

    def received(self, transfer: str) -> str:
        prefix = keys.TRANSFER_IN_PREFIX if self.group is None else self.group.transfer_in_prefix
        return prefix + transfer

    def holder(self, kind: Kind, thing_id: int) -> str:
        return kind.reserve(thing_id) if self.group is None else kind.copy(self.group, thing_id)

    def holders(self, kind: Kind) -> str:
        return kind.reserve_prefix() if self.group is None else kind.copy_prefix(self.group)


ABSENT = "absent"


class TransferRecord(NamedTuple):
    """A transfer's record in its source slot's transfers hash, as ``transfer_record`` in
    _lib.lua writes it: "<kind> <id> <destination> <units> <recorded ms>"."""

    kind: str  # a Kind's letter
    thing_id: int
    dest: int  # a group's index, or RESERVE
    units: int
    at_ms: int

    @classmethod
    def parse(cls, raw: bytes | str) -> TransferRecord:
        """A record as Redis holds it."""
        kind, thing, dest, units, at_ms = (raw.decode() if isinstance(raw, bytes)
                                           else raw).split()
        return cls(kind, int(thing), int(dest), int(units), int(at_ms))


def transfer_head(kind: Kind, thing_id: int, dest: int) -> str:
    """A record's first three words, which transfer_out.lua takes whole (ARGV[6])."""
    return f"{kind.letter} {thing_id} {dest}"


def new_transfer() -> str:
    """A transfer id, unique across processes."""
    return os.urandom(8).hex()


class Allotments:
    """Moves units between reserves and allotments; counts them (see the module)."""

    def __init__(self, conn: Connection, scripts: dict[str, Script],
                 layout: keys.Layout) -> None:
        self.conn = conn
        self.scripts = scripts
        self.layout = layout
        self.reserve = Slot(None)
        self.slots = [Slot(g) for g in layout.all]
        self._last: dict[tuple[int, str, int], int] = {}  # the last refill per group
        # Things whose last count here was short of an order (a sold-out size): the next
        # SHORT for them counts first (see _acquire).
        self._short: set[tuple[str, int]] = set()
        # The count of each thing in progress here and when it began (loop time): callers
        # that asked after it began share it (count_since).
        self._counting: dict[tuple[str, int], tuple[float, asyncio.Future[int]]] = {}
        self._running: dict[tuple[int, str, int], asyncio.Future[int | str | None]] = {}
        self.transfers = 0  # transfers this process moved units in (bench_engine prints it)

    def slot(self, group: keys.Group) -> Slot:
        return self.slots[group.index]

    async def _call(self, name: str, slot: Slot, args: list[Any], **keys_: str) -> Any:
        reply = await self.scripts[name](self.conn, script_keys(name, live=slot.live, **keys_),
                                         args)
        if reply[0] not in (b"OK", b"ABSENT"):
            refuse(reply[0], reply[1])
        return reply

    # -- one transfer ------------------------------------------------------------------

    async def _out(self, src: Slot, kind: Kind, thing_id: int, transfer: str, dest: int,
                   least: int, most: int, share: int = 1,
                   hold_ms: int = 0) -> tuple[int, list[Any]] | None:
        """Step 1: the units taken (and the definition for the copy), None: no such
        holder."""
        fields = kind.definition if src.group is None else ()
        reply = await self._call(
            "transfer_out", src,
            [transfer, kind.field, least, most, share, transfer_head(kind, thing_id, dest),
             "1" if src.group is None else "", hold_ms, *fields],
            holder=src.holder(kind, thing_id), transfers=src.transfers_out)
        if reply[0] == b"ABSENT":
            return None
        return int(reply[1]), [v for pair in zip(fields, reply[2:], strict=True) for v in pair]

    async def _finish(self, src: Slot, dest: Slot, kind: Kind, thing_id: int, transfer: str,
                      units: int, definition: list[Any]) -> None:
        """Steps 2 and 3."""
        await self._call("transfer_in", dest,
                         [units, kind.field, RECEIVED_TTL_S,
                          "1" if dest.group is None else "", *definition],
                         holder=dest.holder(kind, thing_id), received=dest.received(transfer))
        await self._call("transfer_done", src, [transfer], holder=src.holder(kind, thing_id),
                         transfers=src.transfers_out)

    async def move(self, src: Slot, dest: Slot, kind: Kind, thing_id: int, least: int,
                   most: int, share: int = 1) -> int | None:
        """Move between ``least`` and ``most`` units (none if the source has fewer than
        ``least``; at most ``ceil(its units / share)`` above ``least``); the units moved,
        None when the source does not hold the thing at all."""
        transfer = new_transfer()
        taken = await self._out(src, kind, thing_id, transfer, dest.index, least, most, share,
                                hold_ms=0 if src.group is None else HOLD_MS)
        if taken is None:
            return None
        units, definition = taken
        if units:
            self.transfers += 1
            await self._finish(src, dest, kind, thing_id, transfer, units, definition)
        return units

    async def deliver(self, src: Slot, transfer: str) -> bool:
        """Finish a recorded transfer of ``src``'s (its mover's, or one a crash left);
        False when it was finished already."""
        raw = await self.conn.execute("HGET", src.transfers_out, transfer)
        if raw is None:
            return False
        record = TransferRecord.parse(raw)
        kind, thing_id, dest = KINDS[record.kind], record.thing_id, record.dest
        # A replayed step 1 takes nothing again and answers the units it took, with the
        # definition as the source has it now (the newest, for the copy).
        taken = await self._out(src, kind, thing_id, transfer, dest, 0, 0)
        if taken is None:
            return False
        dest_slot = self.reserve if dest == RESERVE else self.slots[dest]
        await self._finish(src, dest_slot, kind, thing_id, transfer, *taken)
        return True

    async def deliver_all(self, transfer_prefix: str) -> None:
        """Deliver a script's transfers to every group (``<prefix>:<group>``): a new
        product's or coupon's deal, or a new copy of a definition."""
        await asyncio.gather(*(self.deliver(self.reserve, f"{transfer_prefix}:{g.index}")
                               for g in self.layout.all))

    async def sweep(self, older_than_ms: int = SWEEP_AFTER_MS) -> int:
        """Deliver every transfer recorded longer than ``older_than_ms`` ago (a crash
        interrupted its mover); how many."""
        now_s, now_us = await self.conn.execute("TIME")
        now = int(now_s) * 1000 + int(now_us) // 1000
        slots = [self.reserve, *self.slots]
        records = await asyncio.gather(*(self.conn.execute("HGETALL", s.transfers_out)
                                         for s in slots))
        stale = [(slot, flat[i].decode()) for slot, flat in zip(slots, records, strict=True)
                 for i in range(0, len(flat), 2)
                 if now - TransferRecord.parse(flat[i + 1]).at_ms >= older_than_ms]
        done = await asyncio.gather(*(self.deliver(slot, t) for slot, t in stale))
        return sum(done)

    # -- counting ----------------------------------------------------------------------

    async def held(self, kind: Kind, ids: Sequence[int]) -> dict[int, int]:
        """The units every group holds of each id (allotments and their transfers in
        flight), summed; the reserve's part is the caller's to add."""
        totals = dict.fromkeys(ids, 0)
        if not ids:
            return totals
        rows = await asyncio.gather(*(self._call(
            "read_units", s, [kind.field, *ids], holder_prefix=s.holders(kind))
            for s in self.slots))
        for row in rows:
            for i, thing_id in enumerate(ids):
                totals[thing_id] += int(row[1 + 2 * i])
        return totals

    async def count(self, kind: Kind, thing_id: int) -> int:
        """Every unit of a thing there is: its reserve, every allotment, every transfer in
        flight. The reserve is read before and after the groups: when its ``moves``
        changed in between, a unit may have moved past the count, and it counts again."""
        for _ in range(ROUNDS):
            first = await self._call("read_units", self.reserve, [kind.field, thing_id],
                                     holder_prefix=kind.reserve_prefix())
            groups = await self.held(kind, [thing_id])
            last = await self._call("read_units", self.reserve, [kind.field, thing_id],
                                    holder_prefix=kind.reserve_prefix())
            if first[2] == last[2]:
                return int(first[1]) + groups[thing_id]
        raise EngineUnavailable("the units kept moving while they were counted; retry")

    async def count_since(self, kind: Kind, thing_id: int, since: float) -> int:
        """:meth:`count`, or the one in progress here if it began at loop time ``since`` or
        later. A count read at any instant after a caller asked is as true an answer to it
        as its own would be, so the crowd asking for a sold-out size pays one count, not
        one each."""
        key = (kind.letter, thing_id)
        running = self._counting.get(key)
        if running is not None and running[0] >= since:
            return await asyncio.shield(running[1])
        task = asyncio.ensure_future(self.count(kind, thing_id))
        self._counting[key] = (asyncio.get_running_loop().time(), task)
        try:
            return await asyncio.shield(task)
        finally:
            if self._counting.get(key, (0.0, None))[1] is task:
                del self._counting[key]

    # -- orders ------------------------------------------------------------------------

    async def acquire(self, group: keys.Group, kind: Kind, thing_id: int, quantity: int,
                      have: int) -> int | str | None:
        """Get ``quantity`` units of a thing into ``group``, which holds ``have``: None
        once units were moved in (or another caller of this process moved some: place the
        order again), :data:`ABSENT` when there is no such thing, or the count of every
        unit there is when it is short of ``quantity``."""
        key = (group.index, kind.letter, thing_id)
        running = self._running.get(key)
        if running is not None:
            shared = await asyncio.shield(running)
            return shared if isinstance(shared, str) or shared is None or shared < quantity \
                else None
        task = asyncio.ensure_future(self._acquire(group, kind, thing_id, quantity, have))
        self._running[key] = task
        try:
            got = await asyncio.shield(task)
        finally:
            if self._running.get(key) is task:
                del self._running[key]
        return got if got is None or isinstance(got, str) or got < quantity else None

    async def _acquire(self, group: keys.Group, kind: Kind, thing_id: int, quantity: int,
                       have: int) -> int | str | None:
        slot, key = self.slot(group), (group.index, kind.letter, thing_id)
        need, share = quantity - have, self.layout.groups
        asked = asyncio.get_running_loop().time()
        if (kind.letter, thing_id) in self._short:
            # Sold out when last counted: a flash sale's buyers keep asking for a sold-out
            # size, and a refill and pull-backs that move nothing before the count doubled
            # what each refusal cost. The count alone is as exact; only when it finds units
            # again (a restock, a cancel) are they moved as usual.
            total = await self.count_since(kind, thing_id, asked)
            if total < quantity:
                return total
            self._short.discard((kind.letter, thing_id))
        for attempt in range(ROUNDS):
            most = max(need, 2 * self._last.get(key, 0), DEAL_FLOOR)
            moved = await self.move(self.reserve, slot, kind, thing_id, need, most,
                                    share=share)
            if moved is None:
                return ABSENT
            if moved:
                self._last[key] = moved
                return None
            pulled = await asyncio.gather(*(
                self.move(other, self.reserve, kind, thing_id, 1, PULL_MOST, share=PULL_SHARE)
                for other in self.slots if other is not slot))
            if any(pulled):
                share = 1  # what was pulled back was pulled for this group
                continue
            total = await self.count_since(kind, thing_id, asked)
            if total < quantity:
                if len(self._short) >= SHORT_MEMORY:
                    self._short.clear()
                self._short.add((kind.letter, thing_id))
                return total
            # The units are in flight, or just went to another group: wait for them (and
            # from the second try on, deliver what a crash left in flight).
            await backoff(attempt)
            if attempt:
                await self.sweep()
        raise EngineUnavailable(f"units of {kind.letter}{thing_id} kept moving; retry")

    async def release(self, kind: Kind, thing_id: int, need: int) -> int:
        """Pull units back from every group into the reserve (for a negative restock),
        up to ``need`` from each; the units pulled."""
        pulled = await asyncio.gather(*(self.move(s, self.reserve, kind, thing_id, 1, need)
                                        for s in self.slots))
        return sum(p or 0 for p in pulled)


def deal(units: int, groups: int) -> int:
    """The units a new product, option or coupon gives each group at once: a small stock
    whole, else half of it (module docstring, "Small stocks")."""
    if units < SMALL_STOCK * groups:
        return units // groups
    return units // (2 * groups)


async def backoff(attempt: int) -> None:
    """Wait for units in flight or held elsewhere: 1 ms, doubling to 50 ms (jittered), so
    ROUNDS waits outlast HOLD_MS several times over."""
    await asyncio.sleep(random.uniform(0.5, 1.5) * min(0.05, 0.001 * 2 ** attempt))
