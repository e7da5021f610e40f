"""Property tests (hypothesis) of the machine and the resolver on random schemas.

machine.md §3 (ticks, text formats, queue tick), §4.3 (results), §5 (resolution, handler
phases and order), §7 (queue), §16 (trio_am decisions). Strategies: tests/strategies.py.

Each property runs on a fresh ``am.Machine`` through the public API; tracers
(``am.TracerBase``) observe each transition so properties can speak about "right after
this mutation's own transition" as well as "after the call returned" (when the auto
round has run too).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    CHECK_KINDS,
    Op,
    apply_op,
    idle_ops,
    mutation_names,
    op,
    ops,
    schemas,
)

import trio_am as am
from trio_am._core._resolver import resolve, sort_states
from trio_am._core._schema import Compiled, normalize_schema

ADD = am.MutationType.ADD
REMOVE = am.MutationType.REMOVE
SET = am.MutationType.SET

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


class TxLog(am.TracerBase):
    """Records every transition and every appended (queued) mutation."""

    def __init__(self) -> None:
        self.txs: list[am.Transition] = []
        self.queued: list[am.Mutation] = []

    def transition_end(self, tx: am.Transition) -> None:
        self.txs.append(tx)

    def mutation_queued(self, mach: Any, mutation: am.Mutation) -> None:
        self.queued.append(mutation)


def closure(schema: Mapping[str, am.State], start: Iterable[str], rel: str = "add") -> set[str]:
    """States reachable from ``start`` through ``rel`` relations (``start`` excluded
    unless reached)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        s = todo.pop()
        for t in getattr(schema[s], rel):
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def autos(schema: Mapping[str, am.State]) -> set[str]:
    return {n for n, s in schema.items() if s.auto}


_ITEM = re.compile(r"([A-Za-z0-9]+):(\d+)")


def parse_string_all(text: str) -> tuple[dict[str, int], dict[str, int]]:
    m = re.fullmatch(r"\((.*)\) \[(.*)\]", text)
    assert m, text
    act = {n: int(t) for n, t in _ITEM.findall(m.group(1))}
    ina = {n: int(t) for n, t in _ITEM.findall(m.group(2))}
    return act, ina


def check_invariants(mach: am.Machine) -> None:
    """Property 1: relations hold on the active set; clocks and text agree."""
    schema = mach.schema  # normalised
    active = mach.active_states()
    aset = set(active)
    for s in active:
        bad = [r for r in schema[s].remove if r in aset]
        assert not bad, f"{s} is active with {bad} in its remove list: {mach.string_all()}"
        missing = [r for r in schema[s].require if r not in aset]
        assert not missing, f"{s} is active without required {missing}: {mach.string_all()}"
    clock = mach.clock()
    assert list(clock) == mach.state_names
    assert {n for n, t in clock.items() if t % 2 == 1} == aset
    assert all(mach.tick(n) == t for n, t in clock.items())
    assert tuple(mach.time()) == tuple(clock.values())
    act, ina = parse_string_all(mach.string_all())
    assert list(act) == active
    assert {**act, **ina} == clock
    assert list(act) == [n for n in mach.state_names if n in act]
    assert list(ina) == [n for n in mach.state_names if n in ina]
    assert mach.string() == "(" + " ".join(f"{n}:{t}" for n, t in act.items()) + ")"


def ticks_monotonic(before: Sequence[int], after: Sequence[int]) -> bool:
    return all(a >= b for a, b in zip(after, before, strict=True))


HANDLER_SUFFIXES = ("exit", "enter", "end", "state")


def handler_names(names: Sequence[str]) -> list[str]:
    """Every handler name for the states ``names``: per state, every pair, globals."""
    out = [f"{s}_{suf}" for s in names for suf in HANDLER_SUFFIXES]
    out += [f"{x}_{y}" for x in names for y in names]
    out += ["any_enter", "any_state"]
    return out


def negotiation_names(names: Sequence[str]) -> list[str]:
    return [h for h in handler_names(names) if not h.endswith(("_end", "_state"))]


#: phase of each handler kind within one transition (machine.md §5.6)
PHASE = {
    "exit": 1,
    "enter": 2,
    "self": 3,
    "pair": 4,
    "any_enter": 5,
    "end": 6,
    "state": 7,
    "any_state": 8,
}


def kind_of(hname: str) -> tuple[str, str | None, str | None]:
    """(kind, state, other) of a handler name."""
    if hname in ("any_enter", "any_state"):
        return hname, None, None
    a, b = hname.split("_")
    if b in HANDLER_SUFFIXES:
        return b, a, None
    return ("self" if a == b else "pair"), a, b


class Runaway(BaseException):
    """Raised by recording handlers after too many calls (a livelock); a BaseException
    so the machine does not turn it into the Exception state."""


class Plan:
    """What recording handlers do besides recording: veto, raise, queue mutations."""

    def __init__(
        self,
        veto: Iterable[str] = (),
        raise_: Iterable[str] = (),
        reactions: Mapping[str, Sequence[Op]] | None = None,
        budget: int = 25,
    ) -> None:
        self.veto = frozenset(veto)
        self.raise_ = frozenset(raise_)
        self.reactions = dict(reactions or {})
        self.budget = budget

    def __repr__(self) -> str:
        return f"Plan(veto={sorted(self.veto)}, raise_={sorted(self.raise_)}, reactions={self.reactions})"


