"""Mirror transitions: a clock that arrives from elsewhere (arpc.md A6, B6, B14).

A network machine does not resolve its own transitions: the server sends ticks, and
:func:`apply_clock` turns each change into one synthetic ``set`` transition on the
mirror. It runs tracers, then final handlers only (``Foo_end`` for states that ended,
``Foo_state`` for states that began or re-began, ``any_state``), then expires state
contexts and resolves subscriptions, like a local transition would. Negotiation has
already happened on the source, so there is none here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from ._handlers import Entry
from ._transition import call_on_change, expire_ctxs
from ._types import SET, Event, LogLevel, Mutation, Transition

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["apply_clock"]

_logger: Final = logging.getLogger("trio_am.machine")


def apply_clock(
    m: Engine,
    ticks: Sequence[int],
    inferred: int,
    queue_tick: int,
    machine_tick: int,
) -> Transition | None:
    """Move mirror ``m`` to ``ticks`` (index order); ``inferred`` is a bitmask of states
    counted active without being synced. Returns the synthetic transition, or None when
    nothing but the queue or machine tick changed.

    Final handlers that raise are logged and kept in ``m.internal_errors``; they never
    stop the mirror from applying the clock (the source already accepted it).
    """
    n = m._c.n
    old_ticks = m._ticks
    new_ticks = list(ticks)
    old_active = m._active
    active = inferred
    for i in range(n):
        if new_ticks[i] & 1:
            active |= 1 << i
    changed = [i for i in range(n) if new_ticks[i] != old_ticks[i]]
    flipped = old_active ^ active
    qt_changed = queue_tick != m._queue_tick
    m._queue_tick = queue_tick
    m._machine_tick = machine_tick
    reg = m._reg
    if not changed and not flipped:
        if qt_changed and reg is not None and reg.queue:
            reg.check_queue(queue_tick)
        return None

    order = [i for i in range(n) if (active >> i) & 1]
    exits = [i for i in m._active_list if not (active >> i) & 1]
    # began, or ended and began again between two clocks (tick grew by 2 or more)
    enters = [i for i in order if not (old_active >> i) & 1 or new_ticks[i] != old_ticks[i]]
    m._seq = seq = m._seq + 1
    mut = Mutation(m._c.names, SET, tuple(enters), sum(1 << i for i in enters), None, None)
    tx = Transition(m, mut, seq, old_ticks)
    tx._target = order
    tx._exits = exits
    tx._enters = enters
    tr = m._tr
    if tr is not None:
        tx.t0 = time.time_ns()
        m._trace("transition_init", tx)
        m._trace("transition_start", tx)
    busy = m._busy
    m._busy = True
    m._tx = tx
    try:
        m._ticks = tx._after = new_ticks
        m._active = active
        m._active_list = order
        if m._ctxs:
            expire_ctxs(m, changed)
        if m._log_level >= LogLevel.CHANGES and (exits or enters):
            names = m._c.names
            parts = [f"+{names[s]}" for s in enters] + [f"-{names[s]}" for s in exits]
            m._log(LogLevel.CHANGES, f"[state:mirror] {' '.join(parts)}")
        if tr is not None:
            m._trace("transition_finals", tx)
        tables = m._tables
        if tables is not None and tables.has_final:
            for s in exits:
                _call(m, tx, tables.end[s], s)
            for s in enters:
                _call(m, tx, tables.state[s], s)
            if tables.any_state:
                _call(m, tx, tables.any_state, -1)
        tx.is_accepted = True
        tx.is_completed = True
        if reg is not None and reg.count:
            if flipped:
                changed = sorted(set(changed) | {i for i in range(n) if (flipped >> i) & 1})
            reg.evaluate(changed, active, new_ticks, m.clock)
            if reg.queue:
                reg.check_queue(queue_tick)
    finally:
        m._tx = None
        m._busy = busy
    if tr is not None:
        tx.t1 = time.time_ns()
        m._trace("transition_end", tx)
    if m._on_change:
        call_on_change(m, tx)
    return tx


def _call(m: Engine, tx: Transition, entries: list[Entry] | None, s: int) -> None:
    if not entries:
        return
    args = tx.mutation.args
    for bid, fn, name in entries:
        if m._tr is not None:
            m._trace("handler_start", tx, bid, name)
        try:
            fn(Event(m, name, tx, args, s))
        except Exception as exc:
            m._record_err(exc)
            m._internal_error(exc)
            _logger.warning(
                "[%s] mirror handler %s raised: %r", m._id, name, exc, extra={"machine_id": m._id}
            )
        if m._tr is not None:
            m._trace("handler_end", tx, bid, name)
