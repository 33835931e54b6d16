"""The records of committed batches that settle.lua works through: what a batch touched,
cut into parts small enough that no settle.lua call holds Redis for long."""

from __future__ import annotations

from engine.outbox.settle import CHUNK, Record, chunks


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
