"""Progress of long commands: periodic lines in a log, a bar redrawn in place on a terminal."""

from __future__ import annotations

import io

import pytest

from rushorder.progress import Progress, duration


class Clock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_off_a_terminal_a_line_at_each_stage_every_interval_and_at_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    with Progress("rebuild", stream=out, terminal=False, every_s=5, clock=clock) as progress:
        progress.stage("rows into redis", total=20, unit="rows")
        for _ in range(20):
            clock.now += 0.5
            progress.advance()
    assert lines(out) == [
        "rebuild: rows into redis: 0/20 rows (0%)",
        "rebuild: rows into redis: 10/20 rows (50%), 2/s, ETA 5.0s",
        "rebuild: rows into redis: 20/20 rows (100%), 2/s",
        "rebuild: rows into redis: 20/20 rows (100%), 2/s; done in 10.0s",
    ]


def test_a_stage_without_a_total_counts_and_the_next_stage_starts_from_zero() -> None:
    clock, out = Clock(), io.StringIO()
    with Progress("audit", stream=out, terminal=False, every_s=5, clock=clock) as progress:
        progress.stage("reading redis")
        clock.now += 1
        progress.stage("comparing", total=4, unit="values")
        for _ in range(3):
            clock.now += 1
            progress.advance()
    assert lines(out) == ["audit: reading redis", "audit: comparing: 0/4 values (0%)",
                          "audit: comparing: 3/4 values (75%), 1/s; done in 4.0s"]


def test_advancing_formats_nothing_until_a_line_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, out = Clock(), io.StringIO()
    formatted: list[float] = []
    text = Progress._text

    def counted(self: Progress, now: float, final: bool = False) -> str:
        formatted.append(now)
        return text(self, now, final)

    monkeypatch.setattr(Progress, "_text", counted)
    progress = Progress("job", stream=out, terminal=False, every_s=5, clock=clock)
    progress.stage("items", total=100_000)
    for _ in range(100_000):
        clock.now += 2**-14  # 6.1 s in all (exact in binary): one line due, at 5 s
        progress.advance()
    assert len(formatted) == 2 and len(lines(out)) == 2


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_the_line_ended_at_the_end() -> None:
    clock, out = Clock(), io.StringIO()
    with Progress("rebuild", stream=out, terminal=True, every_s=0.25, clock=clock) as progress:
        progress.stage("rows", total=8, unit="rows")
        for _ in range(8):
            clock.now += 0.125
            progress.advance()
    written = out.getvalue()
    draws = written.split("\r")[1:]
    assert written.startswith("\r") and written.endswith("\n") and written.count("\n") == 1
    assert draws[0] == "rebuild: rows [------------------------]: 0/8 rows (0%)"
    assert draws[2].startswith("rebuild: rows [############------------]: 4/8 rows (50%), "
                               "8/s, ETA 0.5s")
    assert draws[-1] == ("rebuild: rows [########################]: 8/8 rows (100%), 8/s; "
                         "done in 1.0s\n")
    assert len(draws) == 6  # the start, every 0.25 s, the end; not one per item


def test_a_shorter_redraw_blanks_what_the_longer_one_left() -> None:
    out = io.StringIO()
    progress = Progress("audit", stream=out, terminal=True, clock=Clock())
    progress.stage("comparing redis with postgres", total=10, unit="values")
    long = len(out.getvalue()) - 1
    progress.stage("ledgers")
    assert out.getvalue().rsplit("\r", 1)[1] == "audit: ledgers".ljust(long)


def test_a_failed_job_ends_the_line_without_saying_done() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress("rebuild", stream=out, terminal=True,
                                               clock=Clock()) as progress:
        progress.stage("rows", total=3)
        raise RuntimeError("Postgres went away")
    assert "done" not in out.getvalue() and out.getvalue().endswith("\n")


@pytest.mark.parametrize(("seconds", "shown"), [(4.25, "4.2s"), (75, "1:15"), (3725, "1:02:05")])
def test_durations_read_as_a_clock(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
