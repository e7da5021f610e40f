"""Value types of the core: results, mutation types, log levels, mutations,
transitions, events, machine time, and recorded steps.

The hot-path classes (:class:`Mutation`, :class:`Transition`, :class:`Event`) are plain
slotted classes with cheap constructors; everything derived from them (names, clocks) is
computed only when asked for.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = [
    "EMPTY_ARGS",
    "Clock",
    "Event",
    "LogLevel",
    "MutSource",
    "Mutation",
    "MutationType",
    "Result",
    "Step",
    "StepKind",
    "Time",
    "Transition",
    "is_active_tick",
]

#: The read-only empty mapping handlers see when no args were passed.
EMPTY_ARGS: Final[Mapping[str, Any]] = MappingProxyType({})

#: A clock: state name -> tick.
Clock = dict[str, int]


def is_active_tick(tick: int) -> bool:
    """True when ``tick`` denotes an active state (it is odd)."""
    return bool(tick & 1)


class Result(int):
    """The outcome of a mutation.

    Three values: ``Result.EXECUTED`` (0), ``Result.CANCELED`` (1) and
    ``Result.QUEUED`` (2). A queued result compares equal to ``Result.QUEUED`` and
    carries the queue tick the mutation will run at (``r.queue_tick``), the value to
    hand to ``mach.when_queue``.

    Example::

        r = mach.add1("Foo")
        if r == am.Result.QUEUED:
            await mach.when_queue(r.queue_tick)
    """

    queue_tick: int
    EXECUTED: Final[Result]  # type: ignore[misc]
    CANCELED: Final[Result]  # type: ignore[misc]
    QUEUED: Final[Result]  # type: ignore[misc]

    def __new__(cls, value: int, queue_tick: int = 0) -> Result:
        if value not in (0, 1, 2):
            raise ValueError(f"a Result is 0, 1 or 2, not {value!r}")
        self = super().__new__(cls, value)
        self.queue_tick = queue_tick
        return self

    @property
    def is_queued(self) -> bool:
        """True for a queued result."""
        return int(self) == 2

    @property
    def name(self) -> str:
        """``EXECUTED``, ``CANCELED`` or ``QUEUED``."""
        return ("EXECUTED", "CANCELED", "QUEUED")[int(self)]

    def __str__(self) -> str:
        return ("executed", "canceled", "queued")[int(self)]

    def __repr__(self) -> str:
        if int(self) == 2 and self.queue_tick:
            return f"Result.QUEUED(queue_tick={self.queue_tick})"
        return f"Result.{self.name}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Result, (int(self), self.queue_tick))


Result.EXECUTED = Result(0)  # type: ignore[misc]
Result.CANCELED = Result(1)  # type: ignore[misc]
Result.QUEUED = Result(2)  # type: ignore[misc]


class MutationType(enum.IntEnum):
    """The kind of a mutation; ``str()`` gives ``add``, ``remove``, ``set``, ``eval``."""

    ADD = 0
    REMOVE = 1
    SET = 2
    EVAL = 3

    def __str__(self) -> str:
        return self.name.lower()


ADD: Final = MutationType.ADD
REMOVE: Final = MutationType.REMOVE
SET: Final = MutationType.SET
EVAL: Final = MutationType.EVAL


class LogLevel(enum.IntEnum):
    """How much a machine logs; each level includes the ones below it."""

    #: Nothing (the default).
    NOTHING = 0
    #: Messages from ``mach.log()``.
    EXTERNAL = 1
    #: State changes, errors, breakpoints.
    CHANGES = 2
    #: Mutations, queueing, handler calls, vetoes, relations.
    OPS = 3
    #: Auto mutations, rejections, handler timeouts.
    DECISIONS = 4
    #: Handler ends, eval and disposal steps.
    EVERYTHING = 5


class StepKind(enum.IntFlag):
    """Kinds of recorded transition steps (the debugger wire codes)."""

    RELATION = 1
    HANDLER = 2
    ACTIVATE = 4
    DEACTIVATE = 8
    DEACTIVATE_PASSIVE = 16
    CALLED = 32
    CANCEL = 64


#: A recorded step: ``(kind, from_idx, to_idx, rel, flags, name, dur_ns)``.
#: ``rel``: 0 after, 1 add, 2 require, 3 remove, -1 none. ``flags``: 1 final, 2 self, 4 enter.
Step = tuple[int, int, int, int, int, str | None, int]


class MutSource:
    """Where a mutation came from: another machine's transition.

    Attributes:
        mach_id: the source machine's id.
        tx_id: the source transition's id.
        mach_time: the source machine's time (sum of ticks) then.
        session_id: for a mutation that came over aRPC, the id of the server session
            it came through; otherwise None.
    """

    __slots__ = ("mach_id", "mach_time", "session_id", "tx_id")

    def __init__(
        self, mach_id: str, tx_id: str, mach_time: int, session_id: str | None = None
    ) -> None:
        self.mach_id = mach_id
        self.tx_id = tx_id
        self.mach_time = mach_time
        self.session_id = session_id

    def __repr__(self) -> str:
        sid = f", session_id={self.session_id!r}" if self.session_id else ""
        return f"MutSource({self.mach_id!r}, {self.tx_id!r}, {self.mach_time}{sid})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MutSource) and (self.mach_id, self.tx_id, self.mach_time) == (
            other.mach_id,
            other.tx_id,
            other.mach_time,
        )

    def __hash__(self) -> int:
        return hash((self.mach_id, self.tx_id, self.mach_time))


class Mutation:
    """A request to change the active set: a type, called states and args.

    Attributes:
        type: a :class:`MutationType`.
        args: the args mapping (empty when none were passed).
        is_auto: an auto mutation (prepended after a tick-changing transition).
        is_check: a dry run (``can_add`` / ``can_remove``).
        source: a :class:`MutSource` when another machine caused it, else None.
        queue_tick: the queue tick it runs at (0 for prepended mutations).
    """

    __slots__ = ("__dict__", "_called", "_mask", "_names", "args", "queue_tick", "type")

    # rarely set: class-level defaults, instance values only when given
    is_auto: bool = False
    is_check: bool = False
    prepended: bool = False
    source: MutSource | None = None
    eval_fn: Callable[[], Any] | None = None

    def __init__(
        self,
        names: tuple[str, ...],
        mtype: MutationType,
        called: tuple[int, ...],
        mask: int,
        args: Mapping[str, Any] | None,
        source: MutSource | None = None,
        *,
        is_auto: bool = False,
        is_check: bool = False,
        prepended: bool = False,
    ) -> None:
        self._names = names
        self.type = mtype
        self._called = called
        self._mask = mask
        # handlers get a read-only view of a copy: they cannot change the caller's dict
        self.args: Mapping[str, Any] = MappingProxyType(dict(args)) if args else EMPTY_ARGS
        self.queue_tick = 0
        if source is not None:
            self.source = source
        if is_auto:
            self.is_auto = True
        if is_check:
            self.is_check = True
        if prepended:
            self.prepended = True

    @property
    def called(self) -> list[str]:
        """The called state names, in call order (duplicates collapsed)."""
        names = self._names
        return [names[i] for i in self._called]

    def __repr__(self) -> str:
        flags = "".join(
            f" {f}" for f, on in (("auto", self.is_auto), ("check", self.is_check)) if on
        )
        return f"<Mutation {self.type} {self.called}{flags}>"


class Time(tuple[int, ...]):
    """Machine time: a tuple of ticks, in the machine's state order (or the order
    asked for).

    Also offers the checks of Go's ``Time``: :meth:`is1`, :meth:`sum`, :meth:`active_indexes`,
    :meth:`after`, :meth:`before`, :meth:`diff_since`.
    """

    __slots__ = ()

    def is1(self, idx: int) -> bool:
        """True when the state at position ``idx`` is active."""
        return bool(self[idx] & 1)

    def is_all(self, idxs: Iterable[int]) -> bool:
        """True when every position in ``idxs`` is active."""
        return all(self[i] & 1 for i in idxs)

    def any1(self, idxs: Iterable[int]) -> bool:
        """True when any position in ``idxs`` is active."""
        return any(self[i] & 1 for i in idxs)

    def active_indexes(self) -> list[int]:
        """Positions of the active states."""
        return [i for i, t in enumerate(self) if t & 1]

    def sum(self) -> int:
        """The scalar machine time (sum of all ticks)."""
        return sum(self)

    def after(self, other: Iterable[int], or_equal: bool = False) -> bool:
        """True when every tick is greater than (or equal to) ``other``'s."""
        if or_equal:
            return all(a >= b for a, b in zip(self, other, strict=True))
        return all(a > b for a, b in zip(self, other, strict=True))

    def before(self, other: Iterable[int], or_equal: bool = False) -> bool:
        """True when every tick is smaller than (or equal to) ``other``'s."""
        if or_equal:
            return all(a <= b for a, b in zip(self, other, strict=True))
        return all(a < b for a, b in zip(self, other, strict=True))

    def diff_since(self, before: Iterable[int]) -> Time:
        """Tick differences since ``before`` (same layout)."""
        return Time(a - b for a, b in zip(self, before, strict=True))

    def __repr__(self) -> str:
        return f"Time({tuple(self)!r})"

    def __str__(self) -> str:
        return " ".join(str(t) for t in self)


