"""Text renderers of the debugger's panes (tools.md §1.2-1.3): pure functions of the model.

Each returns plain text or urwid-style *markup* (a str, or a list of ``(attr, text)``
tuples and strs), which the UI (``trio_am.dbg.ui``) puts on screen and tests check
directly. Nothing here imports urwid. Attribute names the UI maps to colours:
``body``, ``active``, ``active_multi``, ``inactive``, ``error``, ``disconnected``,
``err_recent``, ``selected``, ``touched``, ``called``, ``faded``, ``grey``, ``green``,
``yellow``, ``red``, ``title``, ``bold``, ``underline``; tree rows of touched states use
``<attr>_touched`` (``active_touched``, ``inactive_touched``, ...).

Long lists render only a window: :func:`log_lines` the txs around the cursor,
:func:`rain_rows` ``height`` rows; the reader's lookups over the whole history (open
subscriptions, forked txs) are indexed incrementally per client, so thousands of txs stay
fast.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
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
    "plain",
    "rain_rows",
    "rain_title",
    "reader_rows",
    "reader_title",
    "reader_tree",
    "schema_title",
    "status_bar",
    "step_words",
    "steps_progress",
    "steps_timeline_title",
    "tags_bar",
    "toolbar_rows",
    "tree_rows",
    "tx_bar",
    "tx_progress",
    "tx_summary",
    "tx_timeline_title",
]

#: urwid-style markup: a str, or a list of ``(attr, text)`` tuples and strs.
Markup = str | list[Any]

# step kinds, relations (tools.md §1.7)
_K_REL, _K_HANDLER, _K_ACT, _K_DEACT, _K_DEACT_PASSIVE, _K_CALLED, _K_CANCEL = (
    1, 2, 4, 8, 16, 32, 64,
)  # fmt: skip


def plain(markup: Any) -> str:
    """The text of a markup, attributes dropped (for files, widths and tests)."""
    if isinstance(markup, str):
        return markup
    if isinstance(markup, tuple):
        return plain(markup[1])
    if isinstance(markup, list):
        return "".join(plain(m) for m in markup)
    return str(markup)


_TYPES = {0: "add", 1: "remove", 2: "set", 3: "eval"}
_REL = {0: "after", 1: "add", 2: "require", 3: "remove"}
_REL_NODES = (("Add", "add"), ("Require", "require"), ("Remove", "remove"), ("After", "after"))
#: How many pending queued records the reader lists, and how far back it looks for them.
_QUEUE_MAX = 50
_QUEUE_SCAN = 5000
#: Longest source chain (State Trace) and stack trace the reader shows.
_TRACE_MAX = 20
_STACK_MAX = 40

#: (keys, what) for the help screen, in the order shown (every key of tools.md §1.4).
KEYS: tuple[tuple[str, str], ...] = (
    ("ctrl+q", "quit"),
    ("?", "this help (esc closes it)"),
    ("alt+v", "tail mode (follow the newest transition)"),
    ("left / right", "previous / next transition (steps when the steps timeline is focused)"),
    ("alt+j / alt+k", "step back / forward through the next transition"),
    (
        "alt+h / alt+l, alt+left / alt+right",
        "jump back / forward (50 txs, or to the selected state)",
    ),
    ("home / end", "first / last transition"),
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
)


# ----------------------------------------------------------------------------- helpers
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


def _type(cl: Client, tx: Tx, q: bool = True) -> str:
    typ = _TYPES.get(tx.type, str(tx.type))
    if tx.queued and q:
        typ = "q " + typ
    if len(tx.called) == 1:
        i = tx.called[0]
        st = cl.states.get(cl.names[i]) if 0 <= i < len(cl.names) else None
        if st is not None and st.multi:
            typ += " multi"
    return typ


def _current(cl: Client) -> Tx | None:
    return cl.txs[min(cl.c, len(cl.txs)) - 1] if cl.c > 0 and cl.txs else None


def _stepped(model: Model, cl: Client) -> Tx | None:
    """The tx the steps timeline walks, when at least one of its steps is applied."""
    nxt = model.next_no(cl)
    return cl.txs[nxt - 1] if nxt and cl.s > 0 else None


# ------------------------------------------------------------------------- tx bars
def tx_summary(cl: Client, tx: Tx) -> str:
    """``Time: +d | TYPE: States`` of one record (``q`` before TYPE when queued,
    `` multi`` after it for a single multi state)."""
    return f"Time: +{tx.time_diff} | {_type(cl, tx)}: {_names(cl, tx.called)}"


def _tx_right(tx: Tx) -> str:
    flags = (("auto", tx.auto), ("check", tx.check), ("canceled", tx.canceled))
    parts = [flag for flag, on in flags if on]
    parts += [
        f"add: {len(tx.added)}",
        f"rm: {len(tx.removed)}",
        f"touch: {len(tx.touched)}",
        _clock(tx.t),
    ]
    return " | ".join(parts)


def tx_bar(model: Model) -> tuple[Markup, Markup]:
    """The current-tx bar (D22), ``(left, right)``: ``MODE | tx: n | Time: +d | TYPE:
    States`` and ``[auto | check | canceled |] add: a | rm: r | touch: t | HH:MM:SS.ffffff``;
    at c = 0 ``MODE | No transitions yet...`` / ``MODE | Initial machine schema``; with no
    client ``Listening for connections on HOST:PORT``."""
    cl = model.client()
    if cl is None:
        if model.listen_addr:
            return f"Listening for connections on {model.listen_addr}", ""
        return "No machines (not listening)", ""
    tx = _current(cl)
    if tx is None:
        text = "Initial machine schema" if cl.txs else "No transitions yet..."
        return f"{_mode(model)} | {text}", ""
    left = f"{_mode(model)} | tx: {min(cl.c, len(cl.txs))} | {tx_summary(cl, tx)}"
    if tx.canceled:
        attr = "red"
    elif tx.queued:
        attr = "yellow"
    elif tx.is_error:
        attr = "error"
    else:
        attr = "bold"
    return [(attr, left)], _tx_right(tx)


def next_tx_bar(model: Model) -> tuple[Markup, Markup]:
    """The next-tx bar (D24): ``Next | tx: n | Time: +d | TYPE: States`` for the tx the steps
    timeline walks (the next visible one), ``Next | none`` at the end."""
    cl = model.client()
    if cl is None:
        return "", ""
    n = model.next_no(cl)
    if not n:
        return "Next | none", ""
    tx = cl.txs[n - 1]
    left = f"Next | tx: {n} | {tx_summary(cl, tx)}"
    return ([("grey", left)] if tx.canceled else left), _tx_right(tx)


def tx_timeline_title(model: Model) -> str:
    """`` Transition c / N `` or, when filters hide txs, `` Transition p / F (c / N) ``
    (p = position among the F visible txs)."""
    cl = model.client()
    if cl is None:
        return " Transition 0 / 0 "
    n = len(cl.txs)
    vis = model.visible(cl)
    c = min(cl.c, n)
    if len(vis) < n:
        return f" Transition {model.vis_pos(cl)} / {len(vis)} ({c} / {n}) "
    return f" Transition {c} / {n} "


def tx_progress(model: Model) -> float:
    """The tx timeline's fill, 0..1 (position among the visible txs)."""
    cl = model.client()
    if cl is None or not cl.txs:
        return 0.0
    vis = model.visible(cl)
    return model.vis_pos(cl) / len(vis) if vis else 0.0


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
    return min(1.0, cl.s / total) if cl is not None and total else 0.0


