"""Identity: HS256 bearer JWTs (sub = user id, role = user | admin, exp), minted by
``rushorder.tokens``, verified here.

Authentication runs as a Litestar ``before_request`` hook on the routers that need it, so
it happens before the body is read (auth wins over validation) and costs one call. Route
guards would do the same job, but Litestar copies the route handler for every guard call
(~17 µs a request here).

The operators' console (``api/console.py``) logs in with an admin token once and then
goes by a server-side session (``api/sessions.py``); the page never holds the token.

A refused token is told in plain words (``token expired``, ``token signature does not
match``, ``malformed token``...), never in the library's (``Invalid crypto padding``), and
its times (``exp``, ``nbf``, ``iat``) are checked by our own rule, so that no signed token,
however absurd its claims (``exp = 10**400``), is anything but a 401.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import msgspec
from litestar import Request
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from api.inbound import header
from engine.limits import ID
from rushorder.tokens import ALGORITHM, CLAIMS

MAX_TOKEN = 4096
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rushorder"'}
TIME_CLAIMS = ("exp", "nbf", "iat")
LAST_SECOND = 253_402_300_799  # 9999-12-31T23:59:59Z: the last second every store holds
EXPIRED = "token expired"
MALFORMED = "malformed token (a JWT is three base64url parts: header, claims, signature)"


class Identity(msgspec.Struct, frozen=True):
    """Who is calling: a verified token's user, role and expiry (epoch seconds)."""

    user_id: int
    admin: bool
    expires_at: float


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers=CHALLENGE)


def _plain(error: jwt.PyJWTError) -> str:
    """A refused token's reason in plain words, never the library's internals (its
    messages name padding, codecs and JSON parser positions)."""
    if isinstance(error, jwt.InvalidSignatureError):
        return "token signature does not match"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return f"token: must be signed with {ALGORITHM}"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token: the {error.claim} claim is required"
    return MALFORMED


def _seconds(claims: dict[str, Any], name: str) -> float | None:
    """A time claim (epoch seconds), or None if the token has none; 401 for anything that
    is not a number of seconds between 1970 and year 9999 (a string, a bool, NaN, inf,
    10**400 or -10**400: never a 500)."""
    if name not in claims:
        return None
    value = claims[name]
    # NaN fails both comparisons; a huge int is compared without becoming a float.
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value <= LAST_SECOND:
        raise _unauthorized(f"token: {name} must be a time in epoch seconds, from 1970 "
                            "to year 9999")
    return float(value)


def _check_times(claims: dict[str, Any], now: float) -> None:
    """exp, nbf and iat are sane times, and the token is in force (exp is checked on each
    use, by :meth:`Authenticator.verify`)."""
    times = {name: _seconds(claims, name) for name in TIME_CLAIMS}
    not_before = max((t for t in (times["nbf"], times["iat"]) if t is not None), default=0.0)
    if not_before > now:
        raise _unauthorized("token: not valid yet (nbf or iat is in the future)")


def _identity(claims: dict[str, Any]) -> Identity:
    sub, role = claims.get("sub"), claims.get("role")
    if not (isinstance(sub, str) and sub.isascii() and sub.isdigit() and len(sub) <= 19
            and int(sub) in ID):
        raise _unauthorized("token: sub must be a user id in decimal")
    if role not in ("user", "admin"):
        raise _unauthorized("token: role must be user or admin")
    return Identity(int(sub), role == "admin", float(claims["exp"]))


class Authenticator:
    """Verifies bearer tokens and remembers the ones it has verified.

    PyJWT's decode (base64, JSON, HMAC, claim checks) costs tens of µs, and a client sends
    the same token on every request, so verified tokens are kept in a dict keyed by the
    exact token bytes; a hit costs a lookup plus the expiry check. Only tokens whose
    signature checked out are kept, so a forged token never matches. The dict is bounded:
    past ``capacity`` the oldest entry goes.
    """

    def __init__(self, secret: str, capacity: int = 100_000) -> None:
        self._secret = secret
        self._capacity = capacity
        self._verified: dict[bytes, Identity] = {}

    def verify(self, token: bytes) -> Identity:
        """The identity of a token, or 401 if it is malformed, forged or expired."""
        identity = self._verified.get(token)
        if identity is None:
            identity = self._decode(token)
            if len(self._verified) >= self._capacity:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = identity
        if identity.expires_at <= time.time():
            self._verified.pop(token, None)
            raise _unauthorized(EXPIRED)
        return identity

    def _decode(self, token: bytes) -> Identity:
        if len(token) > MAX_TOKEN:
            raise _unauthorized("token: too long")
        try:
            # The times are checked below, by our own rules: PyJWT's int() of them fails
            # on some absurd values with errors of its own (and 10**400 overflows float).
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={
                "require": list(CLAIMS), "verify_exp": False, "verify_nbf": False,
                "verify_iat": False})
        except jwt.PyJWTError as exc:
            raise _unauthorized(_plain(exc)) from None
        except (ValueError, TypeError, RecursionError):  # whatever PyJWT lets through
            raise _unauthorized(MALFORMED) from None
        _check_times(claims, time.time())
        return _identity(claims)

    def identify(self, request: Request[Any, Any, Any]) -> Identity:
        """The caller of a request, from its ``Authorization: Bearer`` header."""
        value = header(request, b"authorization")
        if value is None:
            raise _unauthorized("Authorization: a bearer token is required")
        scheme, _, token = value.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise _unauthorized("Authorization: use the Bearer scheme")
        return self.verify(token.strip())

    async def user(self, request: Request[Any, Any, Any]) -> None:
        """``before_request`` hook: any valid token; the identity lands in ``request.user``."""
        request.scope["user"] = self.identify(request)

    async def admin(self, request: Request[Any, Any, Any]) -> None:
        """``before_request`` hook: a valid token with role admin."""
        identity = self.identify(request)
        if not identity.admin:
            raise PermissionDeniedException(detail="this needs role admin")
        request.scope["user"] = identity


UserRequest = Request[Identity, Any, Any]
"""A request on a router with an auth hook: ``request.user`` is the verified caller."""
