"""Schemas, state definitions, name rules, state order and typed state sets.

api.md "Schemas and states"; machine.md §2 (schema, normalisation, names, order,
typed definitions) and §15.2 (reusable schemas).
"""

from __future__ import annotations

import attrs
import pytest

import trio_am as am
from trio_am.schemas import CONNECTED_SCHEMA, ConnectedStates

# ---------------------------------------------------------------------------------------
# am.State
# ---------------------------------------------------------------------------------------


def test_state_is_frozen():
    s = am.State(require=["A"])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.auto = True  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.require = ("B",)  # type: ignore[misc]
    assert s.require == ("A",)
    assert s.auto is False


def test_state_defaults():
    s = am.State()
    assert (s.auto, s.multi) == (False, False)
    assert s.require == s.add == s.remove == s.after == s.tags == ()


def test_state_is_keyword_only():
    with pytest.raises(TypeError):
        am.State(True)  # type: ignore[misc]


@pytest.mark.parametrize(
    "make",
    [
        list,
        tuple,
        iter,
        lambda xs: (x for x in xs),
        lambda xs: dict.fromkeys(xs),
    ],
    ids=["list", "tuple", "iterator", "generator", "dict-keys"],
)
def test_relation_fields_accept_any_iterable(make):
    s = am.State(
        require=make(["A", "B"]),
        add=make(["C"]),
        remove=make(["D", "E"]),
        after=make(["F"]),
        tags=make(["t1", "k:v"]),
    )
    assert s.require == ("A", "B")
    assert s.add == ("C",)
    assert s.remove == ("D", "E")
    assert s.after == ("F",)
    assert s.tags == ("t1", "k:v")
    for field in ("require", "add", "remove", "after", "tags"):
        assert isinstance(getattr(s, field), tuple)


def test_state_value_equality_and_hash():
    a = am.State(require=["A"], multi=True)
    b = am.State(require=("A",), multi=True)
    assert a == b
    assert hash(a) == hash(b)
    assert a != am.State(require=["A"])


def test_state_extend_unions_relations_and_only_switches_flags_on():
    base = am.State(auto=True, require=["A"], add=["X"], tags=["t"])
    ext = base.extend(am.State(multi=True, require=["B", "A"], remove=["C"], after=["D"]))
    assert ext.auto is True
    assert ext.multi is True
    assert ext.require == ("A", "B")  # union, first occurrence kept
    assert ext.add == ("X",)
    assert ext.remove == ("C",)
    assert ext.after == ("D",)
    assert ext.tags == ("t",)
    # flags cannot be switched off by an overlay
    assert am.State(auto=True, multi=True).extend(am.State()).auto is True
    assert am.State(auto=True, multi=True).extend(am.State()).multi is True
    # the source is unchanged (frozen value)
    assert base.require == ("A",)
    assert base.multi is False


def test_state_replace_replaces_given_fields_whole():
    base = am.State(auto=True, require=["A"], add=["B"])
    r = base.replace(require=["C", "D"], auto=False)
    assert r.require == ("C", "D")
    assert isinstance(r.require, tuple)
    assert r.add == ("B",)
    assert r.auto is False
    assert base.require == ("A",)


# ---------------------------------------------------------------------------------------
# dict schemas
# ---------------------------------------------------------------------------------------


def test_dict_schema_is_accepted_and_normalised_to_states():
    m = am.Machine({"Foo": {"require": ["Bar"]}, "Bar": {}, "Baz": None})
    assert m.schema["Foo"] == am.State(require=["Bar"])
    assert m.schema["Bar"] == am.State()
    assert m.schema["Baz"] == am.State()
    assert all(isinstance(v, am.State) for v in m.schema.values())
    assert m.add1("Foo") == am.Result.CANCELED
    assert m.add(["Foo", "Bar"]) == am.Result.EXECUTED
    assert m.active_states() == ["Foo", "Bar"]


def test_mixed_dict_and_state_values():
    m = am.Machine({"A": am.State(add=["B"]), "B": {"multi": True}})
    assert m.schema["B"].multi is True
    m.add1("A")
    assert m.is_all(["A", "B"])


def test_schema_property_is_read_only():
    m = am.Machine({"A": {}})
    with pytest.raises(TypeError):
        m.schema["B"] = am.State()  # type: ignore[index]
    assert "B" not in m.schema


def test_caller_schema_is_not_mutated():
    schema = {"A": {"remove": ["A", "B"]}, "B": {}}
    am.Machine(schema)
    assert schema == {"A": {"remove": ["A", "B"]}, "B": {}}


