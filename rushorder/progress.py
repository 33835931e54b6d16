"""How far a long command has got, on stderr: on a terminal a bar redrawn in place (count,
rate, ETA), otherwise a line when each stage starts, every few seconds, and at the end.

Cheap enough to call once per item: :meth:`Progress.advance` adds to a count and reads
the clock; a line is formatted only when one is due. ``rushorder rebuild`` and
``rushorder audit`` use it; it knows nothing of them (a leaf: stdlib only).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

LINE_EVERY_S = 5.0  # not a terminal (a log, a pipe): a line this often
REDRAW_EVERY_S = 0.2  # a terminal: the bar this often
BAR_WIDTH = 24


def duration(seconds: float) -> str:
    """``4.2s`` below a minute, else ``m:ss`` or ``h:mm:ss``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class StatusLine:
    """One line of status on a stream: redrawn in place on a terminal, else written anew."""

    def __init__(self, stream: TextIO, terminal: bool | None = None) -> None:
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self.drawn = 0  # width of the line last drawn, to blank what a shorter one leaves

    def show(self, text: str) -> None:
        """Redraw the line on a terminal, else write a line."""
        if self.terminal:
            self.stream.write(f"\r{text}{' ' * max(0, self.drawn - len(text))}")
            self.drawn = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """End the terminal's line (a log's lines are ended already)."""
        if self.terminal:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = 0


class Progress:
    """The progress of one job in stages, each counting its items (of a total, if known).

    Use it as a context manager: leaving the block prints the final state (``done in``)
    and ends the terminal's line; an exception leaves no ``done``.
    """

    def __init__(self, job: str, *, stream: TextIO | None = None, terminal: bool | None = None,
                 every_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 ) -> None:
        self.job = job
        self.line = StatusLine(sys.stderr if stream is None else stream, terminal)
        self.terminal = self.line.terminal
        default = REDRAW_EVERY_S if self.terminal else LINE_EVERY_S
        self.every_s = default if every_s is None else every_s
        self.clock = clock
        self.started = self._stage_started = clock()
        self.name, self.unit, self.done = "", "items", 0
        self.total: int | None = None
        self._due = self.started + self.every_s

    def stage(self, name: str, total: int | None = None, unit: str = "items") -> None:
        """Start the next part of the job, counting from 0 (of ``total`` items if known)."""
        self.name, self.total, self.unit, self.done = name, total, unit, 0
        self._stage_started = now = self.clock()
        self._show(self._text(now), now)

    def advance(self, n: int = 1) -> None:
        """``n`` more items done; shows the progress only if a line (or redraw) is due."""
        self.done += n
        now = self.clock()
        if now >= self._due:
            self._show(self._text(now), now)

    def close(self, failed: bool = False) -> None:
        """The final state with the job's whole time; on a terminal, the line ended."""
        if not failed:
            now = self.clock()
            self._show(f"{self._text(now, final=True)}; done in {duration(now - self.started)}",
                       now)
        if self.line.drawn or not failed:
            self.line.end()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(failed=kind is not None)

    # -- rendering --------------------------------------------------------------------------

    def _text(self, now: float, final: bool = False) -> str:
        """``job: stage: 1,200/5,000 rows (24%), 400/s, ETA 9.5s`` (the parts that apply)."""
        head = f"{self.job}: {self.name}" if self.name else self.job
        parts = [self._count()] if self.total is not None or self.done else []
        elapsed = now - self._stage_started
        if self.done and elapsed > 0:
            rate = self.done / elapsed
            parts.append(f"{rate:,.0f}/s")
            if self.total and not final and self.done < self.total:
                parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        if self.terminal and self.total:
            head += f" [{self._bar()}]"
        return f"{head}: {', '.join(parts)}" if parts else head

    def _count(self) -> str:
        if self.total is None:
            return f"{self.done:,} {self.unit}"
        percent = 100 * self.done / self.total if self.total else 100.0
        return f"{self.done:,}/{self.total:,} {self.unit} ({percent:.0f}%)"

    def _bar(self) -> str:
        assert self.total
        filled = min(BAR_WIDTH, BAR_WIDTH * self.done // self.total)
        return "#" * filled + "-" * (BAR_WIDTH - filled)

    def _show(self, text: str, now: float) -> None:
        """Write a line, or on a terminal redraw the bar over the last one."""
        self.line.show(text)
        self._due = now + self.every_s
