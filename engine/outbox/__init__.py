"""Consuming the outbox streams: read, reclaim, acknowledge and trim through consumer groups.

Each user group has an outbox stream, and the catalog one (engine/keys.py); :class:`Outbox`
consumes one stream, :class:`Outboxes` all of them.

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
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import msgspec
import redis

from engine import keys
from engine.outbox.events import EVENT_FIELD
from engine.scripts import load_scripts, script_keys

POSTGRES = "postgres"
PLATFORM = "platform"
CONSUMER_GROUPS = (POSTGRES, PLATFORM)  # created together: trimming never outruns one

_SEQ_RANGE = 1_000_000
TRIM_STEP = 10_000  # entries one XTRIM call may remove (a few ms of Redis)
# How often a read of every stream that found nothing looks again: the writer and the
# forwarder linger 60 ms between reads that found little anyway (workers/postgres.py).
POLL_MS = 20
_FIELD = EVENT_FIELD.encode()
# What Redis answers about a stream or group that does not exist.
# (redis-py drops the "ERR " prefix, and a pipeline's error names its command first.)
_MISSING = ("NOGROUP", "no such key", "requires the key to exist")

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
            if any(missing in str(exc) for missing in _MISSING):
                raise OutboxGone(f"the outbox or its group is gone ({exc}): Redis lost its "
                                 "data; `rushorder rebuild` restores it from Postgres") from exc
            raise

    return guarded


@functools.cache
def _open_outbox_source() -> str:
    return load_scripts()["open_outbox"].source


class Entry(msgspec.Struct, frozen=True):
    """One stream entry: its id (``ms-seq``), the event JSON of its ``e`` field, and the
    stream it is in (ids are unique within one stream only)."""

    id: str
    data: bytes
    stream: str = ""

    @property
    def key(self) -> str:
        """The entry's name among every stream's (what :class:`Outboxes` acknowledges)."""
        return f"{self.stream} {self.id}"

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


def _entries(raw: Iterable[tuple[bytes, dict[bytes, bytes] | None]],
             stream: str = "") -> list[Entry]:
    """redis-py's ``[(id, {field: value})]`` as Entries (a bytes client, no decoding)."""
    return [Entry(_text(entry), fields[_FIELD], stream) for entry, fields in raw if fields]


def split_key(key: str) -> tuple[str, str]:
    """The stream and entry id of an entry key (:attr:`Entry.key`, ``"<stream> <id>"``); a
    plain entry id has the stream ``""``."""
    stream, _, entry = key.rpartition(" ")
    return stream, entry


def _ids(ids: Iterable[str]) -> list[str]:
    """Entry ids of ids or keys (:attr:`Entry.key`)."""
    return [split_key(i)[1] for i in ids]


def _gone(raw: Iterable[tuple[bytes, dict[bytes, bytes] | None]]) -> list[str]:
    """Ids of entries deleted from the stream while pending (they come back without fields)."""
    return [_text(entry) for entry, fields in raw if not fields]


