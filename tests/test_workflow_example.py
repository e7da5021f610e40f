"""examples/workflow: an orchestrator and 4 worker processes over aRPC (arpc.md F7,
scenarios-arpc.md 59).

Each test runs ``python examples/workflow/orchestrator.py`` as a real process tree
(orchestrator -> browser1, browser2 -> browser3, browser4) and reads its output as it
comes. The time limits only guard against hangs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.support.proc_lines import ProcLines
from trio_am.dbg.model import Model
from trio_am.dbg.server import serve_dbg

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATOR = ROOT / "examples" / "workflow" / "orchestrator.py"
HEX3 = (
    "798084a3599272353ed165b1ef2717344a89246ca3756680059b7b1340053007"
    "b7af049916f67388bea5cdc007dbf7368522d808bd5a6ad68b57612b5fc804b2"
)
HEX4 = (
    "7f8db768c3ff3bd492c68f48006f6e5d77981501df604eb77b9577e87acd5ee8"
    "6772cb00b6f621ce9209d1e74c770d95e2b78d658c0e0f399989bb98421f6e95"
)
PID_LINE = re.compile(r"\[(browser\d)\] ready on \S+ \(pid (\d+)\)")
LIMIT = 60.0


class Run(ProcLines):
    """A running orchestrator: its output so far, and waits on it."""

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for line in self.lines if (m := PID_LINE.search(line))}

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if re.fullmatch(pattern, line))


@asynccontextmanager
async def orchestrator(**env: str) -> AsyncIterator[Run]:
    full_env = {**os.environ, "EXIT_ON_COMPLETED": "1", **env}
    for name in ("AM_DBG_ADDR", "AM_OTEL_TRACE", "FAULT_PLAN", "SUCCESS_RATE", "SEED"):
        if name not in env:
            full_env.pop(name, None)
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(ORCHESTRATOR)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        cwd=ROOT,
    )
    run = Run(proc)
    try:
        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.pump)
                nursery.start_soon(run.drain_stderr)
                yield run
                await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await assert_gone(run.pids().values())


async def assert_gone(pids: object) -> None:
    """Every worker process has exited (they watch their parent's pipe)."""
    with trio.fail_after(10):
        for pid in pids:  # type: ignore[attr-defined]
            while Path(f"/proc/{pid}").exists() and not _zombie(pid):
                await trio.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def assert_final_hashes(run: Run) -> None:
    assert f"payload 3: {HEX3}" in run.lines, run.text()
    assert f"payload 4: {HEX4}" in run.lines, run.text()


async def test_59a_all_succeed() -> None:
    async with orchestrator(SUCCESS_RATE="1000") as run:
        pass
    assert run.proc.returncode == 0, run.text()
    assert "completed" in run.lines
    assert run.count(r"retry .*") == 0 and run.count(r"restart .*") == 0, run.text()
    assert run.count(r"round \d+") == 1
    assert_final_hashes(run)
    assert sorted(run.pids()) == ["browser1", "browser2", "browser3", "browser4"]
    assert "Traceback" not in run.stderr.decode()


async def test_59b_fault_plan_gives_one_retry_and_one_restart() -> None:
    async with orchestrator(FAULT_PLAN="browser1:fail,browser3:corrupt") as run:
        pass
    assert run.proc.returncode == 0, run.text()
    assert run.count(r"retry browser1") == 1, run.text()
    assert run.count(r"retry .*") == 1
    assert run.count(r"restart \d+") == 1
    assert run.lines.index("restart 1") < run.lines.index("completed")
    # browser3's corrupted result is what the first round delivered
    assert "browser3 delivered 636f727275707465..." in run.lines  # b"corrupted"
    assert_final_hashes(run)


@pytest.mark.parametrize("seed", [int.from_bytes(os.urandom(2), "big") for _ in range(2)])
async def test_random_faults_always_finish_right(seed: int) -> None:
    async with orchestrator(SUCCESS_RATE="5", HASH_ITERATIONS="1000", SEED=str(seed)) as run:
        pass
    assert run.proc.returncode == 0, f"seed {seed}\n" + run.text()
    assert_final_hashes(run)
    # every restart was a wrong final result, and each led to a new round
    assert run.count(r"round \d+") == run.count(r"restart \d+") + 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SUCCESS_RATE": "many"}, "SUCCESS_RATE='many': not an integer"),
        ({"SUCCESS_RATE": "2"}, "SUCCESS_RATE=2: must be at least 3"),
        ({"FAULT_PLAN": "browser9:fail"}, "FAULT_PLAN entry 'browser9:fail'"),
        ({"EXIT_ON_COMPLETED": "yes"}, "EXIT_ON_COMPLETED='yes'"),
    ],
)
async def test_bad_settings_exit_2(env: dict[str, str], message: str) -> None:
    async with orchestrator(**env) as run:
        pass
    assert run.proc.returncode == 2
    err = run.stderr.decode()
    assert message in err and "Traceback" not in err
    assert run.pids() == {}


async def test_a_dead_worker_stops_the_workflow_with_exit_1() -> None:
    async with orchestrator(HASH_ITERATIONS=str(10**9)) as run:
        await run.wait_line(r"^round 1$")
        pids = run.pids()
        os.kill(pids["browser3"], signal.SIGKILL)
    assert run.proc.returncode == 1, run.text()
    err = run.stderr.decode()
    assert "browser2: browser3 exited with code -9 while the workflow needed it" in err
    assert "orchestrator: browser2 exited with code 1 while the workflow needed it" in err
    assert "Traceback" not in err
    assert "completed" not in run.lines


async def test_killed_orchestrator_leaves_no_worker_behind() -> None:
    async with orchestrator(HASH_ITERATIONS=str(10**9)) as run:
        await run.wait_line(r"^round 1$")
        assert len(run.pids()) == 4
        run.proc.kill()
    # the context manager's exit asserted that all four workers are gone
    assert run.proc.returncode == -signal.SIGKILL


async def test_all_five_machines_report_to_the_debugger() -> None:
    model = Model()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_dbg, model, "127.0.0.1", 0)
        async with orchestrator(SUCCESS_RATE="1000", AM_DBG_ADDR=f"{host}:{port}") as run:
            pass
        assert run.proc.returncode == 0, run.text()
        nursery.cancel_scope.cancel()
    for mach_id in ("orchestrator", "browser1", "browser2", "browser3", "browser4"):
        assert mach_id in model.clients, sorted(model.clients)
        assert model.clients[mach_id].txs, f"{mach_id} reported no transitions"
    names = model.clients["orchestrator"].names
    assert "WorkDelivered" in names and "Browser3Ready" in names


async def test_sigint_stops_a_finished_workflow_cleanly() -> None:
    async with orchestrator(EXIT_ON_COMPLETED="0", SUCCESS_RATE="1000") as run:
        await run.wait_line(r"^serving the finished workflow")
        run.proc.send_signal(signal.SIGINT)
    assert run.proc.returncode == 0, run.text()
    assert "stopping" in run.lines
    assert "Traceback" not in run.stderr.decode()
