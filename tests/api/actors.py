"""Plain helpers of the API's tests: who calls, and what a problem answer must look like."""

from __future__ import annotations

import httpx

from rushorder.tokens import mint_token

PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}


class Actor:
    """A caller of the API: a user id and the bearer token that proves it."""

    def __init__(self, user_id: int, secret: str, admin: bool = False, ttl_s: int = 3600) -> None:
        self.id = user_id
        self.token = mint_token(secret, user_id, admin=admin, ttl_s=ttl_s)

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}

    def with_key(self, key: str) -> dict[str, str]:
        """The Authorization header plus an Idempotency-Key."""
        return {**self.headers, "Idempotency-Key": key}


def assert_problem(resp: httpx.Response, status: int, code: str, names: str | None = None) -> dict:
    """The answer is an RFC 9457 problem with this status and code (and names a field)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json", resp.headers
    doc = resp.json()
    assert doc.keys() >= PROBLEM_KEYS, doc
    assert doc["status"] == status and doc["code"] == code, doc
    if names is not None:
        assert names in doc["detail"], doc
    return doc