class Outbox:
    """One consumer of one consumer group of the outbox, over a redis-py client that does
    not decode."""

    def __init__(
        self, client: redis.Redis, consumer_group: str, consumer: str, *,
        stream: str = keys.OUTBOX, consumer_groups: Sequence[str] = CONSUMER_GROUPS,
    ) -> None:
        self.client = client
        self.consumer_group = consumer_group
        self.consumer = consumer
        self.stream = stream
        self.consumer_groups = tuple(consumer_groups)

    def create_groups(self) -> None:
        """Create every known group (and the stream) if missing, each at the beginning of
        the stream; :class:`OutboxGone` in a Redis that holds no live state."""
        opened = self.client.register_script(_open_outbox_source())
        names = script_keys("open_outbox", live=keys.live_of(self.stream), outbox=self.stream)
        code, detail = opened(keys=names, args=list(self.consumer_groups))
        if code != b"OK":
            raise OutboxGone(f"{_text(code)}: {_text(detail)}")

    @_needs_group
    def read(self, count: int, block_ms: int | None = None) -> list[Entry]:
        """Up to ``count`` entries never delivered to this group, now pending on us."""
        reply: Any = self.client.xreadgroup(
            self.consumer_group, self.consumer, {self.stream: ">"}, count=count, block=block_ms)
        return _entries(reply[0][1], self.stream) if reply else []

    @_needs_group
    def read_own(self, count: int) -> list[Entry]:
        """Entries already delivered to this very consumer and not yet acknowledged."""
        reply: Any = self.client.xreadgroup(
            self.consumer_group, self.consumer, {self.stream: "0"}, count=count)
        raw = reply[0][1] if reply else []
        self.ack(_gone(raw))
        return _entries(raw, self.stream)

    @_needs_group
    def reclaim(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over up to ``count`` entries pending on any consumer for ``min_idle_ms``.

        Entries deleted from the stream while pending are acknowledged: nobody can apply them.
        """
        claimed: list[Entry] = []
        start = "0-0"
        while len(claimed) < count:
            reply = self.client.xautoclaim(self.stream, self.consumer_group, self.consumer,
                                           min_idle_ms, start_id=start,
                                           count=count - len(claimed))
            start = _text(reply[0])
            claimed += _entries(reply[1], self.stream)
            self.ack([_text(gone) for gone in reply[2]] if len(reply) > 2 else [])
            if start == "0-0":
                break
        return claimed

    @_needs_group
    def touch(self, ids: Sequence[str]) -> None:
        """Reset the idle time of entries we hold and are still working on, so that nobody
        takes them over as a dead consumer's (XCLAIM JUSTID: no delivery is counted).
        ``ids``: entry ids or keys (:attr:`Entry.key`) of this stream's."""
        if ids:
            self.client.xclaim(self.stream, self.consumer_group, self.consumer, 0,
                               list[Any](_ids(ids)), justid=True)

    @_needs_group
    def pending(self) -> int:
        """How many entries of this group are delivered and not acknowledged."""
        return int(self.client.xpending(self.stream, self.consumer_group)["pending"])

    def ack(self, ids: Sequence[str]) -> int:
        """Acknowledge entries (ids or keys of this stream's): this group is done with them."""
        return int(self.client.xack(self.stream, self.consumer_group, *_ids(ids))) if ids else 0

    def backlog(self) -> int:
        """Entries of this group not yet acknowledged: pending plus never delivered."""
        if not self.client.exists(self.stream):
            return 0
        for info in self.client.xinfo_groups(self.stream):
            if _text(info["name"]) == self.consumer_group:
                return int(info["pending"]) + int(info.get("lag") or 0)
        return int(self.client.xlen(self.stream))

    @_needs_group
    def trim_floor(self) -> str | None:
        """The smallest id some group still needs; None while a known group is missing."""
        infos = {_text(i["name"]): i for i in self.client.xinfo_groups(self.stream)}
        if not infos or any(group not in infos for group in self.consumer_groups):
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
                for i in self.client.xinfo_consumers(self.stream, self.consumer_group)]

    @_needs_group
    def remove_consumer(self, name: str) -> None:
        """Forget a consumer (its pending entries go with it: only for one that holds none)."""
        self.client.xgroup_delconsumer(self.stream, self.consumer_group, name)

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


