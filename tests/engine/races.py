"""Race harness: many concurrent engine calls from several OS processes at once.

Each process (spawned, so nothing is inherited but arguments) opens its own Engine on its
own event loop, waits at a barrier so all start together, fires its whole batch
concurrently (each call after a random delay of up to 50 ms, so that the processes'
commands interleave inside Redis) and reports one ``(code, paid)`` outcome per call.

Timed operations (``race_mixed``: each call names its own operation) wait a given delay
after the start and report when they started and what Redis answered: ``(code, started,
at)``, ``started`` on the host's monotonic clock (one clock for every process of the
host, in ns) and ``at`` an order's created_at (or a patched sale start) in epoch ms, so a
test can order the calls of several processes against each other and against Redis' clock.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from engine import Engine, Policy
from engine.errors import EngineError

Outcome = tuple[str, int]  # ("OK" or the error code, amount paid)
Timed = tuple[str, int, int]  # (code, started: monotonic ns, Redis' answer: epoch ms)
JITTER_S = 0.05
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def _order(engine: Engine, user: int, product_id: int, quantity: int,
                 option_id: int | None = None) -> Outcome:
    order = await engine.place_order(user, [(product_id, quantity, option_id)])
    return "OK", order.paid_amount


def _ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


async def _timed(delay_ms: int, call: Callable[[], Awaitable[int]]) -> Timed:
    """``call`` ``delay_ms`` after the start: when it started, and its answer's time."""
    await asyncio.sleep(delay_ms / 1000)
    started = time.monotonic_ns()
    try:
        return "OK", started, await call()
    except EngineError as refused:
        return refused.code, started, 0


async def _timed_order(engine: Engine, user: int, product_id: int, option_id: int | None,
                       delay_ms: int) -> Timed:
    """One unit ordered ``delay_ms`` after the start; ``at`` is the order's created_at."""
    async def order() -> int:
        made = await engine.place_order(user, [(product_id, 1, option_id)])
        return _ms(made.created_at)
    return await _timed(delay_ms, order)


async def _suspend(engine: Engine, product_id: int, delay_ms: int) -> Timed:
    """The product's sale suspended ``delay_ms`` after the start; ``started`` is then when
    the suspension was answered (the time that matters), ``at`` 0."""
    code, _, _ = await _timed(delay_ms, lambda: _suspended(engine, product_id))
    return code, time.monotonic_ns(), 0


async def _suspended(engine: Engine, product_id: int) -> int:
    await engine.update_product(product_id, status="SUSPENDED")
    return 0


async def _open_in(engine: Engine, product_id: int, in_ms: int) -> Timed:
    """The product's sale set to open ``in_ms`` from now; ``at`` is the opening (ms)."""
    async def patch() -> int:
        made = await engine.update_product(
            product_id, sale_starts_at=datetime.now(UTC) + timedelta(milliseconds=in_ms))
        assert made.sale_starts_at is not None
        return _ms(made.sale_starts_at)
    return await _timed(0, patch)


async def _issue(engine: Engine, user: int, coupon_id: int) -> Outcome:
    await engine.issue_coupon(user, coupon_id)
    return "OK", 0


async def _charge(engine: Engine, user: int, amount: int) -> Outcome:
    await engine.charge(user, amount)
    return "OK", 0


async def _coupon_order(engine: Engine, user: int, product_id: int, quantity: int,
                        issued_coupon_id: int, delay_ms: int = 0) -> Outcome:
    """An order using an issued coupon ``delay_ms`` after the start (issue 28's counts)."""
    await asyncio.sleep(delay_ms / 1000)
    order = await engine.place_order(user, [(product_id, quantity)], issued_coupon_id)
    return "OK", order.discount_amount


# -- deferred payment (issue 28; tests/engine/test_payment_races.py) ---------------------


async def _defer(engine: Engine, user: int, product_id: int, quantity: int) -> Outcome:
    """A deferred order; ``paid`` carries its id."""
    order = await engine.place_order(user, [(product_id, quantity)], deferred=True)
    return "OK", int(order.id)


