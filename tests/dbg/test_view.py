"""The debugger's text renderers (trio_am.dbg.view) on the FX records and hand-made wire
messages (tools.md §1.7), without urwid: the screen texts of tools.md §1.3 and
scenarios-tools.md A."""

from __future__ import annotations

import time
from typing import Any

import pytest

from trio_am.dbg import view
from trio_am.dbg.model import Client, Model

from .conftest import FX_NAMES, FX_T0, feed, fx_messages, fx_schema, fx_tx

AUTO, CHECK, ACCEPTED = 1, 2, 4
START, READY, FOO, BAR, BAZ, HEALTH, EXC = range(7)


def text(markup: Any) -> str:
    """The plain text of urwid-style markup."""
    if isinstance(markup, str):
        return markup
    if isinstance(markup, tuple):
        return text(markup[1])
    return "".join(text(m) for m in markup)


def attrs(markup: Any) -> dict[str, str]:
    """text of each segment -> its attr."""
    assert isinstance(markup, list)
    return {m[1]: m[0] for m in markup if isinstance(m, tuple)}


def tx_msg(
    mid: str,
    seq: int,
    called: list[int],
    before: list[int],
    after: list[int] | None,
    *,
    typ: int = 0,
    flags: int = ACCEPTED,
    steps: list[list[Any]] | None = None,
    log: list[list[Any]] | None = None,
    pre_log: list[list[Any]] | None = None,
    qlen: int = 0,
    qtick: int = 0,
    mut_qtick: int = 0,
    src: list[Any] | None = None,
    args: dict[str, str] | None = None,
    err: str | None = None,
    t1: int | None = None,
) -> list[Any]:
    """A ``tx`` wire message."""
    t = t1 if t1 is not None else FX_T0 + seq * 1_000_000
    if steps is None:
        steps = [[32, -1, i, -1, 0, None, 0] for i in called]
    return ["tx", mid, f"{mid}:{seq}", typ, called, args or {}, flags, [], before, after,
            steps, log or [], pre_log or [], qlen, qtick, mut_qtick, 0, src, t - 1000, t,
            err, None]  # fmt: skip


def queued_msg(
    mid: str, qid: str, called: list[int], *, flags: int = 0, qtick: int = 0, mut_qtick: int = 0
) -> list[Any]:
    """A ``queued`` wire message."""
    return ["queued", mid, qid, 0, called, {}, flags, 1, qtick, mut_qtick, 0, None, None,
            FX_T0, "  File fx.py, line 3\n    mach.add('Foo')"]  # fmt: skip


def rows_text(rows: list[tuple[Any, Any]]) -> list[str]:
    return [text(r) for _, r in rows]


@pytest.fixture
def m() -> Model:
    model = Model(listen_addr="127.0.0.1:6831")
    return feed(model, fx_messages())


def cur(model: Model) -> Client:
    cl = model.client()
    assert cl is not None
    return cl


# --------------------------------------------------------------------- tx bar, timelines
def test_no_client_listening() -> None:
    assert view.tx_bar(Model(listen_addr="127.0.0.1:9")) == (
        "Listening for connections on 127.0.0.1:9",
        "",
    )
    assert "Listening" not in text(view.tx_bar(Model())[0])
    assert view.tx_timeline_title(Model()) == " Transition 0 / 0 "
    assert view.steps_timeline_title(Model()) == " Next mutation step 0 / 0 "


def test_no_transitions_yet() -> None:
    m = feed(Model(), [fx_schema()])
    assert text(view.tx_bar(m)[0]) == "Tail | No transitions yet..."
    assert view.tx_timeline_title(m) == " Transition 0 / 0 "
    assert view.next_tx_bar(m)[0] == "Next | none"


def test_tail_bar_and_timeline(m: Model) -> None:
    left, right = view.tx_bar(m)
    assert text(left) == "Tail | tx: 8 | Time: +1 | add: Foo"
    assert isinstance(right, str)
    assert right.startswith("add: 1 | rm: 0 | touch: 1 | ")
    clock = right.rsplit(" | ", 1)[1]
    assert len(clock) == 15 and clock[2] == ":" and clock[8] == "."  # HH:MM:SS.ffffff
    assert view.tx_timeline_title(m) == " Transition 7 / 7 (8 / 8) "
    assert view.tx_progress(m) == 1.0
    assert view.next_tx_bar(m)[0] == "Next | none"


