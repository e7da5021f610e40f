"""The runnable examples in examples/ run, finish by themselves and print what they teach.

Each example runs in a subprocess (``sys.executable``), like ``python examples/NAME.py``.
The expected lines below are the key facts each example demonstrates; they must appear
in stdout in this order (other lines may come in between). A line starting with ``re:``
is a regular expression matched against a whole line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: How long one example may take (the examples themselves take well under 2 s; the
#: margin covers a slow or loaded machine).
TIME_LIMIT = 20.0

EXPECTED: dict[str, list[str]] = {
    "tree_state_source/flights": [
        "flights schema: 10 flights x 5 gates",
        "states: 148 = 10 x (9 + 5) + 8 (Exception, ErrNetwork, ErrHandlerTimeout, Start, "
        "Ready, Healthcheck, Heartbeat, ErrOnClient)",
        "  Flight1Departed: also removes Flight1GoToGate",
        "  Flight1GoToGate: requires Flight1Outbound",
    ],
    "basic": [
        "states: ['PowerOn', 'WaterLow', 'Brewing', 'Light', 'Descale', 'Exception']",
        "start: () [PowerOn:0 WaterLow:0 Brewing:0 Light:0 Descale:0 Exception:0]",
        # require: canceled by the resolver, no handler ran
        "add1 Brewing: Result.CANCELED  () [PowerOn:0 WaterLow:0 Brewing:0 Light:0 Descale:0 Exception:0]",
        # the Brewing_enter veto
        "  Brewing_enter: veto, the water is low",
        "add1 Brewing: Result.CANCELED  (PowerOn:1 WaterLow:1) [Brewing:0 Light:0 Descale:0 Exception:0]",
        "  Brewing_enter: veto, 9 cups do not fit",
        "  Brewing_state: brewing 2 cup(s)",
        "  any_state: add ['Brewing'] -> (PowerOn:1 Brewing:1)",
        "add1 Brewing cups=2: Result.EXECUTED  (PowerOn:1 Brewing:1) [WaterLow:2 Light:0 Descale:0 Exception:0]",
        "toggle1 Light: Result.EXECUTED  (PowerOn:1 Brewing:1 Light:1) [WaterLow:2 Descale:0 Exception:0]",
        "toggle1 Light: Result.EXECUTED  (PowerOn:1 Brewing:1) [WaterLow:2 Light:2 Descale:0 Exception:0]",
        "  Brewing_end: done brewing",
        "set PowerOn Light: Result.EXECUTED  (PowerOn:1 Light:3) [WaterLow:2 Brewing:2 Descale:0 Exception:0]",
        "tick Brewing: 2 -> active? False",
        "time: 1 2 2 3 0 0",
        "after re-adding PowerOn, is_time(before): True",
        "after brewing once more, is_time(before): False | Brewing tick: 4 | activations: 2",
        "  Exception_state: err=ValueError('sensor offline')",
        "add_err: Result.EXECUTED  (PowerOn:1 Light:3 Exception:1) [WaterLow:2 Brewing:4 Descale:0]",
        "is_err: True | mach.err: ValueError('sensor offline')",
        "  Exception_state: err=RuntimeError('descaler cartridge missing')",
        "add1 Descale: Result.CANCELED  (PowerOn:1 Light:3 Exception:3) [WaterLow:2 Brewing:4 Descale:2]",
        "final: (PowerOn:1 Light:3 Exception:3) [WaterLow:2 Brewing:4 Descale:2]",
    ],
    "relations": [
        # the auto state Disconnected follows Start in its own transition
        "add1 Start: Result.EXECUTED",
        "  handlers: Start_enter, any_enter, Start_state, any_state, "
        "Disconnected_enter, any_enter, Disconnected_state, any_state",
        "  active:   (Start:1 Disconnected:1)",
        # self-excluding group: exits come before enters
        "  handlers: Disconnected_exit, Connecting_enter, any_enter, Disconnected_end, "
        "Connecting_state, any_state",
        "  active:   (Start:1 Connecting:1)",
        "  active:   (Start:1 Connected:1)",
        # a veto stops at the vetoing handler
        "add1 LoggedIn: Result.CANCELED",
        "  handlers: LoggedIn_enter",
        # add + after: Presence before History; then Ready (auto)
        "  target of add ['LoggedIn']: ['Start', 'Connected', 'LoggedIn', 'Presence', 'History']",
        "  handlers: LoggedIn_enter, Presence_enter, History_enter, any_enter, LoggedIn_state, "
        "Presence_state, History_state, any_state, Ready_enter, any_enter, Ready_state, any_state",
        "  active:   (Start:1 Ready:1 Connected:1 LoggedIn:1 Presence:1 History:1)",
        # multi: the second add re-activates (self handler runs), tick +2
        "  handlers: Message_enter, Message_Message, any_enter, Message_state, any_state",
        "  Message tick: 3",
        # remove relation
        "  handlers: Presence_exit, DoNotDisturb_enter, Message_Message, any_enter, "
        "Presence_end, DoNotDisturb_state, any_state",
        # canceled mutations
        "add1 Presence (blocked by active DoNotDisturb): Result.CANCELED",
        "  handlers: (none)",
        "add Connecting Connected (exclude each other): Result.CANCELED",
        "  handlers: (none)",
        "  DoNotDisturb_Message: veto, not urgent",
        "add1 Message (state-state veto): Result.CANCELED",
        "  handlers: Message_enter, Message_Message, DoNotDisturb_Message",
        "add1 Message urgent: Result.EXECUTED",
        # require: dependants leave with Connected, then Disconnected (auto) returns
        "  target of remove ['Connected']: ['DoNotDisturb', 'Start']",
        "  handlers: Connected_exit, LoggedIn_exit, Message_exit, History_exit, Ready_exit, "
        "any_enter, Connected_end, LoggedIn_end, Message_end, History_end, Ready_end, "
        "any_state, Disconnected_enter, any_enter, Disconnected_state, any_state",
        "  active:   (Start:1 Disconnected:3 DoNotDisturb:1)",
        "re:final: \\(Start:1 Disconnected:3 DoNotDisturb:1\\) \\[.*Message:6\\]",
    ],
    "subscriptions": [
        "when1(Ready) resolved; Ready active now: False",
        "when1(Connected) resolved at once (already active)",
        "when_args(Job, id=3) resolved, Job tick 5",
        "when_time(Job >= 7) resolved",
        "when_query(7 jobs) resolved: 7 jobs",
        "wait_for_all resolved",
        "wait_for_all(Done) failed: [worker] wait_for_all: timed out after 0.05 s waiting on when",
        "wait_for_err_all failed: [worker] Exception: disk full (err=OSError('disk full'))",
        "when_not1(Connected) resolved: (Start:1)",
        "move_on_after: gave up waiting for Done: True",
        "re:pending waiter: MachineDisposedError: .*disposed.*",
    ],
    "fork_cancel": [
        "  Download_state: forking the download of https://example.invalid/big.iso",
        "3 chunks received: (Download:1 Chunk:5); removing Download",
        "  download of https://example.invalid/big.iso: cancelled after 3 chunks",
        "after the remove: ()",
        "  Exception_state: ValueError('checksum mismatch')",
        "mach.err = ValueError('checksum mismatch'); the nursery is fine: "
        "(Verify:1 Exception:1) [Download:2 Chunk:6 Session:0]",
        "left `with ctx:` when Session ended; ctx.expired=True",
        "entering it again: cancelled at once: True",
        "a new activation gets a new context: True",
        "after open_machine: disposed=True",
    ],
    "demo": [
        "  [pipeline] [state] +Start +Fetching",
        "  [monitor ] [state] +Downloading",
        "    fetch b.txt: connection reset",
        "  [pipeline] [state] +Exception +ErrNetwork (err=reset while fetch...)",
        "  [monitor ] [state] +Exception +ErrPipeline (err=reset while fetch...)",
        "    monitor ALERT: reset while fetching b.txt",
        "  [pipeline] [state] +CoolDown -Fetching",
        # the fork of the ended Fetching activation is cancelled by Trio
        "    fetch c.txt: cancelled (Fetching ended)",
        "  [pipeline] [state] -CoolDown",
        "  [pipeline] [state] +Fetching",
        "re:    retry: Fetching accepted after \\d+ attempt\\(s\\)",
        "  [pipeline] [state] -Exception -ErrNetwork",
        "  [pipeline] [state] +Fetched -Fetching",
        "  [pipeline] [auto_] +Processing",
        "  [monitor ] [state] +Busy",
        "    processed c.txt",
        "  [pipeline] [state] +Processed -Processing",
        "  [pipeline] [auto_] +Ready",
        "re:    Ready: 3 files, \\d+ bytes",
        "  [monitor ] [state] +PipelineReady",
        "== final state ==",
        "re:pipeline: \\(Start:1 Ready:1 Fetched:1 Processed:1\\) \\[.*CoolDown:2\\]",
        "monitor:  (PipelineReady:1 ErrPipeline:1 Exception:1) [Downloading:4 Busy:2]",
        "last pipeline error: ConnectionResetError('reset while fetching b.txt')",
        "  [pipeline] [state] -Start -Fetched -Processed -Ready",
    ],
}


def run_example(name: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT * 3,
        cwd=ROOT,
    )
    return proc, time.monotonic() - start


def assert_lines_in_order(stdout: str, expected: list[str]) -> None:
    lines = stdout.splitlines()
    pos = 0
    for want in expected:
        for i in range(pos, len(lines)):
            line = lines[i]
            if re.fullmatch(want[3:], line) if want.startswith("re:") else line == want:
                pos = i + 1
                break
        else:
            pytest.fail(
                f"expected line not found (in order) after line {pos}:\n  {want!r}\n"
                f"--- stdout ---\n{stdout}"
            )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name: str) -> None:
    proc, elapsed = run_example(name)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stderr}"
    assert proc.stderr == "", f"{name} wrote to stderr:\n{proc.stderr}"
    assert elapsed < TIME_LIMIT, f"{name} took {elapsed:.1f} s"
    assert_lines_in_order(proc.stdout, EXPECTED[name])


def test_demo_output_is_deterministic() -> None:
    first, _ = run_example("demo")
    second, _ = run_example("demo")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


#: Examples that run as several processes; tests/test_examples_rpc.py runs them.
MULTI_PROCESS = {
    "arpc_server",
    "arpc_client",
    "cli_daemon/daemon",
    "cli_daemon/cli",
    "browser/server",  # tests/browser drives it in Chromium
    "workflow/orchestrator",  # tests/test_workflow_example.py
    "workflow/worker",
    "tree_state_source/node",  # tests/examples/test_tree.py
    "tree_state_source/run",
    "worker_pool/run",  # tests/node/test_example.py
    "worker_pool/supervisor",
    "worker_pool/client",
    "worker_pool/worker",
}

#: The pattern examples; tests/test_examples_small.py runs them and checks their output.
SMALL = {"fan_out_in", "dag", "pipes_demo", "file_workflow"}


def test_every_example_is_tested_and_documented() -> None:
    on_disk = {p.relative_to(EXAMPLES).with_suffix("").as_posix() for p in EXAMPLES.rglob("*.py")}
    # modules the processes of one example share
    on_disk -= {"cli_daemon/common", "workflow/common"}
    assert on_disk == set(EXPECTED) | MULTI_PROCESS | SMALL, (
        "add the new example to EXPECTED (and to docs/examples.md)"
    )
    doc = (ROOT / "docs" / "examples.md").read_text()
    for name in on_disk:
        assert f"examples/{name}.py" in doc, f"docs/examples.md does not mention {name}.py"
