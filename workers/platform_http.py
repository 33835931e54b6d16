"""The data platform's HTTP API as the forwarder speaks it: requests, answers, transports.

Two modes (``RUSHORDER_PLATFORM_MODE``):

* ``batch``: ``POST /events/batch`` with a JSON array of event bodies, at most
  :data:`MAX_BATCH` events and :data:`MAX_BYTES` bytes a request (the limits of Segment's
  ``/v1/batch`` and of the mock); the answer says per event what the platform did:
  ``{"accepted", "duplicates", "rejected": [{"event_id", "error"}]}``.
* ``single``: ``POST /events`` per event, for platforms without a batch endpoint
  (:data:`SINGLE_PARALLEL` posts in flight at once).

An answer is an :class:`Outcome`: retry the whole request (no answer, 408, 429, 5xx),
give it up (another 4xx: the platform will refuse it again), or taken, perhaps with some
events rejected one by one. The HTTP client is aiohttp or httpx
(``RUSHORDER_PLATFORM_CLIENT``), one pooled keep-alive client per forwarder run, made
inside its event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Literal, Protocol

import aiohttp
import httpx
import msgspec

from rushorder.settings import Settings

log = logging.getLogger("rushorder.workers.platform")

Mode = Literal["batch", "single"]
Client = Literal["aiohttp", "httpx"]
MAX_BATCH = 500  # events of one batch request
MAX_BYTES = 1 << 20  # bytes of one batch request's body
SINGLE_PARALLEL = 16  # posts in flight at once per lane, in single mode
_JSON = {"content-type": "application/json"}


class Item(msgspec.Struct, frozen=True):
    """One event on its way: whose it is (an outbox entry or dead letter id), its
    ``event_id`` and the body the platform gets."""

    key: str
    event_id: str
    body: bytes


class Request(msgspec.Struct, frozen=True):
    """One POST: where, the items it carries, and its body (built once, sent again as is)."""

    url: str
    items: list[Item]
    body: bytes


class Outcome(msgspec.Struct, frozen=True):
    """What came of one request. ``retry``: it got no usable answer, why (worth trying
    again); ``refused``: the platform refused it whole, why (it would again); otherwise
    the platform took it, except the events in ``rejected`` (``event_id`` -> its reason)."""

    retry: str | None = None
    refused: str | None = None
    rejected: dict[str, str] = {}

    @property
    def taken(self) -> bool:
        """The platform answered 2xx."""
        return self.retry is None and self.refused is None


class _Rejected(msgspec.Struct, frozen=True):
    event_id: str | None = None
    index: int | None = None
    error: str = "rejected by the platform"


class _BatchAnswer(msgspec.Struct, frozen=True):
    rejected: list[_Rejected] = []


_BATCH_ANSWER = msgspec.json.Decoder(_BatchAnswer)


class TransportError(Exception):
    """Raised when a request got no HTTP answer: refused connection, reset, timeout."""


class Transport(Protocol):
    """A pooled keep-alive HTTP client, made and used inside one event loop."""

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; the status and the answer's body."""

    async def close(self) -> None:
        """Close every connection."""


class HttpxTransport:
    """:class:`Transport` over ``httpx.AsyncClient``."""

    def __init__(self, timeout_s: float, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(timeout=timeout_s, limits=limits)

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; the status and the answer's body."""
        try:
            answer = await self.client.post(url, content=body, headers=_JSON)
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        return answer.status_code, answer.content

    async def close(self) -> None:
        """Close every connection."""
        await self.client.aclose()


class AiohttpTransport:
    """:class:`Transport` over ``aiohttp.ClientSession``."""

    def __init__(self, timeout_s: float, connections: int) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=timeout_s), auto_decompress=False)

    async def post(self, url: str, body: bytes) -> tuple[int, bytes]:
        """POST a JSON body; the status and the answer's body."""
        try:
            async with self.session.post(url, data=body, headers=_JSON) as answer:
                return answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        """Close every connection."""
        await self.session.close()


