"""Scenarios C of scenarios-tools.md: ``trio-am repl`` against the RP server (43 and 45
as written; 44, not in the public half, is read from what 45 says happened after it:
``add rp-1 Foo`` works, ``add rp-1 Bar`` alone is canceled).

RP (tests/support/rp.py) serves ``rp-1`` and ``rp-2`` (``Start``, ``Foo``, ``Bar
{require Foo}``, ``Start`` added at boot) with ``AM_REPL_ADDR=1`` and ``AM_REPL_DIR``;
the REPL runs as its own process (``python -m trio_am.cli.repl`` until the ``trio-am``
dispatcher exists), in CLI mode or, for the prompt, in tmux.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dbg.tmux import Tmux, have_tmux
from tests.support.rp import (
    ROOT,
    WAIT,
    clean_env,
    read_line_until,
    repl_cmd,
    repl_process,
    rp_server,
    run_repl,
)


def test_43_list_and_status(tmp_path: Path) -> None:
    with rp_server(tmp_path) as urls:
        assert len(urls) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["rp-1-repl.addr", "rp-2-repl.addr"]
        res = run_repl("-d", str(tmp_path), "--", "list")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines() == [
            "=> 1. rp-1 t1",
            "=>    CS: (Start:1)",
            "=> 2. rp-2 t1",
            "=>    CS: (Start:1)",
        ]
        assert res.stderr == ""
        res = run_repl("-d", str(tmp_path), "--", "status")
        assert res.returncode == 0
        assert res.stdout.splitlines()[0].split() == ["=>", "Connected:", "2"]
        assert res.stdout.splitlines()[3].split() == ["=>", "Total:", "2"]
    # the server removed its files on exit
    assert list(tmp_path.iterdir()) == []


def test_44_45_mutations_waiting_and_groups(tmp_path: Path) -> None:
    d = str(tmp_path)
    with rp_server(tmp_path):
        # 44: Bar requires Foo, so adding it alone is canceled (exit 1); Foo works
        res = run_repl("-d", d, "--", "add", "rp-1", "Bar")
        assert (res.returncode, res.stdout) == (1, "=> Canceled\n")
        res = run_repl("-d", d, "--", "add", "rp-1", "Foo")
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
        res = run_repl("-d", d, "--", "mach", "rp-1")
        assert res.stdout == "=> (Start:1 Foo:1)\n"
        # 45: a waiter in the background sees the removal made by another process
        with repl_process("-d", d, "--log-level", "2", "--", "when-not", "rp-1", "Foo") as bg:
            read_line_until(bg, "stderr", "+CmdRunning")  # it is waiting now
            res = run_repl("-d", d, "--", "remove", "rp-1", "Foo")
            assert res.returncode == 0, res.stderr
            out, _err = bg.communicate(timeout=WAIT)
            assert bg.returncode == 0
            assert out == "=> 2\n"
        res = run_repl("-d", d, "--", "group-add", "-p", "rp-", "Foo")
        assert res.returncode == 0, res.stderr
        assert res.stdout.splitlines()[0].split() == ["=>", "Executed:", "2"]
        res = run_repl("-d", d, "--", "list")
        assert "=>    CS: (Start:1 Foo:3)" in res.stdout
        assert "=>    CS: (Start:1 Foo:1)" in res.stdout


def at_prompt(tm: Tmux) -> None:
    """Wait until the last line on screen is the prompt."""
    deadline = time.monotonic() + WAIT
    while True:
        lines = [x for x in tm.screen().splitlines() if x.strip()]
        if lines and lines[-1] == "trio-am 2/2>":
            return
        assert time.monotonic() < deadline, tm.screen()
        time.sleep(0.1)  # polling the screen, as tests/dbg/tmux.py does


#: Runs a command and writes its exit status to a file: tmux does not always notice
#: that a pane's program ended (even a bare ``input()`` ended by Ctrl+D), so the test
#: does not rely on "Pane is dead". The wrapper survives Ctrl+C with a handler (an
#: ignored SIGINT would be inherited by the REPL; a handler is reset by exec).
STATUS_WRAPPER = (
    "import signal, subprocess, sys; signal.signal(signal.SIGINT, lambda *a: None); "
    "rc = subprocess.call(sys.argv[2:]); open(sys.argv[1], 'w').write(str(rc))"
)


def exit_status(path: Path) -> int:
    """Wait for the wrapper's status file and return the status."""
    deadline = time.monotonic() + WAIT
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"no exit status in {path}"
        time.sleep(0.05)  # polling for a file another process writes
    return int(path.read_text())