# --------------------------------------------------------------------------- clients
def client_label(model: Model, cl: Client) -> str:
    """``id F|n[+]`` (D3): F ``R`` Ready / ``S`` Start active, ``E`` prefix Exception (or
    an ``Err*`` state) active, all at the viewed moment; n = its txs at or before that
    moment, ``+`` = later ones exist."""
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


def _client_attr(model: Model, cl: Client) -> str:
    if cl.id == model.selected:
        return "selected"
    if not cl.connected:
        return "disconnected"
    c = model.client_c_at(cl)
    if cl.is_error_at(c):
        return "error"
    i = bisect_right(cl.err_nos, c)
    if i and cl.err_nos[i - 1] > c - 100:
        return "err_recent"
    return "body"


def client_list_rows(model: Model) -> list[tuple[str, Markup]]:
    """``(id, row)`` for the client list (D3, D4): children under their parents, ``- ``
    per level (``- fx-b``, ``-- fx-c``); attrs ``selected``, ``disconnected``, ``error``
    (error now), ``err_recent`` (an error within the last 100 txs), else ``body``."""
    rows: list[tuple[str, Markup]] = []
    for depth, cl in model.client_list():
        text = ("-" * depth + " " if depth else "") + client_label(model, cl)
        rows.append((cl.id, [(_client_attr(model, cl), text)]))
    return rows


def client_list_title(model: Model) -> str:
    """`` Machines:N T:SUM `` (SUM = every client's machine time)."""
    total = sum(cl.mtime for cl in model.clients.values())
    return f" Machines:{len(model.clients)} T:{total} "


# ------------------------------------------------------------------------------- tree
@dataclass
class TreeRow:
    """One row of the schema tree: a state (depth 0), or a child node of an expanded
    state: flags, a relation node, a relation target (``target``), tags."""

    key: str
    depth: int
    markup: Markup
    state: str | None = None
    target: str | None = None

    @property
    def target_state(self) -> str | None:
        """The state a relation-target row points at (enter jumps there, D9)."""
        return self.target


def schema_title(cl: Client | None) -> str:
    """`` Schema:N ``."""
    return f" Schema:{len(cl.names) if cl is not None else 0} "


