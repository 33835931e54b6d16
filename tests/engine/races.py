"""Race harness: many concurrent engine calls from several OS processes at once.

Each process (spawned, so nothing is inherited but arguments) opens its own Engine on its
own event loop, waits at a barrier so all start together, fires its whole batch
concurrently (each call after a random delay of up to 50 ms, so that the processes'
commands interleave inside Redis) and reports one ``(code, paid)`` outcome per call.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine import Engine, Policy
from engine.errors import EngineError

Outcome = tuple[str, int]  # ("OK" or the error code, amount paid)
JITTER_S = 0.05


async def _order(engine: Engine, user: int, product_id: int, quantity: int) -> Outcome:
    order = await engine.place_order(user, [(product_id, quantity)])
    return "OK", order.paid_amount


async def _issue(engine: Engine, user: int, coupon_id: int) -> Outcome:
    await engine.issue_coupon(user, coupon_id)
    return "OK", 0


async def _charge(engine: Engine, user: int, amount: int) -> Outcome:
    await engine.charge(user, amount)
    return "OK", 0


OPERATIONS: dict[str, Callable[..., Awaitable[Outcome]]] = {
    "order": _order, "issue": _issue, "charge": _charge}


async def _attempt(call: Awaitable[Outcome], jitter_s: float) -> Outcome:
    # Without it each process sends its whole batch in one write, which Redis runs back to
    # back: all winners would come from one process.
    await asyncio.sleep(random.uniform(0, jitter_s))
    try:
        return await call
    except EngineError as refused:
        return refused.code, 0


async def _run_batch(url: str, op: str, batch: Sequence[tuple[Any, ...]], barrier: Any,
                     policy: dict[str, Any]) -> list:
    engine = Engine(url, Policy(**policy))
    await engine.load()  # connected and scripts loaded before the start signal
    barrier.wait(timeout=60)
    outcomes = await asyncio.gather(
        *(_attempt(OPERATIONS[op](engine, *args), JITTER_S) for args in batch))
    await engine.close()
    return outcomes


def worker(url: str, op: str, batch: Sequence[tuple[Any, ...]], barrier: Any,
           results: Any, index: int, policy: dict[str, Any]) -> None:
    """Process entry point: run the batch and put ``(index, outcomes)`` on ``results``."""
    results.put((index, asyncio.run(_run_batch(url, op, batch, barrier, policy))))


def race(url: str, op: str, calls: Sequence[tuple[Any, ...]], processes: int = 4,
         policy: dict[str, Any] | None = None) -> list:
    """Spread ``calls`` round-robin over ``processes`` processes, each engine with
    ``policy``'s fields (default: the engine's own); outcomes in ``calls`` order."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    batches = [list(calls[i::processes]) for i in range(processes)]
    procs = [ctx.Process(target=worker, args=(url, op, batch, barrier, results, i, policy or {}))
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
