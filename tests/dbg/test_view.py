"""The debugger's text renderers (trio_am.dbg.view) on the FX records, without urwid."""

from __future__ import annotations

from typing import Any

import pytest

from trio_am.dbg import view
from trio_am.dbg.model import Model

from .conftest import fx_messages, fx_schema, fx_tx


def text(markup: Any) -> str:
    if isinstance(markup, str):
        return markup
    return "".join(m if isinstance(m, str) else m[1] for m in markup)


@pytest.fixture
def m() -> Model:
    model = Model(listen_addr="127.0.0.1:6831")
    for msg in fx_messages():
        model.ingest(1, msg)
    return model


def test_no_client_listening() -> None:
    assert (
        view.tx_bar(Model(listen_addr="127.0.0.1:9"))[0]
        == "Listening for connections on 127.0.0.1:9"
    )


def test_tail_bar_and_timeline(m: Model) -> None:
    left, right = view.tx_bar(m)
    assert text(left) == "Tail | tx: 8 | Time: +1 | add: Foo"
    assert right.startswith("add: 1 | rm: 0 | touch: ")
    assert view.tx_timeline_title(m) == " Transition 7 / 7 (8 / 8) "
    assert view.next_tx_bar(m)[0] == "Next | none"


def test_step_back_over_hidden_and_canceled(m: Model) -> None:
    m.prev_tx()
    assert text(view.tx_bar(m)[0]) == "Paused | tx: 7 | Time: +1 | remove: Baz"
    assert view.tx_timeline_title(m) == " Transition 6 / 7 (7 / 8) "
    m.prev_tx()
    left, right = view.tx_bar(m)
    assert "tx: 5 " in text(left) and right.startswith("canceled | ")
    cl = m.client()
    assert cl is not None
    foo = next(r for r in view.tree_rows(m, cl, set()) if r.state == "Foo" and r.depth == 0)
    assert text(foo.markup).endswith("|2")


def test_initial_schema_and_steps(m: Model) -> None:
    m.first()
    assert text(view.tx_bar(m)[0]) == "Paused | Initial machine schema"
    m.next_tx()
    m.next_tx()
    m.step_fwd()
    m.step_fwd()
    assert view.steps_timeline_title(m) == " Next mutation step 2 / 5 "
    assert view.status_bar(m)[1] == "Bar add Foo"
    cl = m.client()
    assert cl is not None
    rows = view.tree_rows(m, cl, set())
    # touched states first while stepping, with marks
    assert [r.state for r in rows if r.depth == 0][:2] == ["Bar", "Foo"]


def test_log_lines_and_title(m: Model) -> None:
    cl = m.client()
    assert cl is not None
    lines = [text(x) for _, x in view.log_lines(m, cl)]
    assert "[state] +Start" in lines and "[cance] +Foo" in lines and "[state] +Baz -Foo" in lines
    assert "[state] +Healthcheck" not in lines  # tx 6 hidden by the health filter
    assert view.log_title(m) == " Log:changes (t9) "
    m.filters.log_level = 0
    assert view.log_lines(m, cl) == []


def test_reader(m: Model) -> None:
    cl = m.client()
    assert cl is not None
    rows = [text(x) for _, x in view.reader_rows(m, cl)]
    for want in ("Source", "self", "current q8", "length 0", "Executed (1)", "Foo_enter:fx-a"):
        assert any(want in r for r in rows), want


def test_client_list_and_tags_with_child() -> None:
    m = Model()
    for msg in fx_messages():
        m.ingest(1, msg)
    m.ingest(1, fx_schema("fx-b", parent="fx-a"))
    m.ingest(1, fx_tx(1, "fx-b"))
    rows = view.client_list_rows(m)
    assert [text(r)[:6] for _, r in rows] == ["fx-a R", "- fx-b"]
    assert view.client_list_title(m).startswith(" Machines:2 ")
    m.select("fx-b")
    assert view.tags_bar(m) == "#child ... #fixture #env:test"


def test_toolbars_and_help(m: Model) -> None:
    rows = view.toolbar_rows(m, {})
    labels = [it.label for row in rows for it in row]
    for want in (
        "canceled",
        "queued",
        "auto",
        "health",
        "disconn",
        "rpc",
        "help",
        "tail",
        "reader",
    ):
        assert want in labels
    assert next(it for it in rows[3] if it.id == "tail").state == "[X]"
    help_ = "\n".join(view.help_text(m))
    assert "Keystrokes" in help_ and "ctrl+q" in help_


def test_rain(m: Model) -> None:
    cl = m.client()
    assert cl is not None
    rows = view.rain_rows(m, cl, 10)
    last = text(rows[-1][1])
    # Start Ready Foo Bar Baz Healthcheck Exception after add Foo
    assert last.startswith("1121.1. 8 | t9")
