"""Every knob of rushorder, read from ``RUSHORDER_*`` environment variables exactly once.

Nobody else reads ``os.environ``: the CLI builds one :class:`Settings` and hands it to
``create_app``, the workers and the stack supervisor.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# Only for a laptop: it is published (README, this file), so anyone can sign an admin
# token with it. A process serves with it only on loopback (Settings.check_servable).
DEV_JWT_SECRET = "rushorder-dev-secret-change-me-before-prod"
# HS256's key should be as long as its hash (RFC 7518 3.2): a shorter secret is guessed.
MIN_JWT_SECRET_BYTES = 32
MAKE_A_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# The most money any policy setting may name: balances and amounts stay well inside the
# 2^53 that Redis' Lua numbers (doubles) hold exactly.
MAX_MONEY = 10**15
Port = Annotated[int, Meta(ge=1, le=65_535)]

# The password of a URL: ``scheme://[user]:<password>@host``.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]*:)[^@\s]+(@)")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: what is printed
    or logged about a server never shows its password."""
    return _URL_PASSWORD.sub(r"\1***\2", text)


def is_loopback(host: str) -> bool:
    """``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (every interface) or a name that may resolve anywhere


class MissingSetting(ValueError):
    """Raised when a part is started without a setting it cannot run without (a server URL).

    The CLI resolves the server URLs before it starts a part, so this is a programming
    error; if one gets through anyway, the CLI shows it as one line, not a traceback.
    """

    def __init__(self, who: str, *fields: str) -> None:
        self.variables = [f"RUSHORDER_{field.upper()}" for field in fields]
        super().__init__(f"{who} needs {' and '.join(self.variables)}")


class BadSetting(ValueError):
    """Raised by :meth:`Settings.from_env` for a value out of its range or a policy that
    contradicts itself; the message is one line naming the ``RUSHORDER_*`` variable."""


# msgspec's "Expected `int` >= 1 - at `$.charge_unit`": the field's path, at the end.
_AT_FIELD = re.compile(r"^(?P<why>.*) - at `\$\.(?P<field>\w+)`$")


def _named(message: str, raw: Mapping[str, str]) -> str:
    """msgspec's message about field ``x`` as a line about RUSHORDER_X and its value."""
    at = _AT_FIELD.match(message)
    if at is None:  # a cross-check's own line names its variables already
        return message
    field = at["field"]
    return f"RUSHORDER_{field.upper()}={raw.get(field, '')!r}: {at['why'].lower()}"


