"""What bounded idempotency costs in Redis: bytes per record and per user at the bound.

A private Redis (as ``make up`` runs it); one user makes ``--max`` keyed orders (the
default RUSHORDER_IDEMPOTENCY_MAX_PER_USER) of one line each, then one more, which the
bound refuses (429 TOO_MANY_REQUESTS). Reported with ``MEMORY USAGE`` (SAMPLES 0: every
member counted) of the keys themselves: an order's record (its answer is the whole
order), a charge's (a short answer), the user's index (zset, key -> expiry) at the
bound, its write-rate bucket, and the sum for a user at the bound; and ``used_memory``
before and after, for the overheads MEMORY USAGE does not see (the TTLs' expires dict).

    python load/idempotency_bytes.py [--max 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from private import private_redis  # noqa: E402

from engine import Engine, Idempotency, Policy, keys, state  # noqa: E402
from engine.errors import TooManyRequests  # noqa: E402
from rushorder.settings import Settings  # noqa: E402

USER = 1


def usage(client: redis.Redis, key: str) -> int:
    """MEMORY USAGE of one key, every element sampled."""
    return int(client.memory_usage(key, samples=0) or 0)


async def fill(url: str, most: int) -> tuple[str, str]:
    """The user at the bound of keyed orders (a charge's record and orders'); the record
    keys of one order and of the charge."""
    engine = Engine(url, Policy(idempotency_max_per_user=most + 1))
    product = await engine.create_product("a product of a typical name", 1_230, 10**9)
    await engine.charge(USER, 1_000_000, Idempotency("charge-0", "POST /balance/charge"))
    await engine.charge(USER, 1_000_000)
    for n in range(1, most):  # UUIDs, as clients send them: 36 characters
        key = f"{n:08d}-0000-4000-8000-000000000000"
        await engine.place_order(USER, [(product.id, 1)], idem=Idempotency(key, f"o{n}"))
    await engine.close()
    group = engine.layout.of(USER)
    return (group.idempotency(USER, "00000001-0000-4000-8000-000000000000"),
            group.idempotency(USER, "charge-0"))


async def over_the_bound(url: str, most: int) -> str:
    """A new key past the bound: what the engine with the bound (and the default write
    rate, whose bucket the call makes) answers."""
    settings = Settings()
    engine = Engine(url, Policy(idempotency_max_per_user=most,
                                rate_limit_per_s=settings.rate_limit_per_s,
                                rate_limit_burst=settings.rate_limit_burst))
    try:
        await engine.charge(USER, 1_000, Idempotency("one-too-many", "POST /balance/charge"))
    except TooManyRequests as refused:
        return f"TOO_MANY_REQUESTS, retry after {refused.retry_after_s} s"
    finally:
        await engine.close()
    return "accepted (the bound did not hold!)"


def main() -> None:
    """Start Redis, fill one user to the bound, print the bytes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=Settings().idempotency_max_per_user)
    args = parser.parse_args()
    with private_redis("rushorder-idem-") as url:
        client = redis.Redis.from_url(url)
        state.mark(client, "idempotency_bytes")
        before = int(client.info("memory")["used_memory"])
        order_record, charge_record = asyncio.run(fill(url, args.max))
        refused = asyncio.run(over_the_bound(url, args.max))
        group = keys.layout(keys.DEFAULT_GROUPS).of(USER)
        index, rate = group.idempotency_index(USER), group.rate(USER)
        count = client.zcard(index)
        members: list[bytes] = client.zrange(index, 0, -1)  # type: ignore[assignment]
        records = sum(usage(client, member.decode()) for member in members)
        print(f"{count} live records of user {USER} (bound {args.max}); the next new key: "
              f"{refused}")
        print(f"an order's record: {usage(client, order_record)} B "
              f"({client.strlen(order_record)} B of value); a charge's: "
              f"{usage(client, charge_record)} B")
        print(f"the user's index at the bound: {usage(client, index)} B "
              f"({usage(client, index) / count:.0f} B a record); rate bucket: "
              f"{usage(client, rate)} B")
        total = records + usage(client, index) + usage(client, rate)
        print(f"a user at the bound: {total} B ({total / count:.0f} B a record, index "
              f"included); MEMORY USAGE of records {records} B")
        grown = int(client.info("memory")["used_memory"]) - before
        print(f"used_memory grew {grown} B for the whole run (orders, history, outbox and "
              f"the records together)")


if __name__ == "__main__":
    main()
