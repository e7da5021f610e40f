"""Handler binding, validation, order, events and handler errors.

api.md "Handlers"; machine.md §5.6, §6, §17.3.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

import trio_am as am

FB = {"Foo": {}, "Bar": {}, "Baz": {}}


class Log:
    """A list of handler names that handlers append to."""

    def __init__(self):
        self.calls: list[str] = []


# ---------------------------------------------------------------------------------------
# binding by name and order
# ---------------------------------------------------------------------------------------


class AllHandlers:
    def __init__(self, log):
        self.log = log

    def Foo_enter(self, e):
        self.log.append(e.name)

    def Foo_exit(self, e):
        self.log.append(e.name)

    def Foo_state(self, e):
        self.log.append(e.name)

    def Foo_end(self, e):
        self.log.append(e.name)

    def Foo_Foo(self, e):
        self.log.append(e.name)

    def Foo_Bar(self, e):
        self.log.append(e.name)

    def Bar_enter(self, e):
        self.log.append(e.name)

    def Bar_state(self, e):
        self.log.append(e.name)

    def any_enter(self, e):
        self.log.append(e.name)

    def any_state(self, e):
        self.log.append(e.name)


def test_handlers_bound_by_name_and_called_in_phase_order():
    log: list[str] = []
    m = am.Machine(FB, handlers=AllHandlers(log))
    m.add1("Foo")
    assert log == ["Foo_enter", "any_enter", "Foo_state", "any_state"]
    log.clear()
    m.add1("Bar")
    # enter, self (Foo active and staying), state-state (Foo active, Bar in target), any
    assert log == ["Bar_enter", "Foo_Foo", "Foo_Bar", "any_enter", "Bar_state", "any_state"]
    log.clear()
    m.set(["Bar"])
    assert log[0] == "Foo_exit"
    assert log[-3:] == ["any_enter", "Foo_end", "any_state"]
    assert "Foo_state" not in log


def test_handlers_given_via_bind_handlers():
    log: list[str] = []
    m = am.Machine(FB)
    bid = m.bind_handlers(AllHandlers(log))
    assert isinstance(bid, str)
    assert m.handler_ids() == [bid]
    m.add1("Foo")
    assert log == ["Foo_enter", "any_enter", "Foo_state", "any_state"]


def test_plain_functions_as_attributes_are_bound():
    class Obj:
        pass

    log = []
    obj = Obj()
    obj.Foo_state = lambda e: log.append(e.name)  # type: ignore[attr-defined]
    m = am.Machine(FB, handlers=obj)
    m.add1("Foo")
    assert log == ["Foo_state"]


def test_static_and_class_methods_are_bound():
    log = []

    class Obj:
        @staticmethod
        def Foo_state(e):
            log.append("static")

        @classmethod
        def Bar_state(cls, e):
            log.append("class")

    m = am.Machine(FB, handlers=Obj())
    m.add(["Foo", "Bar"])
    assert sorted(log) == ["class", "static"]


def test_several_bindings_in_binding_order_first_veto_stops():
    log: list[str] = []

    class First:
        veto = False

        def Foo_enter(self, e):
            log.append("first")
            return False if self.veto else None

    class Second:
        def Foo_enter(self, e):
            log.append("second")

        def Foo_state(self, e):
            log.append("second-state")

    first = First()
    m = am.Machine(FB)
    b1 = m.bind_handlers(first)
    b2 = m.bind_handlers(Second())
    assert m.handler_ids() == [b1, b2]
    assert b1 != b2
    m.add1("Foo")
    assert log == ["first", "second", "second-state"]
    m.remove1("Foo")
    log.clear()
    first.veto = True
    assert m.add1("Foo") == am.Result.CANCELED
    assert log == ["first"]
    assert m.not1("Foo")


def test_binding_ids_unique_for_same_class_and_explicit_id():
    class H:
        def Foo_state(self, e):
            pass

    m = am.Machine(FB)
    a = m.bind_handlers(H())
    b = m.bind_handlers(H())
    c = m.bind_handlers(H(), id="mine")
    assert len({a, b, c}) == 3
    assert c == "mine"
    assert m.handler_ids() == [a, b, c]


def test_detach_handlers():
    log: list[str] = []

    class A:
        def Foo_state(self, e):
            log.append("a")

    class B:
        def Foo_state(self, e):
            log.append("b")

    m = am.Machine(FB)
    ida = m.bind_handlers(A())
    idb = m.bind_handlers(B())
    m.detach_handlers(ida)
    assert m.handler_ids() == [idb]
    m.add1("Foo")
    assert log == ["b"]
    m.detach_handlers(idb)
    assert m.handler_ids() == []
    m.remove1("Foo")
    m.add1("Foo")
    assert log == ["b"]
    with pytest.raises(am.Error):
        m.detach_handlers("nope")


def test_bind_handler_maps_for_names_outside_convention():
    log: list[str] = []
    m = am.Machine({"my-state": {}, "other_one": {}}, allow_any_names=True)
    m.bind_handler_maps(
        negotiation={"my-state_enter": lambda e: log.append(e.name)},
        final={
            "my-state_state": lambda e: log.append(e.name),
            "other_one_state": lambda e: log.append(e.name),
        },
    )
    assert m.add1("my-state") == am.Result.EXECUTED
    assert log == ["my-state_enter", "my-state_state"]
    m.add1("other_one")
    assert log[-1] == "other_one_state"


def test_bind_handler_maps_veto_and_unknown():
    m = am.Machine({"my-state": {}}, allow_any_names=True)
    m.bind_handler_maps(negotiation={"my-state_enter": lambda e: False})
    assert m.add1("my-state") == am.Result.CANCELED
    with pytest.raises(am.HandlerBindError):
        m.bind_handler_maps(final={"ghost_state": lambda e: None})
    with pytest.raises(am.HandlerBindError):
        m.bind_handler_maps(final={"my-state_enter": lambda e: None})  # wrong map


def test_allow_any_names_without_flag_is_rejected():
    with pytest.raises(am.SchemaError):
        am.Machine({"my-state": {}})


# ---------------------------------------------------------------------------------------
# binding errors
# ---------------------------------------------------------------------------------------


def _good_state(self, e):
    self.calls.append("Foo_state")


def _make(extra: dict):
    ns = {"calls": None, "Foo_state": _good_state}
    ns.update(extra)
    cls = type("Bad", (), ns)
    obj = cls()
    obj.calls = []
    return obj


async def _async_enter(self, e):  # pragma: no cover - never called
    return None


BAD_HANDLERS = {
    "unknown-state-suffix": ({"Fooo_enter": lambda self, e: None}, "Fooo"),
    "unknown-state-pair": ({"Foo_Barr": lambda self, e: None}, "Barr"),
    "unknown-state-pair-first": ({"Barr_Foo": lambda self, e: None}, "Barr"),
    "async": ({"Bar_enter": _async_enter}, "Bar_enter"),
    "non-callable": ({"Bar_state": 5}, "Bar_state"),
    "unknown-suffix": ({"Foo_enetr": lambda self, e: None}, "enetr"),
}


@pytest.mark.parametrize("extra,named", BAD_HANDLERS.values(), ids=list(BAD_HANDLERS))
def test_bad_handlers_raise_at_binding_and_bind_nothing(extra, named):
    m = am.Machine(FB, id="bind-m")

    class Ok:
        def Foo_enter(self, e):
            pass

    ok = m.bind_handlers(Ok())
    obj = _make(extra)
    with pytest.raises(am.HandlerBindError) as info:
        m.bind_handlers(obj)
    err = info.value
    assert isinstance(err, TypeError)
    assert isinstance(err, am.Error)
    assert err.machine_id == "bind-m"
    assert "bind-m" in str(err)
    assert named in str(err)
    # nothing from the object was bound
    assert m.handler_ids() == [ok]
    m.add1("Foo")
    assert obj.calls == []


@pytest.mark.parametrize("extra,named", BAD_HANDLERS.values(), ids=list(BAD_HANDLERS))
def test_bad_handlers_at_creation(extra, named):
    with pytest.raises(am.HandlerBindError):
        am.Machine(FB, handlers=_make(extra))


def test_unknown_state_error_has_state_attribute():
    with pytest.raises(am.HandlerBindError) as info:
        am.Machine(FB, handlers=_make({"Fooo_enter": lambda self, e: None}))
    assert info.value.state == "Fooo"


def test_async_any_state_rejected():
    async def any_state(e):  # pragma: no cover - never called
        pass

    class H:
        pass

    h = H()
    h.any_state = any_state  # type: ignore[attr-defined]
    with pytest.raises(am.HandlerBindError):
        am.Machine(FB, handlers=h)


def test_helpers_and_constants_are_ignored():
    class H:
        MAX_SIZE = 10
        HTTP_OK = 200
        DEFAULT_TIMEOUT_S = 1.5
        label = "x"

        def __init__(self):
            self.calls = []

        def _x(self):
            raise AssertionError

        def _Foo_state(self, e):
            raise AssertionError

        def helper(self):
            raise AssertionError

        def foo_enter(self, e):
            raise AssertionError

        def Foo_state(self, e):
            self.calls.append("Foo_state")

    h = H()
    m = am.Machine(FB, handlers=h)
    m.add1("Foo")
    assert h.calls == ["Foo_state"]
    assert m.not1("Exception")


def test_state_prefix_binding():
    class H:
        def __init__(self):
            self.calls = []

        def h_Foo_state(self, e):
            self.calls.append(e.name)

        def Foo_state(self, e):  # not under the prefix: ignored
            raise AssertionError

    h = H()
    m = am.Machine(FB)
    m.bind_handlers(h, state_prefix="h_")
    m.add1("Foo")
    assert len(h.calls) == 1


# ---------------------------------------------------------------------------------------
# Event
# ---------------------------------------------------------------------------------------


def test_event_fields_in_negotiation_and_final():
    seen: dict = {}
    m = am.Machine(FB, id="ev-m")

    class H:
        def Foo_enter(self, e):
            seen["enter"] = e
            seen["enter_valid"] = e.is_valid()
            seen["enter_clock_after"] = e.transition.clock_after
            seen["enter_is"] = e.machine.is1("Foo")

        def Foo_state(self, e):
            seen["state"] = e
            seen["state_valid"] = e.is_valid()
            seen["state_clock_after"] = e.transition.clock_after
            seen["state_clock_before"] = e.transition.clock_before
            seen["state_is"] = e.machine.is1("Foo")

    m.bind_handlers(H())
    m.add(["Foo", "Bar"], {"k": 1})
    e_enter, e_state = seen["enter"], seen["state"]
    assert e_enter.name == "Foo_enter"
    assert e_state.name == "Foo_state"
    assert e_enter.machine is m
    assert dict(e_enter.args) == {"k": 1}
    tx = e_state.transition
    assert isinstance(tx, am.Transition)
    assert e_enter.transition is tx
    assert isinstance(tx.id, str)
    mut = tx.mutation
    assert isinstance(mut, am.Mutation)
    assert mut.type == am.MutationType.ADD
    assert str(mut.type) == "add"
    assert mut.called == ["Foo", "Bar"]
    assert dict(mut.args) == {"k": 1}
    assert mut.source is None
    assert set(tx.target_states) == {"Foo", "Bar"}
    # negotiation sees the old state, finals the new one
    assert seen["enter_is"] is False
    assert seen["state_is"] is True
    assert seen["enter_clock_after"] is None
    assert seen["state_clock_before"] == {"Foo": 0, "Bar": 0, "Baz": 0, "Exception": 0}
    assert seen["state_clock_after"] == {"Foo": 1, "Bar": 1, "Baz": 0, "Exception": 0}
    # valid inside, invalid afterwards
    assert seen["enter_valid"] is True
    assert seen["state_valid"] is True
    assert e_enter.is_valid() is False
    assert e_state.is_valid() is False


def test_event_mutation_types():
    types = []

    class H:
        def any_enter(self, e):
            types.append(str(e.transition.mutation.type))

    m = am.Machine(FB, handlers=H())
    m.add1("Foo")
    m.remove1("Foo")
    m.set(["Bar"])
    assert types == ["add", "remove", "set"]


def test_event_args_are_read_only():
    errors = []
    kinds = []

    class H:
        def Foo_enter(self, e):
            kinds.append(type(e.args))
            try:
                e.args["x"] = 2
            except TypeError as exc:
                errors.append(exc)

    m = am.Machine(FB, handlers=H())
    args = {"x": 1}
    m.add1("Foo", args)
    assert args == {"x": 1}
    assert kinds == [MappingProxyType]
    assert len(errors) == 1


def test_event_args_empty_when_none():
    got = []

    class H:
        def Foo_state(self, e):
            got.append(e.args)

    m = am.Machine(FB, handlers=H())
    m.add1("Foo")
    assert got[0] is not None
    assert dict(got[0]) == {}
    with pytest.raises(TypeError):
        got[0]["x"] = 1


def test_mutation_source_from_event():
    got = []

    class Target:
        def Bar_state(self, e):
            got.append(e.transition.mutation.source)

    m2 = am.Machine(FB, id="target", handlers=Target())
    tx_ids = []

    class Source:
        def Foo_state(self, e):
            tx_ids.append(e.transition.id)
            m2.add1("Bar", event=e)

    m1 = am.Machine(FB, id="source", handlers=Source())
    m1.add1("Foo")
    assert m2.is1("Bar")
    src = got[0]
    assert isinstance(src, am.MutSource)
    assert src.mach_id == "source"
    assert src.tx_id == tx_ids[0]


# ---------------------------------------------------------------------------------------
# negotiation results and handler errors
# ---------------------------------------------------------------------------------------


def test_negotiation_none_accepts_false_vetoes():
    class H:
        answer = None

        def Foo_enter(self, e):
            return self.answer

    h = H()
    m = am.Machine(FB, handlers=h)
    assert m.add1("Foo") == am.Result.EXECUTED
    m.remove1("Foo")
    h.answer = True
    assert m.add1("Foo") == am.Result.EXECUTED
    m.remove1("Foo")
    h.answer = False
    t = m.time()
    assert m.add1("Foo") == am.Result.CANCELED
    assert m.time() == t


def test_veto_skips_final_handlers_and_any_state():
    log: list[str] = []

    class H:
        def Foo_enter(self, e):
            log.append("Foo_enter")
            return False

        def any_enter(self, e):
            log.append("any_enter")

        def Foo_state(self, e):
            log.append("Foo_state")

        def any_state(self, e):
            log.append("any_state")

    m = am.Machine(FB, handlers=H())
    m.add1("Foo")
    assert log == ["Foo_enter"]


def test_raising_negotiation_handler_cancels_and_adds_exception():
    boom = ValueError("boom")

    class H:
        def Foo_enter(self, e):
            raise boom

    m = am.Machine(FB, handlers=H())
    assert m.add1("Foo") == am.Result.CANCELED
    assert m.not1("Foo")
    assert m.tick("Foo") == 0
    assert m.is1("Exception")
    assert m.err is boom
    # the machine keeps working
    assert m.add1("Bar") == am.Result.EXECUTED


def test_raising_final_handler_rolls_back_and_adds_exception():
    boom = RuntimeError("late")
    got = []

    class H:
        def Foo_state(self, e):
            raise boom

        def Exception_state(self, e):
            got.append(e.args.get("err"))

    m = am.Machine(FB, handlers=H())
    assert m.add1("Foo") == am.Result.CANCELED
    assert m.not1("Foo")
    assert m.tick("Foo") == 2
    assert m.is1("Exception")
    assert m.err is boom
    assert got == [boom]


def test_panic_to_exception_false_propagates():
    boom = ValueError("raw")

    class H:
        def Foo_enter(self, e):
            raise boom

    m = am.Machine(FB, handlers=H(), panic_to_exception=False)
    with pytest.raises(ValueError) as info:
        m.add1("Foo")
    assert info.value is boom
    assert m.not_any(["Foo", "Exception"])
    # still usable afterwards
    assert m.add1("Bar") == am.Result.EXECUTED
    assert m.is1("Bar")


def test_panic_to_exception_false_leaves_no_running_transition():
    events = []

    class H:
        def Foo_enter(self, e):
            events.append(e)
            raise ValueError("raw")

    m = am.Machine(FB, handlers=H(), panic_to_exception=False)
    with pytest.raises(ValueError):
        m.add1("Foo")
    # the call returned: nothing is running and the event is no longer valid
    assert m.transition is None
    assert events[0].is_valid() is False


def test_e_fork_outside_state_handler_raises():
    got = []

    async def work():  # pragma: no cover - never started
        pass

    class H:
        def Foo_enter(self, e):
            try:
                e.fork(work)
            except am.Error as exc:
                got.append(exc)

    m = am.Machine(FB, handlers=H())
    m.add1("Foo")
    assert len(got) == 1
    assert m.is1("Foo")
