"""The transition path (machine.md §5 to §6): resolve, accept, negotiate, apply, final
handlers, rollback, auto round, subscription evaluation.

Functions over an :class:`~._engine.Engine` (``m``) rather than methods, so this hot
loop reads top to bottom in one file; the engine calls :func:`process` for each
mutation it takes from the queue.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ._handlers import Entry, Tables
from ._resolver import resolve, sort_states
from ._types import ADD, EVAL, REMOVE, Event, LogLevel, Mutation, Result, Step, Time, Transition

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["process"]

_logger: Final = logging.getLogger("trio_am.machine")

_EXECUTED: Final = Result.EXECUTED
_CANCELED: Final = Result.CANCELED
_OK, _VETO, _RAISED = 0, 1, 2
_HEALTH: Final = frozenset({"Healthcheck", "Heartbeat"})


def _popcount(m: int) -> int:
    return m.bit_count()


def expire_ctxs(m: Engine, states: list[int]) -> None:
    """Expire the state contexts of states whose tick just changed (machine.md §9.3)."""
    ctxs = m._ctxs
    if ctxs:
        for s in states:
            ctx = ctxs.pop(s, None)
            if ctx is not None:
                ctx._expire()


def _changed(mask: int, order: list[int]) -> list[int]:
    """The states of ``mask``, in the order of ``order`` (cheap for 0 or 1 state)."""
    if not mask:
        return []
    if not mask & (mask - 1):
        return [mask.bit_length() - 1]
    return [s for s in order if (mask >> s) & 1]


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_VETO_MARK: Final = _Marker("VETO")
_RAISED_MARK: Final = _Marker("RAISED")


def process(m: Engine, mut: Mutation) -> Result:
    if mut.type is EVAL:
        fn = mut.eval_fn
        if fn is not None:
            try:
                fn()
            except Exception as exc:
                m._log(LogLevel.CHANGES, f"[error] eval: {exc}")
                m._internal_error(exc)
        return _EXECUTED
    c = m._c
    m._seq = seq = m._seq + 1
    # ticks are copy-on-write: m._ticks is replaced, never changed in place, so the
    # transition can keep the list it started with as its "before" time
    tx = Transition(m, mut, seq, m._ticks)
    tr = m._tr
    if tr is not None:
        tx.t0 = time.time_ns()
        tx.queue_len = len(m._queue)
        if m._pre_log:
            tx.pre_log = m._pre_log
            m._pre_log = None
    steps: list[Step] | None = None
    if m._want_steps:
        tx.steps = steps = []
    mtype = mut.type
    called = mut._called
    cmask = mut._mask
    active = m._active
    alist = m._active_list
    m._tx = tx
    if steps is not None:
        for s in called:
            steps.append((32, -1, s, -1, 0, None, 0))

    # 1. resolve: the base list (§5.1), then relations unless the schema has none
    if mtype is ADD:
        base = list(called)
        if active & ~cmask:
            for s in alist:
                if not (cmask >> s) & 1:
                    base.append(s)
        reactivate = cmask & c.multi_mask
    elif mtype is REMOVE:
        base = [s for s in alist if not (cmask >> s) & 1] if active & ~cmask else []
        reactivate = 0
    else:
        base = list(called)
        reactivate = cmask & c.multi_mask
    if c.plain:
        target = base
        tmask = active | cmask if mtype is ADD else (active & ~cmask if mtype is REMOVE else cmask)
    else:
        target = resolve(c, base, active, reactivate, cmask if mtype is REMOVE else 0, steps)
        tmask = 0
        for s in target:
            tmask |= 1 << s
    tx._target = target

    # 2. accept (relations)
    if mtype != REMOVE:
        missing = cmask & ~tmask
        if missing:
            accept = False
            if mut.is_auto:
                accept = missing != cmask
                if accept:
                    called = tuple(s for s in called if (tmask >> s) & 1)
                    cmask &= tmask
            elif mut.is_check and cmask & c.multi_mask:
                accept = True
            if not accept:
                if m._log_level >= 3:
                    m._log(
                        LogLevel.OPS,
                        f"[cancel:reject] {m._names_str(s for s in mut._called if (missing >> s) & 1)}",
                    )
                if steps is not None:
                    steps.append((64, -1, -1, -1, 0, None, 0))
                if tr is not None:
                    if tr.transition_init:
                        m._trace("transition_init", tx)
                    if tr.transition_start:
                        m._trace("transition_start", tx)
                return end_canceled(m, tx)

    exits = _changed(active & ~tmask, alist)
    if len(exits) > 1:
        exits = sort_states(c, exits)
    enters = _changed((tmask & ~active) | (reactivate & tmask), target)
    tx._exits = exits
    tx._enters = enters
    if tr is not None:
        if tr.transition_init:
            m._trace("transition_init", tx)
        if tr.transition_start:
            m._trace("transition_start", tx)
    if m._log_level >= 3:
        m._log(
            LogLevel.OPS,
            f"[{'add:auto' if mut.is_auto else mtype}] {m._names_str(mut._called)}{m._args_str(mut.args)}",
        )

    # 3. negotiate
    tables = m._tables
    args = mut.args
    if tables is not None and tables.has_negotiation:
        verdict = negotiate(m, tx, tables, exits, enters, target, tmask, alist, active, mtype, args)
        if verdict is not None:
            if verdict is _RAISED_MARK or verdict is _VETO_MARK:
                return end_canceled(m, tx)
            # auto transition with rejected states: resolve again
            rejected: int = verdict
            # (like Go, the transition goes on while its target is not empty, even when
            # every called state was rejected; it then changes nothing)
            called = tuple(s for s in called if not (rejected >> s) & 1)
            cmask = 0
            for s in called:
                cmask |= 1 << s
            base = list(called) + [s for s in alist if not (cmask >> s) & 1]
            target = resolve(c, base, active, 0, 0, steps)
            tmask = 0
            for s in target:
                tmask |= 1 << s
            exits = _changed(active & ~tmask, alist)
            if len(exits) > 1:
                exits = sort_states(c, exits)
            enters = _changed(tmask & ~active, target)
            tx._target = target
            tx._exits = exits
            tx._enters = enters

    if mut.is_check:
        tx.is_completed = True
        m._tx = None
        if tr is not None and tr.transition_end:
            m._trace("transition_end", tx)
        return _EXECUTED

    # 4. apply
    ticks = m._ticks.copy()
    for s in exits:
        ticks[s] += 1
    for s in enters:
        ticks[s] += 2 if (active >> s) & 1 else 1
    m._ticks = tx._after = ticks
    m._active = tmask
    m._active_list = target
    if m._ctxs:
        expire_ctxs(m, exits)
        expire_ctxs(m, enters)
    if steps is not None:
        for s in exits:
            steps.append((8, -1, s, -1, 0, None, 0))
        for s in enters:
            steps.append((4, -1, s, -1, 0, None, 0))
    if m._log_level >= 2 and (exits or enters):
        names = c.names
        parts = [f"+{names[s]}" for s in enters] + [f"-{names[s]}" for s in exits]
        m._log(
            LogLevel.CHANGES,
            f"[{'auto_' if mut.is_auto else 'state'}] {' '.join(parts)}{m._args_str(args)}",
        )
    if tr is not None and tr.transition_finals:
        m._trace("transition_finals", tx)

    # 5. final handlers; when_args waiters match where a <State>_state handler would run
    reg = m._reg
    match = reg if reg is not None and reg.args else None
    raised = False
    if match is not None or (tables is not None and tables.has_final):
        if tables is not None:
            for s in exits:
                h = tables.end[s]
                if h is not None and call(m, tx, h, s, args, True):
                    rollback(m, tx, enters, 0)
                    raised = True
                    break
        if not raised:
            for k, s in enumerate(enters):
                if tables is not None:
                    h = tables.state[s]
                    if h is not None and call(m, tx, h, s, args, True):
                        rollback(m, tx, enters, k)
                        raised = True
                        break
                if match is not None:
                    match.match_args(s, args)
            else:
                if tables is not None and tables.any_state:
                    raised = bool(call(m, tx, tables.any_state, -1, args, True))

    # 6. result
    if raised:
        result = result_after_rollback(m, tx, mtype, cmask, target)
    elif mut.is_auto:
        result = _EXECUTED if _popcount(tmask) > _popcount(active) else _CANCELED
    else:
        result = _EXECUTED
    tx.is_accepted = result is _EXECUTED or (mut.is_auto and not raised)

    # 7. auto round
    changed_any = bool(exits or enters) or raised
    if (
        c.auto_mask
        and not raised
        and changed_any
        and not mut.is_auto
        and not m._disposing
        and not (mtype == ADD and len(mut._called) == 1 and c.names[mut._called[0]] in _HEALTH)
    ):
        auto_round(
            m,
        )

    # 8. subscriptions
    if reg is not None and reg.count and changed_any:
        after = m._ticks
        if raised:
            before = tx._before
            changed = [i for i in range(c.n) if after[i] != before[i]]
        else:
            changed = exits + enters
        if changed:
            reg.evaluate(changed, m._active, after, m.clock)

    tx.is_completed = True
    m._tx = None
    if tr is not None:
        tx.t1 = time.time_ns()
        if tr.transition_end:
            m._trace("transition_end", tx)
    if m._on_change:
        call_on_change(m, tx)
    return result


def end_canceled(m: Engine, tx: Transition) -> Result:
    tx.is_accepted = False
    tx.is_completed = True
    m._tx = None
    if m._tr is not None:
        tx.t1 = time.time_ns()
        if m._tr.transition_end:
            m._trace("transition_end", tx)
    if m._on_change and not tx.mutation.is_check:
        call_on_change(m, tx)
    return _CANCELED


def call_on_change(m: Engine, tx: Transition) -> None:
    before = Time(tx._before)
    after = Time(m._ticks)
    for fn in list(m._on_change or ()):
        try:
            fn(m, before, after)
        except Exception as exc:
            m._internal_error(exc)
            _logger.exception("on_change callback raised", extra={"machine_id": m._id})


def auto_round(m: Engine) -> None:
    c = m._c
    active = m._active
    blocked = 0
    for s in m._active_list:
        blocked |= c.remove_mask[s]
    cand = c.auto_mask & ~active & ~blocked
    if not cand:
        return
    sit_out = m._auto_raised
    called = tuple(
        i
        for i in range(c.n)
        if (cand >> i) & 1 and not (sit_out is not None and sit_out.get(i, 0) >= 2)
    )
    if not called:
        return
    mask = 0
    for i in called:
        mask |= 1 << i
    if m._log_level >= 4:
        m._log(LogLevel.DECISIONS, f"[auto] {m._names_str(called)}")
    mut = Mutation(c.names, ADD, called, mask, None, is_auto=True, prepended=True)
    m._queue.insert(0, mut)


# negotiation --------------------------------------------------------------------
def call(
    m: Engine,
    tx: Transition,
    entries: list[Entry],
    state: int,
    args: Mapping[str, Any],
    final: bool = False,
) -> int:
    """Call the handlers of one name in binding order. Returns ``_OK``, ``_VETO``
    (negotiation only: ``False`` returned, or ``handler_timeout`` overrun) or
    ``_RAISED`` (the recovery was scheduled)."""
    tr = m._tr
    timeout = m._handler_timeout
    if tr is None and timeout is None and m._log_level < 3:
        # the common case: nothing to trace, time or log (no tracer: no steps either)
        for _bid, fn, name in entries:
            try:
                ret = fn(Event(m, name, tx, args, state))
            except Exception as exc:
                handler_raised(m, tx, exc, name, state)
                return _RAISED
            if ret is False and not final:
                return _VETO
        return _OK
    steps = tx.steps
    for bid, fn, name in entries:
        if m._log_level >= 3:
            m._log(LogLevel.OPS, f"[handler] {name}")
        if tr is not None and tr.handler_start:
            m._trace("handler_start", tx, bid, name)
        if tr is not None or timeout is not None:
            t0 = time.perf_counter_ns()
        try:
            ret = fn(Event(m, name, tx, args, state))
        except Exception as exc:
            if tr is not None and tr.handler_end:
                m._trace("handler_end", tx, bid, name)
            if steps is not None:
                steps.append((2, state, state, -1, 1 if final else 0, name, 0))
            handler_raised(m, tx, exc, name, state)
            return _RAISED
        if tr is not None or timeout is not None:
            dur = time.perf_counter_ns() - t0
            if tr is not None:
                if tr.handler_end:
                    m._trace("handler_end", tx, bid, name)
                if steps is not None:
                    steps.append((2, state, state, -1, 1 if final else 0, name, dur))
            if (
                timeout is not None
                and dur > timeout * 1e9
                and handler_timed_out(m, tx, name, state, dur, final)
            ):
                return _VETO
        if ret is False and not final:
            if m._log_level >= 3:
                m._log(LogLevel.OPS, f"[cancel] ({m._names_str(tx._target)}) by {name}")
            if steps is not None:
                steps.append((64, state, state, -1, 0, name, 0))
            return _VETO
    return _OK


def handler_timed_out(
    m: Engine, tx: Transition, name: str, state: int, dur_ns: int, final: bool
) -> bool:
    """Report a handler that overran ``handler_timeout``; True when it vetoes."""
    from .._errors import HandlerTimeoutError

    err = HandlerTimeoutError(
        f"handler {name} ran {dur_ns / 1e6:.1f} ms (handler_timeout {m._handler_timeout * 1000:.1f} ms)",  # type: ignore[operator]
        machine_id=m._id,
        state=m._c.names[state] if state >= 0 else None,
        handler=name,
        duration=dur_ns / 1e9,
    )
    m._internal_error(err)
    if m._log_level >= 4:
        m._log(LogLevel.DECISIONS, f"[timeout] {name} ({dur_ns / 1e6:.1f} ms)")
    if m._timeouts_to_exception:
        m.add_err(err)
    return not final


def negotiate(
    m: Engine,
    tx: Transition,
    t: Tables,
    exits: list[int],
    enters: list[int],
    target: list[int],
    tmask: int,
    alist: list[int],
    active: int,
    mtype: int,
    args: Mapping[str, Any],
) -> Any:
    """Run the negotiation phases. Returns None (accepted), a veto/raise marker, or
    for an auto transition whose auto states were vetoed, the mask of those states."""
    is_auto = tx.mutation.is_auto
    auto_mask = m._c.auto_mask
    rejected = 0

    def veto(s: int, code: int) -> bool:
        # True: cancel the whole transition
        nonlocal rejected, tmask
        if code == _RAISED or not is_auto or s < 0 or not (auto_mask >> s) & 1:
            return True
        if not (tmask >> s) & 1:
            # an exiting auto state (or one already rejected): the veto is ignored and
            # the phases go on, as in Go (machine.md §5.6, auto transitions)
            return False
        rejected |= 1 << s
        tmask &= ~(1 << s)
        return not tmask

    for s in exits:
        h = t.exit[s]
        if h is not None:
            code = call(m, tx, h, s, args)
            if code and veto(s, code):
                return _RAISED_MARK if code == _RAISED else _VETO_MARK
    for s in enters:
        h = t.enter[s]
        if h is not None and (tmask >> s) & 1:
            code = call(m, tx, h, s, args)
            if code and veto(s, code):
                return _RAISED_MARK if code == _RAISED else _VETO_MARK
    if mtype != REMOVE:
        for s in target:
            h = t.self_[s]
            if h is not None and (active >> s) & 1 and (tmask >> s) & 1:
                code = call(m, tx, h, s, args)
                if code and veto(s, code):
                    return _RAISED_MARK if code == _RAISED else _VETO_MARK
    if t.pairs:
        # X: the states active before, in their order (Go's StatesBefore); Y: target order
        pos_a = {s: k for k, s in enumerate(alist)}
        pos_t = {s: k for k, s in enumerate(target)}
        matches = [
            (pos_a[x], pos_t[y], x, y, entries)
            for (x, y), entries in t.pairs.items()
            if x != y and (active >> x) & 1 and (tmask >> y) & 1
        ]
        if len(matches) > 1:
            matches.sort(key=lambda m: (m[0], m[1]))
        # (filtered by the target at the start of this phase: like Go, a state rejected
        # during it still gets its remaining pairs)
        for _, _, _x, y, entries in matches:
            code = call(m, tx, entries, y, args)
            if code and veto(y, code):
                return _RAISED_MARK if code == _RAISED else _VETO_MARK
    if t.any_enter:
        code = call(m, tx, t.any_enter, -1, args)
        if code:
            return _RAISED_MARK if code == _RAISED else _VETO_MARK
    return rejected or None


# finals -------------------------------------------------------------------------
def rollback(m: Engine, tx: Transition, enters: list[int], start: int) -> None:
    """Take the states entered from position ``start`` on out of the active set, then
    deactivate whatever lost a requirement (so relations still hold)."""
    c = m._c
    ticks = m._ticks.copy()
    active = m._active
    changed: list[int] = []
    for s in enters[start:]:
        if (active >> s) & 1:
            ticks[s] += 1
            active &= ~(1 << s)
            changed.append(s)
    req = c.require_mask
    while True:
        lost = [s for s in range(c.n) if (active >> s) & 1 and req[s] & ~active]
        if not lost:
            break
        for s in lost:
            ticks[s] += 1
            active &= ~(1 << s)
            changed.append(s)
    m._ticks = ticks
    m._active = active
    m._active_list = [s for s in m._active_list if (active >> s) & 1]
    tx._after = ticks
    if changed:
        if m._log_level >= 2:
            m._log(LogLevel.CHANGES, f"[recover] -{' -'.join(c.names[s] for s in changed)}")
        expire_ctxs(m, changed)


def result_after_rollback(
    m: Engine, tx: Transition, mtype: int, cmask: int, target: list[int]
) -> Result:
    active = m._active
    if mtype == REMOVE:
        return _EXECUTED if not (active & cmask) else _CANCELED
    tmask = 0
    for s in target:
        tmask |= 1 << s
    return _EXECUTED if (active & tmask) == tmask else _CANCELED


def handler_raised(m: Engine, tx: Transition, exc: Exception, name: str, state: int) -> None:
    """A handler raised: record the error and prepend an Exception mutation."""
    mut = tx.mutation
    if mut.is_auto:
        # count the raise against the auto states this round called (the raising handler
        # may belong to a state they only imply): after two, they sit out further auto
        # rounds of this drain, so a raising handler cannot loop the machine (§16)
        counts = m._auto_raised
        if counts is None:
            counts = m._auto_raised = {}
        for s in mut._called:
            counts[s] = counts.get(s, 0) + 1
    if not m._panic_to_exception:
        raise exc
    m._record_err(exc)
    if m._log_level >= 2:
        m._log(
            LogLevel.CHANGES,
            f"[error:{mut.type}] {m._names_str(mut._called)} ({exc}) in {name}",
        )
    e = m._c.exception
    if e < 0 or (mut._mask >> e) & 1:
        # the transition called Exception itself: no second Exception mutation
        m._internal_error(exc)
        return
    args = {
        "err": exc,
        "err_trace": "".join(traceback.format_exception(exc)),
        "panic": {
            "handler": name,
            "called_states": mut.called,
            "states_before": tx.states_before(),
            "transition": tx.id,
        },
    }
    m._queue.insert(0, Mutation(m._c.names, ADD, (e,), 1 << e, args, prepended=True))
