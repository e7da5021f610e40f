"""Helpers of the history tests: a clock moved by hand."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from trio_am import history

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock tests move by hand: ``clock()`` is the human time of every record made
    until the next ``advance``."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def at(self, seconds: float) -> datetime:
        """The time ``seconds`` after the start."""
        return T0 + timedelta(seconds=seconds)


Factory = Callable[..., history.BaseMemory]
