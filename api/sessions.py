"""The console's login sessions, kept server-side (issue 25).

The console's page (``api/console.py``) never holds the admin token: its login posts the
token once to ``POST /ops/login``, which checks it and answers with a **session id**, 32
random bytes (``secrets.token_urlsafe``) in a cookie that the page cannot read
(``HttpOnly``) and that no other site's request carries (``SameSite=Strict``). The session
lives in Redis (``engine/ops/console.py``, under the SHA-256 of its id) for at most
``RUSHORDER_CONSOLE_SESSION_S`` (8 h) and never past the token's ``exp``; ``POST
/ops/logout`` deletes it, so a copied cookie is worthless afterwards.

Rules that keep other sites out:

* **Secure.** The cookies are ``Secure`` when the request came over TLS (the ASGI scope's
  scheme), when a proxy listed in ``RUSHORDER_TRUSTED_PROXIES`` says so in its
  ``X-Forwarded-Proto`` (from anybody else the header is ignored: a client could claim
  https itself), or always with ``RUSHORDER_CONSOLE_SECURE_COOKIE``.
* **Origin.** A login or logout must come from the console's own origin: an ``Origin``
  header equal to ``<scheme>://<Host>`` (the scheme ``https`` exactly when the cookie is
  Secure); without an ``Origin`` only a browser's ``Sec-Fetch-Site: same-origin`` will do.
  Anything else is 403: browsers send ``Origin`` on every cross-site POST, form posts too.
* **CSRF token.** Every page load without one gets a random pre-login token in the
  readable cookie ``rushorder_console_csrf`` (``SameSite=Strict`` too); the login must
  send it back (``X-CSRF-Token``, or the form field ``csrf``), which another site can
  neither read nor make the browser attach. The login replaces it with the session's own
  CSRF token, stored with the session: the replay and the logout must send that one.

A bearer header needs none of this (browsers never add one by themselves): the feed and
the replay take an admin's ``Authorization: Bearer`` as before.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException

from api.answers import Answer
from api.auth import CHALLENGE, Authenticator, Identity
from api.inbound import header, read_body
from engine.ops.console import Console, ConsoleSession
from rushorder.settings import Settings

SESSION_COOKIE = "rushorder_console"  # HttpOnly: the session id
CSRF_COOKIE = "rushorder_console_csrf"  # readable by the console's page: its CSRF token
CSRF_HEADER = b"x-csrf-token"
CSRF_FIELD = "csrf"  # the login form's field, for a form post
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSION_ID = 64  # token_urlsafe(32) is 43 characters; anything longer is not ours
MAX_LOGIN_BODY = 8192
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SessionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long a login lasts, and whom to believe about TLS."""

    ttl_s: int = 8 * 3600
    trusted_proxies: tuple[Network, ...] = ()
    force_secure: bool = False

    @classmethod
    def of(cls, settings: Settings) -> SessionPolicy:
        """The policy the settings give; ValueError naming the variable for a bad address."""
        proxies = []
        for item in filter(None, (p.strip() for p in settings.trusted_proxies.split(","))):
            try:
                proxies.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"RUSHORDER_TRUSTED_PROXIES: {item!r} is not an address or "
                                 "network (10.0.0.5, 10.0.0.0/8)") from None
        return cls(ttl_s=settings.console_session_s, trusted_proxies=tuple(proxies),
                   force_secure=settings.console_secure_cookie)

    def trusts(self, client: str) -> bool:
        """Whether the peer ``client`` is one of the trusted proxies."""
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)

    def secure(self, request: Request[Any, Any, Any]) -> bool:
        """Whether the browser reached us over TLS (so the cookies must be Secure)."""
        if self.force_secure or request.scope["scheme"] == "https":
            return True
        client = request.scope.get("client")
        if not client or not self.trusts(client[0]):
            return False
        forwarded = (header(request, b"x-forwarded-proto") or b"").decode("latin-1")
        # A proxy that appends puts its own word last: that is the one we trust.
        return forwarded.rsplit(",", 1)[-1].strip().lower() == "https"


def _forbidden(detail: str) -> PermissionDeniedException:
    return PermissionDeniedException(detail=detail)


def check_origin(request: Request[Any, Any, Any], secure: bool) -> None:
    """403 unless the request came from the console's own origin (see the module)."""
    host = (header(request, b"host") or b"").decode("latin-1").lower()
    origin = header(request, b"origin")
    if origin is None:
        if header(request, b"sec-fetch-site") == b"same-origin":
            return
        raise _forbidden("Origin: required (the console's login and logout take posts from "
                         "its own page only)")
    expected = f"{'https' if secure else 'http'}://{host}"
    if not host or origin.decode("latin-1").lower() != expected:
        raise _forbidden(f"Origin: {origin.decode('latin-1')[:100]!r} is not the console's "
                         f"origin {expected!r}")


def cookie(name: str, value: str, max_age: int, *, http_only: bool, secure: bool) -> str:
    """A Set-Cookie value of the console's (``SameSite=Strict``: never sent cross-site)."""
    flags = ["Path=/", f"Max-Age={max_age}", "SameSite=Strict"]
    flags += ["HttpOnly"] if http_only else []
    flags += ["Secure"] if secure else []
    return "; ".join([f"{name}={value}", *flags])


class Login(msgspec.Struct, frozen=True):
    """What a login sent: the admin token, its CSRF token, and whether it was a form."""

    token: str
    csrf: str
    form: bool


