"""Consuming ``{ro}:outbox``: read, reclaim, acknowledge and trim through consumer groups.

Every consumer of the outbox (the Postgres writer, the data-platform forwarder) is a Redis
consumer group; each process is a consumer in it. An entry stays pending in its group
until the consumer acknowledges it, so a consumer that dies mid-batch loses nothing: its
entries are claimed by another. The stream is trimmed only below what *every* group has
acknowledged (Redis 7.0 has no ``XTRIM ... ACKED``), computed from XINFO GROUPS and
XPENDING. Synchronous redis-py: the workers are plain processes, not event loops.

Only a Redis that holds live state (``engine/state.py``) gets an outbox: the groups are
made by ``open_outbox.lua``, which refuses without the marker, and a stream or group that
vanished (Redis lost its data) raises :class:`OutboxGone` instead of being made again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import msgspec
import redis

from engine import keys
from engine.events import EVENT_FIELD
from engine.scripts import load_scripts

POSTGRES = "postgres"
PLATFORM = "platform"
GROUPS = (POSTGRES, PLATFORM)  # created together, so trimming never outruns a group

_SEQ_RANGE = 1_000_000
TRIM_STEP = 10_000  # entries one XTRIM call may remove (a few ms of Redis)
_FIELD = EVENT_FIELD.encode()
# What Redis answers about a stream or group that does not exist.
_MISSING = ("NOGROUP", "ERR no such key", "ERR The XGROUP subcommand requires the key to exist")

P = ParamSpec("P")
R = TypeVar("R")


class OutboxGone(Exception):
    """Raised when the outbox stream or its group is gone, or may not be made, because
    Redis holds no live state: it lost its data. Deliberately not a ``redis.RedisError``:
    retrying does not help; the workers wait until ``rushorder rebuild`` restores it."""


def _needs_group(method: Callable[P, R]) -> Callable[P, R]:
    """Turn Redis' "no such group / key" into :class:`OutboxGone`."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.ResponseError as exc:
            if str(exc).startswith(_MISSING):
                raise OutboxGone(f"the outbox or its group is gone ({exc}): Redis lost its "
                                 "data; `rushorder rebuild` restores it from Postgres") from exc
            raise

    return guarded


@functools.cache
def _open_outbox_source() -> str:
    return load_scripts()["open_outbox"].source


class Entry(msgspec.Struct, frozen=True):
    """One stream entry: its id (``ms-seq``) and the event JSON of its ``e`` field."""

    id: str
    data: bytes

    @property
    def ms(self) -> int:
        """When it was added: Redis' clock, epoch milliseconds (the id's first part)."""
        return int(self.id.split("-", 1)[0])


def entry_number(entry_id: str) -> int:
    """The entry id ``ms-seq`` as one ordered integer (``ms * 1_000_000 + seq``) for SQL."""
    ms, seq = entry_id.split("-")
    if int(seq) >= _SEQ_RANGE:
        raise ValueError(f"outbox entry {entry_id}: sequence too large to number")
    return int(ms) * _SEQ_RANGE + int(seq)


def entry_id(number: int) -> str:
    """The inverse of :func:`entry_number`."""
    return f"{number // _SEQ_RANGE}-{number % _SEQ_RANGE}"


def next_id(entry: str) -> str:
    """The smallest stream id greater than ``entry``."""
    ms, seq = entry.split("-")
    return f"{ms}-{int(seq) + 1}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Iterable[tuple[bytes, dict[bytes, bytes] | None]]) -> list[Entry]:
    """redis-py's ``[(id, {field: value})]`` as Entries (a bytes client, no decoding)."""
    return [Entry(_text(entry), fields[_FIELD]) for entry, fields in raw if fields]


def _gone(raw: Iterable[tuple[bytes, dict[bytes, bytes] | None]]) -> list[str]:
    """Ids of entries deleted from the stream while pending (they come back without fields)."""
    return [_text(entry) for entry, fields in raw if not fields]


