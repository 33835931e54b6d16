"""Does Redis' memory stay flat under a long sale? Orders through the engine, the whole
write-behind running (the outbox workers and the mock platform, as ``make up`` runs them),
Redis' ``used_memory`` printed every ``--step`` orders.

Private Redis and Postgres (as ``make up`` runs them), ``--users`` users and ``--products``
products with stock for the whole run; orders of 1 to 3 lines at ``--rate`` orders/s (kept
under what one Postgres writer applies, so that the writer's lag stays short), without
Idempotency-Keys (their 24 h records are measured on their own, at the end). Redis keeps
a settled order for ``--retention`` seconds (RUSHORDER_REDIS_RETENTION_S), then drops it.

Reported: used_memory per step and its growth (with the data's bytes and the key count,
which tell a tail longer at that instant from memory that stays), and its range after the
first step; after the last step, once the outbox has
drained and the retention passed, the bytes per settled order left in Redis (memory now
minus memory before the first order, over the orders); the bytes of an idempotency
record; and read latencies of settled orders and history from Postgres (p50, p99).

    python load/bench_memory.py [--orders 1000000] [--step 100000] [--rate 4000]
                                [--retention 30]

``make bench`` runs it with --orders 60000 --step 20000 (about a minute).
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
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine import Engine, Idempotency, keys, state  # noqa: E402
from engine.errors import EngineUnavailable  # noqa: E402
from engine.outbox import CONSUMER_GROUPS, Outboxes  # noqa: E402
from persistence.archive import PostgresArchive  # noqa: E402
from persistence.migrate import upgrade  # noqa: E402
from rushorder.servers import PostgresServer, RedisServer, free_port  # noqa: E402
from rushorder.settings import Settings  # noqa: E402

MB = 1024 * 1024


def child(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``rushorder <args>`` with the settings in its environment."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **{
        f"RUSHORDER_{k.upper()}": str(getattr(settings, k))
        for k in settings.__struct_fields__ if getattr(settings, k) is not None}}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "rushorder.cli", *args], env=env,
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def used(client: redis.Redis) -> int:
    """Redis' used_memory, bytes."""
    return int(client.info("memory")["used_memory"])


def dataset(client: redis.Redis) -> int:
    """The bytes of the data itself (MEMORY STATS' dataset.bytes: used_memory without
    client and AOF buffers, the script cache and Redis' own overhead)."""
    return int(client.memory_stats()["dataset.bytes"])


def backlog(client: redis.Redis) -> int:
    """What some consumer group has not acknowledged yet (the larger of the two)."""
    return max(Outboxes(client, group, "bench").backlog() for group in CONSUMER_GROUPS)


async def order(engine: Engine, user: int, lines: list[tuple[int, int]],
                refused: list[int]) -> None:
    """One order; a 503 (Redis past the reply deadline) is counted, not fatal."""
    try:
        await engine.place_order(user, lines)
    except EngineUnavailable:
        refused[0] += 1


async def place(engine: Engine, users: int, products: list[int], n: int, rate: int,
                rng: random.Random, refused: list[int]) -> None:
    """``n`` orders at ``rate`` orders/s."""
    pending: set[asyncio.Task[object]] = set()
    started, placed = time.monotonic(), 0
    while placed < n:
        due = min(n, int((time.monotonic() - started) * rate)) - placed
        for _ in range(due):
            lines = rng.sample(products, rng.randint(1, 3))
            task = asyncio.ensure_future(order(
                engine, rng.randint(1, users), [(p, rng.randint(1, 2)) for p in lines],
                refused))
            pending.add(task)
            task.add_done_callback(pending.discard)
        placed += due
        await asyncio.sleep(0.005)
    await asyncio.gather(*pending)


async def settled_all(client: redis.Redis, retention_s: float) -> None:
    """Wait until the outbox has drained, then the retention and a maintenance pass of the
    writer (every 5 s), then until no settle record is due."""
    while backlog(client):
        await asyncio.sleep(0.5)
    await asyncio.sleep(retention_s + 6)
    while settle_records(client) > 1:
        await asyncio.sleep(1)


