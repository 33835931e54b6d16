"""How fast one outbox worker carries orders into Postgres, and how far behind it runs.

Private Redis and Postgres (fsync on, as ``make up`` runs them), orders placed through
``engine.Engine`` by many users over a few products (1 to 3 lines each, every one paid
from the balance: an order, its lines, its payment and a USE history line), and ONE
worker process (``python -m workers.main postgres``: the RQ worker and its drain job).

1. backlog: ``--backlog`` orders wait in the outbox while the worker, started and idle, is
   paused (SIGSTOP); then it resumes and drains them. Applied orders/s: how fast one
   running worker empties a backlog (its start-up is not in the figure).
2. flat out: orders as fast as one client process places them, the worker draining at
   the same time (the two share the machine's cores with Redis and Postgres).
3. steady: ``--rate`` orders/s for ``--seconds``; the lag from each order's answer to
   the moment its row is visible in Postgres (polled every 5 ms), p50/p99/max.

    python load/bench_drain.py [--backlog 50000] [--flat-out 50000] [--rate 1000]
                               [--seconds 20] [--max-others 25 --retries 3]
                               [--batch 1000] [--worker-repo DIR]

A phase given 0 orders (or 0 seconds) is skipped; --worker-repo runs the worker from
another checkout, so that two trees are compared by the same bench.

Each phase reports the CPU seconds per 1,000 orders of the worker process and of Postgres
(all its processes but the bench's own polling session) from ``/proc``, and the share of
the CPU that processes outside the bench used meanwhile: on a shared machine a figure
measured while others were busy is not this code's figure, and --max-others repeats the
lag phase until the machine was quiet enough.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cpu
import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import Engine, state  # noqa: E402
from engine.outbox import POSTGRES, Outboxes  # noqa: E402
from persistence.migrate import upgrade  # noqa: E402
from rushorder.servers import PostgresServer, RedisServer, free_port  # noqa: E402
from rushorder.settings import Settings  # noqa: E402

CHARGE = 1_000_000


@contextmanager
def servers() -> Iterator[tuple[RedisServer, PostgresServer]]:
    """Private Redis and Postgres in a temp dir."""
    root = Path(tempfile.mkdtemp(prefix="rushorder-bench-"))
    redis_server = RedisServer(root / "redis", free_port()).start()
    postgres = PostgresServer(root / "postgres", free_port()).start()
    try:
        yield redis_server, postgres
    finally:
        postgres.stop()
        redis_server.stop()
        shutil.rmtree(root, ignore_errors=True)


class Worker:
    """One ``workers.main postgres`` process."""

    def __init__(self, settings: Settings, log: Path, repo: Path = REPO) -> None:
        env = {f"RUSHORDER_{k.upper()}": str(v) for k, v in
               ((k, getattr(settings, k)) for k in settings.__struct_fields__) if v is not None}
        self.args = [sys.executable, "-m", "workers.main", POSTGRES]
        self.env = {**os.environ, **env, "PYTHONPATH": str(repo)}
        self.repo = repo
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.repo, stdout=out,
                                         stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(30)

    def pause(self) -> None:
        """SIGSTOP: it keeps its connections and its place in the group, and does nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int:
        """Its pid."""
        assert self.proc is not None
        return self.proc.pid


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
        self.backend = int(self.conn.execute("SELECT pg_backend_pid()")
                           .fetchone()[0])  # type: ignore[index]
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
    """CPU seconds of the worker and of Postgres over a phase (``/proc``), and the share of
    the machine that processes outside the bench (this process, the worker, Redis and
    Postgres are ours) used meanwhile."""

    def __init__(self, worker: Worker, postgres: PostgresServer, redis_server: RedisServer,
                 skip: int | None = None) -> None:
        self.roots = {"worker": worker.pid, "postgres": postgres.pid or 0,
                      "redis": redis_server.pid or 0}
        self.skip = skip  # the bench's own Postgres session (the watcher's polling)

    def _read(self) -> tuple[dict[str, int], int, tuple[int, int]]:
        rows = cpu.table()
        mine = cpu.tree_ticks([os.getpid()], rows)[os.getpid()]  # the servers are our children
        if self.skip is not None:
            rows.pop(self.skip, None)
        ticks = cpu.tree_ticks(self.roots.values(), rows)
        return ({name: ticks[pid] for name, pid in self.roots.items()}, mine, cpu.machine())

    def __enter__(self) -> Cpu:
        self.start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the phase (once; leaving the block then changes nothing)."""
        if hasattr(self, "seconds"):
            return
        (ticks, mine, machine), (ticks0, mine0, machine0) = self._read(), self.start
        self.seconds = {name: (ticks[name] - ticks0[name]) * cpu.TICK_S for name in ticks}
        self.others_percent = cpu.others_percent(machine0, machine, mine - mine0)

    def per_thousand(self, orders: int) -> str:
        """The phase's CPU per 1,000 orders, as the report prints it."""
        k = 1000 / max(orders, 1)
        return (f"CPU s per 1,000 orders: worker {self.seconds['worker'] * k:.3f}, "
                f"postgres {self.seconds['postgres'] * k:.3f}")


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


