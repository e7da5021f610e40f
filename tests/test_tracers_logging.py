"""Tracers, log levels, logging and breakpoints.

api.md "Observability hooks"; machine.md §12.
"""

from __future__ import annotations

import logging

import pytest

import trio_am as am

AB = {"A": {}, "B": {}, "C": {}}

HOOKS = (
    "machine_init",
    "machine_dispose",
    "new_submachine",
    "queue_end",
    "schema_change",
    "verify_states",
    "mutation_queued",
    "transition_init",
    "transition_start",
    "transition_finals",
    "transition_end",
    "handler_start",
    "handler_end",
)


class Recorder:
    """A tracer (plain object, no base class) recording every hook."""

    def __init__(self):
        self.log: list[tuple] = []

    def __getattr__(self, name):
        if name not in HOOKS:
            raise AttributeError(name)

        def hook(*args):
            if name in ("handler_start", "handler_end"):
                self.log.append((name, args[2]))
            elif name == "mutation_queued":
                self.log.append((name, args[1].called))
            else:
                self.log.append((name,))

        return hook

    def names(self):
        return [entry[0] if len(entry) == 1 else f"{entry[0]}:{entry[1]}" for entry in self.log]


class Handlers:
    def A_enter(self, e):
        pass

    def A_state(self, e):
        pass


# ---------------------------------------------------------------------------------------
# tracers
# ---------------------------------------------------------------------------------------


def test_tracer_with_only_some_hooks():
    class Partial:
        def __init__(self):
            self.ends = []

        def transition_end(self, tx):
            self.ends.append((tx.mutation.called, tx.is_accepted))

    t = Partial()
    m = am.Machine({"A": {}, "B": {"require": ["C"]}, "C": {}})
    m.bind_tracer(t)
    assert t in m.tracers
    m.add1("A")
    m.add1("B")
    assert t.ends == [(["A"], True), (["B"], False)]


def test_hook_order_per_transition():
    t = Recorder()
    m = am.Machine(AB, handlers=Handlers())
    m.bind_tracer(t)
    m.add1("A")
    assert t.names() == [
        "transition_init",
        "transition_start",
        "handler_start:A_enter",
        "handler_end:A_enter",
        "transition_finals",
        "handler_start:A_state",
        "handler_end:A_state",
        "transition_end",
        "queue_end",
    ]


def test_hook_order_canceled_transition():
    class Veto:
        def A_enter(self, e):
            return False

        def A_state(self, e):  # pragma: no cover - never called
            pass

    t = Recorder()
    m = am.Machine(AB, handlers=Veto())
    m.bind_tracer(t)
    m.add1("A")
    assert t.names() == [
        "transition_init",
        "transition_start",
        "handler_start:A_enter",
        "handler_end:A_enter",
        "transition_end",
        "queue_end",
    ]


def test_mutation_queued_and_queue_end():
    class H:
        def A_state(self, e):
            e.machine.add1("B")

    t = Recorder()
    m = am.Machine(AB, handlers=H())
    m.bind_tracer(t)
    m.add1("A")
    names = t.names()
    assert "mutation_queued" in [e[0] for e in t.log]
    assert ("mutation_queued", ["B"]) in t.log
    q = t.log.index(("mutation_queued", ["B"]))
    first_end = names.index("transition_end")
    assert q < first_end  # queued during the first transition
    assert names.count("transition_end") == 2
    assert names.count("queue_end") == 1  # one drain
    assert names[-1] == "queue_end"


def test_machine_dispose_hook():
    t = Recorder()
    m = am.Machine(AB)
    m.bind_tracer(t)
    m.dispose()
    assert ("machine_dispose",) in t.log


def test_machine_init_and_new_submachine():
    t = Recorder()
    parent = am.Machine(AB, tracers=[t])
    assert t.log == [("machine_init",)]
    am.Machine(AB, parent=parent)
    assert t.log[-1] == ("new_submachine",)


def test_verify_states_and_schema_change_hooks():
    t = Recorder()
    m = am.Machine(AB)
    m.bind_tracer(t)
    m.verify_states(["C", "B", "A"])
    m.set_schema({"A": {}, "B": {}, "C": {}, "D": {}})
    assert t.names() == ["verify_states", "schema_change"]


