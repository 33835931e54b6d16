"""uvicorn's httptools protocol with one ``write()`` per answer instead of two.

uvicorn writes an answer's status line and headers, then its body, each straight to the
socket: two system calls, two loopback segments for the client to wake up and read. On
this 2-core box a ``write()`` to a local socket cost about 9 µs of the API's CPU (the
receiver's TCP processing runs in the sender's system call) and was about a quarter of
an API worker's time under load. :class:`HttpToolsProtocol` hands uvicorn a transport
that gathers what is written in one event-loop tick and writes it at the end of the
tick; uvicorn sends both parts of an answer in one tick (its ``send`` does not wait
unless the socket's buffer is full), so they leave together. ``api.server`` names this
class as uvicorn's ``http`` protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http import httptools_impl


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


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