_NONE: list[int] = []  # shared placeholder, never mutated


class Transition:
    """The processing of one mutation: resolution, negotiation, apply, finals.

    Available to handlers as ``e.transition`` and to tracers. Attributes that are lists
    of names are computed on access.

    Attributes:
        machine: the machine.
        mutation: the :class:`Mutation`.
        is_accepted: False once a relation, a veto or a raise canceled it.
        is_completed: True once it finished (applied or not).
        steps: recorded :data:`Step` tuples (only while a tracer asks for them).
        log: log lines emitted during the transition, as ``(level, text)``.
        pre_log: log lines emitted between the previous transition and this one.
    """

    __slots__ = (
        "__dict__",
        "_after",
        "_before",
        "_enters",
        "_exits",
        "_seq",
        "_target",
        "is_accepted",
        "is_completed",
        "machine",
        "mutation",
    )

    # rarely set: class-level defaults, instance values only when recorded
    steps: list[Step] | None = None
    log: list[tuple[int, str]] | None = None
    pre_log: list[tuple[int, str]] | None = None
    queue_len: int = 0
    t0: int = 0
    t1: int = 0

    def __init__(self, machine: Engine, mutation: Mutation, seq: int, before: list[int]) -> None:
        self.machine = machine
        self.mutation = mutation
        self._seq = seq
        self._before = before
        self._after: list[int] | None = None
        self._target: list[int] = _NONE
        self._enters = self._exits = _NONE
        self.is_accepted = True
        self.is_completed = False

    # identity ---------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """A machine-unique id: ``<machine id>:<sequence number>``."""
        return f"{self.machine.id}:{self._seq}"

    @property
    def seq(self) -> int:
        """The machine-local sequence number of this transition (1-based)."""
        return self._seq

    # mutation views -----------------------------------------------------------------------
    @property
    def type(self) -> MutationType:
        """The mutation type."""
        return self.mutation.type

    @property
    def args(self) -> Mapping[str, Any]:
        """The mutation's args."""
        return self.mutation.args

    @property
    def is_auto(self) -> bool:
        """True for an auto transition."""
        return self.mutation.is_auto

    @property
    def is_check(self) -> bool:
        """True for a dry run."""
        return self.mutation.is_check

    def called_states(self) -> list[str]:
        """The called state names."""
        return self.mutation.called

    # resolution views ---------------------------------------------------------------------
    def _names(self, idxs: Iterable[int]) -> list[str]:
        names = self.machine._c.names
        return [names[i] for i in idxs]

    @property
    def target_states(self) -> list[str]:
        """The target set (after relations), in handler order."""
        return self._names(self._target)

    @property
    def enters(self) -> list[str]:
        """States being activated (or re-activated), in handler order."""
        return self._names(self._enters)

    @property
    def exits(self) -> list[str]:
        """States being deactivated, in handler order."""
        return self._names(self._exits)

    def states_before(self) -> list[str]:
        """The states active before the transition, in machine order."""
        names = self.machine._c.names
        return [names[i] for i, t in enumerate(self._before) if t & 1]

    @property
    def time_before(self) -> Time:
        """Machine time before the transition."""
        return Time(self._before)

    @property
    def time_after(self) -> Time | None:
        """Machine time after apply (None during negotiation and when canceled early)."""
        return Time(self._after) if self._after is not None else None

    @property
    def clock_before(self) -> Clock:
        """Clock before the transition."""
        return dict(zip(self.machine._c.names, self._before, strict=True))

    @property
    def clock_after(self) -> Clock | None:
        """Clock after apply (final handlers see it; None before apply)."""
        if self._after is None:
            return None
        return dict(zip(self.machine._c.names, self._after, strict=True))

    def __repr__(self) -> str:
        state = "accepted" if self.is_accepted else "canceled"
        return f"<Transition {self.id} {self.mutation.type} {self.mutation.called} {state}>"


