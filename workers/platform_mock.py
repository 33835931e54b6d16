"""A mock of the external data platform, as a separate process: ``rushorder platform``.

Endpoints (JSON):

* ``POST /events`` ``{"event_id", "type", "occurred_at", "order"}``: 202 when new, 200 when
  ``event_id`` was already received (deduped: kept once); 400 without an ``event_id``; 422
  when a rejection rule (below) refuses it.
* ``POST /events/batch`` ``[<event>, ...]`` (at most :data:`MAX_BATCH` events and
  :data:`MAX_BODY` bytes, else 413): each event is kept, counted as a duplicate, or
  rejected on its own; 200 ``{"accepted": n, "duplicates": n, "rejected": [{"event_id",
  "index", "error"}]}`` (``event_id`` null for an element that has none); 400 when the
  body is not a JSON array.
* ``GET /events``: ``{"items": [...], "received": n, "duplicates": n}``, items in arrival
  order, as sent; ``received`` counts every accepted event, duplicates included.
* ``GET /stats``: the counters alone (events, requests by endpoint, failures answered, the
  most POSTs of events handled at once).
* ``GET /arrivals``: ``{"items": [[t, [event_id, ...]], ...]}``: when (epoch seconds) each
  request's new events were kept, for measuring lag.
* ``POST /control`` ``{"mode": "ok"|"fail"|"throttle"|"stall", "stall_s": 5.0,
  "reject_pattern": null, "reject_every": 0}``: make both POSTs answer normally, answer
  500 or 429 (keeping nothing), or answer normally after ``stall_s`` seconds (what a slow
  platform does: the sender times out, yet the events are kept). ``reject_pattern`` (a
  pattern searched in ``event_id``: see :data:`PATTERN_SYNTAX`) and ``reject_every`` (every
  Nth new ``event_id``) refuse chosen events; a refused ``event_id`` stays refused.
* ``POST /reset``: forget every event and rule, back to ``ok``.  ``GET /health``: 200.

A plain asyncio HTTP/1.1 server with keep-alive: one process, no framework, so a test can
start and stop it in a fraction of a second. A batch is decoded once into raw elements and
kept as sent, so it takes a few microseconds an event.

Bad input is a 400, never a dropped connection: JSON nested deeper than the decoder
recurses (``[[[[...``) included. The mock listens without authentication, so its rules
must not let a request make it spin: a reject pattern is a regular expression without
repetition or groups, whose search costs at most its length per character of the id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import Awaitable, Iterable
from http import HTTPStatus
from typing import Any, Literal

import msgspec

from rushorder.settings import Settings

log = logging.getLogger("rushorder.platform")

Mode = Literal["ok", "fail", "throttle", "stall"]
MAX_BODY = 1 << 20  # bytes of one request body
MAX_BATCH = 500  # events of one POST /events/batch
_DISCARD_LIMIT = 64 << 20  # a larger body is not even read: the connection is dropped
MAX_PATTERN = 64  # characters of a reject pattern
# What a reject pattern may hold: literal characters, ``.``, classes ``[...]`` (no escapes,
# no nesting), ``^`` first and ``$`` last. No ``* + ? {}`` or ``( | )``: with nothing to
# repeat or choose, a search tries each position of the id once against a pattern of at
# most MAX_PATTERN characters, so no id can make it backtrack (``(a+)+$`` could for seconds).
PATTERN_SYNTAX = r"\^?(?:[^\\*+?{}()|\[\]^$]|\[\^?[^\[\]\\]+\])*\$?"
_PATTERN = re.compile(PATTERN_SYNTAX)
# A deeply nested body makes msgspec raise RecursionError: bad JSON too.
_BAD_JSON = (msgspec.MsgspecError, RecursionError)


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /control``."""

    mode: Mode
    stall_s: float = 5.0
    reject_pattern: str | None = None
    reject_every: int = 0


class Incoming(msgspec.Struct, frozen=True):
    """What the platform needs to find in an event (the rest is kept as sent)."""

    event_id: str


class Rejection(msgspec.Struct, frozen=True):
    """One event of a batch the platform refused, and why."""

    event_id: str | None
    index: int
    error: str


class BatchAnswer(msgspec.Struct):
    """The answer to ``POST /events/batch``."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = msgspec.field(default_factory=list)


class Request(msgspec.Struct):
    """One HTTP request; ``body`` is None when it was over :data:`MAX_BODY` (discarded)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    length: int


_INCOMING = msgspec.json.Decoder(Incoming)
_BATCH = msgspec.json.Decoder(list[msgspec.Raw])
_CONTROL = msgspec.json.Decoder(Control)


