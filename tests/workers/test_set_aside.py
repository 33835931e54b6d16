"""A poison outbox entry never stops the write-behind: the Postgres writer sets it aside
(listed by the audit and the metrics), writes every other entry, and a retry applies it
once fixed."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine as Database
from sqlalchemy.ext.asyncio import create_async_engine

from engine import Engine
from engine.models import Product
from engine.outbox import POSTGRES, Outboxes
from engine.outbox.events import OptionCreated, OptionState, OrderPaid
from persistence.setaside import SetAsideSummary, summary
from rushorder.audit import run_audit
from rushorder.cli import main
from rushorder.progress import Progress
from rushorder.rebuild import rebuild
from rushorder.settings import Settings
from tests.workers.catalog_events import AT, option_order
from tests.workers.drain_support import scalar, wait_for
from workers.holds import Holds, owned
from workers.metrics import WorkerMetrics
from workers.postgres import PostgresWriter
from workers.retry import retry_set_aside


@contextmanager
def running(writer: PostgresWriter) -> Iterator[PostgresWriter]:
    """The writer draining in a thread of its own until the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=writer.run, args=(time.monotonic() + 120, stop))
    thread.start()
    try:
        yield writer
    finally:
        stop.set()
        thread.join()


def rewrite_last(r: redis.Redis, stream: str, change: Callable[[dict[str, Any]], bytes]) -> str:
    """Replace a stream's last entry by a changed copy at its end (as if the engine had
    written that): the new entry's id."""
    last: Any = r.xrevrange(stream, count=1)
    ((entry_id, fields),) = last
    r.xdel(stream, entry_id)
    added: Any = r.xadd(stream, {"e": change(msgspec.json.decode(fields[b"e"]))})
    return str(added.decode())


def with_nul_in_line_names(event: dict[str, Any]) -> bytes:
    """The event with a NUL in each line's name: Postgres refuses that text."""
    for line in event["order"]["items"]:
        line["name"] = "bad\x00name"
    return msgspec.json.encode(event)


def with_a_time_that_is_not_one(event: dict[str, Any]) -> bytes:
    """The event with a time the workers cannot read: it cannot be decoded."""
    event["order"]["cancelled_at"] = "the day after tomorrow"
    return msgspec.json.encode(event)


def orders_in_postgres(db: Database) -> set[int]:
    with db.connect() as conn:
        return set(conn.scalars(sa.text("SELECT id FROM orders")))


def set_aside_rows(db: Database) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT id, stream, entry, error FROM outbox_set_aside ORDER BY id")))


def audit_report(r: redis.Redis, db: Database) -> tuple[bool, str]:
    with db.connect() as conn, Progress("audit") as progress:
        report = run_audit(r, conn, progress, wait_s=5)
    return report.ok, report.render()


async def read_summary(db: Database) -> SetAsideSummary:
    """The set-aside summary over an async pool, as the API reads it."""
    pool = create_async_engine(db.url)
    try:
        return await summary(pool)
    finally:
        await pool.dispose()


def metric(metrics: WorkerMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"group": POSTGRES})


