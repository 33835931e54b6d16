"""The whole stack under load: ``rushorder up`` with its workers and mock platform running.

``rushorder up`` starts as a child, exactly as a user runs it (a private data dir in a temp
folder, free ports through RUSHORDER_* variables). The bench creates its users and one hot
product through the engine, waits until the workers have applied them, then runs rounds of:

  * health: wrk on ``GET /health/live`` (the framework's floor on this stack);
  * orders: wrk POSTing one unit of the hot product as many users (load/wrk_orders.lua),
    then the drain: until both consumer groups (``postgres`` and ``platform``) have no
    backlog left, i.e. every order is in Postgres and at the platform;
  * row-lock: pgbench running load/rowlock_order.sql (SELECT ... FOR UPDATE on the product
    and the balance rows, then the writes) on the stack's own Postgres, in a database of its
    own: the same server, settings and disk the outbox writer uses. It runs after the
    drain, when the workers are idle, so it shares the box as bench_api's baseline does.

CPU time comes from ``/proc``: every process under the ``up`` supervisor is attributed to the
kind of its top child (api, worker, platform, redis, postgres, up itself), and the worker's
two processes are told apart by their sockets (the Postgres writer holds a connection to
Postgres, the platform forwarder does not). A kind's CPU seconds per 1,000 orders are taken
over the orders round plus its drain, divided by the orders that reached Postgres. Processes
outside the bench that used the CPU meanwhile are reported too: a figure measured while
others were busy is not this code's figure.

--sale runs issue 27's flash-sale catalog through the same stack instead, each product
against its plain twin, interleaved (wrk with load/wrk_sale.lua: one unit of a random option
an order, as many users; sold-out sizes keep being asked for, as a crowd does): a drop of
10 options x 50 units (SMALL_DROPS drops a measurement, wrk for 1 s each: it sells out in a
fraction of it) against a plain product of 500; 10 options x 10,000 against a plain
100,000 (--seconds); and a product with max_per_user 1,000 (never reached) against one
without. Orders/s are units sold per second between the product's first and last order
(created_at, Redis' clock, read from Postgres once drained); transfers per order come
from the transfers' receipts in Redis (the API's own SHORT counter is not exported:
load/bench_engine.py --sale gives the share of orders that waited).

--before DIR runs the one-step orders round only (wrk_orders.lua and the drain), on two
stacks up side by side: one from DIR (an export of an older commit), one from --repo;
rounds alternate between them (ABBA: before, after, after, before, ...) and the report
gives each one's median orders/s and the paired ratios after / before of the rounds run
next to each other. Both are seeded by this checkout's engine (products and users as
bench_api.seed makes them), so DIR must read what it writes. In an A/A run (the same tree on
both) the stack started first read up to ~8% faster: --after-first starts --repo's first,
so that runs in both orders can be set against each other.

--payments runs issue 28's calls through the stack (load/wrk_payments.lua), each round:
one-step orders (wrk_orders.lua, then the drain), previews (no writes: nothing to drain),
DEFERRED orders (then the drain), and the pay of every order still pending, from Postgres'
orders once drained (each paid once; a wrk thread stops after its last), then the drain
again. pay/s are paid orders per second between the first and the last payment as
Postgres' payments have them (wrk's own rate too while the list lasted).

Usage: python load/bench_stack.py [--seconds 8] [--rounds 1] [--connections 64]
                                  [--api-workers 1] [--workers 1] [--repo DIR] [--keep-log]
                                  [--sale | --payments | --before DIR [--after-first]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cpu
import psycopg
import redis
from bench_api import PRICE, USERS, need, pgbench, seed, wrk

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine, keys  # noqa: E402
from engine.models import NewOption  # noqa: E402
from engine.outbox import CONSUMER_GROUPS, Outboxes  # noqa: E402
from rushorder import stackfile  # noqa: E402
from rushorder.servers import free_port  # noqa: E402
from rushorder.stack import http_ok  # noqa: E402
from rushorder.tokens import mint_token  # noqa: E402

SECRET = "bench-stack-secret-of-at-least-32-bytes"
KINDS = ("api", "redis", "worker", "writer", "forwarder", "postgres", "platform", "up")
READY_TIMEOUT_S = 120
STOCK = 1_000_000_000  # the hot product's (bench_api.seed)
DRAIN_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------


@dataclass
class Stack:
    """``rushorder up`` as a child process on free ports, in a temp data dir."""

    tmp: Path
    api_workers: int
    workers: int
    repo: Path = ROOT  # the checkout whose code the stack runs
    ports: dict[str, int] = field(default_factory=lambda: {
        name: free_port() for name in ("HTTP", "REDIS", "PG", "PLATFORM", "WORKER_METRICS")})
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """What ``up`` printed (every child's output, prefixed)."""
        return self.tmp / "up.log"

    @property
    def api(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.ports['HTTP']}"

    @property
    def redis_url(self) -> str:
        """The stack's private Redis, with its password, from the stack file ``up`` wrote
        (an older checkout's ``up`` may have written none: its Redis had no password)."""
        running = stackfile.read(self.tmp / "data")
        return running.redis_url if running else f"redis://127.0.0.1:{self.ports['REDIS']}/0"

    def pg_url(self, database: str = "rushorder") -> str:
        """A database of the stack's private Postgres, as its app role (stack file), or as
        an older checkout's password-less superuser."""
        running = stackfile.read(self.tmp / "data")
        base = running.database_url if running else \
            f"postgresql://postgres@127.0.0.1:{self.ports['PG']}/rushorder"
        return f"{base.rsplit('/', 1)[0]}/{database}"

    def env(self) -> dict[str, str]:
        """Ours without any RUSHORDER_* (a URL set there would skip the private servers)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUSHORDER_")}
        env.update({f"RUSHORDER_{name}_PORT": str(port) for name, port in self.ports.items()})
        env.update(RUSHORDER_DATA_DIR=str(self.tmp / "data"), RUSHORDER_JWT_SECRET=SECRET,
                   RUSHORDER_API_WORKERS=str(self.api_workers),
                   RUSHORDER_WORKERS=str(self.workers))
        if self.repo != ROOT:  # children run `python -m rushorder.cli`: this comes first
            env["PYTHONPATH"] = str(self.repo)
        return env

    def start(self) -> Stack:
        """Start ``rushorder up`` and wait until the API is ready."""
        script = Path(sys.executable).with_name("rushorder")
        argv = [str(script), "up"] if script.exists() and self.repo == ROOT else [
            sys.executable, "-m", "rushorder.cli", "up"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=self.env(), cwd=self.repo,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not http_ok(self.api + "/health/ready"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"rushorder up did not become ready; see {self.log}")
            time.sleep(0.25)
        return self

    def stop(self) -> None:
        """SIGTERM: ``up`` stops the API, the workers, the platform, then the servers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------------------------------
# CPU time by process kind, from /proc
# ---------------------------------------------------------------------------------------


def _kind_of_top(argv: list[str]) -> str:
    """The kind of a direct child of ``up``, from its command line."""
    # Redis rewrites its title ("valkey-server 127.0.0.1:6380"), Postgres too.
    program = Path(argv[0].split()[0]).name if argv and argv[0].strip() else ""
    if program in ("redis-server", "valkey-server"):
        return "redis"
    if program in ("postgres", "postgres:"):
        return "postgres"
    if "rushorder.cli" in argv:
        sub = argv[argv.index("rushorder.cli") + 1:]
        return sub[0] if sub and sub[0] in ("api", "worker", "platform") else "up"
    return "up"


def _sockets_to(port: int) -> set[str]:
    """Inodes of the TCP sockets whose remote end is 127.0.0.1:``port`` (or ::1)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[2].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _holds(pid: int, inodes: set[str]) -> bool:
    """``pid`` has one of these sockets open."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith("socket:[") and link[8:-1] in inodes for link in links)


class Processes:
    """CPU ticks of every process under ``root``, by kind (see the module docstring)."""

    def __init__(self, root: int, pg_port: int) -> None:
        self.root = root
        self.pg_port = pg_port
        self.roles: dict[int, str] = {}  # worker processes: writer or forwarder

    def ticks(self) -> Counter[str]:
        """Ticks by kind now; ``worker`` is the sum of ``writer``, ``forwarder`` and the rest."""
        stats = cpu.table()
        kids = cpu.children(stats)
        totals: Counter[str] = Counter()
        if self.root in stats:
            totals["up"] += stats[self.root][1]
        for top in kids.get(self.root, []):
            kind = _kind_of_top(cpu.cmdline(top))
            for pid in cpu.subtree(top, kids):
                totals[kind] += stats[pid][1]
                if kind == "worker" and pid != top and (role := self._role(pid)):
                    totals[role] += stats[pid][1]
        return totals

    def _role(self, pid: int) -> str | None:
        """A worker's child: the Postgres writer holds a connection to Postgres (None: the
        multiprocessing resource tracker)."""
        if pid not in self.roles:
            if any("resource_tracker" in a for a in cpu.cmdline(pid)):
                return None
            self.roles[pid] = ("writer" if _holds(pid, _sockets_to(self.pg_port))
                               else "forwarder")
        return self.roles[pid]


def own_ticks() -> int:
    """This process's CPU and its reaped children's (wrk, pgbench), in ticks."""
    own, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                        resource.RUSAGE_CHILDREN))
    return round((own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime) / cpu.TICK_S)