def test_step_back_over_hidden_and_canceled(m: Model) -> None:
    """Scenario 3."""
    m.prev_tx()
    assert text(view.tx_bar(m)[0]) == "Paused | tx: 7 | Time: +1 | remove: Baz"
    assert view.tx_timeline_title(m) == " Transition 6 / 7 (7 / 8) "
    m.prev_tx()
    left, right = view.tx_bar(m)
    assert text(left).startswith("Paused | tx: 5 | ")
    assert attrs(left)[text(left)] == "red"
    assert isinstance(right, str) and right.startswith("canceled | add: 0 | rm: 0 | ")
    assert view.tx_timeline_title(m) == " Transition 5 / 7 (5 / 8) "
    foo = next(r for r in view.tree_rows(m, cur(m), set()) if r.state == "Foo" and r.depth == 0)
    assert text(foo.markup).startswith("Foo ") and text(foo.markup).endswith("|2")


def test_flags_on_the_right_and_multi(m: Model) -> None:
    m.goto("fx-a", 2)
    assert text(view.tx_bar(m)[1]).startswith("auto | add: 1 | rm: 0 | ")
    m.filters.health = False
    m.filters_changed()
    m.goto("fx-a", 6)
    assert text(view.tx_bar(m)[0]) == "Paused | tx: 6 | Time: +1 | add multi: Healthcheck"
    assert view.tx_timeline_title(m) == " Transition 6 / 8 "  # nothing hidden
    # a check tx
    m.ingest(1, tx_msg("fx-a", 9, [FOO], [1, 1, 3, 1, 2, 1, 0], None, flags=CHECK))
    m.filters.checks = False
    m.filters_changed()
    m.goto("fx-a", 9)
    assert text(view.tx_bar(m)[1]).startswith("check | canceled | add: 0")


def test_modes(m: Model) -> None:
    m.goto("fx-a", 4)
    m.playing = True
    assert text(view.tx_bar(m)[0]).startswith("Playing | tx: 4 | Time: +2 | add: Baz")
    m.set_tail(True)
    assert text(view.tx_bar(m)[0]).startswith("Tail | tx: 8 ")


def test_initial_schema_and_steps(m: Model) -> None:
    m.first()
    assert text(view.tx_bar(m)[0]) == "Paused | Initial machine schema"
    assert text(view.next_tx_bar(m)[0]).startswith("Next | tx: 1 | Time: +1 | add: Start")
    m.next_tx()
    m.next_tx()
    m.step_fwd()
    m.step_fwd()
    assert view.steps_timeline_title(m) == " Next mutation step 2 / 5 "
    assert view.steps_progress(m) == pytest.approx(0.4)
    assert view.status_bar(m)[1] == "Bar add Foo"
    rows = view.tree_rows(m, cur(m), set())
    # touched states first while stepping
    assert [r.state for r in rows if r.depth == 0][:2] == ["Bar", "Foo"]
    assert view.address_bar(m).endswith("mach://fx-a/fx-a:2/2")


def test_next_bar_of_a_canceled_tx_is_grey(m: Model) -> None:
    m.goto("fx-a", 4)
    left, right = view.next_tx_bar(m)
    assert text(left) == "Next | tx: 5 | Time: +0 | add: Foo"
    assert attrs(left)[text(left)] == "grey"
    assert isinstance(right, str) and right.startswith("canceled | ")


# ------------------------------------------------------------------------------ tree
def test_tree_rows_and_children(m: Model) -> None:
    cl = cur(m)
    rows = view.tree_rows(m, cl, set())
    top = {r.state: text(r.markup) for r in rows if r.depth == 0}
    assert list(top) == FX_NAMES
    assert top["Foo"] == "Foo         |3"
    assert top["Healthcheck"] == "Healthcheck M|1"
    assert top["Baz"].endswith(" |2")
    assert all(r.depth == 0 for r in rows)  # nothing expanded
    assert view.schema_title(cl) == " Schema:7 " and view.schema_title(None) == " Schema:0 "
    seg = attrs(next(r.markup for r in rows if r.state == "Foo"))
    assert seg == {"Foo         ": "active", "|3": "active"}
    assert attrs(next(r.markup for r in rows if r.state == "Healthcheck"))["M|1"] == "active_multi"
    assert attrs(next(r.markup for r in rows if r.state == "Baz"))["|2"] == "inactive"
    # expanded: flags, relation nodes with targets, tags
    rows = view.tree_rows(m, cl, {"Ready", "Bar"})
    kids = [(r.depth, text(r.markup).strip(), r.target_state) for r in rows if r.depth]
    assert kids == [
        (1, "auto", None),
        (1, "Require", None),
        (2, "Start", "Start"),
        (1, "Add", None),
        (2, "Foo", "Foo"),
    ]
    everything = view.tree_rows(m, cl, set(), all_expanded=True)
    labels = [text(r.markup).strip() for r in everything if r.depth == 1]
    assert {"Add", "Require", "Remove", "multi", "auto"} <= set(labels)


