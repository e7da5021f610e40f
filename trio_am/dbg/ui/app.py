"""The urwid screen of ``trio-am-dbg``, on urwid's ``TrioEventLoop`` (tools.md §1.2).

The whole screen is rebuilt from the model by :meth:`DbgApp.build` (text comes from the
urwid-free :mod:`trio_am.dbg.view`); only the rows that fit on screen become widgets, and
rebuilds are debounced to one per 16 ms while records stream in. :class:`Screen` takes
every key first, so navigation works whatever pane is focused; the focused pane (tab /
shift+tab) gets the arrows and enter and a double border. A size change (resize) rebuilds
the screen on the next draw, keeping every cursor.

The debugger server and the urwid loop share one Trio run: :func:`run_ui` opens a nursery
with the server and a few housekeeping tasks and awaits ``TrioEventLoop.run_async()``
beside them; quitting (ctrl+q, SIGINT, SIGTERM) leaves urwid first (restoring the
terminal), then cancels the nursery.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import trio
import urwid

from .. import view
from ..model import Client, Model
from ..view import plain
from . import matrix as mx
from .outputs import Outputs
from .widgets import Pane, bar, box, lines, pack_toolbar, timeline, window

__all__ = ["PALETTE", "DbgApp", "Screen", "run_ui"]

PALETTE = [
    ("body", "", ""),
    ("bar", "black", "light gray"),
    ("title", "bold", ""),
    ("bold", "bold", ""),
    ("underline", "underline", ""),
    ("selected", "bold,underline", ""),
    ("active", "light green", ""),
    ("active_touched", "light green,bold", ""),
    ("active_multi", "light cyan", ""),
    ("active_multi_touched", "light cyan,bold", ""),
    ("inactive", "", ""),
    ("inactive_touched", "bold", ""),
    ("touched", "bold", ""),
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
    ("cursor", "black", "light gray"),
    ("tool_focus", "black", "light gray"),
    ("progress", "black", "dark cyan"),
    ("progress_red", "black", "dark red"),
    ("progress_grey", "black", "dark gray"),
    ("gutter_green", "", "dark green"),
    ("gutter_yellow", "", "brown"),
    ("gutter_red", "", "dark red"),
    ("gutter_grey", "", "dark gray"),
    ("timeline", "", ""),
    ("dialog", "", ""),
]

#: Smallest width with the client list (below it the layout is narrow, D46).
WIDE_MIN = 100
#: Below this many rows the timelines take one row each.
COMPACT_ROWS = 30
#: At most one tx move per this many seconds; more than MAX_PENDING waiting are dropped (D25).
MOVE_EVERY = 0.2
MAX_PENDING = 3
#: Play speed (D30), redraw debounce, type-to-search buffer life (D5).
PLAY_EVERY = 0.5
REDRAW_EVERY = 0.016
SEARCH_RESET = 1.5
#: Focus order (D45); panes missing from the current layout are skipped.
PANES = ("address", "list", "group", "tree", "main", "reader", "timelines", "toolbar")
#: alt+m cycle (D36): (tree shown, main view).
VIEWS = ((True, "log"), (True, "matrix"), (True, "rain"), (False, "matrix"), (False, "rain"))
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_PAGE_KEYS = {"page up": -1, "page down": 1, "meta p": -1, "meta n": 1}
_FILTERS = ("canceled", "queued", "auto", "empty", "health", "group", "disconn", "checks", "rpc")

# the reader's renderer (view.reader_tree in the brief, view.reader_rows in view.py)
_reader_rows: Callable[[Model, Client], list[tuple[int, Any]]] = (
    getattr(view, "reader_tree", None) or view.reader_rows
)


def _as_list(markup: Any) -> list[Any]:
    return list(markup) if isinstance(markup, list) else [markup]


def _rows(w: urwid.Widget, cols: int) -> int:
    rows: Callable[[tuple[int]], int] = getattr(w, "rows")  # noqa: B009  # flow widgets
    return rows((cols,))


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f") if ns else ""


class Screen(urwid.WidgetWrap[urwid.Widget]):
    """The top widget: every key goes to :meth:`DbgApp.keypress` first; a new size
    rebuilds the screen before it is drawn."""

    def __init__(self, app: DbgApp) -> None:
        self.app = app
        super().__init__(urwid.SolidFill(" "))

    def selectable(self) -> bool:
        return True

    def render(self, size: Any, focus: bool = False) -> Any:
        if len(size) == 2 and tuple(size) != self.app.size:
            self.app.size = (int(size[0]), int(size[1]))
            self._w = self.app.safe_build()
        return super().render(size, focus)

    def keypress(self, size: Any, key: str) -> str | None:
        return self.app.keypress(size, key)

    def set(self, w: urwid.Widget) -> None:
        """Show ``w``."""
        self._w = w


class DbgApp:
    """The debugger UI over a :class:`Model`.

    Args:
        model: the model (fed by the server).
        out_dir: where exports and output files go (``-d``).
        opts: view options: ``reader``, ``rain``, ``view`` (``tree-log``, ``tree-matrix``,
            ``matrix``), ``narrow``, ``timelines`` (0-2), ``wrap``; outputs ``output_tx``
            (default on), ``output_log``, ``output_clients``.
    """

    def __init__(self, model: Model, *, out_dir: Path | None = None, **opts: Any) -> None:
        self.model = model
        self.out_dir = out_dir or Path(".")
        tree, main = {"tree-matrix": (True, "matrix"), "matrix": (False, "matrix")}.get(
            str(opts.get("view") or "tree-log"), (True, "log")
        )
        if opts.get("rain"):
            main = "rain"
        self.ui: dict[str, Any] = {
            "reader": bool(opts.get("reader")),
            "view": main,
            "tree": tree,
            "narrow": bool(opts.get("narrow")),
            "timelines": int(opts.get("timelines", 2)),
            "wrap": bool(opts.get("wrap")),
            "times": False,
            "expand": False,
            "traces": True,
        }
        self.outputs = Outputs(
            self.out_dir,
            tx=bool(opts.get("output_tx", True)),
            log=bool(opts.get("output_log")),
            clients=bool(opts.get("output_clients")),
        )
        self.focus = "list"
        self.list_key: str | None = None
        self.tree_key: str | None = None
        self.list_cursor = 0
        self.tree_cursor = 0
        self.reader_cursor = 0
        self.help_offset = 0
        self.log_scroll: int | None = None
        self.tool_pos = (0, 0)
        self.expanded: set[str] = set()
        self.overlay: str | None = None
        self.dialog: urwid.Widget | None = None
        self.screen = Screen(self)
        self.loop: urwid.MainLoop | None = None
        self.size = (0, 0)
        self.message = ""
        self.version = ""
        self.errors = 0
        self._offsets: dict[str, int] = {}
        self._geom: dict[str, Any] = {}
        self._tree: list[view.TreeRow] = []
        self._reader: list[tuple[int, Any]] = []
        self._log_nos: list[int] = []
        self._tool_lines: list[list[tuple[int, int, int, int]]] = []
        self._addr: urwid.Edit | None = None
        self._last_move = 0.0
        self._pending_moves = 0
        self._redraw_alarm: Any = None
        self._play_alarm: Any = None
        self._search = ""
        self._search_t = 0.0
        self._busy_t = 0.0
        self._spin = 0
        self._spinning = False
        self._edit: urwid.Edit | None = None
        self._single: urwid.CheckBox | None = None
        self._dialog_pile: urwid.Pile | None = None

    # ------------------------------------------------------------------ redraw
    def changed(self, busy: bool = True) -> None:
        """The model changed (records arrived): rebuild the screen within 16 ms."""
        if busy:
            self._busy_t = time.monotonic()
        if self.loop is None:
            return
        if self._redraw_alarm is None:
            self._redraw_alarm = self.loop.set_alarm_in(REDRAW_EVERY, self._redraw)

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
        self.screen.set(self.safe_build())

    def safe_build(self) -> urwid.Widget:
        """:meth:`build`, or an error screen (the traceback goes to ``am-dbg-err.log``)
        instead of crashing the debugger on a rendering bug."""
        try:
            return self.build()
        except Exception:
            self.errors += 1
            path = self.outputs.error(traceback.format_exc())
            where = f" (see {path})" if path is not None else ""
            return urwid.Filler(urwid.Text(f"trio-am-dbg: rendering failed{where}"))

    def tick(self) -> None:
        """Housekeeping, about 4 times a second: the ``-d`` output files, and a redraw
        once records stop arriving (the status bar's busy spinner goes away)."""
        self.outputs.tick(self.model)
        if self._spinning and time.monotonic() - self._busy_t >= 0.5:
            self.changed(busy=False)

    def wide(self) -> bool:
        """Whether the client list is shown (D46)."""
        return self.size[0] >= WIDE_MIN and not self.ui["narrow"]

    def panes(self) -> list[str]:
        """Focusable panes in tab order (D45)."""
        cl = self.model.client()
        skip = set()
        if not self.wide():
            skip.add("list")
        if cl is None or not cl.groups or not self.ui["tree"]:
            skip.add("group")
        if not self.ui["tree"]:
            skip.add("tree")
        if self.ui["view"] == "log" and self.model.filters.log_level <= 0 and self.ui["tree"]:
            skip.add("main")
        if not self.ui["reader"]:
            skip.add("reader")
        if self.ui["timelines"] == 0:
            skip.add("timelines")
        return [p for p in PANES if p not in skip]

    def _pane(self, name: str, widget: urwid.Widget) -> urwid.Widget:
        return Pane(name, widget, self.mouse)

    def _win(self, name: str, n: int, cursor: int, height: int) -> int:
        off = window(n, cursor, height, self._offsets.get(name, 0))
        self._offsets[name] = off
        return off

    def build(self) -> urwid.Widget:
        """The screen from the model's current state."""
        m = self.model
        cl = m.client()
        cols, rows = self.size
        if cols <= 0 or rows <= 0:
            cols, rows = self.size = (120, 40)
        panes = self.panes()
        if self.focus not in panes:
            self.focus = "list" if "list" in panes else ("tree" if "tree" in panes else panes[0])
        self._geom = {}
        compact = rows < COMPACT_ROWS
        self._geom["compact"] = compact
        # top: address bar, tags bar
        top: list[urwid.Widget] = [self._address_bar(cols)]
        top.append(urwid.Text(view.tags_bar(m) or " ", wrap="clip"))
        # bottom: tx bar, timelines, toolbars, status bar
        bottom: list[urwid.Widget] = [bar(*view.tx_bar(m), width=cols)]
        tl_focus = self.focus == "timelines"
        if self.ui["timelines"] >= 1:
            w = timeline(view.tx_timeline_title(m), view.tx_progress(m), fill="progress",
                         focused=False, compact=compact, width=cols)  # fmt: skip
            bottom.append(self._pane("tx_timeline", w))
        if self.ui["timelines"] >= 2:
            bottom.append(bar(*view.next_tx_bar(m), width=cols))
            nxt = m.next_no(cl) if cl is not None else 0
            # D24: grey when the stepped tx was canceled, red at its last step
            fill = "progress"
            if nxt and cl is not None:
                if cl.txs[nxt - 1].canceled:
                    fill = "progress_grey"
                elif cl.s and cl.s >= m.steps_count(cl):
                    fill = "progress_red"
            w = timeline(view.steps_timeline_title(m), view.steps_progress(m), fill=fill,
                         focused=tl_focus, compact=compact, width=cols)  # fmt: skip
            bottom.append(self._pane("steps_timeline", w))
        tools = self._toolbars(cols)
        status = self._status_bar(cols)
        fixed = sum(_rows(w, cols) for w in [*top, *bottom]) + 1
        if rows - fixed - len(tools) < 5:
            tools = tools[: max(0, rows - fixed - 5)]  # tiny terminal: drop toolbar lines
        bottom += tools
        bottom.append(status)
        main_h = max(3, rows - fixed - len(tools))
        main = self._main_area(cl, cols, main_h)
        parts: list[Any] = [("pack", w) for w in top]
        parts.append((main_h, main))
        parts += [("pack", w) for w in bottom]
        body: urwid.Widget = urwid.Pile(parts)
        if self.overlay == "help":
            body = self._help_overlay(body, cols, rows)
        elif self.overlay == "export" and self.dialog is not None:
            body = urwid.Overlay(self.dialog, body, "center", min(50, cols), "middle",
                                 min(9, rows))  # fmt: skip
        return body

    # ------------------------------------------------------------------ parts
    def _address_bar(self, cols: int) -> urwid.Widget:
        right = "copy paste"
        if self.focus == "address" and self._addr is not None:
            edit = urwid.AttrMap(self._addr, "body")
            cols_w = urwid.Columns(
                [("pack", urwid.Text("◀ ▶  ")), edit, ("pack", urwid.Text(right))], dividechars=1
            )
            return self._pane("address", urwid.AttrMap(cols_w, "bar"))
        return self._pane("address", bar(view.address_bar(self.model), right))

    def _status_bar(self, cols: int) -> urwid.Widget:
        left, right = view.status_bar(self.model)
        self._spinning = time.monotonic() - self._busy_t < 0.5
        if self._spinning:
            self._spin = (self._spin + 1) % len(_SPINNER)
            left = f"{_SPINNER[self._spin]} {left}"
        if self.message:
            left = f"{left} | {self.message}"
        return bar(left, right, width=cols)

    def _toolbars(self, cols: int) -> list[urwid.Widget]:
        out: list[urwid.Widget] = []
        self._tool_lines = []
        for ri, row in enumerate(view.toolbar_rows(self.model, self.ui)):
            items = [
                (it.text(), self.focus == "toolbar" and self.tool_pos == (ri, ci))
                for ci, it in enumerate(row)
            ]
            ci = 0
            for line in pack_toolbar(items, cols):
                mk: list[Any] = []
                spans = []
                x = 0
                for text, focused in line:
                    if mk:
                        mk.append(" ")
                        x += 1
                    mk.append(("tool_focus" if focused else "body", text))
                    spans.append((ri, ci, x, x + len(text)))
                    x += len(text)
                    ci += 1
                idx = len(self._tool_lines)
                self._tool_lines.append(spans)
                out.append(self._pane(f"toolbar:{idx}", urwid.Text(mk, wrap="clip")))
        return out

    def _main_area(self, cl: Client | None, cols: int, h: int) -> urwid.Widget:
        m = self.model
        inner = max(1, h - 2)
        columns: list[Any] = []
        used = 0
        if self.wide():
            rows_ = view.client_list_rows(m)
            ids = [cid for cid, _ in rows_]
            if self.list_key in ids:
                self.list_cursor = ids.index(self.list_key)
            self.list_cursor = max(0, min(self.list_cursor, len(ids) - 1)) if ids else 0
            self.list_key = ids[self.list_cursor] if ids else None
            lw = max(22, min(34, max((len(plain(mk)) for _, mk in rows_), default=0) + 4))
            off = self._win("list", len(rows_), self.list_cursor, inner)
            focused = self.focus == "list"
            items = []
            for i, (_cid, mk) in enumerate(rows_[off : off + inner], off):
                pre = ("cursor", ">") if (focused and i == self.list_cursor) else " "
                items.append([pre, *_as_list(mk)])
            self._geom["list"] = off
            w = box(lines(items, 0, inner), view.client_list_title(m), focused)
            columns.append((lw, self._pane("list", w)))
            used += lw
        if self.ui["tree"]:
            tw = self._tree_width(cl)
            if cols - used - tw < 20:
                tw = max(16, (cols - used) // 2)
            columns.append((tw, self._tree_pane(cl, inner)))
            used += tw
        hidden = self.ui["view"] == "log" and m.filters.log_level <= 0 and self.ui["tree"]
        if hidden and not self.ui["reader"]:
            # D16: log level 0 hides the log pane; the tree takes the room
            if self.ui["tree"] and columns:
                columns[-1] = self._tree_pane(cl, inner)
            return urwid.Columns(columns)
        main = self._view_pane(cl, inner if not self.ui["reader"] else max(1, h // 2 - 2))
        if hidden:
            columns.append(self._reader_pane(cl, inner))
        elif self.ui["reader"]:
            rest = cols - used
            if rest >= 100:
                rd = self._reader_pane(cl, inner)
                columns.append(main)
                columns.append((rest // 2, rd))
            else:
                rh = h - h // 2
                rd = self._reader_pane(cl, max(1, rh - 2))
                columns.append(urwid.Pile([(h // 2, main), (rh, rd)]))
        else:
            columns.append(main)
        return urwid.Columns(columns)

    def _tree_width(self, cl: Client | None) -> int:
        if cl is None:
            return 24
        longest = max((len(n) for n in cl.names), default=8)
        return max(26, min(48, longest + 20))

    def _tree_pane(self, cl: Client | None, inner: int) -> urwid.Widget:
        m = self.model
        focused = self.focus == "tree"
        if cl is None:
            self._tree = []
            return self._pane("tree", box(urwid.SolidFill(" "), view.schema_title(None), focused))
        trows = view.tree_rows(m, cl, self.expanded, self.ui["expand"])
        self._tree = trows
        keys = [r.key for r in trows]
        if self.tree_key in keys:
            self.tree_cursor = keys.index(self.tree_key)
        elif cl.selected_state in keys:
            self.tree_cursor = keys.index(cl.selected_state)
        self.tree_cursor = max(0, min(self.tree_cursor, len(trows) - 1)) if trows else 0
        self.tree_key = keys[self.tree_cursor] if keys else None
        group_rows = 1 if cl.groups else 0
        h = max(1, inner - group_rows)
        off = self._win("tree", len(trows), self.tree_cursor, h)
        items = []
        for i, r in enumerate(trows[off : off + h], off):
            pre = ("cursor", ">") if (focused and i == self.tree_cursor) else " "
            items.append([pre, *_as_list(r.markup)])
        self._geom["tree"] = (off, group_rows)
        body: urwid.Widget = lines(items, 0, h)
        if group_rows:
            g = cl.selected_group
            label = f"{g}:{len(cl.groups.get(g, []))}" if g else "all"
            gattr = "tool_focus" if self.focus == "group" else "bar"
            gw = urwid.AttrMap(urwid.Text(f" Group: {label} ▼", wrap="clip"), gattr)
            body = urwid.Pile([("pack", self._pane("group", gw)), body])
        return self._pane("tree", box(body, view.schema_title(cl), focused))

    def _view_pane(self, cl: Client | None, inner: int) -> urwid.Widget:
        m = self.model
        focused = self.focus == "main"
        kind = self.ui["view"]
        if cl is not None and kind == "rain":
            rr = view.rain_rows(m, cl, inner)
            items = [mk for _, mk in rr]
            self._log_nos = [no for no, _ in rr]
            self._geom["main"] = 0
            return self._pane("main", box(lines(items, 0, inner), " Rain ", focused))
        if cl is not None and kind == "matrix":
            rows_ = mx.matrix_rows(m, cl)
            sel = cl.names.index(cl.selected_state) if cl.selected_state in cl.names else 0
            off = self._win("matrix", len(rows_), sel + 3, inner)
            self._geom["main"] = off
            w = box(lines(rows_, off, inner), mx.matrix_title(m, cl), focused)
            return self._pane("main", w)
        if kind != "log":
            title = " Rain " if kind == "rain" else " Matrix "
            return self._pane("main", box(urwid.SolidFill(" "), title, focused))
        if m.filters.log_level <= 0 or cl is None:
            self._log_nos = []
            return self._pane("main", box(urwid.SolidFill(" "), view.log_title(m), focused))
        pairs = self._log_lines(cl)
        self._log_nos = [no for no, _ in pairs]
        n = len(pairs)
        if self.log_scroll is not None:
            self.log_scroll = max(0, min(self.log_scroll, n - 1))
            off = self._win("log", n, self.log_scroll, inner)
        else:
            cur = 0
            for i, (no, _) in enumerate(pairs):
                if no <= cl.c:
                    cur = i
            off = max(0, min(cur - (inner * 2) // 3, n - inner))
            self._offsets["log"] = off
        self._geom["main"] = off
        f = m.filters
        if not f.canceled or not f.queued:
            # D15: a colour cell per line when canceled or queued txs are shown
            items = [[(self._gutter(cl, no), " "), *_as_list(mk)] for no, mk in pairs]
        else:
            items = [mk for _, mk in pairs]
        w = box(lines(items, off, inner, wrap=self.ui["wrap"]), view.log_title(m), focused)
        return self._pane("main", w)

    @staticmethod
    def _gutter(cl: Client, no: int) -> str:
        tx = cl.txs[no - 1] if 0 < no <= len(cl.txs) else None
        if tx is None:
            return "body"
        if tx.queued:
            return "gutter_yellow"
        if tx.canceled:
            return "gutter_red"
        if tx.is_empty:
            return "gutter_grey"
        return "gutter_green"

    def _log_lines(self, cl: Client) -> list[tuple[int, Any]]:
        pairs = view.log_lines(self.model, cl)
        if not self.ui["traces"]:
            # D18: fold multi-line entries (stack traces) to their first line
            pairs = [(no, self._fold(mk)) for no, mk in pairs]
        if self.ui["times"]:
            # D17: a grey timestamp line whenever the second changes
            out: list[tuple[int, Any]] = []
            last = None
            for no, mk in pairs:
                tx = cl.txs[no - 1] if 0 < no <= len(cl.txs) else None
                if tx is not None and tx.t // 10**9 != last:
                    last = tx.t // 10**9
                    out.append((no, [("grey", f"{_clock(tx.t)} t{tx.time_after}")]))
                out.append((no, mk))
            pairs = out
        return pairs

    @staticmethod
    def _fold(mk: Any) -> Any:
        text = plain(mk)
        if "\n" not in text:
            return mk
        first = text.split("\n", 1)[0]
        attr = mk[0][0] if isinstance(mk, list) and mk and isinstance(mk[0], tuple) else "body"
        return [(attr, first + " …")]

    def _reader_pane(self, cl: Client | None, inner: int) -> urwid.Widget:
        focused = self.focus == "reader"
        rrows = _reader_rows(self.model, cl) if cl is not None else []
        self._reader = rrows
        self.reader_cursor = max(0, min(self.reader_cursor, len(rrows) - 1)) if rrows else 0
        off = self._win("reader", len(rrows), self.reader_cursor, inner)
        items = []
        for i, (d, mk) in enumerate(rrows[off : off + inner], off):
            pre = ("cursor", ">") if (focused and i == self.reader_cursor) else " "
            items.append([pre, "  " * d, *_as_list(mk)])
        self._geom["reader"] = off
        return self._pane("reader", box(lines(items, 0, inner), " Reader ", focused))

    def _help_overlay(self, body: urwid.Widget, cols: int, rows: int) -> urwid.Widget:
        text = view.help_text(self.model, self.version)
        w = max(20, min(cols - 2, 100))
        h = max(5, min(rows - 2, len(text) + 2))
        inner = h - 2
        self.help_offset = max(0, min(self.help_offset, max(0, len(text) - inner)))
        lb = lines(list(text), self.help_offset, inner)
        hbox = urwid.AttrMap(urwid.LineBox(lb, title=" Help ", title_align="left"), "dialog")
        return urwid.Overlay(hbox, body, "center", w, "middle", h)

    # ------------------------------------------------------------------ keys
    def input_filter(self, keys: list[Any], raw: list[int]) -> list[Any]:
        """Undo urwid's ESC merging (tools.md §5, ESC vs alt): Escape followed quickly by
        another key arrives as ``meta KEY``. A batch starting with two ESC bytes (a real
        alt+arrow is ``ESC [1;3D``) and any ``meta`` key the debugger does not bind become
        ``esc`` then ``KEY``."""
        out: list[Any] = []
        double_esc = len(raw) >= 2 and raw[0] == 27 and raw[1] == 27
        for i, k in enumerate(keys):
            if isinstance(k, str) and k.startswith("meta "):
                bound = k in self._KEYS or k in ("meta d", "meta p", "meta n")
                if (i == 0 and double_esc) or not bound:
                    out += ["esc", k[5:]]
                    continue
            out.append(k)
        return out

    def keypress(self, size: Any, key: str) -> str | None:
        """Handle one key (urwid name); unknown keys are ignored."""
        m = self.model
        if key == "ctrl q":
            raise urwid.ExitMainLoop()
        if isinstance(size, tuple) and len(size) == 2:
            self.size = (int(size[0]), int(size[1]))
        self.message = ""
        self.guard(self._dispatch, key)
        if m.playing and self._play_alarm is None:
            self._schedule_play()
        self.redraw()
        return None

    def guard(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` (a key, mouse or timer action); a bug in it is logged to
        ``am-dbg-err.log`` and shown in the status bar instead of ending the debugger."""
        try:
            fn(*args)
        except urwid.ExitMainLoop:
            raise
        except Exception:
            self.errors += 1
            path = self.outputs.error(traceback.format_exc())
            self.message = f"internal error (see {path})" if path else "internal error"

    def _dispatch(self, key: str) -> None:
        if self.overlay is not None:
            self._overlay_key(key)
        elif self.focus == "address" and self._address_key(key):
            pass
        else:
            handler = self._KEYS.get(key)
            if handler is not None:
                handler(self)
            elif key in ("up", "down", "enter") or key in _PAGE_KEYS:
                self._pane_key(key)
            elif key == "backspace":
                if self.focus == "list":
                    self._remove_focused()
            elif key == "meta d":
                self._remove_focused()
            elif (
                len(key) == 1 and (key.isalnum() or key in "-_") and self.focus in ("list", "tree")
            ):
                self._type_search(key)

    def _overlay_key(self, key: str) -> None:
        if self.overlay == "help":
            if key in ("esc", "?", "q", "enter"):
                self._close_overlay()
            elif key in ("up", "down"):
                self.help_offset = max(0, self.help_offset + (1 if key == "down" else -1))
            elif key in _PAGE_KEYS:
                self.help_offset = max(0, self.help_offset + 10 * _PAGE_KEYS[key])
            return
        if self.overlay == "export" and self.dialog is not None:
            if key == "esc":
                self._close_overlay()
                return
            pile = self._dialog_pile
            if key in ("tab", "shift tab") and pile is not None:
                n = len(pile.contents)
                pos = pile.focus_position
                for _ in range(n):
                    pos = (pos + (1 if key == "tab" else -1)) % n
                    if pile.contents[pos][0].selectable():
                        break
                pile.focus_position = pos
                return
            if key == "enter" and pile is not None and pile.focus is self._edit:
                self._export_save()
                return
            self.dialog.keypress((min(50, self.size[0]), min(9, self.size[1])), key)

    def _address_key(self, key: str) -> bool:
        """Keys of the focused address bar (an editable ``mach://`` address)."""
        edit = self._addr
        if edit is None:
            return False
        if key == "enter":
            url = edit.get_edit_text().strip()
            try:
                if url:
                    self.model.open_url(url)
                    if self.model.pending_url:
                        self.message = f"waiting for {url}"
            except ValueError as exc:
                self.message = f"bad address: {exc}"
            self._set_focus("list" if self.wide() else "tree")
            return True
        if key in ("esc", "tab", "shift tab", "ctrl q") or key.startswith("meta "):
            return False
        if len(key) == 1 or key in ("backspace", "delete", "left", "right", "home", "end"):
            edit.keypress((max(10, self.size[0] - 20),), key)
            return True
        return False

    def _set_focus(self, name: str) -> None:
        if name == "address":
            url = self.model.url()
            self._addr = urwid.Edit("", url)
            self._addr.set_edit_pos(len(url))
        self.focus = name

    # navigation ---------------------------------------------------------------
    def _move(self, fn: Callable[[], None]) -> None:
        """A throttled tx move (D25): at most one per MOVE_EVERY; up to MAX_PENDING wait
        their turn, more are dropped."""
        now = time.monotonic()
        wait = self._last_move + MOVE_EVERY - now
        if wait <= 0 and not self._pending_moves:
            self._last_move = now
            fn()
            self.log_scroll = None
            return
        if self._pending_moves >= MAX_PENDING or self.loop is None:
            return
        self._pending_moves += 1
        delay = max(0.0, wait) + MOVE_EVERY * (self._pending_moves - 1)

        def later(*_: Any) -> None:
            self._pending_moves -= 1
            self._last_move = time.monotonic()
            self.guard(fn)
            self.log_scroll = None
            self.redraw()

        self.loop.set_alarm_in(delay, later)

    def _left(self) -> None:
        self._arrow(-1)

    def _right(self) -> None:
        self._arrow(1)

    def _arrow(self, d: int) -> None:
        m = self.model
        if self.focus == "toolbar":
            self._tool_move(0, d)
        elif self.focus == "timelines":
            (m.step_fwd if d > 0 else m.step_back)()
        elif self.focus == "main" and self.ui["view"] == "rain":
            self._select_state_step(d)
        else:
            self._move(m.next_tx if d > 0 else m.prev_tx)

    def _select_state_step(self, d: int) -> None:
        cl = self.model.client()
        if cl is None or not cl.names:
            return
        i = cl.names.index(cl.selected_state) if cl.selected_state in cl.names else -1
        cl.selected_state = cl.names[(i + d) % len(cl.names)] if i >= 0 or d > 0 else cl.names[-1]
        self.model.version += 1

    def _tool_move(self, dr: int, dc: int) -> None:
        rows = view.toolbar_rows(self.model, self.ui)
        r, c = self.tool_pos
        r = (r + dr) % len(rows)
        c = (c + dc) % len(rows[r]) if dc else min(c, len(rows[r]) - 1)
        self.tool_pos = (r, c)

    def _focus_step(self, d: int) -> None:
        panes = self.panes()
        i = panes.index(self.focus) if self.focus in panes else 0
        self._set_focus(panes[(i + d) % len(panes)])

    def _esc(self) -> None:
        self._set_focus("list" if self.wide() else "tree")
        self.log_scroll = None
        self.list_key = self.model.selected

    def _pane_key(self, key: str) -> None:
        m = self.model
        cl = m.client()
        step = {"up": -1, "down": 1}.get(key, 0)
        page = _PAGE_KEYS.get(key, 0)
        if self.focus == "list":
            ids = [c.id for _, c in m.client_list()]
            if not ids:
                return
            if key == "enter":
                m.select(ids[self.list_cursor])
                return
            self.list_cursor = max(0, min(len(ids) - 1, self.list_cursor + step + 10 * page))
            self.list_key = ids[self.list_cursor]
        elif self.focus == "tree":
            self._tree_key(key, step + 10 * page)
        elif self.focus == "group" and cl is not None:
            order = [None, *(cl.groups_order or list(cl.groups))]
            i = order.index(cl.selected_group) if cl.selected_group in order else 0
            cl.selected_group = order[(i + (step or 1)) % len(order)]
            m.filters_changed()
        elif self.focus == "toolbar":
            if step:
                self._tool_move(step, 0)
            elif key == "enter":
                tr, tc = self.tool_pos
                self.press(view.toolbar_rows(m, self.ui)[tr][tc].id)
        elif self.focus == "main":
            if self.ui["view"] == "rain":
                if step:
                    self._move(m.next_tx if step > 0 else m.prev_tx)
            elif self.ui["view"] == "matrix":
                if step:
                    self._select_state_step(step)
            elif key == "enter":
                nos = self._log_nos
                li = self.log_scroll
                if cl is not None and li is not None and 0 <= li < len(nos):
                    m.goto(cl.id, nos[li])
                    self.log_scroll = None
            elif cl is not None and (step or page):
                n = len(self._log_nos)
                cur = (
                    self.log_scroll
                    if self.log_scroll is not None
                    else max((i for i, no in enumerate(self._log_nos) if no <= cl.c), default=0)
                )
                self.log_scroll = max(0, min(n - 1, cur + step + 10 * page))
        elif self.focus == "reader":
            if key == "enter":
                if 0 <= self.reader_cursor < len(self._reader):
                    self._open_reader_item(plain(self._reader[self.reader_cursor][1]))
            else:
                n = len(self._reader)
                self.reader_cursor = max(0, min(n - 1, self.reader_cursor + step + 10 * page))

    def _tree_key(self, key: str, step: int) -> None:
        m = self.model
        cl = m.client()
        rows = self._tree
        if not rows or cl is None:
            return
        if step:
            self.tree_cursor = max(0, min(len(rows) - 1, self.tree_cursor + step))
            row = rows[self.tree_cursor]
            self.tree_key = row.key
            if row.state is not None:
                cl.selected_state = row.state
        elif key == "enter":
            row = rows[self.tree_cursor]
            if row.target:
                # D9: jump to the relation's target state
                cl.selected_state = row.target
                self.tree_key = row.target
            elif row.state is not None and row.depth == 0:
                cl.selected_state = row.state
                if row.state in self.expanded:
                    self.expanded.discard(row.state)
                else:
                    self.expanded.add(row.state)
        m.version += 1

    def _open_reader_item(self, text: str) -> None:
        i = text.find("mach://")
        if i < 0:
            return
        url = text[i:].split()[0]
        try:
            self.model.open_url(url)
        except ValueError as exc:
            self.message = f"bad address: {exc}"

    def press(self, action: str) -> None:
        """Press a toolbar button (D38) by its id."""
        m = self.model
        simple: dict[str, Callable[[], None]] = {
            "prev_tx": m.prev_tx, "next_tx": m.next_tx, "step_back": m.step_back,
            "step_fwd": m.step_fwd, "jump_back": m.jump_back, "jump_fwd": m.jump_fwd,
            "first": m.first, "last": m.last,
        }  # fmt: skip
        if action in simple:
            simple[action]()
        elif action in _FILTERS or action == "log_level":
            m.toggle_filter(action)
        elif action == "play":
            self._toggle_play()
        elif action == "tail":
            m.set_tail(not m.tail)
        elif action == "help":
            self._help()
        elif action == "export":
            self._open_export()
        elif action in ("reader", "wrap", "narrow", "times", "expand", "traces"):
            self.ui[action] = not self.ui[action]
        elif action == "timelines":
            self.ui["timelines"] = (self.ui["timelines"] + 1) % 3
        elif action in ("rain", "matrix"):
            if self.ui["view"] == action:
                self.ui["view"], self.ui["tree"] = "log", True
            else:
                self.ui["view"] = action
        elif action in ("client_up", "client_down"):
            ids = [c.id for _, c in m.client_list()]
            if ids:
                i = ids.index(m.selected) if m.selected in ids else -1
                i += 1 if action == "client_down" else -1
                m.select(ids[i % len(ids)])
                self.list_key = m.selected
        m.version += 1

    def _remove_focused(self) -> None:
        m = self.model
        ids = [c.id for _, c in m.client_list()]
        if self.focus == "list" and ids:
            cid = ids[min(self.list_cursor, len(ids) - 1)]
        elif m.selected is not None:
            cid = m.selected
        else:
            return
        m.remove_client(cid)
        ids = [c.id for _, c in m.client_list()]
        self.list_cursor = max(0, min(self.list_cursor, len(ids) - 1))
        self.list_key = ids[self.list_cursor] if ids else None

    def _type_search(self, ch: str) -> None:
        """D5: jump to the next list item / tree state starting with the typed text."""
        now = time.monotonic()
        if now - self._search_t > SEARCH_RESET:
            self._search = ""
        self._search_t = now
        self._search += ch.lower()
        if self.focus == "list":
            ids = [c.id for _, c in self.model.client_list()]
            for i in [*range(self.list_cursor, len(ids)), *range(self.list_cursor)]:
                if ids[i].lower().startswith(self._search):
                    self.list_cursor = i
                    self.list_key = ids[i]
                    return
        else:
            n = len(self._tree)
            for i in [*range(self.tree_cursor, n), *range(self.tree_cursor)]:
                r = self._tree[i]
                if r.depth == 0 and r.state and r.state.lower().startswith(self._search):
                    self.tree_cursor = i
                    self.tree_key = r.key
                    cl = self.model.client()
                    if cl is not None:
                        cl.selected_state = r.state
                        self.model.version += 1
                    return

    # play ---------------------------------------------------------------------
    def _toggle_play(self) -> None:
        m = self.model
        m.playing = not m.playing
        if m.playing:
            m.tail = False
        m.version += 1

    def _schedule_play(self) -> None:
        if self.loop is None:
            return

        def tick(*_: Any) -> None:
            self._play_alarm = None
            m = self.model
            if not m.playing:
                return
            self.guard(m.play_tick, self.focus == "timelines")
            if m.playing:
                self._schedule_play()
            self.redraw()

        self._play_alarm = self.loop.set_alarm_in(PLAY_EVERY, tick)

    # dialogs ------------------------------------------------------------------
    def _open_export(self) -> None:
        """D41: the ``Export to a file`` dialog."""
        edit = urwid.Edit("Filename: ", "am-dbg-dump")
        single = urwid.CheckBox("Single Frame")
        save = urwid.Button("Save", lambda _b: self._export_save())
        cancel = urwid.Button("Cancel", lambda _b: self._close_overlay())
        pile = urwid.Pile([edit, single, urwid.Divider(), urwid.Columns([save, cancel], 2)])
        self._edit = edit
        self._single = single
        self._dialog_pile = pile
        title = " Export to a file "
        self.dialog = urwid.AttrMap(
            urwid.LineBox(urwid.Filler(pile, valign="top"), title=title), "dialog"
        )
        self.overlay = "export"

    def _export_save(self) -> None:
        if self._edit is None or self._single is None:
            return
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
        self._dialog_pile = None

    def _help(self) -> None:
        self.overlay = None if self.overlay == "help" else "help"
        self.help_offset = 0

    def _cycle_view(self) -> None:
        cur = (bool(self.ui["tree"]), self.ui["view"])
        i = VIEWS.index(cur) if cur in VIEWS else -1
        self.ui["tree"], self.ui["view"] = VIEWS[(i + 1) % len(VIEWS)]

    def _toggle_rain(self) -> None:
        if self.ui["view"] == "rain":
            self.ui["view"], self.ui["tree"] = "log", True
        else:
            self.ui["view"] = "rain"

    _KEYS: dict[str, Callable[[DbgApp], None]] = {
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
        "meta o": lambda self: self.press("reader"),
        "meta m": _cycle_view,
        "meta r": _toggle_rain,
        "meta e": lambda self: self.press("expand"),
        "meta s": _open_export,
        "meta f": lambda self: self._set_focus("toolbar"),
    }

    # mouse --------------------------------------------------------------------
    def mouse(self, name: str, size: Any, event: str, button: int, col: int, row: int) -> None:
        """A mouse event on a pane (D48): click focuses / selects, the wheel scrolls."""
        self.guard(self._mouse, name, size, event, button, col, row)
        self.redraw()

    def _mouse(self, name: str, size: Any, event: str, button: int, col: int, row: int) -> None:
        if self.overlay is not None or not event.startswith("mouse press"):
            return
        m = self.model
        cl = m.client()
        wheel = {4: -1, 5: 1}.get(button, 0)
        width = int(size[0]) if size else 1
        if name in ("tx_timeline", "steps_timeline") and cl is not None:
            compact = bool(self._geom.get("compact"))
            x = col if compact else col - 1
            span = width if compact else max(1, width - 2)
            frac = max(0.0, min(1.0, x / max(1, span - 1)))
            if name == "tx_timeline":
                vis = m.visible(cl)
                if wheel:
                    for _ in range(5):
                        (m.next_tx if wheel > 0 else m.prev_tx)()
                elif button == 1:
                    k = round(frac * len(vis))
                    m.goto(cl.id, vis[k - 1] if k else 0)
            else:
                if wheel:
                    (m.step_fwd if wheel > 0 else m.step_back)()
                elif button == 1:
                    m.goto(cl.id, cl.c, round(frac * m.steps_count(cl)))
                    self._set_focus("timelines")
        elif name.startswith("toolbar:"):
            if button == 1:
                idx = int(name.split(":", 1)[1])
                for ri, ci, x0, x1 in self._tool_lines[idx] if idx < len(self._tool_lines) else []:
                    if x0 <= col < x1:
                        self._set_focus("toolbar")
                        self.tool_pos = (ri, ci)
                        self.press(view.toolbar_rows(m, self.ui)[ri][ci].id)
                        break
        elif name == "address":
            if button == 1:
                self._set_focus("address")
        elif wheel:
            if self.focus != name and name in self.panes():
                self._set_focus(name)
            self._pane_key("down" if wheel > 0 else "up")
        elif button == 1 and name in self.panes():
            self._set_focus(name)
            self._click(name, row)

    def _click(self, name: str, row: int) -> None:
        m = self.model
        cl = m.client()
        if name == "list":
            ids = [c.id for _, c in m.client_list()]
            i = self._geom.get("list", 0) + row - 1
            if 0 <= i < len(ids) and row >= 1:
                self.list_cursor = i
                self.list_key = ids[i]
                m.select(ids[i])
        elif name == "tree":
            off, grp = self._geom.get("tree", (0, 0))
            i = off + row - 1 - grp
            if 0 <= i < len(self._tree) and row >= 1 + grp:
                self.tree_cursor = i
                r = self._tree[i]
                self.tree_key = r.key
                if cl is not None and r.state is not None:
                    cl.selected_state = r.target or r.state
                    m.version += 1
        elif name == "main" and cl is not None and self.ui["view"] == "log":
            # D19: a click on a log line goes to its tx
            i = self._geom.get("main", 0) + row - 1
            if 0 <= i < len(self._log_nos) and row >= 1:
                m.goto(cl.id, self._log_nos[i])
        elif name == "reader":
            i = self._geom.get("reader", 0) + row - 1
            if 0 <= i < len(self._reader) and row >= 1:
                self.reader_cursor = i
                self._open_reader_item(plain(self._reader[i][1]))


async def run_ui(
    app: DbgApp,
    server: Any | None,
    *,
    mouse: bool = False,
    background: Iterable[Callable[[], Awaitable[None]]] = (),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the UI, the debugger ``server`` (already bound) and the ``background`` tasks in
    one nursery until ctrl+q, SIGINT or SIGTERM.

    urwid's ``TrioEventLoop.run_async()`` is awaited inside the nursery (urwid/urwid#392):
    its alarms, input and the server's tasks share the one Trio run. A signal ends the
    urwid loop through an alarm (so the terminal is restored), then the nursery is
    cancelled.
    """
    import signal

    evl = urwid.TrioEventLoop()
    loop = urwid.MainLoop(
        app.screen,
        PALETTE,
        event_loop=evl,
        handle_mouse=mouse,
        pop_ups=False,
        input_filter=app.input_filter,
    )
    app.loop = loop
    if server is not None:
        server.on_change = app.changed

    def stop(*_: Any) -> None:
        raise urwid.ExitMainLoop()

    async def on_signal(sigs: Any) -> None:
        async for _ in sigs:
            # leave through urwid, so the terminal is restored
            loop.set_alarm_in(0, stop)
            return

    async def housekeeping() -> None:
        while True:
            await trio.sleep(0.25)
            app.tick()

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as sigs:
        async with trio.open_nursery() as nursery:
            if server is not None:
                await nursery.start(server.run)
            nursery.start_soon(on_signal, sigs)
            nursery.start_soon(housekeeping)
            for fn in background:
                nursery.start_soon(fn)
            task_status.started()
            with loop.start():
                screen = loop.screen
                if hasattr(screen, "complete_wait"):
                    # a lone Escape is read as such after 50 ms (urwid waits 125 ms)
                    screen.complete_wait = 0.05
                if hasattr(screen, "tty_signal_keys"):
                    # free ctrl+q / ctrl+s from terminal flow control (ctrl+q quits)
                    screen.tty_signal_keys(start="undefined", stop="undefined")
                app.redraw()
                await evl.run_async()
            nursery.cancel_scope.cancel()
    app.outputs.tick(app.model, force=True)
