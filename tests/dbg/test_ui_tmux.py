"""trio-am-dbg driven in tmux with real machines reporting to it (scenarios-tools.md A).

Each test starts a fresh debugger in a 120x40 pane (``-l 127.0.0.1:$P -d $TMP``) and the
FX fixture program (tests/support/fx.py, env ``AM_DBG_ADDR``, ``AM_LOG=2``), presses keys
by tmux name and asserts on the screen text. Screens are polled every 100 ms against a
deadline (tests/dbg/tmux.py); the only fixed waits are the spacing between arrow presses
the debugger's move throttle (D25) needs and a pause after a lone Escape (so it is not
read as alt+the next key).

FX records (8): 1 add Start; 2 auto add Ready; 3 add Bar (+Bar +Foo); 4 add Baz (+Baz
-Foo); 5 add Foo, canceled; 6 add Healthcheck (hidden by the default health filter);
7 remove Baz; 8 add Foo.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from trio_am.dbg import load

from .tmux import KEY_GAP, ROOT, WAIT, Fx, Tmux, clean_env, free_port, have_tmux

pytestmark = pytest.mark.skipif(
    not have_tmux(), reason="tmux is not installed (.ci/run installs it from Debian)"
)

# toolbar positions (D38): row 2 = filters, row 4 = view switches
ROW2 = ("log", "canceled", "queued", "auto", "empty", "health", "group", "disconn", "checks")
ROW4 = ("help", "tail", "reader", "timelines", "wrap", "narrow", "rain", "matrix")


class Dbg:
    """A debugger in tmux plus the FX programs reporting to it."""

    def __init__(
        self,
        tmp: Path,
        *args: str,
        port: int | None = None,
        listen: bool = True,
        width: int = 120,
        height: int = 40,
    ) -> None:
        self.port = port or free_port()
        self.tmp = tmp
        cmd = [sys.executable, "-m", "trio_am.dbg"]
        cmd += ["-l", f"127.0.0.1:{self.port}" if listen else "-1"]
        cmd += ["-d", str(tmp), *args]
        self.tmux = Tmux(cmd, width=width, height=height)
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
    try:
        d.tmux.wait_for("Listening for connections on")
        yield d
    finally:
        d.close()


def fx8(d: Dbg, *args: str) -> Fx:
    """Run FX and wait until the debugger shows its last tx (scenario 2)."""
    fx = d.fx(*args)
    d.tmux.wait_for("Tail | tx: 8", " Transition 7 / 7 (8 / 8) ")
    return fx


def esc(t: Tmux) -> None:
    """A lone Escape (a key right after it would read as alt+key)."""
    t.keys("Escape")
    time.sleep(KEY_GAP)


def toolbar(t: Tmux, row: int, col: int, presses: int = 1) -> None:
    """Focus the toolbars (alt+f), go to ``row`` (1-based) and ``col``, press enter."""
    t.burst("M-f", *["Down"] * (row - 1), *["Right"] * col, *["Enter"] * presses)


def tree_line(scr: str, name: str) -> str:
    """The schema tree row of state ``name``."""
    for line in scr.splitlines():
        for cell in line.split("│") + line.split("║"):
            if cell.strip().startswith(name + " ") and "|" in cell:
                return cell
    raise AssertionError(f"no tree row for {name}:\n{scr}")


def list_pane(scr: str) -> str:
    """The client list pane's text (the first column of the main area)."""
    out = []
    for line in scr.splitlines()[2:]:
        if line[:1] in ("│", "║"):
            out.append(line[1:].split(line[0], 1)[0])
    return "\n".join(out)


# --------------------------------------------------------------------------- scenarios
def test_01_empty_start(dbg: Dbg) -> None:
    scr = dbg.tmux.wait_for(f"Listening for connections on 127.0.0.1:{dbg.port}")
    for label in ("tail", "help", "canceled"):
        assert label in scr
    assert " Machines:0 " in scr


