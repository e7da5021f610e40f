"""Bad input: unknown state names, bad schema values, bad ids.

api.md "Mutations" (unknown names raise ``am.StateUnknownError`` before anything
changes), "Errors" (messages name machine and state); machine.md §2.3.
"""

from __future__ import annotations

import pytest

import trio_am as am

SCHEMA = {"A": {}, "B": {}}
BAD = "Nope"

# each entry: a call taking a bad name in some position
CALLS = {
    "add": lambda m: m.add(["A", BAD]),
    "add-str": lambda m: m.add(BAD),
    "add1": lambda m: m.add1(BAD),
    "remove": lambda m: m.remove(["A", BAD]),
    "remove1": lambda m: m.remove1(BAD),
    "set": lambda m: m.set(["B", BAD]),
    "toggle": lambda m: m.toggle(["A", BAD]),
    "toggle1": lambda m: m.toggle1(BAD),
    "add_err_state": lambda m: m.add_err_state(BAD, ValueError("x")),
    "can_add": lambda m: m.can_add(["B", BAD]),
    "can_add1": lambda m: m.can_add1(BAD),
    "can_remove": lambda m: m.can_remove(["A", BAD]),
    "can_remove1": lambda m: m.can_remove1(BAD),
    "is_all": lambda m: m.is_all(["A", BAD]),
    "is1": lambda m: m.is1(BAD),
    "not_any": lambda m: m.not_any([BAD]),
    "not1": lambda m: m.not1(BAD),
    "any_of": lambda m: m.any_of("A", ["B", BAD]),
    "any1": lambda m: m.any1("A", BAD),
    "tick": lambda m: m.tick(BAD),
    "time": lambda m: m.time(["A", BAD]),
    "clock": lambda m: m.clock([BAD]),
    "when": lambda m: m.when(["A", BAD]),
    "when1": lambda m: m.when1(BAD),
    "when_not": lambda m: m.when_not([BAD]),
    "when_not1": lambda m: m.when_not1(BAD),
    "when_time": lambda m: m.when_time(["A", BAD], [1, 1]),
    "when_time1": lambda m: m.when_time1(BAD, 1),
    "when_ticks": lambda m: m.when_ticks(BAD, 1),
    "when_args": lambda m: m.when_args(BAD, {"x": 1}),
    "state_ctx": lambda m: m.state_ctx(BAD),
    "active_states": lambda m: m.active_states(["A", BAD]),
    "add_breakpoint": lambda m: m.add_breakpoint(added=[BAD]),
}


def _machine():
    m = am.Machine(SCHEMA, id="bad-in")
    m.add1("A")
    return m


@pytest.mark.parametrize("call", CALLS.values(), ids=list(CALLS))
def test_unknown_state_raises_and_changes_nothing(call):
    m = _machine()
    time, qt, text = m.time(), m.queue_tick, m.string_all()
    with pytest.raises(am.StateUnknownError) as info:
        call(m)
    err = info.value
    assert isinstance(err, am.StateError)
    assert isinstance(err, am.Error)
    assert isinstance(err, ValueError)
    assert err.state == BAD
    assert err.machine_id == "bad-in"
    assert BAD in str(err)
    assert "bad-in" in str(err)
    assert m.time() == time
    assert m.queue_tick == qt
    assert m.string_all() == text
    assert m.queue_len == 0
    assert m.err is None


@pytest.mark.parametrize(
    "call",
    [
        CALLS[k]
        for k in ("add", "add1", "remove1", "set", "toggle1", "add_err_state", "can_add", "is1")
    ],
    ids=["add", "add1", "remove1", "set", "toggle1", "add_err_state", "can_add", "is1"],
)
def test_unknown_state_raises_even_when_disposed(call):
    m = _machine()
    m.dispose()
    with pytest.raises(am.StateUnknownError):
        call(m)


def test_unknown_state_from_a_handler_queues_nothing():
    got = []

    class H:
        def A_state(self, e):
            try:
                e.machine.add(["B", BAD])
            except am.StateUnknownError as exc:
                got.append((exc, e.machine.queue_len))

    m = am.Machine(SCHEMA, handlers=H())
    assert m.add1("A") == am.Result.EXECUTED
    assert len(got) == 1
    assert got[0][1] == 0
    assert m.not1("B")
    assert m.not1("Exception")


def test_unknown_state_in_handler_uncaught_becomes_exception():
    class H:
        def A_state(self, e):
            e.machine.add1(BAD)

    m = am.Machine(SCHEMA, handlers=H())
    m.add1("A")
    assert m.is1("Exception")
    assert isinstance(m.err, am.StateUnknownError)


def test_has_never_raises():
    m = _machine()
    assert m.has1(BAD) is False
    assert m.has([BAD, "A"]) is False


@pytest.mark.parametrize("bad", [None, 5, b"A"], ids=["none", "int", "bytes"])
def test_non_string_names_raise(bad):
    m = _machine()
    t = m.time()
    with pytest.raises((am.StateUnknownError, TypeError)):
        m.add1(bad)  # type: ignore[arg-type]
    with pytest.raises((am.StateUnknownError, TypeError)):
        m.is1(bad)  # type: ignore[arg-type]
    assert m.time() == t


# ---------------------------------------------------------------------------------------
# bad schema values
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"A": 5},
        {"A": "B", "B": {}},
        {"A": ["B"], "B": {}},
        {"A": {"requires": ["B"]}, "B": {}},
        {"A": {"require": [1]}},
        {"A": {}, 1: {}},
    ],
    ids=["int", "str", "list", "unknown-field", "non-str-relation", "non-str-key"],
)
def test_bad_schema_values(schema):
    with pytest.raises(am.SchemaError) as info:
        am.Machine(schema, id="bad-schema")
    assert info.value.machine_id == "bad-schema"


@pytest.mark.parametrize("schema", [["A", "B"], "A", 5, None], ids=["list", "str", "int", "none"])
def test_schema_must_be_a_mapping(schema):
    with pytest.raises(am.SchemaError):
        am.Machine(schema)  # type: ignore[arg-type]


def test_bad_state_value_names_the_state():
    with pytest.raises(am.SchemaError) as info:
        am.Machine({"Ok": {}, "Broken": 3.5}, id="m")
    assert info.value.state == "Broken"
    assert "Broken" in str(info.value)


# ---------------------------------------------------------------------------------------
# bad ids
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", ["", 5, b"x", ["m"]], ids=["empty", "int", "bytes", "list"])
def test_bad_machine_id(bad_id):
    with pytest.raises(am.Error):
        am.Machine(SCHEMA, id=bad_id)  # type: ignore[arg-type]


def test_when_time_length_mismatch():
    m = _machine()
    with pytest.raises(ValueError):
        m.when_time(["A", "B"], [1])
    with pytest.raises(ValueError):
        m.when_time([], [])
