"""CPU time of process trees, read from ``/proc`` (Linux), for the benches.

A process's ticks here are its own user and system time plus those of its children that it
has reaped (``utime stime cutime cstime``), so the sum over a tree stays right when a
child exits between two readings: its time moves into its parent's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

TICK_S = 1 / os.sysconf("SC_CLK_TCK")

Table = dict[int, tuple[int, int]]  # pid -> (parent pid, ticks)


def stat(pid: int) -> tuple[int, int] | None:
    """A process's parent and ticks; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), sum(int(v) for v in fields[11:15])


def table() -> Table:
    """Every process's parent and ticks."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (row := stat(int(entry))) is not None:
            found[int(entry)] = row
    return found


def children(rows: Table) -> dict[int, list[int]]:
    """Each pid's direct children."""
    kids: dict[int, list[int]] = {}
    for pid, (parent, _) in rows.items():
        kids.setdefault(parent, []).append(pid)
    return kids


def subtree(top: int, kids: dict[int, list[int]]) -> list[int]:
    """``top`` and everything below it."""
    found, todo = [], [top]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += kids.get(pid, [])
    return found


def tree_ticks(roots: Iterable[int], rows: Table | None = None) -> dict[int, int]:
    """Ticks of each root's whole tree."""
    rows = table() if rows is None else rows
    kids = children(rows)
    return {root: sum(rows[p][1] for p in subtree(root, kids) if p in rows) for root in roots}


def cmdline(pid: int) -> list[str]:
    """A process's arguments ([] if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def machine() -> tuple[int, int]:
    """The machine's ticks so far: all, and busy (neither idle nor waiting on I/O)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum(values), sum(values) - values[3] - values[4]


def others_percent(before: tuple[int, int], after: tuple[int, int], ours: int) -> float:
    """The share of the machine that processes other than ``ours`` ticks used meanwhile."""
    total, busy = (b - a for a, b in zip(before, after, strict=True))
    return max(0.0, 100 * (busy - ours) / total) if total else 0.0