def linear_pattern(pattern: str) -> re.Pattern[str]:
    """A reject pattern compiled, or ValueError if it is not of :data:`PATTERN_SYNTAX` (its
    search would not be linear in the id) or longer than :data:`MAX_PATTERN`."""
    if len(pattern) > MAX_PATTERN or not _PATTERN.fullmatch(pattern):
        raise ValueError(
            f"reject_pattern {pattern[:MAX_PATTERN]!r}: at most {MAX_PATTERN} characters of "
            "literals, '.', [classes], a leading ^ and a trailing $; no repetition "
            "(* + ? {}), groups or alternatives, so that a check stays linear in the id")
    return re.compile(pattern)


class Rules:
    """Which events the platform refuses: by ``event_id`` pattern, or every Nth new one."""

    def __init__(self, control: Control | None = None) -> None:
        self.pattern = linear_pattern(control.reject_pattern) \
            if control and control.reject_pattern else None
        self.every = control.reject_every if control else 0
        self.refused: dict[str, str] = {}
        self.seen = 0

    def refusal(self, event_id: str) -> str | None:
        """Why ``event_id`` is refused, or None (called once per new event)."""
        if event_id in self.refused:
            return self.refused[event_id]
        error = None
        if self.pattern is not None and self.pattern.search(event_id):
            error = f"event_id matches {self.pattern.pattern!r} (mock rule)"
        elif self.every:
            self.seen += 1
            if self.seen % self.every == 0:
                error = f"every {self.every}th event is refused (mock rule)"
        if error is not None:
            self.refused[event_id] = error
        return error


