"""Text renderers of the debugger's panes (tools.md §1.2-1.3): pure functions of the model.

Each returns plain text or urwid-style *markup* (a str, or a list of ``(attr, text)``
tuples and strs), which the UI (``trio_am.dbg.ui``) puts on screen and tests check
directly. Nothing here imports urwid. Attribute names the UI maps to colours:
``active``, ``active_multi``, ``inactive``, ``error``, ``disconnected``, ``err_recent``,
``selected``, ``touched``, ``called``, ``faded``, ``grey``, ``green``, ``yellow``, ``red``,
``title``, ``bold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .model import LOG_LEVEL_NAMES, Client, Model, Step, Tx

__all__ = [
    "KEYS",
    "Markup",
    "ToolbarItem",
    "TreeRow",
    "address_bar",
    "client_label",
    "client_list_rows",
    "client_list_title",
    "help_text",
    "log_lines",
    "log_title",
    "next_tx_bar",
    "rain_rows",
    "reader_rows",
    "schema_title",
    "status_bar",
    "step_words",
    "steps_timeline_title",
    "tags_bar",
    "toolbar_rows",
    "tree_rows",
    "tx_bar",
    "tx_summary",
    "tx_timeline_title",
]

Markup = str | list[Any]

_TYPES = {0: "add", 1: "remove", 2: "set", 3: "eval"}
_REL = {0: "after", 1: "add", 2: "require", 3: "remove"}
_REL_NODES = (("Add", "add"), ("Require", "require"), ("Remove", "remove"), ("After", "after"))

#: (keys, what) for the help screen, in the order shown.
KEYS: tuple[tuple[str, str], ...] = (
    ("left / right", "previous / next transition (steps when the steps timeline is focused)"),
    ("alt+j / alt+k", "step back / forward through the next transition"),
    (
        "alt+h / alt+l, alt+left / alt+right",
        "jump back / forward (50 txs, or to the selected state)",
    ),
    ("home / end", "first / last transition"),
    ("alt+v", "tail mode (follow the newest transition)"),
    ("space", "play / pause"),
    ("up / down, enter", "move / select in the focused pane"),
    ("tab / shift+tab", "focus the next / previous pane"),
    ("esc", "close a dialog, or focus the client list"),
    ("alt+o", "reader pane"),
    ("alt+m", "cycle views: tree+log, tree+matrix, tree+rain, matrix, rain"),
    ("alt+r", "rain view"),
    ("alt+e", "expand / collapse all tree nodes"),
    ("alt+f", "focus the toolbars (left / right, enter presses)"),
    ("alt+s", "export to a file"),
    ("backspace, alt+d", "remove the focused client"),
    ("alt+p / alt+n", "page up / down"),
    ("?", "this help"),
    ("ctrl+q", "quit"),
)


def _names(cl: Client, idxs: list[int]) -> str:
    return " ".join(cl.names[i] if 0 <= i < len(cl.names) else f"#{i}" for i in idxs)


def _clock(ns: int) -> str:
    if not ns:
        return "--:--:--.------"
    return datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")


def _mode(model: Model) -> str:
    if model.tail:
        return "Tail"
    if model.playing:
        return "Playing"
    return "Paused"


def tx_summary(cl: Client, tx: Tx) -> str:
    """``Time: +d | TYPE: States`` of one record (``q`` before TYPE when queued,
    `` multi`` after it for a single multi state)."""
    typ = _TYPES.get(tx.type, str(tx.type))
    if tx.queued:
        typ = "q " + typ
    if len(tx.called) == 1:
        name = cl.names[tx.called[0]] if 0 <= tx.called[0] < len(cl.names) else ""
        st = cl.states.get(name)
        if st is not None and st.multi:
            typ += " multi"
    return f"Time: +{tx.time_diff} | {typ}: {_names(cl, tx.called)}"


def _tx_right(tx: Tx) -> str:
    parts = []
    if tx.auto:
        parts.append("auto")
    if tx.check:
        parts.append("check")
    if tx.canceled:
        parts.append("canceled")
    parts += [
        f"add: {len(tx.added)}",
        f"rm: {len(tx.removed)}",
        f"touch: {len(tx.touched)}",
        _clock(tx.t),
    ]
    return " | ".join(parts)


def tx_bar(model: Model) -> tuple[Markup, Markup]:
    """The current-tx bar (D22): ``MODE | tx: n | Time: +d | TYPE: States`` and its right
    side; ``Listening for connections on HOST:PORT`` with no client."""
    cl = model.client()
    if cl is None:
        if model.listen_addr:
            return f"Listening for connections on {model.listen_addr}", ""
        return "No machines (not listening)", ""
    if cl.c <= 0 or not cl.txs:
        text = "No transitions yet..." if not cl.txs else "Initial machine schema"
        return f"{_mode(model)} | {text}", ""
    tx = cl.txs[min(cl.c, len(cl.txs)) - 1]
    left = f"{_mode(model)} | tx: {cl.c} | {tx_summary(cl, tx)}"
    attr = "red" if tx.canceled else ("yellow" if tx.queued else "bold")
    return [(attr, left)], _tx_right(tx)


def next_tx_bar(model: Model) -> tuple[Markup, Markup]:
    """The next-tx bar (D24): ``Next | tx: n | …`` for the tx the steps timeline walks."""
    cl = model.client()
    if cl is None:
        return "", ""
    n = model.next_no(cl)
    if not n:
        return "Next | none", ""
    tx = cl.txs[n - 1]
    return f"Next | tx: {n} | {tx_summary(cl, tx)}", _tx_right(tx)


def tx_timeline_title(model: Model) -> str:
    """`` Transition c / N `` or, when filters hide txs, `` Transition p / F (c / N) ``."""
    cl = model.client()
    if cl is None:
        return " Transition 0 / 0 "
    n = len(cl.txs)
    vis = model.visible(cl)
    if len(vis) < n:
        return f" Transition {model.vis_pos(cl)} / {len(vis)} ({cl.c} / {n}) "
    return f" Transition {cl.c} / {n} "


def tx_progress(model: Model) -> float:
    """The tx timeline's fill, 0..1."""
    cl = model.client()
    if cl is None or not cl.txs:
        return 0.0
    vis = model.visible(cl)
    if not vis:
        return 0.0
    return model.vis_pos(cl) / len(vis)


