"""POST /api/v1/orders against GET /health/live and the classic row-lock transaction.

All three are measured in one run, interleaved, at the same concurrency, on this box:
  * health: wrk on the API's /health/live (the framework's floor);
  * orders: wrk POSTing one unit of one hot product as many users (load/wrk_orders.lua);
  * row-lock: pgbench running load/rowlock_order.sql (SELECT ... FOR UPDATE on the product
    and the balance rows, then the writes) against a private Postgres.
Redis runs as in the managed stack (AOF, appendfsync always). Prints medians and ratios.

The API runs one worker process by default here, not the product's default of two: on
this 2-core box Redis, its AOF fsync and the load generator need about one core, and a
second API worker oversubscribes the CPU. Measured (interleaved fresh stacks, wrk -c64):
one worker answered 11.1-12.8k orders/s against 8.9-10.7k for two, because Redis' fsync
per loop iteration waits on a busy CPU (outside commands, an iteration took 0.57 ms
against 1.4-1.9 ms). Size ``RUSHORDER_API_WORKERS`` to the cores the API has to itself;
``--api-workers 2`` measures the other way.

With ``--limiter`` it measures what the per-user write rate limit costs instead
(issue 25's goal: at most 5% of orders/s): two API processes on the same Redis, one with
``RUSHORDER_RATE_LIMIT_PER_S=0`` and one with the product's default limit, and rounds of
orders alternating between them (off-on, then on-off, ...), medians and their ratio. The
bench's 2,000 users each order about 5 times a second at 10k orders/s, under the default
20/s: every order still passes (non-2xx must stay 0), so the figure is the limiter's
bookkeeping (one GET and one SET per order inside place_orders.lua).

Usage: python load/bench_api.py [--seconds 10] [--rounds 3] [--connections 64]
                                [--api-workers 1] [--api-server uvicorn|granian]
                                [--limiter]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis as redispy  # `redis` names the bench's server below

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine, state  # noqa: E402
from rushorder.servers import PostgresServer, RedisServer, free_port  # noqa: E402
from rushorder.settings import Settings  # noqa: E402
from rushorder.tokens import mint_token  # noqa: E402

USERS = 2000
PRICE = 10


def need(tool: str, package: str) -> str:
    """The path of a load tool, installing its Debian package when we may."""
    path = shutil.which(tool)
    if path is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        path = shutil.which(tool)
    if path is None:
        sys.exit(f"{tool} is needed: apt-get install {package}")
    return path


async def seed(redis_url: str) -> int:
    """One hot product with stock for the whole run, and USERS users with full balances."""
    with redispy.Redis.from_url(redis_url) as client:
        state.mark(client, "bench_api")  # a new, empty shop
    engine = Engine(redis_url)
    product = await engine.create_product("hot item", PRICE, 1_000_000_000)
    for _ in range(10):
        await asyncio.gather(*(engine.charge(u, 1_000_000) for u in range(1, USERS + 1)))
    await engine.close()
    return product.id


def wrk(url: str, script: str, seconds: int, conns: int, env: dict[str, str]) -> dict:
    """Run wrk and parse the JSON line our Lua reporters print."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "-s", script, url],
        capture_output=True, text=True, env={**os.environ, **env}, check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    stats = json.loads(line.removeprefix("WRK_JSON "))
    stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
    return stats


def pgbench(pg_url: str, seconds: int, conns: int) -> dict:
    """Run the row-lock order transaction with pgbench."""
    out = subprocess.run(
        ["pgbench", "-n", f"-c{conns}", "-j2", f"-T{seconds}", "-D", f"users={USERS}",
         "-f", str(ROOT / "load/rowlock_order.sql"), pg_url],
        capture_output=True, text=True, check=True,
    ).stdout
    tps = next(float(line.split("=")[1].split()[0]) for line in out.splitlines()
               if line.startswith("tps"))
    failed = next((line for line in out.splitlines() if "failed" in line), "")
    return {"rps": tps, "detail": failed.strip()}


