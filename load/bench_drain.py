"""How fast one outbox worker carries orders into Postgres, and how far behind it runs.

Private Redis and Postgres (fsync on, as ``make up`` runs them), orders placed through
``engine.Engine`` by many users over a few products (1 to 3 lines each, every one paid
from the balance: an order, its lines, its payment and a USE history line), and ONE
worker process (``python -m workers.main postgres``: the RQ worker and its drain job).

1. backlog: ``--backlog`` orders wait in the outbox; the worker starts and drains them.
   Applied orders/s: how fast one worker empties a backlog.
2. flat out: orders as fast as one client process places them, the worker draining at
   the same time (the two share the machine's cores with Redis and Postgres).
3. steady: ``--rate`` orders/s for ``--seconds``; the lag from each order's answer to
   the moment its row is visible in Postgres (polled every 5 ms), p50/p99/max.

    python load/bench_drain.py [--backlog 50000] [--rate 1000] [--seconds 20]
                               [--max-others 25 --retries 3]

Each phase reports the share of the CPU that processes outside the bench used meanwhile:
on a shared machine a figure measured while others were busy is not this code's figure,
and --max-others repeats the lag phase until the machine was quiet enough.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import Engine, state  # noqa: E402
from engine.outbox import POSTGRES, Outbox  # noqa: E402
from persistence.migrate import upgrade  # noqa: E402
from rushorder.servers import PostgresServer, RedisServer, free_port  # noqa: E402
from rushorder.settings import Settings  # noqa: E402

CHARGE = 1_000_000


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """Private Redis and Postgres in a temp dir; their URLs."""
    root = Path(tempfile.mkdtemp(prefix="rushorder-bench-"))
    redis_server = RedisServer(root / "redis", free_port()).start()
    postgres = PostgresServer(root / "postgres", free_port()).start()
    try:
        yield redis_server.url, postgres.url
    finally:
        postgres.stop()
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)


class Worker:
    """One ``workers.main postgres`` process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        env = {f"RUSHORDER_{k.upper()}": str(v) for k, v in
               ((k, getattr(settings, k)) for k in settings.__struct_fields__) if v is not None}
        self.args = [sys.executable, "-m", "workers.main", POSTGRES]
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