# ---------------------------------------------------------------------------------------
# names
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["foo", "Foo_Bar", "Foo-Bar", "1Foo", "Foo Bar", "F\u00f6o", "_Foo", "Foo.Bar", "Any"],
)
def test_bad_state_names_raise_schema_error_naming_state_and_machine(name):
    with pytest.raises(am.SchemaError) as info:
        am.Machine({"Ok": {}, name: {}}, id="mach-names")
    err = info.value
    assert err.state == name
    assert err.machine_id == "mach-names"
    assert name in str(err)
    assert "mach-names" in str(err)
    assert isinstance(err, am.Error)
    assert isinstance(err, ValueError)


def test_empty_state_name_is_rejected():
    with pytest.raises(am.SchemaError) as info:
        am.Machine({"": {}}, id="m-empty")
    assert info.value.machine_id == "m-empty"


@pytest.mark.parametrize("name", ["A", "Foo", "FooBar2", "X1y2Z3", "Exception"])
def test_good_state_names(name):
    m = am.Machine({name: {}})
    assert name in m.state_names


def test_state_names_are_case_sensitive():
    m = am.Machine({"Foo": {}, "FOO": {}})
    m.add1("Foo")
    assert m.is1("Foo")
    assert m.not1("FOO")


# ---------------------------------------------------------------------------------------
# normalisation (machine.md §2.2)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", ["require", "add", "remove", "after"])
def test_unknown_relation_target_is_a_schema_error(rel):
    with pytest.raises(am.SchemaError) as info:
        am.Machine({"A": {rel: ["Ghost"]}, "B": {}}, id="m-rel")
    err = info.value
    assert err.machine_id == "m-rel"
    assert err.state == "A"
    assert "Ghost" in str(err)
    assert "m-rel" in str(err)


def test_require_remove_conflict_is_a_schema_error():
    with pytest.raises(am.SchemaError) as info:
        am.Machine({"A": {"require": ["B"], "remove": ["B"]}, "B": {}}, id="m-conf")
    err = info.value
    assert err.state == "A"
    assert err.machine_id == "m-conf"
    assert "B" in str(err)


def test_self_remove_and_self_after_are_dropped():
    m = am.Machine({"A": {"remove": ["A", "B"], "after": ["A", "B"]}, "B": {}})
    assert m.schema["A"].remove == ("B",)
    assert m.schema["A"].after == ("B",)
    # and A can still be activated (it does not remove itself)
    assert m.add1("A") == am.Result.EXECUTED
    assert m.is1("A")


def test_add_and_remove_same_name_kept_in_add_only():
    m = am.Machine({"A": {"add": ["B"], "remove": ["B"]}, "B": {}})
    assert m.schema["A"].add == ("B",)
    assert m.schema["A"].remove == ()
    m.add1("A")
    assert m.is_all(["A", "B"])


def test_implicit_exception_is_multi_and_last():
    m = am.Machine({"B": {}, "A": {}})
    assert m.state_names == ["B", "A", "Exception"]
    assert m.schema["Exception"] == am.State(multi=True)
    m.add1("Exception")
    m.add1("Exception")
    assert m.tick("Exception") == 3  # multi: re-entered


def test_user_exception_is_kept_as_written():
    m = am.Machine({"Exception": {}, "A": {}})
    assert m.state_names == ["Exception", "A"]
    assert m.schema["Exception"] == am.State()
    assert m.schema["Exception"].multi is False
    m.add_err(ValueError("one"))
    m.add_err(ValueError("two"))
    assert m.tick("Exception") == 1  # not multi: no re-entry
    assert str(m.err) == "two"


# ---------------------------------------------------------------------------------------
# schema_merge
# ---------------------------------------------------------------------------------------


def test_schema_merge_later_wins_whole():
    a = {"A": {"require": ["B"], "auto": True}, "B": {}}
    b = {"A": am.State(multi=True), "C": {"add": ["A"]}}
    merged = am.schema_merge(a, b)
    assert list(merged) == ["A", "B", "C"]
    assert merged["A"] == am.State(multi=True)  # not a union: require and auto are gone
    assert merged["B"] == am.State()
    assert merged["C"] == am.State(add=["A"])
    assert all(isinstance(v, am.State) for v in merged.values())
    # inputs untouched
    assert a["A"] == {"require": ["B"], "auto": True}


