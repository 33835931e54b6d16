"""The live-state marker: does this Redis hold rushorder's live state?

Redis holds the live state and Postgres the durable copy. A Redis that lost its data
(FLUSHALL, a lost disk, a failover to an empty replica) would otherwise answer like a
new, empty shop: balances of 0, no catalog, ids from 1 again, and writes that Postgres
can never put in order with what it already holds. So the state carries a marker of its
own, ``{ro}:live`` with a copy in each user group's slot (``<g>:live``), written only
where live state is made: by ``rushorder rebuild`` once Postgres' copy is loaded (on an
empty database, that is the very first start).

* Every script checks it first (KEYS[1], ``state_missing`` in ``engine/lua/_lib.lua``)
  and answers ``STATE_MISSING`` without it: the API answers 503, ``/health/ready`` fails.
* The workers never recreate the outbox without it (``engine/lua/open_outbox.lua``).
* ``make up`` and ``rushorder rebuild`` decide on it, not on counting keys, which RQ's own
  keys or a recreated stream would fool.

Synchronous redis-py: the operator tools and the workers use it; the engine checks the
marker inside its scripts.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import redis

from engine import keys

_DECODER = msgspec.json.Decoder()


class Marker(msgspec.Struct, frozen=True, kw_only=True):
    """What made this Redis' live state, and when (Redis' clock, epoch ms), in how many user
    groups (engine/keys.py; None: a marker from before the groups, whose keys no engine of
    today reads)."""

    origin: str
    at_ms: int
    groups: int | None = None

    def describe(self) -> str:
        """One line for logs and refusals."""
        at = datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="seconds")
        laid = "no user groups" if self.groups is None else f"{self.groups} user groups"
        return f"live state made by {self.origin} at {at}, in {laid}"

    def mismatch(self, groups: int) -> str | None:
        """Why state of this marker must not be served in ``groups`` groups, if it must not:
        each user's keys would be looked for in another group than the one holding them."""
        if self.groups == groups:
            return None
        return (f"Redis holds live state in {self.groups or 'no'} user groups, not the "
                f"{groups} of RUSHORDER_GROUPS; `rushorder rebuild --force` lays it out "
                "again from Postgres")


def marker(client: redis.Redis) -> Marker | None:
    """The marker, or None when this Redis holds no live rushorder state: no catalog
    marker, or a group without its copy (its slot's node lost its data)."""
    raw = client.get(keys.LIVE)
    if raw is None:
        return None
    made = decode(raw)  # type: ignore[arg-type]
    for group in keys.layout(made.groups).all if made.groups else ():
        if not client.exists(group.live):
            return None
    return made


def decode(raw: bytes) -> Marker:
    """The marker stored as ``raw`` (one of unknown form says so in its origin)."""
    try:
        return msgspec.convert(_DECODER.decode(raw), Marker)  # type: ignore[arg-type]
    except msgspec.MsgspecError:
        return Marker(origin=f"unknown ({raw!r:.60})", at_ms=0)


def mark(client: redis.Redis, origin: str, groups: int = keys.DEFAULT_GROUPS) -> Marker:
    """Declare this Redis' state live, laid out in ``groups`` user groups: every script
    serves from it from now on."""
    seconds, micros = client.time()
    made = Marker(origin=origin, at_ms=int(seconds) * 1000 + int(micros) // 1000,
                  groups=groups)
    put(client, made)
    return made


def put(client: redis.Redis, made: Marker) -> None:
    """Write a marker as it is (to put back one that was withdrawn for a moment): the
    catalog's and every group's copy (each group's slot has its own, which its scripts
    check: a group on a node that lost its data refuses on its own)."""
    raw = msgspec.json.encode(made)
    for group in keys.layout(made.groups).all if made.groups else ():
        client.set(group.live, raw)
    client.set(keys.LIVE, raw)


def unmark(client: redis.Redis) -> bool:
    """Withdraw the marker (first step of a rebuild), the catalog's first and then every
    group's copy: from now on every script refuses."""
    gone = bool(client.delete(keys.LIVE))
    for name in list(client.scan_iter(match=f"{keys.GROUP_TAGS}:live", count=1000)):
        client.delete(name)
    return gone
