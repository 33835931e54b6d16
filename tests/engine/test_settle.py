"""The records of committed batches that settle.lua works through: what a batch touched,
cut into parts small enough that no settle.lua call holds Redis for long."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.outbox.events import CartUpdated
from engine.outbox.settle import CHUNK, Record, chunks, record


def test_a_big_record_is_cut_into_parts_that_keep_everything_once() -> None:
    made = Record(entry="5-0", orders=[(str(i), "1") for i in range(CHUNK + 50)],
                  lines=[("1", "9"), ("2", "8")], coupons=[(str(i), "3") for i in range(CHUNK)])
    parts = chunks(made)
    sizes = [len(p.orders) + len(p.lines) + len(p.coupons) for p in parts]
    assert sizes == [CHUNK, CHUNK, 52] and all(p.entry == "5-0" for p in parts)
    assert [o for p in parts for o in p.orders] == made.orders
    assert [x for p in parts for x in p.lines] == made.lines
    assert [c for p in parts for c in p.coupons] == made.coupons


def test_an_empty_record_has_no_parts() -> None:
    assert chunks(Record(entry="5-0", orders=[], lines=[], coupons=[])) == []


def test_a_record_names_the_users_whose_cart_changed_once_each_and_parts_keep_them() -> None:
    at = datetime.now(UTC)
    changes = [CartUpdated(at=at, user_id=u, items=[]) for u in (3, 4, 3)]
    made = record("9-0", changes)
    assert made.carts == ["3", "4"]
    many = Record(entry="9-0", orders=[], lines=[], coupons=[],
                  carts=[str(u) for u in range(CHUNK + 1)])
    assert [u for p in chunks(many) for u in p.carts] == many.carts