class UnsafeSetting(ValueError):
    """Raised when a process would serve with a JWT secret anyone can sign with: the
    published dev secret off loopback, or one shorter than ``MIN_JWT_SECRET_BYTES``."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The whole configuration; field ``x`` comes from ``RUSHORDER_X``."""

    # Servers. Unset URLs mean "start private servers under data_dir" (make up / tests).
    redis_url: str | None = None
    database_url: str | None = None
    # RQ's queues and registries (the outbox workers' jobs). RQ's keys carry no hash tag
    # and it writes several of them in one MULTI, so a Redis Cluster would refuse it
    # (CROSSSLOT): give it a plain Redis of its own there. Unset: redis_url.
    rq_redis_url: str | None = None
    data_dir: str = "./.rushorder"
    redis_port: Port = 6380
    pg_port: Port = 5433
    # The engine's deadline for any Redis reply: past it, every pending request answers
    # 503 and the connection is made again (a stopped Redis must not hold requests).
    redis_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 3.0
    # How long Redis keeps an order, history line or used coupon once Postgres has it
    # (engine/outbox/settle.py): reads of the recent tail never need Postgres.
    redis_retention_s: Annotated[float, Meta(ge=0)] = 600.0
    # /health/ready fails at or above this much Redis memory (0: never), so a load
    # balancer stops sending orders before Redis refuses them (noeviction).
    redis_memory_high_water_mb: Annotated[int, Meta(ge=0)] = 4096

    # HTTP API.
    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    api_workers: Annotated[int, Meta(ge=1, le=256)] = 2
    # uvicorn answered orders ~20% and plain reads ~18% faster here (docs/performance.md).
    api_server: Literal["uvicorn", "granian"] = "uvicorn"
    jwt_secret: str = DEV_JWT_SECRET

    # Mock data platform and the forwarder that feeds it.
    platform_port: Port = 8100
    data_platform_url: str | None = None
    platform_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 2.0
    platform_max_attempts: Annotated[int, Meta(ge=1)] = 8
    # batch: POST /events/batch (the mock's, and the analytics sinks' way); single: POST /events.
    platform_mode: Literal["batch", "single"] = "batch"
    platform_batch: Annotated[int, Meta(ge=1, le=500)] = 500  # events per batch request
    platform_in_flight: Annotated[int, Meta(ge=1, le=16)] = 1  # batches in flight per stream
    platform_client: Literal["aiohttp", "httpx"] = "aiohttp"

    # Outbox workers.
    workers: Annotated[int, Meta(ge=1, le=256)] = 1
    # Each `rushorder worker` serves its processes' metrics here (0: nowhere); `make up`
    # gives worker n this port + n - 1.
    worker_metrics_port: Annotated[int, Meta(ge=0, le=65_535)] = 9101
    outbox_batch: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    # User groups (engine/keys.py): fixed for the life of the data; to change it, rebuild
    # Redis from Postgres with the new count (docs/architecture.md, "User groups").
    groups: Annotated[int, Meta(ge=1, le=1024)] = 4
    outbox_reclaim_idle_ms: Annotated[int, Meta(ge=1)] = 30_000

    # Business policy (defaults from shared/API.md; the README's "Policies of the seeds"
    # table gives each assignment document's). Ranged here and cross-checked in
    # __post_init__: a unit of 0 would refuse every charge, a minimum of 0 take 0-won ones.
    charge_min: Annotated[int, Meta(ge=1, le=MAX_MONEY)] = 1_000
    charge_max: Annotated[int, Meta(ge=1, le=MAX_MONEY)] = 1_000_000
    charge_unit: Annotated[int, Meta(ge=1, le=MAX_MONEY)] = 10
    balance_max: Annotated[int, Meta(ge=1, le=MAX_MONEY)] = 10_000_000
    idempotency_ttl_s: Annotated[int, Meta(ge=1, le=30 * 86_400)] = 86_400
    top_window_hours: Annotated[int, Meta(ge=1, le=24 * 366)] = 72
    # A "payment": "DEFERRED" order (issue 28) holds its units this long unpaid; then the
    # engine's sweep expires it and they come back (10 s to a day).
    payment_timeout_s: Annotated[int, Meta(ge=10, le=86_400)] = 600

    # Bounded idempotency and the write rate (issue 25; engine/lua/_lib.lua, guard).
    # Live Idempotency-Key records a user (or admin) may hold; a new key past it answers
    # 429 TOO_MANY_REQUESTS until the oldest expires (0: no bound).
    idempotency_max_per_user: Annotated[int, Meta(ge=0)] = 1_000
    # Writes a user may make a second (charge, order, cancel, checkout, cart, coupon
    # issue), in bursts of rate_limit_burst; past it 429 + Retry-After (0: off). A shopper
    # never comes near; a script hammering one account does.
    rate_limit_per_s: Annotated[float, Meta(ge=0)] = 20.0
    rate_limit_burst: Annotated[int, Meta(ge=1)] = 40

    # The console's login sessions (issue 25; api/sessions.py). A login lasts this long at
    # most (never past its admin token's exp), kept in Redis and ended by a logout.
    console_session_s: Annotated[int, Meta(ge=60, le=86_400)] = 28_800
    # Comma-separated addresses or networks (10.0.0.0/8) of the TLS proxies in front of the
    # API whose X-Forwarded-Proto is believed (the console's cookie is then Secure); none
    # by default: a client could claim https itself.
    trusted_proxies: str = ""
    # Always mark the console's cookies Secure (behind a TLS proxy that says nothing).
    console_secure_cookie: bool = False

    # -- H3, issue 25: transport limits of each API worker process (api/transport.py,
    # uvicorn; granian takes the read timeout and the header bytes) and the metrics token.
    # Header fields a request may carry; past it 431 and the connection is closed.
    http_max_headers: Annotated[int, Meta(ge=8, le=10_000)] = 100
    # Bytes of the request line and all header fields together; past it 431.
    http_max_header_bytes: Annotated[int, Meta(ge=1_024, le=1_048_576)] = 32_768
    # A request (line, headers and body) must arrive whole within this from its first
    # byte, else 408 and closed (an idle connection keeps the 75 s keep-alive timeout).
    http_read_timeout_s: Annotated[float, Meta(gt=0, le=3_600)] = 30.0
    # Open connections per API worker process; one more is answered 503 and closed. Keep it
    # under the process' file limit (ulimit -n).
    http_max_connections: Annotated[int, Meta(ge=1)] = 1_000
    # When set, GET /metrics needs "Authorization: Bearer <this>" (else 401).
    metrics_token: str | None = None

    log_level: str = "INFO"

    def __post_init__(self) -> None:
        """Refuse policies that contradict themselves (msgspec checked each field's range):
        the first problem, naming the settings, as a ``ValueError`` (a ValidationError
        when read by :meth:`from_env`)."""
        for problem in self.policy_problems():
            raise ValueError(problem)

    def policy_problems(self) -> list[str]:
        """What is wrong between the business policy's settings, one line each."""
        unit, low, high, cap = (self.charge_unit, self.charge_min, self.charge_max,
                                self.balance_max)
        checks = [
            (low <= high, f"RUSHORDER_CHARGE_MIN ({low}) is above RUSHORDER_CHARGE_MAX ({high})"),
            (high <= cap, f"RUSHORDER_CHARGE_MAX ({high}) is above RUSHORDER_BALANCE_MAX "
                          f"({cap}): no charge that large could ever be taken"),
            (low % unit == 0, f"RUSHORDER_CHARGE_MIN ({low}) is not a multiple of "
                              f"RUSHORDER_CHARGE_UNIT ({unit})"),
            (high % unit == 0, f"RUSHORDER_CHARGE_MAX ({high}) is not a multiple of "
                               f"RUSHORDER_CHARGE_UNIT ({unit})"),
        ]
        return [problem for fine, problem in checks if not fine]

    def check_secret(self) -> None:
        """Raise :class:`UnsafeSetting` if ``jwt_secret`` is too short to resist guessing."""
        size = len(self.jwt_secret.encode())
        if size < MIN_JWT_SECRET_BYTES:
            raise UnsafeSetting(
                f"RUSHORDER_JWT_SECRET is {size} bytes; at least {MIN_JWT_SECRET_BYTES} are "
                f"needed (make one with: {MAKE_A_SECRET})")

    @property
    def dev_secret(self) -> bool:
        """``jwt_secret`` is the published dev secret (RUSHORDER_JWT_SECRET unset)."""
        return self.jwt_secret == DEV_JWT_SECRET

    def may_scrape(self, authorization: bytes | None) -> bool:
        """Whether a request with this ``Authorization`` header may read /metrics (the
        API's and the workers'): always with no ``metrics_token``, else only with
        ``Bearer <metrics_token>``, compared in constant time."""
        if not self.metrics_token:
            return True
        return hmac.compare_digest(authorization or b"", f"Bearer {self.metrics_token}".encode())

    def check_servable(self) -> None:
        """Raise :class:`UnsafeSetting` unless serving HTTP on ``http_host`` with
        ``jwt_secret`` is safe: every command that serves the API calls it first."""
        self.check_secret()
        if self.dev_secret and not is_loopback(self.http_host):
            raise UnsafeSetting(
                f"RUSHORDER_JWT_SECRET is not set, and its published dev default may only "
                f"serve on loopback, not on {self.http_host or 'every interface'}: set "
                f"RUSHORDER_JWT_SECRET to a secret of your own (make one with: {MAKE_A_SECRET})")

    @property
    def platform_url(self) -> str:
        """Where order events go: the configured URL or the local mock platform."""
        return self.data_platform_url or f"http://127.0.0.1:{self.platform_port}"

    @property
    def rq_url(self) -> str | None:
        """Where RQ keeps its jobs: ``rq_redis_url``, else the outbox's ``redis_url``."""
        return self.rq_redis_url or self.redis_url

    @property
    def data_path(self) -> Path:
        """``data_dir`` as an absolute path."""
        return Path(self.data_dir).resolve()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``RUSHORDER_*`` variables; unknown ones are ignored, a bad value (or policy)
        raises :class:`BadSetting` with one line that names the variable."""
        env = os.environ if environ is None else environ
        raw = {
            name: env[f"RUSHORDER_{name.upper()}"]
            for name in cls.__struct_fields__
            if f"RUSHORDER_{name.upper()}" in env
        }
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise BadSetting(_named(str(exc), raw)) from None

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests and the supervisor use it)."""
        return msgspec.structs.replace(self, **changes)
