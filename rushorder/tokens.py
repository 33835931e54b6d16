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


def mint_token(secret: str, user_id: int, admin: bool = False, ttl_s: int = 3600) -> str:
    """A signed token for ``user_id`` (the CLI, the tests and the load scripts use it)."""
    claims = {"sub": str(user_id), "role": "admin" if admin else "user",
              "exp": int(time.time()) + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
