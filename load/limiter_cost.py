"""What the per-user write rate costs inside Redis, where all of its work is.

``load/bench_api.py --limiter`` measures orders/s off and on through the whole stack, but
on a box shared with other work its rounds swing by far more than the limiter's few
percent. This measures the limiter's own work alone: the very place_orders call the API
sends for a full batch (BATCH orders of BATCH users of one group, the keys and arguments of
Engine.place_order), with the limit off (0) and on (a rate no order reaches, so each order
does the bucket's GET and SET and passes), in alternating rounds on a private Redis
(``make up``'s server: AOF, appendfsync always). Reported: the µs Redis spent per order
(INFO commandstats, EVALSHA), medians and minima of the rounds, and the difference.

    python load/limiter_cost.py [--rounds 20] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from private import private_redis  # noqa: E402

from engine import Engine, Policy, keys, state  # noqa: E402
from rushorder.settings import Settings  # noqa: E402

BATCH = 16  # the engine's most orders a call (engine/batch.py)
PRICE = 10


async def seed(url: str) -> tuple[int, list[int]]:
    """A product with endless stock and BATCH users of group 0, each with the balance cap."""
    engine = Engine(url)
    product = await engine.create_product("bench", PRICE, 10**9)
    group, user = engine.layout.all[0], 0
    users: list[int] = []
    while len(users) < BATCH:
        user += 1
        if engine.layout.of(user) is group:
            users.append(user)
    for _ in range(10):
        await asyncio.gather(*(engine.charge(u, 1_000_000) for u in users))
    await engine.close()
    return product.id, users


def command(url: str, policy: Policy, product: int, users: list[int]) -> list[Any]:
    """The EVALSHA the engine sends for one full batch of one-line orders, under ``policy``."""
    engine = Engine(url, policy)
    group = engine.layout.all[0]
    orders = [engine._order(group, u, [(product, 1)], None, None) for u in users]
    keys_, args = engine.batches.layout(group, orders)
    return list(engine.scripts["place_orders"].evalsha(keys_, args))


def round_us(client: redis.Redis, call: list[Any], calls: int) -> float:
    """µs Redis spent in the script per order over ``calls`` calls (every order placed)."""
    client.config_resetstat()
    pipe = client.pipeline(transaction=False)
    for _ in range(calls):
        pipe.execute_command(*call)
    for reply in pipe.execute():
        assert all(code == b"OK" for code in reply[0::3]), reply[:3]
    stats = client.info("commandstats")["cmdstat_evalsha"]
    return float(stats["usec"]) / (stats["calls"] * BATCH)


def main() -> None:
    """Alternate rounds off and on; print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    with private_redis("rushorder-limiter-") as url:
        client = redis.Redis.from_url(url)
        state.mark(client, "limiter_cost")
        product, users = asyncio.run(seed(url))
        burst = Settings().rate_limit_burst
        calls = {"off": command(url, Policy(rate_limit_per_s=0), product, users),
                 "on": command(url, Policy(rate_limit_per_s=1e9, rate_limit_burst=burst),
                               product, users)}
        client.script_load(Engine(url).scripts["place_orders"].source)
        results: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(args.rounds):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                results[name].append(round_us(client, calls[name], args.calls))
        buckets = client.exists(*(keys.layout(keys.DEFAULT_GROUPS).of(u).rate(u) for u in users))
        off, on = statistics.median(results["off"]), statistics.median(results["on"])
        print(f"{args.rounds} rounds x {args.calls} calls of {BATCH} orders each way; "
              f"{buckets} of {BATCH} users' buckets in use")
        print("off us/order: " + " ".join(f"{v:.2f}" for v in results["off"]))
        print("on  us/order: " + " ".join(f"{v:.2f}" for v in results["on"]))
        print(f"median Redis time per order: off {off:.2f} us, on {on:.2f} us; the limiter "
              f"adds {on - off:.2f} us ({100 * (on - off) / off:.1f}% of the script's time)")
        # Other work on the box only ever adds time: the fastest rounds are the cleanest.
        low_off, low_on = min(results["off"]), min(results["on"])
        print(f"fastest round: off {low_off:.2f} us, on {low_on:.2f} us; the limiter adds "
              f"{low_on - low_off:.2f} us ({100 * (low_on - low_off) / low_off:.1f}%)")


if __name__ == "__main__":
    main()
