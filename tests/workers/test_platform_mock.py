"""The mock data platform as a process: the single and batch endpoints, limits, rules, modes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.workers.drain_support import Platform


def event(event_id: str, **extra: object) -> dict[str, Any]:
    """A body of the contract's shape."""
    return {"event_id": event_id, "type": "order.paid", "occurred_at": "2026-12-01T10:00:00Z",
            "order": {"id": event_id.split(":")[0], **extra}}


@pytest.fixture
def http(platform: Platform) -> Iterator[httpx.Client]:
    """One keep-alive client on the platform: every request below shares its connection."""
    with httpx.Client(base_url=platform.url, timeout=10) as client:
        yield client


def test_the_mock_platform_dedupes_by_event_id_and_lists_in_arrival_order(
    platform: Platform, http: httpx.Client,
) -> None:
    for event_id in ("2:paid", "1:paid", "2:paid"):
        http.post("/events", json={
            "event_id": event_id, "type": "order.paid", "occurred_at": "x", "order": {}})
    listed = platform.events()
    assert [i["event_id"] for i in listed["items"]] == ["2:paid", "1:paid"]
    assert (listed["received"], listed["duplicates"]) == (3, 1)
    platform.control("fail")
    assert http.post("/events", json={"event_id": "3"}).status_code == 500
    http.post("/reset").raise_for_status()
    assert platform.events()["items"] == []


def test_a_batch_keeps_each_event_once_and_counts_duplicates_within_and_across_batches(
    platform: Platform, http: httpx.Client,
) -> None:
    first = http.post("/events/batch", json=[event("1:paid"), event("2:paid"), event("1:paid")])
    assert (first.status_code, first.json()) == (
        200, {"accepted": 2, "duplicates": 1, "rejected": []})
    second = http.post("/events/batch", json=[event("2:paid"), event("3:paid")])
    assert second.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert http.post("/events", json=event("3:paid")).status_code == 200  # one store for both

    listed = platform.events()  # unchanged: items as sent, in arrival order, and the counters
    assert listed["items"] == [event("1:paid"), event("2:paid"), event("3:paid")]
    assert (listed["received"], listed["duplicates"]) == (6, 3)
    assert platform.stats()["requests"] == {"single": 1, "batch": 2, "failed": 0}


def test_a_batch_of_more_than_500_events_or_1_mib_is_refused_whole_with_413(
    platform: Platform, http: httpx.Client,
) -> None:
    too_many = http.post("/events/batch", json=[event(f"{n}:paid") for n in range(501)])
    assert too_many.status_code == 413
    assert "501 events in one batch; at most 500" in too_many.json()["detail"]
    too_big = http.post("/events/batch", json=[event("big:paid", note="x" * (1 << 20))])
    assert too_big.status_code == 413
    assert "at most 1048576" in too_big.json()["detail"]
    assert platform.stats()["kept"] == 0

    just_fits = [event(f"{n}:paid", note="x" * 1900) for n in range(500)]  # ~1 MiB - 10 KiB
    answer = http.post("/events/batch", json=just_fits)  # same connection: still usable
    assert (answer.status_code, answer.json()["accepted"]) == (200, 500)


def test_a_batch_that_is_not_a_json_array_is_a_400(http: httpx.Client) -> None:
    for body in (b'{"event_id": "1:paid"}', b"[{", b"not json"):
        answer = http.post("/events/batch", content=body)
        assert answer.status_code == 400
        assert "JSON array of events" in answer.json()["detail"]


def test_a_batch_answers_each_rejected_event_by_id_and_position_and_keeps_the_rest(
    platform: Platform, http: httpx.Client,
) -> None:
    platform.control("ok", reject_pattern=r"^7")
    answer = http.post("/events/batch", json=[
        event("7:paid"), event("8:paid"), {"no_event_id": 1}, 5, event("70:cancelled")]).json()
    assert (answer["accepted"], answer["duplicates"]) == (1, 0)
    assert [(r["event_id"], r["index"]) for r in answer["rejected"]] == [
        ("7:paid", 0), (None, 2), (None, 3), ("70:cancelled", 4)]
    assert "matches '^7'" in answer["rejected"][0]["error"]
    assert "bad event" in answer["rejected"][1]["error"]
    assert platform.event_ids() == ["8:paid"]
    assert http.post("/events", json=event("71:paid")).status_code == 422
    assert platform.stats()["rejected"] == 5


def test_every_nth_new_event_is_refused_and_stays_refused_when_sent_again(
    platform: Platform, http: httpx.Client,
) -> None:
    platform.control("ok", reject_every=3)
    batch = [event(f"{n}:paid") for n in range(6)]
    first = http.post("/events/batch", json=batch).json()
    assert [r["index"] for r in first["rejected"]] == [2, 5]
    again = http.post("/events/batch", json=batch).json()
    assert (again["accepted"], again["duplicates"]) == (0, 4)
    assert [r["index"] for r in again["rejected"]] == [2, 5]


def test_failing_and_throttling_platforms_keep_nothing_from_either_endpoint(
    platform: Platform, http: httpx.Client,
) -> None:
    platform.control("fail")
    assert http.post("/events/batch", json=[event("1:paid")]).status_code == 500
    platform.control("throttle")
    throttled = http.post("/events/batch", json=[event("1:paid")])
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "1")
    assert http.post("/events", json=event("1:paid")).status_code == 429
    assert platform.stats()["kept"] == 0
    assert platform.stats()["requests"]["failed"] == 3
    assert http.post("/control", json={"mode": "ok", "reject_pattern": "("}).status_code == 400


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"^(a|aa)*$", "a*", "a{2,}", r"\d", "x" * 65])
def test_a_reject_pattern_that_could_backtrack_is_refused_with_400(
    platform: Platform, http: httpx.Client, pattern: str,
) -> None:
    refused = http.post("/control", json={"mode": "ok", "reject_pattern": pattern})
    assert refused.status_code == 400 and "linear" in refused.json()["detail"]
    crafted = "a" * 50_000 + "!"  # what made (a+)+$ search for ever
    assert http.post("/events", json=event(crafted)).status_code == 202  # no rule was set
    assert platform.stats()["rejected"] == 0


def test_a_linear_pattern_still_refuses_what_it_matches_in_a_crafted_id(
    platform: Platform, http: httpx.Client,
) -> None:
    platform.control("ok", reject_pattern=r"b[a-z]a.!$")
    crafted = "a" * 500_000 + "!"  # searched at every position, each tried at most 5 chars
    assert http.post("/events", json=event(crafted)).status_code == 202
    assert http.post("/events", json=event("7:bzaa!")).status_code == 422


@pytest.mark.parametrize("path", ["/events", "/events/batch", "/control"])
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_a_400_and_the_connection_stays_open(
    platform: Platform, http: httpx.Client, path: str, depth: int,
) -> None:
    nested = b"[" * depth + b"]" * depth
    for body in (nested, b'{"event_id": "1:paid", "order": ' + nested + b"}",
                 b'[{"event_id": "1:paid", "order": ' + nested + b"}]"):
        answer = http.post(path, content=body)  # on the fixture's one keep-alive connection
        assert answer.status_code == 400, answer.text
    assert http.get("/health").status_code == 200
    assert platform.stats()["kept"] == 0
