"""What issue 27's catalog costs inside Redis, where its order rules run.

``load/bench_engine.py --sale`` and ``load/bench_stack.py --sale`` measure orders/s with
options and a limit against plain products, but on a box shared with other work their
rounds swing by far more than a few percent. This measures the order script's own work
alone, as ``limiter_cost.py`` does the limiter's: the very place_orders call the engine
sends for a full batch (BATCH one-line orders of BATCH users of one group), of

  * plain: a plain product (the baseline);
  * limited: a plain product with max_per_user 1,000 (never reached: every order reads the
    user's bought units and passes);
  * one option: every line names the same option of a product with 10 options;
  * 10 options: the lines spread over the product's 10 options (a drop's load: a batch
    then reads and writes back up to 10 options' allotments instead of one product's);

in alternating rounds on a private Redis (``make up``'s server: AOF, appendfsync always).
Reported: the µs Redis spent per order (INFO commandstats, EVALSHA), medians and minima
of the rounds, each against plain's.

    python load/sale_cost.py [--rounds 20] [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from limiter_cost import BATCH  # noqa: E402
from private import private_redis  # noqa: E402

from engine import Engine, state  # noqa: E402
from engine.models import NewOption, Product  # noqa: E402

PRICE, STOCK, SIZES, LIMIT = 10, 10**9, 10, 1_000
# Users take turns by sets of BATCH, so that none reaches the limit: a user orders at most
# LIMIT units of the limited product (--rounds x --calls / SETS a user).
SETS = 16
Line = tuple[int, int] | tuple[int, int, int]


async def seed(url: str) -> tuple[dict[str, Product], list[int]]:
    """The products (endless stock) and SETS x BATCH users of group 0 with the balance
    cap."""
    engine = Engine(url)
    made = {
        "plain": await engine.create_product("plain", PRICE, STOCK),
        "limited": await engine.create_product("limited", PRICE, STOCK, max_per_user=LIMIT),
        "drop": await engine.create_product("drop", PRICE, options=[
            NewOption(name=str(260 + 10 * i), stock=STOCK // SIZES) for i in range(SIZES)]),
    }
    group, user = engine.layout.all[0], 0
    users: list[int] = []
    while len(users) < SETS * BATCH:
        user += 1
        if engine.layout.of(user) is group:
            users.append(user)
    for _ in range(10):
        await asyncio.gather(*(engine.charge(u, 1_000_000) for u in users))
    await engine.load()
    await engine.close()
    return made, users


def command(url: str, users: list[int], line: Callable[[int], Line]) -> list[Any]:
    """The EVALSHA the engine sends for one full batch, order i of one line ``line(i)``."""
    engine = Engine(url)
    group = engine.layout.all[0]
    orders = [engine._order(group, u, [line(i)], None, None) for i, u in enumerate(users)]
    keys_, args = engine.batches.layout(group, orders)
    return list(engine.scripts["place_orders"].evalsha(keys_, args))


def commands(url: str, made: dict[str, Product],
             users: list[int]) -> dict[str, list[list[Any]]]:
    """Each kind of batch, by name: one command per set of users."""
    drop = made["drop"]
    sizes = [o.id for o in drop.options]
    lines: dict[str, Callable[[int], Line]] = {
        "plain": lambda i: (made["plain"].id, 1),
        "limited": lambda i: (made["limited"].id, 1),
        "one option": lambda i: (drop.id, 1, sizes[0]),
        "10 options": lambda i: (drop.id, 1, sizes[i % SIZES])}
    return {name: [command(url, users[k * BATCH:(k + 1) * BATCH], line) for k in range(SETS)]
            for name, line in lines.items()}


def round_us(client: redis.Redis, calls: list[list[Any]], count: int) -> float:
    """µs Redis spent in the script per order over ``count`` calls taking turns (every
    order placed)."""
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.execute_command(*calls[i % len(calls)])
    for reply in pipe.execute():
        assert all(code == b"OK" for code in reply[0::3]), reply[:3]
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return float(stats["usec"]) / (stats["calls"] * BATCH)


def main() -> None:
    """Rounds of every kind, their order turned each round; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    if args.rounds * args.calls > SETS * LIMIT:
        parser.error(f"--rounds x --calls must stay within {SETS * LIMIT:,} (the limit)")
    with private_redis("rushorder-sale-cost-") as url:
        client = redis.Redis.from_url(url)
        state.mark(client, "sale_cost")
        made, users = asyncio.run(seed(url))
        calls = commands(url, made, users)
        results: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for i in range(args.rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                results[name].append(round_us(client, calls[name], args.calls))
        print(f"{args.rounds} rounds x {args.calls} calls of {BATCH} one-line orders each")
        base, low = statistics.median(results["plain"]), min(results["plain"])
        for name, runs in results.items():
            med = statistics.median(runs)
            print(f"{name:<11} median {med:6.2f} us/order ({100 * (med - base) / base:+5.1f}%), "
                  f"fastest {min(runs):6.2f} ({100 * (min(runs) - low) / low:+5.1f}%)")


if __name__ == "__main__":
    main()
