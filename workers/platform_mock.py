"""A mock of the external data platform, as a separate process: ``rushorder platform``.

Endpoints (JSON):

* ``POST /events`` ``{"event_id", "type", "occurred_at", "order"}``: 202 when new, 200 when
  ``event_id`` was already received (deduped: kept once); 400 without an ``event_id``.
* ``GET /events``: ``{"items": [...], "received": n, "duplicates": n}``, items in arrival
  order; ``received`` counts every accepted POST, duplicates included.
* ``POST /control`` ``{"mode": "ok"|"fail"|"stall", "stall_s": 5.0}``: make ``POST /events``
  answer normally, answer 500 (keeping nothing), or answer normally after ``stall_s``
  seconds (what a slow platform does: the sender times out, yet the event is kept).
* ``POST /reset``: forget every event, back to ``ok``.  ``GET /health``: 200.

A plain asyncio HTTP/1.1 server with keep-alive: one process, no framework, so a test can
start and stop it in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from http import HTTPStatus
from typing import Any, Literal

import msgspec

from rushorder.settings import Settings

log = logging.getLogger("rushorder.platform")

Mode = Literal["ok", "fail", "stall"]
MAX_BODY = 1 << 20


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /control``."""

    mode: Mode
    stall_s: float = 5.0


class Incoming(msgspec.Struct, frozen=True):
    """What ``POST /events`` needs to find in a body (the rest is kept as sent)."""

    event_id: str


class Receiver:
    """The platform's state: the events kept, and how it behaves."""

    def __init__(self) -> None:
        self.events: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every event and counter; back to ``ok``."""
        self.events.clear()
        self.received = self.duplicates = 0
        self.mode: Mode = "ok"
        self.stall_s = 5.0

    async def post_event(self, body: bytes) -> tuple[int, Any]:
        """Keep an event once per ``event_id``."""
        if self.mode == "fail":
            return 500, {"detail": "the platform is failing (mock mode 'fail')"}
        if self.mode == "stall":
            await asyncio.sleep(self.stall_s)
        try:
            event_id = msgspec.json.decode(body, type=Incoming).event_id
            event = msgspec.json.decode(body)
        except msgspec.MsgspecError as exc:
            return 400, {"detail": f"bad event: {exc}"}
        self.received += 1
        if event_id in self.events:
            self.duplicates += 1
            return 200, {"event_id": event_id, "duplicate": True}
        self.events[event_id] = event
        return 202, {"event_id": event_id, "duplicate": False}

    def control(self, body: bytes) -> tuple[int, Any]:
        """Switch between ok, fail and stall."""
        try:
            wanted = msgspec.json.decode(body, type=Control)
        except msgspec.MsgspecError as exc:
            return 400, {"detail": f"bad control: {exc}"}
        self.mode, self.stall_s = wanted.mode, wanted.stall_s
        return 200, {"mode": self.mode, "stall_s": self.stall_s}

    def listing(self) -> dict[str, Any]:
        """Every kept event in arrival order, with the counters."""
        return {"items": list(self.events.values()), "received": self.received,
                "duplicates": self.duplicates}

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """One request's status and JSON answer."""
        path = path.split("?", 1)[0]
        if (method, path) == ("POST", "/events"):
            return await self.post_event(body)
        if (method, path) == ("GET", "/events"):
            return 200, self.listing()
        if (method, path) == ("POST", "/control"):
            return self.control(body)
        if (method, path) == ("POST", "/reset"):
            self.reset()
            return 200, {"mode": self.mode}
        if (method, path) == ("GET", "/health"):
            return 200, {"status": "ok"}
        return 404, {"detail": f"no route {method} {path}"}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    """One HTTP/1.1 request: method, path, lower-cased headers, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


def _response(status: int, answer: Any, keep_alive: bool) -> bytes:
    body = msgspec.json.encode(answer)
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode() + body


def handler(receiver: Receiver) -> Any:
    """The connection handler of ``asyncio.start_server``: requests one after another."""

    async def serve_connection(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                method, path, headers, body = await _read_request(reader)
                keep_alive = headers.get("connection", "").lower() != "close"
                status, answer = await receiver.route(method, path, body)
                writer.write(_response(status, answer, keep_alive))
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
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
