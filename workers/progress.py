"""What a long worker chore reports its progress to (``rushorder replay`` hands it a
``rushorder.progress.Progress``, the console's replay one that writes to Redis). A protocol,
so the workers need not import the top layer's display."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """A job in stages, each counting its items."""

    def stage(self, name: str, total: int | None = None, unit: str = "items") -> None:
        """The next part of the job starts (``total`` items, if known)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more items done."""


class Quiet:
    """Progress that nobody watches."""

    def stage(self, name: str, total: int | None = None, unit: str = "items") -> None:
        """Nothing to show."""

    def advance(self, n: int = 1) -> None:
        """Nothing to show."""