async def test_an_entry_postgres_refuses_is_set_aside_and_every_other_one_is_written(
    engine: Engine, db: Database, r: redis.Redis, writer: Callable[..., PostgresWriter],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(8), await products(1)
    layout = engine.layout
    first = [await engine.place_order(u, [(item.id, 1)]) for u in users]
    refused = await engine.place_order(1, [(item.id, 2)])
    poison = rewrite_last(r, layout.of(1).outbox, with_nul_in_line_names)
    await engine.cancel_order(1, refused.id)  # needs the order: held behind it
    second = [await engine.place_order(u, [(item.id, 1)]) for u in users]

    w = writer()
    with running(w):
        good = {int(o.id) for o in first + second[1:]}
        wait_for(lambda: good <= orders_in_postgres(db), 30, what="every good order")
        wait_for(lambda: not Outboxes(r, POSTGRES, "probe").backlog(), 30,
                 what="the outbox acknowledged, the poison too")
    assert not {int(refused.id), int(second[0].id)} & orders_in_postgres(db)
    rows = set_aside_rows(db)
    assert len(rows) == 3
    assert rows[0].entry % 1_000_000 == int(poison.split("-")[1])
    assert "\\u0000 cannot be converted to text" in rows[0].error
    assert all("held back: an earlier entry of user 1" in row.error for row in rows[1:])

    ok, report = audit_report(r, db)
    assert not ok and "FAIL no outbox entry set aside" in report
    assert f"#{rows[0].id} {layout.of(1).outbox} {poison} (order.paid" in report
    metrics = WorkerMetrics(POSTGRES)
    metrics.sync(w)
    assert metric(metrics, "rushorder_worker_entries_set_aside_total") == 3
    assert metric(metrics, "rushorder_worker_set_aside_entries") == 3
    shown = await read_summary(db)  # what /health/ready and the console show
    assert shown.count == 3 and [e["type"] for e in shown.oldest] == [
        "order.paid", "order.cancelled", "order.paid"]

    assert retry_set_aside(db).applied == 0  # nothing fixed yet: all stay
    assert [row.id for row in set_aside_rows(db)] == [row.id for row in rows]
    with db.begin() as conn:  # the operator's fix: the name without its NUL
        conn.execute(sa.text("UPDATE outbox_set_aside SET raw = convert_to(replace("
                             "convert_from(raw, 'UTF8'), '\\u0000', ''), 'UTF8')"))
    retried = retry_set_aside(db)
    assert (retried.applied, retried.left) == (3, [])
    assert scalar(db, "SELECT status FROM orders WHERE id = :o",
                  o=int(refused.id)) == "CANCELLED"
    assert int(second[0].id) in orders_in_postgres(db)
    ok, report = audit_report(r, db)
    assert ok, report


async def test_an_undecodable_entry_is_set_aside_and_does_not_loop(
    engine: Engine, db: Database, r: redis.Redis, writer: Callable[..., PostgresWriter],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(4), await products(1)
    stream = engine.layout.of(2).outbox
    before = [await engine.place_order(u, [(item.id, 1)]) for u in users]
    r.xadd(stream, {"e": b'{"type": "order.paid", "at": "0001-01-01T00:00:00+14:00", '
                         b'"order": {"user_id": 2}}'})
    r.xadd(stream, {"e": b"not json at all"})
    after = [await engine.place_order(u, [(item.id, 1)]) for u in users]

    with running(writer()):
        good = {int(o.id) for o in before + after if o.user_id != 2}
        wait_for(lambda: good <= orders_in_postgres(db), 30, what="every good order")
        wait_for(lambda: not Outboxes(r, POSTGRES, "probe").backlog(), 30,
                 what="the outbox acknowledged")
    rows = set_aside_rows(db)
    assert ["undecodable" in row.error for row in rows] == [True, True, False]
    assert "held back: an earlier entry of user 2" in rows[2].error
    assert int(before[1].id) in orders_in_postgres(db)
    assert int(after[1].id) not in orders_in_postgres(db)


@pytest.mark.parametrize("retention_s", [1.0])
async def test_what_a_set_aside_entry_changed_is_not_settled_from_redis(
    engine: Engine, db: Database, r: redis.Redis, retention_s: float,
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users, (item,) = await funded_users(8), await products(1)
    layout = engine.layout
    (neighbour, *_) = [u for u in users[1:] if layout.of(u) is layout.of(1)]
    order = await engine.place_order(1, [(item.id, 1)])
    other = await engine.place_order(neighbour, [(item.id, 1)])
    await engine.cancel_order(1, order.id)
    rewrite_last(r, layout.of(1).outbox, with_a_time_that_is_not_one)
    await engine.place_order(neighbour, [(item.id, 1)])  # written after the poison

    outbox = Outboxes(r, POSTGRES, "settling")
    outbox.create_groups()
    with running(PostgresWriter(outbox, db, batch=500, block_ms=100,
                                retention_s=retention_s)):
        wait_for(lambda: not r.exists(layout.of(neighbour).order(other.id)), 30,
                 what="the neighbour's first order settled")
    assert r.exists(layout.of(1).order(order.id))  # Postgres still has it PAID
    assert (await engine.order(1, order.id)).status == "CANCELLED"


async def test_the_outbox_command_lists_retries_and_drops_and_a_rebuild_waits_for_it(
    engine: Engine, db: Database, r: redis.Redis, wsettings: Settings,
    writer: Callable[..., PostgresWriter], funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUSHORDER_DATABASE_URL", wsettings.database_url or "")
    users, (item,) = await funded_users(2), await products(1)
    for user in users:
        await engine.place_order(user, [(item.id, 1)])
        rewrite_last(r, engine.layout.of(user).outbox, with_nul_in_line_names)
    with running(writer()):
        wait_for(lambda: len(set_aside_rows(db)) == 2, 30, what="both orders set aside")
    first, second = (row.id for row in set_aside_rows(db))

    assert main(["outbox", "list"]) == 1
    listed = capsys.readouterr().out
    assert f"#{first} " in listed and "(order.paid, 1 attempt(s)" in listed
    r.flushdb()  # Redis lost its data: a rebuild now would leave the set-aside orders out
    assert rebuild(wsettings) == 1
    assert "2 outbox entries are set aside" in capsys.readouterr().err

    with db.begin() as conn:  # the first one fixed
        conn.execute(sa.text("UPDATE outbox_set_aside SET raw = convert_to(replace("
                             "convert_from(raw, 'UTF8'), '\\u0000', ''), 'UTF8') "
                             "WHERE id = :i"), {"i": first})
    assert main(["outbox", "retry", "--id", str(second)]) == 1  # not fixed: stays
    assert "0 set-aside entries applied" in capsys.readouterr().out
    assert main(["outbox", "retry"]) == 1
    out = capsys.readouterr().out
    assert "1 set-aside entries applied" in out and f"#{second} " in out and "3 attempt(s)" in out
    assert main(["outbox", "drop"]) == 2
    assert main(["outbox", "drop", "--id", str(second)]) == 0
    assert "no outbox entry is set aside" in capsys.readouterr().out
    assert rebuild(wsettings) == 0


def test_an_option_entry_set_aside_holds_back_the_orders_of_its_product() -> None:
    """An option is held as its product: an order of any of its sizes waits behind an
    option.created or option.updated set aside, decodable or not."""
    added = OptionCreated(at=AT, product_id=3, option=OptionState(id=12, name="280"))
    order = OrderPaid(at=AT, event_id="5:paid", order=option_order("5"), balance_after=0,
                      history=None)
    holds = Holds(owned(added, b""))
    assert holds.blocker(order) == ("product", 3)
    garbled = b'{"type":"option.updated","product_id":3,"option":{"id":"twelve"}}'
    assert Holds(owned(None, garbled)).blocker(order) == ("product", 3)
    assert Holds(owned(None, b'{"type":"option.updated"}')).blocker(order) is None
