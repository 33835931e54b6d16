"""A lean pipelining Redis connection for the hot path, that fails fast.

Every command issued during one event-loop tick leaves in a single ``write()`` and the
replies come back in order, so N concurrent requests cost one round trip and one syscall
instead of N. redis-py spent ~90 µs of Python per command here; packing with hiredis and
matching replies to futures costs a few µs.

A Redis that stops answering (stopped, its disk full under ``appendfsync always``, the
link dropped without a reset) must not hold requests forever: every reply has a deadline,
and when the oldest pending reply misses it, every pending command fails with
:class:`~engine.errors.EngineUnavailable` and the connection is dropped, to be made again
by the next command. TCP keepalive finds a dead peer on an idle connection.

Replies that mean "not now" (``LOADING``, ``BUSY``, ``OOM``, ``READONLY``, ...) are
classified here too (:func:`refusal`), so no caller needs to know Redis' error prefixes.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis

from engine.errors import EngineUnavailable

SCHEMES = ("redis",)
# Redis answers these while it cannot serve for a while (loading its data, a script
# running too long, out of memory, a replica or a cluster without quorum): the request may
# be tried again later, so they are unavailability, not bugs.
UNAVAILABLE_REPLIES = ("LOADING", "BUSY", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN",
                       "CLUSTERDOWN", "NOREPLICAS", "MISCONF")
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 15, 5, 3


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


def refusal(reply: ReplyError) -> Exception:
    """What an error reply means to the engine: :class:`EngineUnavailable` when Redis
    cannot serve right now, else the reply itself (a bug: a script or command failed)."""
    if str(reply).startswith(UNAVAILABLE_REPLIES):
        return EngineUnavailable(f"Redis cannot serve right now: {reply!s:.200}")
    return reply


def parse_url(url: str) -> tuple[str, int, str | None, str | None, int]:
    """``(host, port, username, password, db)`` of a ``redis://`` URL; a ValueError naming
    what is wrong for any other (TLS ``rediss://``, unix sockets, a typo)."""
    parsed = urlparse(url)
    if parsed.scheme not in SCHEMES:
        raise ValueError(
            f"Redis URL {url!r}: the scheme {parsed.scheme + '://' if parsed.scheme else ''!r} "
            "is not supported by the engine's client, which speaks plain TCP: use "
            "redis://[user:password@]host:port/db (for TLS, run a local TLS proxy such as "
            "stunnel and point redis:// at it)")
    path = parsed.path.lstrip("/")
    if path and not path.isdigit():
        raise ValueError(f"Redis URL {url!r}: the database must be a number, not {path!r}")
    return (parsed.hostname or "127.0.0.1", parsed.port or 6379,
            unquote(parsed.username) if parsed.username else None,
            unquote(parsed.password) if parsed.password else None, int(path or 0))


def _keep_alive(transport: asyncio.BaseTransport) -> None:
    """SO_KEEPALIVE with short probes, so a peer that vanished is noticed while idle."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
                          ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                          ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        if hasattr(socket, option):  # Linux names; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class _Protocol(asyncio.Protocol):
    """Writes coalesced commands and resolves one future per reply, in order; fails them
    all once the oldest has waited past the deadline."""

    def __init__(self, on_lost: Any, timeout_s: float) -> None:
        self._reader = hiredis.Reader(replyError=ReplyError)
        # Each pending reply's future and its deadline (loop time); replies come in order,
        # so only the oldest deadline needs a timer.
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = \
            collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout_s
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        _keep_alive(transport)

    def send(self, packed: bytes, now: bool = False) -> asyncio.Future[Any]:
        """Queue one packed command for this tick's write (``now``: write it and what was
        queued before it at once); resolves with its reply."""
        if self._transport is None:
            raise EngineUnavailable("connection to Redis lost")
        if not self._out and not now:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        fut = self._loop.create_future()
        self._waiting.append((fut, self._loop.time() + self._timeout))
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._check_deadline)
        if now:
            self._flush()
        return fut

    def _flush(self) -> None:
        out, self._out = self._out, []
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            fut = self._waiting.popleft()[0]
            if not fut.done():
                fut.set_result(reply)

    def _check_deadline(self) -> None:
        """The oldest reply is overdue: give up on the connection; else wait for it."""
        self._timer = None
        if not self._waiting:
            return
        left = self._waiting[0][1] - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check_deadline)
            return
        self._fail_all(EngineUnavailable(
            f"Redis sent no reply within {self._timeout:g}s; the connection was dropped"))
        transport, self._transport = self._transport, None
        self._on_lost(self)  # the next command makes a new connection
        if transport is not None:
            transport.abort()

    def _fail_all(self, error: Exception) -> None:
        while self._waiting:
            fut = self._waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(EngineUnavailable(f"connection to Redis lost: {exc or 'closed'}"))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._on_lost(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Connection:
    """One Redis connection that reconnects lazily; safe to share across tasks of one loop.

    Commands are never retried after a lost connection or a missed deadline: a write may
    or may not have run, and only the caller (with an Idempotency-Key) can safely try again.
    """

    def __init__(self, url: str, connect_timeout_s: float = 5.0,
                 reply_timeout_s: float = 3.0) -> None:
        self._host, self._port, self._username, self._password, self._db = parse_url(url)
        self._connect_timeout = connect_timeout_s
        self._reply_timeout = reply_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    def send(self, *args: Any, now: bool = False) -> asyncio.Future[Any]:
        """Send one command, pipelined with this tick's others (``now``: written at once,
        after what this tick queued before it). The future resolves with the raw reply: an
        error reply is a :class:`ReplyError` result, not an exception. Connects first when
        not connected."""
        packed = hiredis.pack_command(args)
        if self._protocol is not None:
            return self._protocol.send(packed, now)
        return asyncio.ensure_future(self._send_connected(packed))

    async def _send_connected(self, packed: bytes) -> Any:
        protocol = await self._connect()
        return await protocol.send(packed)

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; an error reply raises (see
        :func:`refusal`)."""
        reply = await self.send(*args)
        if isinstance(reply, ReplyError):
            raise refusal(reply)
        return reply

    async def _connect(self) -> _Protocol:
        self._connecting = self._connecting or asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None:
                return self._protocol
            loop = asyncio.get_running_loop()
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(lambda: _Protocol(self._lost, self._reply_timeout),
                                           self._host, self._port),
                    self._connect_timeout,
                )
            except (TimeoutError, OSError) as exc:
                raise EngineUnavailable(f"cannot reach Redis at {self._host}:{self._port}") from exc
            await self._handshake(protocol)
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        if self._password is not None:
            auth = (self._username, self._password) if self._username else (self._password,)
            await self._checked(protocol, "AUTH", *auth)
        if self._db:
            await self._checked(protocol, "SELECT", self._db)

    @staticmethod
    async def _checked(protocol: _Protocol, *args: Any) -> None:
        reply = await protocol.send(hiredis.pack_command(args))
        if isinstance(reply, ReplyError):
            protocol.close()
            raise EngineUnavailable(f"Redis refused {args[0]}: {reply}")

    def _lost(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    async def close(self) -> None:
        """Close the socket; later calls reconnect."""
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