class HandlerBoom(Exception):
    pass


def make_recorder(names: Sequence[str], plan: Plan | None = None, limit: int = 20000) -> Any:
    """A handler object with a method for every handler name, built with ``type()``.

    ``obj.log`` gets ``(tx seq, handler name, is_check)`` per call; ``obj.results`` gets
    ``(handler name, op, result, waiter-or-None)`` per mutation made from a handler.
    """
    plan = plan or Plan()
    ns: dict[str, Any] = {}
    budget = [plan.budget]
    calls = [0]

    def make(hname: str) -> Any:
        negotiation = not hname.endswith(("_end", "_state"))
        reactions = plan.reactions.get(hname, ())
        do_raise = hname in plan.raise_
        do_veto = negotiation and hname in plan.veto

        def handler(self: Any, e: am.Event) -> Any:
            calls[0] += 1
            if calls[0] > limit:
                raise Runaway(f"more than {limit} handler calls")
            self.log.append((e.transition.seq, hname, e.is_check))
            for o in reactions:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                r = apply_op(e.machine, o)
                waiter = None
                if r.is_queued and o.kind not in CHECK_KINDS:
                    waiter = e.machine.when_queue(r.queue_tick)
                self.results.append((hname, o, r, waiter))
            if do_raise:
                raise HandlerBoom(hname)
            if do_veto:
                return False
            return None

        handler.__name__ = hname
        return handler

    for h in handler_names(names):
        ns[h] = make(h)

    def __init__(self: Any) -> None:
        self.log = []
        self.results = []

    ns["__init__"] = __init__
    return type("Recorder", (), ns)()


@st.composite
def plans(
    draw: st.DrawFn,
    names: Sequence[str],
    *,
    veto: bool = True,
    raise_: bool = True,
    react: bool = True,
) -> Plan:
    hnames = handler_names(names)
    v = draw(st.sets(st.sampled_from(negotiation_names(names)), max_size=3)) if veto else set()
    r = draw(st.sets(st.sampled_from(hnames), max_size=2)) if raise_ else set()
    reactions: dict[str, list[Op]] = {}
    if react:
        reactions = draw(
            st.dictionaries(
                st.sampled_from(hnames),
                st.lists(op(names, checks=True), min_size=1, max_size=2),
                max_size=4,
            )
        )
    return Plan(v, r, reactions)


def run(mach: am.Machine, o: Op) -> am.Result:
    """``apply_op``, turning a livelock (:class:`Runaway`) into a plain failure so that
    hypothesis shrinks it."""
    try:
        return apply_op(mach, o)
    except Runaway as exc:
        raise AssertionError(f"livelock: {o!r} never returned ({exc})") from None


def own_tx(log: TxLog, start: int) -> am.Transition:
    """The first transition processed during a call (the call's own mutation: the
    queue is empty when the machine is idle)."""
    assert len(log.txs) > start, "the call processed no transition"
    return log.txs[start]


def active_after(tx: am.Transition, names: Sequence[str]) -> set[str]:
    after = tx.time_after
    assert after is not None
    return {n for n, t in zip(names, after, strict=True) if t % 2}


# ---------------------------------------------------------------------------------------
# 1. invariants after any sequence of mutations
# ---------------------------------------------------------------------------------------


@given(data=st.data())
def test_invariants_after_any_mutations(data):
    """Relations hold on the active set (remove filter re-applied after implied states,
    §16), ticks are odd exactly for active states and never decrease, text formats
    agree with the clock (§3.1, §3.2)."""
    schema = data.draw(schemas(), label="schema")
    mach = am.Machine(schema)
    seq = data.draw(ops(mutation_names(schema), checks=True), label="ops")
    check_invariants(mach)
    prev = mach.time()
    for o in seq:
        run(mach, o)
        check_invariants(mach)
        now = mach.time()
        assert ticks_monotonic(prev, now), (o, prev, now)
        prev = now


@given(data=st.data())
def test_invariants_with_vetoes_raises_and_queued_mutations(data):
    """The same invariants with handlers that veto, raise (rollback, Exception state)
    and queue mutations."""
    schema = data.draw(schemas(), label="schema")
    names = mutation_names(schema)
    plan = data.draw(plans(names), label="plan")
    rec = make_recorder(names, plan)
    mach = am.Machine(schema, handlers=rec)
    seq = data.draw(ops(names, checks=True, max_size=8), label="ops")
    check_invariants(mach)
    prev = mach.time()
    for o in seq:
        run(mach, o)
        check_invariants(mach)
        now = mach.time()
        assert ticks_monotonic(prev, now), (o, prev, now)
        assert mach.queue_len == 0
        prev = now


# ---------------------------------------------------------------------------------------
# 2. canceled mutations change no tick
# ---------------------------------------------------------------------------------------


