"""What the operators' console reads and asks of Redis (``GET /api/v1/admin/ops``).

* **Tallies.** Every API process adds what it answered since its last tally (orders placed
  and refused by code, requests, 5xx, the order route's latency buckets) to one hash per
  second of Redis' clock, ``{ro}:ops:s:<second>`` (``ops_tally.lua``), kept ten minutes. A
  second's hash is thus the sum over every API process on every host, and the console's
  chart of the last minutes is there whoever serves the page, since whenever.
* **Heartbeats** of the worker processes (``engine/ops/heartbeat.py``).
* **Dead letters**: how many, and the oldest few.
* **Replay requests** for a platform forwarder (``engine/ops/replays.py``).
* **Login sessions** of the console's page (``api/sessions.py``): one string per session,
  ``{ro}:ops:session:<sha256 of its id>``, expiring with the login.

Reads need no live state (like the gauges: the console must show a Redis that lost it);
every write of the tallies and replays goes through a script that refuses without it.
Sessions are plain commands on one key each, without the marker: they are not the shop's
state, and an operator must be able to log in to a Redis that lost its data to see so.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

from engine import keys
from engine.connection import Connection
from engine.ops import heartbeat, replays
from engine.ops.heartbeat import Heartbeat
from engine.ops.replays import ReplayState
from engine.outbox.events import EVENT_FIELD
from engine.replies import ok
from engine.scripts import Script, script_keys

KEEP_SECONDS_S = 600  # how long a second's tallies are kept


class DeadLetterSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A dead letter as the console lists it."""

    id: str  # its id in the dead-letter stream
    entry: str  # the outbox entry it came from
    type: str | None  # the event's type (order.paid, ...)
    event_id: str | None
    error: str
    attempts: int


class ConsoleSession(msgspec.Struct, frozen=True, kw_only=True):
    """A console login as Redis keeps it: whose it is, its CSRF token, when it ends."""

    user_id: int  # the admin who logged in
    csrf: str  # what a request that changes something must send back (X-CSRF-Token)
    expires_at: float  # epoch seconds (the key's TTL says the same to Redis)


_SESSION = msgspec.json.Decoder(ConsoleSession)


def session_key(session_id: str) -> str:
    """The key of a session: the id is hashed, so Redis holds nothing a browser can send."""
    return keys.ops_session(hashlib.sha256(session_id.encode()).hexdigest())


class _Kind(msgspec.Struct):
    type: str | None = None
    event_id: str | None = None


_KIND = msgspec.json.Decoder(_Kind)


def _tally(raw: list[bytes]) -> dict[str, int]:
    """An HGETALL reply of a second's hash as field -> count."""
    return {raw[i].decode(): int(raw[i + 1]) for i in range(0, len(raw), 2)}


def _summary(letter_id: bytes, flat: list[bytes]) -> DeadLetterSummary:
    fields = {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
    try:
        kind = _KIND.decode(fields.get(EVENT_FIELD.encode(), b"{}"))
    except msgspec.MsgspecError:
        kind = _Kind()
    return DeadLetterSummary(
        id=letter_id.decode(), entry=fields.get(b"entry", b"").decode(), type=kind.type,
        event_id=kind.event_id, error=fields.get(b"error", b"").decode(errors="replace"),
        attempts=int(fields.get(b"attempts", b"0")))


class Console:
    """The console's reads and requests over the engine's connection and scripts."""

    def __init__(self, conn: Connection, scripts: Mapping[str, Script]) -> None:
        self.conn = conn
        self.scripts = scripts

    async def _run(self, name: str, args: list[Any], **keys_: str) -> bytes:
        return ok(await self.scripts[name](
            self.conn, script_keys(name, live=keys.LIVE, **keys_), args))

    async def now_ms(self) -> int:
        """Redis' clock, epoch ms (the tallies' and heartbeats' clock)."""
        seconds, micros = await self.conn.execute("TIME")
        return int(seconds) * 1000 + int(micros) // 1000

    async def tally(self, counts: Mapping[str, int]) -> int:
        """Add counts to the current second's tallies; the second (epoch s)."""
        args: list[Any] = [KEEP_SECONDS_S]
        for field, n in counts.items():
            args += (field, n)
        return int(await self._run("ops_tally", args, second_prefix=keys.OPS_SECOND_PREFIX))

    async def seconds(self, first: int, last: int) -> dict[int, dict[str, int]]:
        """The tallies of every second from ``first`` to ``last`` (epoch s, both included)
        that has any, by second."""
        span = range(first, last + 1)
        raw = await asyncio.gather(*(self.conn.execute("HGETALL", keys.ops_second(s))
                                     for s in span))
        return {s: _tally(r) for s, r in zip(span, raw, strict=True) if r}

    async def heartbeats(self) -> list[Heartbeat]:
        """Every worker process's last heartbeat, by process."""
        raw = await self.conn.execute("HGETALL", keys.OPS_WORKERS)
        beats = (heartbeat.decode(raw[i + 1]) for i in range(0, len(raw), 2))
        return sorted((b for b in beats if b is not None), key=lambda b: (b.group, b.process))

    async def dead_letters(self, limit: int = 5) -> tuple[int, list[DeadLetterSummary]]:
        """How many dead letters wait, and the oldest ``limit`` of them."""
        count, oldest = await asyncio.gather(
            self.conn.execute("XLEN", keys.OUTBOX_DEAD),
            self.conn.execute("XRANGE", keys.OUTBOX_DEAD, "-", "+", "COUNT", limit))
        return int(count), [_summary(letter_id, flat) for letter_id, flat in oldest]

    async def ask_replay(self, request_id: str) -> None:
        """Queue a replay of the dead letters for a platform forwarder."""
        await self._run("ask_replay", [request_id, msgspec.json.encode(replays.ASKED),
                                       int(replays.KEEP_S * 1000)],
                        asked=keys.OPS_REPLAY_ASKED, replay=keys.ops_replay(request_id))

    async def replay(self, request_id: str) -> ReplayState | None:
        """How a replay request goes (None: unknown, or expired)."""
        raw = await self.conn.execute("GET", keys.ops_replay(request_id))
        return None if raw is None else replays.decode(raw)

    async def withdraw_replay(self, request_id: str) -> bool:
        """Take a request nobody took back out of the queue; False if a forwarder has it."""
        return bool(await self.conn.execute("LREM", keys.OPS_REPLAY_ASKED, 0, request_id))

    async def open_session(self, session_id: str, session: ConsoleSession,
                           ttl_ms: int) -> None:
        """Keep a new login for ``ttl_ms``."""
        await self.conn.execute("SET", session_key(session_id), msgspec.json.encode(session),
                                "PX", ttl_ms)

    async def session(self, session_id: str) -> ConsoleSession | None:
        """A live login, or None (unknown, expired, logged out or unreadable)."""
        raw = await self.conn.execute("GET", session_key(session_id))
        try:
            return None if raw is None else _SESSION.decode(raw)
        except msgspec.MsgspecError:
            return None

    async def close_session(self, session_id: str) -> bool:
        """End a login at once (a logout); False if there was none."""
        return bool(await self.conn.execute("DEL", session_key(session_id)))
