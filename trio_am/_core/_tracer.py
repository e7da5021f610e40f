"""Tracers: observers with synchronous hooks (machine.md §12.3).

A tracer is any object; only the hooks it defines are registered (like trio's
``Instrument``). Subclass :class:`TracerBase` to get no-op defaults and type hints; hooks
left as the base's no-ops are not called at all. A hook that raises is logged and its
tracer detached from that machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._engine import Engine
    from ._types import Mutation, Transition

__all__ = ["HOOKS", "TracerBase", "TracerTables"]

#: Every hook a tracer may define.
HOOKS: Final = (
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
    "machine_log",
)


class TracerBase:
    """Base class for tracers: override the hooks you need.

    Set ``wants_steps = True`` to have transitions record their steps
    (``tx.steps``) for you.
    """

    wants_steps: bool = False

    def machine_init(self, mach: Engine) -> None:
        """A machine was created with this tracer in ``tracers=``."""

    def machine_dispose(self, mach: Engine) -> None:
        """The machine is being disposed."""

    def new_submachine(self, parent: Engine, child: Engine) -> None:
        """A machine with ``parent=`` this machine was created."""

    def queue_end(self, mach: Engine) -> None:
        """A queue drain ended (the machine is idle again)."""

    def schema_change(self, mach: Engine, old_schema: Any) -> None:
        """``set_schema`` replaced the schema."""

    def verify_states(self, mach: Engine) -> None:
        """``verify_states`` fixed the state order."""

    def mutation_queued(self, mach: Engine, mutation: Mutation) -> None:
        """A mutation was appended to the queue (made during a transition)."""

    def transition_init(self, tx: Transition) -> None:
        """Relations were resolved (``tx.target_states`` is known)."""

    def transition_start(self, tx: Transition) -> None:
        """Negotiation is about to start."""

    def transition_finals(self, tx: Transition) -> None:
        """The transition was applied; final handlers are about to run."""

    def transition_end(self, tx: Transition) -> None:
        """The transition ended (``tx.is_accepted`` tells how)."""

    def handler_start(self, tx: Transition, binding_id: str, name: str) -> None:
        """A handler is about to run."""

    def handler_end(self, tx: Transition, binding_id: str, name: str) -> None:
        """A handler returned (or raised)."""

    def machine_log(self, mach: Engine, level: int, text: str) -> None:
        """The machine emitted a log line (any sink, ``set_logger`` or stdlib logging)."""


class TracerTables:
    """Per-hook lists of ``(tracer, bound method)`` for the tracers that define them.

    Each hook name is also an attribute holding its list, or None when no tracer defines
    it, so hot paths can skip an unused hook with one attribute test.
    """

    __slots__ = ("_hooks", *HOOKS)

    machine_init: list[tuple[object, Any]] | None
    machine_dispose: list[tuple[object, Any]] | None
    new_submachine: list[tuple[object, Any]] | None
    queue_end: list[tuple[object, Any]] | None
    schema_change: list[tuple[object, Any]] | None
    verify_states: list[tuple[object, Any]] | None
    mutation_queued: list[tuple[object, Any]] | None
    transition_init: list[tuple[object, Any]] | None
    transition_start: list[tuple[object, Any]] | None
    transition_finals: list[tuple[object, Any]] | None
    transition_end: list[tuple[object, Any]] | None
    handler_start: list[tuple[object, Any]] | None
    handler_end: list[tuple[object, Any]] | None
    machine_log: list[tuple[object, Any]] | None

    def __init__(self, tracers: Iterable[object]) -> None:
        hooks: dict[str, list[tuple[object, Any]]] = {}
        for tracer in tracers:
            for name in HOOKS:
                fn = getattr(tracer, name, None)
                if fn is None or not callable(fn):
                    continue
                base_fn = getattr(TracerBase, name)
                if getattr(type(tracer), name, None) is base_fn:
                    continue  # an inherited no-op
                hooks.setdefault(name, []).append((tracer, fn))
        self._hooks = hooks
        for name in HOOKS:
            setattr(self, name, hooks.get(name))

    def get(self, hook: str) -> list[tuple[object, Any]]:
        """The registered ``(tracer, fn)`` pairs of ``hook``."""
        return self._hooks.get(hook, [])

    def has(self, hook: str) -> bool:
        """True when some tracer defines ``hook``."""
        return hook in self._hooks
