"""uvicorn's httptools protocol with one ``write()`` per answer instead of two, and with
the transport limits uvicorn lacks.

uvicorn writes an answer's status line and headers, then its body, each straight to the
socket: two system calls, two loopback segments for the client to wake up and read. On
this 2-core box a ``write()`` to a local socket cost about 9 µs of the API's CPU (the
receiver's TCP processing runs in the sender's system call) and was about a quarter of
an API worker's time under load. :class:`HttpToolsProtocol` hands uvicorn a transport
that gathers what is written in one event-loop tick and writes it at the end of the
tick; uvicorn sends both parts of an answer in one tick (its ``send`` does not wait
unless the socket's buffer is full), so they leave together. ``api.server`` names this
class as uvicorn's ``http`` protocol.

Limits (:class:`TransportLimits`, from the settings). uvicorn with httptools served an
8 MiB header and 2,000 header fields, kept a request whose head or body stopped arriving
open for good (a slowloris needs nothing more), and took any number of connections. Here:

- header fields: past ``max_headers`` fields, or ``max_header_bytes`` of request line and
  fields together, the answer is 431 and the connection closes; the head is counted as it
  arrives, so a huge header is refused after about the limit, not read whole;
- read timeout: a request must arrive whole within ``read_timeout_s`` of its first byte,
  else 408 and the connection closes (an idle connection, before or between requests,
  keeps uvicorn's keep-alive timeout, armed here from the start too); one sweep a
  second (:class:`Sweeper`) finds the late ones, so a request costs no timer of its own;
- connections: past ``max_connections`` open ones in this process, a new one is answered
  503 and closed at once, before it costs a request.

Each refusal is a problem document, written straight to the socket with
``Connection: close``. The checks are placed where uvicorn already calls us (a new
message, its head complete, a chunk received), at well under a microsecond a request:
a per-request timer and a count per header field cost a fifth of a trivial answer's
throughput (wrk -c64, interleaved).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import monotonic
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from api.problems import problem
from rushorder.settings import Settings


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """What one connection may cost a worker process (the settings' ``http_*``)."""

    max_headers: int = 100
    max_header_bytes: int = 32_768
    read_timeout_s: float = 30.0
    max_connections: int = 1_000

    @classmethod
    def of(cls, settings: Settings) -> TransportLimits:
        """The limits the settings ask for."""
        return cls(max_headers=settings.http_max_headers,
                   max_header_bytes=settings.http_max_header_bytes,
                   read_timeout_s=settings.http_read_timeout_s,
                   max_connections=settings.http_max_connections)


def refusal(status: int, code: str, detail: str, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 answer carrying a problem document, after which the server closes."""
    body = problem(code, detail, status).body
    head = [httptools_impl.STATUS_LINE[status],
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n",
            *(h + b"\r\n" for h in headers), b"\r\n"]
    return b"".join(head) + body


HEADERS_TOO_LARGE = refusal(431, "HEADERS_TOO_LARGE", "too many or too large header fields")
REQUEST_TIMEOUT = refusal(408, "REQUEST_TIMEOUT",
                          "the request did not arrive whole in time; send it again")
TOO_MANY_CONNECTIONS = refusal(503, "SERVICE_UNAVAILABLE",
                               "too many open connections; retry", b"retry-after: 1")


class CoalescingTransport:
    """``transport`` with the writes of one event-loop tick joined into one write.

    Everything but writing and closing is the wrapped transport's own (``__getattr__``),
    so flow control, addresses and ``is_closing`` behave as before. Closing first writes
    what is pending, as closing a transport with buffered data does."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def writelines(self, chunks: Any) -> None:
        for data in chunks:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        pending = sum(map(len, self._pending)) if self._pending else 0
        return pending + self._transport.get_write_buffer_size()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Sweeper:
    """Closes the connections of one server whose request has been arriving for longer
    than their read timeout: one pass over the open connections every ``every_s``, while
    there are any (a timer per request cost more than the request's own parsing)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any],
                 every_s: float) -> None:
        self.loop = loop
        self.connections = connections
        self.every_s = every_s
        self.running = False

    def wake(self) -> None:
        """Sweep from now on (a connection opened)."""
        if not self.running:
            self.running = True
            self.loop.call_later(self.every_s, self.sweep)

    def sweep(self) -> None:
        """Expire the late requests; sleep once no connection is open."""
        now = monotonic()
        for conn in list(self.connections):
            if isinstance(conn, HttpToolsProtocol) and conn.late(now):
                conn.expire()
        if self.connections:
            self.loop.call_later(self.every_s, self.sweep)
        else:
            self.running = False


def _sweeper(protocol: HttpToolsProtocol) -> Sweeper:
    """The sweeper of the protocol's server (one per server, kept on its shared state)."""
    state = protocol.server_state
    found: Sweeper | None = getattr(state, "rushorder_sweeper", None)
    if found is None:
        every_s = min(1.0, protocol.limits.read_timeout_s / 2)
        found = Sweeper(protocol.loop, protocol.connections, every_s)
        state.rushorder_sweeper = found  # type: ignore[attr-defined]
    return found


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol writing through a :class:`CoalescingTransport`,
    within :class:`TransportLimits` (``api.server`` passes the settings' limits)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None,
                 limits: TransportLimits = TransportLimits()) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.refused = False
        # When the request being read began to arrive (None: none is arriving).
        self.started: float | None = None
        # Bytes received while in a request's head (None: its head is complete). Every
        # chunk before the one that completes the head is head, so this bounds it.
        self.head_bytes: int | None = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        if len(self.connections) > self.limits.max_connections:
            self.refuse(TOO_MANY_CONNECTIONS)
            return
        _sweeper(self).wake()
        # Idle until the first byte, as between requests: uvicorn arms this only after
        # an answer, so a connection that never sent a byte stayed open for good.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def refuse(self, answer: bytes) -> None:
        """Answer ``answer`` and close; whatever else arrives is ignored."""
        self.refused = True
        self.started = None
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()  # writes what is pending first

    def late(self, now: float) -> bool:
        """Whether a request has been arriving for longer than the read timeout."""
        return self.started is not None and now - self.started > self.limits.read_timeout_s

    def expire(self) -> None:
        """The request is late: 408 unless an answer has begun (then just close)."""
        if self.cycle is not None and not self.cycle.response_complete \
                and self.cycle.response_started:
            self.refused, self.started = True, None
            self.transport.close()
        else:
            self.refuse(REQUEST_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.head_bytes is not None:
            # A head already past the limit is refused before httptools, which keeps a
            # header field whole until it ends, reads megabytes of it.
            if self.head_bytes > self.limits.max_header_bytes:
                self.refuse(HEADERS_TOO_LARGE)
                return
            self.head_bytes += len(data)
        super().data_received(data)

    # -- the parser's callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.started = monotonic()

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        head, self.head_bytes = self.head_bytes, None
        if len(self.headers) > self.limits.max_headers or (
                head is not None and head > self.limits.max_header_bytes
                and self._head_size() > self.limits.max_header_bytes):
            self.refuse(HEADERS_TOO_LARGE)
            return
        super().on_headers_complete()

    def _head_size(self) -> int:
        """The request line's target and the header fields, as received."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            self.started = None
            self.head_bytes = 0
            super().on_message_complete()
