"""Fixtures of the history tests: a deterministic clock and a store factory that builds
either store (``Memory`` or ``SQLiteMemory``) and disposes it after the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trio_am import history

from ._support import Factory, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, tmp_path: Path, clock: FakeClock) -> Iterator[Factory]:
    """``make(mach, config, **kw)`` builds the parametrised store (clock preset)."""
    made: list[history.BaseMemory] = []

    def factory(mach: Any, config: Any, **kw: Any) -> history.BaseMemory:
        kw.setdefault("clock", clock)
        hist: history.BaseMemory
        if kind == "memory":
            hist = history.Memory(mach, config, **kw)
        else:
            path = kw.pop("path", tmp_path / f"h{len(made)}.sqlite")
            hist = history.SQLiteMemory(mach, config, path, **kw)
        made.append(hist)
        return hist

    yield factory
    for hist in made:
        hist.dispose()