@given(data=st.data())
def test_canceled_mutation_changes_no_tick(data):
    """Without handlers a CANCELED mutation changes no tick (§3.1, §5.3), and then it
    also starts no auto round."""
    schema = data.draw(schemas(), label="schema")
    mach = am.Machine(schema)
    seq = data.draw(ops(mutation_names(schema), checks=True), label="ops")
    for o in seq:
        before = mach.time()
        r = run(mach, o)
        if r == am.Result.CANCELED:
            assert mach.time() == before, (o, before, mach.time())
        if o.kind == "add_err_none":
            assert r == am.Result.CANCELED


def check_tick_rules(tx: am.Transition, schema: Mapping[str, am.State], names: Sequence[str]):
    """§3.1 for one transition: inactive → active +1, active → inactive +1, active and
    staying active +2 when Multi and called, every other tick unchanged (all of them
    when the transition was not applied)."""
    before = tx.time_before
    after = tx.time_after
    if after is None:
        return
    target = set(tx.target_states)
    called = set(tx.mutation.called)
    for n, b, a in zip(names, before, after, strict=True):
        if n in target:
            if b % 2:
                want = b + 2 if (schema[n].multi and n in called) else b
            else:
                want = b + 1
        else:
            want = b + 1 if b % 2 else b
        assert a == want, f"{n}: tick {b} -> {a}, expected {want} ({tx}, target {target})"


# ---------------------------------------------------------------------------------------
# 3. results of add / remove / set
# ---------------------------------------------------------------------------------------


@given(data=st.data())
def test_result_rules(data):
    """§4.3 and §5.3 on machines without handlers.

    * add/set: EXECUTED iff every called state is in the target set; when EXECUTED,
      right after its own transition the active set is exactly the target set, which
      holds every called state; when CANCELED nothing was applied.
    * remove: EXECUTED, and right after its own transition no called state is active.
    * set: EXECUTED ⇒ the active set is within called ∪ implied (add closure); after
      the auto round within called ∪ implied ∪ auto states and what they imply.
    * after the call: a called state of a remove still active was brought back by the
      auto round; a called state of an add/set no longer active was removed by it.
    * every applied transition follows the tick rules of §3.1.
    """
    schema = data.draw(schemas(), label="schema")
    mach = am.Machine(schema)
    log = TxLog()
    mach.bind_tracer(log)
    names = mach.state_names
    norm = mach.schema
    auto_states = autos(norm)
    auto_reach = auto_states | closure(norm, auto_states)
    seq = data.draw(idle_ops(mutation_names(schema)), label="ops")
    for o in seq:
        start = len(log.txs)
        was_active = set(mach.active_states())
        r = run(mach, o)
        tx = own_tx(log, start)
        called = list(dict.fromkeys(o.states))
        assert tx.mutation.called == called
        if o.kind.startswith("toggle"):
            all_on = bool(called) and all(c in was_active for c in called)
            assert tx.mutation.type == (REMOVE if all_on else ADD), (o, was_active)
        mtype = tx.mutation.type
        target = set(tx.target_states)
        now_active = set(mach.active_states())
        if not auto_states:
            assert len(log.txs) == start + 1, "no auto state, yet more than one transition"
        for t in log.txs[start:]:
            check_tick_rules(t, norm, names)
        if mtype == REMOVE:
            assert r == am.Result.EXECUTED, o
            assert not (active_after(tx, names) & set(called)), (o, tx.time_after)
            back = now_active & set(called)
            assert back <= auto_reach, (o, back)
            continue
        # add / set
        accepted = set(called) <= target
        assert (r == am.Result.EXECUTED) == accepted, (o, r, tx.target_states)
        if r == am.Result.EXECUTED:
            after = active_after(tx, names)
            assert after == target, (o, after, target)
            assert set(called) <= after
            if mtype == SET:
                implied = closure(norm, called)
                assert after <= set(called) | implied, (o, after)
                allowed = set(called) | implied | auto_reach
                assert now_active <= allowed, (o, now_active)
            gone = set(called) - now_active
            assert not gone or auto_states, (o, gone)
        else:
            assert tx.time_after is None
            assert len(log.txs) == start + 1, "a canceled transition started an auto round"


# ---------------------------------------------------------------------------------------
# 4. determinism
# ---------------------------------------------------------------------------------------


def scenario_trace(schema: Mapping[str, Any], plan: Plan, seq: Sequence[Op]) -> list[Any]:
    """Run ``seq`` on a fresh machine with recording handlers; return a JSON-able trace:
    per step the result, time and queue tick, then the handler calls and the results of
    the mutations made from handlers."""
    names = mutation_names(dict(schema))
    rec = make_recorder(names, plan)
    mach = am.Machine(schema)
    mach.bind_handlers(rec)
    steps = []
    for o in seq:
        r = run(mach, o)
        steps.append([int(r), r.queue_tick, list(mach.time()), mach.queue_tick, mach.string_all()])
    calls = [[seq_no, h, is_check] for seq_no, h, is_check in rec.log]
    handler_results = [[h, repr(o), int(r), r.queue_tick] for h, o, r, _ in rec.results]
    return [steps, calls, handler_results, mach.err is None]


