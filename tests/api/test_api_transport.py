"""api.transport: what uvicorn writes in one tick leaves in one write, and nothing is lost.

The whole API suite runs through this transport (the test server uses the production
protocol); these tests pin the transport's own promises on a recording transport, and
count the writes of a real answer on a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from api.server import HTTP_PROTOCOL
from api.transport import CoalescingTransport, HttpToolsProtocol


class Recording:
    """A transport that records each write() it is given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def tick() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_writes_of_one_tick_leave_as_one_write_in_order() -> None:
    inner = Recording()
    out = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    head, body = b"HTTP/1.1 201 Created\r\n\r\n", b'{"id":"1"}'
    out.write(head)
    out.write(body)
    assert inner.writes == []
    assert out.get_write_buffer_size() == 7 + len(head) + len(body)
    await tick()
    assert inner.writes == [head + body]
    out.write(b"next")
    await tick()
    assert inner.writes[1:] == [b"next"]
    assert out.get_extra_info("sockname") == ("127.0.0.1", 8000)  # the rest is the inner's


async def test_close_writes_what_is_pending_first_and_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    inner = Recording()
    out = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    out.write(b"head")
    out.writelines([b"bo", b"dy"])
    out.close()
    assert inner.writes == [b"headbody"] and inner.closed
    await tick()  # the scheduled flush finds nothing left and writes nothing more
    assert inner.writes == [b"headbody"]

    inner = Recording()
    out = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    out.write(b"never")
    out.abort()
    await tick()
    assert inner.writes == [] and inner.aborted


async def test_nothing_is_written_to_a_transport_closed_meanwhile() -> None:
    inner = Recording()
    out = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    out.write(b"late")
    inner.closed = True  # the peer went away before the end of the tick
    await tick()
    assert inner.writes == []


def test_the_server_uses_this_protocol() -> None:
    module, name = HTTP_PROTOCOL.split(":")
    assert (module, name) == (HttpToolsProtocol.__module__, HttpToolsProtocol.__name__)


async def test_an_answer_reaches_the_socket_in_one_send(base_url: str, monkeypatch) -> None:
    """On the served app: every send() the server makes carries a whole answer."""
    sends: list[int] = []
    real = CoalescingTransport._flush

    def counted(self: CoalescingTransport) -> None:
        if self._pending:
            sends.append(len(self._pending))
        real(self)

    monkeypatch.setattr(CoalescingTransport, "_flush", counted)
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(3):
            assert (await client.get("/health/live")).status_code == 200
    assert sends == [2, 2, 2]  # status line and headers, then body: one write each time