class Receiver:
    """The platform's state: the events kept, and how it behaves."""

    def __init__(self) -> None:
        self.events: dict[str, msgspec.Raw] = {}
        self.arrivals: list[tuple[float, list[str]]] = []
        self.in_flight = 0  # POSTs of events being handled now
        self.reset()

    def reset(self) -> None:
        """Forget every event, counter and rule; back to ``ok``."""
        self.events.clear()
        self.arrivals.clear()
        self.received = self.duplicates = self.rejected = 0
        self.requests = {"single": 0, "batch": 0, "failed": 0}
        self.most_in_flight = 0  # the most POSTs of events handled at once
        self.mode: Mode = "ok"
        self.stall_s = 5.0
        self.rules = Rules()

    async def _misbehave(self) -> tuple[int, Any] | None:
        """The answer of a failing or throttling platform; a stalling one sleeps first."""
        if self.mode == "fail":
            self.requests["failed"] += 1
            return 500, {"detail": "the platform is failing (mock mode 'fail')"}
        if self.mode == "throttle":
            self.requests["failed"] += 1
            return 429, {"detail": "too many requests (mock mode 'throttle')"}
        if self.mode == "stall":
            await asyncio.sleep(self.stall_s)
        return None

    def _keep(self, event_id: str, raw: msgspec.Raw) -> bool:
        """Keep a new event; False if it was already kept (a duplicate)."""
        self.received += 1
        if event_id in self.events:
            self.duplicates += 1
            return False
        self.events[event_id] = raw
        return True

    async def post_event(self, body: bytes) -> tuple[int, Any]:
        """Keep one event once per ``event_id``."""
        self.requests["single"] += 1
        if (trouble := await self._misbehave()) is not None:
            return trouble
        try:
            event_id = _INCOMING.decode(body).event_id
        except _BAD_JSON as exc:
            return 400, {"detail": f"bad event: {exc}"}
        if event_id not in self.events and (error := self.rules.refusal(event_id)):
            self.rejected += 1
            return 422, {"event_id": event_id, "detail": error}
        if not self._keep(event_id, msgspec.Raw(body)):
            return 200, {"event_id": event_id, "duplicate": True}
        self.arrivals.append((time.time(), [event_id]))
        return 202, {"event_id": event_id, "duplicate": False}

    async def post_batch(self, body: bytes) -> tuple[int, Any]:
        """Keep each event of a JSON array once per ``event_id``; answer per event."""
        self.requests["batch"] += 1
        if (trouble := await self._misbehave()) is not None:
            return trouble
        try:
            elements = _BATCH.decode(body)
        except _BAD_JSON as exc:
            return 400, {"detail": f"the body must be a JSON array of events: {exc}"}
        if len(elements) > MAX_BATCH:
            return 413, {"detail": f"{len(elements)} events in one batch; at most {MAX_BATCH}"}
        answer, kept = self._batch(elements)
        self.arrivals.append((time.time(), kept))
        return 200, answer

    def _batch(self, elements: Iterable[msgspec.Raw]) -> tuple[BatchAnswer, list[str]]:
        answer, kept = BatchAnswer(), []
        for index, raw in enumerate(elements):
            try:
                event_id = _INCOMING.decode(raw).event_id
            except _BAD_JSON as exc:
                answer.rejected.append(Rejection(None, index, f"bad event: {exc}"))
                continue
            if event_id not in self.events and (error := self.rules.refusal(event_id)):
                answer.rejected.append(Rejection(event_id, index, error))
            elif self._keep(event_id, raw):
                kept.append(event_id)
            else:
                answer.duplicates += 1
        answer.accepted = len(kept)
        self.rejected += len(answer.rejected)
        return answer, kept

    def control(self, body: bytes) -> tuple[int, Any]:
        """Switch between ok, fail, throttle and stall; set the rejection rules."""
        try:
            wanted = _CONTROL.decode(body)
            rules = Rules(wanted)
        except (*_BAD_JSON, ValueError, re.error) as exc:
            return 400, {"detail": f"bad control: {exc}"}
        self.mode, self.stall_s, self.rules = wanted.mode, wanted.stall_s, rules
        return 200, msgspec.to_builtins(wanted)

    def stats(self) -> dict[str, Any]:
        """The counters."""
        return {"kept": len(self.events), "received": self.received,
                "duplicates": self.duplicates, "rejected": self.rejected,
                "requests": dict(self.requests), "most_in_flight": self.most_in_flight}

    def listing(self) -> dict[str, Any]:
        """Every kept event in arrival order, with the counters."""
        return {"items": list(self.events.values()), "received": self.received,
                "duplicates": self.duplicates}

    async def route(self, request: Request) -> tuple[int, Any]:
        """One request's status and JSON answer."""
        method, path = request.method, request.path.split("?", 1)[0]
        if request.body is None:
            return 413, {"detail": f"a body of {request.length} bytes; at most {MAX_BODY}"}
        if (method, path) == ("POST", "/events/batch"):
            return await self._counted(self.post_batch(request.body))
        if (method, path) == ("POST", "/events"):
            return await self._counted(self.post_event(request.body))
        if method == "GET" and path in self._views:
            return 200, self._views[path](self)
        if (method, path) == ("POST", "/control"):
            return self.control(request.body)
        if (method, path) == ("POST", "/reset"):
            self.reset()
            return 200, {"mode": self.mode}
        return 404, {"detail": f"no route {method} {path}"}

    async def _counted(self, handling: Awaitable[tuple[int, Any]]) -> tuple[int, Any]:
        """Handle a POST of events, keeping count of how many are handled at once."""
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await handling
        finally:
            self.in_flight -= 1

    _views = {
        "/events": listing,
        "/stats": stats,
        "/arrivals": lambda self: {"items": self.arrivals},
        "/health": lambda self: {"status": "ok"},
    }


async def _read_request(reader: asyncio.StreamReader) -> Request:
    """One HTTP/1.1 request; a body over :data:`MAX_BODY` is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length > _DISCARD_LIMIT:
        raise ValueError("body far too large")
    if length > MAX_BODY:
        await _discard(reader, length)
        return Request(method, path, headers, None, length)
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, headers, body, length)


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length > 0:
        chunk = await reader.read(min(length, 1 << 16))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length)
        length -= len(chunk)


def _response(status: int, answer: Any, keep_alive: bool) -> bytes:
    body = msgspec.json.encode(answer)
    extra = "retry-after: 1\r\n" if status == 429 else ""
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode() + body


def handler(receiver: Receiver) -> Any:
    """The connection handler of ``asyncio.start_server``: requests one after another."""

    async def serve_connection(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                keep_alive = request.headers.get("connection", "").lower() != "close"
                status, answer = await receiver.route(request)
                writer.write(_response(status, answer, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass  # the client went away, or spoke something that is not HTTP/1.1
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return serve_connection


async def serve_async(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation)."""
    receiver = Receiver()
    server = await asyncio.start_server(handler(receiver), host, port, reuse_address=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopped.set)
    log.info("mock data platform on http://%s:%d", host, port)
    if ready is not None:
        ready.set()
    async with server:
        await stopped.wait()


def serve(settings: Settings) -> None:
    """Run the mock platform on ``settings.platform_port`` (host: ``settings.http_host``)."""
    asyncio.run(serve_async(settings.http_host, settings.platform_port))