def scenario_to_json(schema: Mapping[str, Any], plan: Plan, seq: Sequence[Op]) -> Any:
    def op_json(o: Op) -> Any:
        return [o.kind, list(o.states), o.args]

    return {
        "schema": {n: (v.to_dict() if isinstance(v, am.State) else v) for n, v in schema.items()},
        "veto": sorted(plan.veto),
        "raise": sorted(plan.raise_),
        "reactions": {h: [op_json(o) for o in os_] for h, os_ in plan.reactions.items()},
        "budget": plan.budget,
        "ops": [op_json(o) for o in seq],
    }


def scenario_from_json(d: Any) -> tuple[dict[str, Any], Plan, list[Op]]:
    def op_from(x: Any) -> Op:
        return Op(x[0], tuple(x[1]), x[2])

    plan = Plan(
        d["veto"],
        d["raise"],
        {h: [op_from(o) for o in os_] for h, os_ in d["reactions"].items()},
        d["budget"],
    )
    return d["schema"], plan, [op_from(o) for o in d["ops"]]


def replay_json(text: str) -> str:
    """Entry point for the subprocess of test_deterministic_across_hash_seeds."""
    return json.dumps([scenario_trace(*scenario_from_json(d)) for d in json.loads(text)])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], Plan, list[Op]]:
    schema = draw(schemas(), label="schema")
    names = mutation_names(schema)
    plan = draw(plans(names), label="plan")
    seq = draw(ops(names, checks=True, max_size=8), label="ops")
    return schema, plan, seq


@given(sc=scenarios())
def test_deterministic(sc):
    """The same schema and mutations on two fresh machines give the same time after
    every step, the same results and the same handler calls (§5.4: trio_am is
    deterministic), also with vetoes, raises and mutations queued from handlers."""
    first = scenario_trace(*sc)
    second = scenario_trace(*sc)
    assert first == second


@settings(max_examples=4)  # one subprocess per example: slow
@given(batch=st.lists(scenarios(), min_size=25, max_size=25))
def test_deterministic_across_hash_seeds(batch):
    """Determinism may not hang on string hashing (set/dict-of-set iteration order):
    the same scenarios replayed in a Python process with another ``PYTHONHASHSEED``
    give the same traces."""
    payload = [scenario_to_json(*sc) for sc in batch]
    local = [scenario_trace(*scenario_from_json(d)) for d in payload]
    here = os.environ.get("PYTHONHASHSEED", "random")
    other = "12345" if here != "12345" else "54321"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import test_properties as tp; "
        "sys.stdout.write(tp.replay_json(sys.stdin.read()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": other},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout)
    for d, a, b in zip(payload, local, remote, strict=True):
        assert a == b, json.dumps(d)


# ---------------------------------------------------------------------------------------
# 5. queue ticks
# ---------------------------------------------------------------------------------------


@given(data=st.data())
def test_queue_tick_per_call(data):
    """Each top-level mutation made while idle takes exactly one queue tick, whatever
    its result (§3.3, §5.3); ``add_err(None)`` takes none; dry runs change neither
    ticks nor the queue tick, and (no handlers) agree with the real mutation (§5.9)."""
    schema = data.draw(schemas(), label="schema")
    mach = am.Machine(schema)
    multi = {n for n, s in mach.schema.items() if s.multi}
    seq = data.draw(ops(mutation_names(schema), checks=True), label="ops")
    for o in seq:
        qt = mach.queue_tick
        t = mach.time()
        if o.kind in ("add", "add1", "remove", "remove1"):
            dry = mach.can_add if o.kind.startswith("add") else mach.can_remove
            would = dry(list(o.states), o.args)
            assert mach.queue_tick == qt and mach.time() == t, "a dry run changed a clock"
        else:
            would = None
        r = run(mach, o)
        if o.kind in CHECK_KINDS:
            assert mach.queue_tick == qt, o
            assert mach.time() == t, o
        elif o.kind == "add_err_none":
            assert r == am.Result.CANCELED
            assert mach.queue_tick == qt
            assert mach.time() == t
        else:
            assert mach.queue_tick == qt + 1, (o, qt, mach.queue_tick)
        assert mach.queue_len == 0
        if would is not None:
            if o.kind.startswith("remove"):
                assert would == am.Result.EXECUTED == r
            elif set(o.states) & multi:
                assert would == am.Result.EXECUTED, (o, would)  # §5.3 (a)
            else:
                assert would == r, (o, would, r)


@given(data=st.data())
def test_dry_runs_with_handlers_change_nothing(data):
    """With (non-raising, non-mutating) recording handlers bound, dry runs run
    negotiation handlers only, with ``e.is_check`` set, and change no clock."""
    schema = data.draw(schemas(), label="schema")
    names = mutation_names(schema)
    plan = data.draw(plans(names, raise_=False, react=False), label="plan")
    rec = make_recorder(names, plan)
    mach = am.Machine(schema, handlers=rec)
    seq = data.draw(ops(names, checks=True, max_size=8), label="ops")
    for o in seq:
        qt, t = mach.queue_tick, mach.time()
        n = len(rec.log)
        run(mach, o)
        if o.kind in CHECK_KINDS:
            assert (mach.queue_tick, mach.time()) == (qt, t), o
            new = rec.log[n:]
            assert all(is_check for _, _, is_check in new), new
            assert not [h for _, h, _ in new if h.endswith(("_end", "_state"))], new


