"""``rushorder outbox``: the outbox entries the Postgres writer set aside, and their retry.

``list`` shows them (as ``rushorder audit`` does), ``retry`` applies them once the cause
is fixed (``workers/retry.py``), ``drop`` gives one up for good (what it changed is then
never in Postgres: the audit shows the drift it leaves).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rushorder.settings import MissingSetting, Settings

if TYPE_CHECKING:  # the rest is imported when a command runs: `rushorder --help` stays quick
    from sqlalchemy.engine import Engine

    from engine import keys
    from persistence.setaside import SetAsideRow

ACTIONS = ("list", "retry", "drop")


def add_options(sub: argparse.ArgumentParser) -> None:
    """``rushorder outbox {list,retry,drop} [--id N ... | --all]``."""
    sub.add_argument("action", choices=ACTIONS,
                     help="list the set-aside entries, retry them, or drop one for good")
    which = sub.add_mutually_exclusive_group()
    which.add_argument("--id", dest="ids", type=int, action="append", metavar="N",
                       help="only this entry (its # in the list); repeatable")
    which.add_argument("--all", action="store_true", help="every entry (retry's default)")


def describe(row: SetAsideRow, layout: keys.Layout) -> str:
    """One line: its handle, stream, entry id, event type, attempts and error."""
    from engine.outbox import entry_id

    streams = {source: stream for stream, source in layout.sources.items()}
    return (f"#{row.id} {streams.get(row.stream, row.stream)} {entry_id(row.entry)} "
            f"({row.type or 'undecodable'}, {row.attempts} attempt(s), set aside "
            f"{row.set_aside_at:%Y-%m-%d %H:%M:%S}): {one_line(row.error)}")


def one_line(error: str, most: int = 300) -> str:
    """An error's first ``most`` characters on one line."""
    return " ".join(error[:most].split())


def listing(rows: Sequence[SetAsideRow], layout: keys.Layout) -> str:
    """The rows, one a line, or a line saying there are none."""
    if not rows:
        return "no outbox entry is set aside"
    return "\n".join([f"{len(rows)} outbox entries set aside:",
                      *(describe(row, layout) for row in rows)])


def outbox(settings: Settings, args: argparse.Namespace) -> int:
    """Run one action; 0 when no entry is left set aside (list: when none is), else 1.
    ``drop`` needs ``--id``."""
    from engine import keys
    from persistence.database import create_engine

    if not settings.database_url:
        raise MissingSetting("outbox", "database_url")
    db = create_engine(settings.database_url)
    try:
        return _act(db, args.action, args.ids, keys.layout(settings.groups))
    finally:
        db.dispose()


def _act(db: Engine, action: str, ids: list[int] | None, layout: keys.Layout) -> int:
    from persistence.setaside import SetAside
    from workers.retry import retry_set_aside

    if action == "retry":
        retried = retry_set_aside(db, ids)
        print(f"{retried.applied} set-aside entries applied")
        left = retried.left
    else:
        if action == "drop":
            if not ids:
                print("rushorder outbox drop: name the entries with --id N")
                return 2
            _drop(db, ids)
        with db.connect() as conn:
            left = SetAside(conn).all()
    print(listing(left, layout))
    return 1 if left else 0


def _drop(db: Engine, ids: list[int]) -> None:
    from persistence.setaside import SetAside

    with db.begin() as conn:
        for row_id in ids:
            SetAside(conn).remove(row_id)
    print(f"dropped {', '.join(f'#{i}' for i in ids)}: never to be applied")