def settle_records(client: redis.Redis) -> int:
    """Settle records waiting, in every group."""
    return sum(int(client.llen(g.settle)) for g in keys.layout(keys.DEFAULT_GROUPS).all)


def census(client: redis.Redis) -> str:
    """What Redis holds now: keys and bytes per kind of key (``MEMORY USAGE`` of each), and
    what used_memory counts beside the data (MEMORY STATS)."""
    kinds: dict[str, list[int]] = {}
    for key in client.scan_iter(count=1000):
        parts = key.decode().split(":")
        # {ro}:<kind>:... for the catalog's keys, {g<i>...}:<kind>:... for a group's
        kind = parts[1] if key.startswith((b"{ro}:", b"{g")) and len(parts) > 1 \
            else key.decode()[:10]
        entry = kinds.setdefault(kind, [0, 0])
        entry[0] += 1
        entry[1] += int(client.memory_usage(key, samples=0) or 0)
    named = {str(k): v for k, v in client.memory_stats().items()}
    parts = ", ".join(f"{kind} {n:,} keys {size / MB:.1f} MB"
                      for kind, (n, size) in sorted(kinds.items(), key=lambda kv: -kv[1][1]))
    streams = [s for s in keys.layout(keys.DEFAULT_GROUPS).outboxes if client.exists(s)]
    pending = {g["name"].decode(): 0 for s in streams for g in client.xinfo_groups(s)}
    for s in streams:
        for g in client.xinfo_groups(s):
            pending[g["name"].decode()] += int(g["pending"])
    parts += (f"; outbox {sum(client.xlen(s) for s in streams):,} entries in {len(streams)} "
              f"streams, pending per group {pending}")
    return (f"{parts}; dataset {int(named['dataset.bytes']) / MB:.1f} MB, overhead "
            f"{int(named['overhead.total']) / MB:.1f} MB (AOF buffer "
            f"{int(named['aof.buffer']) / MB:.1f} MB)")


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def reads(engine: Engine, users: int, rng: random.Random, n: int = 300) -> str:
    """Latencies of reads that go to Postgres: settled orders (lists, one order) and history."""
    lists, singles, history = [], [], []
    for _ in range(n):
        user = rng.randint(1, users)
        t0 = time.perf_counter()
        page = await engine.orders(user, limit=20)
        t1 = time.perf_counter()
        await engine.history(user, limit=20)
        t2 = time.perf_counter()
        lists.append(t1 - t0)
        history.append(t2 - t1)
        if page.items:
            t3 = time.perf_counter()
            await engine.order(user, page.items[-1].id)
            singles.append(time.perf_counter() - t3)
    return "; ".join(f"{name} p50 {pct(v, 50) * 1000:.2f} ms p99 {pct(v, 99) * 1000:.2f} ms"
                     for name, v in (("GET /orders", lists), ("GET /orders/{id}", singles),
                                     ("GET /balance/history", history)) if v)


async def idempotency_bytes(engine: Engine, client: redis.Redis, product: int) -> int:
    """What one idempotency record of an order costs in Redis."""
    order = await engine.place_order(1, [(product, 1)], idem=Idempotency("bench-key", "fp"))
    record = engine.layout.of(1).idempotency(1, "bench-key")
    assert order.id and client.exists(record)
    return int(client.memory_usage(record) or 0)