# ---------------------------------------------------------------------------------------
# 6. handler order
# ---------------------------------------------------------------------------------------


def pred_graph_acyclic(schema: Mapping[str, am.State]) -> bool:
    """True when require ∪ after (machine.md §5.4) has no cycle anywhere in the
    (normalised) schema. A require cycle, a state requiring itself included, makes the
    require-based order unspecified (§2.2 rule 6); ``after`` self-entries are dropped
    by normalisation (§2.2 rule 1)."""
    if any(n in s.require for n, s in schema.items()):
        return False
    edges = {n: {t for t in (*s.require, *s.after) if t != n} for n, s in schema.items()}
    state: dict[str, int] = {}

    def visit(n: str) -> bool:
        state[n] = 1
        for t in edges.get(n, ()):
            if state.get(t) == 1:
                return False
            if t not in state and not visit(t):
                return False
        state[n] = 2
        return True

    return all(n in state or visit(n) for n in edges)


def check_order(
    calls: list[str], tx: am.Transition, schema: Mapping[str, am.State], ordered: bool
) -> None:
    """Handler-order rules within one transition (machine.md §5.4, §5.6)."""
    phases = [PHASE[kind_of(h)[0]] for h in calls]
    assert phases == sorted(phases), f"handler phases out of order: {calls}"
    if "any_enter" in calls:
        assert calls.count("any_enter") == 1
        last_neg = max(i for i, p in enumerate(phases) if p <= PHASE["any_enter"])
        assert calls[last_neg] == "any_enter", calls
    if "any_state" in calls:
        assert calls.count("any_state") == 1
        assert calls[-1] == "any_state", calls
    if not ordered:
        return
    for kinds in (("enter", "state"), ("exit", "end")):
        for kind in kinds:
            seq = [kind_of(h)[1] for h in calls if kind_of(h)[0] == kind]
            pos = {s: i for i, s in enumerate(seq)}
            for x in seq:
                for y in schema[x].require:
                    if y in pos and y != x:
                        assert pos[y] < pos[x], f"{x} requires {y}: {kind} order {seq}"
                for y in schema[x].after:
                    if y in pos:
                        assert pos[y] < pos[x], f"{x} after {y}: {kind} order {seq}"


@given(data=st.data())
def test_handler_order(data):
    """Within one transition: negotiation (exit, enter, self, pairs, any_enter) before
    finals (end, state, any_state); any_enter last negotiation handler, any_state last;
    required and ``after`` states first; ``S_state`` iff S's tick went even→odd (or +2),
    ``S_end`` iff odd→even; self and pair handlers for exactly the specified states."""
    schema = data.draw(schemas(), label="schema")
    names = mutation_names(schema)
    plan = data.draw(plans(names, raise_=False, react=False), label="plan")
    rec = make_recorder(names, plan)
    mach = am.Machine(schema, handlers=rec)
    log = TxLog()
    mach.bind_tracer(log)
    norm = mach.schema
    order = mach.state_names
    ordered = pred_graph_acyclic(norm)
    seq = data.draw(idle_ops(names, max_size=8), label="ops")
    for o in seq:
        run(mach, o)
    by_tx: dict[int, list[str]] = {}
    for seq_no, h, _ in rec.log:
        by_tx.setdefault(seq_no, []).append(h)
    assert set(by_tx) <= {tx.seq for tx in log.txs}
    for tx in log.txs:
        calls = by_tx.get(tx.seq, [])
        check_order(calls, tx, norm, ordered)
        before = tx.time_before
        after = tx.time_after if tx.time_after is not None else before
        for n, b, a in zip(order, before, after, strict=True):
            entered = (b % 2 == 0 and a % 2 == 1) or a - b == 2
            ended = b % 2 == 1 and a % 2 == 0
            assert (f"{n}_state" in calls) == entered, (tx, n, b, a, calls)
            assert (f"{n}_end" in calls) == ended, (tx, n, b, a, calls)
            assert calls.count(f"{n}_state") <= 1 and calls.count(f"{n}_end") <= 1
        vetoed = any(h in plan.veto for h in calls)
        if tx.time_after is not None:
            assert calls.count("any_enter") == 1, calls
            assert calls[-1] == "any_state", calls
        if vetoed:
            continue
        # a transition without a veto
        if tx.time_after is None:
            # rejected by relations: no handler at all (§5.3)
            assert calls == [], (tx, calls)
            continue
        enters = [kind_of(h)[1] for h in calls if kind_of(h)[0] == "enter"]
        states = [kind_of(h)[1] for h in calls if kind_of(h)[0] == "state"]
        exits = [kind_of(h)[1] for h in calls if kind_of(h)[0] == "exit"]
        ends = [kind_of(h)[1] for h in calls if kind_of(h)[0] == "end"]
        assert enters == states, calls
        assert exits == ends, calls
        prev = {n for n, t in zip(order, before, strict=True) if t % 2}
        target = tx.target_states
        selfs = [kind_of(h)[1] for h in calls if kind_of(h)[0] == "self"]
        if tx.mutation.type == REMOVE:
            assert selfs == [], calls
        else:
            assert sorted(selfs) == sorted(s for s in target if s in prev), (tx, calls)
        pairs = [(kind_of(h)[1], kind_of(h)[2]) for h in calls if kind_of(h)[0] == "pair"]
        expected = {(x, y) for x in prev for y in target if x != y}
        assert len(pairs) == len(set(pairs))
        assert set(pairs) == expected, (tx, calls)
        # pairs: outer loop X (contiguous), inner loop Y in target order
        xs = [x for x, _ in pairs]
        assert xs == sorted(xs, key=xs.index), pairs
        for x in set(xs):
            ys = [y for xx, y in pairs if xx == x]
            assert ys == [y for y in target if y in ys], pairs


