"""api.transport: what uvicorn writes in one tick leaves in one write, and nothing is lost;
and no connection costs more than the transport limits allow.

The whole API suite runs through this transport (the test server uses the production
protocol); these tests pin the transport's own promises on a recording transport, and
count the writes of a real answer on a real socket. The limits (header fields, the read
timeout, the connection cap) are tested over raw sockets against ``api.server.serve`` in
a process of its own, as production runs it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.server import HTTP_PROTOCOL, granian_http1
from api.transport import CoalescingTransport, HttpToolsProtocol, TransportLimits
from rushorder.servers import free_port
from rushorder.settings import Settings
from tests.api.support import ServerProcess


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


# -- transport limits (issue 25), on a served API process over raw sockets ----------------

READ_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 6
SOCKET_WAIT_S = 20.0  # how long a test waits for the server to act: far past its timeout


@pytest.fixture(scope="module")
def limited(api_settings: Settings, tmp_path_factory: pytest.TempPathFactory,
            ) -> Iterator[ServerProcess]:
    """``api.server.serve`` (uvicorn, one worker) with a short read timeout and a small
    connection cap, so that the limits show quickly."""
    log = tmp_path_factory.mktemp("limited") / "api.log"
    server = ServerProcess(api_settings.replace(
        http_port=free_port(), api_workers=1, api_server="uvicorn",
        http_read_timeout_s=READ_TIMEOUT_S, http_max_connections=MAX_CONNECTIONS), log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def connect(server: ServerProcess) -> socket.socket:
    """A raw TCP connection to the server."""
    sock = socket.create_connection(("127.0.0.1", server.settings.http_port), timeout=5)
    sock.settimeout(SOCKET_WAIT_S)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too);
    a server that neither answers nor closes fails the test with a timeout."""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0 for none)."""
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def problem_of(answer: bytes) -> dict:
    """The problem document of a raw HTTP answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return json.loads(body)


def request(path: str = "/health/live", headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A raw GET with these header fields, asking the server to close after it."""
    lines = [f"GET {path} HTTP/1.1", "Host: test", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ask(server: ServerProcess, raw: bytes) -> bytes:
    with connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        return read_all(sock)


def test_a_request_within_the_header_limits_is_served(limited: ServerProcess) -> None:
    many = [(f"x-h{i}", "v") for i in range(90)]
    large = [("x-large", "a" * 30_000)]
    for headers in (many, large, []):
        assert status_of(ask(limited, request(headers=headers))) == 200


def test_too_many_header_fields_are_431(limited: ServerProcess) -> None:
    """2,000 header fields answered 200."""
    answer = ask(limited, request(headers=[(f"x-h{i}", "v") for i in range(2_000)]))
    assert status_of(answer) == 431, answer[:200]
    assert problem_of(answer)["code"] == "HEADERS_TOO_LARGE"


def test_header_fields_too_large_together_are_431(limited: ServerProcess) -> None:
    answer = ask(limited, request(headers=[("x-large", "a" * 40_000)]))
    assert status_of(answer) == 431, answer[:200]
    assert problem_of(answer)["code"] == "HEADERS_TOO_LARGE"


def test_an_8_mib_header_is_never_served(limited: ServerProcess) -> None:
    """It answered 200; now the server answers 431 and closes once the head passes the
    limit, so most of the 8 MiB is never read (the client may see a reset instead)."""
    answer = ask(limited, request(headers=[("x-huge", "a" * 8 * 1024 * 1024)]))
    assert status_of(answer) in (0, 431), answer[:200]


@pytest.mark.parametrize("sent", [
    b"GET /health/live HTTP/1.1\r\nHost: test\r\n",  # the head stops coming
    b"G",  # one byte
    b"POST /api/v1/balance/charge HTTP/1.1\r\nHost: test\r\nContent-Type: application/json"
    b"\r\nContent-Length: 100\r\nAuthorization: Bearer %s\r\n\r\n{\"amount\":",  # the body
], ids=["head", "one-byte", "body"])
def test_a_half_sent_request_is_answered_408_and_closed(
    limited: ServerProcess, new_user, sent: bytes
) -> None:
    """A request that stopped arriving stayed open over 150 s (a slowloris holds a
    connection that way); now it has the read timeout to arrive whole."""
    with connect(limited) as sock:
        sock.sendall(sent.replace(b"%s", new_user().token.encode()))
        answer = read_all(sock)  # the server closes; the test's timeout is far longer
    assert status_of(answer) == 408, answer[:200]
    assert problem_of(answer)["code"] == "REQUEST_TIMEOUT"


def test_a_connection_past_the_cap_is_answered_503_and_closed(limited: ServerProcess) -> None:
    held = [connect(limited) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:  # each is accepted and served before the one past the cap
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        answer = ask(limited, request())
        assert status_of(answer) == 503, answer[:200]
        assert problem_of(answer)["code"] == "SERVICE_UNAVAILABLE"
    finally:
        for sock in held:
            sock.close()
    for _ in range(100):  # the server notices the closes in its own time
        if status_of(ask(limited, request())) == 200:
            break
    else:
        raise AssertionError("the cap did not free up after the held connections closed")


def test_the_transport_limits_come_from_the_settings() -> None:
    limits = TransportLimits.of(Settings(http_max_headers=20, http_max_header_bytes=4096,
                                         http_read_timeout_s=2.5, http_max_connections=7))
    assert limits == TransportLimits(max_headers=20, max_header_bytes=4096,
                                     read_timeout_s=2.5, max_connections=7)
    assert TransportLimits.of(Settings()) == TransportLimits()  # the same safe defaults


async def test_a_connection_that_never_sends_a_byte_is_closed_after_the_idle_timeout() -> None:
    """uvicorn armed its keep-alive timeout only after an answer, so a connection that
    never sent a byte stayed open for good; it is armed from the start now."""
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no request ever arrives")

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                            log_level="warning", timeout_keep_alive=1,
                            http=functools.partial(  # type: ignore[arg-type]
                                HttpToolsProtocol, limits=TransportLimits()))
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), SOCKET_WAIT_S) == b""  # closed
        writer.close()
    finally:
        server.should_exit = True
        await task


def test_granian_gets_the_read_timeout_and_the_head_buffer() -> None:
    http1 = granian_http1(Settings(http_read_timeout_s=2.5, http_max_header_bytes=65_536))
    assert (http1.header_read_timeout, http1.max_buffer_size) == (2_500, 65_536)
    assert granian_http1(Settings(http_max_header_bytes=1_024)).max_buffer_size == 8_192


def test_granian_closes_a_half_sent_head_and_refuses_2000_headers(
    api_settings: Settings, tmp_path: Path
) -> None:
    server = ServerProcess(api_settings.replace(
        http_port=free_port(), api_workers=1, api_server="granian",
        http_read_timeout_s=READ_TIMEOUT_S), tmp_path / "granian.log")
    try:
        server.wait_ready()
        with connect(server) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
            assert status_of(read_all(sock)) in (0, 408)  # closed, never served
        answer = ask(server, request(headers=[(f"x-h{i}", "v") for i in range(2_000)]))
        assert status_of(answer) in (0, 431), answer[:200]
    finally:
        server.stop()
