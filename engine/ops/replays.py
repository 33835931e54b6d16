"""Replays of the dead letters asked from the console and done by a platform forwarder.

The API may not post to the data platform itself (it never waits on it, and the posting
is the forwarder's: ``workers/forwarder.py``), so the console asks and a worker does it:

1. the engine writes the request's state ``{"state": "asked"}`` under
   ``{ro}:ops:replay:<id>`` and queues the id on ``{ro}:ops:replay:asked``
   (``ask_replay.lua``, :meth:`engine.console.Console.ask_replay`);
2. one platform forwarder process pops it (:func:`take`: BLPOP hands each id to one),
   says ``running`` with its progress, replays exactly as ``rushorder replay`` does, and
   says ``done`` with what was delivered and what is left, or ``failed`` and why
   (:func:`answer`, ``answer_replay.lua``);
3. the API polls the state until it is final or it stops waiting.

A replay only posts dead letters to the platform and removes those delivered: it never
touches the outbox, so the Postgres writer never sees an event twice. At least once with
the same ``event_id``, as any delivery: the receiver dedupes.
"""

from __future__ import annotations

import functools
from typing import Literal

import msgspec
import redis

from engine import keys
from engine.scripts import load_scripts, script_keys

KEEP_S = 600.0  # how long a request's state stays readable after its last change

ReplayPhase = Literal["asked", "running", "done", "failed"]


class ReplayState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How a replay request goes."""

    state: ReplayPhase
    done: int = 0  # dead letters handled so far
    total: int | None = None  # dead letters there were when it started
    delivered: int = 0  # of those, taken by the platform (and gone from the dead letters)
    left: int | None = None  # dead letters still there at the end
    worker: str | None = None  # the process that took it
    error: str | None = None  # why it failed

    @property
    def final(self) -> bool:
        """Nothing will change any more."""
        return self.state in ("done", "failed")


ASKED = ReplayState(state="asked")
_DECODER = msgspec.json.Decoder(ReplayState)


def decode(raw: bytes) -> ReplayState:
    """A stored request state."""
    return _DECODER.decode(raw)


def take(client: redis.Redis, timeout_s: float) -> str | None:
    """The id of the oldest replay request, now ours alone; None after ``timeout_s``."""
    popped = client.blpop([keys.OPS_REPLAY_ASKED], timeout=timeout_s)
    if popped is None:
        return None
    raw = popped[1]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@functools.cache
def _answer_source() -> str:
    return load_scripts()["answer_replay"].source


def answer(client: redis.Redis, request_id: str, state: ReplayState) -> bool:
    """Say how the request goes; False if it is gone (expired, or no live state)."""
    script = client.register_script(_answer_source())
    code, written = script(keys=script_keys("answer_replay", live=keys.LIVE,
                                             replay=keys.ops_replay(request_id)),
                           args=[msgspec.json.encode(state), int(KEEP_S * 1000)])
    return bool(code == b"OK" and written == b"1")