# ---------------------------------------------------------------------------------------
# 7. mutations queued from handlers are never lost
# ---------------------------------------------------------------------------------------


@given(data=st.data())
def test_queued_mutations_are_processed(data):
    """Mutations made from handlers are queued and all processed before the outer call
    returns (§4.3, §7): the queue ends empty, the queue tick advances by 1 (own) plus
    one per QUEUED result (de-duplicated ones and dry runs take none), each queued
    mutation ran as a transition at its queue tick, and its ``when_queue`` is set."""
    schema = data.draw(schemas(), label="schema")
    names = mutation_names(schema)
    plan = data.draw(plans(names, veto=True, raise_=data.draw(st.booleans())), label="plan")
    plan.budget = 30
    rec = make_recorder(names, plan)
    mach = am.Machine(schema, handlers=rec)
    log = TxLog()
    mach.bind_tracer(log)
    seq = data.draw(ops(names, checks=True, max_size=8), label="ops")
    for o in seq:
        qt = mach.queue_tick
        start_tx, start_q, start_r = len(log.txs), len(log.queued), len(rec.results)
        run(mach, o)
        assert mach.queue_len == 0
        own = 0 if o.kind in (*CHECK_KINDS, "add_err_none") else 1
        results = rec.results[start_r:]
        # dry runs from handlers are prepended: QUEUED (the plain constant, §5.9), no tick
        queued = [r for _, ho, r, _ in results if r.is_queued and ho.kind not in CHECK_KINDS]
        for hname, ho, r, _ in results:
            if ho.kind in CHECK_KINDS:
                assert r == am.Result.QUEUED, (hname, ho, r)
        n = len(queued)
        assert mach.queue_tick == qt + own + n, (o, qt, mach.queue_tick, results)
        assert sorted(r.queue_tick for r in queued) == list(range(qt + own + 1, qt + own + n + 1))
        muts = log.queued[start_q:]
        assert len(muts) == n
        processed = log.txs[start_tx:]
        ran = {id(tx.mutation) for tx in processed}
        for mut in muts:
            assert id(mut) in ran, f"queued {mut} was never processed"
        ticks = sorted(tx.mutation.queue_tick for tx in processed if tx.mutation.queue_tick)
        assert ticks == list(range(qt + 1, qt + own + n + 1)), (o, ticks)
        for hname, ho, r, waiter in results:
            if waiter is not None:
                assert waiter.is_set(), (hname, ho, r)
                assert mach.when_queue(r.queue_tick).is_set()


# ---------------------------------------------------------------------------------------
# 8. the resolver as a pure function
# ---------------------------------------------------------------------------------------


@st.composite
def resolver_inputs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], int, int, int]:
    """(schema, base names, active mask, reactivate mask, exclude mask); masks index the
    schema's states in declaration order (then Exception)."""
    schema = draw(schemas(), label="schema")
    names = list(normalize_schema(schema))
    n = len(names)
    base = draw(st.lists(st.sampled_from(names), unique=True), label="base")
    active = draw(subset_masks(n), label="active")
    multi = {i for i, name in enumerate(names) if name != "Exception" and _is_multi(schema[name])}
    multi.add(n - 1)  # Exception
    reactivate = draw(subset_masks(n), label="reactivate") & sum(1 << i for i in multi)
    exclude = 0
    if draw(st.booleans()):
        exclude = draw(subset_masks(n), label="exclude")
        for name in base:
            exclude &= ~(1 << names.index(name))
    return schema, base, active, reactivate, exclude


def subset_masks(n: int) -> st.SearchStrategy[int]:
    """A bit mask over ``n`` states, each bit set with probability 1/2 (a plain
    ``integers(0, 2**n - 1)`` favours low bits); shrinks to 0."""
    return st.binary(min_size=n, max_size=n).map(
        lambda b: sum(1 << i for i, byte in enumerate(b) if byte >= 128)
    )


def _is_multi(st_: Any) -> bool:
    return bool(st_.multi if isinstance(st_, am.State) else st_.get("multi"))


def compiled(schema: Mapping[str, Any]) -> Compiled:
    norm = normalize_schema(schema)
    return Compiled(norm, list(norm))


