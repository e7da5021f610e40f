"""The debugger model (trio_am.dbg.model): ingest, filters, clients, navigation, URLs."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.dbg.conftest import (
    ACCEPTED,
    AUTO,
    CHECK,
    FX_DT,
    FX_NAMES,
    FX_T0,
    feed,
    fx_messages,
    fx_schema,
    fx_tx,
)
from trio_am.dbg.model import Filters, Model

FOO, BAR, BAZ, HEALTH = 2, 3, 4, 5


def extra_txs(n: int, mid: str = "fx-a", *, start: int = 9) -> list[list[Any]]:
    """FX ``--extra n``: toggle Baz n more times after tx 8 (ticks continue from tx 8)."""
    ticks = [1, 1, 3, 1, 2, 1, 0]
    out = []
    for k in range(start, start + n):
        before = list(ticks)
        ticks[BAZ] += 1
        typ = 0 if ticks[BAZ] & 1 else 1
        t1 = FX_T0 + k * FX_DT
        out.append(
            [
                "tx",
                mid,
                f"{mid}:{k}",
                typ,
                [BAZ],
                {},
                ACCEPTED,
                [],
                before,
                list(ticks),
                [[32, -1, BAZ, -1, 0, None, 0], [4 if typ == 0 else 8, -1, BAZ, -1, 0, None, 0]],
                [[2, f"[state] {'+' if typ == 0 else '-'}Baz", None]],
                None,
                0,
                k,
                k,
                0,
                None,
                t1 - 1000,
                t1,
                None,
                None,
            ]  # fmt: skip
        )
    return out


def tx_msg(mid: str, k: int, t1: int, *, called: list[int] | None = None, flags: int = ACCEPTED,
           before: list[int] | None = None, after: list[int] | None = None,
           mut_qtick: int = 0) -> list[Any]:  # fmt: skip
    """A minimal tx record."""
    before = before if before is not None else [0] * len(FX_NAMES)
    return ["tx", mid, f"{mid}:{k}", 0, called or [0], {}, flags, [], before,
            after if after is not None else before, [], [], None, 0, k, mut_qtick, 0, None,
            t1 - 10, t1, None, None]  # fmt: skip


# ------------------------------------------------------------------------------ FX ingest
def test_fx_records_and_derived_fields(fx_model: Model) -> None:
    cl = fx_model.clients["fx-a"]
    assert cl.names == FX_NAMES
    assert cl.tags == ["fixture", "env:test"]
    assert cl.connected and cl.parent_id is None
    assert len(cl.txs) == 8
    assert [tx.id for tx in cl.txs] == [f"fx-a:{k}" for k in range(1, 9)]
    # tx 2 auto, tx 5 canceled, tx 6 health, no queued records
    assert [tx.auto for tx in cl.txs] == [False, True] + [False] * 6
    assert [tx.canceled for tx in cl.txs] == [False] * 4 + [True] + [False] * 3
    assert [tx.accepted for tx in cl.txs] == [True] * 4 + [False] + [True] * 3
    assert [tx.is_health for tx in cl.txs] == [False] * 5 + [True] + [False] * 2
    assert not any(tx.queued or tx.is_error or tx.is_empty for tx in cl.txs)
    # final ticks and machine time
    assert dict(zip(cl.names, cl.time_at(8), strict=True)) == {
        "Start": 1, "Ready": 1, "Foo": 3, "Bar": 1, "Baz": 2, "Healthcheck": 1, "Exception": 0,
    }  # fmt: skip
    assert cl.mtime_at(8) == cl.mtime == 9
    assert cl.time_at(0) == [0] * 7 and cl.mtime_at(0) == 0
    # tx 3: +Bar +Foo; tx 4: +Baz -Foo; tx 5 canceled changes nothing
    tx3, tx4, tx5, tx8 = cl.txs[2], cl.txs[3], cl.txs[4], cl.txs[7]
    assert sorted(tx3.added) == [FOO, BAR] and tx3.removed == []
    assert tx4.added == [BAZ] and tx4.removed == [FOO]
    assert tx3.time_diff == 2 and tx4.time_diff == 2
    assert tx5.after == tx5.before and tx5.time_diff == 0 and tx5.added == tx5.removed == []
    assert set(tx4.touched) == {FOO, BAZ}
    assert tx8.added == [FOO] and tx8.time_before == 8 and tx8.time_after == 9
    assert tx8.steps[1].name == "Foo_enter" and tx8.steps[1].dur == 3755
    assert tx8.log[0].text == "[state] +Foo" and tx8.log[0].level == 2
    assert tx8.t == FX_T0 + 8 * FX_DT
    assert fx_model.conns[1]["lib"] == "trio_am"


def test_fx_default_filters_hide_health_tx(fx_model: Model) -> None:
    cl = fx_model.clients["fx-a"]
    assert fx_model.visible(cl) == [1, 2, 3, 4, 5, 7, 8]  # 7 of 8
    # auto-select + tail: the cursor is on the last visible tx
    assert fx_model.selected == "fx-a" and fx_model.tail
    assert cl.c == 8 and cl.s == 0
    assert fx_model.vis_pos() == 7
    assert fx_model.url() == "mach://fx-a/fx-a:8"


# ------------------------------------------------------------------------------ filters
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, [1, 2, 3, 4, 5, 7, 8]),
        ({"health": False}, [1, 2, 3, 4, 5, 6, 7, 8]),
        ({"canceled": True}, [1, 2, 3, 4, 7, 8]),
        ({"auto": 2}, [1, 3, 4, 5, 7, 8]),
        ({"auto": 0, "health": False}, [1, 2, 3, 4, 5, 6, 7, 8]),
    ],
)
def test_filters(fx_model: Model, changes: dict[str, Any], expected: list[int]) -> None:
    for k, v in changes.items():
        setattr(fx_model.filters, k, v)
    assert fx_model.visible(fx_model.clients["fx-a"]) == expected


def test_filter_auto_hides_canceled_auto_and_its_queued_record() -> None:
    m = Model()
    m.ingest(1, fx_schema())
    ticks = [1, 0, 0, 0, 0, 0, 0]
    m.ingest(1, tx_msg("fx-a", 1, FX_T0 + 1, before=[0] * 7, after=ticks))
    # a queued auto mutation, later executed and canceled (linked by mut_qtick)
    m.ingest(1, ["queued", "fx-a", "fx-a:1-1", 0, [1], {}, AUTO, 1, 1, 7, 0, 1, None,
                 FX_T0 + 2, None])  # fmt: skip
    m.ingest(1, tx_msg("fx-a", 2, FX_T0 + 3, called=[1], flags=AUTO, before=ticks, mut_qtick=7))
    # an executed auto tx and a check tx
    after = [1, 1, 0, 0, 0, 0, 0]
    m.ingest(1, tx_msg("fx-a", 3, FX_T0 + 4, called=[1], flags=AUTO | ACCEPTED, before=ticks,
                       after=after))  # fmt: skip
    m.ingest(1, tx_msg("fx-a", 4, FX_T0 + 5, called=[2], flags=CHECK, before=after))
    cl = m.clients["fx-a"]
    q, tx2 = cl.txs[1], cl.txs[2]
    assert q.queued and not q.canceled and not q.accepted
    assert q.exec_no == 3 and tx2.queued_no == 2 and tx2.canceled
    assert q.before == ticks and q.time_diff == 0
    assert m.visible(cl) == [1, 4]  # auto '*' + checks hidden
    m.filters.auto = 0
    assert m.visible(cl) == [1, 2, 3, 4]
    m.filters.checks = False
    assert m.visible(cl) == [1, 2, 3, 4, 5]
    m.filters.auto = 2
    assert m.visible(cl) == [1, 5]
    m.filters.queued = True
    m.filters.auto = 0
    assert m.visible(cl) == [1, 3, 4, 5]


def test_filter_empty_and_toggle_coupling(fx_model: Model) -> None:
    m = fx_model
    m.ingest(1, tx_msg("fx-a", 9, FX_T0 + 9 * FX_DT, called=[0], before=[1, 1, 3, 1, 2, 1, 0]))
    cl = m.clients["fx-a"]
    assert cl.txs[8].is_empty
    assert m.visible(cl)[-1] == 9
    m.filters.empty = True
    assert 9 not in m.visible(cl)
    # showing canceled switches the empty filter off
    m.filters.canceled = True
    m.toggle_filter("canceled")
    assert not m.filters.canceled and not m.filters.empty
    m.toggle_filter("auto")
    assert m.filters.auto == 2
    m.toggle_filter("auto")
    assert m.filters.auto == 0
    for _ in range(4):
        m.toggle_filter("log_level")
    assert m.filters.log_level == 0
    with pytest.raises(ValueError, match="unknown filter"):
        m.toggle_filter("nope")


def test_filter_group() -> None:
    m = Model()
    schema = fx_schema()
    schema[6] = {"Work": [FOO, BAR]}
    schema[7] = ["Work"]
    m.ingest(1, schema)
    feed(m, [fx_tx(k) for k in range(1, 9)])
    cl = m.clients["fx-a"]
    assert cl.groups == {"Work": [FOO, BAR]} and cl.groups_order == ["Work"]
    cl.selected_group = "Work"
    m.filters_changed()
    assert m.visible(cl) == [3, 5, 8]  # called Bar / Foo
    assert cl.c == 8
    m.filters.group = False
    assert m.visible(cl) == [1, 2, 3, 4, 5, 7, 8]


def test_visible_is_incremental_and_fast() -> None:
    m = Model()
    feed(m, fx_messages())
    cl = m.clients["fx-a"]
    msgs = extra_txs(20_000)
    t = time.perf_counter()
    for msg in msgs:
        m.ingest(1, msg, msg[19])
        m.visible(cl)
    took = time.perf_counter() - t
    assert len(cl.txs) == 20_008 and cl.c == 20_008
    assert len(m.visible(cl)) == 20_007
    assert took < 5, f"ingest of 20k txs took {took:.2f}s"


# ------------------------------------------------------------------------------ navigation
def test_prev_next_skip_hidden(fx_model: Model) -> None:
    m = fx_model
    cl = m.client()
    assert cl is not None
    m.prev_tx()
    assert not m.tail and cl.c == 7 and m.vis_pos() == 6
    m.prev_tx()
    assert cl.c == 5 and m.vis_pos() == 5  # tx 6 (health) skipped
    assert cl.txs[cl.c - 1].canceled
    assert cl.time_at(cl.c)[FOO] == 2
    m.next_tx()
    assert cl.c == 7
    m.next_tx()
    m.next_tx()
    assert cl.c == 8
    for _ in range(10):
        m.prev_tx()
    assert cl.c == 0
    m.next_tx()
    assert cl.c == 1


def test_step_moves(fx_model: Model) -> None:
    m = fx_model
    cl = m.client()
    assert cl is not None
    m.goto("fx-a", 4)
    assert (cl.c, cl.s) == (4, 0)
    assert m.next_no() == 5 and m.steps_count() == 3
    # back at s = 0: one tx back, s = S of the tx left (tx 4: 4 steps)
    m.step_back()
    assert (cl.c, cl.s) == (3, 4) and m.steps_count() == 4
    m.step_back()
    assert (cl.c, cl.s) == (3, 3)
    m.step_fwd()
    m.step_fwd()
    assert (cl.c, cl.s) == (4, 0)  # at s = S: on to the next tx with s = 0
    m.step_fwd()
    assert (cl.c, cl.s) == (4, 1)
    # stepping skips hidden txs: from tx 5 the next is tx 7
    m.goto("fx-a", 5)
    assert m.next_no() == 7
    for _ in range(3):
        m.step_fwd()
    assert (cl.c, cl.s) == (7, 0)
    m.step_back()
    assert (cl.c, cl.s) == (5, 2)
    # the ends
    m.goto("fx-a", 8)
    m.step_fwd()
    assert (cl.c, cl.s) == (8, 0) and m.next_no() == 0
    m.goto("fx-a", 0)
    m.step_back()
    assert (cl.c, cl.s) == (0, 0)
    m.goto("fx-a", 0, 1)
    assert cl.s == 1  # stepping tx 1
    m.step_back()
    m.step_back()
    assert (cl.c, cl.s) == (0, 0)


def test_jumps_without_a_state() -> None:
    m = feed(Model(), fx_messages())
    feed(m, extra_txs(120))
    cl = m.clients["fx-a"]
    vis = m.visible(cl)
    assert len(cl.txs) == 128 and len(vis) == 127
    m.last()
    assert m.vis_pos() == 127 and not m.tail
    m.jump_back()
    assert m.vis_pos() == 77 and cl.c == vis[76]
    m.jump_back()
    m.jump_back()
    assert cl.c == 0
    m.jump_fwd()
    assert m.vis_pos() == 50
    m.jump_fwd()
    m.jump_fwd()
    assert m.vis_pos() == 127


def test_jumps_with_a_selected_state(fx_model: Model) -> None:
    m = fx_model
    cl = m.client()
    assert cl is not None
    cl.selected_state = "Foo"
    m.last()
    seen = []
    for _ in range(6):
        m.jump_back()
        seen.append(cl.c)
    # txs that added, removed or called Foo: 3 (+Foo), 4 (-Foo), 5 (called), 8
    assert seen == [5, 4, 3, 3, 3, 3]
    m.jump_fwd()
    m.jump_fwd()
    assert cl.c == 5
    m.jump_fwd()
    assert cl.c == 8
    cl.selected_state = "Healthcheck"  # only tx 6, hidden
    m.first()
    m.jump_fwd()
    assert cl.c == 0


def test_first_last_tail(fx_model: Model) -> None:
    m = fx_model
    cl = m.client()
    assert cl is not None
    m.playing = True
    m.first()
    assert cl.c == 0 and not m.tail and not m.playing
    m.ingest(1, tx_msg("fx-a", 9, FX_T0 + 9 * FX_DT, before=cl.time_at(8)))
    assert cl.c == 0  # not tailing: stays
    m.set_tail(True)
    assert cl.c == 9 and m.tail
    m.ingest(1, tx_msg("fx-a", 10, FX_T0 + 10 * FX_DT, before=cl.time_at(9)))
    assert cl.c == 10
    m.ingest(1, tx_msg("fx-a", 11, FX_T0 + 11 * FX_DT, called=[HEALTH], before=cl.time_at(9)))
    assert cl.c == 10  # hidden health tx: the cursor stays on the last visible
    m.prev_tx()
    assert not m.tail and cl.c == 9
    m.last()
    assert cl.c == 10 and not m.tail


def test_play_tick_stops_at_the_end(fx_model: Model) -> None:
    m = fx_model
    cl = m.client()
    assert cl is not None
    m.goto("fx-a", 5)
    m.playing = True
    assert m.play_tick() and cl.c == 7 and m.playing
    assert m.play_tick() and cl.c == 8 and not m.playing
    assert not m.play_tick()


# ------------------------------------------------------------------------------ clients
def test_children_under_parents_natural_sort() -> None:
    m = Model()
    m.ingest(1, fx_schema("fx-a"))
    m.ingest(1, fx_schema("fx-b", parent="fx-a"))
    m.ingest(1, fx_schema("fx-c", parent="fx-b"))
    m.ingest(1, fx_schema("m10"))
    m.ingest(1, fx_schema("m9"))
    m.ingest(1, fx_schema("orphan-kid", parent="nobody"))
    rows = [(d, c.id) for d, c in m.client_list()]
    assert rows == [(0, "fx-a"), (1, "fx-b"), (2, "fx-c"), (0, "m9"), (0, "m10"),
                    (0, "orphan-kid")]  # fmt: skip
    assert m.selected == "fx-a"
    assert m.clients["fx-b"].tags == ["child"]


def test_list_filters_disconn_and_rpc() -> None:
    m = Model()
    m.ingest(1, fx_schema("fx-a"))
    rpc = fx_schema("r-1", parent="fx-a")
    rpc[3] = ["rpc-client"]
    m.ingest(1, rpc)
    m.ingest(1, fx_schema("k-1", parent="r-1"))
    m.ingest(2, fx_schema("z"))
    m.filters.rpc = True
    assert [(d, c.id) for d, c in m.client_list()] == [(0, "fx-a"), (1, "k-1"), (0, "z")]
    m.filters.rpc = False
    m.conn_closed(1)
    assert not m.clients["fx-a"].connected and m.clients["z"].connected
    m.filters.disconn = True
    assert [c.id for _d, c in m.client_list()] == ["z"]


def test_schema_change_same_conn_vs_replace_other_conn(fx_model: Model) -> None:
    m = fx_model
    grown = fx_schema()
    grown[4] = [*FX_NAMES, "New"]
    m.ingest(1, grown)
    cl = m.clients["fx-a"]
    assert len(cl.txs) == 8 and cl.names[-1] == "New"
    assert len(cl.time_at(3)) == 8  # padded to the grown names
    # another connection with the same id replaces the client
    cl.selected_state = "Foo"
    m.ingest(2, fx_schema())
    new = m.clients["fx-a"]
    assert new is not cl and new.txs == [] and new.conn_id == 2
    assert new.selected_state == "Foo"
    m.conn_closed(1)
    assert new.connected


def test_dispose_bye_drop_log_orphans(fx_model: Model) -> None:
    m = fx_model
    m.ingest(1, ["log", "fx-a", [[2, "[extern] hi", None], [4, "x", ["when:new", [2]]]]])
    cl = m.clients["fx-a"]
    assert cl.log[0][0] == 8 and cl.log[1][1].ev == ["when:new", [2]]
    m.ingest(1, ["drop", "fx-a", 3, 0])
    m.ingest(1, ["drop", None, 2, 0])
    assert cl.dropped == 5
    m.ingest(1, ["tx", "ghost", "ghost:1"])
    m.ingest(1, ["log", "ghost", []])
    assert m.orphans == 2
    m.ingest(2, ["dispose", "fx-a", 0])  # not its connection
    assert cl.connected
    m.ingest(1, ["dispose", "fx-a", 0])
    assert not cl.connected
    m.ingest(1, ["schema", "b"] + fx_schema()[2:])
    m.ingest(1, ["bye", 0])
    assert not m.clients["b"].connected
    m.ingest(1, ["future-kind", 1, 2])
    assert m.ignored == 1


def test_clean_on_connect_and_imported_stay() -> None:
    m = Model()
    m.ingest(1, fx_schema("fx-a"))
    m.ingest(1, fx_schema("fx-b", parent="fx-a"))
    m.ingest(2, fx_schema("other"))
    m.conn_closed(1)
    m.ingest(3, fx_schema("late"))  # "other" still connected: nothing dropped
    assert set(m.clients) == {"fx-a", "fx-b", "other", "late"}
    m.conn_closed(2)
    m.conn_closed(3)
    m.clients["other"].imported = True
    m.ingest(4, fx_schema("fx-a"))  # all disconnected: start over, imported stay
    assert set(m.clients) == {"fx-a", "other"}
    assert m.clients["fx-a"].conn_id == 4
    m2 = Model(clean_on_connect=False)
    m2.ingest(1, fx_schema("a"))
    m2.conn_closed(1)
    m2.ingest(2, fx_schema("b"))
    assert set(m2.clients) == {"a", "b"}


def test_cap_evicts_least_recently_active_disconnected() -> None:
    m = Model(max_clients=4, clean_on_connect=False)
    m.ingest(1, fx_schema("sel"), rt=1)  # auto-selected: never evicted
    m.ingest(2, fx_schema("a"), rt=100)
    m.ingest(3, fx_schema("b"), rt=101)
    m.ingest(4, fx_schema("c"), rt=102)
    m.conn_closed(1)
    m.conn_closed(2)
    m.conn_closed(3)
    m.ingest(3, ["tx", "b"], rt=500)  # b active later than a
    m.ingest(9, fx_schema("d"), rt=600)
    assert set(m.clients) == {"sel", "b", "c", "d"}
    m.conn_closed(4)
    m.ingest(10, fx_schema("e"), rt=700)
    assert set(m.clients) == {"sel", "b", "d", "e"}  # c (102) idle longer than b (500)
    m.ingest(11, fx_schema("f"), rt=800)
    assert set(m.clients) == {"sel", "d", "e", "f"}
    # only the selected one is disconnected: the cap is exceeded
    m.ingest(12, fx_schema("g"), rt=900)
    assert len(m.clients) == 5


def test_remove_client_and_select_connected() -> None:
    m = Model(select_connected=True, clean_on_connect=False)
    m.ingest(1, fx_schema("a"))
    m.ingest(1, fx_schema("b"))
    assert m.selected == "a"
    m.conn_closed(1)
    m.ingest(2, fx_schema("c"))
    assert m.selected == "c"  # the only connected one
    m.remove_client("c")
    assert m.selected in {"a", "b"} and "c" not in m.clients
    m.clear()
    assert m.selected is None and m.client() is None


# ------------------------------------------------------------------------------ time
def _two_clients() -> Model:
    m = Model()
    m.ingest(1, fx_schema("a"))
    m.ingest(1, fx_schema("b"))
    # a: t = 10, 30, 50 ; b: t = 20, 40
    tk = [0] * 7
    for k, t in enumerate([10, 30, 50], 1):
        after = [k, 0, 0, 0, 0, 0, 0]
        m.ingest(1, tx_msg("a", k, FX_T0 + t, before=tk, after=after))
        tk = after
    tk = [0] * 7
    for k, t in enumerate([20, 40], 1):
        after = [0, 0, 0, 0, 0, 0, k * 2 - 1]
        m.ingest(1, tx_msg("b", k, FX_T0 + t, called=[6], before=tk, after=after))
        tk = after
    return m


def test_cross_client_time() -> None:
    m = _two_clients()
    a, b = m.clients["a"], m.clients["b"]
    m.goto("a", 2)  # t = 30
    assert m.moment() == FX_T0 + 30
    assert m.graph_time() == 2 + 1  # a at tx 2, b at its tx 1 (t 20)
    m.select("b")
    assert b.c == 1  # last tx at or before 30
    m.goto("b", 2)  # t = 40
    m.select("a")
    assert a.c == 2
    m.first()
    m.select("b")
    assert b.c == 0  # nothing at or before the moment
    assert m.client_c_at(a) == 1  # the moment is just before b's tx 1 (t 20)
    m.set_tail(True)
    m.select("a")
    assert a.c == 3
    assert a.is_error_at(0) is False and b.txs[0].is_error and b.is_error_at(1)
    assert b.err_nos == [1, 2]


# ------------------------------------------------------------------------------ URLs
def test_urls(fx_model: Model) -> None:
    m = fx_model
    cl = m.client()
    assert cl is not None
    m.open_url("mach://fx-a?i=4")
    assert (cl.c, cl.s) == (4, 0) and not m.tail
    m.open_url("mach://fx-a/fx-a:3/2")
    assert (cl.c, cl.s) == (3, 2)
    assert m.url() == "mach://fx-a/fx-a:3/2"
    m.open_url("mach://fx-a?t=5&state=Foo")
    assert cl.c == 4 and cl.selected_state == "Foo"  # the first tx reaching machine time 5
    m.open_url("mach://fx-a?q=7")
    assert cl.c == 7
    m.open_url("mach://fx-a?ht=2023-11-14T22:13:20.006500Z")  # between tx 6 and 7
    assert cl.c == 6
    m.first()
    assert m.url() == "mach://fx-a"
    with pytest.raises(ValueError, match="mach://"):
        m.open_url("http://x")


def test_url_waits_for_its_client() -> None:
    m = Model()
    m.open_url("mach://fx-a?i=4")
    assert m.pending_url is not None
    feed(m, fx_messages())
    cl = m.clients["fx-a"]
    assert m.pending_url is None and cl.c == 4 and not m.tail
    m2 = Model()
    m2.open_url("mach://fx-a/fx-a:6")
    feed(m2, fx_messages())
    assert m2.clients["fx-a"].c == 6


# ------------------------------------------------------------------------------ robustness
def test_odd_input_never_raises() -> None:
    rnd = random.Random(4)
    m = feed(Model(), fx_messages())
    pool: list[Any] = [None, 1, -1, 2**70, 1.5, "x", b"y", [], [1, "a"], {}, {"a": 1}, True,
                       [[1, 2]], [None]]  # fmt: skip
    base = fx_messages()[1:]
    for _ in range(3000):
        msg = list(rnd.choice(base))
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(msg))
            if i:
                msg[i] = rnd.choice(pool)
        if rnd.random() < 0.2:
            msg = msg[: rnd.randrange(1, len(msg) + 1)]
        m.ingest(rnd.choice([1, 2]), msg)
    m.ingest(1, [])
    m.ingest(1, "nope")  # type: ignore[arg-type]
    for cl in list(m.clients.values()):
        m.select(cl.id)
        m.visible(cl)
        m.prev_tx()
        m.step_back()
        m.jump_back()
        m.step_fwd()
        for c in range(len(cl.txs) + 1):
            cl.time_at(c)
            cl.is_error_at(c)
            tx = cl.tx(c)
            if tx is not None:
                assert isinstance(tx.steps, list) and isinstance(tx.touched, list)
                assert isinstance(tx.log, list) and isinstance(tx.pre_log, list)
    m.client_list()
    m.graph_time()
    m.url()


def test_filters_defaults() -> None:
    f = Filters()
    assert (f.canceled, f.queued, f.auto, f.empty, f.health, f.group, f.checks) == (
        False, False, 1, False, True, True, True,
    )  # fmt: skip
    assert (f.disconn, f.rpc, f.log_level) == (False, False, 2)


def test_unknown_selected_group_hides_nothing(fx_model: Model) -> None:
    cl = fx_model.clients["fx-a"]
    cl.selected_group = "NoSuchGroup"
    assert fx_model.visible(cl) == [1, 2, 3, 4, 5, 7, 8]


def test_trim_halves_records_and_keeps_links() -> None:
    m = feed(Model(), fx_messages())
    feed(m, extra_txs(600))
    m.ingest(1, ["log", "fx-a", [[4, "old decision", None], [2, "[extern] keep", None]]], rt=1)
    cl = m.clients["fx-a"]
    assert len(cl.txs) == 608
    m.trim(log_ttl_ns=1)
    assert len(cl.txs) == 304 and cl.txs[0].id == "fx-a:305"
    assert [e.text for _n, e in cl.log] == ["[extern] keep"] and cl.log[0][0] == 304
    assert m.visible(cl)[-1] == 304 and cl.time_at(304) == cl.txs[-1].after
    assert not m.check_memory(1e9)
