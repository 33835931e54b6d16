"""How fast one forwarder carries order events to the mock data platform, and how far behind.

A private Redis (AOF, appendfsync always, as ``make up`` runs it), orders placed through
``engine.Engine`` (1 to 3 lines each, so the outbox holds realistic ``order.paid`` events),
the mock platform (``rushorder platform``) and ONE forwarder process
(``python -m workers.main platform``: the RQ worker and its job, as ``make up`` runs it).

1. backlog: ``--backlog`` orders are placed once; then, for each ``--clients`` x
   ``--in-flight`` combination in turn (``--rounds`` times, interleaved), the
   ``platform`` group is made anew just before them and a fresh forwarder delivers them
   all. Events/s from the first batch that arrived to the last; CPU (``/proc``, user +
   system) of the forwarder and of the mock per 1,000 events over the same span; medians.
2. steady: ``--rate`` orders/s for ``--seconds`` with a forwarder running (the first
   client; each in-flight given); the lag from each event's outbox entry (its id's time)
   and from its order's answer to its arrival at the mock, p50/p99/max. ``--max-others``
   repeats it (up to ``--retries`` times) when other processes were too busy meanwhile.

    python load/bench_forward.py [--backlog 20000] [--rounds 1] [--clients aiohttp,httpx]
                                 [--in-flight 1] [--mode batch] [--rate 2000] [--seconds 5]
                                 [--max-others 100 --retries 3]

The defaults are short (``make bench``); the README's figures use
``--backlog 100000 --rounds 3 --in-flight 1,2 --seconds 0`` and
``--backlog 0 --rounds 0 --rate 5000 --seconds 60`` (and ``--seconds 30``).
Each phase reports the share of the CPU that processes outside the bench used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cpu  # noqa: E402
from bench_drain import Orders, pct, wait_until  # noqa: E402
from private import private_redis  # noqa: E402

from engine import Engine, state  # noqa: E402
from engine.outbox import PLATFORM, Outboxes  # noqa: E402
from rushorder.servers import free_port  # noqa: E402
from rushorder.settings import Settings  # noqa: E402

CHARGE = 1_000_000
TICK_S = os.sysconf("SC_CLK_TCK")


class EventId(msgspec.Struct):
    event_id: str | None = None


_EVENT_ID = msgspec.json.Decoder(EventId)


def env_of(settings: Settings) -> dict[str, str]:
    """The environment that makes ``Settings.from_env()`` equal ``settings`` in a child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUSHORDER_")}
    env.update({f"RUSHORDER_{k.upper()}": str(getattr(settings, k))
                for k in settings.__struct_fields__ if getattr(settings, k) is not None})
    return {**env, "PYTHONPATH": str(REPO)}