def test_tree_tags_selected_and_group() -> None:
    m = Model()
    schema = fx_schema()
    schema[5] = dict(schema[5], Foo={"require": ["Start"], "tags": ["io", "net"]})
    schema[6] = {"Work": [FOO, BAR]}
    feed(m, [schema] + [fx_tx(k) for k in range(1, 9)])
    cl = cur(m)
    rows = view.tree_rows(m, cl, {"Foo"})
    assert [text(r.markup).strip() for r in rows if r.state == "Foo" and r.depth][-2:] == [
        "Tags",
        "#io #net",
    ]
    cl.selected_state = "Foo"
    foo = next(r for r in view.tree_rows(m, cl, set()) if r.key == "Foo")
    assert {a for a, _ in foo.markup} == {"selected"}
    cl.selected_group = "Work"
    assert [r.state for r in view.tree_rows(m, cl, set())] == ["Foo", "Bar"]


def test_step_marks(m: Model) -> None:
    m.goto("fx-a", 2)
    cl = cur(m)
    # tx 3: called Bar, Bar add Foo, handler Foo_enter, activate Bar, activate Foo
    marks = []
    for _ in range(5):
        m.step_fwd()
        rows = view.tree_rows(m, cl, set())
        marks.append({r.state: text(r.markup).split("|")[1] for r in rows if r.depth == 0})
    # ticks at the cursor (tx 2), marks of the steps applied so far
    assert marks[0]["Bar"] == "0" and marks[0]["Foo"] == "0"  # called: no mark
    assert marks[2]["Foo"] == "0*"
    assert marks[3]["Bar"] == "0+"
    assert marks[4]["Foo"] == "0*+"
    # touched states are expanded and bold, called underlined
    rows = view.tree_rows(m, cl, set())
    assert any(r.state == "Bar" and r.depth == 2 and r.target == "Foo" for r in rows)
    bar = attrs(rows[0].markup)
    assert (
        rows[0].state == "Bar"
        and bar["Bar         "] == "called"
        and bar["|0"] == "inactive_touched"
    )
    assert view.status_bar(m)[1] == "activate Foo"
    # tx 5 (canceled): cancel marks the called state, red at its last step
    m.goto("fx-a", 4, 3)
    foo = next(r for r in view.tree_rows(m, cl, set()) if r.key == "Foo")
    assert text(foo.markup).endswith("|2!")
    assert foo.markup[-1] == ("red", "!")
    assert view.status_bar(m)[1] == "cancel Foo"
    m.goto("fx-a", 4, 2)
    foo = next(r for r in view.tree_rows(m, cl, set()) if r.key == "Foo")
    assert text(foo.markup).endswith("|2")


def test_tree_marks_veto_and_deactivate() -> None:
    m = Model()
    feed(m, [fx_schema()])
    steps = [[32, -1, FOO, -1, 0, None, 0], [8, -1, BAZ, -1, 0, None, 0],
             [2, FOO, FOO, -1, 4, "Foo_enter", 10], [64, -1, -1, -1, 0, None, 0]]  # fmt: skip
    m.ingest(1, tx_msg("fx-a", 1, [FOO], [1, 0, 0, 0, 1, 0, 0], None, flags=0, steps=steps))
    m.first()
    cl = cur(m)
    for _ in range(4):
        m.step_fwd()
    top = {r.state: text(r.markup) for r in view.tree_rows(m, cl, set()) if r.depth == 0}
    assert top["Foo"].endswith("|0*!") and top["Baz"].endswith("|1-")
    assert list(top)[:2] == ["Foo", "Baz"]
    rd = rows_text(view.reader_tree(m, cl))
    assert rd == ["Initial machine schema", *rd[1:]]
    m.next_tx()
    rd = rows_text(view.reader_tree(m, cl))
    assert "Foo_enter:fx-a 10ns (veto)" in rd