async def setup(args: argparse.Namespace, redis_url: str, database_url: str,
                worker: Worker) -> tuple[Engine, list[int]]:
    """Users charged and products made, all applied; the engine and the product ids."""
    upgrade(database_url)
    with redis.Redis.from_url(redis_url) as client:
        state.mark(client, "bench_drain")  # a new, empty shop
    engine = Engine(redis_url)
    await engine.load()
    products = [(await engine.create_product(f"p{i}", 1_000 + 500 * i, 10**9)).id
                for i in range(args.products)]
    for start in range(1, args.users + 1, 500):
        await asyncio.gather(*(engine.charge(u, CHARGE)
                               for u in range(start, min(args.users + 1, start + 500))))
    outbox = Outboxes(redis.Redis.from_url(redis_url), POSTGRES, "bench")
    outbox.create_groups()
    worker.start()
    wait_until(lambda: not outbox.backlog(), 120)  # the setup's events are in
    print(f"setup: {args.users} users charged, {args.products} products; worker pid "
          f"{worker.pid} ({worker.repo}), log {worker.log}")
    return engine, products


async def backlog_phase(args: argparse.Namespace, orders: Orders, worker: Worker,
                        cpu_of: Callable[[int], Cpu], database_url: str) -> None:
    """Phase 1: a backlog placed while the worker is paused, then drained."""
    worker.pause()
    started = time.monotonic()
    await orders.burst(args.backlog)
    placed_s = time.monotonic() - started
    with Watcher(database_url) as watcher, cpu_of(watcher.backend) as usage:
        worker.resume()
        rate = applied_rate(watcher, args.backlog, 300)
        usage.stop()
    print(f"1. backlog:  {args.backlog} orders placed in {placed_s:.1f}s "
          f"({args.backlog / placed_s:.0f}/s); one worker applied them at {rate:.0f} orders/s; "
          f"{usage.per_thousand(args.backlog)} [others used {usage.others_percent:.0f}% "
          "of the CPU]")


async def flat_out_phase(args: argparse.Namespace, orders: Orders, cpu_of: Callable[[int], Cpu],
                         database_url: str) -> None:
    """Phase 2: orders as fast as one client goes, the worker draining meanwhile."""
    with Watcher(database_url) as watcher, cpu_of(watcher.backend) as usage:
        started = time.time()
        await orders.burst(args.flat_out)
        placed_s = time.time() - started
        wait_until(lambda: watcher.count() >= args.flat_out, 300)
        usage.stop()
        total_s = max(watcher.seen.values()) - started
        behind_ms = (max(watcher.seen.values()) - max(orders.answered.values())) * 1000
    applied = args.flat_out / total_s
    print(f"2. flat out: {args.flat_out} orders placed at {args.flat_out / placed_s:.0f}/s "
          f"(one client, as fast as it goes) while one worker drained: {applied:.0f} "
          f"orders/s applied, the last one in Postgres {behind_ms:.0f} ms after its answer; "
          f"{usage.per_thousand(args.flat_out)} [others used {usage.others_percent:.0f}% "
          "of the CPU]")


async def steady_phase(args: argparse.Namespace, engine: Engine, products: list[int],
                       cpu_of: Callable[[int], Cpu], database_url: str) -> None:
    """Phase 3: a steady rate; the answer-to-commit lag (again while the machine was busy)."""
    for attempt in range(1, args.retries + 2):
        orders = Orders(engine, args.users, products)
        with Watcher(database_url) as watcher, cpu_of(watcher.backend) as usage:
            await orders.steady(args.rate, args.seconds)
            wait_until(lambda: watcher.count() >= len(orders.answered), 60)  # noqa: B023
            usage.stop()
            lags = lags_ms(orders, watcher)
        kept = usage.others_percent <= args.max_others or attempt > args.retries
        print(f"3. steady:   {len(lags)} orders at {args.rate}/s for {args.seconds:.0f}s; "
              f"answer-to-commit lag p50 {pct(lags, 50):.0f} ms, p99 {pct(lags, 99):.0f} ms, "
              f"max {lags[-1]:.0f} ms; {usage.per_thousand(len(lags))} "
              f"[others used {usage.others_percent:.0f}% of the CPU]"
              + ("" if kept else " - busy machine, again"))
        if kept:
            break
        await asyncio.sleep(args.pause)


async def bench(args: argparse.Namespace, redis_server: RedisServer,
                postgres: PostgresServer, log: Path) -> None:
    """The three phases on one worker (a phase given 0 orders or seconds is skipped)."""
    settings = Settings(redis_url=redis_server.url, database_url=postgres.url,
                        log_level="WARNING", outbox_batch=args.batch)
    worker = Worker(settings, log, args.worker_repo)
    engine, products = await setup(args, redis_server.url, postgres.url, worker)

    def cpu_of(skip: int) -> Cpu:
        return Cpu(worker, postgres, redis_server, skip)

    try:
        if args.backlog:
            await backlog_phase(args, Orders(engine, args.users, products), worker, cpu_of,
                                postgres.url)
        if args.flat_out:
            await flat_out_phase(args, Orders(engine, args.users, products), cpu_of,
                                 postgres.url)
        if args.seconds:
            await steady_phase(args, engine, products, cpu_of, postgres.url)
    finally:
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
    parser.add_argument("--batch", type=int, default=Settings().outbox_batch,
                        help="RUSHORDER_OUTBOX_BATCH of the worker")
    parser.add_argument("--worker-repo", type=Path, default=REPO, metavar="DIR",
                        help="run the worker from this checkout (to compare two trees with "
                             "the same bench; the schema is this tree's)")
    args = parser.parse_args()
    with servers() as (redis_server, postgres):
        log = Path(tempfile.gettempdir()) / f"bench_drain_worker-{os.getpid()}.log"
        log.unlink(missing_ok=True)
        asyncio.run(bench(args, redis_server, postgres, log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