def test_schema_merge_three_and_usable_by_machine():
    merged = am.schema_merge({"A": {}}, {"B": {"require": ["A"]}}, {"A": {"add": ["B"]}})
    m = am.Machine(merged)
    m.add1("A")
    assert m.is_all(["A", "B"])


def test_schema_merge_of_nothing_is_empty():
    assert am.schema_merge() == {}


# ---------------------------------------------------------------------------------------
# verify_states and state order
# ---------------------------------------------------------------------------------------


def test_default_order_is_declaration_order():
    m = am.Machine({"C": {}, "A": {}, "B": {}})
    assert m.state_names == ["C", "A", "B", "Exception"]
    assert m.states_verified is False


def test_verify_states_reorders_and_time_follows():
    m = am.Machine({"A": {}, "B": {}, "C": {}})
    m.add1("A")
    m.add1("C")
    m.remove1("C")
    m.add1("C")  # C:3
    assert m.time() == (1, 0, 3, 0)
    m.verify_states(["C", "B", "A"])
    assert m.states_verified is True
    assert m.state_names == ["C", "B", "A", "Exception"]
    assert m.time() == (3, 0, 1, 0)
    assert m.clock() == {"C": 3, "B": 0, "A": 1, "Exception": 0}
    assert m.active_states() == ["C", "A"]
    assert m.string_all() == "(C:3 A:1) [B:0 Exception:0]"
    # the machine still works with the new layout
    m.add1("B")
    assert m.time() == (3, 1, 1, 0)


def test_verify_states_with_exception_placed_explicitly():
    m = am.Machine({"A": {}, "B": {}})
    m.verify_states(["Exception", "B", "A"])
    assert m.state_names == ["Exception", "B", "A"]
    m.add_err(ValueError("x"))
    assert m.time() == (1, 0, 0)


def test_verify_states_collapses_duplicates():
    m = am.Machine({"A": {}, "B": {}})
    m.verify_states(["B", "B", "A", "A"])
    assert m.state_names == ["B", "A", "Exception"]


@pytest.mark.parametrize(
    "names",
    [["A"], ["A", "B", "C"], ["A", "Ghost"], ["A", "B", "Ghost"], []],
    ids=["missing", "extra", "missing+extra", "extra2", "empty"],
)
def test_verify_states_mismatch_raises_and_leaves_machine_unchanged(names):
    m = am.Machine({"A": {}, "B": {}}, id="m-verify")
    m.add1("B")
    before = (m.state_names, m.time(), m.string_all(), m.states_verified)
    with pytest.raises(am.SchemaError) as info:
        m.verify_states(names)
    assert info.value.machine_id == "m-verify"
    assert (m.state_names, m.time(), m.string_all(), m.states_verified) == before


# ---------------------------------------------------------------------------------------
# typed state sets
# ---------------------------------------------------------------------------------------


class MyStates(am.States):
    Processing: str
    Done: str


class MoreStates(MyStates):
    Extra: str
    Done: str  # repeated: not duplicated


class Mixed(MyStates, am.BasicStates):
    Extra: str


def test_states_values_are_names():
    ss = MyStates()
    assert ss.Processing == "Processing"
    assert ss.Done == "Done"
    assert MyStates.Done == "Done"
    assert ss.names() == ["Processing", "Done"]
    assert MyStates.names() == ["Processing", "Done"]
    assert isinstance(ss.names(), list)


def test_states_names_bases_first_then_own_without_duplicates():
    assert MoreStates.names() == ["Processing", "Done", "Extra"]
    assert MoreStates().Extra == "Extra"
    assert MoreStates().Processing == "Processing"


def test_states_multiple_inheritance_merges():
    names = Mixed.names()
    # Go's embedding order: bases left to right, then the class's own names
    assert names == [*MyStates.names(), *am.BasicStates.names(), "Extra"]
    assert len(names) == len(set(names))
    assert names[-1] == "Extra"  # own names last
    assert set(names) == {*MyStates.names(), *am.BasicStates.names(), "Extra"}
    # each base keeps its internal order
    for base in (MyStates, am.BasicStates):
        pos = [names.index(n) for n in base.names()]
        assert pos == sorted(pos)


def test_states_groups_one_per_class():
    groups = Mixed.groups()
    assert groups["MyStates"] == ["Processing", "Done"]
    assert groups["Mixed"] == ["Extra"]
    assert groups["BasicStates"] == am.BasicStates.names()
    assert set(groups) == {"MyStates", "BasicStates", "Mixed"}


