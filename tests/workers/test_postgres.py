"""The Postgres writer in-process, on real Redis and Postgres: what lands, exactly once, in
order; concurrent writers; trimming."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine as Database

from engine import Engine, keys
from engine.models import Coupon, Product
from engine.outbox import PLATFORM, POSTGRES, Outbox, Outboxes, entry_number, next_id
from engine.outbox.events import (
    AnyEvent,
    OptionCreated,
    OptionState,
    OptionUpdated,
    OrderCancelled,
    OrderPaid,
    ProductCreated,
    decode,
)
from persistence.catalog import Catalog
from tests.workers.catalog_events import AT, option_order, sneaker
from tests.workers.drain_support import counts, flash_sale, scalar
from workers.postgres import PostgresWriter, apply_batch, apply_new
from workers.projection import project
from workers.retry import retry_set_aside


def outbox_events(r: redis.Redis) -> tuple[list[tuple[int, AnyEvent]], list[tuple[int, int]]]:
    """Every outbox entry as (entry number, event), and each one's (stream, entry number),
    in the order a writer applies them: the catalog's stream first, then each group's."""
    layout = keys.layout(keys.DEFAULT_GROUPS)
    events, names = [], []
    for stream in [keys.OUTBOX, *(g.outbox for g in layout.all)]:
        entries: Any = r.xrange(stream)
        for i, f in entries:
            number = entry_number(i.decode())
            events.append((number, decode(f[b"e"])))
            names.append((layout.sources[stream], number))
    return events, names


async def test_every_kind_of_event_lands_in_postgres_as_redis_answers_it(
    engine: Engine, db: Database, drain: Callable[..., int],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    a, b = await products(2, stock=100)
    await engine.update_product(a.id, stock_delta=10, price=1_200, name="renamed")
    c = await coupon(quantity=5)
    await engine.charge(1, 100_000)
    await engine.charge(2, 100_000)
    issued = await engine.issue_coupon(1, c.id)
    first = await engine.place_order(1, [(a.id, 2), (b.id, 1)], issued.id)
    await engine.place_order(2, [(b.id, 3)])
    await engine.cancel_order(1, first.id)
    third = await engine.place_order(1, [(a.id, 1)], issued.id)

    drain()

    assert counts(db) | {"outbox_applied": 0} == {
        "users": 2, "balance_history": 6, "products": 2, "product_changes": 1,
        "product_options": 0, "option_changes": 0, "coupons": 1, "issued_coupons": 1,
        "orders": 3, "order_lines": 4, "payments": 3, "sales_hourly": 2,
        "outbox_applied": 0}
    for user in (1, 2):
        redis_balance = (await engine.balance(user)).balance
        assert scalar(db, "SELECT balance FROM users WHERE id = :u", u=user) == redis_balance
    for p in (a, b):
        live = await engine.product(p.id)
        assert scalar(db, "SELECT stock FROM products WHERE id = :p", p=p.id) == live.stock
    assert scalar(db, "SELECT name || price FROM products WHERE id = :p", p=a.id) == "renamed1200"
    assert scalar(db, "SELECT remaining FROM coupons") == (await engine.coupon(c.id)).remaining
    assert scalar(db, "SELECT status || order_id FROM issued_coupons") == f"USED{third.id}"
    assert scalar(db, "SELECT status FROM orders WHERE id = :o", o=int(first.id)) == "CANCELLED"
    assert scalar(db, "SELECT status FROM payments WHERE order_id = :o",
                  o=int(first.id)) == "CANCELLED"
    assert scalar(db, "SELECT sum(units) FROM sales_hourly") == 4  # 3 of b, 1 of a


async def test_a_batch_applied_twice_changes_nothing_the_second_time(
    engine: Engine, db: Database, r: redis.Redis,
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (p,) = await products(1)
    for user in range(1, 6):
        await engine.charge(user, 10_000)
        await engine.place_order(user, [(p.id, 2)])
    events, names = outbox_events(r)
    with db.begin() as conn:
        assert apply_batch(conn, events, names) == len(events)
    before = counts(db), scalar(db, "SELECT stock FROM products"), scalar(
        db, "SELECT sum(balance) FROM users")
    with db.begin() as conn:
        assert apply_batch(conn, events, names) == 0
    after = counts(db), scalar(db, "SELECT stock FROM products"), scalar(
        db, "SELECT sum(balance) FROM users")
    assert after == before
    assert before[1] == (await engine.product(p.id)).stock


async def test_entries_a_dead_writer_held_are_applied_once_and_before_newer_ones(
    engine: Engine, db: Database, r: redis.Redis, writer: Callable[..., PostgresWriter],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (p,) = await products(1)
    await funded_users(1)
    placed = await engine.place_order(1, [(p.id, 1)])
    dead = Outboxes(r, POSTGRES, "dead-writer")
    dead.create_groups()
    assert dead.read(100)  # delivered to a writer that then died before its commit
    await engine.cancel_order(1, placed.id)  # newer: must not be applied before the paid

    fresh = writer("new-writer", reclaim_idle_ms=500)
    started = time.monotonic()
    fresh.run(time.monotonic() + 3, threading.Event())

    assert time.monotonic() - started >= 0.5  # waited for the dead writer to go quiet
    assert scalar(db, "SELECT status FROM orders") == "CANCELLED"
    assert counts(db)["orders"] == 1 and counts(db)["balance_history"] == 3
    assert scalar(db, "SELECT balance FROM users") == (await engine.balance(1)).balance
    assert fresh.outbox.backlog() == 0


async def test_two_writers_at_once_take_turns_and_apply_every_order_once(
    engine: Engine, db: Database, writer: Callable[..., PostgresWriter],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    users = await funded_users(50)
    items = await products(3)
    stop = threading.Event()
    writers = [writer(f"writer-{n}") for n in range(2)]
    threads = [threading.Thread(target=w.run, args=(time.monotonic() + 60, stop))
               for w in writers]
    for t in threads:
        t.start()
    try:
        for round_ in range(20):
            await asyncio.gather(*(engine.place_order(u, [(items[(u + round_) % 3].id, 1)])
                                   for u in users))
        outbox = writers[0].outbox
        deadline = time.monotonic() + 30
        while outbox.backlog() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert counts(db)["orders"] == 1000 and counts(db)["payments"] == 1000
    assert sum(w.applied for w in writers) == 1000 + 50 + 3  # orders, charges, products
    for p in items:
        assert scalar(db, "SELECT stock FROM products WHERE id = :p",
                      p=p.id) == (await engine.product(p.id)).stock


async def test_the_stream_is_trimmed_only_below_what_every_group_acknowledged(
    r: redis.Redis, drain: Callable[..., int], funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    await funded_users(20)
    drain()
    stream = max(keys.layout(keys.DEFAULT_GROUPS).outboxes, key=r.xlen)  # one group's
    length = r.xlen(stream)
    assert length >= 2
    forwarder = Outbox(r, PLATFORM, "forwarder", stream=stream)
    postgres = Outbox(r, POSTGRES, "trimmer", stream=stream)
    assert postgres.trim() == "0-1"  # the platform group has taken nothing yet
    assert r.xlen(stream) == length

    taken = forwarder.read(2)
    forwarder.ack([e.id for e in taken[:1]])
    assert postgres.trim_floor() == taken[1].id  # the oldest entry still pending

    forwarder.ack([e.id for e in taken[1:] + forwarder.read(100)])
    newest: Any = r.xrevrange(stream, count=1)
    last = newest[0][0].decode()
    assert postgres.trim_floor() == next_id(last)  # everything acknowledged by both


async def test_entries_postgres_refuses_are_set_aside_never_skipped_and_a_retry_writes_them(
    engine: Engine, db: Database, writer: Callable[..., PostgresWriter],
) -> None:
    with db.begin() as conn:  # Postgres refuses every history line for a while
        conn.exec_driver_sql("ALTER TABLE balance_history ADD CONSTRAINT refuse CHECK (id < 0) "
                             "NOT VALID")
    try:
        for user in (1, 2, 3):
            await engine.charge(user, 10_000)
        w = writer()
        stop = threading.Event()
        thread = threading.Thread(target=w.run, args=(time.monotonic() + 30, stop))
        thread.start()
        deadline = time.monotonic() + 15
        while w.outbox.backlog() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        thread.join(10)
        assert counts(db)["users"] == 0  # refused, rolled back, and set aside
        assert scalar(db, "SELECT count(*) FROM outbox_set_aside") == 3
        assert retry_set_aside(db).applied == 0  # still refused: still set aside
    finally:
        with db.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE balance_history DROP CONSTRAINT refuse")
    assert retry_set_aside(db).applied == 3
    assert counts(db)["users"] == 3 and counts(db)["balance_history"] == 3
    assert scalar(db, "SELECT count(*) FROM outbox_set_aside") == 0


# (No control characters: the API and the engine refuse them in names.)
AWKWARD_NAMES = ["semi;colon", "per%cent_under", 'quote " and \\ backslash', "it's", "\\N",
                 "comma, {brace} [bracket]", "ünïcødé 한글 🛒", "  spaced  ", "null"]


async def test_awkward_product_names_reach_postgres_exactly_as_the_engine_has_them(
    engine: Engine, db: Database, drain: Callable[..., int],
    funded_users: Callable[..., Awaitable[list[int]]],
) -> None:
    items = [await engine.create_product(name, 100, 10) for name in AWKWARD_NAMES]
    await funded_users(1)
    await engine.place_order(1, [(p.id, 1) for p in items])
    await engine.update_product(items[0].id, name="renamed \"again\"\\")

    drain()

    with db.connect() as conn:
        stored: dict[int, str] = dict(conn.execute(sa.text("SELECT id, name FROM products")).all())
        lines = conn.execute(sa.text("SELECT name FROM order_lines ORDER BY position")).all()
        change = conn.scalar(sa.text("SELECT name FROM product_changes"))
    assert stored == {p.id: (await engine.product(p.id)).name for p in items}
    assert [name for (name,) in lines] == AWKWARD_NAMES
    assert change == stored[items[0].id] == "renamed \"again\"\\"


async def test_postgres_keeps_the_engines_ids_and_each_orders_payment_and_lines(
    engine: Engine, db: Database, drain: Callable[..., int],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]], coupon: Callable[..., Awaitable[Coupon]],
) -> None:
    a, b = await products(2)
    await funded_users(3)
    held = await engine.issue_coupon(2, (await coupon(value=300)).id)
    placed = [await engine.place_order(u, [(a.id, u), (b.id, 1)], held.id if u == 2 else None)
              for u in (3, 1, 2)]
    assert placed[2].paid_amount == placed[2].total_amount - 300
    await engine.cancel_order(1, placed[1].id)

    drain()

    with db.connect() as conn:
        orders = conn.execute(sa.text(
            "SELECT o.id, o.user_id, o.status, o.paid_amount, o.created_at, p.user_id, "
            "p.amount, p.status, p.paid_at FROM orders o JOIN payments p ON p.order_id = o.id "
            "ORDER BY o.id")).all()
        lines = conn.execute(sa.text("SELECT order_id, position, product_id, quantity "
                                     "FROM order_lines ORDER BY order_id, position")).all()
        history = conn.execute(sa.text("SELECT id, user_id, type, order_id FROM "
                                       "balance_history ORDER BY id")).all()
    by_id = sorted(placed, key=lambda o: int(o.id))  # ids carry their group, not the order
    assert [(o[0], o[1], o[2], o[3], o[4]) for o in orders] == [
        (int(o.id), o.user_id, "CANCELLED" if o is placed[1] else "PAID", o.paid_amount,
         o.created_at) for o in by_id]
    assert all((o[5], o[6], o[8]) == (o[1], o[3], o[4]) for o in orders)
    assert [o[7] for o in orders] == ["CANCELLED" if o is placed[1] else "COMPLETED"
                                      for o in by_id]
    assert lines == [(int(o.id), pos, p, q) for o in by_id
                     for pos, (p, q) in enumerate([(a.id, o.user_id), (b.id, 1)])]
    engine_lines = {u: (await engine.history(u)).items for u in (1, 2, 3)}
    assert history == sorted(
        (line.id, u, line.type, None if line.order_id is None else int(line.order_id))
        for u, items in engine_lines.items() for line in items)
    assert len(history) == 3 + 3 + 1  # charges, uses, one refund
    assert scalar(db, "SELECT status || order_id FROM issued_coupons") == f"USED{placed[2].id}"


async def test_a_batch_with_some_entries_applied_before_applies_only_the_others_once(
    engine: Engine, db: Database, r: redis.Redis, writer: Callable[..., PostgresWriter],
    funded_users: Callable[..., Awaitable[list[int]]],
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (p,) = await products(1)
    await funded_users(10)
    for user in range(1, 11):
        await engine.place_order(user, [(p.id, 1)])
    events, names = outbox_events(r)
    with db.begin() as conn:  # a writer that committed every other entry, then died
        assert apply_batch(conn, events[::2], names[::2]) == len(events[::2])

    w = writer()
    w.run(time.monotonic() + 2, threading.Event())  # its batch is new, then careful

    assert w.applied == len(events) - len(events[::2])
    assert counts(db) | {"outbox_applied": 0} == {
        "users": 10, "balance_history": 20, "products": 1, "product_changes": 0,
        "product_options": 0, "option_changes": 0, "coupons": 0, "issued_coupons": 0,
        "orders": 10, "order_lines": 10, "payments": 10,
        "sales_hourly": 1, "outbox_applied": 0}
    assert scalar(db, "SELECT stock FROM products") == (await engine.product(p.id)).stock
    assert scalar(db, "SELECT sum(balance) FROM users") == 10 * (1_000_000 - 1_000)
    assert w.outbox.backlog() == 0


async def test_a_new_batch_whose_entry_was_applied_raises_and_leaves_nothing_behind(
    engine: Engine, db: Database, r: redis.Redis,
    products: Callable[..., Awaitable[list[Product]]],
) -> None:
    (p,) = await products(1)
    await engine.charge(1, 10_000)
    await engine.place_order(1, [(p.id, 1)])
    events, names = outbox_events(r)
    with db.begin() as conn:  # the charge (the middle entry) was applied before
        apply_batch(conn, events[1:2], names[1:2])
    before = counts(db)

    with db.connect() as conn:
        with pytest.raises(psycopg.errors.UniqueViolation), conn.begin():
            apply_new(conn, events, names, project(events))
        assert counts(db) == before  # rolled back whole
        with conn.begin():  # the same session goes on, the careful way
            assert apply_batch(conn, events, names) == len(events) - 1
        await engine.place_order(1, [(p.id, 2)])
        group = engine.layout.of(1)
        newest: Any = r.xrevrange(group.outbox, count=1)
        later = [(entry_number(i.decode()), decode(f[b"e"])) for i, f in newest]
        with conn.begin():  # and new batches after it: its prepared statements still work
            assert apply_new(conn, later, [(group.index, later[0][0])], project(later)) == 1

    assert counts(db)["orders"] == 2 and counts(db)["balance_history"] == 3
    assert scalar(db, "SELECT stock FROM products") == (await engine.product(p.id)).stock


async def test_a_writer_that_keeps_up_lingers_and_commits_a_trickle_in_few_batches(
    engine: Engine, db: Database, writer: Callable[..., PostgresWriter],
) -> None:
    w = writer(linger_ms=200)
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(time.monotonic() + 30, stop))
    thread.start()
    try:
        started = time.monotonic()
        for user in range(1, 201):  # a charge every ~5 ms for ~1 s
            await engine.charge(user, 10_000)
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 10
        while w.outbox.backlog() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert w.applied == 200 and counts(db)["users"] == 200
    assert w.batches <= elapsed / 0.2 + 3  # one batch per linger, not one per charge


def test_trimming_removes_every_acknowledged_entry_however_many(r: redis.Redis) -> None:
    postgres, platform = Outbox(r, POSTGRES, "trimmer"), Outbox(r, PLATFORM, "trimmer")
    postgres.create_groups()
    pipe = r.pipeline(transaction=False)
    for n in range(1_250):
        pipe.xadd("{ro}:outbox", {"e": f"{n}"})
    pipe.execute()
    for outbox in (postgres, platform):
        while taken := outbox.read(500):
            outbox.ack([e.id for e in taken])
    postgres.trim(step=150)  # many steps, each of whole nodes (100 entries): 100 at a time
    assert r.xlen("{ro}:outbox") < 100  # only what shares a node with the newest is left


def test_options_land_in_postgres_once_with_their_product_holding_their_sum(
    db: Database,
) -> None:
    """Hand-made events of issue 27, the engine's shapes (tests/workers/test_projection.py):
    a product with options, an option added, a restock, an order and its cancel."""
    events: list[tuple[int, AnyEvent]] = [
        (1, ProductCreated(at=AT, product=sneaker())),
        (2, OptionCreated(at=AT, product_id=3, option=OptionState(id=12, name="280",
                                                                   stock=30))),
        (3, OptionUpdated(at=AT, product_id=3, option=OptionState(id=10, name="260mm",
                                                                   stock=55), stock_delta=5)),
        (4, OrderPaid(at=AT, event_id="5:paid", order=option_order("5"), balance_after=0,
                      history=None)),
        (5, OrderPaid(at=AT, event_id="6:paid", order=option_order("6"), balance_after=0,
                      history=None)),
        (6, OrderCancelled(at=AT, event_id="6:c", order=option_order("6", "CANCELLED"),
                           balance_after=0, history=None, coupon_restored=False)),
    ]
    names = [(-1, entry) for entry, _ in events]
    with db.begin() as conn:  # product 1 of the orders' plain line
        conn.exec_driver_sql("INSERT INTO products VALUES (1, 'a', 100, 10, 10, now(), 0)")
    with db.begin() as conn:
        assert apply_batch(conn, events, names) == 6
    with db.begin() as conn:
        assert apply_batch(conn, events, names) == 0  # applied once

    with db.connect() as conn:
        options = conn.exec_driver_sql(
            "SELECT id, name, stock FROM product_options ORDER BY id").all()
        product = conn.exec_driver_sql(
            "SELECT stock, status, max_per_user, category FROM products WHERE id = 3").one()
        lines = conn.exec_driver_sql(
            "SELECT option_id, option_name FROM order_lines WHERE order_id = 5 "
            "ORDER BY position").all()
        catalog = Catalog(conn)
        ledgers = (catalog.stock_mismatches(), catalog.option_stock_mismatches(),
                   catalog.sum_mismatches())
    # 10: 50 + 5 - 2; 11: 50 - 1; 12: 30 (added later); product 3 the sum
    assert [tuple(o) for o in options] == [(10, "260mm", 53), (11, "270", 49), (12, "280", 30)]
    assert tuple(product) == (132, "ON_SALE", 1, "shoes")
    assert [tuple(line) for line in lines] == [(10, "260"), (11, "270"), (None, None)]
    assert ledgers == ([], [], [])


async def test_a_flash_sale_lands_in_postgres_as_redis_answers_it(
    engine: Engine, db: Database, drain: Callable[..., int],
) -> None:
    items, users = await flash_sale(engine)
    drain()

    with db.connect() as conn:
        for made in items:
            live = await engine.product(made.id)
            row = conn.exec_driver_sql(
                "SELECT name, price, stock, status, sale_starts_at, sale_ends_at, max_per_user,"
                f" category FROM products WHERE id = {made.id}").one()
            assert tuple(row) == (live.name, live.price, live.stock, live.status,
                                  live.sale_starts_at, live.sale_ends_at, live.max_per_user,
                                  live.category)
            options = conn.exec_driver_sql(
                "SELECT id, product_id, name, extra_price, stock FROM product_options "
                f"WHERE product_id = {made.id} ORDER BY id").all()
            assert [tuple(o) for o in options] == [
                (o.id, o.product_id, o.name, o.extra_price, o.stock) for o in live.options]
        for user in users:
            for order in (await engine.orders(user, limit=100)).items:
                lines = conn.exec_driver_sql(
                    "SELECT product_id, option_id, option_name, unit_price, quantity FROM "
                    f"order_lines WHERE order_id = {int(order.id)} ORDER BY position").all()
                assert [tuple(line) for line in lines] == [
                    (i.product_id, i.option_id, i.option_name, i.unit_price, i.quantity)
                    for i in order.items]
    assert len(items[0].options) == 2 and any(  # the added size and an option line landed
        line.option_id is not None for o in (await engine.orders(1)).items for line in o.items)