def test_02_fx_reports(dbg: Dbg) -> None:
    fx8(dbg)
    scr = dbg.tmux.wait_for(
        "Tail | tx: 8 | Time: +1 | add: Foo",
        " Transition 7 / 7 (8 / 8) ",
        "fx-a R|8",
        " Machines:1 T:9 ",
        " Schema:7 ",
        "#fixture #env:test",
        "mach://fx-a/fx-a:8",
        " Next mutation step 0 / 0 ",
    )
    assert "|3" in tree_line(scr, "Foo")
    assert "|2" in tree_line(scr, "Baz")
    assert "Graph:t9" in scr


def test_03_step_back_over_hidden_and_canceled(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.arrows("Left")
    t.wait_for("Paused | tx: 7 | Time: +1 | remove: Baz", " Transition 6 / 7 (7 / 8) ")
    t.arrows("Left")
    scr = t.wait_for("tx: 5 ", "canceled", " Transition 5 / 7 (5 / 8) ")
    assert "|2" in tree_line(scr, "Foo")
    assert "tx: 6 " not in scr


def test_04_first_and_last(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Home")
    # the next-tx bar is drawn with the same jump: wait for all three, then check
    scr = t.wait_for(
        "Paused | Initial machine schema",
        " Transition 0 / 7 (0 / 8) ",
        "Next | tx: 1 | Time: +1 | add: Start",
    )
    assert "|0" in tree_line(scr, "Foo")
    t.keys("End")
    scr = t.wait_for("Paused | tx: 8 | Time: +1 | add: Foo", " Transition 7 / 7 (8 / 8) ")
    assert "|3" in tree_line(scr, "Foo")


def test_05_tail_toggle(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("End")
    t.wait_for("Paused | tx: 8")
    t.arrows("Left")
    t.wait_for("Paused | tx: 7")
    t.keys("M-v")
    t.wait_for("Tail | tx: 8", "[X] tail")


def test_06_step_forward(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Home")
    t.wait_for("Initial machine schema")
    t.arrows("Right", 2)
    t.wait_for("Paused | tx: 2 ", "Next | tx: 3 | Time: +2 | add: Bar")
    t.keys("M-k", "M-k", gap=0.1)
    # step 2 of add Bar: the relation Bar add Foo (status bar: the step in words)
    scr = t.wait_for(" Next mutation step 2 / 5 ", "Bar add Foo", "mach://fx-a/fx-a:2/2")
    assert "tx: 2 " in scr
    t.keys("M-k", "M-k", "M-k", gap=0.1)
    scr = t.wait_for(" Next mutation step 5 / 5 ", "activate Foo")
    assert "+" in tree_line(scr, "Foo")  # activated at this step
    t.keys("M-k")
    t.wait_for("Paused | tx: 3 ", " Next mutation step 0 / 4 ")


def test_07_step_back_wraps_to_previous_tx(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Home")
    t.wait_for("Initial machine schema")
    t.arrows("Right", 4)
    t.wait_for("Paused | tx: 4 | Time: +2 | add: Baz")
    t.keys("M-j")
    scr = t.wait_for("tx: 3 ")
    # tx 4 (add Baz) has 4 steps: called, relation, deactivate, activate
    assert " Next mutation step 4 / 4 " in scr


def test_08_jump_to_selected_state(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Tab")
    t.wait_for("╔  Schema:7 ")
    t.type("baz")  # type-to-search selects Baz (D5, D10)
    t.wait_for("Baz | idx: 4 | tick: 2")
    t.keys("End")
    t.wait_for("Paused | tx: 8")
    t.keys("M-h")
    t.wait_for("Paused | tx: 7 | Time: +1 | remove: Baz")
    t.keys("M-h")  # tx 5 (canceled add Foo) does not add, remove or call Baz
    t.wait_for("Paused | tx: 4 | Time: +2 | add: Baz")
    t.keys("M-l")
    t.wait_for("Paused | tx: 7 ")


def test_09_fast_jump_without_selection(dbg: Dbg) -> None:
    dbg.fx("--extra", "120")
    t = dbg.tmux
    t.wait_for("tx: 128")
    t.keys("End")
    t.wait_for(" Transition 127 / 127 ")
    t.keys("M-h")
    # End already shows "Paused | tx: 128": wait for the jump itself to land
    t.wait_gone(" Transition 127 / 127 ")
    line = t.line("Paused | tx: ")
    scr = t.screen()
    title = next(x for x in scr.splitlines() if " Transition " in x)
    p = int(title.split(" Transition ")[1].split(" / ")[0])
    assert p <= 77, title
    assert "tx: 128" not in line
    t.keys("M-l")
    t.wait_for(" Transition 127 / 127 ")


def test_10_play(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Home")
    t.wait_for("Paused | Initial machine schema")
    t.keys("Space")
    t.wait_for("Playing | tx: ", "[X] play")
    # one tx per 500 ms, stopping at the end (7 visible txs)
    t.wait_for("Paused | tx: 8 ", "[ ] play", timeout=15)


def test_11_help(dbg: Dbg) -> None:
    t = dbg.tmux
    t.keys("?")
    scr = t.wait_for("Keystrokes", "ctrl+q")
    assert "tail" in scr
    t.keys("Escape")
    t.wait_gone("Keystrokes")
    t.keys("?")
    t.wait_for("Keystrokes")
    t.keys("?")
    t.wait_gone("Keystrokes")


def test_12_export_dialog(dbg: Dbg, tmp_path: Path) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-s")
    t.wait_for("Export to a file", "Filename", "am-dbg-dump", "Single Frame", "Save", "Cancel")
    t.burst(*["BSpace"] * 11)
    t.type("one")
    t.wait_for("Filename: one")
    t.keys("Down", "Space", gap=0.1)
    t.wait_for("[X] Single Frame")
    t.keys("Down", "Enter", gap=0.1)
    t.wait_for("Exported to")
    t.wait_gone("Export to a file")
    rec = load(tmp_path / "one.amdbg")
    cl = rec.clients["fx-a"]
    assert len(cl.txs) == 1  # single frame: the schema and the viewed tx
    assert cl.names[:5] == ["Start", "Ready", "Foo", "Bar", "Baz"]
    # Cancel writes nothing
    t.keys("M-s")
    t.wait_for("Export to a file")
    t.keys("Escape")
    t.wait_gone("Export to a file")
    assert not (tmp_path / "am-dbg-dump.amdbg").exists()


def test_13_canceled_filter(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    toolbar(t, 2, ROW2.index("canceled"))
    t.wait_for(" Transition 6 / 6 (8 / 8) ", "[X] canceled")
    esc(t)
    seen = []
    for _ in range(7):
        t.arrows("Left")
        scr = t.screen()
        seen.append(scr)
        assert "tx: 5 " not in scr
    assert any("tx: 4 " in s for s in seen)


def test_14_auto_and_health_filters(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    toolbar(t, 2, ROW2.index("auto"))  # '*' -> 'X': all auto txs hidden
    t.wait_for("[X] auto", " Transition 6 / 6 (8 / 8) ")
    t.keys("Right", "Right", "Enter", gap=0.1)  # health: shown
    t.wait_for("[ ] health", " Transition 7 / 7 (8 / 8) ")
    t.keys("Left", "Left", "Enter", gap=0.1)  # auto: ' ' none hidden
    t.wait_for("[ ] auto", " Transition 8 / 8 ")
    esc(t)
    t.arrows("Left", 2)
    t.wait_for("Paused | tx: 6 | Time: +1 | add multi: Healthcheck")


def test_15_log_content(dbg: Dbg) -> None:
    fx8(dbg)
    scr = dbg.tmux.wait_for("+Start", "+Foo", "-Foo", "[cance]", " Log:changes ")
    assert "Log:changes (t9)" in scr
    assert "+Healthcheck" not in scr  # tx 6 is hidden (health filter)


def test_16_log_level(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    toolbar(t, 2, ROW2.index("log"))
    t.wait_for("[3] log", " Log:ops (t9) ")
    t.keys("Enter", "Enter", gap=0.1)
    t.wait_for("[5] log", " Log:everything ")
    t.keys("Enter")
    t.wait_for("[0] log")
    assert t.lacks(" Log:")  # level 0 hides the pane
    t.keys("Enter", "Enter", gap=0.1)
    t.wait_for("[2] log", " Log:changes ", "[cance] +Foo")


def test_17_reader(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-o")
    t.wait_for(" Reader ", "Source", "Queue", "current q", "length", "Executed (1)", "Foo_enter")
    t.keys("M-o")
    t.wait_gone(" Reader ")


def test_18_tree_expand_and_relations(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("Tab")
    t.wait_for("╔  Schema:7 ")
    t.type("bar")
    t.wait_for("Bar | idx: 3 | tick: 1")
    t.keys("Enter")  # expand Bar: its relation Add -> Foo
    scr = t.wait_for("  Add")
    lines = scr.splitlines()
    i = next(k for k, x in enumerate(lines) if "  Add" in x)
    assert "Foo" in lines[i + 1]
    t.keys("Down", "Down", "Enter", gap=0.1)  # enter on the target jumps to Foo (D9)
    t.wait_for("Foo | idx: 2 | tick: 3")
    t.keys("M-e")  # expand all
    scr = t.wait_for("  Require", "  Remove", "  auto")
    assert "[X] expand" in scr
    t.keys("M-e")
    t.wait_gone("  Require")


def test_19_parent_and_child(dbg: Dbg) -> None:
    dbg.fx("--child")
    t = dbg.tmux
    scr = t.wait_for("fx-a", "- fx-b", " Machines:2 ")
    lines = scr.splitlines()
    ia = next(i for i, x in enumerate(lines) if "fx-a " in x and "fx-b" not in x)
    ib = next(i for i, x in enumerate(lines) if "- fx-b" in x)
    assert ib > ia
    esc(t)
    t.keys("Down", "Enter", gap=0.3)
    scr = t.wait_for("mach://fx-b")
    assert "#child ... #fixture #env:test" in scr


def test_20_cross_client_time(dbg: Dbg) -> None:
    dbg.fx("--child")
    t = dbg.tmux
    t.wait_for("Tail | tx: 8", "- fx-b")
    t.keys("Home")
    t.wait_for("Initial machine schema")
    t.arrows("Right", 3)
    t.wait_for("Paused | tx: 3 ", "Graph:t4", "fx-a R|3+")
    esc(t)
    t.keys("Down", "Enter", gap=0.3)
    # fx-b's only tx came after fx-a's tx 3: it lands on its initial schema (D31)
    t.wait_for("mach://fx-b", "Paused | Initial machine schema", "- fx-b |0+")


def test_21_disconnect_and_filter(dbg: Dbg) -> None:
    fx = fx8(dbg)
    t = dbg.tmux
    assert fx.stop() == 0
    scr = t.wait_for("fx-a")
    assert "fx-a R|8" in list_pane(scr)
    toolbar(t, 2, ROW2.index("disconn"))
    scr = t.wait_for("[X] disconn", " Machines:")
    assert "fx-a" not in list_pane(scr)
    t.keys("Enter")
    scr = t.wait_for("[ ] disconn")
    assert "fx-a R|8" in list_pane(t.wait_for("fx-a R|8"))


def test_22_error_client(dbg: Dbg) -> None:
    dbg.fx("--error")
    t = dbg.tmux
    scr = t.wait_for("Tail | tx: 9 | ", "add multi: Exception", "fx-a ER|9")
    assert "|1" in tree_line(scr, "Exception")


def test_23_remove_client(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    esc(t)
    t.keys("BSpace")
    scr = t.wait_for("Listening for connections on", " Machines:0 ")
    assert "fx-a R" not in scr


def test_23b_remove_client_alt_d(dbg: Dbg) -> None:
    dbg.fx("--child")
    t = dbg.tmux
    t.wait_for("- fx-b", " Machines:2 ")
    t.keys("Tab")
    t.wait_for("╔  Schema:")
    t.keys("M-d")  # removes the selected client (fx-a), fx-b stays
    scr = t.wait_for(" Machines:1 ", "mach://fx-b")
    assert "fx-a" not in list_pane(scr)


def test_24_two_processes(dbg: Dbg) -> None:
    dbg.fx()
    dbg.fx("--id", "fx-x")
    t = dbg.tmux
    scr = t.wait_for(" Machines:2 T:18 ", "fx-x ")
    assert "fx-a R|8" in list_pane(scr)
    assert "mach://fx-a/fx-a:8" in scr  # the first client stays selected
    esc(t)
    t.keys("Down", "Enter", gap=0.3)
    t.wait_for("mach://fx-x/fx-x:8", "fx-x R|8", "Tail | tx: 8")


def test_25_narrow_and_resize(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.resize(80, 24)
    t.wait_gone("Machines:")
    t.wait_for(" Transition ", "tx: 8")
    t.resize(120, 40)
    t.wait_for("Machines:1", "tx: 8")


def test_25b_resize_keeps_cursor(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.arrows("Left", 2)
    t.wait_for("Paused | tx: 5 ")
    t.resize(80, 24)
    t.wait_gone("Machines:")
    t.wait_for("Paused | tx: 5 ", " Transition 5 / 7 (5 / 8) ")
    t.resize(120, 40)
    t.wait_for("Machines:1", "Paused | tx: 5 ", " Transition 5 / 7 (5 / 8) ")


def test_26_rain(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-r")
    scr = t.wait_for(" Rain ", "8 | t9", "[X] rain")
    assert " Log:" not in scr
    t.keys("M-r")
    t.wait_for(" Log:changes ", "[ ] rain")


def test_26b_view_cycle(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-m")  # tree + matrix
    t.wait_for(" Matrix:", " Schema:7 ", "[X] matrix")
    t.keys("M-m")  # tree + rain
    t.wait_for(" Rain ", " Schema:7 ")
    t.keys("M-m")  # matrix alone
    t.wait_for(" Matrix:")
    assert t.lacks(" Schema:7 ")
    t.keys("M-m")  # rain alone
    t.wait_for(" Rain ")
    t.keys("M-m")  # back to tree + log
    t.wait_for(" Log:changes ", " Schema:7 ")


def test_27_import_and_url(dbg: Dbg, tmp_path: Path) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.keys("M-s")
    t.wait_for("Export to a file", "Filename", "am-dbg-dump", "Single Frame")
    t.keys("Enter")
    t.wait_for("Exported to")
    dump = tmp_path / "am-dbg-dump.amdbg"
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


def test_27b_import_then_live_client(tmp_path: Path) -> None:
    d = Dbg(tmp_path)
    try:
        d.tmux.wait_for("Listening for connections on")
        fx8(d)
        d.tmux.keys("M-s")
        d.tmux.wait_for("Export to a file")
        d.tmux.keys("Enter")
        d.tmux.wait_for("Exported to")
    finally:
        d.close()
    d2 = Dbg(tmp_path, "-i", str(tmp_path / "am-dbg-dump.amdbg"))
    try:
        d2.tmux.wait_for("Tail | tx: 8", "fx-a R|8")
        d2.fx("--id", "fx-x")
        scr = d2.tmux.wait_for(" Machines:2 ", "fx-x ")
        assert "fx-a R|8" in list_pane(scr)  # imported clients stay
    finally:
        d2.close()


def test_27c_address_bar(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    esc(t)
    t.keys("BTab")  # list -> address bar (editable)
    t.burst(*["BSpace"] * 20)
    t.type("mach://fx-a?i=3")
    t.keys("Enter")
    t.wait_for("Paused | tx: 3 | Time: +2 | add: Bar", "mach://fx-a/fx-a:3")


def test_28_busy_port_and_bad_flags(tmp_path: Path) -> None:
    env = clean_env()
    cmd = [sys.executable, "-m", "trio_am.dbg", "-d", str(tmp_path)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [*cmd, "-l", f"127.0.0.1:{port}"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"address in use: 127.0.0.1:{port}" in proc.stdout + proc.stderr
    bad = subprocess.run(
        [*cmd, "--filter-log-level", "9"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--filter-log-level" in bad.stderr
    ver = subprocess.run(
        [*cmd, "--version"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert ver.returncode == 0
    assert "trio-am-dbg" in ver.stdout


def test_30_quit_prints_summary(dbg: Dbg) -> None:
    fx8(dbg)
    dbg.tmux.keys("C-q")
    scr = dbg.tmux.wait_for("Clients: 1", "Transitions: 8", "Memory:")
    assert "Traceback" not in scr


def test_30b_sigterm_and_sigint_quit(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = Dbg(tmp_path)
        try:
            d.tmux.wait_for("Listening for connections on")
            fx8(d)
            os.kill(d.tmux.pid(), sig)
            scr = d.tmux.wait_for("Clients: 1", "Transitions: 8", "Memory:")
            assert "Traceback" not in scr
        finally:
            d.close()


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


def test_32_focus_cycle(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.wait_for("╔  Machines:1 ")  # the list is focused first
    t.keys("Tab")
    t.wait_for("╔  Schema:7 ")
    t.keys("Tab")
    t.wait_for("╔  Log:changes ")
    t.keys("BTab")
    t.wait_for("╔  Schema:7 ")
    t.keys("Escape")
    t.wait_for("╔  Machines:1 ")


def test_33_malformed_input(dbg: Dbg) -> None:
    with socket.create_connection(("127.0.0.1", dbg.port)) as s:
        s.sendall(os.urandom(1024))
    with socket.create_connection(("127.0.0.1", dbg.port)) as s:
        s.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
    fx8(dbg)
    dbg.tmux.wait_for("fx-a R|8")


def test_33b_malformed_input_while_fx_connected(dbg: Dbg) -> None:
    fx = dbg.fx("--child", wait=False)
    with socket.create_connection(("127.0.0.1", dbg.port)) as s:
        s.sendall(os.urandom(1024))
    with socket.create_connection(("127.0.0.1", dbg.port)) as s:
        s.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
    fx.wait_done()
    dbg.tmux.wait_for("Tail | tx: 8", " Machines:2 ", "- fx-b")


def test_34_small_terminal(tmp_path: Path) -> None:
    d = Dbg(tmp_path, width=80, height=24)
    try:
        d.tmux.wait_for("Listening for connections on")
        fx8(d)
        scr = d.tmux.wait_for("Tail | tx: 8 | Time: +1 | add: Foo", " Next mutation step 0 / 0 ")
        assert "Machines:" not in scr
        for label in ("tail", "help", "canceled", "disconn", "rpc", "matrix", " Schema:7 "):
            assert label in scr, label
        d.tmux.arrows("Left")
        d.tmux.wait_for("Paused | tx: 7 ", " Transition 6 / 7 (7 / 8) ")
    finally:
        d.close()


def test_d7_clean_on_connect(tmp_path: Path) -> None:
    for flag, machines in (("--clean-on-connect", 1), ("--no-clean-on-connect", 2)):
        d = Dbg(tmp_path, flag)
        try:
            d.tmux.wait_for("Listening for connections on")
            fx = fx8(d)
            fx.stop()
            d.fx("--id", "fx-x")
            scr = d.tmux.wait_for(f" Machines:{machines} ", "fx-x ")
            assert ("fx-a R|8" in list_pane(scr)) is (machines == 2)
            # clean: fx-x is the only client, so it gets selected
            assert ("mach://fx-x" in scr) is (machines == 1)
        finally:
            d.close()


def test_d25_move_throttle(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    # 8 presses at once: 1 move now, 3 wait their turn (200 ms apart), the rest are
    # dropped; unthrottled, 7 moves would reach the initial schema
    t.burst(*["Left"] * 8)
    t.wait_for("Paused | tx: ")
    assert t.lacks("Initial machine schema", settle=1.5)
    line = t.line("Paused | tx: ")
    assert int(line.split("tx: ")[1].split()[0]) <= 4  # the waiting moves did run


def test_d44_record_while_viewing(tmp_path: Path) -> None:
    rec = tmp_path / "live.amdbg"
    d = Dbg(tmp_path, "--record", str(rec))
    try:
        d.tmux.wait_for("Listening for connections on")
        fx8(d)
        deadline = time.monotonic() + WAIT
        n = -1
        while time.monotonic() < deadline:  # flushed at least once a second while running
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the stream is still open: "truncated"
                try:
                    n = len(load(rec).clients["fx-a"].txs)
                except Exception:
                    n = -1
            if n == 8:
                break
            time.sleep(0.1)
        assert n == 8
        d.tmux.keys("C-q")
        d.tmux.wait_for("Transitions: 8")
    finally:
        d.close()
    assert len(load(rec).clients["fx-a"].txs) == 8


def test_d51_tx_file(dbg: Dbg, tmp_path: Path) -> None:
    fx8(dbg)
    t = dbg.tmux
    t.arrows("Left")
    t.wait_for("Paused | tx: 7 ")
    path = tmp_path / "tx.md"
    deadline = time.monotonic() + WAIT
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if "mach://fx-a/fx-a:7" in text:
            break
        time.sleep(0.1)
    assert "mach://fx-a/fx-a:7" in text
    assert "[remove] Baz" in text
    assert "- deactivate Baz" in text


def test_d48_mouse(tmp_path: Path) -> None:
    d = Dbg(tmp_path, "--enable-mouse")
    try:
        d.tmux.wait_for("Listening for connections on")
        d.fx("--child")
        t = d.tmux
        scr = t.wait_for("- fx-b", "Tail | tx: 8")
        lines = scr.splitlines()
        row = next(i for i, x in enumerate(lines) if "- fx-b" in x)
        col = lines[row].index("- fx-b")
        # an SGR mouse press + release on the fx-b row (1-based coordinates)
        t.type(f"\x1b[<0;{col + 2};{row + 1}M\x1b[<0;{col + 2};{row + 1}m")
        t.wait_for("mach://fx-b", "#child ... #fixture")
    finally:
        d.close()


def test_d46_narrow_toggle(dbg: Dbg) -> None:
    fx8(dbg)
    t = dbg.tmux
    toolbar(t, 4, ROW4.index("narrow"))
    t.wait_for("[X] narrow")
    t.wait_gone("Machines:")
    t.keys("Enter")
    t.wait_for("[ ] narrow", "Machines:1")


def test_19b_escape_then_keys_at_once(dbg: Dbg) -> None:
    dbg.fx("--child")
    t = dbg.tmux
    t.wait_for("- fx-b", "Tail | tx: 8")
    t.keys("Tab")
    t.wait_for("╔  Schema:")
    t.burst("Escape", "Down", "Enter")  # one write: ESC ESC [B CR, not alt+down
    t.wait_for("mach://fx-b", "#child ... #fixture #env:test")
    t.keys("Tab")
    t.wait_for("╔  Schema:2 ")
    t.burst("Escape", "Up", "Enter")
    t.wait_for("mach://fx-a/fx-a:8")
    t.burst("Escape", "Left")  # Escape then Left: one tx back, not a jump (alt+left)
    t.wait_for("Paused | tx: 7 ")