class Child:
    """A child process of the bench, its output in a log."""

    def __init__(self, args: list[str], settings: Settings, log: Path) -> None:
        self.args, self.env, self.log = args, env_of(settings), log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        """Start it."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) it used so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK_S

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Others:
    """The share of the machine that processes outside the bench used over a phase (this
    process, the forwarder, the mock and Redis are ours: our children)."""

    def _read(self) -> tuple[int, tuple[int, int]]:
        return cpu.tree_ticks([os.getpid()])[os.getpid()], cpu.machine()

    def __enter__(self) -> Others:
        self.start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        (mine, machine), (mine0, machine0) = self._read(), self.start
        self.others_percent = cpu.others_percent(machine0, machine, mine - mine0)


class Mock:
    """The mock platform process and a client for its counters."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.url = settings.platform_url
        self.child = Child([sys.executable, "-m", "rushorder.cli", "platform"], settings, log)
        self.http = httpx.Client(timeout=30)

    def start(self) -> Mock:
        """Start it and wait until it answers."""
        self.child.start()
        wait_until(self._up, 30)
        return self

    def _up(self) -> bool:
        try:
            return self.http.get(f"{self.url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def kept(self) -> int:
        """Events kept so far."""
        return int(self.http.get(f"{self.url}/stats").json()["kept"])

    def stats(self) -> dict[str, Any]:
        """Every counter."""
        return self.http.get(f"{self.url}/stats").json()  # type: ignore[no-any-return]

    def arrivals(self) -> list[tuple[float, list[str]]]:
        """When each request's new events were kept."""
        return [(t, ids) for t, ids in self.http.get(f"{self.url}/arrivals").json()["items"]]

    def reset(self) -> None:
        """Forget every event."""
        self.http.post(f"{self.url}/reset").raise_for_status()

    def stop(self) -> None:
        """Stop the process."""
        self.http.close()
        self.child.stop()


def forwarder(settings: Settings, log: Path) -> Child:
    """One ``workers.main platform`` process (not started)."""
    return Child([sys.executable, "-m", "workers.main", PLATFORM], settings, log)


class Bench:
    """The stack of the bench: Redis, the engine, the mock; forwarders come and go."""

    def __init__(self, args: argparse.Namespace, redis_url: str, logs: Path) -> None:
        self.args = args
        self.logs = logs
        self.settings = Settings(redis_url=redis_url, platform_port=free_port(),
                                 platform_mode=args.mode, log_level="WARNING")
        self.engine = Engine(redis_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.outbox = Outboxes(self.redis, PLATFORM, "bench")
        self.mock = Mock(self.settings, logs / "mock.log")
        self.products: list[int] = []
        self.placers = 0
        self.backlog_after: dict[str, bytes] = {}  # each stream's last entry before it

    def forwarder(self, client: str, in_flight: int) -> Child:
        """A forwarder with this client and batches in flight (not started)."""
        settings = self.settings.replace(platform_client=client, platform_in_flight=in_flight)
        return forwarder(settings, self.logs / f"forwarder-{client}-{in_flight}.log")

    def orders(self) -> Orders:
        """A new order placer (each its own random users, so no user is drained)."""
        self.placers += 1
        orders = Orders(self.engine, self.args.users, self.products)
        orders.rng = random.Random(self.placers)
        return orders

    async def setup(self) -> None:
        """Products, funded users, the mock, then the backlog, placed once: each run of
        phase 1 reads it again from the start through a new ``platform`` group."""
        state.mark(self.redis, "bench_forward")  # a new, empty shop
        await self.engine.load()
        self.products = [(await self.engine.create_product(f"p{i}", 1_000 + 500 * i, 10**9)).id
                         for i in range(self.args.products)]
        for start in range(1, self.args.users + 1, 500):
            await asyncio.gather(*(self.engine.charge(u, CHARGE) for u in
                                   range(start, min(self.args.users + 1, start + 500))))
        self.outbox.create_groups()
        self.mock.start()
        self.backlog_after = {o.stream: self.redis.xinfo_stream(o.stream)["last-generated-id"]
                              for o in self.outbox.streams}
        await self.orders().burst(self.args.backlog)

    def rewind(self) -> None:
        """The ``platform`` group anew, positioned just before the backlog."""
        for stream, after in self.backlog_after.items():
            self.redis.xgroup_destroy(stream, PLATFORM)
            self.redis.xgroup_create(stream, PLATFORM, id=after)

    async def backlog(self, client: str, in_flight: int) -> dict[str, float]:
        """Let one forwarder deliver the backlog from the start; its figures."""
        self.mock.reset()
        self.rewind()
        fwd = self.forwarder(client, in_flight)
        try:
            with Others() as others:
                fwd.start()
                wait_until(lambda: self.mock.kept() > 0, 60)
                kept0, fwd0, mock0 = self.mock.kept(), fwd.cpu_s(), self.mock.child.cpu_s()
                wait_until(lambda: self.mock.kept() >= self.args.backlog, 300)
                fwd1, mock1 = fwd.cpu_s(), self.mock.child.cpu_s()
        finally:
            fwd.stop()
        arrivals = self.mock.arrivals()
        first_t, first_ids = arrivals[0]
        span = arrivals[-1][0] - first_t
        per_k = 1000 / max(1, self.args.backlog - kept0)
        return {"rate": (self.args.backlog - len(first_ids)) / max(span, 1e-9),
                "fwd_ms": (fwd1 - fwd0) * 1000 * per_k, "mock_ms": (mock1 - mock0) * 1000 * per_k,
                "requests": len(arrivals), "others": others.others_percent}

    async def steady(self, in_flight: int) -> tuple[str, float]:
        """``--rate`` orders/s for ``--seconds`` while a forwarder runs; the lags, reported,
        and the share of the CPU others used meanwhile."""
        self.mock.reset()
        fwd = self.forwarder(self.args.clients[0], in_flight).start()
        try:
            wait_until(lambda: self.outbox.consumers(), 60)  # its job reads (blocked, empty)
            start_id = f"{int(time.time() * 1000)}-0"
            orders = self.orders()
            with Others() as others:
                await orders.steady(self.args.rate, self.args.seconds)
                wait_until(lambda: self.mock.kept() >= len(orders.answered), 300)
        finally:
            fwd.stop()
        arrived = {eid: t for t, ids in self.mock.arrivals() for eid in ids}
        from_answer = sorted((arrived[f"{oid}:paid"] - at) * 1000
                             for oid, at in orders.answered.items())
        from_entry = sorted((arrived[eid] - ms / 1000) * 1000
                            for eid, ms in self.entry_times(start_id))
        requests = sum(self.mock.stats()["requests"].values())
        return (f"2. steady:  {len(from_answer):,} orders at {self.args.rate:,}/s for "
                f"{self.args.seconds:.0f}s, {self.args.clients[0]}, {in_flight} in flight: "
                f"lag outbox entry -> platform p50 {pct(from_entry, 50):.0f} ms, p99 "
                f"{pct(from_entry, 99):.0f} ms, max {from_entry[-1]:.0f} ms; order answer -> "
                f"platform p50 {pct(from_answer, 50):.0f} ms, p99 {pct(from_answer, 99):.0f} "
                f"ms; {requests} requests [others used {others.others_percent:.0f}% of the CPU]",
                others.others_percent)

    def entry_times(self, start_id: str) -> Iterator[tuple[str, int]]:
        """``(event_id, entry ms)`` of every order event added since ``start_id``, in every
        outbox stream."""
        for outbox in self.outbox.streams:
            start = start_id
            while page := self.redis.xrange(outbox.stream, min=start, count=10_000):
                for entry_id, fields in page:
                    event_id = _EVENT_ID.decode(fields[b"e"]).event_id
                    if event_id is not None:
                        yield event_id, int(entry_id.split(b"-")[0])
                start = "(" + page[-1][0].decode()

    async def close(self) -> None:
        """Stop the mock; close clients."""
        self.mock.stop()
        self.redis.close()
        await self.engine.close()


def report(runs: dict[tuple[str, int], list[dict[str, float]]], backlog: int) -> None:
    """Medians per combination."""
    for (client, in_flight), rows in runs.items():
        median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        rates = ", ".join(f"{r['rate']:,.0f}" for r in rows)
        print(f"1. backlog: {backlog:,} orders, {client}, {in_flight} in flight: "
              f"{median['rate']:,.0f} events/s (rounds: {rates}); CPU per 1,000 events: "
              f"forwarder {median['fwd_ms']:.1f} ms, mock {median['mock_ms']:.1f} ms; "
              f"{median['requests']:.0f} requests "
              f"[others used {median['others']:.0f}% of the CPU]")


async def bench(args: argparse.Namespace, redis_url: str, logs: Path) -> None:
    stack = Bench(args, redis_url, logs)
    try:
        await stack.setup()
        print(f"setup: {args.users} users charged, {args.products} products; logs in {logs}")
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for client in args.clients:
                for in_flight in args.in_flight:
                    figures = await stack.backlog(client, in_flight)
                    runs.setdefault((client, in_flight), []).append(figures)
        report(runs, args.backlog)
        for in_flight in args.in_flight if args.seconds > 0 else []:
            for attempt in range(1, args.retries + 2):
                line, others = await stack.steady(in_flight)
                kept = others <= args.max_others or attempt > args.retries
                print(line + ("" if kept else " - busy machine, again"), flush=True)
                if kept:
                    break
                await asyncio.sleep(args.pause)
    finally:
        await stack.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=20_000, help="orders of phase 1")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of phase 1")
    parser.add_argument("--clients", type=lambda s: s.split(","), default=["aiohttp", "httpx"],
                        help="HTTP clients to compare, interleaved")
    parser.add_argument("--in-flight", type=lambda s: [int(n) for n in s.split(",")],
                        default=[1], help="batches in flight per stream, to compare")
    parser.add_argument("--mode", choices=["batch", "single"], default="batch")
    parser.add_argument("--rate", type=int, default=2_000, help="orders/s of phase 2")
    parser.add_argument("--seconds", type=float, default=5, help="length of phase 2 (0: skip)")
    parser.add_argument("--max-others", type=float, default=100.0, metavar="PERCENT",
                        help="repeat phase 2 when other processes used more of the CPU")
    parser.add_argument("--retries", type=int, default=3, help="repeats of phase 2 allowed")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between repeats")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--products", type=int, default=5)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench_forward-"))
    with private_redis("rushorder-bench-forward-") as redis_url:
        asyncio.run(bench(args, redis_url, logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