def main() -> None:
    """Start everything, run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--api-workers", type=int, default=1,
                        help="API worker processes (1: see above)")
    parser.add_argument("--api-server", choices=("uvicorn", "granian"), default="uvicorn",
                        help="RUSHORDER_API_SERVER of the API under test")
    parser.add_argument("--limiter", action="store_true",
                        help="orders/s with the write rate limit off against on, interleaved")
    args = parser.parse_args()
    need("wrk", "wrk")
    need("pgbench", "postgresql-client")

    tmp = Path(tempfile.mkdtemp(prefix="rushorder-bench-"))
    redis = RedisServer(tmp / "redis", free_port())
    postgres = PostgresServer(tmp / "pg", free_port())
    apis: list[subprocess.Popen[bytes]] = []
    try:
        redis.start()
        postgres.start()
        product_id = asyncio.run(seed(redis.url))
        subprocess.run(["psql", "-q", postgres.url, "-v", f"users={USERS}",
                        "-f", str(ROOT / "load/rowlock_schema.sql")],
                       check=True, capture_output=True)
        settings = Settings(redis_url=redis.url, database_url=postgres.url,
                            http_port=free_port(), api_workers=args.api_workers)
        tokens = tmp / "tokens.txt"
        tokens.write_text("\n".join(mint_token(settings.jwt_secret, u, ttl_s=86_400)
                                    for u in range(1, USERS + 1)) + "\n")
        env = {**os.environ, "RUSHORDER_REDIS_URL": redis.url,
               "RUSHORDER_DATABASE_URL": postgres.url,
               "RUSHORDER_API_WORKERS": str(args.api_workers),
               "RUSHORDER_API_SERVER": args.api_server, "RUSHORDER_LOG_LEVEL": "WARNING"}
        wrk_env = {"TOKENS": str(tokens), "PRODUCT_ID": str(product_id)}
        if args.limiter:
            limits = compare_limiter(apis, env, wrk_env, args, redis.url)
            report_limiter(limits, args)
            check_invariants(redis.url, product_id, {"orders": limits["off"] + limits["on"]})
            return
        base = start_api(apis, env, settings.http_port)
        # Warm up: scripts loaded, connections open, JIT-free Python caches filled.
        wrk(base + "/", str(ROOT / "load/wrk_orders.lua"), 2, args.connections, wrk_env)
        results: dict[str, list[dict]] = {"health": [], "orders": [], "rowlock": []}
        for _ in range(args.rounds):
            results["health"].append(wrk(base + "/health/live",
                                         str(ROOT / "load/wrk_report.lua"),
                                         args.seconds, args.connections, {}))
            results["orders"].append(wrk(base + "/", str(ROOT / "load/wrk_orders.lua"),
                                         args.seconds, args.connections, wrk_env))
            results["rowlock"].append(pgbench(postgres.url, args.seconds, args.connections))
        report(results, args)
        check_invariants(redis.url, product_id, results)
    finally:
        for api in apis:
            api.send_signal(signal.SIGTERM)
            try:
                api.wait(15)
            except subprocess.TimeoutExpired:
                api.kill()
        postgres.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def start_api(apis: list[subprocess.Popen[bytes]], env: dict[str, str], port: int) -> str:
    """Start `rushorder api` with ``env`` on ``port`` (kept in ``apis`` to stop it); its
    base URL once ready."""
    apis.append(subprocess.Popen([sys.executable, "-m", "rushorder.cli", "api"],
                                 env={**env, "RUSHORDER_HTTP_PORT": str(port)}, cwd=ROOT))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health/ready")
    return base


def compare_limiter(apis: list[subprocess.Popen[bytes]], env: dict[str, str],
                    wrk_env: dict[str, str], args: argparse.Namespace,
                    redis_url: str) -> dict[str, list[dict]]:
    """Rounds of orders against an API without the write rate limit and one with the
    default (Settings'), interleaved so that drift (the AOF, caches, the box) falls on
    both alike: off-on, on-off, off-on... The rounds of each, by name, each with the
    µs Redis spent in scripts per order (``redis_us``): the limiter's whole work is
    there, and it moves far less than orders/s with what else the box runs."""
    default = str(Settings().rate_limit_per_s)
    bases = {"off": start_api(apis, {**env, "RUSHORDER_RATE_LIMIT_PER_S": "0"}, free_port()),
             "on": start_api(apis, {**env, "RUSHORDER_RATE_LIMIT_PER_S": default}, free_port())}
    script = str(ROOT / "load/wrk_orders.lua")
    for base in bases.values():  # warm both up alike
        wrk(base + "/", script, 2, args.connections, wrk_env)
    results: dict[str, list[dict]] = {"off": [], "on": []}
    with redispy.Redis.from_url(redis_url) as client:
        for i in range(args.rounds):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                client.config_resetstat()
                stats = wrk(bases[name] + "/", script, args.seconds, args.connections, wrk_env)
                evalsha = client.info("commandstats").get("cmdstat_evalsha", {})
                stats["redis_us"] = evalsha.get("usec", 0) / max(stats["requests"], 1)
                results[name].append(stats)
    return results


def report_limiter(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Per-round orders/s off and on, their medians and the cost of the limiter."""
    print(f"\n{args.rounds} rounds x {args.seconds}s each way, {args.connections} "
          f"connections, {args.api_workers} {args.api_server} API workers each; limit on: "
          f"{Settings().rate_limit_per_s:g}/s, bursts of {Settings().rate_limit_burst}")
    print(f"{'round':>5} {'off/s':>10} {'on/s':>10} {'on/off':>8} {'off Redis us':>13} "
          f"{'on Redis us':>12} {'non-2xx':>8}")
    for i, (off, on) in enumerate(zip(results["off"], results["on"], strict=True), 1):
        refused = off["non2xx"] + on["non2xx"] + off["socket_errors"] + on["socket_errors"]
        print(f"{i:>5} {off['rps']:>10.0f} {on['rps']:>10.0f} {on['rps'] / off['rps']:>8.3f} "
              f"{off['redis_us']:>13.2f} {on['redis_us']:>12.2f} {refused:>8}")
    without, with_ = median(results["off"], "rps"), median(results["on"], "rps")
    # Each round's two runs are next to each other in time: the median of their ratios is
    # the steadier figure on a box whose load drifts.
    paired = statistics.median(on["rps"] / off["rps"]
                               for off, on in zip(results["off"], results["on"], strict=True))
    print(f"\nmedian orders/s: off {without:.0f}, on {with_:.0f} (ratio {with_ / without:.3f}); "
          f"median of the rounds' on/off {paired:.3f}: the limiter costs "
          f"{100 * (1 - paired):.1f}% (goal <= 5%)")
    us_off, us_on = median(results["off"], "redis_us"), median(results["on"], "redis_us")
    print(f"Redis time in scripts per order: off {us_off:.2f} us, on {us_on:.2f} us: the "
          f"limiter adds {us_on - us_off:.2f} us, {100 * (us_on - us_off) / us_off:.1f}% of "
          f"Redis' part; {100 * (us_on - us_off) * without / 1e6:.1f}% of one core at "
          f"{without:.0f} orders/s")


def wait_http(url: str, timeout_s: float = 30) -> None:
    """Poll until the URL answers 200."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} did not become ready")


def median(rows: list[dict], field: str) -> float:
    """The median of one field over the rounds."""
    return statistics.median(row[field] for row in rows)


def report(results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    """Print per-round figures, medians and the ratios the targets are about."""
    print(f"\n{args.rounds} rounds x {args.seconds}s, {args.connections} connections, "
          f"{args.api_workers} {args.api_server} API workers, wrk -t2 and pgbench -j2 "
          "on the same 2-core box")
    print(f"{'round':>5} {'health/s':>10} {'orders/s':>10} {'rowlock tps':>12} "
          f"{'ord p50 ms':>10} {'ord p99 ms':>10} {'non-2xx':>8}")
    for i, (h, o, r) in enumerate(zip(*results.values(), strict=True), 1):
        print(f"{i:>5} {h['rps']:>10.0f} {o['rps']:>10.0f} {r['rps']:>12.0f} "
              f"{o['p50_us'] / 1000:>10.1f} {o['p99_us'] / 1000:>10.1f} {o['non2xx']:>8}")
    health, orders = median(results["health"], "rps"), median(results["orders"], "rps")
    rowlock = median(results["rowlock"], "rps")
    pairs = zip(results["health"], results["orders"], strict=True)
    ratios = [o["rps"] / h["rps"] for h, o in pairs]
    p99 = median(results["orders"], "p99_us") / 1000
    non2xx = sum(o["non2xx"] + o["socket_errors"] for o in results["orders"])
    print(f"\nmedian: health {health:.0f}/s, orders {orders:.0f}/s, row-lock {rowlock:.0f} tps")
    print(f"orders/health {statistics.median(ratios):.2f}x (target >= 0.35x)")
    print(f"orders/row-lock {orders / rowlock:.1f}x (target >= 20x)")
    print(f"orders p99 {p99:.1f} ms (target <= 50 ms); non-2xx or socket errors: {non2xx}")


def check_invariants(redis_url: str, product_id: int, results: dict[str, list[dict]]) -> None:
    """Units sold equal the stock taken, and every unit was paid for."""

    async def read() -> tuple[int, int]:
        engine = Engine(redis_url)
        stock = (await engine.product(product_id)).stock
        balances = await asyncio.gather(*(engine.balance(u) for u in range(1, USERS + 1)))
        await engine.close()
        return stock, sum(b.balance for b in balances)

    stock, money = asyncio.run(read())
    sold = 1_000_000_000 - stock
    print(f"invariants: {sold} units sold, money taken {USERS * 10_000_000 - money} won "
          f"(= units x {PRICE}: {USERS * 10_000_000 - money == sold * PRICE})")


if __name__ == "__main__":
    main()