def test_detach_tracer():
    t = Recorder()
    m = am.Machine(AB)
    m.bind_tracer(t)
    m.detach_tracer(t)
    m.add1("A")
    assert t.log == []
    assert m.tracers == []


def test_raising_tracer_is_detached_and_machine_keeps_working(caplog):
    class Bad:
        def __init__(self):
            self.calls = 0

        def transition_start(self, tx):
            self.calls += 1
            raise RuntimeError("tracer bug")

    good = Recorder()
    bad = Bad()
    m = am.Machine(AB, handlers=Handlers())
    m.bind_tracer(bad)
    m.bind_tracer(good)
    with caplog.at_level(logging.ERROR, logger="trio_am.machine"):
        assert m.add1("A") == am.Result.EXECUTED
    assert m.is1("A")
    assert bad not in m.tracers
    assert good in m.tracers
    assert m.not1("Exception")
    assert m.add1("B") == am.Result.EXECUTED
    assert bad.calls == 1
    assert good.names().count("transition_end") == 2


class StepTracer(am.TracerBase):
    wants_steps = True

    def __init__(self):
        self.steps = []

    def transition_end(self, tx):
        self.steps.append(tx.steps)


def test_tracer_base_wants_steps():
    t = StepTracer()
    m = am.Machine(AB, handlers=Handlers())
    m.bind_tracer(t)
    m.add1("A")
    assert len(t.steps) == 1
    assert t.steps[0]  # non-empty
    assert all(isinstance(s, tuple) for s in t.steps[0])


def test_tracer_without_steps_gets_none():
    class NoSteps(am.TracerBase):
        def __init__(self):
            self.steps = []

        def transition_end(self, tx):
            self.steps.append(tx.steps)

    t = NoSteps()
    m = am.Machine(AB, handlers=Handlers())
    m.bind_tracer(t)
    m.add1("A")
    assert t.steps == [None]


def test_tracer_base_unoverridden_hooks_are_harmless():
    class Only(am.TracerBase):
        def __init__(self):
            self.n = 0

        def queue_end(self, mach):
            self.n += 1

    t = Only()
    m = am.Machine(AB, handlers=Handlers())
    m.bind_tracer(t)
    m.add1("A")
    m.dispose()
    assert t.n == 1
    assert am.Tracer is am.TracerBase


# ---------------------------------------------------------------------------------------
# log levels and logging
# ---------------------------------------------------------------------------------------


def test_log_level_values():
    assert issubclass(am.LogLevel, int)
    expected = ["NOTHING", "EXTERNAL", "CHANGES", "OPS", "DECISIONS", "EVERYTHING"]
    assert [lv.name for lv in am.LogLevel] == expected
    assert [int(lv) for lv in am.LogLevel] == [0, 1, 2, 3, 4, 5]
    assert am.LogLevel(2) is am.LogLevel.CHANGES
    assert am.LogLevel.OPS > am.LogLevel.CHANGES


def test_changes_logged_to_stdlib_with_machine_id(caplog):
    caplog.set_level(logging.DEBUG, logger="trio_am.machine")
    m = am.Machine(AB, id="logger-mach", log_level=am.LogLevel.CHANGES)
    m.add1("A")
    m.remove1("A")
    records = [r for r in caplog.records if r.name == "trio_am.machine"]
    msgs = [r.getMessage() for r in records]
    plus = [r for r in records if "[state] +A" in r.getMessage()]
    assert len(plus) == 1, msgs
    rec = plus[0]
    assert rec.machine_id == "logger-mach"
    assert rec.getMessage().startswith("[logge] ")
    assert any("[state] -A" in msg for msg in msgs)


def test_nothing_logged_at_level_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="trio_am.machine")
    m = am.Machine(AB)
    m.add1("A")
    m.log("hello %s", 1)
    assert [r for r in caplog.records if r.name == "trio_am.machine"] == []