# ------------------------------------------------------------------------------- log
def test_log_lines_and_title(m: Model) -> None:
    """Scenario 15."""
    cl = cur(m)
    lines = rows_text(view.log_lines(m, cl))
    assert lines == [
        "[state] +Start",
        "[auto_] +Ready",
        "[state] +Bar +Foo",
        "[state] +Baz -Foo",
        "[cance] +Foo",
        "[state] -Baz",
        "[state] +Foo",
    ]  # tx 6 hidden by the health filter
    nos = [no for no, _ in view.log_lines(m, cl)]
    assert nos == [1, 2, 3, 4, 5, 7, 8]
    assert view.log_title(m) == " Log:changes (t9) "
    m.filters.log_level = 0
    assert view.log_lines(m, cl) == []
    m.filters.log_level = 5
    assert view.log_title(m) == " Log:everything (t9) "


def test_log_markup(m: Model) -> None:
    cl = cur(m)
    m.goto("fx-a", 7)
    lines = dict(view.log_lines(m, cl))
    assert lines[7] == [("selected", "[state] -Baz")]  # the current tx
    # state names bold, called ones underlined
    assert lines[3] == [("body", "[state] "), ("called", "+Bar"), ("body", " "), ("bold", "+Foo")]
    assert lines[5] == [("grey", "[cance] +Foo")]


def test_log_synthetic_levels_and_outside_lines() -> None:
    m = Model()
    feed(m, [fx_schema()])
    m.ingest(1, tx_msg("fx-a", 1, [START], [0] * 7, [1, 0, 0, 0, 0, 0, 0],
                       log=[[2, "[state] +Start", None], [3, "[handler] ops line", None]],
                       pre_log=[[1, "[exter] hello", None]]))  # fmt: skip
    m.ingest(1, ["log", "fx-a", [[2, "between 1 and 2", None], [4, "decision", None]]])
    m.ingest(1, queued_msg("fx-a", "fx-a:1-1", [FOO], qtick=1, mut_qtick=2))
    m.ingest(1, queued_msg("fx-a", "fx-a:1-2", [READY], flags=AUTO, qtick=1, mut_qtick=3))
    m.ingest(1, tx_msg("fx-a", 2, [START], [1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]))
    m.ingest(1, tx_msg("fx-a", 3, [FOO], [1, 0, 0, 0, 0, 0, 0], None, flags=0, mut_qtick=2))
    m.ingest(1, ["log", "fx-a", [[2, "after all", None]]])
    cl = cur(m)
    lines = view.log_lines(m, cl)
    assert rows_text(lines) == [
        "[exter] hello",
        "[state] +Start",
        "between 1 and 2",
        "[queue] +Foo",
        "[aqueu] +Ready",
        "[empty] +Start",
        "[cance] +Foo",
        "after all",
    ]
    assert [no for no, _ in lines] == [1, 1, 1, 2, 3, 4, 5, 5]
    assert lines[0][1] == [("faded", "[exter] hello")]
    m.filters.log_level = 3
    assert "[handler] ops line" in rows_text(view.log_lines(m, cl))
    assert "decision" not in rows_text(view.log_lines(m, cl))
    m.filters.log_level = 1
    assert rows_text(view.log_lines(m, cl)) == [
        "[exter] hello",
        "[queue] +Foo",
        "[aqueu] +Ready",
        "[empty] +Start",
        "[cance] +Foo",
    ]
    # hiding queued, canceled and empty txs hides their synthetic lines
    m.filters.log_level = 2
    m.filters.queued = m.filters.canceled = m.filters.empty = True
    m.filters_changed()
    assert not any(x.startswith("[") and x[1:6] in {"queue", "aqueu", "cance", "empty"}
                   for x in rows_text(view.log_lines(m, cl)))  # fmt: skip


