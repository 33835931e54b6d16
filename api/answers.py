"""The one response class of the API: encode once with msgspec, send two ASGI messages.

Litestar's own Response builds a header container, a cookie list and a separate ASGIResponse
for every request; on the hot path that cost more than our handler. Litestar lets an app
choose its ``response_class``, so this one is both the Response and the ASGI app it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from litestar import Response
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

JSON = "application/json"

_encode = msgspec.json.Encoder().encode


def _body(content: Any, media_type: str) -> bytes:
    """Bytes as they are, text as UTF-8, anything else as JSON."""
    if content is None:
        return b""
    if isinstance(content, bytes):
        return content
    if isinstance(content, str) and not media_type.endswith("json"):
        return content.encode()
    return _encode(content)


class Answer(Response[Any]):
    """A pre-encoded response that is its own ASGI application."""

    __slots__ = ("_raw_headers", "body")

    def __init__(
        self,
        content: Any = None,
        *,
        status_code: int = 200,
        media_type: Any = JSON,
        headers: Mapping[str, str] | None = None,
        cookies: Sequence[str] = (),
        **_unused: Any,
    ) -> None:
        media = str(getattr(media_type, "value", media_type))
        self.status_code = status_code
        self.media_type = media
        self.body = _body(content, media)
        raw: list[tuple[bytes, bytes]] = [] if status_code == 204 else [
            (b"content-type", media.encode()), (b"content-length", str(len(self.body)).encode())]
        if headers:
            raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
        raw += [(b"set-cookie", cookie.encode()) for cookie in cookies]  # one header each
        self._raw_headers = raw

    def to_asgi_response(  # type: ignore[override]  # Litestar passes more, all unused
        self, app: Any = None, request: Any = None, **_unused: Any
    ) -> ASGIApp:
        """Litestar asks every Response for its ASGI app; this one is already ready to send."""
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the status line, headers and body."""
        start: HTTPResponseStartEvent = {"type": "http.response.start",
                                         "status": self.status_code or 200,
                                         "headers": self._raw_headers}
        head = scope.get("method") == "HEAD"  # same headers, never a body
        body: HTTPResponseBodyEvent = {"type": "http.response.body",
                                       "body": b"" if head else self.body, "more_body": False}
        await send(start)
        await send(body)
