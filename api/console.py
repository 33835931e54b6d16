"""The operators' console: one page at ``/ops``, its feed and the dead letters' replay.

* ``GET /ops`` serves the page (``api/static/``: one HTML file, one script, one style
  sheet, package data of ``api``; no build step, nothing loaded from elsewhere). It is
  public but shows only a login form until the feed answers: the form posts an admin token
  to ``POST /ops/login``, which opens a session kept in Redis and sets its cookies
  (``api/sessions.py``: the HttpOnly session id and the CSRF token the replay needs);
  ``POST /ops/logout`` ends the session.
* ``GET /api/v1/admin/ops`` is the feed (an admin's bearer token, or the session), read
  anew on every call: orders placed and refused per second over the last minutes and the
  order route's latency, from the tallies every API process adds to Redis each second
  (``api/metrics.py`` -> ``engine/ops/console.py``: the same counts as ``/metrics``, summed over
  every process on every host); the outbox's backlog and lag per consumer group and Redis'
  memory from the same gauges as ``/metrics``; the dead letters; each worker's heartbeat;
  the top 5 with their live stock. A part that cannot be read is named in ``problems``,
  the rest still answers.
* ``POST /api/v1/admin/ops/replay`` asks a platform forwarder to replay the dead letters,
  as ``rushorder replay`` does (``engine/ops/replays.py``: the API never posts to the platform
  itself), and waits for the answer.

None of it is in ``/schema``: it is the operators' tool, not the shop's API.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Router, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter

from api.access import PREFIX
from api.answers import Answer
from api.auth import Authenticator
from api.metrics import BUCKETS, ORDER_ROUTE
from api.problems import problem
from api.sessions import SessionPolicy, Sessions
from engine import Engine
from engine.archive import SetAside
from engine.errors import StateMissing
from engine.ops.console import DeadLetterSummary
from engine.ops.gauges import Gauges
from engine.ops.heartbeat import Heartbeat
from engine.ops.replays import ReplayState

T = TypeVar("T")

WINDOW_S = 300  # the chart: the last five minutes, per second
RATE_S = 5  # orders/s and refusals/s: the mean of the last complete seconds
LATENCY_S = 10  # p50/p99 of the order route over the last complete seconds
SET_ASIDE_SHOWN = 5  # the oldest outbox entries set aside that the console lists
PICKUP_S = 5.0  # a replay nobody took by then is withdrawn: no forwarder listens
ANSWER_WAIT_S = 20.0  # then the replay answers 202, still running
POLL_S = 0.1
STATIC = ("ops.html", "ops.js", "ops.css")
MEDIA = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8",
         "css": "text/css; charset=utf-8"}
FileName = Annotated[str, PathParameter(description="one of the page's files")]
# Everything the page loads is its own; no frame may hold it (the replay button).
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY", "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer", "cache-control": "no-store",
}


class Second(msgspec.Struct, frozen=True):
    """One second of the API's answers, summed over every process."""

    t: int  # epoch seconds, Redis' clock
    placed: int
    refused: dict[str, int]


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    """Quantiles of the order route over the last seconds (None: nothing answered)."""

    route: str
    window_s: int
    count: int
    p50_ms: float | None
    p99_ms: float | None


class GroupLag(msgspec.Struct, frozen=True, kw_only=True):
    """One consumer group of the outbox: what it has not acknowledged, and for how long."""

    backlog: int
    oldest_age_s: float


class Outbox(msgspec.Struct, frozen=True, kw_only=True):
    """The outbox stream and its groups (postgres: the writer; platform: the forwarder)."""

    length: int
    groups: dict[str, GroupLag]


class RedisMemory(msgspec.Struct, frozen=True, kw_only=True):
    """Redis' memory against the readiness high-water mark (and maxmemory, 0: none)."""

    used_bytes: int
    high_water_bytes: int
    maxmemory_bytes: int
    over_high_water: bool


class DeadLetters(msgspec.Struct, frozen=True, kw_only=True):
    """The forwarder's dead letters: how many, and the oldest few."""

    count: int
    oldest: list[DeadLetterSummary]


