"""Reading every outbox stream at once (engine.outbox.Outboxes): the catalog's entries
first, each stream in order, shares that follow the backlog, entries named across streams."""

from __future__ import annotations

import redis

from engine import keys, state
from engine.outbox import POSTGRES, Outboxes


def fill(r: redis.Redis, stream: str, count: int, tag: str) -> None:
    pipe = r.pipeline(transaction=False)
    for n in range(count):
        pipe.xadd(stream, {"e": f"{tag}{n}"})
    pipe.execute()


def test_reads_put_the_catalog_first_and_keep_each_streams_order(r: redis.Redis) -> None:
    layout = keys.layout(4)
    outbox = Outboxes(r, POSTGRES, "reader", layout=layout)
    outbox.create_groups()
    fill(r, layout.all[2].outbox, 5, "g2-")
    fill(r, keys.OUTBOX, 3, "cat-")
    fill(r, layout.all[0].outbox, 4, "g0-")
    got = outbox.read(100)
    assert [e.data.decode() for e in got[:3]] == ["cat-0", "cat-1", "cat-2"]
    for g, n in ((0, 4), (2, 5)):
        mine = [e.data.decode() for e in got if e.stream == layout.all[g].outbox]
        assert mine == [f"g{g}-{i}" for i in range(n)]
    assert len({e.key for e in got}) == 12  # ids repeat across streams, keys do not
    assert outbox.pending() == 12 and outbox.ack([e.key for e in got]) == 12
    assert outbox.backlog() == 0


def test_a_busy_stream_gets_what_the_quiet_ones_leave_of_a_read(r: redis.Redis) -> None:
    layout = keys.layout(4)
    outbox = Outboxes(r, POSTGRES, "reader", layout=layout)
    outbox.create_groups()
    fill(r, layout.all[1].outbox, 500, "hot-")
    fill(r, layout.all[3].outbox, 2, "cold-")
    got = outbox.read(100)
    assert 100 <= len(got) < 110  # about a read's worth, mostly the busy stream's
    assert sum(e.stream == layout.all[3].outbox for e in got) == 2
    assert outbox.backlog() == 502  # what was read is pending, not acknowledged
    outbox.ack([e.key for e in got])
    assert outbox.backlog() == 502 - len(got)


def test_an_empty_read_polls_until_its_time_is_up(r: redis.Redis) -> None:
    layout = keys.layout(2)
    state.mark(r, "tests", 2)  # each group's slot has its marker (engine/state.py)
    outbox = Outboxes(r, POSTGRES, "reader", layout=layout, poll_ms=10)
    outbox.create_groups()
    assert outbox.read(10, block_ms=50) == []
    fill(r, layout.all[1].outbox, 1, "late-")
    assert [e.data for e in outbox.read(10, block_ms=50)] == [b"late-0"]