def _bits(mask: int) -> set[int]:
    return {i for i in range(mask.bit_length()) if (mask >> i) & 1}


@given(inp=resolver_inputs())
def test_resolver_pure(inp):
    """resolve(): no duplicates; within base ∪ the add closure (applied only from
    states being (re)activated, R3); no state with one it removes (§16); every
    requirement present (R5); excluded states never implied (R4); pure (same input,
    same output); stable (resolving the result again, all active, gives it back)."""
    schema, base_names, active, reactivate, exclude = inp
    c = compiled(schema)
    base = [c.index[n] for n in base_names]
    base_copy = list(base)
    out = resolve(c, base, active, reactivate, exclude)
    assert base == base_copy, "resolve mutated its input"
    assert len(out) == len(set(out)), out
    assert out == resolve(c, base, active, reactivate, exclude)
    # reachable: base, then add lists of states that apply them (not active, or re-activated)
    applies = ~active | reactivate
    reach = set(base)
    todo = [s for s in base if (applies >> s) & 1]
    while todo:
        s = todo.pop()
        for a in c.add[s]:
            if a not in reach and not (exclude >> a) & 1:
                reach.add(a)
                if (applies >> a) & 1:
                    todo.append(a)
    assert set(out) <= reach, (out, reach)
    outset = set(out)
    shown = [c.names[s] for s in out]
    for x in out:
        removed = [c.names[y] for y in _bits(c.remove_mask[x]) & outset]
        assert not removed, f"{c.names[x]} is in the result {shown} with {removed} it removes"
        missing = [c.names[y] for y in set(c.require[x]) - outset]
        assert not missing, f"{c.names[x]} is in the result {shown} without required {missing}"
        assert not (exclude >> x) & 1
    # stable: the result is a fixpoint when everything in it is active
    omask = sum(1 << s for s in out)
    again = resolve(c, out, omask, 0, 0)
    assert set(again) == outset
    # sort order: required and `after` states first (when the order is specified)
    if pred_graph_acyclic(c.schema):
        pos = {s: i for i, s in enumerate(out)}
        for x in out:
            for y in _bits(c.pred_mask[x]):
                if y in pos:
                    assert pos[y] < pos[x], (c.names[x], c.names[y], out)


@given(inp=resolver_inputs())
def test_sort_states_is_a_permutation(inp):
    schema, base_names, *_ = inp
    c = compiled(schema)
    base = [c.index[n] for n in base_names]
    out = sort_states(c, list(base))
    assert sorted(out) == sorted(base)
    if pred_graph_acyclic(c.schema):
        pos = {s: i for i, s in enumerate(out)}
        for x in out:
            for y in _bits(c.pred_mask[x]) & set(base):
                assert pos[y] < pos[x]


def check_no_removed_pairs(c: Compiled, out: list[int], where: Any) -> None:
    outset = set(out)
    for x in out:
        removed = [c.names[y] for y in _bits(c.remove_mask[x]) & outset]
        assert not removed, (where, c.names[x], "removes", removed, [c.names[s] for s in out])


@given(data=st.data())
def test_resolver_add_and_remove_only(data):
    """§16 with only ``add`` and ``remove`` relations, nothing active (every state
    applies its ``add`` list): states implied at any depth are still subject to the
    remove walk, so no result holds a state together with one it removes."""
    schema = data.draw(schemas(relations=("add", "remove")), label="schema")
    c = compiled(schema)
    base = data.draw(
        st.lists(st.sampled_from(c.names), unique=True, min_size=1, max_size=3), label="base"
    )
    out = resolve(c, [c.index[n] for n in base], 0, 0, 0)
    check_no_removed_pairs(c, out, (schema, base))


def test_resolver_exhaustive_three_states():
    """Small scope, exhaustively: every schema of three states with ``add`` and
    ``remove`` relations between distinct states (4096 schemas), every base list of
    distinct states (15): no result holds a state with one it removes (§16), all
    results are within the base and its ``add`` closure."""
    names = ("A", "B", "C")
    pairs = [(x, y) for x in names for y in names if x != y]
    bases = [list(p) for k in (1, 2, 3) for p in itertools.permutations(range(3), k)]
    for bits in range(1 << (2 * len(pairs))):
        schema: dict[str, dict[str, list[str]]] = {n: {"add": [], "remove": []} for n in names}
        for k, (x, y) in enumerate(pairs):
            if (bits >> k) & 1:
                schema[x]["add"].append(y)
            if (bits >> (k + len(pairs))) & 1:
                schema[x]["remove"].append(y)
        c = compiled(schema)
        for base in bases:
            out = resolve(c, base, 0, 0, 0)
            check_no_removed_pairs(c, out, (schema, [names[s] for s in base]))
            reach = closure(c.schema, [names[s] for s in base]) | {names[s] for s in base}
            assert {c.names[s] for s in out} <= reach


