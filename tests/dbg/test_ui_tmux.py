"""trio-am-dbg driven in tmux with real machines reporting to it (scenarios-tools.md A).

Each test starts a fresh debugger in a 120x40 pane and the FX fixture program, presses
keys by tmux name and asserts on the screen text.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_am.dbg import load

from .tmux import Fx, Tmux, free_port, have_tmux

pytestmark = pytest.mark.skipif(
    not have_tmux(), reason="tmux is not installed (.ci/run installs it from Debian)"
)


class Dbg:
    def __init__(self, tmp: Path, *args: str, port: int | None = None, listen: bool = True):
        self.port = port or free_port()
        self.tmp = tmp
        cmd = [sys.executable, "-m", "trio_am.dbg"]
        if listen:
            cmd += ["-l", f"127.0.0.1:{self.port}"]
        cmd += ["-d", str(tmp), *args]
        self.tmux = Tmux(cmd)
        self.fxs: list[Fx] = []

    def fx(self, *args: str, wait: bool = True, **env: str) -> Fx:
        fx = Fx(self.port, *args, env=env or None)
        self.fxs.append(fx)
        if wait:
            fx.wait_done()
        return fx

    def close(self) -> None:
        for fx in self.fxs:
            fx.stop()
        self.tmux.close()


@pytest.fixture
def dbg(tmp_path: Path) -> Iterator[Dbg]:
    d = Dbg(tmp_path)
    d.tmux.wait_for("Listening for connections on")
    yield d
    d.close()


def fx8(d: Dbg) -> None:
    """Run FX and wait until the debugger shows its last tx (scenario 2)."""
    d.fx()
    d.tmux.wait_for("Tail | tx: 8", " Transition 7 / 7 (8 / 8) ")


# --------------------------------------------------------------------------- scenarios
def test_01_empty_start(dbg: Dbg) -> None:
    scr = dbg.tmux.wait_for(f"Listening for connections on 127.0.0.1:{dbg.port}")
    for label in ("tail", "help", "canceled"):
        assert label in scr


def test_02_03_step_back_over_hidden_and_canceled(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.arrows("Left")
    t.wait_for("Paused | tx: 7 | Time: +1 | remove: Baz", " Transition 6 / 7 (7 / 8) ")
    t.arrows("Left")
    scr = t.wait_for("tx: 5", "canceled", " Transition 5 / 7 (5 / 8) ")
    foo = next(line for line in scr.splitlines() if " Foo " in line and "|" in line)
    assert "|2" in foo
    assert "tx: 6" not in scr


def test_05_tail_toggle(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.arrows("Left")
    t.wait_for("Paused | tx: 7")
    t.keys("M-v")
    t.wait_for("Tail | tx: 8")


def test_07_step_back_wraps_to_previous_tx(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Home")
    t.wait_for("tx: 0" if False else "Initial machine schema")
    for _ in range(4):
        t.arrows("Right")
    t.wait_for("Paused | tx: 4 | Time: +2 | add: Baz")
    t.keys("M-j")
    scr = t.wait_for("tx: 3")
    # tx 4 (add Baz) has 4 steps: called, relation, deactivate, activate
    assert " Next mutation step 4 / 4 " in scr


def test_09_fast_jump_without_selection(tmp_path: Path) -> None:
    d = Dbg(tmp_path)
    try:
        d.tmux.wait_for("Listening for connections on")
        d.fx("--extra", "120")
        t = d.tmux
        t.wait_for("tx: 128")
        t.keys("End")
        t.wait_for(" Transition 127 / 127 ")
        t.keys("M-h")
        scr = t.wait_for("Paused")
        line = next(x for x in scr.splitlines() if " Transition " in x)
        p = int(line.split(" Transition ")[1].split(" / ")[0])
        assert p <= 77
    finally:
        d.close()


def test_11_help(dbg: Dbg) -> None:
    t = dbg.tmux
    t.keys("?")
    scr = t.wait_for("Keystrokes", "ctrl+q")
    assert "tail" in scr
    t.keys("Escape")
    t.wait_gone("Keystrokes")


def test_13_canceled_filter(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    # toolbars: row 1, then row 2 (log, canceled, ...), canceled, press
    t.keys("M-f", "Down", "Right", "Enter", gap=0.1)
    t.wait_for(" Transition 6 / 6 (8 / 8) ")
    t.keys("Escape")
    time.sleep(0.3)  # a lone Escape, not alt+Left
    seen = []
    for _ in range(7):
        t.arrows("Left")
        scr = t.screen()
        seen.append(scr)
        assert "tx: 5 " not in scr
    assert any("tx: 4 " in s for s in seen)


def test_15_log_content(dbg: Dbg) -> None:
    fx8(dbg)
    scr = dbg.tmux.wait_for("+Start", "+Foo", "-Foo", "[cance]", " Log:changes ")
    assert "Log:changes (t9)" in scr


def test_17_reader(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-o")
    t.wait_for(" Reader ", "Source", "Queue", "current q", "length", "Executed (1)")


def test_19_parent_and_child(dbg: Dbg) -> None:
    dbg.fx("--child")
    t = dbg.tmux
    scr = t.wait_for("fx-a", "- fx-b", " Machines:2 ")
    lines = scr.splitlines()
    ia = next(i for i, x in enumerate(lines) if "fx-a " in x and "fx-b" not in x)
    ib = next(i for i, x in enumerate(lines) if "- fx-b" in x)
    assert ib > ia
    t.keys("Escape", "Down", "Enter", gap=0.3)
    scr = t.wait_for("mach://fx-b")
    assert "#child ... #fixture #env:test" in scr


def test_21_disconnect_and_filter(dbg: Dbg) -> None:
    fx = dbg.fx()
    t = dbg.tmux
    t.wait_for("Tail | tx: 8")
    assert fx.stop() == 0
    t.wait_for("fx-a")
    t.keys("M-f", "Down", gap=0.1)
    t.keys(*["Right"] * 7, gap=0.1)  # log canceled queued auto empty health group disconn
    t.keys("Enter")
    scr = t.wait_for("[X] disconn")
    panel = [x for x in scr.splitlines() if x.startswith("║") or x.startswith("│")]
    assert not any("fx-a R" in x or "fx-a S" in x for x in panel)


def test_23_remove_client(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Escape", "BSpace", gap=0.3)
    scr = t.wait_for("Listening for connections on")
    assert "fx-a R" not in scr


def test_25_narrow_and_resize(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.resize(80, 24)
    t.wait_gone("Machines:")
    t.wait_for(" Transition ", "tx: 8")
    t.resize(120, 40)
    t.wait_for("Machines:1", "tx: 8")


def test_27_import_and_url(dbg: Dbg, tmp_path: Path) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-s")
    t.wait_for("Export to a file", "Filename", "am-dbg-dump", "Single Frame")
    t.keys("Enter")
    dump = tmp_path / "am-dbg-dump.amdbg"
    deadline = time.monotonic() + 10
    while not dump.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dump.exists()
    rec = load(dump)
    assert len(rec.clients["fx-a"].txs) == 8
    d2 = Dbg(tmp_path, "-i", str(dump), "mach://fx-a?i=4", listen=False)
    try:
        d2.tmux.wait_for("fx-a", "Paused | tx: 4 | Time: +2 | add: Baz")
    finally:
        d2.close()
    d3 = Dbg(tmp_path, "-i", str(dump), listen=False)
    try:
        d3.tmux.wait_for("Tail | tx: 8")
    finally:
        d3.close()


def test_31_debugger_absent_then_late(tmp_path: Path) -> None:
    port = free_port()
    fx = Fx(port)
    try:
        t0 = time.monotonic()
        fx.wait_done()
        assert time.monotonic() - t0 < 10  # the machine never waited for the debugger
        d = Dbg(tmp_path, port=port)
        try:
            d.tmux.wait_for("fx-a", " Schema:7 ", "tx: 8", timeout=15)
        finally:
            d.close()
    finally:
        fx.stop()
        assert "Traceback" not in fx.stderr


def test_33_malformed_input(dbg: Dbg) -> None:
    with socket.create_connection(("127.0.0.1", dbg.port)) as s:
        s.sendall(os.urandom(1024))
    with socket.create_connection(("127.0.0.1", dbg.port)) as s:
        s.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
    fx8(dbg)
    dbg.tmux.wait_for("fx-a R|8")


def test_49_quit_prints_summary(dbg: Dbg) -> None:
    fx8(dbg)
    dbg.tmux.keys("C-q")
    scr = dbg.tmux.wait_for("Clients: 1", "Transitions: 8", "Memory:")
    assert "Traceback" not in scr


def test_sigterm_quits(dbg: Dbg) -> None:
    fx8(dbg)
    out = dbg.tmux._tmux("list-panes", "-t", dbg.tmux.name, "-F", "#{pane_pid}")
    os.kill(int(out.split()[0]), signal.SIGTERM)
    dbg.tmux.wait_for("Clients: 1", "Transitions: 8")


def test_step_forward_marks_tree(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Home")
    t.wait_for("Initial machine schema")
    t.arrows("Right", 2)
    t.wait_for("tx: 2 ")
    t.keys("M-k", "M-k")
    scr = t.wait_for(" Next mutation step 2 / 5 ", "Next | tx: 3")
    # step 2 of add Bar: the relation Bar add Foo
    assert "Bar add Foo" in scr