def test_log_window_stays_small_on_long_histories() -> None:
    m = Model()
    n = 20_000
    msgs: list[list[Any]] = [fx_schema()]
    ticks = [1, 0, 0, 0, 0, 0, 0]
    for k in range(1, n + 1):
        after = list(ticks)
        after[BAZ] += 1
        msgs.append(tx_msg("fx-a", k, [BAZ], ticks, after, typ=0 if after[BAZ] % 2 else 1,
                           log=[[2, f"line {k}", None]]))  # fmt: skip
        ticks = after
    feed(m, msgs)
    cl = cur(m)
    t0 = time.perf_counter()
    lines = view.log_lines(m, cl)
    rain = view.rain_rows(m, cl, 30)
    view.tree_rows(m, cl, set(), all_expanded=True)
    view.reader_tree(m, cl)
    view.client_list_rows(m)
    m.goto("fx-a", 10_000)
    mid = view.log_lines(m, cl, around=50)
    again = view.reader_tree(m, cl)
    elapsed = time.perf_counter() - t0
    assert 0 < len(lines) <= 201 and text(lines[-1][1]) == f"line {n}"
    assert len(mid) == 101 and text(mid[50][1]) == "line 10000"
    assert len(rain) == 30 and text(rain[-1][1]).endswith(f" {n} | t{sum(ticks)}")
    assert any("current q" in x for x in rows_text(again))
    assert len(view.log_lines(m, cl, around=None)) == n
    assert elapsed < 2.0


# ---------------------------------------------------------------------------- reader
def test_reader(m: Model) -> None:
    """Scenario 17."""
    cl = cur(m)
    rows = view.reader_tree(m, cl)
    lines = rows_text(rows)
    assert lines[:8] == [
        "Source",
        "self",
        "Queue (0)",
        "current q8",
        "executed at q8, queued for q8",
        "length 0",
        "Executed (1)",
        "Foo_enter:fx-a 4µs",
    ]
    for title in ("Arguments (0)", "When (0)", "WhenNot (0)", "WhenTime (0)", "WhenArgs (0)",
                  "WhenQueue (0)"):  # fmt: skip
        assert title in lines
    assert "Forked" not in " ".join(lines) and "Pipe-in" not in " ".join(lines)
    assert [d for d, _ in rows][:2] == [0, 1]
    assert view.reader_title(m) == " Reader "
    assert view.reader_rows is view.reader_tree


def test_reader_queue_args_error_and_trace() -> None:
    m = Model()
    feed(m, [fx_schema()])
    m.ingest(1, tx_msg("fx-a", 1, [START], [0] * 7, [1, 0, 0, 0, 0, 0, 0], qtick=1))
    m.ingest(1, queued_msg("fx-a", "fx-a:1-1", [FOO], qtick=1, mut_qtick=3))
    m.ingest(1, queued_msg("fx-a", "fx-a:1-2", [BAR], qtick=1, mut_qtick=4))
    m.ingest(1, tx_msg("fx-a", 2, [FOO], [1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0], qlen=2,
                       qtick=3, mut_qtick=3, args={"id": "x", "n": "2"}, err="boom"))  # fmt: skip
    cl = cur(m)
    m.goto("fx-a", 3)  # the second queued record: both still pending
    lines = rows_text(view.reader_tree(m, cl))
    assert "Queue (2)" in lines
    assert "queued at q1, queued for q4" in lines
    assert "q3 add: Foo mach://fx-a/fx-a:1-1" in lines
    assert "q4 add: Bar mach://fx-a/fx-a:1-2" in lines
    assert "Stack trace (2)" in lines and "    mach.add('Foo')" in lines
    assert text(view.tx_bar(m)[0]) == "Paused | tx: 3 | Time: +0 | q add: Bar"
    m.goto("fx-a", 4)  # the tx that executed the first one
    lines = rows_text(view.reader_tree(m, cl))
    assert "Queue (1)" in lines and "length 2" in lines and "current q3" in lines
    assert "executed at q3, queued at q1, queued for q3" in lines
    assert "q4 add: Bar mach://fx-a/fx-a:1-2" in lines
    assert not any(x.startswith("q3 ") for x in lines)
    assert lines[lines.index("Arguments (2)") + 1 :][:2] == ["id=x", "n=2"]
    assert lines[lines.index("Error") + 1] == "boom"
    m.goto("fx-a", 2)  # the first queued record
    lines = rows_text(view.reader_tree(m, cl))
    assert "queued at q1, executed at q3, queued for q3" in lines
    assert "Queue (1)" in lines and "q3 add: Foo mach://fx-a/fx-a:1-1" in lines


