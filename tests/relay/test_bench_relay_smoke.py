"""Smoke test of the relay benchmark (``benchmarks/bench_relay.py``, ``nox -s bench``
case 11): every mode completes its round trips with the mirror equal to the source;
nothing here looks at timings."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import trio

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench_relay(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_relay")


@pytest.mark.parametrize("mode", ["direct-tcp", "direct-ws", "relay", "relay-inproc"])
async def test_round_trips_in_every_mode(bench_relay: ModuleType, mode: str) -> None:
    with trio.fail_after(60):
        samples = await bench_relay.samples(50, mode, warmup=5)
    assert len(samples) == 50 and all(s > 0 for s in samples)
