"""The synchronous machine API: identity, properties, checks, clocks, mutations,
results, the queue, dry runs, errors, eval, export/import, schema growth, callbacks
and disposal.

api.md "Machines", "Mutations", "Checks and clocks"; machine.md §3, §4, §5.9, §7, §8,
§10, §11, §14, §16.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgpack
import pytest

import trio_am as am

ABC = {"A": {}, "B": {}, "C": {}}


class Recorder:
    """Handlers built from a dict ``{handler_name: fn(e)}``; records every call."""

    def __init__(self, **fns):
        self.calls: list[str] = []
        for name, fn in fns.items():
            setattr(self, name, self._wrap(name, fn))

    def _wrap(self, name, fn):
        def handler(e):
            self.calls.append(name)
            return fn(e)

        return handler


# ---------------------------------------------------------------------------------------
# identity and properties
# ---------------------------------------------------------------------------------------


def test_default_id_is_short_random_and_unique():
    ids = {am.Machine(ABC).id for _ in range(50)}
    assert len(ids) == 50
    for mid in ids:
        assert isinstance(mid, str)
        assert 0 < len(mid) <= 16


def test_explicit_id():
    assert am.Machine(ABC, id="worker-1").id == "worker-1"


def test_properties_of_a_fresh_machine():
    m = am.Machine(ABC, id="props", tags=["svc", "env:test"])
    assert m.id == "props"
    assert isinstance(m.schema, Mapping)
    assert list(m.schema) == ["A", "B", "C", "Exception"]
    assert m.state_names == ["A", "B", "C", "Exception"]
    assert m.parent_id is None
    assert list(m.tags) == ["svc", "env:test"]
    assert m.disposed is False
    assert m.queue_len == 0
    assert m.queue_tick == 1
    assert m.err is None
    assert m.transition is None


def test_state_names_is_a_copy():
    m = am.Machine(ABC)
    m.state_names.append("Oops")
    m.state_names.reverse()
    assert m.state_names == ["A", "B", "C", "Exception"]


def test_parent_as_machine_or_id():
    p = am.Machine(ABC, id="parent")
    assert am.Machine(ABC, parent=p).parent_id == "parent"
    assert am.Machine(ABC, parent="other-id").parent_id == "other-id"


def test_queue_len_and_queue_tick_from_a_handler():
    seen = {}

    def a_state(e):
        m = e.machine
        seen["tick0"] = m.queue_tick
        seen["r1"] = m.add1("B")
        seen["r2"] = m.add1("C")
        seen["len"] = m.queue_len

    m = am.Machine(ABC, handlers=Recorder(A_state=a_state))
    assert m.add1("A") == am.Result.EXECUTED
    assert seen["len"] == 2
    assert seen["tick0"] == 2
    assert seen["r1"].queue_tick == 3
    assert seen["r2"].queue_tick == 4
    assert m.queue_len == 0
    assert m.queue_tick == 4
    assert m.is_all(["A", "B", "C"])


def test_queue_tick_counts_canceled_but_not_dry_runs():
    m = am.Machine({"A": {"require": ["B"]}, "B": {}})
    assert m.queue_tick == 1
    assert m.add1("A") == am.Result.CANCELED
    assert m.queue_tick == 2
    m.can_add1("B")
    m.can_remove1("B")
    assert m.queue_tick == 2
    m.add1("B")
    assert m.queue_tick == 3


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------


@pytest.fixture
def ab():
    m = am.Machine(ABC, id="checks")
    m.add(["A", "B"])
    return m


def test_is_all(ab):
    assert ab.is_all(["A", "B"])
    assert ab.is_all(["B"])
    assert ab.is_all("A")
    assert not ab.is_all(["A", "C"])
    assert ab.is_all([])


def test_is1_not1(ab):
    assert ab.is1("A")
    assert not ab.is1("C")
    assert ab.not1("C")
    assert not ab.not1("A")


def test_not_any(ab):
    assert ab.not_any(["C", "Exception"])
    assert not ab.not_any(["A", "C"])
    assert ab.not_any([])


def test_any_of_groups(ab):
    assert ab.any_of("C", ["A", "B"])
    assert ab.any_of("A")
    assert not ab.any_of(["A", "C"])
    assert not ab.any_of("C", ["B", "C"])
    assert not ab.any_of()


def test_any1(ab):
    assert ab.any1("C", "A")
    assert not ab.any1("C")
    assert not ab.any1("C", "Exception")
    assert not ab.any1()


def test_has_and_has1_never_raise(ab):
    assert ab.has(["A", "B", "Exception"])
    assert ab.has("A")
    assert not ab.has(["A", "Nope"])
    assert not ab.has("Nope")
    assert ab.has1("C")
    assert not ab.has1("Nope")
    assert not ab.has1(None)  # type: ignore[arg-type]
    assert not ab.has(None)  # type: ignore[arg-type]
    assert not ab.has([["A"]])  # type: ignore[list-item]
    assert not ab.has1("")


def test_active_states_in_index_order():
    m = am.Machine(ABC)
    m.add1("C")
    m.add1("A")
    assert m.active_states() == ["A", "C"]
    assert m.active_states(["C", "B"]) == ["C"]
    assert m.active_states([]) == []


def test_tick_time_clock():
    m = am.Machine(ABC)
    assert m.tick("A") == 0
    m.add1("A")
    assert m.tick("A") == 1
    m.remove1("A")
    assert m.tick("A") == 2
    m.add(["A", "C"])
    assert m.tick("A") == 3
    t = m.time()
    assert isinstance(t, am.Time)
    assert isinstance(t, tuple)
    assert t == (3, 0, 1, 0)
    assert m.time(["C", "A"]) == (1, 3)
    assert m.clock() == {"A": 3, "B": 0, "C": 1, "Exception": 0}
    assert list(m.clock()) == m.state_names
    assert m.clock(["C"]) == {"C": 1}
    assert am.is_active_tick(3)
    assert not am.is_active_tick(2)


def test_is_time_and_is_clock():
    m = am.Machine(ABC)
    m.add1("A")
    t = m.time()
    ta = m.time(["A"])
    c = m.clock()
    assert m.is_time(t)
    assert m.is_clock(c)
    m.add1("B")
    assert not m.is_time(t)
    assert not m.is_clock(c)
    assert m.is_time(ta, ["A"])
    assert m.is_clock({"A": 1})
    assert not m.is_clock({"A": 1, "B": 0})
    assert m.is_clock({})


def test_string_formats():
    m = am.Machine(ABC)
    assert m.string() == "()"
    assert str(m) == "()"
    m.add(["A", "B"])
    assert m.string() == "(A:1 B:1)"
    assert str(m) == m.string()
    assert m.string_all() == "(A:1 B:1) [C:0 Exception:0]"
    m.remove1("A")
    m.add1("A")
    assert m.string() == "(A:3 B:1)"
    assert m.string_all() == "(A:3 B:1) [C:0 Exception:0]"


def test_string_all_fresh():
    assert am.Machine({"A": {}}).string_all() == "() [A:0 Exception:0]"


def test_string_all_all_active():
    m = am.Machine({"A": {}})
    m.add(["A", "Exception"])
    assert m.string_all() == "(A:1 Exception:1) []"


# ---------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------


def test_result_values_and_strings():
    assert am.Result.EXECUTED == 0
    assert am.Result.CANCELED == 1
    assert am.Result.QUEUED == 2
    assert str(am.Result.EXECUTED) == "executed"
    assert str(am.Result.CANCELED) == "canceled"
    assert str(am.Result.QUEUED) == "queued"
    assert not am.Result.EXECUTED.is_queued
    assert not am.Result.CANCELED.is_queued
    assert am.Result.QUEUED.is_queued


def test_mutations_return_results():
    m = am.Machine({"A": {}, "B": {"require": ["A"]}})
    r = m.add1("A")
    assert r == am.Result.EXECUTED
    assert isinstance(r, am.Result)
    assert m.add1("B", None) == am.Result.EXECUTED
    assert m.remove1("A") == am.Result.EXECUTED
    assert m.add1("B") == am.Result.CANCELED


def test_queued_result_from_handler():
    got = []

    def a_state(e):
        got.append((e.machine.queue_tick, e.machine.add1("B")))

    m = am.Machine(ABC, handlers=Recorder(A_state=a_state))
    m.add1("A")
    tick_then, r = got[0]
    assert r == am.Result.QUEUED
    assert r.is_queued
    assert str(r) == "queued"
    assert r.queue_tick == tick_then + 1
    assert m.queue_tick == r.queue_tick
    assert m.is1("B")


# ---------------------------------------------------------------------------------------
# add / remove / set / toggle
# ---------------------------------------------------------------------------------------


def test_add_keeps_others_and_collapses_duplicates():
    m = am.Machine(ABC)
    m.add1("A")
    assert m.add(["B", "B", "C"]) == am.Result.EXECUTED
    assert m.time() == (1, 1, 1, 0)


def test_add_active_non_multi_changes_nothing():
    m = am.Machine(ABC)
    m.add1("A")
    assert m.add1("A") == am.Result.EXECUTED
    assert m.tick("A") == 1


def test_remove_inactive_is_executed_and_changes_nothing():
    m = am.Machine(ABC)
    assert m.remove1("A") == am.Result.EXECUTED
    assert m.tick("A") == 0


def test_set_replaces_active_set():
    m = am.Machine(ABC)
    m.add(["A", "B"])
    assert m.set(["C", "A"]) == am.Result.EXECUTED
    assert m.active_states() == ["A", "C"]
    assert m.time() == (1, 2, 1, 0)  # A kept (no new tick)
    assert m.set([]) == am.Result.EXECUTED
    assert m.active_states() == []


def test_toggle_removes_only_if_all_active():
    m = am.Machine(ABC)
    m.add1("A")
    assert m.toggle(["A", "B"]) == am.Result.EXECUTED  # not all active -> add
    assert m.is_all(["A", "B"])
    assert m.tick("A") == 1
    assert m.toggle(["A", "B"]) == am.Result.EXECUTED  # all active -> remove
    assert m.not_any(["A", "B"])
    assert m.toggle1("C") == am.Result.EXECUTED
    assert m.is1("C")
    assert m.toggle1("C") == am.Result.EXECUTED
    assert m.not1("C")
    assert m.time() == (2, 2, 2, 0)


# ---------------------------------------------------------------------------------------
# errors and the Exception state
# ---------------------------------------------------------------------------------------


def test_add_err_passes_err_to_exception_handler():
    seen = []

    def exc_state(e):
        seen.append(dict(e.args))

    m = am.Machine(ABC, handlers=Recorder(Exception_state=exc_state))
    err = ValueError("boom")
    assert m.add_err(err) == am.Result.EXECUTED
    assert m.err is err
    assert m.is1("Exception")
    assert m.is_err()
    assert len(seen) == 1
    assert seen[0]["err"] is err
    assert isinstance(seen[0]["err_trace"], str)


def test_add_err_extra_args_are_kept():
    seen = []
    m = am.Machine(ABC, handlers=Recorder(Exception_state=lambda e: seen.append(dict(e.args))))
    m.add_err(KeyError("k"), {"id": "x1"})
    assert seen[0]["id"] == "x1"
    assert isinstance(seen[0]["err"], KeyError)


def test_exception_multi_reentry_ticks_by_two_and_reruns_handlers():
    rec = Recorder(Exception_enter=lambda e: None, Exception_state=lambda e: None)
    m = am.Machine(ABC, handlers=rec)
    m.add_err(ValueError("1"))
    assert m.tick("Exception") == 1
    m.add_err(ValueError("2"))
    assert m.tick("Exception") == 3
    assert str(m.err) == "2"
    assert rec.calls == ["Exception_enter", "Exception_state"] * 2


def test_add_err_none_is_canceled_without_queue_tick():
    m = am.Machine(ABC)
    qt = m.queue_tick
    assert m.add_err(None) == am.Result.CANCELED
    assert m.queue_tick == qt
    assert m.err is None
    assert m.not1("Exception")


def test_err_stays_after_exception_removed():
    m = am.Machine(ABC)
    err = RuntimeError("x")
    m.add_err(err)
    m.remove1("Exception")
    assert not m.is_err()
    assert m.err is err


def test_add_err_state():
    m = am.Machine({"ErrFoo": {"require": ["Exception"]}, "A": {}})
    assert m.add1("ErrFoo") == am.Result.CANCELED
    err = OSError("net")
    assert m.add_err_state("ErrFoo", err) == am.Result.EXECUTED
    assert m.is_all(["ErrFoo", "Exception"])
    assert m.err is err
    m.remove1("Exception")
    assert m.not1("ErrFoo")


def test_on_error_called_by_add_err():
    got = []
    m = am.Machine(ABC)
    m.on_error(lambda mach, err: got.append((mach, err)))
    err = ValueError("e")
    m.add_err(err)
    m.add_err(None)
    assert got == [(m, err)]


# ---------------------------------------------------------------------------------------
# dry runs
# ---------------------------------------------------------------------------------------


def test_can_add_runs_negotiation_only():
    checks = []
    rec = Recorder(
        A_enter=lambda e: checks.append(e.is_check),
        any_enter=lambda e: checks.append(e.is_check),
        A_state=lambda e: None,
        any_state=lambda e: None,
    )
    m = am.Machine(ABC, handlers=rec)
    changes = []
    m.on_change(lambda *a: changes.append(a))
    t, qt = m.time(), m.queue_tick
    assert m.can_add("A") == am.Result.EXECUTED
    assert m.can_add1("A") == am.Result.EXECUTED
    assert checks == [True, True, True, True]
    assert rec.calls == ["A_enter", "any_enter"] * 2
    assert m.time() == t
    assert m.queue_tick == qt
    assert changes == []
    # the real add sees is_check False
    checks.clear()
    m.add1("A")
    assert checks == [False, False]


def test_can_add_vetoed_or_rejected_is_canceled():
    m = am.Machine(
        {"A": {}, "B": {"require": ["C"]}, "C": {}}, handlers=Recorder(A_enter=lambda e: False)
    )
    assert m.can_add("A") == am.Result.CANCELED
    assert m.can_add("B") == am.Result.CANCELED
    assert m.can_add(["B", "C"]) == am.Result.EXECUTED
    assert m.active_states() == []


def test_can_remove():
    checks = []
    rec = Recorder(
        A_exit=lambda e: checks.append(e.is_check),
        A_end=lambda e: None,
    )
    m = am.Machine(ABC, handlers=rec)
    m.add1("A")
    rec.calls.clear()
    assert m.can_remove("A") == am.Result.EXECUTED
    assert m.can_remove1("A") == am.Result.EXECUTED
    assert checks == [True, True]
    assert rec.calls == ["A_exit", "A_exit"]
    assert m.is1("A")
    assert m.tick("A") == 1


def test_can_remove_vetoed():
    m = am.Machine(ABC, handlers=Recorder(A_exit=lambda e: False))
    m.add1("A")
    assert m.can_remove("A") == am.Result.CANCELED
    assert m.remove1("A") == am.Result.CANCELED
    assert m.is1("A")


# ---------------------------------------------------------------------------------------
# queue: de-duplication and limit
# ---------------------------------------------------------------------------------------


def _with_a_state(fn, schema=None, **kw):
    got: dict = {}
    m = am.Machine(schema or ABC, handlers=Recorder(A_state=lambda e: fn(e.machine, got)), **kw)
    return m, got


def test_duplicate_add_from_handler_is_suppressed():
    def fn(m, got):
        got["r1"] = m.add1("B")
        got["r2"] = m.add1("B")
        got["len"] = m.queue_len

    m, got = _with_a_state(fn)
    m.add1("A")
    assert got["r1"] == am.Result.QUEUED
    assert got["r2"] == am.Result.EXECUTED
    assert not got["r2"].is_queued
    assert got["len"] == 1
    assert m.is1("B")
    assert m.queue_tick == 3  # one queued mutation processed


def test_duplicate_with_args_is_not_suppressed():
    def fn(m, got):
        got["r1"] = m.add1("B", {"x": 1})
        got["r2"] = m.add1("B", {"x": 1})
        got["len"] = m.queue_len

    m, got = _with_a_state(fn)
    m.add1("A")
    assert got["r1"].is_queued
    assert got["r2"].is_queued
    assert got["len"] == 2


def test_duplicate_not_suppressed_after_opposite_mutation():
    # machine.md §16: add B, remove B, add B from one handler leaves B active
    def fn(m, got):
        got["r"] = [m.add1("B"), m.remove1("B"), m.add1("B")]
        got["len"] = m.queue_len

    m, got = _with_a_state(fn)
    m.add1("A")
    assert [r.is_queued for r in got["r"]] == [True, True, True]
    assert got["len"] == 3
    assert m.is1("B")
    assert m.tick("B") == 3


def test_duplicate_set_order_ignored():
    def fn(m, got):
        got["r1"] = m.add(["B", "C"])
        got["r2"] = m.add(["C", "B"])

    m, got = _with_a_state(fn)
    m.add1("A")
    assert got["r1"].is_queued
    assert got["r2"] == am.Result.EXECUTED


def test_multi_states_are_never_deduplicated():
    def fn(m, got):
        got["r1"] = m.add1("M")
        got["r2"] = m.add1("M")

    m, got = _with_a_state(fn, schema={"A": {}, "M": {"multi": True}})
    m.add1("A")
    assert got["r1"].is_queued
    assert got["r2"].is_queued
    assert m.tick("M") == 3


def test_queue_limit_cancels_further_mutations():
    def fn(m, got):
        got["r"] = [m.add1("B"), m.add1("C"), m.add1("D")]
        got["len"] = m.queue_len

    m, got = _with_a_state(fn, schema={"A": {}, "B": {}, "C": {}, "D": {}}, queue_limit=2)
    m.add1("A")
    r1, r2, r3 = got["r"]
    assert r1.is_queued
    assert r2.is_queued
    assert r3 == am.Result.CANCELED
    assert got["len"] == 2
    assert m.is_all(["A", "B", "C"])
    assert m.not1("D")


def test_queue_limit_exception_escape_hatch():
    def fn(m, got):
        m.add1("B")
        m.add1("C")
        got["exc"] = m.add1("Exception")
        got["err"] = m.add_err(ValueError("strict"))
        got["len"] = m.queue_len

    m, got = _with_a_state(fn, schema={"A": {}, "B": {}, "C": {}}, queue_limit=2)
    m.add1("A")
    assert got["exc"].is_queued  # Add including Exception passes while it is inactive
    assert got["err"] == am.Result.CANCELED  # add_err applies the limit strictly
    assert got["len"] == 3
    assert m.is_all(["A", "B", "C", "Exception"])


def test_mutations_queued_by_vetoed_transition_are_kept():
    def a_enter(e):
        e.machine.add1("B")
        return False

    m = am.Machine(ABC, handlers=Recorder(A_enter=a_enter))
    assert m.add1("A") == am.Result.CANCELED
    assert m.not1("A")
    assert m.is1("B")


# ---------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------


def test_eval_runs_when_idle():
    m = am.Machine(ABC)
    assert m.eval(lambda: 42) == 42
    box = []
    m.eval(lambda: box.append(m.is1("A")))
    assert box == [False]


def test_eval_inside_handler_raises_nested_eval_error():
    got = []

    def a_state(e):
        try:
            e.machine.eval(lambda: 1)
        except am.NestedEvalError as exc:
            got.append(exc)

    m = am.Machine(ABC, id="ev", handlers=Recorder(A_state=a_state))
    m.add1("A")
    assert len(got) == 1
    assert isinstance(got[0], am.Error)
    assert got[0].machine_id == "ev"
    assert m.is1("A")
    assert m.not1("Exception")


# ---------------------------------------------------------------------------------------
# export / import
# ---------------------------------------------------------------------------------------


def test_export_import_round_trip():
    m1 = am.Machine(ABC, id="snap")
    m1.add(["A", "C"])
    m1.remove1("A")
    data = m1.export()
    assert data["id"] == "snap"
    assert data["state_names"] == m1.state_names
    assert list(data["time"]) == list(m1.time())
    assert data["queue_tick"] == m1.queue_tick
    assert data["machine_tick"] == 0
    # survives a wire format
    data = msgpack.unpackb(msgpack.packb(data))
    m2 = am.Machine(ABC, id="snap")
    m2.import_data(data)
    assert m2.time() == m1.time()
    assert m2.active_states() == ["C"]
    assert m2.queue_tick == m1.queue_tick
    assert m2.machine_tick == m1.machine_tick + 1 == 1
    assert m2.export()["machine_tick"] == 1


def test_import_restores_order():
    m1 = am.Machine(ABC, id="o")
    m1.verify_states(["C", "B", "A"])
    m1.add1("C")
    m2 = am.Machine(ABC, id="o")
    m2.import_data(m1.export())
    assert m2.state_names == ["C", "B", "A", "Exception"]
    assert m2.string_all() == m1.string_all()


def test_import_adds_machine_restored_when_defined():
    schema = {"A": {}, "MachineRestored": {}}
    m1 = am.Machine(schema, id="r")
    m1.add1("A")
    m2 = am.Machine(schema, id="r")
    m2.import_data(m1.export())
    assert m2.is_all(["A", "MachineRestored"])
    assert m2.machine_tick == 1


def test_import_of_another_machine_is_an_error():
    m1 = am.Machine(ABC, id="one")
    m2 = am.Machine(ABC, id="two")
    with pytest.raises(am.Error):
        m2.import_data(m1.export())
    m3 = am.Machine({"A": {}}, id="one")
    with pytest.raises(am.Error):
        m3.import_data(m1.export())
    assert m3.machine_tick == 0


# ---------------------------------------------------------------------------------------
# set_schema
# ---------------------------------------------------------------------------------------


def test_set_schema_grows():
    m = am.Machine({"A": {}})
    m.add1("A")
    n = m.schema_version
    m.set_schema({"A": {}, "B": {"require": ["A"]}})
    assert m.schema_version == n + 1
    assert "B" in m.state_names
    assert m.state_names[:2] == ["A", "Exception"]
    assert m.tick("A") == 1
    assert m.tick("B") == 0
    assert m.add1("B") == am.Result.EXECUTED
    assert m.is_all(["A", "B"])


def test_set_schema_cannot_shrink():
    m = am.Machine({"A": {}, "B": {}})
    m.add1("B")
    before = (m.state_names, m.time(), dict(m.schema))
    with pytest.raises(am.SchemaError):
        m.set_schema({"A": {}})
    assert (m.state_names, m.time(), dict(m.schema)) == before


def test_set_schema_invalid_is_schema_error():
    m = am.Machine({"A": {}})
    with pytest.raises(am.SchemaError):
        m.set_schema({"A": {}, "B": {"add": ["Ghost"]}})
    assert m.state_names == ["A", "Exception"]


# ---------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------


def test_on_change_after_every_non_dry_transition():
    m = am.Machine({"A": {}, "B": {"require": ["C"]}, "C": {}})
    got = []
    remove = m.on_change(lambda mach, before, after: got.append((mach, before, after)))
    m.add1("A")
    assert got == [(m, (0, 0, 0, 0), (1, 0, 0, 0))]
    assert isinstance(got[0][1], am.Time)
    m.add1("B")  # canceled: still reported, nothing changed
    assert len(got) == 2
    assert got[1][1] == got[1][2] == (1, 0, 0, 0)
    m.can_add1("C")
    assert len(got) == 2
    remove()
    m.add1("C")
    assert len(got) == 2


def test_on_dispose_and_dispose_idempotent():
    m = am.Machine(ABC, id="disp")
    got = []
    m.on_dispose(lambda mid: got.append(mid))
    m.dispose()
    m.dispose()
    assert got == ["disp"]
    assert m.disposed is True


# ---------------------------------------------------------------------------------------
# disposal
# ---------------------------------------------------------------------------------------


def test_after_dispose():
    m = am.Machine(ABC, id="gone")
    m.add1("A")
    m.dispose()
    assert m.add1("B") == am.Result.CANCELED
    assert m.add(["B", "C"]) == am.Result.CANCELED
    assert m.remove1("A") == am.Result.CANCELED
    assert m.set(["B"]) == am.Result.CANCELED
    assert m.toggle1("B") == am.Result.CANCELED
    assert m.add_err(ValueError("x")) == am.Result.CANCELED
    assert m.add_err_state("B", ValueError("x")) == am.Result.CANCELED
    assert m.can_add1("B") == am.Result.CANCELED
    assert m.string_all() == ""
    assert m.is1("A") is False
    assert m.tick("A") == 0
    assert m.active_states() == []
    # unknown names are checked first
    with pytest.raises(am.StateUnknownError):
        m.add1("Nope")
    with pytest.raises(am.StateUnknownError):
        m.remove(["A", "Nope"])


def test_dispose_removes_start_first():
    rec = Recorder(Start_end=lambda e: None)
    m = am.Machine({"Start": {}, "A": {}}, handlers=rec)
    m.add(["Start", "A"])
    m.dispose()
    assert rec.calls == ["Start_end"]


def test_dispose_from_handler_happens_after_drain():
    def a_state(e):
        e.machine.add1("B")
        e.machine.dispose()

    got = []
    m = am.Machine(ABC, handlers=Recorder(A_state=a_state))
    m.on_dispose(got.append)
    m.add1("A")
    assert m.disposed
    assert got == [m.id]


# ---------------------------------------------------------------------------------------
# more queue rules (machine.md §4.2, §5.9, §6.1, §7)
# ---------------------------------------------------------------------------------------


def test_remove_fast_path_from_handler():
    def fn(m, got):
        got["r"] = m.remove1("B")  # inactive, queue empty: nothing to do
        got["len"] = m.queue_len

    m, got = _with_a_state(fn)
    qt = m.queue_tick
    m.add1("A")
    assert got["r"] == am.Result.EXECUTED
    assert got["len"] == 0
    assert m.queue_tick == qt + 1


def test_duplicate_set_is_suppressed():
    def fn(m, got):
        got["r1"] = m.set(["A", "B"])
        got["r2"] = m.set(["B", "A"])

    m, got = _with_a_state(fn)
    m.add1("A")
    assert got["r1"].is_queued
    assert got["r2"] == am.Result.EXECUTED
    assert m.active_states() == ["A", "B"]


def test_can_add_from_handler_is_queued_without_tick():
    def fn(m, got):
        got["r"] = m.can_add1("B")

    m, got = _with_a_state(fn)
    qt = m.queue_tick
    m.add1("A")
    assert got["r"] == am.Result.QUEUED
    assert m.queue_tick == qt + 1  # the dry run took no queue tick
    assert m.not1("B")


def test_queue_limit_escape_hatch_for_removing_exception():
    def fn(m, got):
        m.add1("B")
        got["rm"] = m.remove1("Exception")

    m, got = _with_a_state(fn, schema={"A": {}, "B": {}}, queue_limit=1)
    m.add_err(ValueError("x"))
    m.add1("A")
    assert got["rm"].is_queued  # a Remove of an active Exception passes the limit
    assert m.not1("Exception")
    assert m.is_all(["A", "B"])


def test_binding_first_handlers_while_exception_active_re_adds_last_error():
    seen = []
    m = am.Machine(ABC)
    err = ValueError("earlier")
    m.add_err(err)
    m.bind_handlers(Recorder(Exception_state=lambda e: seen.append(e.args["err"])))
    assert seen == [err]
    assert m.tick("Exception") == 3


def test_verify_states_with_pending_waiter_keeps_machine_consistent():
    # either the reorder works (and the waiter follows) or it is refused and nothing moved
    m = am.Machine(ABC)
    m.add1("C")
    w = m.when1("A")
    names, time = m.state_names, m.time()
    try:
        m.verify_states(["C", "B", "A"])
    except am.Error:
        assert m.state_names == names
        assert m.time() == time
        assert m.string_all() == "(C:1) [A:0 B:0 Exception:0]"
    m.add1("A")
    assert w.is_set()


def test_set_schema_with_pending_waiter_keeps_machine_consistent():
    m = am.Machine(ABC)
    m.add1("C")
    w = m.when1("A")
    text = m.string_all()
    try:
        m.set_schema({"D": {}, **ABC}, names=["D", "A", "B", "C"])
    except am.Error:
        assert m.state_names == ["A", "B", "C", "Exception"]
        assert m.string_all() == text
        assert m.clock() == {"A": 0, "B": 0, "C": 1, "Exception": 0}
    m.add1("A")
    assert w.is_set()
    assert m.is_all(["A", "C"])