@pytest.mark.skipif(not have_tmux(), reason="tmux is not installed")
def test_45_prompt_in_tmux(tmp_path: Path) -> None:
    addrs = tmp_path / "addrs"
    hist = tmp_path / "history"
    with rp_server(addrs):
        status = tmp_path / "status"
        cmd = repl_cmd("-d", str(addrs), "--history", str(hist))
        tm = Tmux([sys.executable, "-c", STATUS_WRAPPER, str(status), *cmd], width=120, height=40)
        try:
            tm.wait_for("trio-am 2/2>")
            # Tab completes the command (with its space), then the machine id
            tm.type("ma")
            tm.keys("Tab")
            tm.wait_for("trio-am 2/2> mach")
            tm.type("rp-2")
            tm.keys("Enter")
            tm.wait_for("=> (Start:1")
            # Ctrl+C cancels a waiting command and the prompt comes back
            tm.type("when rp-1 Bar")
            tm.keys("Enter")
            tm.wait_for("=> waiting for rp-1 Bar (Ctrl+C cancels)")
            tm.keys("C-c")
            tm.wait_for("err> canceled")
            tm.type("mach rp-1 --all")
            tm.keys("Enter")
            tm.wait_for("=> (Start:1) [Foo:0 Bar:0 Exception:0]")
            # an error does not end the REPL
            tm.type("mach rp-9")
            tm.keys("Enter")
            tm.wait_for("err> unknown machine 'rp-9' (known: rp-1, rp-2)")
            at_prompt(tm)  # (a Ctrl+D typed before readline reads would be lost)
            tm.keys("C-d")
            assert exit_status(status) == 0
        finally:
            tm.close()
    history = hist.read_text().splitlines()
    assert history[-3:] == ["when rp-1 Bar", "mach rp-1 --all", "mach rp-9"]


def test_sigint_interrupts_a_cli_wait(tmp_path: Path) -> None:
    with (
        rp_server(tmp_path),
        repl_process("-d", str(tmp_path), "--log-level", "2", "--", "when", "rp-1", "Bar") as bg,
    ):
        read_line_until(bg, "stderr", "+CmdRunning")
        bg.send_signal(signal.SIGINT)
        out, err = bg.communicate(timeout=WAIT)
        assert bg.returncode == 130
        assert out == ""
        assert err.splitlines()[-1] == "err> interrupted"


def test_commands_from_a_pipe(tmp_path: Path) -> None:
    with rp_server(tmp_path):
        script = "add rp-1 Foo\nmach rp-1\nadd rp-1 Nope\nmach rp-2\n"
        res = run_repl("-d", str(tmp_path), stdin=script)
        assert res.returncode == 1  # one command failed
        assert res.stdout == "=> (Start:1 Foo:1)\n=> (Start:1)\n"
        assert res.stderr.startswith("err> unknown state Nope in rp-1")
        res = run_repl("-d", str(tmp_path), stdin="remove rp-1 Foo\nexit\nadd rp-1 Nope\n")
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
        # output into a closed pipe (like `| head -0`): an error line, no traceback
        r, w = os.pipe()
        os.close(r)
        try:
            res = subprocess.run(
                repl_cmd("-d", str(tmp_path), "--", "list"),
                cwd=ROOT,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=w,
                stderr=subprocess.PIPE,
                text=True,
                timeout=WAIT,
            )
        finally:
            os.close(w)
        assert res.returncode == 1
        assert res.stderr == "err> the output was closed (broken pipe)\n"