class Outboxes:
    """One consumer of one consumer group over every outbox stream of a layout (each user
    group's,
    then the catalog's): what the workers read. Entries are named by :attr:`Entry.key`.

    Each stream is a consumer group of its own, read, reclaimed, acknowledged and trimmed
    on its own; a read takes every stream in one pipelined round trip. The streams may live
    in different Redis Cluster slots, so no command spans two of them, and a read that finds
    nothing polls rather than blocks (a blocking read waits on one slot's streams only).
    """

    def __init__(
        self, client: redis.Redis, consumer_group: str, consumer: str, *,
        layout: keys.Layout | None = None, consumer_groups: Sequence[str] = CONSUMER_GROUPS,
        poll_ms: int = POLL_MS,
    ) -> None:
        self.client = client
        self.consumer_group = consumer_group
        self.consumer = consumer
        self.layout = layout or keys.layout(keys.DEFAULT_GROUPS)
        self.poll_s = poll_ms / 1000
        self.streams = [Outbox(client, consumer_group, consumer, stream=stream,
                               consumer_groups=consumer_groups)
                        for stream in self.layout.outboxes]
        self._by_name = {outbox.stream: outbox for outbox in self.streams}

    def source(self, entry: Entry) -> int:
        """The entry's stream as Postgres names it (``outbox_applied.stream``)."""
        return self.layout.sources[entry.stream]

    def create_groups(self) -> None:
        """Every stream's groups (:meth:`Outbox.create_groups`)."""
        for outbox in self.streams:
            outbox.create_groups()

    def read(self, count: int, block_ms: int | None = None) -> list[Entry]:
        """About ``count`` entries never delivered to this group, now pending on us: the
        catalog's first, then each group's in stream order. Streams get equal shares; what a
        quiet stream leaves goes to the busy ones in a further round. With ``block_ms``, an
        empty read is tried again every ``poll_ms`` until that much time has passed."""
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while True:
            found = self._read_rounds(count)
            if found or time.monotonic() + self.poll_s > deadline:
                return found
            time.sleep(self.poll_s)

    def _read_rounds(self, count: int) -> list[Entry]:
        catalog, users = self.streams[-1], self.streams[:-1]
        # The catalog's entries go first: an entry of a group names only products and
        # coupons whose entries are older, so each catalog read comes after the groups'
        # reads it must cover, and is repeated until it reached the stream's end.
        first = self._read_each([(catalog, count)])[0]
        if len(first) >= count:
            return first
        got: list[Entry] = []
        busy, left = users, count - len(first)
        while busy and left > 0:
            share = max(1, -(-left // len(busy)))
            *answers, tail = self._read_each([(o, share) for o in busy] + [(catalog, count)])
            while len(tail) >= count:
                first += tail
                tail = self._read_each([(catalog, count)])[0]
            first += tail
            for entries in answers:
                got += entries
                left -= len(entries)
            busy = [o for o, entries in zip(busy, answers, strict=True) if len(entries) >= share]
        return first + got

    @_needs_group
    def _read_each(self, reads: Sequence[tuple[Outbox, int]]) -> list[list[Entry]]:
        pipe = self.client.pipeline(transaction=False)
        for outbox, count in reads:
            pipe.xreadgroup(self.consumer_group, self.consumer, {outbox.stream: ">"}, count=count)
        return [_entries(reply[0][1], outbox.stream) if reply else []
                for (outbox, _), reply in zip(reads, pipe.execute(), strict=True)]

    def read_own(self, count: int) -> list[Entry]:
        """Entries already delivered to this very consumer and not acknowledged, any stream."""
        return [e for outbox in self.streams for e in outbox.read_own(count)]

    def reclaim(self, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries pending on any consumer for ``min_idle_ms``, up to ``count`` a stream."""
        return [e for outbox in self.streams for e in outbox.reclaim(min_idle_ms, count)]

    def _split(self, entry_keys: Iterable[str]) -> dict[str, list[str]]:
        ids: dict[str, list[str]] = {}
        for key in entry_keys:
            stream, entry = split_key(key)
            ids.setdefault(stream, []).append(entry)
        return ids

    def touch(self, entry_keys: Sequence[str]) -> None:
        """:meth:`Outbox.touch` of entries named by their keys."""
        for stream, ids in self._split(entry_keys).items():
            self._by_name[stream].touch(ids)

    def ack(self, entry_keys: Sequence[str]) -> int:
        """Acknowledge entries named by their keys."""
        ids = self._split(entry_keys)
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for stream, entries in ids.items():
            pipe.xack(stream, self.consumer_group, *entries)
        return sum(int(n) for n in pipe.execute())

    def pending(self) -> int:
        """Entries of this group delivered and not acknowledged, over every stream."""
        return sum(outbox.pending() for outbox in self.streams)

    def backlog(self) -> int:
        """Entries of this group not yet acknowledged, over every stream."""
        return sum(outbox.backlog() for outbox in self.streams)

    def trim(self, step: int = TRIM_STEP) -> dict[str, str]:
        """Each stream trimmed below what every group acknowledged: the floors trimmed to."""
        floors = {outbox.stream: outbox.trim(step) for outbox in self.streams}
        return {stream: floor for stream, floor in floors.items() if floor is not None}

    def consumers(self) -> list[Consumer]:
        """This group's consumers over every stream: what each holds in all, and how long
        since it last touched any of them."""
        seen: dict[str, Consumer] = {}
        for outbox in self.streams:
            for c in outbox.consumers():
                was = seen.get(c.name)
                seen[c.name] = c if was is None else Consumer(
                    c.name, was.pending + c.pending, min(was.idle_ms, c.idle_ms))
        return list(seen.values())

    def leave(self) -> bool:
        """:meth:`Outbox.leave` of every stream; whether it left them all."""
        return all([outbox.leave() for outbox in self.streams])

    def forget_idle_consumers(self, idle_ms: int) -> int:
        """:meth:`Outbox.forget_idle_consumers` of every stream; consumers removed."""
        return sum(outbox.forget_idle_consumers(idle_ms) for outbox in self.streams)


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
    stream: str = ""  # the outbox stream the entry was in (empty: from before the groups)


class DeadLetters:
    """The dead-letter stream ``{ro}:outbox:dead``: events an operator can replay."""

    def __init__(self, client: redis.Redis, stream: str = keys.OUTBOX_DEAD) -> None:
        self.client = client
        self.stream = stream

    def add(self, entry: Entry, error: str, attempts: int) -> str:
        """Keep an undeliverable event."""
        fields: dict[str, bytes | str | int] = {
            EVENT_FIELD: entry.data, "entry": entry.id, "stream": entry.stream,
            "error": error[:500], "attempts": attempts}
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
                          attempts=int(fields[b"attempts"]),
                          stream=fields.get(b"stream", b"").decode())