async def bench(args: argparse.Namespace, root: Path) -> None:
    redis_server = RedisServer(root / "redis", free_port()).start()
    postgres = PostgresServer(root / "pg", free_port()).start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upgrade(postgres.url)
        settings = Settings(redis_url=redis_server.url, database_url=postgres.url,
                            platform_port=free_port(), redis_retention_s=args.retention,
                            log_level="WARNING")
        client = redis.Redis.from_url(redis_server.url)
        state.mark(client, "bench_memory")
        Outboxes(client, CONSUMER_GROUPS[0], "bench").create_groups()
        engine = Engine(redis_server.url, archive=PostgresArchive(postgres.url))
        await engine.load()
        products = [(await engine.create_product(f"p{i}", 100 + i, 10**9)).id
                    for i in range(args.products)]
        for start in range(1, args.users + 1, 1000):
            await asyncio.gather(*(engine.charge(u, 1_000_000)
                                   for u in range(start, min(args.users + 1, start + 1000))))
        procs = [child(settings, root / "platform.log", "platform"),
                 child(settings, root / "worker.log", "worker")]
        await settled_all(client, args.retention)  # the setup's history lines too
        base, base_data = used(client), dataset(client)
        print(f"before the first order: {census(client)}", flush=True)
        print(f"setup: {args.users} users, {args.products} products; used_memory "
              f"{base / MB:.1f} MB; retention {args.retention:g} s, {args.rate} orders/s; "
              f"logs in {root}", flush=True)
        client.config_set("latency-monitor-threshold", 100)  # ms: what stalled Redis, if anything
        rng, steps, start, refused = random.Random(7), [], time.monotonic(), [0]
        for done in range(args.step, args.orders + 1, args.step):
            await place(engine, args.users, products, args.step, args.rate, rng, refused)
            steps.append(used(client))
            growth = "" if len(steps) < 2 else f" ({(steps[-1] / steps[-2] - 1) * 100:+.1f}%)"
            # The keys (mostly the tail's orders and history lines) and the data's own bytes
            # tell a tail that is longer at this instant from growth that stays.
            print(f"{done:>9,} orders at {time.monotonic() - start:6.0f} s: used_memory "
                  f"{steps[-1] / MB:7.1f} MB{growth}, data {dataset(client) / MB:.1f} MB, "
                  f"{client.dbsize():,} keys; outbox backlog {backlog(client):,}; "
                  f"503s so far {refused[0]}", flush=True)
        if len(steps) > 1:
            first, later = steps[0], steps[1:]
            print(f"after the first step: used_memory {min(later) / MB:.1f}-"
                  f"{max(later) / MB:.1f} MB ({(min(later) / first - 1) * 100:+.1f}% to "
                  f"{(max(later) / first - 1) * 100:+.1f}% of the first), last "
                  f"{(later[-1] / first - 1) * 100:+.1f}%", flush=True)
        await settled_all(client, args.retention)
        settled, settled_data = used(client), dataset(client)
        left = settle_records(client)
        print(f"drained and settled: used_memory {settled / MB:.1f} MB "
              f"({(settled - base) / args.orders:.1f} bytes an order more than before the "
              f"first), data {(settled_data - base_data) / args.orders:.1f} bytes per settled "
              f"order left in Redis (idempotency records excluded); {left} settle records "
              f"waiting; {refused[0]} orders answered 503", flush=True)
        print(f"what is left: {census(client)}", flush=True)
        print(f"an order's idempotency record: "
              f"{await idempotency_bytes(engine, client, products[0])} bytes (24 h)")
        print(f"reads from Postgres: {await reads(engine, args.users, rng)}")
        stalls = [(e[0].decode(), e[2], e[3])
                  for e in client.execute_command("LATENCY", "LATEST")]
        print(f"AOF rewrites during the run: {client.info('persistence')['aof_rewrites']}; "
              f"Redis stalls over 100 ms (LATENCY LATEST: event, last ms, max ms): {stalls}")
        await engine.close()
        await engine.archive.close()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        postgres.stop()
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=60_000)
    parser.add_argument("--step", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=4_000, help="orders/s")
    parser.add_argument("--retention", type=float, default=10.0,
                        help="RUSHORDER_REDIS_RETENTION_S of the run, seconds")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--products", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rushorder-memory-"))
    try:
        asyncio.run(bench(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