def _step_marks(tx: Tx | None, s: int) -> dict[int, str]:
    """State index -> marks of the first ``s`` steps of ``tx`` (D12): ``+`` activate,
    ``-`` deactivate, ``*`` handler ran, ``!`` cancel (on the state whose handler vetoed,
    else on the called states)."""
    marks: dict[int, str] = {}
    if tx is None or s <= 0:
        return marks

    def mark(i: int, ch: str) -> None:
        if i >= 0 and ch not in marks.get(i, ""):
            marks[i] = marks.get(i, "") + ch

    last_handler = -1
    for st in tx.steps[:s]:
        k = st.kind
        if k == _K_HANDLER:
            last_handler = st.to if st.to >= 0 else st.from_
            mark(last_handler, "*")
        elif k == _K_ACT:
            mark(st.to, "+")
        elif k in (_K_DEACT, _K_DEACT_PASSIVE):
            mark(st.to if st.to >= 0 else st.from_, "-")
        elif k == _K_CANCEL:
            if st.to >= 0:
                mark(st.to, "!")
            elif last_handler >= 0:
                mark(last_handler, "!")
            else:
                for i in tx.called:
                    mark(i, "!")
    return marks


def tree_rows(
    model: Model, cl: Client, expanded: set[str], all_expanded: bool = False
) -> list[TreeRow]:
    """The schema tree (D8, D10-D12): a row per state ``Name  F|tick`` (F ``M`` multi),
    narrowed to the selected group; expanded states (``expanded``, all with
    ``all_expanded``) get ``auto multi``, the relation nodes ``Add`` ``Require``
    ``Remove`` ``After`` with their targets, and ``Tags`` with ``#tag``. While stepping,
    the touched states sort first, are expanded and bold, carry step marks (``+ - * !``;
    red on the last step of a canceled tx), and called states are underlined."""
    ticks = cl.time_at(cl.c)
    n = len(cl.names)
    order = list(range(n))
    step_tx = _stepped(model, cl)
    marks = _step_marks(step_tx, cl.s)
    mark_attr = "bold"
    touched: set[int] = set()
    called: set[int] = set()
    if step_tx is not None:
        first = [i for i in step_tx.touched if 0 <= i < n]
        touched = set(first)
        order = first + [i for i in order if i not in touched]
        called = set(step_tx.called)
        if step_tx.canceled and cl.s >= len(step_tx.steps):
            mark_attr = "red"
    group = cl.groups.get(cl.selected_group) if cl.selected_group else None
    gset = set(group) if group is not None else None
    width = max((len(x) for x in cl.names), default=0) + 1
    err = cl.is_error_at(cl.c)
    rows: list[TreeRow] = []
    for i in order:
        if gset is not None and i not in gset:
            continue
        name = cl.names[i]
        st = cl.states.get(name)
        multi = bool(st and st.multi)
        tick = ticks[i] if i < len(ticks) else 0
        active = bool(tick & 1)
        if name == cl.selected_state:
            attr = "selected"
        elif active and err and (name == "Exception" or name.startswith("Err")):
            attr = "error"
        elif active:
            attr = "active_multi" if multi else "active"
        else:
            attr = "inactive"
        if i in touched and attr != "selected":
            attr += "_touched"
        markup: list[Any] = [
            ("called" if i in called and attr != "selected" else attr, f"{name:<{width}}"),
            (attr, f"{'M' if multi else ''}|{tick}"),
        ]
        if i in marks:
            markup.append((mark_attr, marks[i]))
        rows.append(TreeRow(name, 0, markup, state=name))
        if st is None or not (all_expanded or name in expanded or i in touched):
            continue
        flags = " ".join(f for f, on in (("auto", st.auto), ("multi", st.multi)) if on)
        if flags:
            rows.append(TreeRow(f"{name}/flags", 1, [("faded", "  " + flags)], state=name))
        for label, rel in _REL_NODES:
            targets: list[str] = getattr(st, rel, [])
            if targets:
                rows.append(TreeRow(f"{name}/{rel}", 1, "  " + label, state=name))
                for t in targets:
                    rows.append(TreeRow(f"{name}/{rel}/{t}", 2, "    " + t, state=name, target=t))
        if st.tags:
            rows.append(TreeRow(f"{name}/tags", 1, "  Tags", state=name))
            tags = " ".join("#" + t for t in st.tags)
            rows.append(TreeRow(f"{name}/tags/", 2, "    " + tags, state=name))
    return rows


# -------------------------------------------------------------------------------- log
def log_title(model: Model) -> str:
    """`` Log:LEVEL (tSUM) `` (level name lowercase, SUM the machine time at the cursor)."""
    cl = model.client()
    t = cl.mtime_at(cl.c) if cl is not None else 0
    level = model.filters.log_level
    name = LOG_LEVEL_NAMES[level] if 0 <= level < len(LOG_LEVEL_NAMES) else str(level)
    return f" Log:{name} (t{t}) "


def _synthetic(cl: Client, tx: Tx) -> str | None:
    """``[queue] +A`` / ``[aqueu] +A`` / ``[cance] +A`` / ``[empty] +A`` (D14)."""
    if tx.queued:
        tag = "aqueu" if tx.auto else "queue"
    elif tx.canceled:
        tag = "cance"
    elif tx.is_empty:
        tag = "empty"
    else:
        return None
    sign = "-" if tx.type == 1 else "+"
    states = " ".join(sign + cl.name(i) for i in tx.called)
    return f"[{tag}] {states}".rstrip()


