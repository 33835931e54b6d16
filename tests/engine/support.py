"""Plain helpers of the engine's tests (fixtures live in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from engine import Engine, keys, state
from engine.outbox import events
from engine.outbox.events import AnyEvent

USER_SEQ = "test:engine:user"  # the last user id handed out (outside {ro}: not the engine's)
# What engine.state.mark writes, for async clients.
LIVE_MARKER = b'{"origin":"tests","at_ms":0,"groups":%d}' % keys.DEFAULT_GROUPS


async def flush_db(client: aioredis.Redis) -> None:
    """FLUSHDB without rewinding the user-id counter (what a test writes after its flush
    must never meet a later test's "new" user), then live state again: an empty shop."""
    last = await client.get(USER_SEQ)
    await client.flushdb()
    for group in keys.layout(keys.DEFAULT_GROUPS).all:
        await client.set(group.live, LIVE_MARKER)
    await client.set(keys.LIVE, LIVE_MARKER)
    if last is not None:
        await client.set(USER_SEQ, last)


def flush_db_sync(client: redis.Redis) -> int:
    """:func:`flush_db` for sync callers; answers the last user id handed out."""
    last = int(client.get(USER_SEQ) or 0)
    client.flushdb()
    state.mark(client, "tests")
    client.set(USER_SEQ, last)
    return last


def window(start_s: float = -3600, end_s: float = 3600) -> tuple[datetime, datetime]:
    """A validity window relative to now, in seconds."""
    now = datetime.now(UTC)
    return now + timedelta(seconds=start_s), now + timedelta(seconds=end_s)


Entries = list[tuple[bytes, dict[bytes, bytes]]]  # stream entries as redis-py answers them


class Outbox:
    """Reads every outbox stream (each group's, then the catalog's) from a mark onwards,
    decoded and merged in entry-id order (one Redis clock)."""

    def __init__(self, client: aioredis.Redis, groups: int = keys.DEFAULT_GROUPS) -> None:
        self.client = client
        self.streams = keys.layout(groups).outboxes

    async def mark(self) -> dict[str, bytes]:
        """Each stream's newest entry id now ("0-0" when empty)."""
        marks = {}
        for stream in self.streams:
            last = cast(Entries, await self.client.xrevrange(stream, count=1))
            marks[stream] = last[0][0] if last else b"0-0"
        return marks

    async def since(self, mark: dict[str, bytes]) -> list[AnyEvent]:
        """Every event appended after ``mark``, oldest first."""
        found: list[tuple[tuple[int, int], bytes]] = []
        for stream in self.streams:
            entries = cast(Entries, await self.client.xrange(stream, min=b"(" + mark[stream]))
            found += [(_order(entry), fields[b"e"]) for entry, fields in entries]
        return [events.decode(raw) for _, raw in sorted(found, key=lambda pair: pair[0])]

    async def length(self) -> int:
        """How many entries the streams hold."""
        return sum([int(await self.client.xlen(stream)) for stream in self.streams])


def _order(entry: bytes) -> tuple[int, int]:
    ms, seq = entry.split(b"-")
    return int(ms), int(seq)


async def snapshot(
    engine: Engine, outbox: Outbox, user: int, product_ids: list[int]
) -> dict[str, Any]:
    """Everything an order could change for ``user``: to compare before and after."""
    return {
        "balance": (await engine.balance(user)).balance,
        "history": (await engine.history(user, limit=100)).items,
        "stock": [(await engine.product(pid)).stock for pid in product_ids],
        "coupons": (await engine.user_coupons(user, limit=100)).items,
        "orders": (await engine.orders(user, limit=100)).items,
        "cart": await engine.cart(user),
        "outbox": await outbox.length(),
    }


async def allot(engine: Any, user_id: int, product_id: int, units: int) -> None:
    """Move ``units`` of a product's reserve into the group of ``user_id`` (as a refill
    would, engine/allotments.py), so that its orders find them there at once."""
    from engine.allotments import PRODUCT
    slot = engine.allotments.slot(engine.layout.of(user_id))
    moved = await engine.allotments.move(engine.allotments.reserve, slot, PRODUCT,
                                         product_id, units, units)
    assert moved == units