def test_reader_subscriptions_open_now() -> None:
    m = Model()
    feed(m, [fx_schema()])
    log1 = [
        [3, "[when:new] Foo", ["when:new", [FOO]]],
        [3, "[whenNot:new] Baz", ["whenNot:new", [BAZ]]],
        [3, "[whenTime:new]", ["whenTime:new", [FOO, BAR], [3, 1]]],
        [3, "[whenArgs:new]", ["whenArgs:new", BAR, ["id"]]],
        [3, "[whenQueue:new]", ["whenQueue:new", 7]],
        [3, "[ctx:new]", ["ctx:new", START]],
        [3, "[pipe-in:add]", ["pipe-in:add", FOO, "other", "Bar"]],
        [3, "[pipe-out:add]", ["pipe-out:add", BAR, "gone", "Baz"]],
    ]
    m.ingest(1, tx_msg("fx-a", 1, [START], [0] * 7, [1, 0, 0, 0, 0, 0, 0], log=log1))
    m.ingest(1, ["log", "fx-a", [[3, "[when:new] Foo", ["when:new", [FOO]]]]])  # twice
    log2 = [[3, "[when:match] Foo", ["when:match", [FOO]]], [3, "gc", ["pipe:gc", "gone"]],
            [3, "[ctx:match]", ["ctx:match", START]]]  # fmt: skip
    m.ingest(1, tx_msg("fx-a", 2, [FOO], [1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0], log=log2))
    cl = cur(m)
    m.goto("fx-a", 1)
    lines = rows_text(view.reader_tree(m, cl))
    sec = {x.split(" (")[0]: x for x in lines if " (" in x and not x.startswith(" ")}
    assert sec["When"] == "When (1)"  # the second When was logged after tx 1
    assert sec["StateCtx"] == "StateCtx (1)" and sec["Pipe-out"] == "Pipe-out (1)"
    assert "Foo t1" in lines and "Baz t1" in lines
    assert "Foo Bar 3 1 t1" in lines and "Bar (id) t1" in lines and "q7 t1" in lines
    assert "Foo <- Bar mach://other t1" in lines and "Bar -> Baz mach://gone t1" in lines
    m.goto("fx-a", 2)
    lines = rows_text(view.reader_tree(m, cl))
    assert "When (1)" in lines  # two opened, one matched
    assert "StateCtx (1)" not in lines and not any(x.startswith("Pipe-out") for x in lines)
    assert "Pipe-in (1)" in lines and "WhenNot (1)" in lines
    m.goto("fx-a", 0)
    assert "When (0)" in rows_text(view.reader_tree(m, cl))


def test_reader_source_trace_forked_siblings() -> None:
    m = Model()
    feed(m, [fx_schema("a"), fx_schema("b", parent="a"), fx_schema("c", parent="b")])
    m.ingest(1, tx_msg("a", 1, [START], [0] * 7, [1, 0, 0, 0, 0, 0, 0]))
    m.ingest(1, tx_msg("b", 1, [START], [0] * 7, [1, 0, 0, 0, 0, 0, 0], src=["a", "a:1", 1]))
    m.ingest(1, tx_msg("c", 1, [FOO], [0] * 7, [0, 0, 1, 0, 0, 0, 0], src=["b", "b:1", 1]))
    m.ingest(1, tx_msg("c", 2, [BAR], [0, 0, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0],
                       src=["b", "b:1", 1]))  # fmt: skip
    m.goto("c", 1)
    lines = rows_text(view.reader_tree(m, cur(m)))
    assert lines[:4] == ["Source", "mach://b/b:1 t1", "add: Start", "#child"]
    i = lines.index("State Trace (2)")
    assert lines[i + 1 : i + 3] == ["mach://b/b:1 t1", "mach://a/a:1 t1"]
    i = lines.index("Siblings (1)")
    assert lines[i + 1] == "mach://c/c:2 add: Bar"
    m.goto("b", 1)
    lines = rows_text(view.reader_tree(m, cur(m)))
    i = lines.index("Forked (2)")
    assert lines[i + 1 : i + 3] == ["mach://c/c:1 add: Foo", "mach://c/c:2 add: Bar"]
    # the index follows new records and removed clients
    m.ingest(1, tx_msg("a", 2, [FOO], [1, 0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0],
                       src=["b", "b:1", 1]))  # fmt: skip
    assert "Forked (3)" in rows_text(view.reader_tree(m, cur(m)))
    m.remove_client("c")
    m.goto("b", 1)
    assert "Forked (1)" in rows_text(view.reader_tree(m, cur(m)))
    # a source machine the debugger never saw
    m.ingest(1, tx_msg("a", 3, [BAR], [1, 0, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0, 0],
                       src=["zz", "zz:9", 4]))  # fmt: skip
    m.goto("a", 3)
    assert rows_text(view.reader_tree(m, cur(m)))[:3] == [
        "Source",
        "mach://zz/zz:9 t4",
        "unknown machine",
    ]