def _log_markup(cl: Client, text: str, called: set[int], base: str) -> Markup:
    """One log line: ``[exter]`` faded, errors red, the current tx's lines ``selected``;
    else ``+Name`` / ``-Name`` tokens of known states bold (underlined when called)."""
    if text.startswith("[exter"):
        return [("faded", text)]
    if text.startswith("[err"):
        return [("error", text)]
    if base != "body" or len(text) > 400 or ("+" not in text and "-" not in text):
        return [(base, text)]
    out: list[Any] = []
    plain: list[str] = []
    for k, tok in enumerate(text.split(" ")):
        idx = cl.index(tok[1:]) if len(tok) > 1 and tok[0] in "+-" else -1
        if k:
            plain.append(" ")
        if idx < 0:
            plain.append(tok)
            continue
        if plain:
            out.append((base, "".join(plain)))
            plain = []
        out.append(("called" if idx in called else "bold", tok))
    if plain:
        out.append((base, "".join(plain)))
    return out


def log_lines(model: Model, cl: Client, around: int | None = 200) -> list[tuple[int, Markup]]:
    """The log pane (D14, D16): ``(tx number, line)`` for the visible txs within ``around``
    visible txs of the cursor (all with ``around=None``): each tx's ``pre_log``, a synthetic
    line for queued / canceled / empty ones (``[queue] +A``, ``[aqueu] +A``, ``[cance] +A``,
    ``[empty] +A``), its ``log``; lines logged outside transitions in between (numbered by
    the visible tx before them, 0 before the first). Lines above the level filter are left
    out; level 0 gives none. The current tx's lines are ``selected``."""
    level = model.filters.log_level
    if level <= 0:
        return []
    vis = model.visible(cl)
    if around is None:
        lo, hi = 0, len(vis)
    else:
        centre = max(0, model.vis_pos(cl) - 1)
        lo, hi = max(0, centre - around), min(len(vis), centre + around + 1)
    ext = cl.log
    prev = vis[lo - 1] if lo else 0
    j = bisect_left(ext, prev, key=lambda x: x[0]) if ext else 0
    out: list[tuple[int, Markup]] = []
    none: set[int] = set()
    for no in vis[lo:hi]:
        while j < len(ext) and ext[j][0] < no:
            e = ext[j][1]
            j += 1
            if e.level <= level:
                out.append((prev, _log_markup(cl, e.text, none, "body")))
        tx = cl.txs[no - 1]
        base = "selected" if no == cl.c else "body"
        called = set(tx.called)
        for e in tx.pre_log:
            if e.level <= level:
                out.append((no, _log_markup(cl, e.text, none, base)))
        syn = _synthetic(cl, tx)
        if syn is not None:
            out.append((no, [(base if base != "body" else "grey", syn)]))
        for e in tx.log:
            if e.level <= level:
                out.append((no, _log_markup(cl, e.text, called, base)))
        prev = no
    if hi == len(vis):
        for _n, e in ext[j:]:
            if e.level <= level:
                out.append((prev, _log_markup(cl, e.text, none, "body")))
    return out


# ----------------------------------------------------------------------------- reader
_EV_SECTIONS = {
    "ctx": "StateCtx",
    "when": "When",
    "whenNot": "WhenNot",
    "whenTime": "WhenTime",
    "whenArgs": "WhenArgs",
    "whenQueue": "WhenQueue",
    "pipe-in": "Pipe-in",
    "pipe-out": "Pipe-out",
}
_OPENS = frozenset({"new", "add"})
_CLOSES = frozenset({"match", "remove"})
#: Sections always shown (with ``(0)``); the others only when they have items.
_ALWAYS = ("When", "WhenNot", "WhenTime", "WhenArgs", "WhenQueue")
_SUB_ORDER = ("StateCtx", *_ALWAYS, "Pipe-in", "Pipe-out")


@dataclass
class _ClientIndex:
    """Per-client lookups built incrementally: subscription events (from log entries'
    ``ev``) and which records name which source tx."""

    txs_id: int = 0
    log_id: int = 0
    txs_done: int = 0
    log_done: int = 0
    # (tx no, ev, machine time) from tx logs; (n records before, ev, machine time) from `log`
    tx_evs: list[tuple[int, list[Any], int]] = field(default_factory=list)
    ext_evs: list[tuple[int, list[Any], int]] = field(default_factory=list)
    # (src mach id, src tx id) -> numbers of this client's records with that source
    by_src: dict[tuple[str, str], list[int]] = field(default_factory=dict)


_INDEX: weakref.WeakKeyDictionary[Client, _ClientIndex] = weakref.WeakKeyDictionary()


def _raw_evs(entries: Any) -> list[list[Any]]:
    if not isinstance(entries, list):
        return []
    return [
        list(e[2])
        for e in entries
        if isinstance(e, (list, tuple))
        and len(e) > 2
        and isinstance(e[2], (list, tuple))
        and e[2]
        and isinstance(e[2][0], str)
    ]


