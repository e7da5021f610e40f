"""Typed arguments (attrs + cattrs) and args in logs.

api.md "Typed arguments (cattrs)"; machine.md §4.4, §12.1 (args mapper), §13, §17.7.
"""

from __future__ import annotations

import attrs
import msgpack
import pytest

import trio_am as am
import trio_am.args as am_args


@am.typed_args(prefix="worker")
@attrs.define
class WorkerArgs:
    job_id: str = am.log_field("job")
    retries: int = 0
    tags: list[str] = attrs.field(factory=list)


@am.typed_args(prefix="other", state="Foo")
@attrs.frozen
class OtherArgs:
    name: str
    secret: str = "hidden"


def test_pass_args_key():
    obj = WorkerArgs("j1")
    args = am.pass_args(obj)
    assert args == {"worker__Any": obj}
    assert args["worker__Any"] is obj
    assert am_args.args_key(WorkerArgs) == "worker__Any"
    assert am_args.args_key(OtherArgs) == "other__Foo"


def test_pass_args_several_and_extra():
    w, o = WorkerArgs("j1"), OtherArgs("n")
    args = am.pass_args(w, o, id="x")
    assert args == {"worker__Any": w, "other__Foo": o, "id": "x"}


def test_parse_args_absent_is_none():
    assert am.parse_args(WorkerArgs, None) is None
    assert am.parse_args(WorkerArgs, {}) is None
    assert am.parse_args(WorkerArgs, {"other__Foo": OtherArgs("n")}) is None
    assert am.parse_args(WorkerArgs, {"worker": 1}) is None


def test_parse_args_inside_handler():
    got = []

    class H:
        def Work_state(self, e):
            got.append(am.parse_args(WorkerArgs, e.args))
            got.append(am.parse_args(OtherArgs, e.args))

    m = am.Machine({"Work": {}}, handlers=H())
    obj = WorkerArgs("j7", retries=3)
    m.add1("Work", am.pass_args(obj))
    assert got[0] == obj
    assert isinstance(got[0], WorkerArgs)
    assert got[1] is None


def test_msgpack_round_trip():
    obj = WorkerArgs("j9", retries=2, tags=["a", "b"])
    args = am.pass_args(obj, id="x")
    wire = msgpack.packb(am_args.unstructure_args(args))
    back = msgpack.unpackb(wire)
    assert isinstance(back["worker__Any"], dict)
    parsed = am.parse_args(WorkerArgs, back)
    assert parsed == obj
    assert isinstance(parsed, WorkerArgs)
    assert back["id"] == "x"
    # structure_args restores registered classes in place
    restored = am_args.structure_args(back)
    assert restored["worker__Any"] == obj
    assert restored["id"] == "x"


def test_args_converter_is_a_cattrs_converter():
    obj = OtherArgs("n", "s")
    data = am.args_converter.unstructure(obj)
    assert data == {"name": "n", "secret": "s"}
    assert am.args_converter.structure(data, OtherArgs) == obj


def test_parse_args_bad_wire_form_raises():
    with pytest.raises(Exception):  # noqa: B017 - cattrs raises its own validation errors
        am.parse_args(WorkerArgs, {"worker__Any": {"retries": "x"}})


def test_merge_args():
    a = {"a": 1, "b": 1}
    b = {"b": 2, "c": 3}
    merged = am.merge_args(a, None, b, {})
    assert merged == {"a": 1, "b": 2, "c": 3}
    assert a == {"a": 1, "b": 1}
    assert b == {"b": 2, "c": 3}
    assert am.merge_args() == {}
    w = WorkerArgs("j")
    assert am.merge_args(am.pass_args(w), {"id": 1}) == {"worker__Any": w, "id": 1}


def test_typed_args_needs_attrs_class():
    with pytest.raises(TypeError):

        @am.typed_args(prefix="plain")
        class Plain:
            pass


def test_typed_args_key_collision():
    with pytest.raises(am.Error):

        @am.typed_args(prefix="worker")
        @attrs.define
        class AnotherWorker:
            x: int = 0


@pytest.mark.parametrize("prefix", ["", "a__b"])
def test_typed_args_bad_prefix(prefix):
    with pytest.raises(ValueError):
        am.typed_args(prefix=prefix)


def test_pass_args_of_unregistered_class():
    @attrs.define
    class NotRegistered:
        x: int = 0

    with pytest.raises(am.Error):
        am.pass_args(NotRegistered())


# ---------------------------------------------------------------------------------------
# args in logs
# ---------------------------------------------------------------------------------------


def _logged_machine(**kw):
    lines: list[str] = []
    m = am.Machine({"Work": {}, "Other": {}}, log_level=am.LogLevel.CHANGES, **kw)
    m.set_logger(lambda level, text, mach: lines.append(text))
    return m, lines


def test_log_field_shows_in_log_lines():
    m, lines = _logged_machine()
    m.add1("Work", am.pass_args(WorkerArgs("j1")))
    state_lines = [ln for ln in lines if ln.startswith("[state]")]
    assert state_lines == ["[state] +Work (job=j1)"]


def test_unmarked_fields_and_unknown_keys_hidden():
    m, lines = _logged_machine()
    m.add1("Work", am.pass_args(OtherArgs("n", "topsecret"), token="t0k", id="i1"))
    text = "\n".join(lines)
    assert "topsecret" not in text
    assert "t0k" not in text
    assert "[state] +Work (id=i1)" in lines


def test_default_log_names_sorted():
    m, lines = _logged_machine()
    m.add1("Work", {"url": "u", "err": "e", "port": 1, "zzz": 2})
    assert "[state] +Work (err=e port=1 url=u)" in lines


def test_log_args_mapper_custom():
    m, lines = _logged_machine()
    m.set_log_args(am.log_args_mapper(max_len=6, names=["foo"]))
    m.add1("Work", am.pass_args(WorkerArgs("abcdefghij"), foo="123456789", id="hidden"))
    assert "[state] +Work (foo=123... job=abc...)" in lines


def test_log_args_mapper_values_cut():
    mapper = am.log_args_mapper()
    out = mapper({"id": "x" * 30, "other": 1})
    assert out == {"id": "x" * 17 + "..."}
    assert len(out["id"]) == 20


def test_args_not_shown_below_changes_level():
    lines: list[str] = []
    m = am.Machine({"Work": {}}, log_level=am.LogLevel.EXTERNAL)
    m.set_logger(lambda level, text, mach: lines.append(text))
    m.add1("Work", am.pass_args(WorkerArgs("j1")))
    assert lines == []