# ---------------------------------------------------------------------- client list
def test_client_list_and_tags_with_child() -> None:
    """Scenario 19."""
    m = Model()
    feed(m, fx_messages())
    m.ingest(1, fx_schema("fx-b", parent="fx-a"))
    m.ingest(1, fx_schema("fx-c", parent="fx-b"))
    m.ingest(1, fx_tx(1, "fx-b"))
    rows = view.client_list_rows(m)
    assert [text(r) for _, r in rows] == ["fx-a R|8", "- fx-b S|1", "-- fx-c |0"]
    assert [cid for cid, _ in rows] == ["fx-a", "fx-b", "fx-c"]
    assert view.client_list_title(m) == " Machines:3 T:10 "
    assert attrs(rows[0][1])["fx-a R|8"] == "selected"
    m.select("fx-b")
    assert view.tags_bar(m) == "#child ... #fixture #env:test"
    assert view.address_bar(m) == "◀ ▶  mach://fx-b/fx-b:1"


def test_client_labels_at_the_viewed_moment() -> None:
    m = Model()
    feed(m, fx_messages())
    feed(m, fx_messages("fx-b", hello=False))
    m.goto("fx-a", 1)
    labels = {cid: text(r) for cid, r in view.client_list_rows(m)}
    # same display times: fx-b counts its records at or before fx-a's tx 1
    assert labels == {"fx-a": "fx-a S|1+", "fx-b": "fx-b S|1+"}
    m.goto("fx-a", 0)
    assert text(view.client_list_rows(m)[1][1]) == "fx-b |0+"


def test_client_list_colours() -> None:
    m = Model()
    feed(m, fx_messages())
    m.ingest(2, fx_schema("fx-b"))
    err = [1, 0, 0, 0, 0, 0, 1]
    m.ingest(2, tx_msg("fx-b", 1, [EXC], [0] * 7, err, t1=FX_T0))
    m.ingest(2, fx_schema("fx-c"))
    m.ingest(2, tx_msg("fx-c", 1, [EXC], [0] * 7, err, t1=FX_T0))
    m.ingest(2, tx_msg("fx-c", 2, [EXC], err, [1, 0, 0, 0, 0, 0, 2], typ=1, t1=FX_T0))
    m.ingest(3, fx_schema("fx-d"))
    m.conn_closed(3)
    got = {cid: (text(r), attrs(r)[text(r)]) for cid, r in view.client_list_rows(m)}
    assert got["fx-a"] == ("fx-a R|8", "selected")
    assert got["fx-b"] == ("fx-b ES|1", "error")
    assert got["fx-c"] == ("fx-c S|2", "err_recent")
    assert got["fx-d"] == ("fx-d |0", "disconnected")


def test_tags_bar_dropped() -> None:
    m = Model()
    feed(m, fx_messages())
    m.ingest(1, ["drop", "fx-a", 12, FX_T0])
    assert view.tags_bar(m) == "#fixture #env:test dropped:12"
    assert view.tags_bar(Model()) == ""


# ------------------------------------------------------------------- rain, status, help
def test_rain(m: Model) -> None:
    cl = cur(m)
    rows = view.rain_rows(m, cl, 10)
    assert [no for no, _ in rows] == [1, 2, 3, 4, 5, 7, 8]
    # Start Ready Foo Bar Baz Healthcheck Exception
    assert [text(r) for _, r in rows] == [
        "2...... 1 | t1",
        "12..... 2 | t2",
        "1122... 3 | t4",
        "11|12.. 4 | t6",
        "11c12.. 5 | t6",
        "11.1|1. 7 | t8",
        "1121.1. 8 | t9",
    ]
    assert rows[-1][1] == [("selected", "1121.1. 8 | t9")]
    assert ("called", "c") in rows[4][1]
    cl.selected_state = "Bar"
    assert rows_text(view.rain_rows(m, cl, 10))[2] == "1122... 3 | t4"
    assert ("selected", "2") in view.rain_rows(m, cl, 10)[2][1]
    assert [no for no, _ in view.rain_rows(m, cl, 3)] == [5, 7, 8]
    assert view.rain_title(m) == " Rain "