async def _pay(engine: Engine, user: int, order_id: str, delay_ms: int = 0) -> Outcome:
    await asyncio.sleep(delay_ms / 1000)
    return "OK", (await engine.pay_order(user, order_id)).paid_amount


async def _cancel(engine: Engine, user: int, order_id: str, delay_ms: int = 0) -> Outcome:
    await asyncio.sleep(delay_ms / 1000)
    await engine.cancel_order(user, order_id)
    return "OK", 0


async def _expire(engine: Engine, delay_ms: int = 0) -> Outcome:
    """The sweep's expiry step ``delay_ms`` after the start; ``paid`` is how many expired."""
    await asyncio.sleep(delay_ms / 1000)
    return "OK", await engine.expire_due()


async def _due_in(engine: Engine, orders: Sequence[tuple[int, str]], in_ms: int) -> Outcome:
    """Make the ``(user, order id)`` pending orders due ``in_ms`` after now (Redis' clock),
    in their hashes and their groups' pending zsets, as if placed that long before."""
    now_s, now_us = await engine.conn.execute("TIME")
    due = int(now_s) * 1000 + int(now_us) // 1000 + in_ms
    for user, order_id in orders:
        g = engine.layout.of(user)
        await engine.conn.execute("HSET", g.order(order_id), "due", due)
        await engine.conn.execute("ZADD", g.pending, due, order_id)
    return "OK", due


OPERATIONS: dict[str, Callable[..., Awaitable[Any]]] = {
    "order": _order, "issue": _issue, "charge": _charge, "timed_order": _timed_order,
    "suspend": _suspend, "open_in": _open_in, "defer": _defer, "pay": _pay,
    "cancel": _cancel, "expire": _expire, "due_in": _due_in, "coupon_order": _coupon_order}


async def _attempt(call: Awaitable[Any], jitter_s: float) -> Any:
    # Without it each process sends its whole batch in one write, which Redis runs back to
    # back: all winners would come from one process.
    await asyncio.sleep(random.uniform(0, jitter_s))
    try:
        return await call
    except EngineError as refused:
        return refused.code, 0


async def _run_batch(url: str, batch: Sequence[tuple[Any, ...]], barrier: Any,
                     policy: dict[str, Any]) -> list:
    engine = Engine(url, Policy(**policy))
    await engine.load()  # connected and scripts loaded before the start signal
    barrier.wait(timeout=60)
    outcomes = await asyncio.gather(
        *(_attempt(OPERATIONS[op](engine, *args), JITTER_S) for op, *args in batch))
    await engine.close()
    return outcomes


def worker(url: str, batch: Sequence[tuple[Any, ...]], barrier: Any,
           results: Any, index: int, policy: dict[str, Any]) -> None:
    """Process entry point: run the batch (calls as ``(op, *args)``) and put ``(index,
    outcomes)`` on ``results``."""
    results.put((index, asyncio.run(_run_batch(url, batch, barrier, policy))))


def race(url: str, op: str, calls: Sequence[tuple[Any, ...]], processes: int = 4,
         policy: dict[str, Any] | None = None) -> list:
    """Spread ``calls`` round-robin over ``processes`` processes, each engine with
    ``policy``'s fields (default: the engine's own); outcomes in ``calls`` order."""
    return race_mixed(url, [(op, *args) for args in calls], processes, policy)


def race_mixed(url: str, calls: Sequence[tuple[Any, ...]], processes: int = 4,
               policy: dict[str, Any] | None = None) -> list:
    """:func:`race` of calls that each name their operation: ``(op, *args)``."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    batches = [list(calls[i::processes]) for i in range(processes)]
    procs = [ctx.Process(target=worker, args=(url, batch, barrier, results, i, policy or {}))
             for i, batch in enumerate(batches)]
    for proc in procs:
        proc.start()
    try:
        by_index = dict(results.get(timeout=120) for _ in procs)
    finally:
        for proc in procs:
            proc.join(30)
    outcomes: list = [None] * len(calls)
    for i in range(processes):
        outcomes[i::processes] = by_index[i]
    return outcomes