def test_changes_level_hides_ops():
    lines = []
    m = am.Machine(AB, log_level=am.LogLevel.CHANGES)
    m.set_logger(lambda level, text, mach: lines.append((level, text)))
    m.add1("A")
    assert lines == [(am.LogLevel.CHANGES, "[state] +A")]
    lines.clear()
    m.set_log_level(am.LogLevel.OPS)
    assert m.log_level == am.LogLevel.OPS
    m.add1("B")
    assert (am.LogLevel.CHANGES, "[state] +B") in lines
    assert len(lines) > 1
    assert all(lv <= am.LogLevel.OPS for lv, _ in lines)


def test_set_logger_replaces_sink(caplog):
    caplog.set_level(logging.DEBUG, logger="trio_am.machine")
    got = []
    m = am.Machine(AB, log_level=am.LogLevel.CHANGES)
    m.set_logger(lambda level, text, mach: got.append((level, text, mach)))
    m.add1("A")
    assert got == [(am.LogLevel.CHANGES, "[state] +A", m)]
    assert [r for r in caplog.records if r.name == "trio_am.machine"] == []
    m.set_logger(None)
    m.add1("B")
    assert any("[state] +B" in r.getMessage() for r in caplog.records)
    assert len(got) == 1


def test_external_log():
    got = []
    m = am.Machine(AB, log_level=am.LogLevel.EXTERNAL)
    m.set_logger(lambda level, text, mach: got.append((level, text)))
    m.log("x %s", 1)
    m.log("plain")
    m.add1("A")  # a change: not shown at EXTERNAL
    assert got == [(am.LogLevel.EXTERNAL, "[exter] x 1"), (am.LogLevel.EXTERNAL, "[exter] plain")]


def test_error_logged_at_changes():
    got = []
    m = am.Machine(AB, log_level=am.LogLevel.CHANGES)
    m.set_logger(lambda level, text, mach: got.append(text))
    m.add_err(ValueError("kaput"))
    assert any(t.startswith("[error]") and "kaput" in t for t in got)


# ---------------------------------------------------------------------------------------
# breakpoints
# ---------------------------------------------------------------------------------------


def test_breakpoint_hook_on_exact_add():
    hits = []
    m = am.Machine(AB)
    m.add_breakpoint(added=["A"], hook=hits.append)
    m.add(["A", "B"])  # not exactly A
    m.add1("B")
    m.remove1("A")
    m.set(["A"])  # Set is never matched
    assert hits == []
    m.remove1("A")
    m.add1("A")
    assert len(hits) == 1
    assert hits[0].called == ["A"]
    assert hits[0].type == am.MutationType.ADD


def test_breakpoint_on_remove_and_detach():
    hits = []
    m = am.Machine(AB)
    remove = m.add_breakpoint(removed=["B"], hook=hits.append)
    m.add1("B")
    assert hits == []
    m.remove1("B")
    assert len(hits) == 1
    remove()
    m.add1("B")
    m.remove1("B")
    assert len(hits) == 1


def test_breakpoint_logged_at_changes():
    got = []
    m = am.Machine(AB, log_level=am.LogLevel.CHANGES)
    m.set_logger(lambda level, text, mach: got.append(text))
    m.add_breakpoint(added=["A"], hook=lambda mut: None)
    m.add1("A")
    assert "[breakpoint] Machine.breakpoint" in got


def test_breakpoint_from_handler_queue():
    hits = []

    class H:
        def A_state(self, e):
            e.machine.add1("B")

    m = am.Machine(AB, handlers=H())
    m.add_breakpoint(added="B", hook=hits.append)
    m.add1("A")
    assert [mut.called for mut in hits] == [["B"]]


@pytest.mark.parametrize("strict,expected", [(False, 2), (True, 1)])
def test_breakpoint_strict(strict, expected):
    hits = []
    m = am.Machine(AB)
    m.add_breakpoint(added=["A"], strict=strict, hook=hits.append)
    m.add1("A")
    m.add1("A")  # would change nothing
    assert len(hits) == expected


def test_raising_machine_init_hook_does_not_break_construction():
    class Bad:
        def machine_init(self, mach):
            raise RuntimeError("init bug")

        def transition_end(self, tx):  # pragma: no cover - detached before any transition
            raise AssertionError

    bad = Bad()
    m = am.Machine(AB, tracers=[bad])
    assert bad not in m.tracers
    assert m.add1("A") == am.Result.EXECUTED