class Worker(msgspec.Struct, frozen=True, kw_only=True):
    """One worker process as its last heartbeat tells."""

    process: str
    group: str
    alive: bool
    beat_age_s: float
    uptime_s: float
    state: str
    metrics_port: int | None
    counters: dict[str, float]


class Seller(msgspec.Struct, frozen=True, kw_only=True):
    """One of the top 5, with its live stock."""

    rank: int
    product_id: int
    name: str
    price: int
    sold_quantity: int
    stock: int


class Feed(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/admin/ops``."""

    at: datetime
    live_state: str  # "ok", or why Redis serves nothing
    orders_per_s: float
    refused_per_s: dict[str, float]
    requests_per_s: float
    errors_per_s: float  # 5xx answers
    placed_in_window: int
    refused_in_window: dict[str, int]
    window_s: int
    seconds: list[Second]  # oldest first, one per second of the window (zeros included)
    latency: Latency
    outbox: Outbox | None
    dead_letters: DeadLetters | None
    set_aside: SetAside | None  # outbox entries Postgres refused (workers/postgres.py)
    workers: list[Worker]
    redis: RedisMemory | None
    top: list[Seller]
    problems: list[str]  # parts that could not be read, and why


# -- figures ------------------------------------------------------------------------------


def total(tallies: Iterable[Mapping[str, int]]) -> Counter[str]:
    """The sum of some seconds' tallies, field by field."""
    summed: Counter[str] = Counter()
    for tally in tallies:
        summed.update(tally)
    return summed


def quantile(q: float, buckets: list[int], bounds: tuple[float, ...] = BUCKETS) -> float | None:
    """The ``q`` quantile of a histogram (counts per bucket, the last one +Inf), seconds,
    interpolated within its bucket as Prometheus' ``histogram_quantile`` does; None when it
    is empty. A quantile in the +Inf bucket is the highest finite bound."""
    count = sum(buckets)
    if not count:
        return None
    rank, seen = q * count, 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i >= len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / n
        seen += n
    return bounds[-1]


def refused_of(tally: Mapping[str, int]) -> dict[str, int]:
    """``refused:<CODE>`` fields as code -> count."""
    return {field.split(":", 1)[1]: n for field, n in sorted(tally.items())
            if field.startswith("refused:") and n}


def latency_of(tallies: Iterable[Mapping[str, int]], window_s: int) -> Latency:
    """The order route's quantiles over some seconds' latency buckets."""
    summed = total(tallies)
    buckets = [summed.get(f"lat:{i}", 0) for i in range(len(BUCKETS) + 1)]
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    return Latency(route=" ".join(ORDER_ROUTE), window_s=window_s, count=sum(buckets),
                   p50_ms=None if p50 is None else round(p50 * 1000, 2),
                   p99_ms=None if p99 is None else round(p99 * 1000, 2))


def figures(tallies: Mapping[int, Mapping[str, int]], last: int) -> dict[str, Any]:
    """The feed's figures from the tallies of the window that ends at second ``last``."""
    window = range(last - WINDOW_S + 1, last + 1)
    seconds = [Second(t, tallies.get(t, {}).get("placed", 0), refused_of(tallies.get(t, {})))
               for t in window]
    recent = total(tallies.get(t, {}) for t in window[-RATE_S:])
    whole = total(tallies.get(t, {}) for t in window)
    return {
        "orders_per_s": recent["placed"] / RATE_S,
        "refused_per_s": {code: n / RATE_S for code, n in refused_of(recent).items()},
        "requests_per_s": recent["requests"] / RATE_S,
        "errors_per_s": recent["errors"] / RATE_S,
        "placed_in_window": whole["placed"], "refused_in_window": refused_of(whole),
        "window_s": WINDOW_S, "seconds": seconds,
        "latency": latency_of((tallies.get(t, {}) for t in window[-LATENCY_S:]), LATENCY_S),
    }


def outbox_of(gauges: Gauges) -> Outbox:
    """The outbox part of the gauges."""
    return Outbox(length=gauges.outbox_length, groups={
        name: GroupLag(backlog=g.backlog, oldest_age_s=g.oldest_age_s)
        for name, g in sorted(gauges.consumers.items())})


def memory_of(gauges: Gauges, high_water: int) -> RedisMemory:
    """The memory part of the gauges."""
    return RedisMemory(used_bytes=gauges.used_memory, high_water_bytes=high_water,
                       maxmemory_bytes=gauges.maxmemory,
                       over_high_water=bool(high_water) and gauges.used_memory >= high_water)


def worker_of(beat: Heartbeat, now_ms: int) -> Worker:
    """A heartbeat as the console shows it."""
    return Worker(process=beat.process, group=beat.group, alive=beat.alive(now_ms),
                  beat_age_s=round(beat.age_s(now_ms), 1),
                  uptime_s=round(max(0, beat.beat_ms - beat.started_ms) / 1000, 1),
                  state=beat.state, metrics_port=beat.metrics_port, counters=beat.counters)


async def top_of(engine: Engine) -> list[Seller]:
    """The top 5 of the window, each with its live stock."""
    top = await engine.top()
    products = await asyncio.gather(*(engine.product(i.product_id) for i in top.items))
    return [Seller(rank=i.rank, product_id=i.product_id, name=i.name, price=i.price,
                   sold_quantity=i.sold_quantity, stock=p.stock)
            for i, p in zip(top.items, products, strict=True)]


def label(value: object) -> str:
    """A Prometheus label value, escaped as the text format wants."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def top_lines(top: list[Seller] | None) -> bytes:
    """Prometheus text of the top 5 and their stock (for /metrics); nothing when unread."""
    if top is None:
        return b""
    lines = []
    for metric, what, value_of in (
            ("rushorder_top_sold_units", "Units sold in the top-5 window, of each of the top 5.",
             lambda p: p.sold_quantity),
            ("rushorder_top_stock", "Live stock of each of the top 5.", lambda p: p.stock)):
        lines += [f"# HELP {metric} {what}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{rank="{p.rank}",product_id="{p.product_id}",'
                  f'name="{label(p.name)}"}} {value_of(p)}' for p in top]
    return ("\n".join(lines) + "\n").encode()


async def live_state(engine: Engine) -> str:
    """"ok", or why Redis serves nothing."""
    try:
        await engine.ready()
        return "ok"
    except StateMissing as exc:
        return f"no live state: {exc.detail}"


def _good(value: T | BaseException, name: str, problems: list[str]) -> T | None:
    """A part of the feed, or None (and why, in ``problems``) if it could not be read."""
    if isinstance(value, BaseException):
        problems.append(f"{name}: {value!s:.300}")
        return None
    return value


async def feed(engine: Engine, high_water: int) -> Feed:
    """The console's feed, read now; parts that fail are named in ``problems``."""
    console = engine.console
    now_ms = await console.now_ms()  # Redis away: the 503 of any engine call
    last = now_ms // 1000 - 1  # the current second is still being added to
    aside = asyncio.gather(engine.archive.set_aside(SET_ASIDE_SHOWN), return_exceptions=True)
    read = await asyncio.gather(
        console.seconds(last - WINDOW_S + 1, last), engine.gauges(), console.dead_letters(),
        console.heartbeats(), top_of(engine), live_state(engine), return_exceptions=True)
    problems: list[str] = []
    tallies = _good(read[0], "tallies", problems)
    gauges = _good(read[1], "gauges", problems)
    dead = _good(read[2], "dead letters", problems)
    beats = _good(read[3], "heartbeats", problems)
    top = _good(read[4], "top", problems)
    return Feed(
        at=datetime.fromtimestamp(now_ms / 1000, UTC),
        live_state=_good(read[5], "live state", problems) or "unknown",
        **figures(tallies or {}, last),
        outbox=None if gauges is None else outbox_of(gauges),
        dead_letters=None if dead is None else DeadLetters(count=dead[0], oldest=dead[1]),
        set_aside=_good((await aside)[0], "set aside", problems),
        workers=[worker_of(b, now_ms) for b in beats or []],
        redis=None if gauges is None else memory_of(gauges, high_water),
        top=top or [], problems=problems)


# -- the replay ---------------------------------------------------------------------------


def _replay_answer(request_id: str, state: ReplayState, status: int = 200) -> Answer:
    return Answer({"request_id": request_id, **msgspec.to_builtins(state)},
                  status_code=status)


async def replay(engine: Engine, pickup_s: float, wait_s: float) -> Answer:
    """Ask a platform forwarder to replay the dead letters; its answer once it is final
    (200), or how far it got after ``wait_s`` (202); 503 if no forwarder took it."""
    console = engine.console
    request_id = uuid.uuid4().hex
    await console.ask_replay(request_id)
    started = time.monotonic()
    while True:
        state = await console.replay(request_id)
        waited = time.monotonic() - started
        if state is None:
            return problem("SERVICE_UNAVAILABLE", "the replay request vanished (Redis lost "
                           "its data?); try again")
        if state.final:
            return _replay_answer(request_id, state)
        if state.state == "asked" and waited >= pickup_s and \
                await console.withdraw_replay(request_id):
            return problem("SERVICE_UNAVAILABLE", f"no platform forwarder took the replay "
                           f"within {pickup_s:.0f} s: is `rushorder worker` running? Nothing "
                           "was replayed; `rushorder replay` does it without one",
                           headers={"retry-after": "5"})
        if waited >= wait_s:
            return _replay_answer(request_id, state, status=202)
        await asyncio.sleep(POLL_S)


# -- the page and its login ---------------------------------------------------------------


def static_files() -> dict[str, bytes]:
    """The page's files, read once from the package."""
    folder = resources.files("api") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def page_routes(sessions: Sessions) -> list[HTTPRouteHandler]:
    """The page, its two files, the login and the logout (public)."""
    files = static_files()

    @get("/ops", include_in_schema=False)
    async def page(request: Request[Any, Any, Any]) -> Answer:
        """The console (a login form until the feed answers), with a pre-login CSRF
        token for its login if the browser has none."""
        return Answer(files["ops.html"], media_type=MEDIA["html"], headers=PAGE_HEADERS,
                      cookies=sessions.page_cookies(request))

    @get("/ops/{name:str}", include_in_schema=False)
    async def asset(name: FileName) -> Answer:
        """The page's script and style sheet."""
        if name not in files or name == "ops.html":
            return problem("NOT_FOUND", f"no file {name} on the console")
        return Answer(files[name], media_type=MEDIA[name.rsplit(".", 1)[1]],
                      headers=PAGE_HEADERS)

    @post("/ops/login", include_in_schema=False, status_code=200)
    async def login(request: Request[Any, Any, Any]) -> Answer:
        """Check an admin token and open a console session (its id in an HttpOnly cookie)."""
        return await sessions.login(request)

    @post("/ops/logout", include_in_schema=False, status_code=200)
    async def logout(request: Request[Any, Any, Any]) -> Answer:
        """End the console's session."""
        return await sessions.logout(request)

    return [page, asset, login, logout]


def routes(engine: Engine, auth: Authenticator, high_water: int, *,
           policy: SessionPolicy | None = None, pickup_s: float = PICKUP_S,
           wait_s: float = ANSWER_WAIT_S) -> list[HTTPRouteHandler | Router]:
    """The console's page (public) and its feed and replay (admin only)."""
    sessions = Sessions(engine.console, auth, policy or SessionPolicy())

    @get("/", include_in_schema=False)
    async def ops_feed() -> Answer:
        """Everything the console shows, read now."""
        return Answer(await feed(engine, high_water), headers={"cache-control": "no-store"})

    @post("/replay", include_in_schema=False, status_code=200)
    async def ops_replay() -> Answer:
        """Replay the dead letters through a platform forwarder; its answer."""
        return await replay(engine, pickup_s, wait_s)

    admin = Router(f"{PREFIX}/admin/ops", route_handlers=[ops_feed, ops_replay],
                   before_request=sessions.admin, include_in_schema=False)
    return [*page_routes(sessions), admin]