def steps_timeline_title(model: Model) -> str:
    """`` Next mutation step s / S ``."""
    cl = model.client()
    if cl is None:
        return " Next mutation step 0 / 0 "
    return f" Next mutation step {cl.s} / {model.steps_count(cl)} "


def steps_progress(model: Model) -> float:
    """The steps timeline's fill, 0..1."""
    cl = model.client()
    total = model.steps_count(cl) if cl is not None else 0
    return (cl.s / total) if cl is not None and total else 0.0


# --------------------------------------------------------------------------------- clients
def client_label(model: Model, cl: Client) -> str:
    """``id F|n[+]`` (D3): F ``R`` Ready / ``S`` Start active (``E`` prefix: Exception),
    n = its txs at or before the viewed moment, ``+`` = later ones exist."""
    c = model.client_c_at(cl)
    flag = ""
    if cl.is_active_at(c, "Ready"):
        flag = "R"
    elif cl.is_active_at(c, "Start"):
        flag = "S"
    if cl.is_error_at(c):
        flag = "E" + flag
    more = "+" if c < len(cl.txs) else ""
    return f"{cl.id} {flag}|{c}{more}"


def client_list_rows(model: Model) -> list[tuple[str, Markup]]:
    """``(id, row)`` for the client list, children under parents with ``- `` per level."""
    rows: list[tuple[str, Markup]] = []
    for depth, cl in model.client_list():
        text = "-" * depth + (" " if depth else "") + client_label(model, cl)
        c = model.client_c_at(cl)
        if cl.id == model.selected:
            attr = "selected"
        elif not cl.connected:
            attr = "disconnected"
        elif cl.is_error_at(c):
            attr = "error"
        elif any(c - 100 < n <= c for n in cl.err_nos[-3:]):
            attr = "err_recent"
        else:
            attr = "body"
        rows.append((cl.id, [(attr, text)]))
    return rows


def client_list_title(model: Model) -> str:
    """`` Machines:N T:SUM ``."""
    total = sum(cl.mtime for cl in model.clients.values())
    return f" Machines:{len(model.clients)} T:{total} "


# ------------------------------------------------------------------------------------ tree
@dataclass
class TreeRow:
    """One row of the schema tree: a state, or a child node of an expanded state."""

    key: str
    depth: int
    markup: Markup
    state: str | None = None
    target: str | None = None