def wrk_seconds() -> float:
    """CPU seconds of the reaped children so far (wrk and pgbench)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return kids.ru_utime + kids.ru_stime


# ---------------------------------------------------------------------------------------
# Drain and counts
# ---------------------------------------------------------------------------------------


def drain(client: redis.Redis, since: float) -> dict[str, float]:
    """Wait until every group has no backlog; seconds from ``since`` until each had none."""
    outboxes = {group: Outboxes(client, group, "bench") for group in CONSUMER_GROUPS}
    done: dict[str, float] = {}
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while len(done) < len(outboxes):
        for group, outbox in outboxes.items():
            if group not in done and not outbox.backlog():
                done[group] = time.monotonic() - since
        if time.monotonic() > deadline:
            sys.exit(f"the outbox did not drain in {DRAIN_TIMEOUT_S}s: {done}")
        time.sleep(0.05)
    return done


def backlog(client: redis.Redis) -> dict[str, int]:
    """Entries each group has not acknowledged yet."""
    return {group: Outboxes(client, group, "bench").backlog() for group in CONSUMER_GROUPS}


def orders_in_postgres(pg_url: str) -> int:
    """How many orders the writer has applied."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM orders").fetchone()
    return int(row[0]) if row else 0


def prepare_rowlock(stack: Stack) -> str:
    """A database ``rowlock`` on the stack's Postgres with the row-lock schema; its URL."""
    with psycopg.connect(stack.pg_url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS rowlock")
        conn.execute("CREATE DATABASE rowlock")
    url = stack.pg_url("rowlock")
    subprocess.run(["psql", "-q", url, "-v", f"users={USERS}",
                    "-f", str(ROOT / "load/rowlock_schema.sql")], check=True,
                   capture_output=True)
    return url


# ---------------------------------------------------------------------------------------
# One round
# ---------------------------------------------------------------------------------------


@dataclass
class OrdersRound:
    """One orders run with its drain: what wrk saw, what Postgres got, CPU by kind."""

    wrk: dict
    orders: int  # orders that reached Postgres in this round
    left: dict[str, int]  # each group's backlog when the load stopped
    drained_s: dict[str, float]  # each group's drain time after the load stopped
    window_s: float
    cpu_s: dict[str, float]  # CPU seconds by kind over load + drain
    others_percent: float
    script_us: float = 0.0  # Redis' EVALSHA µs (INFO commandstats) per request over the load

    def per_thousand(self, kind: str) -> float:
        """CPU seconds of ``kind`` per 1,000 orders."""
        return self.cpu_s.get(kind, 0.0) / max(self.orders, 1) * 1000


def run_orders(stack: Stack, procs: Processes, client: redis.Redis, args: argparse.Namespace,
               wrk_env: dict[str, str], script: str = str(ROOT / "load/wrk_orders.lua")
               ) -> OrdersRound:
    """Orders for ``args.seconds`` (``script``: one-step orders unless told), then the
    drain; CPU attributed over both."""
    before_orders = orders_in_postgres(stack.pg_url())
    ticks, machine, own, load_s = procs.ticks(), cpu.machine(), own_ticks(), wrk_seconds()
    started, script_us = time.monotonic(), evalsha_us(client)
    stats = wrk(stack.api + "/", script, args.seconds, args.connections, wrk_env)
    stopped = time.monotonic()
    script_us = (evalsha_us(client) - script_us) / max(stats["requests"], 1)
    wrk_cpu = wrk_seconds() - load_s
    left = backlog(client)
    drained = drain(client, stopped)
    ticks_after, machine_after, own_after = procs.ticks(), cpu.machine(), own_ticks()
    seconds = {kind: (ticks_after[kind] - ticks[kind]) * cpu.TICK_S for kind in KINDS}
    seconds["wrk"] = wrk_cpu
    ours = sum(ticks_after[k] - ticks[k] for k in KINDS if k not in ("writer", "forwarder"))
    others = cpu.others_percent(machine, machine_after, ours + own_after - own)
    return OrdersRound(stats, orders_in_postgres(stack.pg_url()) - before_orders, left,
                       drained, time.monotonic() - started, seconds, others, script_us)


def evalsha_us(client: redis.Redis) -> int:
    """Microseconds Redis has spent in EVALSHA so far (every script the stack runs)."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("usec", 0))


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


def report(health: list[dict], orders: list[OrdersRound], rowlock: list[dict],
           args: argparse.Namespace) -> None:
    """Per-round figures, medians, CPU per 1,000 orders by kind, and the targets."""
    print(f"\nwhole stack (rushorder up: API x{args.api_workers}, {args.workers} outbox "
          f"worker(s), mock platform, Redis, Postgres); {args.rounds} rounds x "
          f"{args.seconds}s, {args.connections} connections, wrk -t2 and pgbench -j2 on the "
          f"same box; code from {args.repo}")
    print(f"{'round':>5} {'health/s':>9} {'orders/s':>9} {'ratio':>6} {'rowlock':>8} "
          f"{'ord p99':>8} {'non-2xx':>7} {'in pg':>7} {'left pg/pf':>12} "
          f"{'drain pg/pf s':>14} {'others %':>8}")
    for i, (h, o, r) in enumerate(zip(health, orders, rowlock, strict=True), 1):
        w = o.wrk
        print(f"{i:>5} {h['rps']:>9.0f} {w['rps']:>9.0f} {w['rps'] / h['rps']:>6.2f} "
              f"{r['rps']:>8.0f} {w['p99_us'] / 1000:>8.1f} "
              f"{w['non2xx'] + w['socket_errors']:>7} {o.orders:>7} "
              f"{o.left['postgres']:>5}/{o.left['platform']:<6} "
              f"{o.drained_s['postgres']:>6.1f}/{o.drained_s['platform']:<7.1f} "
              f"{o.others_percent:>8.0f}")
    kinds = [*KINDS, "wrk"]
    print("\nCPU seconds per 1,000 orders over the orders run plus its drain "
          "(worker = writer + forwarder + its supervisor):")
    print(f"{'round':>5} " + " ".join(f"{k:>9}" for k in kinds))
    for i, o in enumerate(orders, 1):
        print(f"{i:>5} " + " ".join(f"{o.per_thousand(k):>9.3f}" for k in kinds))
    per_kind = {k: statistics.median(o.per_thousand(k) for o in orders) for k in kinds}
    print("  med " + " ".join(f"{per_kind[k]:>9.3f}" for k in kinds))

    health_rps = statistics.median(h["rps"] for h in health)
    orders_rps = statistics.median(o.wrk["rps"] for o in orders)
    rowlock_tps = statistics.median(r["rps"] for r in rowlock)
    ratio = statistics.median(o.wrk["rps"] / h["rps"] for h, o in zip(health, orders,
                                                                       strict=True))
    non2xx = sum(o.wrk["non2xx"] + o.wrk["socket_errors"] for o in orders)
    drain_pg = statistics.median(o.drained_s["postgres"] for o in orders)
    drain_pf = statistics.median(o.drained_s["platform"] for o in orders)
    print(f"\nmedian: health {health_rps:.0f}/s, orders {orders_rps:.0f}/s, "
          f"row-lock {rowlock_tps:.0f} tps; drained {drain_pg:.1f} s (postgres) and "
          f"{drain_pf:.1f} s (platform) after the load stopped")
    print(f"orders/health {ratio:.2f}x (target >= 0.35x)")
    print(f"orders/row-lock {orders_rps / rowlock_tps:.1f}x (target >= 20x)")
    print(f"non-2xx or socket errors: {non2xx} (target 0)")


def check_books(stack: Stack, product_id: int) -> None:
    """Every unit sold in Redis is an order in Postgres, and Postgres' stock agrees."""

    async def redis_stock() -> int:
        engine = Engine(stack.redis_url)
        stock = (await engine.product(product_id)).stock
        await engine.close()
        return stock

    sold = STOCK - asyncio.run(redis_stock())
    with psycopg.connect(stack.pg_url()) as conn:
        row = conn.execute("SELECT stock FROM products WHERE id = %s", (product_id,)).fetchone()
        lines = conn.execute("SELECT coalesce(sum(quantity), 0) FROM order_lines "
                             "WHERE product_id = %s", (product_id,)).fetchone()
    pg_stock = int(row[0]) if row else None
    pg_sold = int(lines[0]) if lines else 0
    print(f"books: {sold} units sold in Redis, {pg_sold} in Postgres' order lines, Postgres "
          f"stock {'agrees' if pg_stock == STOCK - sold else 'DIFFERS'} "
          f"(every order was {PRICE} won)")


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of each wrk/pgbench run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--api-workers", type=int, default=1,
                        help="RUSHORDER_API_WORKERS (1: see load/bench_api.py)")
    parser.add_argument("--workers", type=int, default=1, help="RUSHORDER_WORKERS")
    parser.add_argument("--repo", type=Path, default=ROOT, metavar="DIR",
                        help="run the stack from this checkout (to compare two trees with "
                             "the same bench)")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep the temp folder with up.log instead of removing it")
    parser.add_argument("--sale", action="store_true",
                        help="issue 27's drops and limit against plain products instead")
    parser.add_argument("--payments", action="store_true",
                        help="issue 28's preview, DEFERRED orders and pay beside one-step "
                             "orders instead")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="one-step orders only, alternating with a second stack run "
                             "from this checkout (paired ratios --repo / DIR)")
    parser.add_argument("--after-first", action="store_true",
                        help="with --before: start --repo's stack first (else DIR's)")
    return parser.parse_args()


