"""Bearer tokens: HS256 JWTs with ``sub`` (the user id), ``role`` (``user`` | ``admin``) and
``exp``. Minted here, verified by ``api.auth``.

A leaf that imports only PyJWT, so that ``rushorder token``, the stack's banner and the
load scripts mint tokens without loading the API (and Litestar).
"""

from __future__ import annotations

import time

import jwt

ALGORITHM = "HS256"
CLAIMS = ("exp", "sub", "role")  # every token carries all three; api.auth requires them
# A token cannot be revoked, so one that leaks is good until it expires: a month at most.
MAX_TTL_S = 30 * 24 * 3600


class TokenRefused(ValueError):
    """Raised when asked for a token for a user id outside the contract's range, or that
    lives 0 seconds or less, or longer than ``MAX_TTL_S``."""


def check_request(user_id: int, ttl_s: int, lowest_id: int, highest_id: int) -> None:
    """Refuse (:class:`TokenRefused`) a token the API would never honour or that would
    outlive a month; ``rushorder token`` checks before it signs."""
    if not lowest_id <= user_id <= highest_id:
        raise TokenRefused(f"--user {user_id}: a user id is {lowest_id} to {highest_id}")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise TokenRefused(f"--ttl-s {ttl_s}: a token lives 1 to {MAX_TTL_S} seconds "
                           "(30 days)")


def mint_token(secret: str, user_id: int, admin: bool = False, ttl_s: int = 3600) -> str:
    """A signed token for ``user_id`` (the CLI, the tests and the load scripts use it)."""
    claims = {"sub": str(user_id), "role": "admin" if admin else "user",
              "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