def schema_title(cl: Client | None) -> str:
    """`` Schema:N ``."""
    return f" Schema:{len(cl.names) if cl is not None else 0} "


def _step_marks(cl: Client, tx: Tx | None, s: int) -> dict[int, str]:
    marks: dict[int, str] = {}
    if tx is None or s <= 0:
        return marks
    for st in tx.steps[:s]:
        i = st.to if st.to >= 0 else st.from_
        if i < 0:
            continue
        if st.kind & 4:
            marks[i] = marks.get(i, "") + "+"
        elif st.kind & 24:
            marks[i] = marks.get(i, "") + "-"
        elif st.kind & 2:
            marks[i] = marks.get(i, "") + "*"
        elif st.kind & 64:
            marks[i] = marks.get(i, "") + "!"
    return marks


def tree_rows(
    model: Model, cl: Client, expanded: set[str], all_expanded: bool = False
) -> list[TreeRow]:
    """The schema tree (D8, D12): a row per state ``Name  F|tick`` (``M`` multi), and for
    expanded states ``auto multi``, relation nodes and ``Tags``. While stepping, touched
    states sort first, carry step marks and are expanded."""
    ticks = cl.time_at(cl.c)
    order = list(range(len(cl.names)))
    nxt = model.next_no(cl)
    step_tx = cl.txs[nxt - 1] if nxt and cl.s > 0 else None
    marks = _step_marks(cl, step_tx, cl.s)
    touched: list[int] = []
    if step_tx is not None:
        touched = [i for i in step_tx.touched if 0 <= i < len(cl.names)]
        order = touched + [i for i in order if i not in touched]
    group = cl.groups.get(cl.selected_group) if cl.selected_group else None
    width = max((len(n) for n in cl.names), default=0) + 1
    rows: list[TreeRow] = []
    err = cl.is_error_at(cl.c)
    called = set(step_tx.called) if step_tx is not None else set()
    for i in order:
        name = cl.names[i]
        if group is not None and i not in group:
            continue
        st = cl.states.get(name)
        multi = bool(st and st.multi)
        tick = ticks[i] if i < len(ticks) else 0
        active = bool(tick & 1)
        mark = marks.get(i, "")
        text = f"{name:<{width}}{'M' if multi else ''}|{tick}{mark}"
        if name == cl.selected_state:
            attr = "selected"
        elif active and (name == "Exception" or name.startswith("Err")) and err:
            attr = "error"
        elif active:
            attr = "active_multi" if multi else "active"
        else:
            attr = "inactive"
        if i in touched:
            attr += "_touched" if attr != "selected" else ""
        markup: list[Any] = [(attr, text)]
        if i in called:
            markup.append(("called", " (called)"))
        rows.append(TreeRow(name, 0, markup, state=name))
        if not (all_expanded or name in expanded or i in touched) or st is None:
            continue
        flags = " ".join(f for f, on in (("auto", st.auto), ("multi", st.multi)) if on)
        if flags:
            rows.append(TreeRow(f"{name}/flags", 1, [("faded", "  " + flags)], state=name))
        for label, rel in _REL_NODES:
            targets = getattr(st, rel, [])
            if targets:
                rows.append(TreeRow(f"{name}/{rel}", 1, "  " + label, state=name))
                for t in targets:
                    rows.append(TreeRow(f"{name}/{rel}/{t}", 2, "    " + t, state=name, target=t))
        if st.tags:
            rows.append(TreeRow(f"{name}/tags", 1, "  Tags", state=name))
            rows.append(
                TreeRow(f"{name}/tags/", 2, "    " + " ".join("#" + t for t in st.tags), state=name)
            )
    return rows


# ------------------------------------------------------------------------------------- log
def log_title(model: Model) -> str:
    """`` Log:LEVEL (tSUM) ``."""
    cl = model.client()
    t = cl.mtime_at(cl.c) if cl is not None else 0
    return f" Log:{LOG_LEVEL_NAMES[model.filters.log_level]} (t{t}) "


def _synthetic(cl: Client, tx: Tx) -> str | None:
    sign = "-" if tx.type == 1 else "+"
    states = " ".join(sign + n for n in _names(cl, tx.called).split())
    if tx.queued:
        return f"[{'aqueu' if tx.auto else 'queue'}] {states}"
    if tx.canceled:
        return f"[cance] {states}"
    if tx.is_empty:
        return f"[empty] {states}"
    return None


