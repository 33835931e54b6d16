"""Exponential backoff with jitter, for retrying a server that went away."""

from __future__ import annotations

import asyncio
import random
import threading
import time


class Backoff:
    """Delays of ``base * 2**n`` seconds, capped, with up to 20% jitter; reset on success."""

    def __init__(self, base_s: float = 0.2, cap_s: float = 5.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def delay(self, failures: int) -> float:
        """How long to wait after ``failures`` failures in a row (1 or more)."""
        return min(self.cap_s, self.base_s * 2 ** (failures - 1)) * random.uniform(0.8, 1.0)

    def wait(self, stop: threading.Event) -> None:
        """Count one more failure and sleep its delay, or less if asked to stop."""
        self.failures += 1
        stop.wait(self.delay(self.failures))

    def reset(self) -> None:
        """The server answered again."""
        self.failures = 0

    async def pause(self, stop: threading.Event) -> None:
        """:meth:`wait` inside an event loop: other tasks run meanwhile."""
        self.failures += 1
        await sleep_unless_stopped(self.delay(self.failures), stop)


async def sleep_unless_stopped(seconds: float, stop: threading.Event,
                               poll_s: float = 0.05) -> bool:
    """Sleep ``seconds`` in an event loop, waking every ``poll_s`` to look at ``stop`` (set
    from a signal handler or another thread); False if it was set before the end."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.is_set():
            return False
        await asyncio.sleep(min(left, poll_s))
    return not stop.is_set()