class Outbox:
    """One consumer of one group of the outbox, over a redis-py client that does not decode."""

    def __init__(
        self, client: redis.Redis, group: str, consumer: str, *,
        stream: str = keys.OUTBOX, groups: Sequence[str] = GROUPS,
    ) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer
        self.stream = stream
        self.groups = tuple(groups)

    def create_groups(self) -> None:
        """Create every known group (and the stream) if missing, each at the beginning of
        the stream; :class:`OutboxGone` in a Redis that holds no live state."""
        opened = self.client.register_script(_open_outbox_source())
        code, detail = opened(keys=[keys.LIVE, self.stream], args=list(self.groups))
        if code != b"OK":
            raise OutboxGone(f"{_text(code)}: {_text(detail)}")

    @_needs_group
    def read(self, count: int, block_ms: int | None = None) -> list[Entry]:
        """Up to ``count`` entries never delivered to this group, now pending on us."""
        reply: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return _entries(reply[0][1]) if reply else []

    @_needs_group
    def read_own(self, count: int) -> list[Entry]:
        """Entries already delivered to this very consumer and not yet acknowledged."""
        reply: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: "0"}, count=count)
        raw = reply[0][1] if reply else []
        self.ack(_gone(raw))
        return _entries(raw)

    @_needs_group
    def reclaim(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over up to ``count`` entries pending on any consumer for ``min_idle_ms``.

        Entries deleted from the stream while pending are acknowledged: nobody can apply them.
        """
        claimed: list[Entry] = []
        start = "0-0"
        while len(claimed) < count:
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer, min_idle_ms,
                                           start_id=start, count=count - len(claimed))
            start = _text(reply[0])
            claimed += _entries(reply[1])
            self.ack([_text(gone) for gone in reply[2]] if len(reply) > 2 else [])
            if start == "0-0":
                break
        return claimed

    @_needs_group
    def touch(self, ids: Sequence[str]) -> None:
        """Reset the idle time of entries we hold and are still working on, so that nobody
        takes them over as a dead consumer's (XCLAIM JUSTID: no delivery is counted)."""
        if ids:
            self.client.xclaim(self.stream, self.group, self.consumer, 0, list(ids),
                               justid=True)

    @_needs_group
    def pending(self) -> int:
        """How many entries of this group are delivered and not acknowledged."""
        return int(self.client.xpending(self.stream, self.group)["pending"])

    def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge entries: this group is done with them."""
        return int(self.client.xack(self.stream, self.group, *ids)) if ids else 0

    def backlog(self) -> int:
        """Entries of this group not yet acknowledged: pending plus never delivered."""
        if not self.client.exists(self.stream):
            return 0
        for info in self.client.xinfo_groups(self.stream):
            if _text(info["name"]) == self.group:
                return int(info["pending"]) + int(info.get("lag") or 0)
        return int(self.client.xlen(self.stream))

    @_needs_group
    def trim_floor(self) -> str | None:
        """The smallest id some group still needs; None while a known group is missing."""
        infos = {_text(i["name"]): i for i in self.client.xinfo_groups(self.stream)}
        if not infos or any(group not in infos for group in self.groups):
            return None
        floors = []
        for name, info in infos.items():
            # last-delivered is read before XPENDING, so a stale value only lowers the floor.
            floor = next_id(_text(info["last-delivered-id"]))
            if int(info["pending"]):
                summary = self.client.xpending(self.stream, name)
                if summary["pending"]:
                    floor = _text(summary["min"])
            floors.append(floor)
        return min(floors, key=entry_number)

    def trim(self, step: int = TRIM_STEP) -> str | None:
        """Drop the entries every group has acknowledged; the floor trimmed to, if any.

        An approximate XTRIM removes at most ``step`` entries a call (Redis' default LIMIT
        is 100 x stream-node-max-entries, 10,000), in whole nodes of the stream, so it is
        called until it removes nothing: called once every few seconds, one call fell
        behind a sale of 4,000 orders/s and the stream kept ~40 MB of acknowledged entries.
        Each call stays short."""
        floor = self.trim_floor()
        if floor is not None:
            while self.client.xtrim(self.stream, minid=floor, approximate=True, limit=step):
                pass
        return floor

    @_needs_group
    def consumers(self) -> list[Consumer]:
        """This group's consumers, with what they hold and how long they have been quiet."""
        return [Consumer(_text(i["name"]), int(i["pending"]), int(i["idle"]))
                for i in self.client.xinfo_consumers(self.stream, self.group)]

    @_needs_group
    def remove_consumer(self, name: str) -> None:
        """Forget a consumer (its pending entries go with it: only for one that holds none)."""
        self.client.xgroup_delconsumer(self.stream, self.group, name)

    def leave(self) -> bool:
        """Remove this consumer from the group if it holds nothing, so that nobody waits for
        it to go quiet; whether it left."""
        me = [c for c in self.consumers() if c.name == self.consumer]
        if me and me[0].pending:
            return False
        if me:
            self.remove_consumer(self.consumer)
        return True

    def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove other consumers that hold nothing and were quiet for ``idle_ms``."""
        idle = [c for c in self.consumers()
                if c.name != self.consumer and not c.pending and c.idle_ms >= idle_ms]
        for consumer in idle:
            self.remove_consumer(consumer.name)
        return len(idle)


class Consumer(msgspec.Struct, frozen=True):
    """A consumer of a group: entries it holds and ms since it last touched the group."""

    name: str
    pending: int
    idle_ms: int


class DeadLetter(msgspec.Struct, frozen=True):
    """An event the forwarder gave up on, with the outbox entry it came from and why."""

    id: str
    entry: str
    data: bytes
    error: str
    attempts: int


class DeadLetters:
    """The dead-letter stream ``{ro}:outbox:dead``: events an operator can replay."""

    def __init__(self, client: redis.Redis, stream: str = keys.OUTBOX_DEAD) -> None:
        self.client = client
        self.stream = stream

    def add(self, entry: Entry, error: str, attempts: int) -> str:
        """Keep an undeliverable event."""
        fields: dict[str, bytes | str | int] = {
            EVENT_FIELD: entry.data, "entry": entry.id, "error": error[:500], "attempts": attempts}
        return _text(self.client.xadd(self.stream, fields))  # type: ignore[arg-type]

    def all(self, page: int = 1000) -> Iterator[DeadLetter]:
        """Every dead letter, oldest first, read ``page`` at a time."""
        start = "-"
        while raw := self._page(start, page):
            yield from (self._letter(_text(letter_id), fields) for letter_id, fields in raw)
            start = "(" + _text(raw[-1][0])

    def _page(self, start: str, count: int) -> Any:
        return self.client.xrange(self.stream, min=start, count=count)

    def remove(self, ids: Sequence[str]) -> int:
        """Forget dead letters (once replayed)."""
        return int(self.client.xdel(self.stream, *ids)) if ids else 0

    def count(self) -> int:
        """How many dead letters wait."""
        return int(self.client.xlen(self.stream))

    @staticmethod
    def _letter(letter_id: str, fields: dict[bytes, bytes]) -> DeadLetter:
        return DeadLetter(id=letter_id, entry=fields[b"entry"].decode(),
                          data=fields[_FIELD], error=fields[b"error"].decode(),
                          attempts=int(fields[b"attempts"]))
