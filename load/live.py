"""`make load`'s live line: requests/s, orders/s, refusals by code and 5xx while locust runs.

Read from the API's own ``/metrics`` (every API process of the server summed) every
:data:`EVERY_S` seconds, so it shows what the service answered, not what locust thinks it
sent. On a terminal the line is redrawn in place; in a log (a pipe, CI) a line is written
every :data:`LINE_EVERY_S` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from typing import NamedTuple, TextIO

from prometheus_client.parser import text_string_to_metric_families

from rushorder.progress import StatusLine

EVERY_S = 1.0
LINE_EVERY_S = 5.0


class Sample(NamedTuple):
    """The API's counters at one moment."""

    at: float
    requests: float
    errors: float  # 5xx answers
    placed: float
    refused: dict[str, float]  # by code


def parse(text: str, at: float) -> Sample:
    """The counters of a Prometheus text exposition."""
    requests = errors = placed = 0.0
    refused: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "rushorder_http_requests_total":
                requests += s.value
                errors += s.value if s.labels.get("status", "").startswith("5") else 0
            elif s.name == "rushorder_orders_placed_total":
                placed += s.value
            elif s.name == "rushorder_orders_rejected_total":
                refused[s.labels["code"]] = refused.get(s.labels["code"], 0) + s.value
    return Sample(at, requests, errors, placed, refused)


def scrape(host: str) -> Sample | None:
    """The API's counters now, or None if it did not answer."""
    try:
        with urllib.request.urlopen(f"{host}/metrics", timeout=2) as answer:
            return parse(answer.read().decode(), time.monotonic())
    except (OSError, ValueError):
        return None


def describe(before: Sample, after: Sample, started: float) -> str:
    """One line of rates between two samples."""
    dt = max(after.at - before.at, 1e-6)
    refused = {code: (n - before.refused.get(code, 0)) / dt for code, n in after.refused.items()}
    shown = ", ".join(f"{code} {rate:,.0f}" for code, rate in sorted(refused.items()) if rate)
    return (f"load {after.at - started:4.0f}s: {(after.requests - before.requests) / dt:,.0f} "
            f"requests/s, {(after.placed - before.placed) / dt:,.0f} orders/s, refused "
            f"{sum(refused.values()):,.0f}/s{f' ({shown})' if shown else ''}, 5xx "
            f"{(after.errors - before.errors) / dt:,.0f}/s")


class LiveLine(threading.Thread):
    """Shows the API's rates until :meth:`finish` (a daemon: it never holds the run up)."""

    def __init__(self, host: str, stream: TextIO | None = None, terminal: bool | None = None,
                 every_s: float = EVERY_S, line_every_s: float = LINE_EVERY_S) -> None:
        super().__init__(name="live-line", daemon=True)
        self.host = host
        self.line = StatusLine(sys.stdout if stream is None else stream, terminal)
        self.terminal = self.line.terminal
        self.every_s, self.line_every_s = every_s, line_every_s
        self.finished = threading.Event()

    def run(self) -> None:
        """Sample, show, repeat."""
        started = time.monotonic()
        before = scrape(self.host)
        written = started
        while not self.finished.wait(self.every_s):
            after = scrape(self.host)
            if before is not None and after is not None:
                due = self.terminal or after.at - written >= self.line_every_s
                if due:
                    self.line.show(describe(before, after, started))
                    written = after.at
                    before = after
            else:
                before = after

    def finish(self) -> None:
        """Stop, and end the terminal's line."""
        self.finished.set()
        self.join(5)
        if self.line.drawn:
            self.line.end()
