"""Pipes: final handlers on a source machine that mutate a target machine
(machine.md §15.3).

A pipe never blocks the source's transition: the target's mutation runs synchronously
when the target is idle, or is queued by the target when it is busy (mutations never
block in trio_am). The target may still reject it. Mutations carry the source event
(``event=e``), so the target's transition records where it came from
(``tx.mutation.source``).

Every function returns a :class:`PipeBinding`; ``binding.detach()`` removes it.

Example::

    pipes.bind(worker, supervisor, "Ready", target_on="WorkerReady")
    pipes.bind_err(worker, supervisor)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ._core._engine import Engine
from ._core._types import Event

__all__ = [
    "PipeBinding",
    "bind",
    "bind_any",
    "bind_connected",
    "bind_err",
    "bind_many",
    "bind_ready",
    "bind_start",
    "pipe_add",
    "pipe_add_flat",
    "pipe_remove",
    "pipe_remove_flat",
    "sync",
]


class PipeBinding:
    """A detachable set of handler bindings on a source machine."""

    __slots__ = ("_ids", "source")

    def __init__(self, source: Engine, ids: Iterable[str]) -> None:
        self.source = source
        self._ids = list(ids)

    @property
    def ids(self) -> list[str]:
        """The handler binding ids on the source machine."""
        return list(self._ids)

    def detach(self) -> None:
        """Remove the pipe (idempotent)."""
        current = set(self.source.handler_ids())
        for bid in self._ids:
            if bid in current:
                self.source.detach_handlers(bid)
        self._ids = []

    def __or__(self, other: PipeBinding) -> PipeBinding:
        return PipeBinding(self.source, self._ids + other._ids)


def _check(source: Engine, target: Engine, pairs: Sequence[tuple[str, str]]) -> None:
    for s, t in pairs:
        source.parse_states([s])
        target.parse_states([t])


def _bind(source: Engine, label: str, final: dict[str, Callable[[Event], Any]]) -> PipeBinding:
    bid = source.bind_handler_maps(None, final, id=f"pipe:{label}")
    return PipeBinding(source, [bid])


def _add_to(target: Engine, state: str, e: Event | None, args: Any) -> None:
    if state.startswith("Err") and target.has1("Exception") and state != "Exception":
        target.add([state, "Exception"], args, event=e)
    else:
        target.add1(state, args, event=e)


def pipe_add(
    source: Engine, target: Engine, source_state: str, target_state: str | None = None
) -> PipeBinding:
    """When ``source_state`` activates in ``source``, add ``target_state`` (default: the
    same name) to ``target`` with the same args (plus ``Exception`` for ``Err*`` states)."""
    ts = target_state or source_state
    _check(source, target, [(source_state, ts)])
    return _bind(
        source,
        f"add:{source_state}>{target.id}:{ts}",
        {f"{source_state}_state": lambda e: _add_to(target, ts, e, dict(e.args))},
    )


def pipe_add_flat(
    source: Engine, target: Engine, source_state: str, target_state: str | None = None
) -> PipeBinding:
    """Like :func:`pipe_add`, without args, skipped when the target state is already active."""
    ts = target_state or source_state

    def handler(e: Event) -> None:
        if not target.is1(ts):
            target.add1(ts, event=e)

    _check(source, target, [(source_state, ts)])
    return _bind(
        source, f"addflat:{source_state}>{target.id}:{ts}", {f"{source_state}_state": handler}
    )


def pipe_remove(
    source: Engine, target: Engine, source_state: str, target_state: str | None = None
) -> PipeBinding:
    """When ``source_state`` deactivates in ``source``, remove ``target_state`` from
    ``target`` with the same args."""
    ts = target_state or source_state
    _check(source, target, [(source_state, ts)])
    return _bind(
        source,
        f"remove:{source_state}>{target.id}:{ts}",
        {f"{source_state}_end": lambda e: target.remove1(ts, dict(e.args), event=e)},
    )


def pipe_remove_flat(
    source: Engine, target: Engine, source_state: str, target_state: str | None = None
) -> PipeBinding:
    """Like :func:`pipe_remove`, without args, skipped when the target state is inactive."""
    ts = target_state or source_state

    def handler(e: Event) -> None:
        if target.is1(ts):
            target.remove1(ts, event=e)

    _check(source, target, [(source_state, ts)])
    return _bind(
        source, f"removeflat:{source_state}>{target.id}:{ts}", {f"{source_state}_end": handler}
    )


def bind(
    source: Engine,
    target: Engine,
    state: str,
    target_on: str | None = None,
    target_off: str | None = None,
) -> PipeBinding:
    """Mirror ``state``: its activation adds ``target_on`` to the target, its
    deactivation removes ``target_off`` (both default to ``state``)."""
    on = target_on or state
    off = target_off or on
    _check(source, target, [(state, on), (state, off)])
    return _bind(
        source,
        f"bind:{state}>{target.id}:{on}/{off}",
        {
            f"{state}_state": lambda e: _add_to(target, on, e, dict(e.args)),
            f"{state}_end": lambda e: target.remove1(off, dict(e.args), event=e),
        },
    )


def bind_many(
    source: Engine,
    target: Engine,
    states: Sequence[str],
    target_states: Sequence[str] | None = None,
) -> PipeBinding:
    """:func:`bind` for each pair of ``states`` and ``target_states`` (default: same names)."""
    tss = list(target_states) if target_states is not None else list(states)
    if len(tss) != len(states):
        raise ValueError("bind_many: states and target_states differ in length")
    _check(source, target, list(zip(states, tss, strict=True)))  # nothing bound on bad names
    out = PipeBinding(source, [])
    for s, t in zip(states, tss, strict=True):
        out = out | bind(source, target, s, t, t)
    return out


def bind_ready(
    source: Engine, target: Engine, state: str = "Ready", target_state: str | None = None
) -> PipeBinding:
    """:func:`bind` for a readiness state (default ``Ready``)."""
    return bind(source, target, state, target_state, target_state)


def bind_start(
    source: Engine, target: Engine, state: str = "Start", target_state: str | None = None
) -> PipeBinding:
    """:func:`bind` for a start state (default ``Start``)."""
    return bind(source, target, state, target_state, target_state)


def bind_err(source: Engine, target: Engine, target_err: str = "Exception") -> PipeBinding:
    """When ``Exception`` activates in the source, pass its error to the target
    (``add_err``, or ``add_err_state(target_err, ...)``); nothing is removed."""
    target.parse_states([target_err])

    def handler(e: Event) -> None:
        err = e.args.get("err", source.err)
        if target_err == "Exception":
            target.add_err(err, event=e)
        else:
            target.add_err_state(target_err, err, event=e)

    return _bind(source, f"err>{target.id}:{target_err}", {"Exception_state": handler})


def bind_connected(
    source: Engine,
    target: Engine,
    connecting: str = "Connecting",
    connected: str = "Connected",
    disconnecting: str = "Disconnecting",
    disconnected: str = "Disconnected",
) -> PipeBinding:
    """Mirror the connection states of ``source`` (``CONNECTED_SCHEMA``) onto four target
    states: each source activation adds the matching target state."""
    pairs = [
        ("Connecting", connecting),
        ("Connected", connected),
        ("Disconnecting", disconnecting),
        ("Disconnected", disconnected),
    ]
    _check(source, target, pairs)
    final: dict[str, Callable[[Event], Any]] = {}
    for s, t in pairs:
        final[f"{s}_state"] = (lambda ts: lambda e: target.add1(ts, event=e))(t)
    return _bind(source, f"connected>{target.id}", final)


def bind_any(
    source: Engine,
    target: Engine,
    states: Sequence[str] | None = None,
    target_states: Sequence[str] | None = None,
) -> PipeBinding:
    """After every accepted source transition, ``set`` the target's states to the
    source's active ones (among ``states``, mapped to ``target_states``), unless they
    already match."""
    srcs = list(states) if states is not None else [s for s in source.state_names if target.has1(s)]
    tgts = list(target_states) if target_states is not None else list(srcs)
    if len(srcs) != len(tgts):
        raise ValueError("bind_any: states and target_states differ in length")
    _check(source, target, list(zip(srcs, tgts, strict=True)))
    mapping = dict(zip(srcs, tgts, strict=True))

    def handler(e: Event) -> None:
        want = [mapping[s] for s in source.active_states(srcs)]
        if sorted(target.active_states()) != sorted(want):
            target.set(want, event=e)

    return _bind(source, f"any>{target.id}", {"any_state": handler})


def sync(
    source: Engine,
    target: Engine,
    states: Sequence[str],
    target_states: Sequence[str] | None = None,
) -> PipeBinding:
    """Mirror the current values of ``states`` onto the target now (one add, one remove)
    and keep mirroring them (as :func:`bind_many`)."""
    tss = list(target_states) if target_states is not None else list(states)
    if len(tss) != len(states):
        raise ValueError("sync: states and target_states differ in length")
    _check(source, target, list(zip(states, tss, strict=True)))
    on = [t for s, t in zip(states, tss, strict=True) if source.is1(s)]
    off = [t for s, t in zip(states, tss, strict=True) if not source.is1(s)]
    if on:
        target.add(on)
    if off:
        target.remove(off)
    return bind_many(source, target, states, tss)