def _index(cl: Client) -> _ClientIndex:
    ix = _INDEX.get(cl)
    if ix is None or ix.txs_id != id(cl.txs) or len(cl.txs) < ix.txs_done:
        ix = _INDEX[cl] = _ClientIndex(txs_id=id(cl.txs), log_id=id(cl.log))
    if ix.log_id != id(cl.log) or len(cl.log) < ix.log_done:
        ix.log_id, ix.log_done, ix.ext_evs = id(cl.log), 0, []
    txs = cl.txs
    for no in range(ix.txs_done + 1, len(txs) + 1):
        tx = txs[no - 1]
        if tx.src is not None:
            ix.by_src.setdefault((tx.src[0], tx.src[1]), []).append(no)
        if tx.queued:
            continue
        raw = tx.raw
        for ev in _raw_evs(raw[12] if len(raw) > 12 else None):
            ix.tx_evs.append((no, ev, tx.time_before))
        for ev in _raw_evs(raw[11] if len(raw) > 11 else None):
            ix.tx_evs.append((no, ev, tx.time_after))
    ix.txs_done = len(txs)
    for n, e in cl.log[ix.log_done :]:
        if e.ev and isinstance(e.ev[0], str):
            ix.ext_evs.append((n, e.ev, cl.mtime_at(n)))
    ix.log_done = len(cl.log)
    return ix


def _ev_text(cl: Client, section: str, rest: list[Any]) -> str:
    def st(v: Any) -> str:
        if isinstance(v, int):
            return cl.name(v)
        if isinstance(v, (list, tuple)):
            return " ".join(st(x) for x in v)
        return str(v)

    if section in ("Pipe-in", "Pipe-out") and len(rest) >= 3:
        arrow = "<-" if section == "Pipe-in" else "->"
        return f"{st(rest[0])} {arrow} {rest[2]} mach://{rest[1]}"
    if section == "WhenQueue" and rest:
        return f"q{rest[0]}"
    if section == "WhenTime" and len(rest) >= 2:
        ticks = rest[1] if isinstance(rest[1], (list, tuple)) else [rest[1]]
        return f"{st(rest[0])} {' '.join(str(t) for t in ticks)}".strip()
    if section == "WhenArgs" and len(rest) >= 2:
        args = rest[1] if isinstance(rest[1], (list, tuple)) else [rest[1]]
        return f"{st(rest[0])} ({', '.join(str(a) for a in args)})"
    return " ".join(st(x) for x in rest)


def _open_subs(cl: Client, c: int) -> dict[str, list[str]]:
    """Subscriptions (and state contexts, pipes) open at cursor ``c``, by section, each
    ``what tT`` with T the machine time when it opened."""
    ix = _index(cl)
    hi = bisect_right(ix.tx_evs, c, key=lambda x: x[0])
    ext_hi = bisect_left(ix.ext_evs, c, key=lambda x: x[0])
    evs = sorted(
        [(no, 1, ev, t) for no, ev, t in ix.tx_evs[:hi]]
        + [(n + 1, 0, ev, t) for n, ev, t in ix.ext_evs[:ext_hi]],
        key=lambda x: (x[0], x[1]),
    )
    open_: dict[tuple[str, str], list[str]] = {}
    for _no, _k, ev, t in evs:
        kind, _, what = ev[0].partition(":")
        if kind == "pipe" and what == "gc" and len(ev) > 1:
            gone = str(ev[1])
            for key in [k for k in open_ if k[0].startswith("Pipe") and f"\x00{gone}\x00" in k[1]]:
                del open_[key]
            continue
        section = _EV_SECTIONS.get(kind)
        if section is None:
            continue
        rest = list(ev[1:])
        key = (section, "\x00" + "\x00".join(str(x) for x in rest) + "\x00")
        if what in _OPENS:
            open_.setdefault(key, []).append(f"{_ev_text(cl, section, rest)} t{t}")
        elif what in _CLOSES:
            items = open_.get(key)
            if items:
                items.pop(0)
                if not items:
                    del open_[key]
    out: dict[str, list[str]] = {}
    for (section, _), texts in open_.items():
        out.setdefault(section, []).extend(texts)
    return out


def _mut_text(cl: Client, tx: Tx) -> str:
    return f"{_type(cl, tx, q=False)}: {_names(cl, tx.called)}"


def _dur(ns: int) -> str:
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f}µs"
    return f"{ns / 1e6:.1f}ms"


def _pending(cl: Client, tx: Tx, c: int) -> list[Tx]:
    """Queued records at or before ``c`` not executed by then (newest last, ≤ 50)."""
    out: list[Tx] = []
    qtick = tx.qtick
    for no in range(c, max(0, c - _QUEUE_SCAN), -1):
        q = cl.txs[no - 1]
        if not q.queued:
            continue
        if q.exec_no > c or (not q.exec_no and q.mut_qtick > qtick):
            out.append(q)
            if len(out) >= _QUEUE_MAX:
                break
    out.reverse()
    return out