def log_lines(model: Model, cl: Client, around: int = 200) -> list[tuple[int, Markup]]:
    """``(tx number, line)`` for the visible txs near the cursor (``around`` txs each side):
    their log lines up to the log level, plus synthetic lines for queued, canceled and
    empty ones (D14). Level 0 gives no lines."""
    level = model.filters.log_level
    if level <= 0:
        return []
    vis = model.visible(cl)
    if not vis:
        return []
    pos = max(0, model.vis_pos(cl) - 1)
    lo, hi = max(0, pos - around), min(len(vis), pos + around + 1)
    out: list[tuple[int, Markup]] = []
    for no in vis[lo:hi]:
        tx = cl.txs[no - 1]
        cur = no == cl.c
        attr = "selected" if cur else "body"
        for e in tx.pre_log:
            if e.level <= level:
                out.append((no, [("faded" if e.text.startswith("[exter]") else attr, e.text)]))
        syn = _synthetic(cl, tx)
        if syn is not None:
            out.append((no, [("grey" if not cur else attr, syn)]))
        for e in tx.log:
            if e.level <= level:
                out.append((no, [("error" if e.text.startswith("[error") else attr, e.text)]))
    return out


# ---------------------------------------------------------------------------------- reader
def reader_rows(model: Model, cl: Client) -> list[tuple[int, Markup]]:
    """The reader pane (D21) for the current tx: ``(depth, line)`` rows of the sections
    Source, Queue, Executed, Arguments and the open subscriptions."""
    rows: list[tuple[int, Markup]] = []
    tx = cl.txs[cl.c - 1] if 0 < cl.c <= len(cl.txs) else None
    if tx is None:
        rows.append((0, "Initial machine schema"))
        return rows
    # Source
    src = tx.src
    rows.append((0, [("title", "Source")]))
    if src is None:
        rows.append((1, "self"))
    else:
        rows.append((1, f"mach://{src[0]}/{src[1]}"))
        rows.append((1, f"t{src[2]}"))
    # Queue
    queued = [t for t in cl.txs[cl.c :] if t.queued and not t.exec_no][:50]
    rows.append((0, [("title", f"Queue ({tx.qlen})")]))
    rows.append((1, f"current q{tx.qtick}"))
    if tx.mut_qtick:
        rows.append((1, f"executed at q{tx.qtick}, queued for q{tx.mut_qtick}"))
    rows.append((1, f"length {tx.qlen}"))
    for q in queued:
        rows.append((2, f"q{q.mut_qtick} {tx_summary(cl, q)}"))
    # Executed handlers
    handlers = [st for st in tx.steps if st.kind & 2 and st.name]
    rows.append((0, [("title", f"Executed ({len(handlers)})")]))
    for st in handlers:
        dur = f" {st.dur / 1000:.0f}us" if st.dur else ""
        rows.append((1, f"{st.name}:{cl.id}{dur}"))
    # Arguments
    rows.append((0, [("title", f"Arguments ({len(tx.args)})")]))
    for k in sorted(tx.args):
        rows.append((1, f"{k}={tx.args[k]}"))
    if tx.err:
        rows.append((0, [("title", "Error")]))
        rows.append((1, [("error", tx.err)]))
    # subscriptions open at this moment, from log events
    subs = _open_subs(cl)
    for title in ("When", "WhenNot", "WhenTime", "WhenArgs", "WhenQueue", "StateCtx"):
        items = subs.get(title, [])
        rows.append((0, [("title", f"{title} ({len(items)})")]))
        for it in items:
            rows.append((1, it))
    return rows


_EV_SECTION = {
    "when": "When",
    "whenNot": "WhenNot",
    "whenTime": "WhenTime",
    "whenArgs": "WhenArgs",
    "whenQueue": "WhenQueue",
    "ctx": "StateCtx",
}


def _open_subs(cl: Client) -> dict[str, list[str]]:
    open_: dict[tuple[str, str], str] = {}
    for no in range(1, min(cl.c, len(cl.txs)) + 1):
        tx = cl.txs[no - 1]
        for e in (*tx.pre_log, *tx.log):
            ev = e.ev
            if not ev or not isinstance(ev[0], str) or ":" not in ev[0]:
                continue
            kind, _, what = ev[0].partition(":")
            section = _EV_SECTION.get(kind)
            if section is None:
                continue
            key = (section, repr(ev[1:]))
            if what == "new":
                open_[key] = f"{_ev_text(cl, ev[1:])} t{no}"
            elif what == "match":
                open_.pop(key, None)
    out: dict[str, list[str]] = {}
    for (section, _), text in open_.items():
        out.setdefault(section, []).append(text)
    return out


