"""The small teaching examples: fan-out/fan-in, a DAG, pipes, a file workflow.

Each example runs in a subprocess (``sys.executable``, like ``python examples/NAME.py``)
and must exit 0, write nothing to stderr and print the key lines of ``EXPECTED`` in this
order (other lines may come in between; a line starting with ``re:`` is a regular
expression matched against a whole line). Three of them run on Trio's ``MockClock``, so
their whole output is the same on every run, which a test checks too.

Then some in-process tests load the example modules and check the facts they teach with
other inputs: the DAG's relations schedule any DAG in dependency order (Hypothesis), the
fan-in auto state is blocked while any job is pending, the negated pipe keeps its target
the opposite of its source, and the file workflow's outcomes match what is on disk.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_am as am
from tests.test_examples import assert_lines_in_order

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: How long one example may take; they take well under a second (the margin covers a
#: loaded machine). Only a hang makes this fail.
TIMEOUT = 60.0

EXPECTED: dict[str, list[str]] = {
    "fan_out_in": [
        # the add relation: Batch activates every job state in one transition
        "t=0.00 fan-out: (Start:1 Batch:1 AskAcme:1 AskBolt:1 AskCargo:1 AskDyn:1)",
        "t=0.05 quote from Bolt: 96.03 (Quote tick 1)",
        "t=0.12 quote from Acme: 102.95 (Quote tick 3)",
        "t=0.30 quote from Cargo: 116.04 (Quote tick 5)",
        # the deadline ends the slow job's state...
        "t=0.50 deadline: giving up on ['AskDyn']",
        # ...which unblocks the auto state AllIn, in the same call
        "t=0.50 AllIn: 3 of 4 quotes, best: Bolt 96.03",
        "after the fan-in: (Start:1 Batch:1 Quote:5 AllIn:1)",
        # and Trio cancelled the request forked for it
        "  Dyn: request cancelled after 0.50 s (AskDyn ended)",
        "job ticks: AskAcme:2 AskBolt:2 AskCargo:2 AskDyn:2",
        "Quote tick 5: 3 replies",
        "t=0.50 fan-out: (Start:1 Batch:3 AskAcme:3 AskBolt:3 AskCargo:3 AskDyn:3)",
        "t=0.55 quote from Bolt: 104.63 (Quote tick 7)",
        # removing Batch ends every job that requires it
        "  Acme: request cancelled after 0.05 s (AskAcme ended)",
        "  Cargo: request cancelled after 0.05 s (AskCargo ended)",
        "  Dyn: request cancelled after 0.05 s (AskDyn ended)",
        "job ticks: AskAcme:4 AskBolt:4 AskCargo:4 AskDyn:4",
        "final: (Start:1) [Batch:4 AskAcme:4 AskBolt:4 AskCargo:4 AskDyn:4 Quote:8 AllIn:2 "
        "Exception:0]",
    ],
    "dag": [
        "t=0.00 start Fetch",
        "t=0.10 done  Fetch",
        # independent steps start together, in table order (after)
        "t=0.10 start Deps",
        "t=0.10 start Audit",
        "t=0.40 done  Deps",
        "t=0.40 start Compile",
        "t=0.40 start Docs",
        "t=0.80 done  Compile",
        "t=0.80 start Test",
        "t=0.80   (Coverage on, implied by Test)",
        # the failure becomes Exception, then a retry state with backoff
        "t=1.05 Test failed on attempt 1 -> retry in 0.10 s",
        "t=1.05   (Coverage off: it requires Test)",
        "t=1.15 start Test (attempt 2)",
        "t=1.40 done  Test",
        # Package waits for its last dependency, the slow Audit
        "t=1.60 done  Audit",
        "t=1.60 start Package",
        "t=1.65 Done: every step finished",
        "run order: Fetch, Deps, Audit, Compile, Docs, Test, Test#2, Package",
        "final: (Run:1 FetchDone:1 DepsDone:1 AuditDone:1 CompileDone:1 DocsDone:1 TestDone:1 "
        "PackageDone:1 Done:1)",
        "step ticks: Fetch:2 Deps:2 Audit:2 Compile:2 Docs:2 Test:4 Package:2",
        "errors: 1",
    ],
    "pipes_demo": [
        # pipe-not sets its target at once: Cooling is off, so Quiet is on
        "  [dashboard ] [state] +Quiet",
        # bind_ready with a rename, then a second hop, all in one call
        "  [sensor    ] [state] +Start +Ready",
        "  [controller] [state] +SensorReady",
        "  [dashboard ] [state] +SensorOnline",
        # pipe_add passes the args and the source
        "  [controller] [state] +Sample (temp=24.5)",
        "    controller: sample 24.5 C, from sensor",
        "  Reading tick 3, Sample tick 3",
        # bind + pipe-not
        "  [sensor    ] [state] +Hot",
        "  [controller] [state] +Cooling",
        "  [dashboard ] [state] +FanOn",
        "  [dashboard ] [state] -Quiet",
        "  dashboard  (SensorOnline:1 FanOn:1)",
        "  [dashboard ] [state] +Quiet",
        "  dashboard  (SensorOnline:1 Quiet:3)",
        # bind_err, then pipe_add of the error state
        "  [controller] [state] +Exception +ErrSensor",
        "    dashboard: ALARM OSError('probe disconnected'), from controller",
        "  controller.err: OSError('probe disconnected')",
        # disposal: the pipes into the controller are detached, the ones out of it unbound
        "  sensor's handler bindings: 4",
        "  controller disposed: True",
        "  sensor's handler bindings: []",
        "  [sensor    ] [state] +Hot",
        "  sensor     (Start:1 Ready:1 Reading:3 Hot:3 Exception:1)",
        "  dashboard  (SensorOnline:1 Quiet:3 Alarm:1)",
    ],
    "file_workflow": [
        "6 input files, 3 at a time, up to 3 failed tries each",
        "== batch 1: flaky storage ==",
        "t=0.058 bravo.txt: Reading failed: read timed out (failed try 1) -> retry in 0.10 s",
        "t=0.235 bravo.txt: Reading failed: read timed out (failed try 2) -> retry in 0.20 s",
        "t=0.261 charlie.txt: done, 155 bytes written",
        "t=0.502 bravo.txt: Reading failed: read timed out -> giving up after 3 failed tries",
        "t=0.859 foxtrot.txt: done, 164 bytes written",
        "-- summary of batch 1: (Start:1 Finished:1)",
        "  bravo.txt    FAILED      3 failed tries   last error: TransientError('read timed out')",
        "  foxtrot.txt  done        2 failed tries",
        "  done: 5, FAILED: 1",
        "  output files: ['alpha.txt', 'charlie.txt', 'delta.txt', 'echo.txt', 'foxtrot.txt']; "
        "partial files: []",
        "== batch 2: the output disk takes only 500 bytes ==",
        "t=0.222 bravo.txt: FATAL in Writing: [Errno 28] No space left on device: 'bravo.txt'",
        "t=0.222 batch: fatal error, Processing ends -> cancelling the rest",
        "-- summary of batch 2: (Start:1 ErrFatal:1 Exception:1)",
        "  bravo.txt    FATAL       1 failed try     OSError(28, 'No space left on device')",
        # in-flight work was cancelled, in whatever stage it was (a retry timer too)
        "  delta.txt    cancelled   1 failed try     while Backoff",
        "  echo.txt     cancelled   0 failed tries   while Writing",
        "  foxtrot.txt  not started 0 failed tries",
        "  done: 2, FATAL: 1, cancelled: 2, not started: 1",
        "  output files: ['alpha.txt', 'charlie.txt']; partial files: []",
    ],
}

#: Examples that run on a virtual clock: their whole output never varies.
VIRTUAL_CLOCK = ["fan_out_in", "dag", "file_workflow"]


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example; ``subprocess.run`` kills it if the timeout expires (no orphans)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=ROOT,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr


@functools.cache
def default_run(name: str) -> subprocess.CompletedProcess[str]:
    """The run without options, shared by the two tests below."""
    return run_example(name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name: str) -> None:
    proc = default_run(name)
    assert_ok(proc)
    assert_lines_in_order(proc.stdout, EXPECTED[name])


@pytest.mark.parametrize("name", VIRTUAL_CLOCK)
def test_output_is_deterministic(name: str) -> None:
    first, second = default_run(name), run_example(name)
    assert_ok(first)
    assert first.stdout == second.stdout


def test_fan_out_in_on_the_real_clock() -> None:
    """Without the MockClock the same facts hold; only the times may drift."""
    proc = run_example("fan_out_in", "--real-clock")
    assert_ok(proc)
    assert_lines_in_order(
        proc.stdout,
        [
            r"re:t=0\.\d\d deadline: giving up on \['AskDyn'\]",
            r"re:t=0\.\d\d AllIn: 3 of 4 quotes, best: Bolt 96\.03",
            r"re:  Dyn: request cancelled after 0\.\d\d s \(AskDyn ended\)",
            "job ticks: AskAcme:2 AskBolt:2 AskCargo:2 AskDyn:2",
            "job ticks: AskAcme:4 AskBolt:4 AskCargo:4 AskDyn:4",
        ],
    )


def test_dag_gives_up_and_cancels_the_steps_in_flight() -> None:
    proc = run_example("dag", "--fail", "Deps=3")
    assert_ok(proc)
    assert_lines_in_order(
        proc.stdout,
        [
            "t=0.40 Deps failed on attempt 1 -> retry in 0.10 s",
            "t=0.80 Deps failed on attempt 2 -> retry in 0.20 s",
            "t=1.30 Deps failed on attempt 3 -> giving up",
            "t=1.30 Failed: Deps failed on attempt 3; Run removed",
            # Audit was running beside Deps: it required Run, so Trio cancelled it
            "t=1.30 Audit: cancelled (its state ended)",
            "run order: Fetch, Deps, Audit, Deps#2, Deps#3",
            "final: (FetchDone:1 Failed:1 Exception:5)",
        ],
    )
    assert "start Compile" not in proc.stdout


def test_file_workflow_with_one_try() -> None:
    """``--max-tries 1`` gives up at the first failure; another seed, other failures."""
    proc = run_example("file_workflow", "--max-tries", "1", "--seed", "3")
    assert_ok(proc)
    assert "up to 1 failed tries each" in proc.stdout
    assert "(failed try" not in proc.stdout  # no retries at all
    assert re.search(r"giving up after 1 failed tries", proc.stdout)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("dag", ["--fail", "Nope=1"], "expected STEP=N with STEP one of"),
        ("dag", ["--fail", "Test=-1"], "expected STEP=N"),
        ("file_workflow", ["--max-tries", "0"], "must be from 1 to 10, not 0"),
        ("file_workflow", ["--seed", "1.5"], "invalid int value"),
        ("fan_out_in", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_options_exit_2_without_a_traceback(name: str, args: list[str], message: str) -> None:
    proc = run_example(name, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


# --- in-process tests ------------------------------------------------------------------------


def load(name: str) -> ModuleType:
    """Import ``examples/NAME.py`` as the module ``examples_NAME``."""
    mod_name = f"examples_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def virtual_run(fn: Any, *args: Any) -> Any:
    """``trio.run`` on an autojumping MockClock, like the examples do by default; what
    the example prints is thrown away."""
    with contextlib.redirect_stdout(io.StringIO()):
        return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@st.composite
def dags(draw: st.DrawFn) -> tuple[dict[str, tuple[float, list[str]]], dict[str, int]]:
    """A random step table in topological order, and how often each step fails."""
    n = draw(st.integers(1, 7))
    names = [f"S{i}" for i in range(n)]
    steps: dict[str, tuple[float, list[str]]] = {}
    for i, name in enumerate(names):
        deps = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        steps[name] = (draw(st.sampled_from([0.01, 0.02, 0.05, 0.1])), deps)
    fails = draw(st.dictionaries(st.sampled_from(names), st.integers(0, 2)))
    return steps, fails


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_dag_runs_any_dag_in_dependency_order(
    dag_and_fails: tuple[dict[str, tuple[float, list[str]]], dict[str, int]],
) -> None:
    dag = load("dag")
    steps, fails = dag_and_fails
    build = virtual_run(dag.main, steps, fails)
    done_at: dict[str, int] = {}
    for i, (kind, step) in enumerate(build.events):
        if kind == "start":
            # a step starts only after every dependency is done
            assert all(dep in done_at for dep in steps[step][1]), (step, build.events)
        else:
            assert step not in done_at  # done once
            done_at[step] = i
    assert set(done_at) == set(steps)  # fewer failures than MAX_ATTEMPTS: all done
    # every failed attempt was retried: one start per attempt
    for step in steps:
        starts = [s for k, s in build.events if k == "start" and s == step]
        assert len(starts) == fails.get(step, 0) + 1
    assert "Done:1" in build.final


def test_dag_schema_rejects_a_step_listed_before_its_dependency() -> None:
    dag = load("dag")
    with pytest.raises(ValueError, match="depends on B, which is not listed before it"):
        dag.make_schema({"A": (0.1, ["B"]), "B": (0.1, [])})


def test_fan_in_is_blocked_while_any_job_is_pending() -> None:
    fan = load("fan_out_in")
    mach = am.Machine(fan.make_schema(["One", "Two", "Three"]))
    mach.add(["Start", "Batch"])
    assert mach.is_all(["AskOne", "AskTwo", "AskThree"])  # the add relation
    assert mach.not1("AllIn")
    mach.remove(["AskOne", "AskThree"])
    assert mach.not1("AllIn")
    mach.remove1("AskTwo")  # the last one: the auto state comes by itself
    assert mach.is1("AllIn")
    mach.remove1("Batch")
    assert mach.string() == "(Start:1)"


@given(st.lists(st.booleans(), max_size=20), st.booleans())
def test_bind_not_keeps_the_target_opposite(flips: list[bool], start_on: bool) -> None:
    demo = load("pipes_demo")
    source = am.Machine({"Cooling": {}}, id="src")
    target = am.Machine({"Quiet": {}}, id="dst")
    if start_on:
        source.add1("Cooling")
    binding = demo.bind_not(source, target, "Cooling", "Quiet")
    assert target.is1("Quiet") is not source.is1("Cooling")
    for on in flips:
        if on:
            source.add1("Cooling")
        else:
            source.remove1("Cooling")
        assert target.is1("Quiet") is not source.is1("Cooling")
    binding.detach()
    assert source.handler_ids() == []
    before = target.time()
    source.toggle1("Cooling")
    assert target.time() == before  # detached: nothing is piped


def test_bind_not_checks_the_names() -> None:
    demo = load("pipes_demo")
    source = am.Machine({"Cooling": {}})
    target = am.Machine({"Quiet": {}})
    with pytest.raises(am.StateUnknownError):
        demo.bind_not(source, target, "Cooling", "Loud")
    assert source.handler_ids() == [] and target.string() == "()"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), max_tries=st.integers(1, 4))
def test_file_workflow_outcomes_match_the_disk(
    tmp_path_factory: pytest.TempPathFactory, seed: int, max_tries: int
) -> None:
    fw = load("file_workflow")
    root = tmp_path_factory.mktemp("files")
    inputs = fw.make_inputs(root / "in", seed)
    out = root / "out"
    outcomes = virtual_run(fw.run, 1, "t", inputs, out, fw.Storage(), seed, max_tries)
    assert set(outcomes) == {p.name for p in inputs}
    for path in inputs:
        res = outcomes[path.name]
        if res.status == "done":
            assert (out / path.name).read_text() == fw.transform(path.read_text())
            assert res.failures < max_tries
        else:
            assert res.status == "FAILED"
            assert res.failures == max_tries
            assert not (out / path.name).exists()
    assert not list(out.glob("*.part"))


def test_file_workflow_fatal_error_cancels_and_leaves_no_partial_file(tmp_path: Path) -> None:
    fw = load("file_workflow")
    inputs = fw.make_inputs(tmp_path / "in", fw.SEED)
    out = tmp_path / "out"
    # a quota of 1 byte: the first write that gets that far is fatal
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        outcomes = trio.run(
            fw.run,
            2,
            "t",
            inputs,
            out,
            fw.Storage(1),
            fw.SEED,
            3,
            clock=trio.testing.MockClock(autojump_threshold=0),
        )
    statuses = [res.status for res in outcomes.values()]
    assert statuses.count("FATAL") == 1
    assert "done" not in statuses
    assert "cancelled" in statuses
    assert "-- summary of batch 2: (Start:1 ErrFatal:1 Exception:1)" in text.getvalue()
    assert list(out.iterdir()) == []


def test_storage_quota_refuses_whole_writes(tmp_path: Path) -> None:
    fw = load("file_workflow")

    class NeverFail:
        def random(self) -> float:
            return 1.0

    storage = fw.Storage(quota=10)
    storage.write(tmp_path / "a", "12345678", NeverFail())
    with pytest.raises(OSError, match="No space left on device") as info:
        storage.write(tmp_path / "b", "123", NeverFail())
    assert info.value.errno == 28
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
