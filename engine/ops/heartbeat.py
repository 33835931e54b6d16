"""Worker liveness: each outbox worker process leaves a heartbeat that the console reads.

A heartbeat is one field of the hash ``{ro}:ops:workers`` (the process, ``host:pid``, to a
JSON :class:`Heartbeat`), written every few seconds by ``beat.lua`` with Redis' clock, so
that beats of processes on different hosts compare. A process is alive while its last beat
is younger than a few of its intervals (:meth:`Heartbeat.alive`); the heartbeat of one
quiet for :data:`FORGET_AFTER_S` is dropped by the next beat of any worker. Like every
script, ``beat.lua`` writes nothing into a Redis without live state: workers that wait
for a rebuild leave no beat (the console says why anyway).

Synchronous redis-py for the workers; the engine reads the hash (``engine/ops/console.py``).
"""

from __future__ import annotations

import functools

import msgspec
import redis

from engine import keys
from engine.scripts import load_scripts, script_keys

FORGET_AFTER_S = 600.0
MISSED_BEATS = 3  # a process is dead once this many beats in a row are missing

_DECODER = msgspec.json.Decoder()


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """One worker process's last word: who, since when, what it has done so far."""

    process: str  # host:pid, the field in {ro}:ops:workers
    group: str  # the outbox consumer group it works for (postgres, platform)
    host: str
    pid: int
    started_ms: int  # epoch ms, the process's clock
    every_s: float  # how often it beats
    state: str = "working"  # or what it waits for
    metrics_port: int | None = None  # where its supervisor serves /metrics, if anywhere
    counters: dict[str, float] = {}  # batches, entries, forwarded, retries, dead_lettered, ...
    beat_ms: int = 0  # Redis' clock at the last beat (beat.lua sets it)

    def age_s(self, now_ms: int) -> float:
        """Seconds since the last beat, on Redis' clock."""
        return max(0, now_ms - self.beat_ms) / 1000

    def alive(self, now_ms: int) -> bool:
        """The process beat recently enough to be taken for running."""
        return self.age_s(now_ms) < MISSED_BEATS * self.every_s


@functools.cache
def _beat_source() -> str:
    return load_scripts()["beat"].source


def beat(client: redis.Redis, heartbeat: Heartbeat) -> bool:
    """Write this process's heartbeat; False (nothing written) in a Redis without live state."""
    script = client.register_script(_beat_source())
    code, _ = script(keys=script_keys("beat", live=keys.LIVE, heartbeats=keys.OPS_WORKERS),
                     args=[heartbeat.process, msgspec.json.encode(heartbeat),
                           int(FORGET_AFTER_S * 1000)])
    return bool(code == b"OK")


def decode(raw: bytes) -> Heartbeat | None:
    """A stored heartbeat (None if it is not one: a newer or broken writer's)."""
    try:
        return msgspec.convert(_DECODER.decode(raw), Heartbeat)
    except msgspec.MsgspecError:
        return None
