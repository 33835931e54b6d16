"""What the data platform gets of an event, how events are cut into requests to it, and
what its answers mean."""

from __future__ import annotations

import msgspec
import pytest

from engine.outbox.events import OrderPaid
from tests.workers.catalog_events import AT, option_order
from workers.forwarder import delivery_of
from workers.platform_http import MAX_BYTES, Item, Platform, Request


def items(n: int, size: int = 100) -> list[Item]:
    """``n`` items whose bodies are JSON objects of ``size`` bytes."""
    pad = size - len(b'{"event_id":"00000:paid","pad":""}')
    return [Item(f"1-{i}", f"{i:05}:paid", msgspec.json.encode(
        {"event_id": f"{i:05}:paid", "pad": "x" * pad})) for i in range(n)]


def carried(requests: list[Request]) -> list[str]:
    """The event ids the requests' bodies carry, in order."""
    return [e["event_id"] for r in requests for e in msgspec.json.decode(r.body)]


def test_a_batch_request_carries_at_most_the_batch_size_and_500_events() -> None:
    events = items(1_201)
    requests = Platform("http://p/", batch=500).requests(events)
    assert [len(r.items) for r in requests] == [500, 500, 201]
    assert carried(requests) == [i.event_id for i in events]
    assert {r.url for r in requests} == {"http://p/events/batch"}
    assert [len(r.items) for r in Platform("http://p", batch=7).requests(events[:20])] == [
        7, 7, 6]
    with pytest.raises(ValueError, match="1..500"):
        Platform("http://p", batch=501)


def test_a_batch_request_body_stays_within_1_mib_and_a_larger_event_goes_alone() -> None:
    events = items(500, size=5_000)
    requests = Platform("http://p").requests(events)
    assert len(requests) == 3
    assert all(len(r.body) <= MAX_BYTES for r in requests)
    assert len(requests[0].body) > MAX_BYTES - 5_001  # full, not split early
    assert carried(requests) == [i.event_id for i in events]

    huge = items(3, size=MAX_BYTES + 1)
    assert [len(r.items) for r in Platform("http://p").requests(huge)] == [1, 1, 1]


def test_single_mode_makes_one_post_per_event_with_its_own_body() -> None:
    events = items(3)
    requests = Platform("http://p", mode="single").requests(events)
    assert [(r.url, r.body) for r in requests] == [("http://p/events", i.body) for i in events]


def test_answers_mean_retry_refused_or_taken_with_the_rejected_events() -> None:
    platform, events = Platform("http://p"), items(3)
    request = platform.requests(events)[0]
    for status in (500, 502, 503, 408, 429):
        assert platform.outcome(request, status, b"busy").retry == f"HTTP {status}: busy"
    for status in (400, 404, 413):
        outcome = platform.outcome(request, status, b"no")
        assert (outcome.retry, outcome.refused) == (None, f"HTTP {status}: no")
    answer = msgspec.json.encode({"accepted": 1, "duplicates": 0, "rejected": [
        {"event_id": events[0].event_id, "error": "bad order"},
        {"event_id": None, "index": 2, "error": "bad json"}]})
    outcome = platform.outcome(request, 200, answer)
    assert outcome.taken
    assert outcome.rejected == {events[0].event_id: "bad order", events[2].event_id: "bad json"}
    assert platform.outcome(request, 202, b"").rejected == {}  # a 2xx says: all taken


def test_the_platform_gets_each_lines_option_and_null_for_a_plain_product() -> None:
    event = OrderPaid(at=AT, event_id="5:paid", order=option_order("5"), balance_after=0,
                      history=None)
    found = delivery_of(msgspec.json.encode(event))
    assert found is not None and found[0] == "5:paid"
    lines = msgspec.json.decode(found[1])["order"]["items"]
    assert [(line["option_id"], line["option_name"]) for line in lines] == [
        (10, "260"), (11, "270"), (None, None)]