def login_of(body: bytes, content_type: bytes, csrf_header: bytes | None) -> Login:
    """The login's fields from a form or JSON body (the CSRF token may come as a header)."""
    form = content_type.startswith(b"application/x-www-form-urlencoded")
    try:
        if form:
            fields = {k: v[0] for k, v in parse_qs(body.decode(), max_num_fields=4).items()}
        else:
            fields = msgspec.json.decode(body, type=dict[str, str])
    except (ValueError, msgspec.MsgspecError):
        raise HTTPException(status_code=400, detail="body: {\"token\": \"...\"}") from None
    token = fields.get("token", "").strip()
    if not token:
        raise HTTPException(status_code=400, detail="token: required")
    csrf = csrf_header.decode("latin-1") if csrf_header else fields.get(CSRF_FIELD, "")
    return Login(token, csrf, form)


def _same(sent: str, kept: str | None) -> bool:
    """A CSRF token matches (in constant time); an empty or missing one never does."""
    return bool(sent and kept) and hmac.compare_digest(sent.encode(), (kept or "").encode())


def _session_id(request: Request[Any, Any, Any]) -> str | None:
    """The session cookie's id, if it looks like one of ours."""
    value = request.cookies.get(SESSION_COOKIE)
    return value if value and len(value) <= MAX_SESSION_ID and value.isascii() else None


class Sessions:
    """The console's logins: made, checked and ended through the engine's console."""

    def __init__(self, console: Console, auth: Authenticator, policy: SessionPolicy) -> None:
        self.console = console
        self.auth = auth
        self.policy = policy

    def page_cookies(self, request: Request[Any, Any, Any]) -> list[str]:
        """A pre-login CSRF cookie for a page load that has none."""
        if request.cookies.get(CSRF_COOKIE):
            return []
        return [self._csrf_cookie(secrets.token_urlsafe(32), self.policy.ttl_s,
                                  self.policy.secure(request))]

    def _csrf_cookie(self, value: str, max_age: int, secure: bool) -> str:
        return cookie(CSRF_COOKIE, value, max_age, http_only=False, secure=secure)

    async def login(self, request: Request[Any, Any, Any]) -> Answer:
        """Check the origin, the pre-login CSRF token and an admin token; open a session."""
        secure = self.policy.secure(request)
        check_origin(request, secure)
        sent = login_of(await read_body(request, MAX_LOGIN_BODY),
                        header(request, b"content-type") or b"", header(request, CSRF_HEADER))
        if not _same(sent.csrf, request.cookies.get(CSRF_COOKIE)):
            raise _forbidden(f"{CSRF_HEADER.decode()}: missing or wrong (send the value of "
                             f"the {CSRF_COOKIE} cookie; reload the page)")
        identity = self.auth.verify(sent.token.encode())
        if not identity.admin:
            raise _forbidden("the console needs a token with role admin")
        if (old := _session_id(request)) is not None:
            await self.console.close_session(old)  # a login never keeps a session it found
        return await self._open(identity, sent.form, secure)

    async def _open(self, identity: Identity, form: bool, secure: bool) -> Answer:
        ttl_s = max(1, int(min(identity.expires_at - time.time(), self.policy.ttl_s)))
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        await self.console.open_session(session_id, ConsoleSession(
            user_id=identity.user_id, csrf=csrf, expires_at=time.time() + ttl_s), ttl_s * 1000)
        cookies = [cookie(SESSION_COOKIE, session_id, ttl_s, http_only=True, secure=secure),
                   self._csrf_cookie(csrf, ttl_s, secure)]
        if form:
            return Answer(None, status_code=303, headers={"location": "/ops"}, cookies=cookies)
        return Answer({"user_id": identity.user_id, "expires_in_s": ttl_s}, cookies=cookies)

    async def logout(self, request: Request[Any, Any, Any]) -> Answer:
        """End the session (its cookie no longer works anywhere); a fresh pre-login CSRF
        token for the next login."""
        secure = self.policy.secure(request)
        check_origin(request, secure)
        session_id = _session_id(request)
        if session_id is not None and (session := await self.console.session(session_id)):
            self._check_csrf(request, session)
            await self.console.close_session(session_id)
        gone = cookie(SESSION_COOKIE, "", 0, http_only=True, secure=secure)
        fresh = self._csrf_cookie(secrets.token_urlsafe(32), self.policy.ttl_s, secure)
        return Answer({"status": "logged out"}, cookies=[gone, fresh])

    @staticmethod
    def _check_csrf(request: Request[Any, Any, Any], session: ConsoleSession) -> None:
        sent = (header(request, CSRF_HEADER) or b"").decode("latin-1")
        if not _same(sent, session.csrf):
            raise _forbidden(f"{CSRF_HEADER.decode()}: missing or wrong (send the value of "
                             f"the {CSRF_COOKIE} cookie)")

    async def _from_cookie(self, request: Request[Any, Any, Any]) -> Identity:
        """The admin of the request's session; a request that changes something must
        carry the session's CSRF token."""
        session_id = _session_id(request)
        session = None if session_id is None else await self.console.session(session_id)
        if session is None:
            raise NotAuthorizedException(headers=CHALLENGE, detail=(
                "Authorization: a bearer token (or a live console session: log in at /ops) "
                "is required"))
        if request.method not in SAFE_METHODS:
            self._check_csrf(request, session)
        return Identity(session.user_id, True, session.expires_at)

    async def admin(self, request: Request[Any, Any, Any]) -> None:
        """``before_request`` hook of the console's feed and replay: an admin's bearer
        token, or the console's session (with its CSRF token on a POST)."""
        if header(request, b"authorization") is not None:
            identity = self.auth.identify(request)
        else:
            identity = await self._from_cookie(request)
        if not identity.admin:
            raise _forbidden("this needs role admin")
        request.scope["user"] = identity