def _source_rows(model: Model, cl: Client, tx: Tx) -> list[tuple[int, Markup]]:
    rows: list[tuple[int, Markup]] = [(0, [("title", "Source")])]
    src = tx.src
    if src is None:
        rows.append((1, "self"))
        return rows
    rows.append((1, f"mach://{src[0]}/{src[1]} t{src[2]}"))
    other = model.clients.get(src[0])
    if other is None:
        rows.append((2, [("faded", "unknown machine")]))
        return rows
    no = other.find_tx(src[1])
    if no:
        rows.append((2, _mut_text(other, other.txs[no - 1])))
    if other.tags:
        rows.append((2, " ".join("#" + t for t in other.tags)))
    return rows


def _state_trace(model: Model, tx: Tx) -> list[str]:
    """The source chain across machines: the tx's source, its source's source, ..."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    src = tx.src
    while src is not None and len(out) < _TRACE_MAX:
        key = (src[0], src[1])
        if key in seen:
            break
        seen.add(key)
        out.append(f"mach://{src[0]}/{src[1]} t{src[2]}")
        other = model.clients.get(src[0])
        no = other.find_tx(src[1]) if other is not None else 0
        src = other.txs[no - 1].src if other is not None and no else None
    return out


def _by_src(model: Model, key: tuple[str, str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for cid, other in model.clients.items():
        for no in _index(other).by_src.get(key, ()):
            out.append((cid, no))
    return out


def reader_title(model: Model) -> str:
    """`` Reader ``."""
    return " Reader "


def reader_tree(model: Model, cl: Client) -> list[tuple[int, Markup]]:
    """The reader pane (D21) for the current tx as ``(depth, line)`` rows: **Source**
    (``self``, or ``mach://ID/TX tT`` with that tx's called states and the machine's tags),
    **Queue** (``current qN``, executed at / queued at / queued for, ``length N``, ≤ 50
    pending records), **Executed** (``Handler:machine`` + duration), **Arguments**, then
    when present Error, **State Trace** (source chain), **Forked** (txs this one caused),
    **Siblings** (same source), **StateCtx**, always **When** **WhenNot** **WhenTime**
    **WhenArgs** **WhenQueue** (open at this moment, with their creation time ``tT``),
    **Pipe-in** / **Pipe-out**, and the queuing caller's stack trace. Titles carry
    ``(count)``; lines with ``mach://`` addresses navigate."""
    rows: list[tuple[int, Markup]] = []
    tx = _current(cl)
    c = min(cl.c, len(cl.txs))
    if tx is None:
        rows.append((0, "Initial machine schema"))
    else:
        rows += _source_rows(model, cl, tx)
        # Queue
        pending = _pending(cl, tx, c)
        rows.append((0, [("title", f"Queue ({len(pending)})")]))
        rows.append((1, f"current q{tx.qtick}"))
        at: list[str] = []
        if tx.queued:
            at.append(f"queued at q{tx.qtick}")
            ex = cl.tx(tx.exec_no)
            if ex is not None:
                at.append(f"executed at q{ex.qtick}")
        else:
            at.append(f"executed at q{tx.qtick}")
            q = cl.tx(tx.queued_no)
            if q is not None:
                at.append(f"queued at q{q.qtick}")
        if tx.mut_qtick:
            at.append(f"queued for q{tx.mut_qtick}")
        rows.append((1, ", ".join(at)))
        rows.append((1, f"length {tx.qlen}"))
        for q in pending:
            rows.append((2, f"q{q.mut_qtick} {_mut_text(cl, q)} mach://{cl.id}/{q.id}"))
        # Executed handlers
        steps = tx.steps
        handlers = [(k, st) for k, st in enumerate(steps) if st.kind == _K_HANDLER]
        rows.append((0, [("title", f"Executed ({len(handlers)})")]))
        for k, st in handlers:
            dur = f" {_dur(st.dur)}" if st.dur else ""
            veto = k + 1 < len(steps) and steps[k + 1].kind == _K_CANCEL
            text = f"{st.name or 'Any'}:{cl.id}{dur}"
            rows.append((1, [("red", text + " (veto)")] if veto else text))
        # Arguments
        rows.append((0, [("title", f"Arguments ({len(tx.args)})")]))
        for name in sorted(tx.args):
            rows.append((1, f"{name}={tx.args[name]}"))
        if tx.err:
            rows.append((0, [("title", "Error")]))
            rows.append((1, [("error", tx.err)]))
        chain = _state_trace(model, tx)
        if chain:
            rows.append((0, [("title", f"State Trace ({len(chain)})")]))
            rows += [(1, x) for x in chain]
        if not tx.queued:
            forked = _by_src(model, (cl.id, tx.id))
            if forked:
                rows.append((0, [("title", f"Forked ({len(forked)})")]))
                for cid, no in forked[:_QUEUE_MAX]:
                    other = model.clients[cid]
                    otx = other.txs[no - 1]
                    rows.append((1, f"mach://{cid}/{otx.id} {_mut_text(other, otx)}"))
        if tx.src is not None:
            sib = [
                (cid, no)
                for cid, no in _by_src(model, (tx.src[0], tx.src[1]))
                if not (cid == cl.id and no == c)
            ]
            if sib:
                rows.append((0, [("title", f"Siblings ({len(sib)})")]))
                for cid, no in sib[:_QUEUE_MAX]:
                    other = model.clients[cid]
                    otx = other.txs[no - 1]
                    rows.append((1, f"mach://{cid}/{otx.id} {_mut_text(other, otx)}"))
    subs = _open_subs(cl, c)
    for title in _SUB_ORDER:
        items = subs.get(title, [])
        if not items and title not in _ALWAYS:
            continue
        rows.append((0, [("title", f"{title} ({len(items)})")]))
        rows += [(1, it) for it in items]
    if tx is not None and tx.trace:
        trace = tx.trace
        lines = trace.splitlines() if isinstance(trace, str) else [str(x) for x in trace]
        lines = [x for x in lines if x.strip()]
        rows.append((0, [("title", f"Stack trace ({len(lines)})")]))
        rows += [(1, [("faded", x)]) for x in lines[-_STACK_MAX:]]
    return rows


#: The brief's name for :func:`reader_tree` (the UI uses either).
reader_rows = reader_tree


# ------------------------------------------------------------------------------- rain
def rain_title(model: Model) -> str:
    """`` Rain ``."""
    return " Rain "


def _runs(cells: list[tuple[str, str]]) -> list[Any]:
    out: list[Any] = []
    for attr, ch in cells:
        if out and out[-1][0] == attr:
            out[-1] = (attr, out[-1][1] + ch)
        else:
            out.append((attr, ch))
    return out


def rain_rows(model: Model, cl: Client, height: int) -> list[tuple[int, Markup]]:
    """Rain (D37): ``height`` rows of visible txs around the cursor, a char per state:
    ``1`` active, ``2`` active+touched, ``|`` deactivated, ``c`` called but canceled,
    ``*`` touched, ``.`` other; then `` n | tT``. Called states are underlined, the selected
    state's column and the current row highlighted, error txs red."""
    vis = model.visible(cl)
    if not vis or height <= 0:
        return []
    pos = max(0, model.vis_pos(cl) - 1)
    lo = max(0, min(pos - height // 2, len(vis) - height))
    sel = cl.index(cl.selected_state) if cl.selected_state else -1
    n = len(cl.names)
    out: list[tuple[int, Markup]] = []
    for no in vis[lo : lo + height]:
        tx = cl.txs[no - 1]
        touched = set(tx.touched)
        called = set(tx.called)
        cur = no == cl.c
        base = "selected" if cur else ("error" if tx.is_error else "body")
        after, before = tx.after, tx.before
        cells: list[tuple[str, str]] = []
        for i in range(n):
            a = after[i] if i < len(after) else 0
            b = before[i] if i < len(before) else 0
            if i in called and tx.canceled:
                ch = "c"
            elif a & 1:
                ch = "2" if i in touched else "1"
            elif b & 1:
                ch = "|"
            elif i in touched:
                ch = "*"
            else:
                ch = "."
            if i == sel and not cur:
                attr = "selected"
            elif i in called and not cur:
                attr = "called"
            else:
                attr = base
            cells.append((attr, ch))
        cells.append((base, f" {no} | t{tx.time_after}"))
        out.append((no, _runs(cells)))
    return out


# ----------------------------------------------------------------------- bars, help
def tags_bar(model: Model) -> str:
    """``#tag …`` of the selected client, then ``... #parent-tags`` and ``dropped:N`` when
    the reporter lost records (D34)."""
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
    """``◀ ▶  mach://ID/TX[/STEP]`` (the UI adds ``copy paste`` on the right)."""
    return f"◀ ▶  {model.url() or 'mach://'}"


def step_words(cl: Client, st: Step | None, tx: Tx | None = None) -> str:
    """One step in words: ``activate Foo``, ``Foo require Bar``, ``handler Foo_state``,
    ``cancel Foo`` (a cancel with no state names ``tx``'s called states when given)."""
    if st is None:
        return ""

    def nm(i: int) -> str:
        return cl.names[i] if 0 <= i < len(cl.names) else "Any"

    k = st.kind
    if k == _K_REL:
        return f"{nm(st.from_)} {_REL.get(st.rel, 'relation')} {nm(st.to)}"
    if k == _K_HANDLER:
        return f"handler {st.name or nm(st.to)}"
    if k == _K_ACT:
        return f"activate {nm(st.to)}"
    if k == _K_DEACT:
        return f"deactivate {nm(st.to)}"
    if k == _K_DEACT_PASSIVE:
        return f"deactivate passive {nm(st.to)}"
    if k == _K_CALLED:
        return f"called {nm(st.to)}"
    if k == _K_CANCEL:
        if st.to >= 0:
            return f"cancel {nm(st.to)}"
        return f"cancel {_names(cl, tx.called)}" if tx is not None and tx.called else "cancel"
    return f"step {k}"


def status_bar(model: Model) -> tuple[str, str]:
    """``(left, right)`` (D39): ``Graph:tSUM`` and, with a selected state, ``| Name | idx: i |
    tick: t``; right the last applied step of the stepped tx in words."""
    left = f"Graph:t{model.graph_time()}"
    cl = model.client()
    right = ""
    if cl is not None:
        i = cl.index(cl.selected_state) if cl.selected_state else -1
        if i >= 0:
            ticks = cl.time_at(cl.c)
            tick = ticks[i] if i < len(ticks) else 0
            left += f" | {cl.selected_state} | idx: {i} | tick: {tick}"
        tx = _stepped(model, cl)
        if tx is not None and cl.s <= len(tx.steps):
            right = step_words(cl, tx.steps[cl.s - 1], tx)
    return left, right


@dataclass
class ToolbarItem:
    """A toolbar button: ``id`` (the action), ``label`` and its state (``[X]``, ``[ ]``,
    ``[value]``; empty for plain actions)."""

    id: str
    label: str
    state: str = ""

    def text(self) -> str:
        """``[X] label`` / ``[ ] label`` for toggles, the label alone for actions."""
        return f"{self.state} {self.label}" if self.state else self.label


def toolbar_rows(model: Model, ui: dict[str, Any]) -> list[list[ToolbarItem]]:
    """The toolbar rows (D38): 1 navigation, 2 filters (tools.md §1.5), 3 output, 4 view.
    ``ui`` holds the UI's own toggles: ``times``, ``expand``, ``traces``, ``reader``,
    ``timelines`` (0-2), ``wrap``, ``narrow``, ``view`` (``log``/``matrix``/``rain``)."""
    f = model.filters

    def on(v: Any) -> str:
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
        ToolbarItem("auto", "auto", "[" + " *X"[max(0, min(2, f.auto))] + "]"),
        ToolbarItem("empty", "empty", on(f.empty)),
        ToolbarItem("health", "health", on(f.health)),
        ToolbarItem("group", "group", on(f.group)),
        ToolbarItem("disconn", "disconn", on(f.disconn)),
        ToolbarItem("checks", "checks", on(f.checks)),
        ToolbarItem("times", "times", on(ui.get("times"))),
        ToolbarItem("rpc", "rpc", on(f.rpc)),
    ]
    row3 = [
        ToolbarItem("export", "export"),
        ToolbarItem("expand", "expand", on(ui.get("expand"))),
        ToolbarItem("traces", "traces", on(ui.get("traces"))),
    ]
    row4 = [
        ToolbarItem("help", "help"),
        ToolbarItem("tail", "tail", on(model.tail)),
        ToolbarItem("reader", "reader", on(ui.get("reader"))),
        ToolbarItem("timelines", "timelines", f"[{ui.get('timelines', 2)}]"),
        ToolbarItem("wrap", "wrap", on(ui.get("wrap"))),
        ToolbarItem("narrow", "narrow", on(ui.get("narrow"))),
        ToolbarItem("rain", "rain", on(ui.get("view") == "rain")),
        ToolbarItem("matrix", "matrix", on(ui.get("view") == "matrix")),
    ]
    return [row1, row2, row3, row4]


def help_text(model: Model, version: str = "") -> list[str]:
    """The help screen (D40): version, ``Keystrokes`` (quit, help and tail first, so a
    small screen shows them), legends (tree, client list, rain, matrix, log, toolbar),
    addresses, memory."""
    width = max(len(k) for k, _ in KEYS)
    return [
        f"trio-am-dbg {version}".rstrip(),
        "",
        "Keystrokes",
        *(f"  {k:<{width}}  {what}" for k, what in KEYS),
        "",
        "Legend",
        "  tree: Name F|tick  (M multi; green active, cyan active multi, red error;",
        "        while stepping: touched first and bold, called underlined,",
        "        + activate, - deactivate, * handler ran, ! cancel)",
        "  client list: id F|n[+]  (R Ready, S Start, E Exception active; n txs until",
        "        now, + later ones; grey disconnected, red error, pink error lately)",
        "  rain: 1 active, 2 active+touched, | deactivated, c called but canceled,",
        "        * touched, . other; then tx number | machine time",
        "  matrix: called, tick deltas, then sums of step codes state x state",
        "        (1 relation, 2 handler, 4 activate, 8 deactivate, 16 passive,",
        "        32 called, 64 cancel)",
        "  log: [queue] queued, [aqueu] auto queued, [cance] canceled, [empty] no change;",
        "        levels nothing, external, changes, ops, decisions, everything",
        "  toolbar: [X] on, [ ] off, [value]; filters hide what they name",
        "",
        f"Listening: {model.listen_addr or 'no'}",
        f"Address: {model.url() or '-'}",
        f"Memory: {model.memory_mb():.0f}mb",
        "",
        "esc or ? closes this help",
    ]