def test_status_bar(m: Model) -> None:
    assert view.status_bar(m) == ("Graph:t9", "")
    cl = cur(m)
    cl.selected_state = "Foo"
    m.goto("fx-a", 4)
    assert view.status_bar(m) == ("Graph:t6 | Foo | idx: 2 | tick: 2", "")


def test_step_words() -> None:
    m = feed(Model(), fx_messages())
    cl = cur(m)
    from trio_am.dbg.model import Step

    def w(kind: int, a: int = -1, b: int = -1, rel: int = -1, name: str | None = None) -> str:
        return view.step_words(cl, Step(kind, a, b, rel, 0, name, 0))

    assert w(4, b=FOO) == "activate Foo"
    assert w(8, b=FOO) == "deactivate Foo"
    assert w(16, b=BAZ) == "deactivate passive Baz"
    assert w(32, b=BAR) == "called Bar"
    assert w(1, BAR, FOO, 1) == "Bar add Foo"
    assert w(1, READY, START, 2) == "Ready require Start"
    assert w(1, BAZ, FOO, 3) == "Baz remove Foo"
    assert w(1, FOO, BAR, 0) == "Foo after Bar"
    assert w(2, FOO, FOO, name="Foo_state") == "handler Foo_state"
    assert w(2) == "handler Any"
    assert w(64, b=FOO) == "cancel Foo"
    assert view.step_words(cl, Step(64, -1, -1, -1, 0, None, 0), cl.txs[4]) == "cancel Foo"
    assert view.step_words(cl, None) == ""


def test_toolbars(m: Model) -> None:
    rows = view.toolbar_rows(m, {"reader": True, "timelines": 1, "view": "rain"})
    assert len(rows) == 4
    assert [it.label for it in rows[1]] == ["log", "canceled", "queued", "auto", "empty",
                                            "health", "group", "disconn", "checks", "times",
                                            "rpc"]  # fmt: skip
    assert [it.label for it in rows[3]] == ["help", "tail", "reader", "timelines", "wrap",
                                            "narrow", "rain", "matrix"]  # fmt: skip
    assert [it.label for it in rows[0]][-3:] == ["play", "first", "last"]
    state = {it.id: it.text() for row in rows for it in row}
    assert state["log_level"] == "[2] log"
    assert state["canceled"] == "[ ] canceled" and state["health"] == "[X] health"
    assert state["auto"] == "[*] auto" and state["checks"] == "[X] checks"
    assert state["tail"] == "[X] tail" and state["reader"] == "[X] reader"
    assert state["timelines"] == "[1] timelines" and state["rain"] == "[X] rain"
    assert state["matrix"] == "[ ] matrix" and state["help"] == "help"
    m.toggle_filter("auto")
    m.toggle_filter("canceled")
    state = {it.id: it.text() for row in view.toolbar_rows(m, {}) for it in row}
    assert state["auto"] == "[X] auto" and state["canceled"] == "[X] canceled"
    assert state["tail"] == "[X] tail" and state["reader"] == "[ ] reader"


def test_help(m: Model) -> None:
    help_ = "\n".join(view.help_text(m, "1.2.3"))
    assert "trio-am-dbg 1.2.3" in help_ and "Keystrokes" in help_
    for key in ("ctrl+q", "tail", "space", "left / right", "alt+j / alt+k", "alt+h / alt+l",
                "alt+left / alt+right", "home / end", "alt+v", "alt+m", "alt+r", "alt+o",
                "alt+e", "alt+s", "alt+f", "alt+n", "alt+p", "alt+d", "?", "esc", "tab",
                "shift+tab", "enter", "backspace", "up / down"):  # fmt: skip
        assert key in help_, key
    for legend in ("tree:", "rain:", "matrix:", "log:", "client list:", "toolbar:"):
        assert legend in help_
    assert "127.0.0.1:6831" in help_ and "Memory: " in help_
    # quit, help and tail within the first rows (scenario 11 on a small screen)
    top = "\n".join(view.help_text(m)[:8])
    assert "Keystrokes" in top and "ctrl+q" in top and "tail" in top