class Event:
    """What a handler receives.

    Attributes:
        machine: the machine.
        name: the handler name, e.g. ``"Foo_enter"``.
        transition: the :class:`Transition`.
        args: read-only mapping of the mutation's args.
    """

    __slots__ = ("_state", "args", "machine", "name", "transition")

    def __init__(
        self,
        machine: Engine,
        name: str,
        transition: Transition,
        args: Mapping[str, Any],
        state: int,
    ) -> None:
        self.machine = machine
        self.name = name
        self.transition = transition
        self.args = args
        self._state = state

    @property
    def is_check(self) -> bool:
        """True during a dry run (``can_add`` / ``can_remove``): stay quiet."""
        return self.transition.mutation.is_check

    @property
    def mutation(self) -> Mutation:
        """The transition's mutation."""
        return self.transition.mutation

    def is_valid(self) -> bool:
        """False once the transition ended, was canceled, or the machine was disposed."""
        tx = self.transition
        return (
            tx.is_accepted
            and not tx.is_completed
            and self.machine._tx is tx
            and not self.machine._disposed
        )

    def fork(self, async_fn: Callable[..., Any], *args: Any) -> None:
        """Start ``async_fn(*args)`` bound to the new activation of this handler's state.

        Allowed in ``Foo_state`` handlers only: the work runs in the machine's nursery
        inside a cancel scope that is cancelled when this activation of ``Foo`` ends.

        Raises:
            Error: called from any other handler (use ``mach.fork(..., state=...)``).
        """
        from .._errors import Error

        if self._state < 0 or not self.name.endswith("_state"):
            raise Error(
                f"e.fork() is only allowed in <State>_state handlers, not in {self.name}; "
                "use mach.fork(fn, state=...) instead",
                machine_id=self.machine.id,
            )
        self.machine.fork(async_fn, *args, state=self.machine._c.names[self._state])

    def __repr__(self) -> str:
        return f"<Event {self.name} tx={self.transition.id}>"