TRANSPORTS: dict[str, type[HttpxTransport] | type[AiohttpTransport]] = {
    "httpx": HttpxTransport, "aiohttp": AiohttpTransport}


class Platform:
    """The data platform at ``url``: how events are cut into requests, and what answers mean."""

    def __init__(self, url: str, *, mode: Mode = "batch", batch: int = MAX_BATCH,
                 timeout_s: float = 2.0, client: Client = "aiohttp") -> None:
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"a batch is 1..{MAX_BATCH} events, not {batch}")
        base = url.rstrip("/")
        self.url = base + ("/events/batch" if mode == "batch" else "/events")
        self.mode = mode
        self.batch = batch
        self.timeout_s = timeout_s
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> Platform:
        """The platform the settings name, in their mode and with their client."""
        return cls(settings.platform_url, mode=settings.platform_mode,
                   batch=settings.platform_batch, timeout_s=settings.platform_timeout_s,
                   client=settings.platform_client)

    @property
    def parallel(self) -> int:
        """Requests of one outbox batch in flight at once: batches go one after another."""
        return 1 if self.mode == "batch" else SINGLE_PARALLEL

    def requests(self, items: Sequence[Item]) -> list[Request]:
        """The requests that carry ``items``: one each, or batches within the limits."""
        if self.mode == "single":
            return [Request(self.url, [item], item.body) for item in items]
        return [Request(self.url, chunk, b"[" + b",".join(i.body for i in chunk) + b"]")
                for chunk in _chunks(items, self.batch, MAX_BYTES)]

    def outcome(self, request: Request, status: int, body: bytes) -> Outcome:
        """What an answer means for the request."""
        if 200 <= status < 300:
            return Outcome(rejected=self._rejected(request, body)) if self.mode == "batch" \
                else Outcome()
        error = f"HTTP {status}: {body[:200].decode(errors='replace')}"
        if status >= 500 or status in (408, 429):
            return Outcome(retry=error)
        return Outcome(refused=error)

    @staticmethod
    def _rejected(request: Request, body: bytes) -> dict[str, str]:
        """The events a batch answer rejects (by ``event_id``, else by position)."""
        try:
            rejected = _BATCH_ANSWER.decode(body).rejected
        except msgspec.MsgspecError:
            log.warning("platform: a 2xx batch answer without a readable 'rejected': %.200r",
                        body)
            return {}
        items = request.items
        found: dict[str, str] = {}
        for r in rejected:
            event_id = r.event_id
            if event_id is None and r.index is not None and 0 <= r.index < len(items):
                event_id = items[r.index].event_id
            if event_id is not None:
                found[event_id] = r.error
        return found

    @asynccontextmanager
    async def session(self, connections: int = SINGLE_PARALLEL) -> AsyncIterator[Session]:
        """A pooled client for the running event loop, closed on exit."""
        transport = TRANSPORTS[self.client](self.timeout_s, connections)
        try:
            yield Session(self, transport)
        finally:
            await transport.close()


class Session:
    """A :class:`Platform` with an open client: sends requests."""

    def __init__(self, platform: Platform, transport: Transport) -> None:
        self.platform = platform
        self.transport = transport

    async def send(self, request: Request) -> Outcome:
        """Send once; what came of it (never raises for the platform's or network's faults)."""
        try:
            status, body = await self.transport.post(request.url, request.body)
        except TransportError as exc:
            return Outcome(retry=str(exc))
        return self.platform.outcome(request, status, body)


def _chunks(items: Iterable[Item], count: int, size: int) -> Iterable[list[Item]]:
    """Runs of at most ``count`` items whose bodies, joined into a JSON array, fit ``size``
    bytes (an item too large alone goes alone: the platform refuses it, nothing else)."""
    chunk: list[Item] = []
    used = 2  # the brackets
    for item in items:
        cost = len(item.body) + (1 if chunk else 0)
        if chunk and (len(chunk) == count or used + cost > size):
            yield chunk
            chunk, used, cost = [], 2, len(item.body)
        chunk.append(item)
        used += cost
    if chunk:
        yield chunk
