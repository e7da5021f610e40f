"""Smoke test of the aRPC benchmark F3 (arpc.md F3, ``benchmarks/bench_rpc.py``): the
subscribe-get-process loop must be correct; nothing here looks at timings."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import trio

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench_rpc(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_rpc")


async def test_f3_loop_200_iterations(bench_rpc: ModuleType) -> None:
    with trio.fail_after(30):
        r = await bench_rpc.f3_run(200, scheme="tcp", proxied=True, seed=7)
    assert (r.errors, r.successes) == (0, 200)
    # the proxy saw the handshake apart, then one MUTATE per iteration
    assert r.handshake.frames_up == {"HELLO": 1}
    assert r.handshake.frames_down == {"WELCOME": 1}
    assert r.loop.frames_up == {"MUTATE": 200}
    assert r.loop.frames_down.get("RESULT") == 200
    assert r.loop.bytes_up > 0 and r.loop.bytes_down > 0


async def test_f3_worker_counts_a_wrong_op_as_an_error(bench_rpc: ModuleType) -> None:
    """The worker really checks ``op`` against its value (so 0 errors above means the
    client read the right value from its mirror every time)."""
    import trio_am as am

    async with am.open_machine(bench_rpc.worker_schema(), id="worker") as mach:
        worker = bench_rpc.Worker(mach, seed=3)
        mach.bind_handlers(worker)
        mach.add1("Start")
        value = worker.value
        assert mach.is1(bench_rpc.VALUES[value - 1])
        assert mach.add1("CallOp", {"op": value % 3 + 1}) == am.Result.EXECUTED
        assert (worker.errors, worker.successes) == (1, 1)
        assert mach.tick("Event") == 4
