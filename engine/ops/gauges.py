"""How full Redis is and how far behind the write-behind runs: for /metrics and readiness.

Read on demand (a scrape, a readiness probe), in a few pipelined round trips over every
outbox stream (each user group's and the catalog's): Redis' memory, the streams' length,
and per consumer group the events not yet acknowledged and the age of the oldest of them
(the one that has waited longest, delivered or not: the lag an operator cares about); and
the dead letters waiting.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from engine import keys
from engine.connection import Connection, ReplyError

MB = 1024 * 1024


class ConsumerLag(msgspec.Struct, frozen=True, kw_only=True):
    """How far one consumer group of the outbox is behind."""

    backlog: int  # delivered and not acknowledged, plus never delivered
    oldest_age_s: float  # how long the oldest of those has waited (0 when none)


class Gauges(msgspec.Struct, frozen=True, kw_only=True):
    """Redis' memory and the outbox's state, read now."""

    used_memory: int
    maxmemory: int
    outbox_length: int
    consumers: dict[str, ConsumerLag]  # by consumer group (postgres, platform)
    dead_letters: int = 0  # events the platform forwarder gave up on, waiting for a replay


def _info(raw: bytes) -> dict[str, str]:
    return dict(line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _ms(entry: bytes) -> int:
    return int(entry.split(b"-", 1)[0])


async def _groups(conn: Connection, stream: str) -> list[dict[str, Any]]:
    try:
        return [_pairs(group) for group in await conn.execute("XINFO", "GROUPS", stream)]
    except ReplyError:  # no outbox yet (or any more): nothing waits
        return []


async def _oldest_ms(conn: Connection, stream: str, group: dict[str, Any]) -> int | None:
    """The stream time of the group's oldest unacknowledged entry, if any."""
    if int(group["pending"]):
        summary = await conn.execute("XPENDING", stream, group["name"])
        return _ms(summary[1])
    after = b"(" + group["last-delivered-id"]
    first = await conn.execute("XRANGE", stream, after, "+", "COUNT", 1)
    return _ms(first[0][0]) if first else None


async def _stream(conn: Connection, stream: str) -> tuple[int, dict[str, tuple[int, int | None]]]:
    """One stream's length, and per consumer group its backlog and oldest entry's time."""
    length, groups = await asyncio.gather(conn.execute("XLEN", stream), _groups(conn, stream))
    oldest = await asyncio.gather(*(_oldest_ms(conn, stream, group) for group in groups))
    return int(length), {
        group["name"].decode(): (int(group["pending"]) + int(group.get("lag") or 0), at)
        for group, at in zip(groups, oldest, strict=True)}


async def read(conn: Connection, layout: keys.Layout) -> Gauges:
    """The gauges, now, summed over every outbox stream of ``layout``."""
    info, now, dead, *streams = await asyncio.gather(
        conn.execute("INFO", "memory"), conn.execute("TIME"),
        conn.execute("XLEN", keys.OUTBOX_DEAD),
        *(_stream(conn, stream) for stream in layout.outboxes))
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    backlog: dict[str, int] = {}
    oldest: dict[str, int | None] = {}
    for _, groups in streams:
        for name, (waiting, at) in groups.items():
            backlog[name] = backlog.get(name, 0) + waiting
            was = oldest.get(name)
            oldest[name] = at if was is None else was if at is None else min(was, at)
    memory = _info(info)
    return Gauges(
        used_memory=int(memory["used_memory"]), maxmemory=int(memory.get("maxmemory", 0)),
        outbox_length=sum(length for length, _ in streams), dead_letters=int(dead),
        consumers={name: ConsumerLag(
            backlog=backlog[name],
            oldest_age_s=max(0, now_ms - at) / 1000 if (at := oldest[name]) is not None else 0.0)
            for name in backlog})
