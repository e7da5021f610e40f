"""The debugger UI rendered in process (no terminal): urwid canvases of ``DbgApp`` over
the FX model at several sizes, driven by key names. Complements test_ui_tmux.py (which
needs tmux) and runs everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

import trio_am.dbg.ui.app as ui_app
from trio_am.dbg.model import Model
from trio_am.dbg.ui import DbgApp
from trio_am.dbg.ui.matrix import matrix_rows, matrix_title
from trio_am.dbg.ui.outputs import Outputs, tx_text
from trio_am.dbg.ui.widgets import pack_toolbar, window

from .conftest import feed, fx_messages, fx_schema


def screen(app: DbgApp, size: tuple[int, int] = (120, 40)) -> str:
    """The text urwid would draw at ``size``."""
    app.size = size
    canvas = app.build().render(size, focus=True)
    return "\n".join(line.decode("utf-8") for line in canvas.text)


def press(app: DbgApp, *keys: str, size: tuple[int, int] = (120, 40)) -> str:
    for k in keys:
        app.keypress(size, k)
    return screen(app, size)


@pytest.fixture
def app(fx_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DbgApp:
    monkeypatch.setattr(ui_app, "MOVE_EVERY", 0.0)  # no throttle without a loop
    fx_model.listen_addr = "127.0.0.1:6831"
    return DbgApp(fx_model, out_dir=tmp_path)


def test_fx_screen(app: DbgApp) -> None:
    scr = screen(app)
    assert "Tail | tx: 8 | Time: +1 | add: Foo" in scr
    assert " Transition 7 / 7 (8 / 8) " in scr
    assert " Machines:1 T:9 " in scr
    assert "fx-a R|8" in scr
    assert "#fixture #env:test" in scr
    assert " Next mutation step 0 / 0 " in scr
    assert "[cance] +Foo" in scr


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (99, 30), (200, 60), (60, 16), (30, 8)])
def test_sizes(app: DbgApp, size: tuple[int, int]) -> None:
    scr = screen(app, size)
    lines = scr.splitlines()
    assert len(lines) == size[1]
    assert all(len(x) <= size[0] for x in lines)
    if size[1] >= 16:
        assert "tx: 8" in scr
    if size[0] >= 100:
        assert "Machines:1" in scr
    else:
        assert "Machines:" not in scr
    if size[1] >= 24 and size[0] >= 80:
        for label in ("tail", "help", "canceled", "disconn", "rpc", "matrix"):
            assert label in scr  # toolbar rows wrap instead of clipping buttons


def test_navigation_keys(app: DbgApp) -> None:
    scr = press(app, "left")
    assert "Paused | tx: 7 | Time: +1 | remove: Baz" in scr
    assert " Transition 6 / 7 (7 / 8) " in scr
    scr = press(app, "left")
    assert "Paused | tx: 5 " in scr and "canceled" in scr
    scr = press(app, "home")
    assert "Paused | Initial machine schema" in scr
    assert " Transition 0 / 7 (0 / 8) " in scr
    scr = press(app, "right", "right", "meta k", "meta k")
    assert " Next mutation step 2 / 5 " in scr and "Bar add Foo" in scr
    assert "mach://fx-a/fx-a:2/2" in scr
    scr = press(app, "meta j", "meta j", "meta j")
    assert "Paused | tx: 1 " in scr and " Next mutation step 2 / 2 " in scr
    scr = press(app, "end")
    assert "Paused | tx: 8 " in scr
    scr = press(app, "meta v")
    assert "Tail | tx: 8 " in scr


def test_throttle_drops_moves_without_a_loop(
    fx_model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_app, "MOVE_EVERY", 60.0)
    app = DbgApp(fx_model, out_dir=tmp_path)
    scr = press(app, "left", "left", "left")
    assert "Paused | tx: 7 " in scr  # only the first move within the interval


def test_views_and_panes(app: DbgApp) -> None:
    scr = press(app, "meta m")
    assert " Matrix:" in scr and " Schema:7 " in scr
    scr = press(app, "meta m")
    assert " Rain " in scr and "8 | t9" in scr
    scr = press(app, "meta m")
    assert " Matrix:" in scr and " Schema:7 " not in scr
    scr = press(app, "meta m", "meta m")
    assert " Log:changes " in scr and " Schema:7 " in scr
    scr = press(app, "meta o")
    assert " Reader " in scr and "Executed (1)" in scr
    scr = press(app, "meta o", "?")
    assert "Keystrokes" in scr
    scr = press(app, "esc")
    assert "Keystrokes" not in scr


def test_focus_cycle_and_tree(app: DbgApp) -> None:
    scr = screen(app)
    assert "╔  Machines:1 " in scr
    scr = press(app, "tab")
    assert "╔  Schema:7 " in scr
    scr = press(app, "b", "a", "r")
    assert "Bar | idx: 3 | tick: 1" in scr
    scr = press(app, "enter")
    assert "  Add" in scr
    scr = press(app, "down", "down", "enter")
    assert "Foo | idx: 2 | tick: 3" in scr
    scr = press(app, "tab")
    assert "╔  Log:changes " in scr
    scr = press(app, "shift tab", "shift tab", "shift tab")
    assert "╔" not in scr.splitlines()[2]  # the address bar has the focus
    scr = press(app, "esc")
    assert "╔  Machines:1 " in scr


def test_toolbar_filters(app: DbgApp) -> None:
    scr = press(app, "meta f", "down", "right", "enter")
    assert "[X] canceled" in scr and " Transition 6 / 6 (8 / 8) " in scr
    scr = press(app, "left", "enter")
    assert "[3] log" in scr and " Log:ops " in scr
    scr = press(app, "enter", "enter", "enter")
    assert "[0] log" in scr and " Log:" not in scr
    scr = press(app, "down", "down", "right", "enter")  # row 4: tail
    assert "[ ] tail" in scr


def test_address_bar_opens_urls(app: DbgApp) -> None:
    press(app, "shift tab")  # list -> address
    assert app.focus == "address"
    for _ in range(30):
        app.keypress((120, 40), "backspace")
    for ch in "mach://fx-a?i=4":
        app.keypress((120, 40), ch)
    scr = press(app, "enter")
    assert "Paused | tx: 4 | Time: +2 | add: Baz" in scr
    press(app, "shift tab")
    for _ in range(30):
        app.keypress((120, 40), "backspace")
    scr = press(app, "enter")  # empty: nothing happens
    assert "Paused | tx: 4 " in scr


def test_export_dialog(app: DbgApp, tmp_path: Path) -> None:
    scr = press(app, "meta s")
    assert "Export to a file" in scr and "am-dbg-dump" in scr and "Single Frame" in scr
    scr = press(app, "enter")
    assert "Exported to" in scr and "Export to a file" not in scr
    assert (tmp_path / "am-dbg-dump.amdbg").exists()
    press(app, "meta s", "tab", " ", "tab", "enter")
    assert (tmp_path / "am-dbg-dump.amdbg").stat().st_size > 0


def test_remove_clients(fx_model: Model, tmp_path: Path) -> None:
    feed(fx_model, [fx_schema("fx-b", parent="fx-a")], conn=2)
    app = DbgApp(fx_model, out_dir=tmp_path)
    scr = screen(app)
    assert "- fx-b" in scr and " Machines:2 " in scr
    scr = press(app, "down", "backspace")
    assert " Machines:1 " in scr and "fx-b" not in scr
    scr = press(app, "meta d")
    assert " Machines:0 " in scr


def test_cli_view_options(fx_model: Model, tmp_path: Path) -> None:
    app = DbgApp(fx_model, out_dir=tmp_path, view="matrix", reader=True, timelines=0)
    scr = screen(app)
    assert " Matrix:" in scr and " Reader " in scr and " Schema:" not in scr
    assert " Transition " not in scr and " Next mutation step " not in scr
    app = DbgApp(fx_model, out_dir=tmp_path, rain=True, narrow=True, timelines=1)
    scr = screen(app)
    assert " Rain " in scr and "Machines:" not in scr
    assert " Transition " in scr and " Next mutation step " not in scr


def test_empty_and_bad_models(tmp_path: Path) -> None:
    m = Model(listen_addr="127.0.0.1:1")
    app = DbgApp(m, out_dir=tmp_path)
    scr = screen(app)
    assert "Listening for connections on 127.0.0.1:1" in scr
    for key in ("left", "right", "meta k", "meta j", "home", "end", "enter", "backspace",
                "tab", "tab", "enter", "up", "down", "meta m", "meta r", "meta o", "meta e"):  # fmt: skip
        press(app, key)
    # a client with a schema only, then odd records
    feed(m, [fx_schema()])
    m.ingest(1, ["tx", "fx-a", "x", 0, [99], {}, 4, [], [], [], [[1, 50, 60, 9, 0, None, 0]]])
    m.ingest(1, ["tx", "fx-a", "y", 7, "?", None, "4", None, [1] * 50, [2] * 3, [[99]]])
    scr = screen(app, (80, 24))
    assert "fx-a" in scr
    for key in ("home", "right", "meta k", "meta k", "meta m", "meta m", "meta m"):
        screen(app, (80, 24))
        app.keypress((80, 24), key)
    assert app.errors == 0


def test_matrix_and_outputs(fx_model: Model, tmp_path: Path) -> None:
    cl = fx_model.clients["fx-a"]
    fx_model.goto("fx-a", 3)
    rows = matrix_rows(fx_model, cl)
    text = ["".join(t for _a, t in r) for r in rows]
    assert text[1].startswith("called") and text[2].startswith("ticks")
    bar_row = next(x for x in text if x.startswith("Bar "))
    assert bar_row.split()[1:5] == ["0", "0", "1", "36"]  # Bar add Foo (1); called+activate
    assert matrix_title(fx_model, cl) == " Matrix:43 Time:t4 "
    md = tx_text(fx_model)
    assert md.startswith("mach://fx-a/fx-a:3\n")
    assert "[add] Bar" in md and "- Bar add Foo" in md and "- handler Foo_enter" in md
    out = Outputs(tmp_path, tx=True, log=True, clients=True)
    out.tick(fx_model, force=True)
    assert "mach://fx-a/fx-a:3" in (tmp_path / "tx.md").read_text()
    assert "[state] +Bar +Foo" in (tmp_path / "log.md").read_text()
    assert "fx-a" in (tmp_path / "clients.txt").read_text()


def test_widget_helpers() -> None:
    assert window(10, 0, 5, 0) == 0
    assert window(10, 7, 5, 0) == 3
    assert window(10, 4, 5, 3) == 3
    assert window(10, 1, 5, 3) == 1
    assert window(3, 2, 5, 1) == 0
    lines = pack_toolbar([("aaa", False), ("bb", True), ("cccc", False)], 7)
    assert [[t for t, _ in ln] for ln in lines] == [["aaa", "bb"], ["cccc"]]


def test_many_txs_render_fast(tmp_path: Path) -> None:
    import time

    m = Model()
    msgs = fx_messages()
    feed(m, msgs)
    cl = m.clients["fx-a"]
    tx8 = msgs[-1]
    for k in range(9, 5009):  # 5000 more records
        tx = list(tx8)
        tx[2] = f"fx-a:{k}"
        m.ingest(1, tx)
    assert len(cl.txs) == 5008
    app = DbgApp(m, out_dir=tmp_path)
    t0 = time.perf_counter()
    for _ in range(20):
        screen(app)
    per_frame = (time.perf_counter() - t0) / 20
    assert per_frame < 0.25, per_frame


def test_input_filter_splits_merged_escape(app: DbgApp) -> None:
    f = app.input_filter
    # Escape then Left, merged by urwid (ESC ESC [ D) vs a real alt+Left (ESC [1;3D)
    assert f(["meta left"], [27, 27, 91, 68]) == ["esc", "left"]
    assert f(["meta left"], [27, 91, 49, 59, 51, 68]) == ["meta left"]
    # keys the debugger does not bind with alt are Escape + the key
    assert f(["meta down"], [27, 27, 91, 66]) == ["esc", "down"]
    assert f(["meta enter"], [27, 13]) == ["esc", "enter"]
    assert f(["meta k", "left"], [27, 107, 27, 91, 68]) == ["meta k", "left"]
    assert f([("mouse press", 1, 2, 3)], [27]) == [("mouse press", 1, 2, 3)]


def test_bugs_in_actions_do_not_end_the_ui(
    app: DbgApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.model, "first", boom)
    scr = press(app, "home")
    assert "internal error" in scr
    assert "RuntimeError: boom" in (tmp_path / "am-dbg-err.log").read_text()
    scr = press(app, "left")
    assert "Paused | tx: 7 " in scr and "internal error" not in scr


def test_group_dropdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_app, "MOVE_EVERY", 0.0)
    msgs = fx_messages()
    schema = list(msgs[1])
    schema[6] = {"Work": [0, 2]}  # groups: Start, Foo
    schema[7] = ["Work"]
    msgs[1] = schema
    m = feed(Model(), msgs)
    app = DbgApp(m, out_dir=tmp_path)
    scr = screen(app)
    assert "Group: all" in scr and " Transition 7 / 7 (8 / 8) " in scr
    scr = press(app, "tab")
    assert app.focus == "group"
    scr = press(app, "down")
    assert "Group: Work:2" in scr
    assert "Bar " not in scr.split("Group:")[1].split("Log:")[0]  # tree narrowed
    # the group filter: only txs calling Start or Foo (1, 5, 8)
    assert " Transition 3 / 3 (8 / 8) " in scr
    scr = press(app, "down")
    assert "Group: all" in scr and " Transition 7 / 7 (8 / 8) " in scr