def _ev_text(cl: Client, rest: list[Any]) -> str:
    parts = []
    for item in rest:
        if isinstance(item, list):
            parts.append(
                " ".join(
                    cl.names[i] if isinstance(i, int) and 0 <= i < len(cl.names) else str(i)
                    for i in item
                )
            )
        else:
            parts.append(str(item))
    return " ".join(parts)


# ------------------------------------------------------------------------------------ rain
def rain_rows(model: Model, cl: Client, height: int) -> list[tuple[int, Markup]]:
    """Rain (D37): a row per visible tx around the cursor, a char per state: ``1`` active,
    ``2`` active+touched, ``|`` deactivated, ``c`` called but canceled, ``*`` touched,
    ``.`` other; then ``n | time``."""
    vis = model.visible(cl)
    if not vis:
        return []
    pos = max(0, model.vis_pos(cl) - 1)
    lo = max(0, min(pos - height // 2, len(vis) - height))
    out: list[tuple[int, Markup]] = []
    for no in vis[lo : lo + height]:
        tx = cl.txs[no - 1]
        touched = set(tx.touched)
        called = set(tx.called)
        chars = []
        for i in range(len(cl.names)):
            after = tx.after[i] if i < len(tx.after) else 0
            before = tx.before[i] if i < len(tx.before) else 0
            if i in called and tx.canceled:
                ch = "c"
            elif after & 1:
                ch = "2" if i in touched else "1"
            elif before & 1:
                ch = "|"
            elif i in touched:
                ch = "*"
            else:
                ch = "."
            chars.append(ch)
        attr = "selected" if no == cl.c else ("error" if tx.is_error else "body")
        out.append((no, [(attr, "".join(chars) + f" {no} | t{tx.time_after}")]))
    return out


# ------------------------------------------------------------------------------ bars, help
def tags_bar(model: Model) -> str:
    """``#tag …`` then ``... #parent-tags`` and ``dropped:N`` (D34)."""
    cl = model.client()
    if cl is None:
        return ""
    parts = ["#" + t for t in cl.tags]
    parent = model.clients.get(cl.parent_id) if cl.parent_id else None
    if parent is not None and parent.tags:
        parts.append("...")
        parts += ["#" + t for t in parent.tags]
    if cl.dropped:
        parts.append(f"dropped:{cl.dropped}")
    return " ".join(parts)


def address_bar(model: Model) -> str:
    """``◀ ▶  mach://ID/TX[/STEP]``."""
    return f"◀ ▶  {model.url() or 'mach://'}"


def step_words(cl: Client, st: Step | None) -> str:
    """One step in words: ``activate Foo``, ``Foo require Bar``, ``handler Foo_state``,
    ``cancel Foo``."""
    if st is None:
        return ""

    def n(i: int) -> str:
        return cl.names[i] if 0 <= i < len(cl.names) else "Any"

    if st.kind & 1:
        return f"{n(st.from_)} {_REL.get(st.rel, 'rel')} {n(st.to)}"
    if st.kind & 2:
        return f"handler {st.name or ''}".rstrip()
    if st.kind & 4:
        return f"activate {n(st.to)}"
    if st.kind & 8:
        return f"deactivate {n(st.to)}"
    if st.kind & 16:
        return f"deactivate passive {n(st.to)}"
    if st.kind & 32:
        return f"called {n(st.to)}"
    if st.kind & 64:
        return f"cancel {n(st.to) if st.to >= 0 else ''}".rstrip()
    return ""


def status_bar(model: Model) -> tuple[str, str]:
    """``Graph:tSUM | Name | idx: i | tick: t`` and the current step in words (D39)."""
    left = f"Graph:t{model.graph_time()}"
    cl = model.client()
    right = ""
    if cl is not None:
        if cl.selected_state and cl.selected_state in cl.names:
            i = cl.names.index(cl.selected_state)
            ticks = cl.time_at(cl.c)
            left += f" | {cl.selected_state} | idx: {i} | tick: {ticks[i] if i < len(ticks) else 0}"
        nxt = model.next_no(cl)
        if nxt and cl.s > 0:
            steps = cl.txs[nxt - 1].steps
            if cl.s <= len(steps):
                right = step_words(cl, steps[cl.s - 1])
    return left, right


@dataclass
class ToolbarItem:
    """A toolbar button: ``id`` (the action), ``label`` and its state text (``[X]``)."""

    id: str
    label: str
    state: str = ""

    def text(self) -> str:
        """``[X] label`` / ``[ ] label`` for toggles, the label alone for actions."""
        return f"{self.state} {self.label}" if self.state else self.label


def toolbar_rows(model: Model, ui: dict[str, Any]) -> list[list[ToolbarItem]]:
    """The toolbar rows (D38): 1 navigation, 2 filters, 3 output, 4 view."""
    f = model.filters

    def on(v: bool) -> str:
        return "[X]" if v else "[ ]"

    row1 = [
        ToolbarItem("client_up", "▲"),
        ToolbarItem("client_down", "▼ client"),
        ToolbarItem("jump_back", "jump ◀"),
        ToolbarItem("step_back", "step <"),
        ToolbarItem("prev_tx", "tx ◁"),
        ToolbarItem("next_tx", "tx ▷"),
        ToolbarItem("step_fwd", "step >"),
        ToolbarItem("jump_fwd", "jump ▶"),
        ToolbarItem("play", "play", on(model.playing)),
        ToolbarItem("first", "first"),
        ToolbarItem("last", "last"),
    ]
    row2 = [
        ToolbarItem("log_level", "log", f"[{f.log_level}]"),
        ToolbarItem("canceled", "canceled", on(f.canceled)),
        ToolbarItem("queued", "queued", on(f.queued)),
        ToolbarItem("auto", "auto", "[" + " *X"[f.auto] + "]"),
        ToolbarItem("empty", "empty", on(f.empty)),
        ToolbarItem("health", "health", on(f.health)),
        ToolbarItem("group", "group", on(f.group)),
        ToolbarItem("disconn", "disconn", on(f.disconn)),
        ToolbarItem("checks", "checks", on(f.checks)),
        ToolbarItem("times", "times", on(bool(ui.get("times")))),
        ToolbarItem("rpc", "rpc", on(f.rpc)),
    ]
    row3 = [
        ToolbarItem("export", "export"),
        ToolbarItem("expand", "expand", on(bool(ui.get("expand")))),
        ToolbarItem("traces", "traces", on(bool(ui.get("traces")))),
    ]
    row4 = [
        ToolbarItem("help", "help"),
        ToolbarItem("tail", "tail", on(model.tail)),
        ToolbarItem("reader", "reader", on(bool(ui.get("reader")))),
        ToolbarItem("timelines", "timelines", f"[{ui.get('timelines', 2)}]"),
        ToolbarItem("wrap", "wrap", on(bool(ui.get("wrap")))),
        ToolbarItem("narrow", "narrow", on(bool(ui.get("narrow")))),
        ToolbarItem("rain", "rain", on(ui.get("view") == "rain")),
        ToolbarItem("matrix", "matrix", on(ui.get("view") == "matrix")),
    ]
    return [row1, row2, row3, row4]


def help_text(model: Model, version: str = "") -> list[str]:
    """The help screen (D40): legends, ``Keystrokes``, version, addresses, memory."""
    lines = [
        f"trio-am-dbg {version}".rstrip(),
        "",
        "Legend",
        "  tree: Name F|tick  (M multi; marks while stepping: + activate, - deactivate,",
        "        * handler ran, ! cancel)",
        "  client list: id F|n  (R Ready, S Start, E Exception; n txs until now, + later)",
        "  rain: 1 active, 2 active+touched, | deactivated, c canceled, * touched",
        "  log: [queue] queued, [aqueu] auto queued, [cance] canceled, [empty] no change",
        "  toolbar: [X] on, [ ] off, [value]",
        "",
        "Keystrokes",
    ]
    width = max(len(k) for k, _ in KEYS)
    lines += [f"  {k:<{width}}  {what}" for k, what in KEYS]
    lines += [
        "",
        f"Listening: {model.listen_addr or 'no'}",
        f"Memory: {model.memory_mb():.0f}mb",
        "",
        "esc or ? closes this help",
    ]
    return lines