class Orders:
    """Places orders through the engine: random user, 1 to 3 random lines."""

    def __init__(self, engine: Engine, users: int, products: list[int]) -> None:
        self.engine = engine
        self.users = users
        self.products = products
        self.answered: dict[int, float] = {}  # order id -> wall time of its answer
        self.rng = random.Random(7)

    async def one(self) -> None:
        """One order; its answer time is recorded."""
        lines = self.rng.sample(self.products, self.rng.randint(1, 3))
        order = await self.engine.place_order(self.rng.randint(1, self.users),
                                              [(p, self.rng.randint(1, 2)) for p in lines])
        self.answered[int(order.id)] = time.time()

    async def burst(self, n: int, concurrency: int = 256) -> None:
        """``n`` orders as fast as possible."""
        for start in range(0, n, concurrency):
            await asyncio.gather(*(self.one() for _ in range(min(concurrency, n - start))))

    async def steady(self, rate: int, seconds: float, tick_s: float = 0.01) -> None:
        """``rate`` orders/s for ``seconds``, launched every ``tick_s``."""
        pending: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        placed = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - placed
            for _ in range(due):
                task = asyncio.create_task(self.one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            placed += due
            await asyncio.sleep(tick_s)
        await asyncio.gather(*pending)


class Watcher:
    """Polls Postgres for new order ids; when each became visible (its commit, within 5 ms)."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.seen: dict[int, float] = {}
        self.last = int(self.conn.execute("SELECT coalesce(max(id), 0) FROM orders")
                        .fetchone()[0])  # type: ignore[index]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        """Record the first time each new order id is seen."""
        while not self.stop.wait(0.005):
            rows = self.conn.execute("SELECT id FROM orders WHERE id > %s", (self.last,))
            now = time.time()
            for (oid,) in rows:
                self.seen[oid] = now
                self.last = max(self.last, oid)

    def count(self) -> int:
        """Orders seen so far."""
        return len(self.seen)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


class Cpu:
    """How much of the machine processes outside this bench used (this process, the worker,
    Redis and Postgres are ours): a figure measured while others were busy is not ours."""

    @staticmethod
    def _ours() -> int:
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry)] = int(fields[1])
                ticks[int(entry)] = sum(int(v) for v in fields[11:15])  # utime..cstime

        def ours(pid: int) -> bool:
            while pid > 1:
                if pid == os.getpid():
                    return True
                pid = parents.get(pid, 0)
            return False

        return sum(t for pid, t in ticks.items() if ours(pid))

    def __enter__(self) -> Cpu:
        self.start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        total, busy, ours = (b - a for a, b in zip(self.start, end, strict=True))
        self.others_percent = max(0.0, 100 * (busy - ours) / total) if total else 0.0

    def _snapshot(self) -> tuple[int, int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), sum(values) - values[3] - values[4], self._ours()


def wait_until(check: object, timeout_s: float) -> None:
    """Poll ``check()`` every 20 ms until true."""
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not catch up")
        time.sleep(0.02)


def applied_rate(watcher: Watcher, total: int, timeout_s: float) -> float:
    """Orders/s from the first applied order to the last of ``total``."""
    wait_until(lambda: watcher.count() > 0, timeout_s)
    wait_until(lambda: watcher.count() >= total, timeout_s)
    times = sorted(watcher.seen.values())
    return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def lags_ms(orders: Orders, watcher: Watcher) -> list[float]:
    """Answer-to-commit lag of every order, in ms."""
    return sorted((watcher.seen[oid] - at) * 1000 for oid, at in orders.answered.items())


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def bench(args: argparse.Namespace, redis_url: str, database_url: str, log: Path) -> None:
    upgrade(database_url)
    settings = Settings(redis_url=redis_url, database_url=database_url, log_level="WARNING")
    with redis.Redis.from_url(redis_url) as client:
        state.mark(client, "bench_drain")  # a new, empty shop
    engine = Engine(redis_url)
    await engine.load()
    products = [(await engine.create_product(f"p{i}", 1_000 + 500 * i, 10**9)).id
                for i in range(args.products)]
    for start in range(1, args.users + 1, 500):
        await asyncio.gather(*(engine.charge(u, CHARGE)
                               for u in range(start, min(args.users + 1, start + 500))))
    worker = Worker(settings, log)
    outbox = Outbox(redis.Redis.from_url(redis_url), POSTGRES, "bench")
    outbox.create_groups()
    worker.start()
    wait_until(lambda: not outbox.backlog(), 120)  # the setup's events are in
    worker.stop()
    print(f"setup: {args.users} users charged, {args.products} products; worker log {log}")

    orders = Orders(engine, args.users, products)
    started = time.monotonic()
    await orders.burst(args.backlog)
    placed_s = time.monotonic() - started
    with Watcher(database_url) as watcher, Cpu() as cpu:
        worker.start()
        rate = applied_rate(watcher, args.backlog, 300)
    print(f"1. backlog:  {args.backlog} orders placed in {placed_s:.1f}s "
          f"({args.backlog / placed_s:.0f}/s); one worker applied them at {rate:.0f} orders/s "
          f"[others used {cpu.others_percent:.0f}% of the CPU]")

    orders = Orders(engine, args.users, products)
    with Watcher(database_url) as watcher, Cpu() as cpu:
        started = time.time()
        await orders.burst(args.flat_out)
        placed_s = time.time() - started
        wait_until(lambda: watcher.count() >= args.flat_out, 300)
        total_s = max(watcher.seen.values()) - started
        behind_ms = (max(watcher.seen.values()) - max(orders.answered.values())) * 1000
    applied = args.flat_out / total_s
    print(f"2. flat out: {args.flat_out} orders placed at {args.flat_out / placed_s:.0f}/s "
          f"(one client, as fast as it goes) while one worker drained: {applied:.0f} "
          f"orders/s applied, the last one in Postgres {behind_ms:.0f} ms after its answer "
          f"[others used {cpu.others_percent:.0f}% of the CPU]")

    for attempt in range(1, args.retries + 2):
        orders = Orders(engine, args.users, products)
        with Watcher(database_url) as watcher, Cpu() as cpu:
            await orders.steady(args.rate, args.seconds)
            wait_until(lambda: watcher.count() >= len(orders.answered), 60)  # noqa: B023
            lags = lags_ms(orders, watcher)
        kept = cpu.others_percent <= args.max_others or attempt > args.retries
        print(f"3. steady:   {len(lags)} orders at {args.rate}/s for {args.seconds:.0f}s; "
              f"answer-to-commit lag p50 {pct(lags, 50):.0f} ms, p99 {pct(lags, 99):.0f} ms, "
              f"max {lags[-1]:.0f} ms [others used {cpu.others_percent:.0f}% of the CPU]"
              + ("" if kept else " - busy machine, again"))
        if kept:
            break
        await asyncio.sleep(args.pause)
    worker.stop()
    await engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=50_000, help="orders of phase 1")
    parser.add_argument("--flat-out", type=int, default=50_000, help="orders of phase 2")
    parser.add_argument("--rate", type=int, default=1_000, help="orders/s of phase 3")
    parser.add_argument("--seconds", type=float, default=20, help="length of phase 3")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--products", type=int, default=5)
    parser.add_argument("--max-others", type=float, default=100.0, metavar="PERCENT",
                        help="repeat phase 3 when other processes used more of the CPU")
    parser.add_argument("--retries", type=int, default=3, help="repeats of phase 3 allowed")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds between repeats")
    args = parser.parse_args()
    with servers() as (redis_url, database_url):
        log = Path(tempfile.gettempdir()) / "bench_drain_worker.log"
        log.unlink(missing_ok=True)
        asyncio.run(bench(args, redis_url, database_url, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