@given(data=st.data())
def test_resolver_follows_add_to_full_closure(data):
    """R2 / §16: with only ``add`` relations (nothing can block an implied state), the
    target is exactly the base plus the full ``add`` closure of the states being
    activated (Go stops after two hops)."""
    schema = data.draw(schemas(relations=("add",)), label="schema")
    norm = normalize_schema(schema)
    c = Compiled(norm, list(norm))
    base = data.draw(st.lists(st.sampled_from(range(c.n)), unique=True), label="base")
    active = data.draw(subset_masks(c.n), label="active")
    applies = ~active
    reach = set(base)
    todo = [s for s in base if (applies >> s) & 1]
    while todo:
        s = todo.pop()
        for a in c.add[s]:
            if a not in reach:
                reach.add(a)
                if (applies >> a) & 1:
                    todo.append(a)
    out = resolve(c, base, active, 0, 0)
    assert set(out) == reach, ([c.names[s] for s in out], [c.names[s] for s in reach])


@given(data=st.data())
def test_add_only_schema_activates_the_closure(data):
    """The same through the machine: with only ``add`` relations, ``add(S)`` activates
    S and everything S implies transitively (R2, §16), re-applying the ``add`` list of
    already active non-Multi states never (R3)."""
    schema = data.draw(schemas(relations=("add",), auto=False), label="schema")
    mach = am.Machine(schema)
    norm = mach.schema
    seq = data.draw(idle_ops(mutation_names(schema)), label="ops")
    for o in seq:
        before = set(mach.active_states())
        r = run(mach, o)
        if o.kind not in ("add", "add1") or r != am.Result.EXECUTED:
            continue
        called = set(o.states)
        applying = {s for s in called if s not in before or norm[s].multi}
        reach = set(applying)
        todo = list(applying)
        while todo:
            s = todo.pop()
            for a in norm[s].add:
                if a not in reach and a not in before:
                    reach.add(a)
                    todo.append(a)
        assert set(mach.active_states()) == before | called | reach, (o, before)


@given(data=st.data())
def test_resolver_matches_machine(data):
    """Without handlers, an accepted add/set moves the machine to exactly the set that
    resolve() computes from §5.1's base list."""
    schema = data.draw(schemas(auto=False), label="schema")
    mach = am.Machine(schema)
    c = Compiled(dict(mach.schema), mach.state_names)
    log = TxLog()
    mach.bind_tracer(log)
    seq = data.draw(idle_ops(mutation_names(schema)), label="ops")
    for o in seq:
        if not o.kind.startswith(("add", "set")):
            run(mach, o)
            continue
        # the active states in their current (last target) order, §5.1
        applied = [tx for tx in log.txs if tx.time_after is not None]
        alist = applied[-1].target_states if applied else []
        assert set(alist) == set(mach.active_states())
        idx = [c.index[s] for s in dict.fromkeys(o.states)]
        cmask = sum(1 << s for s in idx)
        active = sum(1 << c.index[s] for s in alist)
        if o.kind == "set":
            base = idx
        else:
            base = idx + [c.index[s] for s in alist if not (cmask >> c.index[s]) & 1]
        target = {c.names[s] for s in resolve(c, base, active, cmask & c.multi_mask, 0)}
        r = run(mach, o)
        if set(o.states) <= target:
            assert r == am.Result.EXECUTED
            assert set(mach.active_states()) == target
        else:
            assert r == am.Result.CANCELED


# ---------------------------------------------------------------------------------------
# regressions found by the properties above (kept as plain tests)
# ---------------------------------------------------------------------------------------


def test_auto_state_implying_a_raising_state_does_not_livelock():
    """§16: "an auto state that raised twice in one queue drain sits out further auto
    rounds of that drain" exists so that a raising handler cannot loop the machine
    forever (§6.4: "the machine keeps working afterwards"). Shrunk from
    test_invariants_with_vetoes_raises_and_queued_mutations: the raising state is only
    *implied* by the auto state B, so the raise is counted against A, B never sits out,
    and every Exception transition starts another auto round ``B -> A_enter raises ->
    Exception`` without end."""
    schema = {"A": {}, "B": {"auto": True, "add": ["A"]}}
    rec = make_recorder(mutation_names(schema), Plan(raise_=["A_enter"]), limit=2000)
    mach = am.Machine(schema, handlers=rec)
    run(mach, Op("add1", ("B",)))  # AssertionError("livelock: ...") while the bug is there
    assert mach.queue_len == 0
    assert mach.is1("Exception")


def test_require_filter_runs_again_after_the_remove_walk():
    """§5.2 steps 4-6 and R5: a state removed by the remove walk takes the states that
    require it along ("Require filter again", step 6), even when pass 2 implies nothing.
    Shrunk from test_resolver_pure / test_invariants_after_any_mutations."""
    schema = {"A": {"require": ["C"]}, "B": {"remove": ["C"]}, "C": {}}
    c = compiled(schema)
    out = resolve(c, [c.index["A"], c.index["B"], c.index["C"]], 0, 0, 0)
    assert [c.names[s] for s in out] == ["B"]

    mach = am.Machine(schema)
    mach.add1("C")
    # B removes the active C, and A requires C: A cannot be in the target (R5, R6)
    assert mach.add(["A", "B"]) == am.Result.CANCELED
    assert mach.string_all() == "(C:1) [A:0 B:0 Exception:0]"