def write_tokens(stack: Stack) -> Path:
    """A file of the USERS users' bearer tokens, one a line (for wrk's scripts)."""
    tokens = stack.tmp / "tokens.txt"
    tokens.write_text("\n".join(mint_token(SECRET, u, ttl_s=86_400)
                                for u in range(1, USERS + 1)) + "\n")
    return tokens


def bench(stack: Stack, args: argparse.Namespace) -> None:
    """Seed, warm up, run the rounds, report."""
    assert stack.proc is not None
    client = redis.Redis.from_url(stack.redis_url)
    product_id = asyncio.run(seed(stack.redis_url))
    tokens = write_tokens(stack)
    rowlock_url = prepare_rowlock(stack)
    wrk_env = {"TOKENS": str(tokens), "PRODUCT_ID": str(product_id)}
    # Warm up: scripts loaded, connections open, caches filled; then everything applied.
    wrk(stack.api + "/", str(ROOT / "load/wrk_orders.lua"), 2, args.connections, wrk_env)
    drain(client, time.monotonic())
    procs = Processes(stack.proc.pid, stack.ports["PG"])
    health: list[dict] = []
    orders: list[OrdersRound] = []
    rowlock: list[dict] = []
    for _ in range(args.rounds):
        health.append(wrk(stack.api + "/health/live", str(ROOT / "load/wrk_report.lua"),
                          args.seconds, args.connections, {}))
        orders.append(run_orders(stack, procs, client, args, wrk_env))
        rowlock.append(pgbench(rowlock_url, args.seconds, args.connections))
    report(health, orders, rowlock, args)
    check_books(stack, product_id)
    client.close()