def test_states_names_returns_a_copy():
    MyStates.names().append("Oops")
    assert MyStates.names() == ["Processing", "Done"]


def test_basic_states_and_schema():
    assert am.BasicStates.names() == [
        "Exception",
        "ErrNetwork",
        "ErrHandlerTimeout",
        "Start",
        "Ready",
        "Healthcheck",
        "Heartbeat",
    ]
    assert set(am.BASIC_SCHEMA) == set(am.BasicStates.names())
    assert am.BASIC_SCHEMA["Exception"].multi is True
    assert am.BASIC_SCHEMA["Ready"].require == ("Start",)
    assert "Exception" in am.BASIC_SCHEMA["ErrNetwork"].require
    assert "Exception" in am.BASIC_SCHEMA["ErrNetwork"].add


def test_basic_schema_behaviour():
    m = am.Machine(am.BASIC_SCHEMA, states=am.BasicStates)
    assert m.state_names == am.BasicStates.names()
    # Ready requires Start
    assert m.add1("Ready") == am.Result.CANCELED
    assert m.add(["Start", "Ready"]) == am.Result.EXECUTED
    # ErrNetwork adds (and requires) Exception
    assert m.add1("ErrNetwork") == am.Result.EXECUTED
    assert m.is_all(["ErrNetwork", "Exception"])
    # removing Exception removes the error state requiring it
    m.remove1("Exception")
    assert m.not_any(["ErrNetwork", "Exception"])
    assert m.is_all(["Start", "Ready"])
    # removing Start removes Ready
    m.remove1("Start")
    assert m.active_states() == []


def test_machine_with_typed_states_gets_that_order():
    schema = {"Done": {}, "Processing": {"remove": ["Done"]}}
    m = am.Machine(schema, states=MyStates)
    assert m.state_names == ["Processing", "Done", "Exception"]
    assert m.states_verified is True
    m2 = am.Machine(schema, states=MyStates())
    assert m2.state_names == ["Processing", "Done", "Exception"]
    m3 = am.Machine(schema, states=["Done", "Processing"])
    assert m3.state_names == ["Done", "Processing", "Exception"]


def test_machine_with_typed_states_mismatch_is_schema_error():
    with pytest.raises(am.SchemaError):
        am.Machine({"Processing": {}}, states=MyStates)


def test_machine_with_extended_typed_states():
    schema = am.schema_merge(am.BASIC_SCHEMA, {"Processing": {}, "Done": {}, "Extra": {}})
    m = am.Machine(schema, states=Mixed)
    assert m.state_names == Mixed.names()
    assert m.groups == Mixed.groups()


def test_states_by_tag():
    schema = {"A": {"tags": ["io"]}, "B": {}, "C": {"tags": ["x", "io"]}}
    assert am.states_by_tag(schema, "io") == ["A", "C"]
    assert am.states_by_tag(schema, "none") == []


# ---------------------------------------------------------------------------------------
# trio_am.schemas: CONNECTED_SCHEMA, a self-excluding group
# ---------------------------------------------------------------------------------------

GROUP = ["Connecting", "Connected", "Disconnecting", "Disconnected"]


def _conn_machine():
    return am.Machine(am.schema_merge(am.BASIC_SCHEMA, CONNECTED_SCHEMA))


def _group_active(m):
    return [s for s in GROUP if m.is1(s)]


def test_connected_states_names():
    assert set(ConnectedStates.names()) == set(CONNECTED_SCHEMA)


def test_connected_group_keeps_one_active():
    m = _conn_machine()
    assert _group_active(m) == []
    m.add1("Start")
    # Disconnected is auto and nothing blocks it
    assert _group_active(m) == ["Disconnected"]
    for state in ["Connecting", "Connected", "Disconnecting", "Disconnected", "Connected"]:
        assert m.add1(state) == am.Result.EXECUTED
        assert _group_active(m) == [state]
    # removing the active member lets the auto state come back
    m.remove1("Connected")
    assert _group_active(m) == ["Disconnected"]


def test_connected_group_two_members_at_once_is_canceled():
    m = _conn_machine()
    m.add1("Start")
    before = m.time()
    assert m.add(["Connecting", "Connected"]) == am.Result.CANCELED
    assert m.time() == before
    assert _group_active(m) == ["Disconnected"]


def test_connected_requires_start():
    m = _conn_machine()
    assert m.add1("Connected") == am.Result.CANCELED
    assert m.not1("Connected")
