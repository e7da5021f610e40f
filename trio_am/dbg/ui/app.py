"""The urwid screen of ``trio-am-dbg``, on urwid's ``TrioEventLoop`` (tools.md §1.2).

The whole screen is rebuilt from the model by :meth:`DbgApp.build` (text comes from the
urwid-free :mod:`trio_am.dbg.view`); rebuilds are debounced to one per 16 ms while
records stream in. :class:`Screen` takes every key first, so navigation works whatever
pane is focused; the focused pane (tab / shift+tab) gets the arrows and enter and a
double border. The debugger server and the urwid loop share one Trio run:
``TrioEventLoop.run_async()`` runs beside the server in one nursery (:func:`run_ui`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
import urwid

from .. import view
from ..model import Model

__all__ = ["PALETTE", "DbgApp", "run_ui"]

PALETTE = [
    ("body", "", ""),
    ("bar", "black", "light gray"),
    ("title", "bold", ""),
    ("bold", "bold", ""),
    ("selected", "bold,underline", ""),
    ("active", "light green", ""),
    ("active_touched", "light green,bold", ""),
    ("active_multi", "light cyan", ""),
    ("active_multi_touched", "light cyan,bold", ""),
    ("inactive", "", ""),
    ("inactive_touched", "bold", ""),
    ("error", "light red", ""),
    ("error_touched", "light red,bold", ""),
    ("err_recent", "light magenta", ""),
    ("disconnected", "dark gray", ""),
    ("called", "underline", ""),
    ("faded", "dark gray", ""),
    ("grey", "dark gray", ""),
    ("green", "light green", ""),
    ("yellow", "yellow", ""),
    ("red", "light red", ""),
    ("tool_focus", "black", "light gray"),
    ("progress", "black", "dark cyan"),
    ("progress_red", "black", "dark red"),
]

#: Smallest width with the client list (below it the layout is narrow, D46).
WIDE_MIN = 100
#: At most one tx move per this many seconds (D25).
MOVE_EVERY = 0.2
PLAY_EVERY = 0.5
SEARCH_RESET = 1.5
PANES_WIDE = ("list", "tree", "main", "reader", "timelines", "toolbar")


def _box(widget: urwid.Widget, title: str, focused: bool) -> urwid.Widget:
    if focused:
        return urwid.LineBox(
            widget, title=title, title_align="left",
            tlcorner="╔", tline="═", lline="║", trcorner="╗", blcorner="╚", rline="║",
            bline="═", brcorner="╝",
        )  # fmt: skip
    return urwid.LineBox(widget, title=title, title_align="left")


def _rows(items: list[Any], focus: int | None) -> urwid.Widget:
    texts = [urwid.Text(m, wrap="clip") for m in items] or [urwid.Text("")]
    lb = urwid.ListBox(urwid.SimpleFocusListWalker(texts))
    if focus is not None and texts:
        lb.set_focus(max(0, min(focus, len(texts) - 1)))
    return lb


def _bar(markup: Any, right: Any = "") -> urwid.Widget:
    left = urwid.Text(markup, wrap="clip")
    if not right:
        return urwid.AttrMap(left, "bar")
    return urwid.AttrMap(
        urwid.Columns([left, ("pack", urwid.Text(right, wrap="clip"))], dividechars=1), "bar"
    )


class _Bar(urwid.ProgressBar):
    def get_text(self) -> str:
        return ""


def _progress(title: str, frac: float, red: bool = False) -> urwid.Widget:
    bar = _Bar("body", "progress_red" if red else "progress", current=frac * 100, done=100)
    return urwid.LineBox(bar, title=title, title_align="left")


class Screen(urwid.WidgetWrap[urwid.Widget]):
    """The top widget: every key goes to :meth:`DbgApp.keypress` first."""

    def __init__(self, app: DbgApp) -> None:
        self.app = app
        super().__init__(urwid.SolidFill(" "))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Any, key: str) -> str | None:
        return self.app.keypress(size, key)

    def set(self, w: urwid.Widget) -> None:
        self._w = w


class DbgApp:
    """The debugger UI over a :class:`Model`.

    Args:
        model: the model (fed by the server).
        out_dir: where exports go (``-d``).
        opts: view options: ``reader``, ``rain``, ``narrow``, ``timelines`` (0-2),
            ``view`` (``tree-log``, ``tree-matrix``, ``matrix``), ``wrap``.
    """

    def __init__(self, model: Model, *, out_dir: Path | None = None, **opts: Any) -> None:
        self.model = model
        self.out_dir = out_dir or Path(".")
        self.ui: dict[str, Any] = {
            "reader": bool(opts.get("reader")),
            "view": "rain" if opts.get("rain") else "log",
            "narrow": bool(opts.get("narrow")),
            "timelines": int(opts.get("timelines", 2)),
            "wrap": bool(opts.get("wrap")),
            "times": False,
            "expand": False,
            "traces": False,
        }
        self.focus = "list"
        self.list_cursor = 0
        self.tree_cursor = 0
        self.log_scroll: int | None = None
        self.tool_pos = (0, 0)
        self.expanded: set[str] = set()
        self.overlay: str | None = None
        self.dialog: urwid.Widget | None = None
        self.screen = Screen(self)
        self.loop: urwid.MainLoop | None = None
        self.size = (120, 40)
        self._last_move = 0.0
        self._pending_moves = 0
        self._redraw_alarm: Any = None
        self._play_alarm: Any = None
        self._search = ""
        self._search_t = 0.0
        self._seen_version = -1
        self.message = ""
        self.quit = trio.Event()
        self.version = ""

    # ------------------------------------------------------------------ redraw
    def changed(self) -> None:
        """The model changed: rebuild the screen within 16 ms."""
        if self.loop is None:
            return
        if self._redraw_alarm is None:
            self._redraw_alarm = self.loop.set_alarm_in(0.016, self._redraw)

    def _redraw(self, *_: Any) -> None:
        self._redraw_alarm = None
        self.redraw()

    def redraw(self) -> None:
        """Rebuild the screen now."""
        if self.loop is not None:
            try:
                cols, rows = self.loop.screen.get_cols_rows()
                self.size = (cols, rows)
            except Exception:
                pass
        self.screen.set(self.build())

    def wide(self) -> bool:
        """Whether the client list is shown (D46)."""
        return self.size[0] >= WIDE_MIN and not self.ui["narrow"]

    def panes(self) -> list[str]:
        """Focusable panes in tab order."""
        out = [p for p in PANES_WIDE if p != "list" or self.wide()]
        if not self.ui["reader"]:
            out.remove("reader")
        if self.ui["timelines"] == 0:
            out.remove("timelines")
        return out

    def build(self) -> urwid.Widget:
        """The screen from the model's current state."""
        m = self.model
        cl = m.client()
        cols, rows = self.size
        if self.focus not in self.panes():
            self.focus = self.panes()[0]
        parts: list[Any] = []
        parts.append(("pack", _bar(view.address_bar(m), "copy paste")))
        tags = view.tags_bar(m)
        parts.append(("pack", urwid.Text(tags or " ", wrap="clip")))
        # main area
        main_cols: list[Any] = []
        if self.wide():
            rows_ = view.client_list_rows(m)
            ids = [cid for cid, _ in rows_]
            if ids:
                self.list_cursor = max(0, min(self.list_cursor, len(ids) - 1))
            items = []
            for i, (_cid, mk) in enumerate(rows_):
                if i == self.list_cursor and self.focus == "list":
                    items.append([("tool_focus", ">"), *mk] if isinstance(mk, list) else mk)
                else:
                    items.append([" ", *mk] if isinstance(mk, list) else " " + mk)
            main_cols.append(
                (28, _box(_rows(items, self.list_cursor), view.client_list_title(m),
                          self.focus == "list"))
            )  # fmt: skip
        if cl is not None:
            trows = view.tree_rows(m, cl, self.expanded, self.ui["expand"])
            self._tree = trows
            self.tree_cursor = max(0, min(self.tree_cursor, len(trows) - 1))
            titems = []
            for i, r in enumerate(trows):
                pre = ">" if (i == self.tree_cursor and self.focus == "tree") else " "
                mk = r.markup if isinstance(r.markup, list) else [r.markup]
                titems.append([pre, *mk])
            tree_title = view.schema_title(cl)
        else:
            self._tree = []
            titems = []
            tree_title = view.schema_title(None)
        tree_w = 34 if cols >= 80 else max(20, cols // 2)
        main_cols.append(
            (tree_w, _box(_rows(titems, self.tree_cursor), tree_title, self.focus == "tree"))
        )
        right: list[Any] = []
        if cl is not None and self.ui["view"] == "rain":
            h = max(1, rows - 17)
            rr = view.rain_rows(m, cl, h)
            cur = next((i for i, (no, _) in enumerate(rr) if no == cl.c), 0)
            right.append(_box(_rows([mk for _, mk in rr], cur), " Rain ", self.focus == "main"))
        elif m.filters.log_level > 0:
            lines = view.log_lines(m, cl) if cl is not None else []
            cur = None
            if cl is not None:
                for i, (no, _) in enumerate(lines):
                    if no <= cl.c:
                        cur = i
            if self.log_scroll is not None:
                cur = self.log_scroll
            wrap: Any = "space" if self.ui["wrap"] else "clip"
            lb = urwid.ListBox(
                urwid.SimpleFocusListWalker(
                    [urwid.Text(mk, wrap=wrap) for _, mk in lines] or [urwid.Text("")]
                )
            )
            if cur is not None and lines:
                lb.set_focus(max(0, min(cur, len(lines) - 1)))
            right.append(_box(lb, view.log_title(m), self.focus == "main"))
        else:
            right.append(
                _box(urwid.Filler(urwid.Text("")), view.log_title(m), self.focus == "main")
            )
        if self.ui["reader"]:
            rrows = view.reader_rows(m, cl) if cl is not None else []
            ritems = [["  " * d, *(mk if isinstance(mk, list) else [mk])] for d, mk in rrows]
            right.append(_box(_rows(ritems, 0), " Reader ", self.focus == "reader"))
        main_cols.append(urwid.Pile(right) if len(right) > 1 else right[0])
        parts.append(urwid.Columns(main_cols))
        # bars and timelines
        parts.append(("pack", _bar(*view.tx_bar(m))))
        red = False
        if cl is not None and 0 < cl.c <= len(cl.txs):
            red = cl.txs[cl.c - 1].canceled
        tl_focus = self.focus == "timelines"
        if self.ui["timelines"] >= 1:
            parts.append(
                ("pack", _progress(("▶" if tl_focus else "") + view.tx_timeline_title(m),
                                   view.tx_progress(m), red))
            )  # fmt: skip
        if self.ui["timelines"] >= 2:
            parts.append(("pack", _bar(*view.next_tx_bar(m))))
            parts.append(("pack", _progress(view.steps_timeline_title(m), view.steps_progress(m))))
        # toolbars
        for ri, row in enumerate(view.toolbar_rows(m, self.ui)):
            tools: list[Any] = []
            for ci, it in enumerate(row):
                focused = self.focus == "toolbar" and self.tool_pos == (ri, ci)
                tools.append(("tool_focus" if focused else "body", it.text()))
                tools.append(" ")
            parts.append(("pack", urwid.Text(tools, wrap="clip")))
        left, right_s = view.status_bar(m)
        if self.message:
            left = f"{left} | {self.message}"
        parts.append(("pack", _bar(left, right_s)))
        body: urwid.Widget = urwid.Pile(parts)
        if self.overlay == "help":
            text = urwid.Text("\n".join(view.help_text(m, self.version)))
            box = urwid.LineBox(urwid.Filler(text, valign="top"), title=" Help ")
            body = urwid.Overlay(box, body, "center", ("relative", 90), "middle",
                                 ("relative", 90))  # fmt: skip
        elif self.overlay == "export" and self.dialog is not None:
            body = urwid.Overlay(self.dialog, body, "center", 50, "middle", 9)
        return body

    # ------------------------------------------------------------------ keys
    def keypress(self, size: Any, key: str) -> str | None:
        """Handle one key (urwid name); unknown keys are ignored."""
        m = self.model
        self.message = ""
        if key == "ctrl q":
            raise urwid.ExitMainLoop()
        if self.overlay == "export" and self.dialog is not None:
            if key == "esc":
                self._close_overlay()
            else:
                self.dialog.keypress((50, 9), key)
                if key == "enter" and self.dialog_focus_is_edit():
                    self._export_save()
            self.redraw()
            return None
        if self.overlay == "help":
            if key in ("esc", "?", "q"):
                self._close_overlay()
            self.redraw()
            return None
        handler = self._KEYS.get(key)
        if handler is not None:
            handler(self)
        elif key in ("up", "down", "enter", "page up", "page down", "meta p", "meta n"):
            self._pane_key(key)
        elif key in ("backspace", "meta d"):
            if self.focus == "list":
                self._remove_focused()
        elif len(key) == 1 and (key.isalnum() or key in "-_") and self.focus in ("list", "tree"):
            self._type_search(key)
        else:
            return None
        if m.playing and self._play_alarm is None:
            self._schedule_play()
        self.redraw()
        return None

    def dialog_focus_is_edit(self) -> bool:
        """Whether the export dialog's filename field is focused."""
        return getattr(self, "_edit_focused", lambda: False)()

    # navigation ---------------------------------------------------------------
    def _move(self, fn_name: str) -> None:
        now = time.monotonic()
        wait = self._last_move + MOVE_EVERY - now
        if wait <= 0 and not self._pending_moves:
            self._last_move = now
            getattr(self.model, fn_name)()
            self.log_scroll = None
            return
        if self._pending_moves >= 3 or self.loop is None:
            return  # D25: skipped when more than 3 are pending
        self._pending_moves += 1
        delay = max(0.0, wait) + MOVE_EVERY * (self._pending_moves - 1)

        def later(*_: Any) -> None:
            self._pending_moves -= 1
            self._last_move = time.monotonic()
            getattr(self.model, fn_name)()
            self.log_scroll = None
            self.redraw()

        self.loop.set_alarm_in(delay, later)

    def _left(self) -> None:
        if self.focus == "toolbar":
            self._tool_move(0, -1)
        elif self.focus == "timelines":
            self.model.step_back()
        else:
            self._move("prev_tx")

    def _right(self) -> None:
        if self.focus == "toolbar":
            self._tool_move(0, 1)
        elif self.focus == "timelines":
            self.model.step_fwd()
        else:
            self._move("next_tx")

    def _tool_move(self, dr: int, dc: int) -> None:
        rows = view.toolbar_rows(self.model, self.ui)
        r, c = self.tool_pos
        r = (r + dr) % len(rows)
        c = (c + dc) % len(rows[r]) if dc else min(c, len(rows[r]) - 1)
        self.tool_pos = (r, c)

    def _focus_step(self, d: int) -> None:
        panes = self.panes()
        i = panes.index(self.focus) if self.focus in panes else 0
        self.focus = panes[(i + d) % len(panes)]

    def _esc(self) -> None:
        self.focus = "list" if self.wide() else "tree"
        m = self.model
        ids = [cl.id for _, cl in m.client_list()]
        if m.selected in ids:
            self.list_cursor = ids.index(m.selected)

    def _pane_key(self, key: str) -> None:
        m = self.model
        if self.focus == "list":
            ids = [cl.id for _, cl in m.client_list()]
            if not ids:
                return
            if key == "up":
                self.list_cursor = max(0, self.list_cursor - 1)
            elif key == "down":
                self.list_cursor = min(len(ids) - 1, self.list_cursor + 1)
            elif key == "enter":
                m.select(ids[self.list_cursor])
        elif self.focus == "tree":
            rows = self._tree
            if not rows:
                return
            if key == "up":
                self.tree_cursor = max(0, self.tree_cursor - 1)
            elif key == "down":
                self.tree_cursor = min(len(rows) - 1, self.tree_cursor + 1)
            row = rows[self.tree_cursor]
            cl = m.client()
            if key == "enter" and cl is not None:
                if row.target:
                    cl.selected_state = row.target
                    for i, r in enumerate(rows):
                        if r.state == row.target and r.depth == 0:
                            self.tree_cursor = i
                elif row.state is not None and row.depth == 0:
                    if row.state in self.expanded:
                        self.expanded.discard(row.state)
                    else:
                        self.expanded.add(row.state)
            elif cl is not None and row.state is not None and row.depth == 0:
                cl.selected_state = row.state
            m.version += 1
        elif self.focus == "toolbar":
            if key == "up":
                self._tool_move(-1, 0)
            elif key == "down":
                self._tool_move(1, 0)
            elif key == "enter":
                tr, tc = self.tool_pos
                self._press(view.toolbar_rows(m, self.ui)[tr][tc].id)
        elif self.focus == "main":
            step = {"up": -1, "down": 1, "page up": -10, "page down": 10, "meta p": -10,
                    "meta n": 10}.get(key, 0)  # fmt: skip
            cl = m.client()
            if cl is not None and step:
                n = len(view.log_lines(m, cl))
                cur = self.log_scroll if self.log_scroll is not None else n - 1
                self.log_scroll = max(0, min(n - 1, cur + step))

    def _press(self, action: str) -> None:
        m = self.model
        simple = {
            "prev_tx": m.prev_tx, "next_tx": m.next_tx, "step_back": m.step_back,
            "step_fwd": m.step_fwd, "jump_back": m.jump_back, "jump_fwd": m.jump_fwd,
            "first": m.first, "last": m.last,
        }  # fmt: skip
        if action in simple:
            simple[action]()
        elif action in ("canceled", "queued", "auto", "empty", "health", "group", "disconn",
                        "checks", "rpc"):  # fmt: skip
            m.toggle_filter(action)
        elif action == "log_level":
            m.toggle_filter("log_level")
        elif action == "play":
            m.playing = not m.playing
        elif action == "tail":
            m.set_tail(not m.tail)
        elif action == "help":
            self.overlay = "help"
        elif action == "export":
            self._open_export()
        elif action in ("reader", "wrap", "narrow", "times", "expand", "traces"):
            self.ui[action] = not self.ui[action]
        elif action == "timelines":
            self.ui["timelines"] = (self.ui["timelines"] + 1) % 3
        elif action in ("rain", "matrix"):
            self.ui["view"] = "log" if self.ui["view"] == action else action
        elif action in ("client_up", "client_down"):
            ids = [cl.id for _, cl in m.client_list()]
            if ids and m.selected in ids:
                i = ids.index(m.selected) + (1 if action == "client_down" else -1)
                m.select(ids[i % len(ids)])
        m.version += 1

    def _remove_focused(self) -> None:
        ids = [cl.id for _, cl in self.model.client_list()]
        if ids:
            self.model.remove_client(ids[min(self.list_cursor, len(ids) - 1)])
            self.list_cursor = max(0, self.list_cursor - 1)

    def _type_search(self, ch: str) -> None:
        now = time.monotonic()
        if now - self._search_t > SEARCH_RESET:
            self._search = ""
        self._search_t = now
        self._search += ch.lower()
        if self.focus == "list":
            ids = [cl.id for _, cl in self.model.client_list()]
            for i in [*range(self.list_cursor, len(ids)), *range(self.list_cursor)]:
                if ids[i].lower().startswith(self._search):
                    self.list_cursor = i
                    return
        else:
            for i, r in enumerate(self._tree):
                if r.depth == 0 and r.state and r.state.lower().startswith(self._search):
                    self.tree_cursor = i
                    cl = self.model.client()
                    if cl is not None:
                        cl.selected_state = r.state
                    return

    # play ---------------------------------------------------------------------
    def _toggle_play(self) -> None:
        m = self.model
        m.playing = not m.playing
        if m.playing:
            m.tail = False

    def _schedule_play(self) -> None:
        if self.loop is None:
            return

        def tick(*_: Any) -> None:
            self._play_alarm = None
            m = self.model
            if not m.playing:
                return
            m.play_tick(steps=self.focus == "timelines")
            if m.playing:
                self._schedule_play()
            self.redraw()

        self._play_alarm = self.loop.set_alarm_in(PLAY_EVERY, tick)

    # dialogs ------------------------------------------------------------------
    def _open_export(self) -> None:
        edit = urwid.Edit("Filename: ", "am-dbg-dump")
        single = urwid.CheckBox("Single Frame")
        save = urwid.Button("Save", lambda _b: self._export_save())
        cancel = urwid.Button("Cancel", lambda _b: self._close_overlay())
        pile = urwid.Pile([edit, single, urwid.Divider(), urwid.Columns([save, cancel])])
        self._edit = edit
        self._single = single
        self._edit_focused = lambda: pile.focus is edit
        self.dialog = urwid.LineBox(urwid.Filler(pile, valign="top"), title=" Export to a file ")
        self.overlay = "export"

    def _export_save(self) -> None:
        name = self._edit.get_edit_text().strip() or "am-dbg-dump"
        path = self.out_dir / (name if name.endswith(".amdbg") else name + ".amdbg")
        try:
            out = self.model.export(path, single_frame=self._single.get_state() is True)
            self.message = f"Exported to {out}"
        except OSError as exc:
            self.message = f"Export failed: {exc}"
        self._close_overlay()

    def _close_overlay(self) -> None:
        self.overlay = None
        self.dialog = None

    def _help(self) -> None:
        self.overlay = "help"

    def _cycle_view(self) -> None:
        order = ["log", "matrix", "rain"]
        self.ui["view"] = order[(order.index(self.ui["view"]) + 1) % len(order)]

    _KEYS: dict[str, Any] = {
        "left": _left,
        "right": _right,
        "meta j": lambda self: self.model.step_back(),
        "meta k": lambda self: self.model.step_fwd(),
        "meta h": lambda self: self.model.jump_back(),
        "meta left": lambda self: self.model.jump_back(),
        "meta l": lambda self: self.model.jump_fwd(),
        "meta right": lambda self: self.model.jump_fwd(),
        "home": lambda self: self.model.first(),
        "end": lambda self: self.model.last(),
        "meta v": lambda self: self.model.set_tail(not self.model.tail),
        " ": _toggle_play,
        "?": _help,
        "tab": lambda self: self._focus_step(1),
        "shift tab": lambda self: self._focus_step(-1),
        "esc": _esc,
        "meta o": lambda self: self._press("reader"),
        "meta m": _cycle_view,
        "meta r": lambda self: self._press("rain"),
        "meta e": lambda self: self._press("expand"),
        "meta s": _open_export,
        "meta f": lambda self: setattr(self, "focus", "toolbar"),
    }


async def run_ui(
    app: DbgApp,
    server: Any | None,
    *,
    mouse: bool = False,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the UI (and the debugger ``server``, already bound) until ctrl+q, SIGINT or
    SIGTERM."""
    import signal

    evl = urwid.TrioEventLoop()
    loop = urwid.MainLoop(app.screen, PALETTE, event_loop=evl, handle_mouse=mouse, pop_ups=False)
    app.loop = loop
    if server is not None:
        server.on_change = app.changed
    app.redraw()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
        async with trio.open_nursery() as nursery:
            if server is not None:
                await nursery.start(server.run)

            def stop(*_: Any) -> None:
                raise urwid.ExitMainLoop()

            async def on_signal() -> None:
                async for _ in sigs:
                    # leave through urwid, so the terminal is restored
                    loop.set_alarm_in(0, stop)
                    return

            async def resize_watch() -> None:
                # rebuild on terminal size changes (the layout depends on the width)
                while True:
                    await trio.sleep(0.1)
                    try:
                        size = tuple(loop.screen.get_cols_rows())
                    except Exception:
                        continue
                    if size != app.size:
                        app.redraw()

            nursery.start_soon(on_signal)
            nursery.start_soon(resize_watch)
            task_status.started()
            with loop.start():
                screen = loop.screen
                if hasattr(screen, "tty_signal_keys"):
                    # free ctrl+q / ctrl+s from terminal flow control (ctrl+q quits)
                    screen.tty_signal_keys(start="undefined", stop="undefined")
                await evl.run_async()
            nursery.cancel_scope.cancel()