# ---------------------------------------------------------------------------------------
# --sale: issue 27's catalog through the stack
# ---------------------------------------------------------------------------------------

SIZES, SMALL_UNITS, SMALL_DROPS, LARGE_UNITS, LIMIT = 10, 50, 3, 100_000, 1_000
TARGET_OPTIONS_RATIO, TARGET_LIMIT_COST = 0.8, 0.05


@dataclass
class SaleRun:
    """One measurement of --sale: units sold, the seconds between the first and the last
    order (Redis' clock), wrk's answers, the transfers that moved units meanwhile, the CPU
    seconds of each kind of process over the load and its drain."""

    sold: int = 0
    seconds: float = 0.0
    requests: int = 0
    refused: int = 0
    transfers: int = 0
    cpu_s: Counter[str] = field(default_factory=Counter)

    def per_thousand(self, kind: str) -> float:
        """CPU seconds of ``kind`` per 1,000 requests answered."""
        return self.cpu_s[kind] / max(self.requests, 1) * 1000

    @property
    def rate(self) -> float:
        """Units sold per second."""
        return self.sold / max(self.seconds, 1e-3)


async def new_product(redis_url: str, units: int, options: bool,
                      **terms: object) -> tuple[int, list[int]]:
    """A product of ``units`` units (in SIZES options if ``options``): its id and its
    options' ids."""
    engine = Engine(redis_url)
    news = [NewOption(name=str(260 + 10 * i), stock=units // SIZES) for i in range(SIZES)]
    made = await engine.create_product(
        "drop" if options else "plain", PRICE, 0 if options else units,
        options=news if options else None, **terms)  # type: ignore[arg-type]
    await engine.close()
    return made.id, [o.id for o in made.options]


def receipts(client: redis.Redis) -> int:
    """Transfers delivered so far: the receipts transfer_in.lua keeps (days) at the reserve
    and in every group."""
    layout = keys.layout(keys.DEFAULT_GROUPS)
    prefixes = [keys.TRANSFER_IN_PREFIX, *(g.transfer_in_prefix for g in layout.all)]
    return sum(sum(1 for _ in client.scan_iter(match=p + "*", count=1000)) for p in prefixes)


def sold_in_postgres(pg_url: str, product_id: int) -> tuple[int, float]:
    """Units of a product in Postgres' order lines, and the seconds from its first order
    to its last."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(l.quantity), 0), extract(epoch FROM max(o.created_at) "
            "- min(o.created_at)) FROM order_lines l JOIN orders o ON o.id = l.order_id "
            "WHERE l.product_id = %s", (product_id,)).fetchone()
    return (int(row[0]), float(row[1] or 0.0)) if row else (0, 0.0)


def sale_run(stack: Stack, procs: Processes, client: redis.Redis, args: argparse.Namespace,
             tokens: Path, drops: int, seconds: int, units: int, options: bool,
             **terms: object) -> SaleRun:
    """``drops`` new products of ``units`` units each, ordered for ``seconds`` each, then
    drained: what sold and how fast, and the CPU it took."""
    run = SaleRun()
    for _ in range(drops):
        pid, oids = asyncio.run(new_product(stack.redis_url, units, options, **terms))
        dealt, ticks = receipts(client), procs.ticks()
        env = {"TOKENS": str(tokens), "PRODUCT_ID": str(pid), "OPTION_IDS": ",".join(
            map(str, oids))}
        stats = wrk(stack.api + "/", str(ROOT / "load/wrk_sale.lua"), seconds,
                    args.connections, env)
        drain(client, time.monotonic())
        sold, span = sold_in_postgres(stack.pg_url(), pid)
        run.sold, run.seconds = run.sold + sold, run.seconds + span
        run.requests += stats["requests"]
        run.refused += stats["non2xx"] + stats["socket_errors"]
        run.transfers += receipts(client) - dealt
        after = procs.ticks()
        run.cpu_s.update({k: (after[k] - ticks[k]) * cpu.TICK_S for k in KINDS})
    return run


def sale_plan(args: argparse.Namespace) -> list[tuple[str, int, int, int, bool, dict]]:
    """The measurements of one round: (name, drops, seconds, units, options, terms), each
    before its plain twin."""
    secs = args.seconds
    return [
        ("small drop: 10 options x 50", SMALL_DROPS, 1, SIZES * SMALL_UNITS, True, {}),
        ("small plain: 500 units", SMALL_DROPS, 1, SIZES * SMALL_UNITS, False, {}),
        ("large drop: 10 options x 10,000", 1, secs, LARGE_UNITS, True, {}),
        ("large plain: 100,000 units", 1, secs, LARGE_UNITS, False, {}),
        (f"max_per_user {LIMIT:,}, 10^9 units", 1, secs, STOCK, False,
         {"max_per_user": LIMIT}),
        ("no limit, 10^9 units", 1, secs, STOCK, False, {}),
    ]


def sale_bench(stack: Stack, args: argparse.Namespace) -> None:
    """Seed the users, warm up, run --sale's rounds, report."""
    client = redis.Redis.from_url(stack.redis_url)
    warm = asyncio.run(seed(stack.redis_url))
    tokens = write_tokens(stack)
    wrk(stack.api + "/", str(ROOT / "load/wrk_orders.lua"), 2, args.connections,
        {"TOKENS": str(tokens), "PRODUCT_ID": str(warm)})
    drain(client, time.monotonic())
    assert stack.proc is not None
    procs = Processes(stack.proc.pid, stack.ports["PG"])
    runs: dict[str, list[SaleRun]] = {}
    for round_no in range(1, args.rounds + 1):
        for name, drops, seconds, units, options, terms in sale_plan(args):
            run = sale_run(stack, procs, client, args, tokens, drops, seconds, units,
                           options, **terms)
            runs.setdefault(name, []).append(run)
            print(f"  round {round_no}: {name:<36} {run.rate:>8,.0f} units/s ({run.sold:,} "
                  f"sold in {run.seconds:.2f} s; {run.refused:,} of {run.requests:,} "
                  f"refused; {run.transfers} transfers)", flush=True)
    sale_report(runs)
    client.close()


def sale_report(runs: dict[str, list[SaleRun]]) -> None:
    """Medians, paired ratios against the plain twins, transfers per order."""
    print(f"\n{'flash sale through the stack':<36}{'units/s':>9}   {'runs':<26}"
          f"{'transfers per order':>20}{'per unit sold':>15}")
    for name, seen in runs.items():
        per_order = statistics.median(r.transfers / max(r.requests, 1) for r in seen)
        per_unit = statistics.median(r.transfers / max(r.sold, 1) for r in seen)
        print(f"{name:<36}{statistics.median(r.rate for r in seen):>9,.0f}   "
              f"{'  '.join(f'{r.rate:,.0f}' for r in seen):<26}{100 * per_order:>19.2f}%"
              f"{100 * per_unit:>14.2f}%")
    kinds = ("api", "redis", "writer", "forwarder", "postgres")
    print("\nCPU seconds per 1,000 requests answered (median of the rounds; load and drain):")
    print(f"{'':<36}" + "".join(f"{k:>10}" for k in kinds))
    for name, seen in runs.items():
        print(f"{name:<36}" + "".join(
            f"{statistics.median(r.per_thousand(k) for r in seen):>10.3f}" for k in kinds))
    print()
    names = list(runs)
    for (tested, base), goal in zip(zip(names[::2], names[1::2], strict=True),
                                    ("options", "options", "limit"), strict=True):
        ratios = [a.rate / b.rate for a, b in zip(runs[tested], runs[base], strict=True)]
        ratio = statistics.median(ratios)
        target = 1 - TARGET_LIMIT_COST if goal == "limit" else TARGET_OPTIONS_RATIO
        print(f"{tested} / {base}: {ratio:.2f}x (paired rounds: "
              f"{', '.join(f'{r:.2f}' for r in ratios)}; goal >= {target:.2f}x: "
              f"{'met' if ratio >= target else 'MISSED'})")


# ---------------------------------------------------------------------------------------
# --before: one-step orders, this checkout against an older one, interleaved
# ---------------------------------------------------------------------------------------


@dataclass
class Side:
    """One of the two stacks of --before: its stack, client, wrk settings and rounds."""

    name: str
    stack: Stack
    client: redis.Redis
    procs: Processes
    wrk_env: dict[str, str]
    product_id: int
    rounds: list[OrdersRound] = field(default_factory=list)


def prepared(name: str, stack: Stack, args: argparse.Namespace) -> Side:
    """Start ``stack``, seed it, warm it up (2 s of orders, drained)."""
    stack.start()
    assert stack.proc is not None
    client = redis.Redis.from_url(stack.redis_url)
    product_id = asyncio.run(seed(stack.redis_url))
    tokens = write_tokens(stack)
    wrk_env = {"TOKENS": str(tokens), "PRODUCT_ID": str(product_id)}
    wrk(stack.api + "/", str(ROOT / "load/wrk_orders.lua"), 2, args.connections, wrk_env)
    drain(client, time.monotonic())
    return Side(name, stack, client, Processes(stack.proc.pid, stack.ports["PG"]), wrk_env,
                product_id)


def compare(args: argparse.Namespace) -> None:
    """--before: both stacks up, orders rounds alternating ABBA, medians and paired ratios."""
    stacks = {name: Stack(Path(tempfile.mkdtemp(prefix=f"rushorder-bench-{name}-")),
                          args.api_workers, args.workers, repo.resolve())
              for name, repo in (("before", args.before), ("after", args.repo))}
    sides: dict[str, Side] = {}
    try:  # the first started ran up to ~8% faster in an A/A run: --after-first swaps them
        for name in ("after", "before") if args.after_first else ("before", "after"):
            sides[name] = prepared(name, stacks[name], args)
        for round_no in range(args.rounds):
            order = ("before", "after") if round_no % 2 == 0 else ("after", "before")
            for name in order:
                side = sides[name]
                side.rounds.append(run_orders(side.stack, side.procs, side.client, args,
                                              side.wrk_env))
                o = side.rounds[-1]
                print(f"  round {round_no + 1} {name:<6} {o.wrk['rps']:>7,.0f} orders/s "
                      f"(p99 {o.wrk['p99_us'] / 1000:.1f} ms, "
                      f"{o.script_us:.1f} µs in Redis' scripts per order, "
                      f"{o.wrk['non2xx'] + o.wrk['socket_errors']} non-2xx, {o.orders:,} in "
                      f"Postgres, drained {o.drained_s['postgres']:.1f} s; others "
                      f"{o.others_percent:.0f}%)", flush=True)
        compare_report(sides, args)
        for side in sides.values():
            print(f"{side.name}: ", end="")
            check_books(side.stack, side.product_id)
            side.client.close()
    finally:
        for stack in stacks.values():
            stack.stop()
            if args.keep_log:
                print(f"log: {stack.log}")
            else:
                shutil.rmtree(stack.tmp, ignore_errors=True)


def compare_report(sides: dict[str, Side], args: argparse.Namespace) -> None:
    """Medians of each side, CPU per 1,000 orders, and the paired ratios after / before."""
    before, after = sides["before"], sides["after"]
    print(f"\none-step orders through the whole stack, {args.rounds} rounds x {args.seconds}s "
          f"each side, {args.connections} connections, alternating (ABBA); before: "
          f"{before.stack.repo}, after: {after.stack.repo}; started first: {next(iter(sides))}")
    kinds = ("api", "redis", "writer", "forwarder", "postgres")
    print(f"{'':<7}{'orders/s':>9}   {'rounds':<40}" + "".join(f"{k:>10}" for k in kinds)
          + f"{'script µs':>10}   (CPU ms per order; Redis' EVALSHA µs per order)")
    for side in (before, after):
        rates = [o.wrk["rps"] for o in side.rounds]
        print(f"{side.name:<7}{statistics.median(rates):>9,.0f}   "
              f"{'  '.join(f'{r:,.0f}' for r in rates):<40}" + "".join(
                  f"{statistics.median(o.per_thousand(k) for o in side.rounds):>10.3f}"
                  for k in kinds)
              + f"{statistics.median(o.script_us for o in side.rounds):>10.1f}")
    ratios = [a.wrk["rps"] / b.wrk["rps"] for a, b in zip(after.rounds, before.rounds,
                                                         strict=True)]
    ratio = statistics.median(ratios)
    print(f"after / before: {ratio:.2f}x median of the paired rounds "
          f"({', '.join(f'{r:.2f}' for r in ratios)}); ratio of the medians "
          f"{statistics.median(o.wrk['rps'] for o in after.rounds) / statistics.median(o.wrk['rps'] for o in before.rounds):.2f}x; "  # noqa: E501
          f"goal >= 0.95x: {'met' if ratio >= 0.95 else 'MISSED'}")
    non2xx = sum(o.wrk["non2xx"] + o.wrk["socket_errors"] for s in sides.values()
                 for o in s.rounds)
    print(f"non-2xx or socket errors: {non2xx} (target 0)")


# ---------------------------------------------------------------------------------------
# --payments: issue 28's preview, deferred orders and pay through the stack
# ---------------------------------------------------------------------------------------


def pending_orders(pg_url: str) -> list[tuple[int, int]]:
    """(order id, user id) of every order Postgres has as PENDING_PAYMENT, by id."""
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT id, user_id FROM orders WHERE status = 'PENDING_PAYMENT' "
                            "ORDER BY id").fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


def paid_in_postgres(pg_url: str, ids: list[int]) -> tuple[int, float]:
    """How many of ``ids`` Postgres has a COMPLETED payment for, and the seconds from the
    first of those payments to the last."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(paid_at) - min(paid_at)) FROM payments "
            "WHERE status = 'COMPLETED' AND order_id = ANY(%s)", (ids,)).fetchone()
    return (int(row[0]), float(row[1] or 0.0)) if row else (0, 0.0)


@dataclass
class PayRun:
    """One pay round: orders it had to pay, wrk's answers, what Postgres paid and when."""

    listed: int
    wrk: dict
    paid: int
    span_s: float
    cpu_s: dict[str, float]
    script_us: float  # Redis' EVALSHA µs per request over the load

    @property
    def rate(self) -> float:
        """Orders paid per second between the first payment and the last."""
        return self.paid / max(self.span_s, 1e-3)


def payments_bench(stack: Stack, args: argparse.Namespace) -> None:
    """Seed, warm up, then rounds of one-step orders, previews, deferred orders and pays."""
    assert stack.proc is not None
    client = redis.Redis.from_url(stack.redis_url)
    product_id = asyncio.run(seed(stack.redis_url))
    tokens = write_tokens(stack)
    token_of = dict(zip(range(1, USERS + 1), tokens.read_text().split(), strict=True))
    env = {"TOKENS": str(tokens), "PRODUCT_ID": str(product_id)}
    script = str(ROOT / "load/wrk_payments.lua")
    for mode in ("preview", "deferred"):  # warm up each path, then pay what is pending
        wrk(stack.api + "/", script, 1, args.connections, {**env, "MODE": mode})
    wrk(stack.api + "/", str(ROOT / "load/wrk_orders.lua"), 1, args.connections, env)
    drain(client, time.monotonic())
    procs = Processes(stack.proc.pid, stack.ports["PG"])
    orders: list[OrdersRound] = []
    previews: list[dict] = []
    deferred: list[OrdersRound] = []
    pays: list[PayRun] = []
    pays_file = stack.tmp / "pays.txt"
    for round_no in range(1, args.rounds + 1):
        orders.append(run_orders(stack, procs, client, args, env))
        previews.append(wrk(stack.api + "/", script, args.seconds, args.connections,
                            {**env, "MODE": "preview"}))
        deferred.append(run_orders(stack, procs, client, args, {**env, "MODE": "deferred"},
                                   script))
        pending = pending_orders(stack.pg_url())
        pays_file.write_text("".join(f"{o} {token_of[u]}\n" for o, u in pending))
        ticks, script_us = procs.ticks(), evalsha_us(client)
        stats = wrk(stack.api + "/", script, args.seconds, args.connections,
                    {**env, "MODE": "pay", "PAYS": str(pays_file)})
        script_us = (evalsha_us(client) - script_us) / max(stats["requests"], 1)
        drain(client, time.monotonic())
        after = procs.ticks()
        paid, span = paid_in_postgres(stack.pg_url(), [o for o, _ in pending])
        pays.append(PayRun(len(pending), stats, paid, span,
                           {k: (after[k] - ticks[k]) * cpu.TICK_S for k in KINDS}, script_us))
        p = pays[-1]
        print(f"  round {round_no}: one-step {orders[-1].wrk['rps']:,.0f}/s, preview "
              f"{previews[-1]['rps']:,.0f}/s, deferred {deferred[-1].wrk['rps']:,.0f}/s, "
              f"pay {p.rate:,.0f}/s ({p.paid:,} of {p.listed:,} pending paid in "
              f"{p.span_s:.2f} s; wrk {p.wrk['rps']:,.0f}/s)", flush=True)
    payments_report(orders, previews, deferred, pays, args)
    client.close()


def payments_report(orders: list[OrdersRound], previews: list[dict],
                    deferred: list[OrdersRound], pays: list[PayRun],
                    args: argparse.Namespace) -> None:
    """Medians of each kind of call, their ratio to one-step orders, errors, CPU."""
    print(f"\nissue 28's calls through the whole stack, {args.rounds} rounds x "
          f"{args.seconds}s, {args.connections} connections; code from {args.repo}")
    one = statistics.median(o.wrk["rps"] for o in orders)
    rows: list[tuple[str, list[float], list[dict]]] = [  # name, rates, wrk's answers
        ("one-step orders/s", [o.wrk["rps"] for o in orders], [o.wrk for o in orders]),
        ("preview/s", [w["rps"] for w in previews], previews),
        ("DEFERRED orders/s", [o.wrk["rps"] for o in deferred], [o.wrk for o in deferred]),
        ("pay/s (Postgres' paid_at span)", [p.rate for p in pays], [p.wrk for p in pays]),
    ]
    print(f"{'':<32}{'median':>8}  {'x one-step':>10}   {'rounds':<30}{'non-2xx':>8}"
          f"{'p99 ms':>8}")
    for name, rates, seen in rows:
        med = statistics.median(rates)
        errors = sum(w["non2xx"] + w["socket_errors"] for w in seen)
        p99 = statistics.median(w["p99_us"] for w in seen) / 1000
        print(f"{name:<32}{med:>8,.0f}  {med / one:>9.2f}x   "
              f"{'  '.join(f'{r:,.0f}' for r in rates):<30}{errors:>8}{p99:>8.1f}")
    print(f"pays: {', '.join(f'{p.paid:,} of {p.listed:,}' for p in pays)} pending orders "
          f"paid (each once)")
    kinds = ("api", "redis", "writer", "forwarder", "postgres")
    print("CPU ms per order over load and drain (median):" + "".join(f"{k:>10}" for k in kinds))
    for name, runs in (("one-step", orders), ("DEFERRED", deferred)):
        print(f"{name:<47}" + "".join(
            f"{statistics.median(o.per_thousand(k) for o in runs):>10.3f}" for k in kinds))
    print(f"{'pay':<47}" + "".join(
        f"{statistics.median(p.cpu_s.get(k, 0.0) / max(p.paid, 1) * 1000 for p in pays):>10.3f}"
        for k in kinds))
    print(f"Redis' EVALSHA µs per request (median): one-step "
          f"{statistics.median(o.script_us for o in orders):.1f}, DEFERRED "
          f"{statistics.median(o.script_us for o in deferred):.1f}, pay "
          f"{statistics.median(p.script_us for p in pays):.1f}")


def main() -> None:
    """Start the stack, bench it, stop it."""
    args = parse_args()
    need("wrk", "wrk")
    need("pgbench", "postgresql-client")
    if args.before:
        compare(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="rushorder-bench-stack-"))
    stack = Stack(tmp, args.api_workers, args.workers, args.repo.resolve())
    try:
        mode = sale_bench if args.sale else payments_bench if args.payments else bench
        mode(stack.start(), args)
    finally:
        stack.stop()
        if args.keep_log:
            print(f"log: {stack.log}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
