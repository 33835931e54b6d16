"""Issue 28's coupon counts under real concurrency: 4 OS processes, each with its own
Engine and loop, all firing at once (races.py). Orders racing for one issued coupon, and
cancels giving coupons back while orders take them again, leave the admin list's
used_count exactly the number of issued coupons orders use."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from engine import Engine
from engine.coupons import CouponRules
from tests.engine.races import race_mixed

USERS = 40
PRICE = 100


async def test_used_count_stays_exact_under_racing_orders_and_cancels(
    engine: Engine, engine_redis_url: str, new_user
) -> None:
    now = datetime.now(UTC)
    coupon = await engine.create_coupon(
        "race", "PERCENT", 10, USERS, now - timedelta(hours=1), now + timedelta(hours=1),
        rules=CouponRules(min_order_amount=5 * PRICE, max_discount_amount=30))
    product = await engine.create_product("raced", PRICE, stock=10_000)
    users = [await new_user() for _ in range(USERS)]
    await asyncio.gather(*(engine.charge(u, 100_000) for u in users))
    issued = {u: (await engine.issue_coupon(u, coupon.id)).id for u in users}
    placed = {u: await engine.place_order(u, [(product.id, 5)], issued[u])
              for u in users[:USERS // 2]}  # half hold an order using their coupon
    rng = random.Random(28)
    calls: list[tuple] = []
    for u in users:
        if u in placed:  # two cancels, and two orders that may take the coupon back
            calls += [("cancel", u, placed[u].id, rng.randrange(0, 200)) for _ in range(2)]
        calls += [("coupon_order", u, product.id, 5, issued[u], rng.randrange(0, 200))
                  for _ in range(2)]
        calls.append(("coupon_order", u, product.id, 4, issued[u], rng.randrange(0, 200)))

    outcomes = await asyncio.to_thread(race_mixed, engine_redis_url, calls)

    cancels = Counter(call[1] for call, out in zip(calls, outcomes, strict=True)
                      if call[0] == "cancel" and out[0] == "OK")
    assert cancels == Counter(dict.fromkeys(placed, 1))  # each held order cancelled once
    taken = Counter(call[1] for call, out in zip(calls, outcomes, strict=True)
                    if call[0] == "coupon_order" and out[0] == "OK")
    below = [out for call, out in zip(calls, outcomes, strict=True)
             if call[0] == "coupon_order" and call[3] == 4]
    assert all(code == "COUPON_NOT_USABLE" for code, _ in below), below
    assert all(out == ("OK", 30) for call, out in zip(calls, outcomes, strict=True)
               if call[0] == "coupon_order" and out[0] == "OK")  # 10% of 500 capped at 30
    assert all(n == 1 for u, n in taken.items() if u not in placed)  # one order per coupon
    statuses = {c.id: c.status for u in users for c in (await engine.user_coupons(u)).items}
    used = sum(1 for icid in issued.values() if statuses[icid] == "USED")
    (row,) = (await engine.coupon_counts(1, str(coupon.id - 1))).items
    assert (row.issued_count, row.used_count) == (USERS, used)
    assert used == USERS - sum(1 for u in placed if taken[u] == 0)
