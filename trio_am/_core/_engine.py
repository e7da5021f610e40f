"""The machine engine: clocks, queue, transitions, checks, the Exception state.

Sans-I/O and synchronous: a mutation made while the machine is idle runs at once and
drains the queue before returning; one made while a transition runs (from a handler, a
tracer, a callback) is queued and returns ``Result.QUEUED`` with its queue tick.

The Trio layer (``trio_am._runtime``) subclasses :class:`Engine` to add nurseries, cancel
scopes, forks and awaitable subscriptions.
"""

from __future__ import annotations

import logging
import os
import secrets
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Final

from .._errors import (
    Error,
    HandlerBindError,
    MachineDisposedError,
    NestedEvalError,
    SchemaError,
    StateUnknownError,
    SubscriptionClosed,
)
from . import _transition
from ._handlers import Binding, Tables, discover, from_maps
from ._schema import BUILTIN_EXCEPTION, Compiled, Schema, SchemaLike, State, normalize_schema
from ._subs import CtxBase, Registry, Sub
from ._tracer import TracerTables
from ._types import (
    ADD,
    REMOVE,
    SET,
    Clock,
    Event,
    LogLevel,
    Mutation,
    MutationType,
    MutSource,
    Result,
    Time,
    Transition,
)

__all__ = ["Engine"]

_logger: Final = logging.getLogger("trio_am.machine")
_PY_LEVEL: Final = {
    1: logging.INFO,
    2: logging.INFO,
    3: logging.DEBUG,
    4: logging.DEBUG,
    5: logging.DEBUG,
}
_EXECUTED: Final = Result.EXECUTED
_TOGGLE: Final = -1
# mutate(): op names and wire op codes (arpc.md B4: 0 add, 1 remove, 2 set, 3 toggle)
_OPS: Final[dict[str, int]] = {
    "add": ADD,
    "remove": REMOVE,
    "set": SET,
    "toggle": _TOGGLE,
    "0": ADD,
    "1": REMOVE,
    "2": SET,
    "3": _TOGGLE,
}
_CANCELED: Final = Result.CANCELED
_COMPILED_CACHE: dict[tuple[Any, ...], Compiled] = {}
_COMPILED_CACHE_MAX: Final = 256
#: How many internal errors a machine keeps.
INTERNAL_ERRORS_MAX: Final = 100

StatesArg = Iterable[str] | str
Args = Mapping[str, Any] | None


def _compile(schema: dict[str, State], names: list[str]) -> Compiled:
    key = (tuple(schema.items()), tuple(names))
    c = _COMPILED_CACHE.get(key)
    if c is None:
        if len(_COMPILED_CACHE) >= _COMPILED_CACHE_MAX:
            _COMPILED_CACHE.pop(next(iter(_COMPILED_CACHE)))
        c = _COMPILED_CACHE[key] = Compiled(schema, names)
    return c


class _Breakpoint:
    __slots__ = ("added", "hook", "removed", "strict")

    def __init__(
        self, added: int, removed: int, strict: bool, hook: Callable[[Mutation], Any] | None
    ) -> None:
        self.added = added
        self.removed = removed
        self.strict = strict
        self.hook = hook


class Engine:
    """The core state machine (no Trio). See :class:`trio_am.Machine` for the public API."""

    _sub_cls: ClassVar[type[Sub]] = Sub
    _ctx_cls: ClassVar[type[CtxBase]] = CtxBase

    __slots__ = (
        "__weakref__",
        "_active",
        "_active_list",
        "_auto_raised",
        "_bindings",
        "_breakpoints",
        "_busy",
        "_c",
        "_closing",
        "_ctxs",
        "_dispose_pending",
        "_disposed",
        "_disposing",
        "_err",
        "_groups",
        "_handler_timeout",
        "_id",
        "_internal_errors",
        "_log_args",
        "_log_level",
        "_log_sink",
        "_machine_tick",
        "_on_change",
        "_on_dispose",
        "_on_error",
        "_panic_to_exception",
        "_parent_id",
        "_pre_log",
        "_queue",
        "_queue_limit",
        "_queue_pending",
        "_queue_tick",
        "_reg",
        "_seq",
        "_states_verified",
        "_tables",
        "_tags",
        "_ticks",
        "_timeouts_to_exception",
        "_tr",
        "_tracers",
        "_tx",
        "_want_steps",
    )

    def __init__(
        self,
        schema: SchemaLike | Schema,
        *,
        id: str | None = None,
        handlers: object | None = None,
        parent: Engine | str | None = None,
        tags: Iterable[str] = (),
        log_level: LogLevel | int = LogLevel.NOTHING,
        tracers: Iterable[object] = (),
        queue_limit: int = 1000,
        panic_to_exception: bool = True,
        allow_any_names: bool = False,
        states: Sequence[str] | None = None,
        handler_timeout: float | None = None,
        timeouts_to_exception: bool = False,
    ) -> None:
        if id is not None and (not isinstance(id, str) or not id):
            raise Error(f"machine id must be a non-empty string, got {id!r}")
        self._id: str = id if id is not None else secrets.token_hex(4)
        norm = normalize_schema(schema, machine_id=self._id, allow_any_names=allow_any_names)
        self._c = _compile(norm, list(norm))
        self._ticks: list[int] = [0] * self._c.n
        self._active = 0
        self._active_list: list[int] = []
        self._queue: list[Mutation] = []
        self._queue_pending = 0  # appended mutations waiting in the queue
        self._queue_tick = 1
        self._queue_limit = queue_limit
        self._machine_tick = 0
        self._busy = False
        self._tx: Transition | None = None
        self._seq = 0
        self._bindings: list[Binding] = []
        self._tables: Tables | None = None
        self._tracers: list[object] = []
        self._tr: TracerTables | None = None
        self._want_steps = False
        self._reg: Registry | None = None
        self._ctxs: dict[int, CtxBase] | None = None
        self._err: Any = None
        self._disposed = False
        self._disposing = False
        # True from the start of dispose(), before its own transitions (removing Start)
        self._closing = False
        self._dispose_pending = False
        self._on_dispose: list[Callable[[str], Any]] | None = None
        self._on_error: list[Callable[[Engine, Any], Any]] | None = None
        self._on_change: list[Callable[[Engine, Time, Time], Any]] | None = None
        self._breakpoints: list[_Breakpoint] | None = None
        self._auto_raised: dict[int, int] | None = None
        self._log_level = int(log_level)
        self._log_sink: Callable[[int, str, Engine], Any] | None = None
        self._log_args: Callable[[Mapping[str, Any]], Mapping[str, str]] | None = None
        self._pre_log: list[tuple[int, str]] | None = None
        self._parent_id: str | None = None
        self._tags: tuple[str, ...] = tuple(tags)
        self._groups: dict[str, list[str]] | None = None
        self._states_verified = False
        self._panic_to_exception = panic_to_exception
        self._internal_errors: deque[BaseException] | None = None
        if handler_timeout is not None and handler_timeout <= 0:
            raise Error(
                f"handler_timeout must be positive, got {handler_timeout!r}", machine_id=self._id
            )
        self._handler_timeout = handler_timeout
        self._timeouts_to_exception = timeouts_to_exception
        if parent is not None:
            self._parent_id = parent if isinstance(parent, str) else parent.id
        if states is not None:
            self.verify_states(states)
        for tracer in tracers:
            self.bind_tracer(tracer)
        if self._tr is not None:
            self._trace("machine_init", self)
        if isinstance(parent, Engine):
            parent._trace("new_submachine", parent, self)
        if handlers is not None:
            self.bind_handlers(handlers)

    # ------------------------------------------------------------------ identity
    @property
    def id(self) -> str:
        """The machine id."""
        return self._id

    @property
    def parent_id(self) -> str | None:
        """The parent machine's id, or None."""
        return self._parent_id

    @property
    def tags(self) -> tuple[str, ...]:
        """The machine's tags."""
        return self._tags

    def set_tags(self, tags: Iterable[str]) -> None:
        """Replace the machine's tags."""
        self._tags = tuple(tags)

    @property
    def schema(self) -> Mapping[str, State]:
        """The normalised schema (read-only), including ``Exception``."""
        return MappingProxyType(self._c.schema)

    @property
    def state_names(self) -> list[str]:
        """State names in index order."""
        return list(self._c.names)

    @property
    def disposed(self) -> bool:
        """True once disposal started (mutations are CANCELED from then on)."""
        return self._disposed or self._disposing

    def is_disposed(self) -> bool:
        """Same as :attr:`disposed`."""
        return self.disposed

    @property
    def queue_len(self) -> int:
        """Mutations waiting in the queue."""
        return len(self._queue)

    @property
    def queue_tick(self) -> int:
        """The queue tick: starts at 1, +1 for every appended mutation taken for processing."""
        return self._queue_tick

    @property
    def machine_tick(self) -> int:
        """How many times the machine was restored with :meth:`import_data`."""
        return self._machine_tick

    @property
    def err(self) -> Any:
        """The latest error passed to ``add_err*`` (or raised by a handler), else None."""
        return self._err

    @property
    def internal_errors(self) -> deque[BaseException]:
        """Errors that did not become the ``Exception`` state: handler timeouts, raising
        tracers and callbacks. Bounded: only the latest 100 are kept."""
        errs = self._internal_errors
        if errs is None:
            errs = self._internal_errors = deque(maxlen=INTERNAL_ERRORS_MAX)
        return errs

    def _internal_error(self, exc: BaseException) -> None:
        self.internal_errors.append(exc)

    @property
    def transition(self) -> Transition | None:
        """The running transition, or None when idle."""
        return self._tx

    @property
    def is_local(self) -> bool:
        """True: this machine runs in this process (NetMachine says False)."""
        return True

    def in_backoff(self) -> bool:
        """Always False: handlers cannot overrun into a backoff in trio_am."""
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._id} {self.string()}>"

    def __str__(self) -> str:
        return self.string()

    # ------------------------------------------------------------------ names
    def _unknown(self, name: object) -> StateUnknownError:
        return StateUnknownError(
            f"unknown state {name!r}; the schema has {', '.join(self._c.names)}",
            machine_id=self._id,
            state=name if isinstance(name, str) else repr(name),
        )

    def _idx(self, name: str) -> int:
        i = self._c.index.get(name)
        if i is None:
            raise self._unknown(name)
        return i

    def _parse(self, states: StatesArg) -> tuple[tuple[int, ...], int]:
        if isinstance(states, str):
            states = (states,)
        index = self._c.index
        out: list[int] = []
        mask = 0
        for name in states:
            i = index.get(name)
            if i is None:
                raise self._unknown(name)
            bit = 1 << i
            if not mask & bit:
                mask |= bit
                out.append(i)
        return tuple(out), mask

    def parse_states(self, states: StatesArg) -> list[str]:
        """Validate names and collapse duplicates (first kept).

        Raises:
            StateUnknownError: a name is not in the schema.
        """
        idxs, _ = self._parse(states)
        return [self._c.names[i] for i in idxs]

    def has(self, states: StatesArg) -> bool:
        """True when every name is a state of the schema (never raises)."""
        if isinstance(states, str):
            return states in self._c.index
        try:
            return all(s in self._c.index for s in states)
        except TypeError:
            return False

    def has1(self, state: str) -> bool:
        """True when ``state`` is in the schema (never raises)."""
        return isinstance(state, str) and state in self._c.index

    def index(self, states: StatesArg) -> list[int]:
        """Indexes of the names (-1 for unknown ones)."""
        if isinstance(states, str):
            states = (states,)
        return [self._c.index.get(s, -1) for s in states]

    def index1(self, state: str) -> int:
        """Index of ``state``, or -1."""
        return self._c.index.get(state, -1)

    # ------------------------------------------------------------------ checks
    def is_all(self, states: StatesArg) -> bool:
        """True when every given state is active (an empty list is True)."""
        _, mask = self._parse(states)
        return (self._active & mask) == mask

    def is1(self, state: str) -> bool:
        """True when ``state`` is active."""
        return bool((self._active >> self._idx(state)) & 1)

    def not_any(self, states: StatesArg) -> bool:
        """True when none of the given states is active."""
        _, mask = self._parse(states)
        return not (self._active & mask)

    def not1(self, state: str) -> bool:
        """True when ``state`` is inactive."""
        return not ((self._active >> self._idx(state)) & 1)

    def any_of(self, *groups: StatesArg) -> bool:
        """True when any group is fully active (a group is a name or a list of names)."""
        masks = [self._parse(g)[1] for g in groups]
        return any((self._active & m) == m for m in masks)

    def any1(self, *states: str) -> bool:
        """True when any of the given states is active."""
        _, mask = self._parse(states)
        return bool(self._active & mask)

    def is_err(self) -> bool:
        """True while ``Exception`` is active."""
        e = self._c.exception
        return e >= 0 and bool((self._active >> e) & 1)

    def switch(self, *groups: StatesArg) -> str:
        """The first active state found in the groups, in order, or ``""``."""
        for g in groups:
            idxs, _ = self._parse(g)
            for i in idxs:
                if (self._active >> i) & 1:
                    return self._c.names[i]
        return ""

    def active_states(self, states: StatesArg | None = None) -> list[str]:
        """Active states in index order (optionally only among ``states``)."""
        names = self._c.names
        mask = self._active
        if states is not None:
            mask &= self._parse(states)[1]
        return [names[i] for i in range(self._c.n) if (mask >> i) & 1]

    def tick(self, state: str) -> int:
        """The tick of ``state`` (odd = active)."""
        return self._ticks[self._idx(state)]

    def time(self, states: StatesArg | None = None) -> Time:
        """Ticks in index order (or in the order given)."""
        if states is None:
            return Time(self._ticks)
        idxs, _ = self._parse(states)
        return Time(self._ticks[i] for i in idxs)

    def clock(self, states: StatesArg | None = None) -> Clock:
        """Ticks as a dict ``{name: tick}`` (all states when None)."""
        names = self._c.names
        if states is None:
            return dict(zip(names, self._ticks, strict=True))
        idxs, _ = self._parse(states)
        return {names[i]: self._ticks[i] for i in idxs}

    def is_time(self, time: Sequence[int], states: StatesArg | None = None) -> bool:
        """True when every listed tick equals the current one (nothing changed since)."""
        now = self.time(states)
        return len(now) == len(time) and all(a == b for a, b in zip(now, time, strict=True))

    def was_time(self, time: Sequence[int], states: StatesArg | None = None) -> bool:
        """True when every current tick is >= the listed one."""
        now = self.time(states)
        return len(now) == len(time) and all(a >= b for a, b in zip(now, time, strict=True))

    def is_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every tick in ``clock`` equals the current one."""
        return all(self.tick(name) == t for name, t in clock.items())

    def was_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every current tick is >= the one in ``clock``."""
        return all(self.tick(name) >= t for name, t in clock.items())

    def string(self) -> str:
        """Active states with ticks: ``(Foo:1 Bar:3)``."""
        if self._disposed:
            return ""
        names = self._c.names
        t = self._ticks
        return "(" + " ".join(f"{names[i]}:{t[i]}" for i in range(self._c.n) if t[i] & 1) + ")"

    def string_all(self) -> str:
        """Active then inactive states: ``(Foo:1 Bar:3) [Baz:2 Exception:0]``."""
        if self._disposed:
            return ""
        names = self._c.names
        t = self._ticks
        act = " ".join(f"{names[i]}:{t[i]}" for i in range(self._c.n) if t[i] & 1)
        ina = " ".join(f"{names[i]}:{t[i]}" for i in range(self._c.n) if not t[i] & 1)
        return f"({act}) [{ina}]"

    def inspect(self, states: StatesArg | None = None) -> str:
        """A multi-line description of states: activity, tick, flags and relations."""
        idxs = range(self._c.n) if states is None else self._parse(states)[0]
        lines: list[str] = []
        for i in idxs:
            name = self._c.names[i]
            st = self._c.schema[name]
            lines.append(f"{1 if self._ticks[i] & 1 else 0} {name}")
            lines.append(f"    |Tick     {self._ticks[i]}")
            if st.auto:
                lines.append("    |Auto     true")
            if st.multi:
                lines.append("    |Multi    true")
            for label, rel in (
                ("Add", st.add),
                ("Require", st.require),
                ("Remove", st.remove),
                ("After", st.after),
            ):
                if rel:
                    lines.append(f"    |{label:<9}{' '.join(rel)}")
        return "\n".join(lines) + ("\n" if lines else "")

    # ------------------------------------------------------------------ schema & order
    def verify_states(self, names: Sequence[str]) -> None:
        """Fix the index order of states.

        ``names`` must list every schema state exactly once (duplicates are collapsed);
        ``Exception`` may be left out and then comes last.

        Raises:
            SchemaError: the list does not match the schema.
        """
        order: list[str] = []
        for n in names:
            if not isinstance(n, str):
                raise SchemaError(f"state names must be strings, got {n!r}", machine_id=self._id)
            if n not in order:
                order.append(n)
        if BUILTIN_EXCEPTION not in order and BUILTIN_EXCEPTION in self._c.index:
            order.append(BUILTIN_EXCEPTION)
        schema = self._c.schema
        extra = [n for n in order if n not in schema]
        missing = [n for n in schema if n not in order]
        if extra or missing:
            parts = []
            if extra:
                parts.append(f"not in the schema: {extra}")
            if missing:
                parts.append(f"missing: {missing}")
            raise SchemaError(
                "verify_states: state list does not match the schema (" + "; ".join(parts) + ")",
                machine_id=self._id,
            )
        if self._busy:
            raise Error("verify_states cannot run during a transition", machine_id=self._id)
        old = self._c
        if list(old.names) != order and self._reg is not None and self._reg.count:
            raise Error(
                "verify_states cannot reorder states while subscriptions are pending",
                machine_id=self._id,
            )
        if list(old.names) != order:
            new = _compile(old.schema, order)
            ticks = [self._ticks[old.index[n]] for n in order]
            self._c = new
            self._ticks = ticks
            self._active = sum(1 << i for i, t in enumerate(ticks) if t & 1)
            self._active_list = [new.index[old.names[i]] for i in self._active_list]
            if self._ctxs:
                self._ctxs = {new.index[old.names[i]]: ctx for i, ctx in self._ctxs.items()}
            self._rebuild_tables()
        self._states_verified = True
        self._trace("verify_states", self)

    @property
    def states_verified(self) -> bool:
        """True once :meth:`verify_states` ran."""
        return self._states_verified

    def set_schema(self, schema: SchemaLike | Schema, names: Sequence[str] | None = None) -> None:
        """Replace the schema between transitions; it may only grow (existing states keep
        their ticks and indexes; new ones start inactive, appended or in ``names`` order).

        Raises:
            SchemaError: the new schema drops a state, or is invalid.
        """
        if self._busy:
            raise Error("set_schema cannot run during a transition", machine_id=self._id)
        norm = normalize_schema(schema, machine_id=self._id)
        old = self._c
        dropped = [n for n in old.names if n not in norm]
        if dropped:
            raise SchemaError(
                f"set_schema: a schema may only grow; missing {dropped}", machine_id=self._id
            )
        order = list(old.names) + [n for n in norm if n not in old.index]
        if names is not None:
            if sorted(names) != sorted(order) and sorted([*names, BUILTIN_EXCEPTION]) != sorted(
                order
            ):
                raise SchemaError("set_schema: names do not match the schema", machine_id=self._id)
            order = [n for n in names if n in norm] + [n for n in order if n not in names]
        if self._reg is not None and self._reg.count and order[: old.n] != list(old.names):
            raise Error(
                "set_schema cannot reorder states while subscriptions are pending",
                machine_id=self._id,
            )
        new = _compile(norm, order)
        self._ticks = [self._ticks[old.index[n]] if n in old.index else 0 for n in order]
        self._active = sum(1 << i for i, t in enumerate(self._ticks) if t & 1)
        self._active_list = [new.index[old.names[i]] for i in self._active_list]
        if self._ctxs:
            self._ctxs = {new.index[old.names[i]]: ctx for i, ctx in self._ctxs.items()}
        self._c = new
        self._rebuild_tables()
        self._trace("schema_change", self, old.schema)

    @property
    def schema_version(self) -> int:
        """The number of states (grows with :meth:`set_schema`)."""
        return self._c.n

    @property
    def groups(self) -> dict[str, list[str]]:
        """Named groups of states (for debuggers), e.g. one per typed-states class."""
        return dict(self._groups or {})

    def set_groups(self, groups: Mapping[str, Iterable[str]]) -> None:
        """Declare named groups of states."""
        out: dict[str, list[str]] = {}
        for name, states in groups.items():
            out[name] = self.parse_states(list(states))
        self._groups = out

    def export(self) -> dict[str, Any]:
        """A snapshot: id, state names, time, queue tick, machine tick."""
        return {
            "id": self._id,
            "state_names": list(self._c.names),
            "time": list(self._ticks),
            "queue_tick": self._queue_tick,
            "machine_tick": self._machine_tick,
        }

    def import_data(self, data: Mapping[str, Any]) -> None:
        """Restore a snapshot from :meth:`export` (same id and states): ticks, active set,
        order and queue tick; increments the machine tick and adds ``MachineRestored``
        when the schema has it.

        Raises:
            Error: the snapshot is of another machine or schema.
        """
        if self._busy:
            raise Error("import_data cannot run during a transition", machine_id=self._id)
        if data.get("id") != self._id:
            raise Error(f"import_data: snapshot of machine {data.get('id')!r}", machine_id=self._id)
        names = list(data["state_names"])
        ticks = [int(t) for t in data["time"]]
        if sorted(names) != sorted(self._c.names) or len(ticks) != len(names):
            raise Error(
                "import_data: the snapshot's states do not match the schema", machine_id=self._id
            )
        self.verify_states(names)
        self._ticks = ticks
        self._active = sum(1 << i for i, t in enumerate(ticks) if t & 1)
        self._active_list = [i for i in range(self._c.n) if (self._active >> i) & 1]
        self._queue_tick = int(data.get("queue_tick", self._queue_tick))
        self._machine_tick = int(data.get("machine_tick", 0)) + 1
        if "MachineRestored" in self._c.index:
            self.add1("MachineRestored")

    # ------------------------------------------------------------------ handlers
    def bind_handlers(self, obj: object, *, id: str | None = None, state_prefix: str = "") -> str:
        """Bind the handler methods of ``obj`` (found by name) and return a binding id.

        Handlers: ``Foo_enter``, ``Foo_exit``, ``Foo_Foo``, ``Foo_Bar``, ``any_enter``
        (negotiation; return ``False`` to veto), ``Foo_end``, ``Foo_state``,
        ``any_state`` (final). Several bindings may coexist; for one handler name they
        run in binding order.

        Raises:
            HandlerBindError: a handler names an unknown state, is async, or is not
                callable. Nothing is bound then.
        """
        found = discover(obj, self._c.index, self._id, prefix=state_prefix)
        return self._add_binding(found, id or type(obj).__name__)

    def bind_handler_maps(
        self,
        negotiation: Mapping[str, Callable[[Event], bool | None]] | None = None,
        final: Mapping[str, Callable[[Event], Any]] | None = None,
        *,
        id: str | None = None,
    ) -> str:
        """Bind handlers from two explicit maps (names as in :meth:`bind_handlers`, but
        any state name works, e.g. one outside the naming convention)."""
        found = from_maps(negotiation, final, self._c.index, self._id)
        return self._add_binding(found, id or "maps")

    def _add_binding(
        self, found: dict[str, tuple[str, str, Callable[[Any], Any]]], base_id: str
    ) -> str:
        if self._disposed:
            raise Error("cannot bind handlers to a disposed machine", machine_id=self._id)
        bid = base_id
        existing = {b.id for b in self._bindings}
        n = 1
        while bid in existing:
            n += 1
            bid = f"{base_id}-{n}"
        first = not self._bindings
        self._bindings.append(Binding(bid, found))
        self._rebuild_tables()
        self._log(LogLevel.OPS, f"[handlers] bound {bid}")
        if first and self.is_err() and self._err is not None and not self._busy:
            # let the new Exception handlers see the last error
            self.add_err(self._err)
        return bid

    def detach_handlers(self, binding_id: str) -> None:
        """Remove a binding made by :meth:`bind_handlers`.

        Raises:
            Error: no binding has that id.
        """
        for k, b in enumerate(self._bindings):
            if b.id == binding_id:
                del self._bindings[k]
                self._rebuild_tables()
                return
        raise Error(f"no handler binding {binding_id!r}", machine_id=self._id)

    def handler_ids(self) -> list[str]:
        """Ids of the bound handler sets, in binding order."""
        return [b.id for b in self._bindings]

    def _rebuild_tables(self) -> None:
        if not self._bindings:
            self._tables = None
            return
        # re-resolve names against the current order
        for b in self._bindings:
            for name, (state, _kind, _fn) in b.handlers.items():
                for s in state.split("\0"):
                    if (
                        s != "Any" and s not in self._c.index
                    ):  # pragma: no cover - schema only grows
                        raise HandlerBindError(
                            f"handler {name!r} lost its state", machine_id=self._id
                        )
        self._tables = Tables(self._c.n, self._c.index, self._bindings)

    # ------------------------------------------------------------------ tracers & logs
    def bind_tracer(self, tracer: object) -> None:
        """Bind an observer; only the hooks it defines are called (see :class:`Tracer`).

        A hook that raises is logged and the tracer detached.
        """
        if tracer in self._tracers:
            return
        self._tracers.append(tracer)
        self._tr = TracerTables(self._tracers)
        self._want_steps = any(getattr(t, "wants_steps", False) for t in self._tracers)

    def detach_tracer(self, tracer: object) -> None:
        """Remove a tracer bound with :meth:`bind_tracer`."""
        if tracer in self._tracers:
            self._tracers.remove(tracer)
            self._tr = TracerTables(self._tracers) if self._tracers else None
            self._want_steps = any(getattr(t, "wants_steps", False) for t in self._tracers)

    @property
    def tracers(self) -> list[object]:
        """Bound tracers."""
        return list(self._tracers)

    def _trace(self, hook: str, *args: Any) -> None:
        tr = self._tr
        if tr is None:
            return
        fns = getattr(tr, hook)
        if fns is None:
            return
        for tracer, fn in fns:
            try:
                fn(*args)
            except Exception as exc:
                _logger.exception(
                    "tracer %r raised in %s and was detached",
                    tracer,
                    hook,
                    extra={"machine_id": self._id},
                )
                self._internal_error(exc)
                self.detach_tracer(tracer)

    @property
    def log_level(self) -> LogLevel:
        """The current log level."""
        return LogLevel(self._log_level)

    def set_log_level(self, level: LogLevel | int) -> None:
        """Change the log level."""
        self._log_level = int(LogLevel(level))

    def set_logger(self, fn: Callable[[int, str, Engine], Any] | None) -> None:
        """Replace the log sink: ``fn(level, text, machine)``; None restores stdlib logging."""
        self._log_sink = fn

    def set_log_args(self, mapper: Callable[[Mapping[str, Any]], Mapping[str, str]] | None) -> None:
        """Set the args mapper: which mutation args appear in log lines (see ``log_args_mapper``)."""
        self._log_args = mapper

    def log(self, msg: str, *args: Any) -> None:
        """Log an external message (level EXTERNAL): ``mach.log("got %s", x)``."""
        if self._log_level >= 1:
            self._log(LogLevel.EXTERNAL, "[exter] " + (msg % args if args else msg))

    def _log(self, level: int, text: str) -> None:
        if level > self._log_level:
            return
        tx = self._tx
        if tx is not None:
            if tx.log is None:
                tx.log = []
            tx.log.append((level, text))
        else:
            if self._pre_log is None:
                self._pre_log = []
            self._pre_log.append((level, text))
            if len(self._pre_log) > 1000:
                del self._pre_log[:500]
        tr = self._tr
        if tr is not None and tr.has("machine_log"):
            self._trace("machine_log", self, level, text)
        if self._log_sink is not None:
            self._log_sink(level, text, self)
        else:
            _logger.log(
                logging.ERROR if text.startswith("[error") else _PY_LEVEL.get(level, logging.DEBUG),
                "[%s] %s",
                self._id[:5],
                text,
                extra={"machine_id": self._id, "am_level": level},
            )

    def _args_str(self, args: Mapping[str, Any]) -> str:
        if not args:
            return ""
        mapper = self._log_args
        if mapper is None:
            from ._logargs import default_log_args

            shown: Mapping[str, str] = default_log_args(args)
        else:
            shown = mapper(args)
        if not shown:
            return ""
        return " (" + " ".join(f"{k}={v}" for k, v in sorted(shown.items())) + ")"

    def add_breakpoint(
        self,
        added: StatesArg = (),
        removed: StatesArg = (),
        *,
        strict: bool = False,
        hook: Callable[[Mutation], Any] | None = None,
    ) -> Callable[[], None]:
        """Stop (or call ``hook``) when an Add of exactly ``added`` or a Remove of exactly
        ``removed`` is requested.

        Without ``hook`` the builtin ``breakpoint()`` is called, but only when the
        environment variable ``AM_BREAKPOINTS`` is set; the match is always logged at
        CHANGES level. With ``strict`` a mutation that would change nothing is skipped.
        Returns a function that removes the breakpoint.
        """
        _, am = self._parse(added)
        _, rm = self._parse(removed)
        bp = _Breakpoint(am, rm, strict, hook)
        if self._breakpoints is None:
            self._breakpoints = []
        self._breakpoints.append(bp)

        def remove() -> None:
            if self._breakpoints and bp in self._breakpoints:
                self._breakpoints.remove(bp)

        return remove

    def _check_breakpoints(self, mtype: int, mask: int, mut: Mutation) -> None:
        for bp in list(self._breakpoints or ()):
            if mtype == ADD and bp.added and mask == bp.added:
                if bp.strict and (self._active & mask) == mask and not (mask & self._c.multi_mask):
                    continue
            elif mtype == REMOVE and bp.removed and mask == bp.removed:
                if bp.strict and not (self._active & mask):
                    continue
            else:
                continue
            self._log(LogLevel.CHANGES, "[breakpoint] Machine.breakpoint")
            if bp.hook is not None:
                bp.hook(mut)
            elif os.environ.get("AM_BREAKPOINTS"):
                breakpoint()

    # ------------------------------------------------------------------ callbacks
    def on_dispose(self, fn: Callable[[str], Any]) -> None:
        """Call ``fn(machine_id)`` when the machine is disposed."""
        if self._on_dispose is None:
            self._on_dispose = []
        self._on_dispose.append(fn)

    def on_error(self, fn: Callable[[Engine, Any], Any]) -> None:
        """Call ``fn(machine, err)`` whenever an error is recorded (``add_err*`` or a
        raising handler)."""
        if self._on_error is None:
            self._on_error = []
        self._on_error.append(fn)

    def on_change(self, fn: Callable[[Engine, Time, Time], Any]) -> Callable[[], None]:
        """Call ``fn(machine, time_before, time_after)`` after every non-dry transition
        (canceled ones too). Returns a function that removes the callback."""
        if self._on_change is None:
            self._on_change = []
        self._on_change.append(fn)

        def remove() -> None:
            if self._on_change and fn in self._on_change:
                self._on_change.remove(fn)

        return remove

    # ------------------------------------------------------------------ mutations
    def add(self, states: StatesArg, args: Args = None, *, event: Event | None = None) -> Result:
        """Activate ``states`` (and what they imply), keeping the others.

        Runs at once when idle (returns EXECUTED or CANCELED); from inside a handler it
        is queued (returns a QUEUED result with its queue tick).

        Raises:
            StateUnknownError: a name is not in the schema (nothing changes).
        """
        called, mask = self._parse(states)
        return self._mutate(ADD, called, mask, args, event)

    def add1(self, state: str, args: Args = None, *, event: Event | None = None) -> Result:
        """:meth:`add` for one state."""
        i = self._c.index.get(state)
        if i is None:
            raise self._unknown(state)
        return self._mutate(ADD, (i,), 1 << i, args, event)

    def remove(self, states: StatesArg, args: Args = None, *, event: Event | None = None) -> Result:
        """Deactivate ``states`` (and what requires them). See :meth:`add` for results."""
        called, mask = self._parse(states)
        return self._mutate(REMOVE, called, mask, args, event)

    def remove1(self, state: str, args: Args = None, *, event: Event | None = None) -> Result:
        """:meth:`remove` for one state."""
        i = self._c.index.get(state)
        if i is None:
            raise self._unknown(state)
        return self._mutate(REMOVE, (i,), 1 << i, args, event)

    def set(self, states: StatesArg, args: Args = None, *, event: Event | None = None) -> Result:
        """Make ``states`` (and what they imply) the active set; deactivate all others."""
        called, mask = self._parse(states)
        return self._mutate(SET, called, mask, args, event)

    def toggle(self, states: StatesArg, args: Args = None, *, event: Event | None = None) -> Result:
        """Remove ``states`` when all of them are active, else add them."""
        called, mask = self._parse(states)
        mtype = REMOVE if (self._active & mask) == mask and mask else ADD
        return self._mutate(mtype, called, mask, args, event)

    def toggle1(self, state: str, args: Args = None, *, event: Event | None = None) -> Result:
        """:meth:`toggle` for one state."""
        i = self._c.index.get(state)
        if i is None:
            raise self._unknown(state)
        bit = 1 << i
        return self._mutate(REMOVE if self._active & bit else ADD, (i,), bit, args, event)

    def mutate(
        self,
        op: MutationType | str | int,
        states: StatesArg,
        args: Args = None,
        *,
        source: MutSource | None = None,
    ) -> Result:
        """Low level: apply mutation ``op`` (``"add"``, ``"remove"``, ``"set"`` or
        ``"toggle"``) with an explicit :class:`MutSource` (used by the aRPC server to
        record which client and session a mutation came from). A toggle is decided here,
        against this machine's active states."""
        called, mask = self._parse(states)
        code = _OPS.get(str(int(op)) if isinstance(op, int) else op)
        if code is None:
            raise Error(f"unknown mutation type {op!r}", machine_id=self._id)
        if code == _TOGGLE:
            mtype = REMOVE if (self._active & mask) == mask and mask else ADD
        else:
            mtype = MutationType(code)
        return self._mutate(mtype, called, mask, args, None, source=source)

    def add_err(self, err: Any, args: Args = None, *, event: Event | None = None) -> Result:
        """Record ``err`` as the last error and add ``Exception`` with
        ``args["err"] = err`` and ``args["err_trace"]`` (its formatted traceback).

        ``None`` (and Trio's ``Cancelled``) are ignored: returns CANCELED.
        """
        return self._add_err((), 0, err, args, event)

    def add_err_state(
        self, state: str, err: Any, args: Args = None, *, event: Event | None = None
    ) -> Result:
        """Like :meth:`add_err`, adding ``state`` together with ``Exception``."""
        i = self._idx(state)
        return self._add_err((i,), 1 << i, err, args, event)

    def _is_cancellation(self, err: object) -> bool:
        return False

    def _add_err(
        self, called: tuple[int, ...], mask: int, err: Any, args: Args, event: Event | None
    ) -> Result:
        if self._disposed or self._disposing:
            return _CANCELED
        if err is None or self._is_cancellation(err):
            return _CANCELED
        if len(self._queue) >= self._queue_limit:
            self._log(LogLevel.OPS, "[queue:skipped] queue limit reached")
            return _CANCELED
        e = self._c.exception
        if e < 0:
            raise Error("the schema has no Exception state", machine_id=self._id)
        self._record_err(err)
        full = dict(args) if args else {}
        full["err"] = err
        if isinstance(err, BaseException):
            full["err_trace"] = "".join(traceback.format_exception(err))
        if e not in called:
            called = (*called, e)
            mask |= 1 << e
        return self._mutate(ADD, called, mask, full, event, limit=False)

    def _record_err(self, err: Any) -> None:
        self._err = err
        self._log(LogLevel.CHANGES, f"[error] {err}")
        for fn in list(self._on_error or ()):
            try:
                fn(self, err)
            except Exception as exc:
                self._internal_error(exc)
                _logger.exception("on_error callback raised", extra={"machine_id": self._id})

    def can_add(self, states: StatesArg, args: Args = None) -> Result:
        """Dry run of :meth:`add`: runs resolution and negotiation handlers (with
        ``e.is_check`` set) but changes nothing. EXECUTED when it would pass, else
        CANCELED; QUEUED (plain) when called from a handler."""
        called, mask = self._parse(states)
        return self._dry(ADD, called, mask, args)

    def can_add1(self, state: str, args: Args = None) -> Result:
        """:meth:`can_add` for one state."""
        return self.can_add((state,), args)

    def can_remove(self, states: StatesArg, args: Args = None) -> Result:
        """Dry run of :meth:`remove` (see :meth:`can_add`)."""
        called, mask = self._parse(states)
        return self._dry(REMOVE, called, mask, args)

    def can_remove1(self, state: str, args: Args = None) -> Result:
        """:meth:`can_remove` for one state."""
        return self.can_remove((state,), args)

    def _dry(self, mtype: MutationType, called: tuple[int, ...], mask: int, args: Args) -> Result:
        if self._disposed or self._disposing:
            return _CANCELED
        mut = Mutation(self._c.names, mtype, called, mask, args, is_check=True, prepended=True)
        if self._busy:
            # prepended: it runs right after the current transition; like Go, the
            # result is the plain constant 2, not a queue tick of its own
            self._queue.insert(0, mut)
            return Result(2, 2)
        return self._run_prepended(mut)

    def prepend_mutation(self, mutation: Mutation) -> Result:
        """Low level: put ``mutation`` at the head of the queue and process it."""
        mutation.prepended = True
        if self._busy:
            self._queue.insert(0, mutation)
            return Result.QUEUED
        return self._run_prepended(mutation)

    def _mutate(
        self,
        mtype: MutationType,
        called: tuple[int, ...],
        mask: int,
        args: Args,
        event: Event | None,
        *,
        limit: bool = True,
        source: MutSource | None = None,
    ) -> Result:
        if self._disposing or self._disposed:
            return _CANCELED
        queue = self._queue
        if (queue and len(queue) >= self._queue_limit) or not self._queue_limit:
            e = self._c.exception
            ebit = 1 << e if e >= 0 else 0
            hatch = (
                limit
                and ebit
                and mask & ebit
                and (
                    (mtype == ADD and not self._active & ebit)
                    or (mtype == REMOVE and self._active & ebit)
                )
            )
            if not hatch:
                self._log(LogLevel.OPS, "[queue:skipped] queue limit reached")
                return _CANCELED
        if event is not None:
            src_m = event.machine
            source = MutSource(src_m.id, event.transition.id, sum(src_m._ticks))
        if self._busy:
            if mtype == REMOVE and not queue and not (self._active & mask):
                return _EXECUTED
            if not args and not (mask & self._c.multi_mask) and self._is_duplicate(mtype, mask):
                if self._log_level >= 3:
                    self._log(LogLevel.OPS, f"[queue:skipped] {mtype} {self._names_str(called)}")
                return _EXECUTED
            mut = Mutation(self._c.names, mtype, called, mask, args, source)
            self._queue_pending += 1
            mut.queue_tick = tick = self._queue_tick + self._queue_pending
            queue.append(mut)
            if self._log_level >= 3:
                self._log(
                    LogLevel.OPS,
                    f"[queue:{mtype}] {self._names_str(called)}{self._args_str(mut.args)}",
                )
            if self._breakpoints:
                self._check_breakpoints(mtype, mask, mut)
            if self._tr is not None:
                self._trace("mutation_queued", self, mut)
            return Result(2, tick)
        mut = Mutation(self._c.names, mtype, called, mask, args, source)
        if self._breakpoints:
            self._check_breakpoints(mtype, mask, mut)
        # idle: process now, then drain what handlers queued (inlined: the hot path)
        self._busy = True
        try:
            self._queue_tick = mut.queue_tick = self._queue_tick + 1
            result = _transition.process(self, mut)
            if self._reg is not None and self._reg.queue:
                self._reg.check_queue(self._queue_tick)
            if queue:
                self._drain()
        finally:
            self._busy = False
            self._auto_raised = None
            if self._tx is not None:
                self._abort_tx()
        if self._tr is not None or self._reg is not None or self._dispose_pending:
            self._after_drain()
        return result

    def _is_duplicate(self, mtype: int, mask: int) -> bool:
        found = False
        for m in self._queue:
            if found:
                if m.type != mtype and (m.type == SET or m._mask & mask):
                    return False
            elif (
                m.type == mtype
                and m._mask == mask
                and not m.args
                and not m.is_check
                and not m.is_auto
            ):
                found = True
        return found

    def _names_str(self, idxs: Iterable[int]) -> str:
        names = self._c.names
        return " ".join(names[i] for i in idxs)

    # ------------------------------------------------------------------ the queue
    def _run_prepended(self, mut: Mutation) -> Result:
        """Process a prepended mutation (a dry run, ``prepend_mutation``) now, while the
        machine is idle, then drain the queue. It takes no queue tick. Appended
        mutations take the inlined path at the end of :meth:`_mutate`."""
        self._busy = True
        result = _CANCELED
        try:
            result = _transition.process(self, mut)
            if self._queue:
                self._drain()
        finally:
            self._busy = False
            self._auto_raised = None
            if self._tx is not None:
                self._abort_tx()
        self._after_drain()
        return result

    def _abort_tx(self) -> None:
        # an error propagated out of a handler (panic_to_exception=False)
        tx = self._tx
        if tx is not None:
            tx.is_accepted = False
            tx.is_completed = True
            self._tx = None

    def _after_drain(self) -> None:
        tr = self._tr
        if tr is not None and tr.queue_end:
            self._trace("queue_end", self)
        reg = self._reg
        if reg is not None and reg.queue_ends:
            for sub in list(reg.queue_ends):
                sub._resolve()
        if self._dispose_pending:
            self._dispose_pending = False
            self.dispose()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            if self._disposing or self._disposed:
                queue.clear()
                self._queue_pending = 0
                return
            mut = queue.pop(0)
            if not mut.prepended:
                self._queue_pending -= 1
                self._queue_tick += 1
            _transition.process(self, mut)
            if not mut.prepended and self._reg is not None and self._reg.queue:
                self._reg.check_queue(self._queue_tick)

    # ------------------------------------------------------------------ eval
    def eval(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` now, between transitions, and return its result.

        Raises:
            NestedEvalError: called during a transition (from a handler), where it
                could only run after the caller returned.
        """
        if self._busy:
            raise NestedEvalError(
                "eval() called during a transition; use eval_async or queue a mutation",
                machine_id=self._id,
            )
        return fn()

    # ------------------------------------------------------------------ subscriptions
    def _registry(self) -> Registry:
        reg = self._reg
        if reg is None:
            reg = self._reg = Registry()
        return reg

    def _new_sub(self, kind: str, data: Any = None) -> Sub:
        sub = self._sub_cls(self, kind, data)
        if self._disposed or self._disposing:
            if kind == "when_disposed":
                sub._done = True
            else:
                sub._done = True
                sub._error = MachineDisposedError(f"machine disposed ({kind})", machine_id=self._id)
        return sub

    def _register(
        self,
        sub: Sub,
        table: dict[int, list[Sub]] | None,
        idxs: Iterable[int],
        lst: list[Sub] | None = None,
    ) -> None:
        reg = self._registry()
        reg.count += 1
        if table is not None:
            for i in idxs:
                reg.add_indexed(sub, table, i)
        if lst is not None:
            reg.add(sub, lst)

    def when(self, states: StatesArg) -> Sub:
        """Wait until all ``states`` are active at the same time (see ``Waiter``)."""
        idxs, mask = self._parse(states)
        sub = self._new_sub("when", mask)
        if not sub.done:
            if (self._active & mask) == mask:
                sub._done = True
            else:
                self._register(sub, self._registry().active, idxs)
        return sub

    def when1(self, state: str) -> Sub:
        """Wait until ``state`` is active."""
        return self.when((state,))

    def when_not(self, states: StatesArg) -> Sub:
        """Wait until all ``states`` are inactive at the same time."""
        idxs, mask = self._parse(states)
        sub = self._new_sub("when_not", mask)
        if not sub.done:
            if not (self._active & mask):
                sub._done = True
            else:
                self._register(sub, self._registry().inactive, idxs)
        return sub

    def when_not1(self, state: str) -> Sub:
        """Wait until ``state`` is inactive."""
        return self.when_not((state,))

    def when_err(self) -> Sub:
        """Wait until ``Exception`` is active."""
        return self.when((BUILTIN_EXCEPTION,))

    def when_time(self, states: StatesArg, times: Sequence[int]) -> Sub:
        """Wait until each state's tick is >= the given one.

        Raises:
            ValueError: the lists differ in length or are empty.
        """
        idxs, _ = self._parse(states)
        times = list(times)
        if not idxs or len(idxs) != len(times):
            raise ValueError(f"when_time: {len(idxs)} states but {len(times)} ticks")
        data = list(zip(idxs, times, strict=True))
        sub = self._new_sub("when_time", data)
        if not sub.done:
            if all(self._ticks[i] >= t for i, t in data):
                sub._done = True
            else:
                self._register(
                    sub, self._registry().ticks, [i for i, t in data if self._ticks[i] < t]
                )
        return sub

    def when_time1(self, state: str, tick: int) -> Sub:
        """Wait until the tick of ``state`` is >= ``tick``."""
        return self.when_time((state,), (tick,))

    def when_ticks(self, state: str, n: int) -> Sub:
        """Wait until ``state`` ticked ``n`` more times than now."""
        return self.when_time1(state, self.tick(state) + n)

    def when_next_active(self, state: str) -> Sub:
        """Wait for the next activation of ``state`` (also a Multi re-activation)."""
        t = self.tick(state)
        return self.when_time1(state, t + 2 if t & 1 else t + 1)

    def when_args(self, state: str, args: Mapping[str, Any]) -> Sub:
        """Wait until ``state`` is activated (or a Multi state re-activated) with args
        containing every given key with an equal value."""
        i = self._idx(state)
        sub = self._new_sub("when_args", dict(args))
        if not sub.done:
            self._register(sub, self._registry().args, (i,))
        return sub

    def when_query(self, fn: Callable[[Clock], bool]) -> Sub:
        """Wait until ``fn(clock)`` is true (checked now and after every transition that
        changed a tick)."""
        sub = self._new_sub("when_query", fn)
        if not sub.done:
            if fn(self.clock()):
                sub._done = True
            else:
                reg = self._registry()
                self._register(sub, None, (), reg.queries)
        return sub

    def when_queue(self, queue_tick: int) -> Sub:
        """Wait until the queue tick reaches ``queue_tick`` (the mutation queued with it
        was processed, whatever its result)."""
        sub = self._new_sub("when_queue", int(queue_tick))
        if not sub.done:
            if self._queue_tick >= queue_tick and not (
                self._busy
                and self._queue_tick == queue_tick
                and self._tx is not None
                and self._tx.mutation.queue_tick == queue_tick
            ):
                sub._done = True
            else:
                reg = self._registry()
                self._register(sub, None, (), reg.queue)
        return sub

    def when_queue_ends(self) -> Sub:
        """Wait until the current queue drain ends (at once when idle)."""
        sub = self._new_sub("when_queue_ends")
        if not sub.done:
            if not self._busy:
                sub._done = True
            else:
                reg = self._registry()
                self._register(sub, None, (), reg.queue_ends)
        return sub

    def when_disposed(self) -> Sub:
        """Wait until the machine is disposed."""
        sub = self._new_sub("when_disposed")
        if not sub.done:
            reg = self._registry()
            self._register(sub, None, (), reg.disposed)
        return sub

    def _close_sub(self, sub: Sub) -> None:
        sub._resolve(SubscriptionClosed(f"waiter closed ({sub.kind})", machine_id=self._id))

    # ------------------------------------------------------------------ state contexts
    def state_ctx(self, state: str) -> CtxBase:
        """The context of the state's current activation (or, for an inactive state,
        of its current tick): it expires when that tick changes or at disposal. The
        same object is returned until it expires."""
        i = self._idx(state)
        ctxs = self._ctxs
        if ctxs is None:
            ctxs = self._ctxs = {}
        ctx = ctxs.get(i)
        if ctx is None:
            ctx = self._ctx_cls(self, self._c.names[i], self._ticks[i])
            if self._disposed or self._disposing:
                ctx._expire()
            else:
                ctxs[i] = ctx
        return ctx

    def fork(
        self,
        async_fn: Callable[..., Any],
        *args: Any,
        state: str | None = None,
        limiter: Any = None,
    ) -> None:
        """Forking needs the Trio runtime (``trio_am.Machine``)."""
        raise Error(
            "fork() needs a Machine bound to a nursery (async with mach:)", machine_id=self._id
        )

    # ------------------------------------------------------------------ disposal
    def dispose(self) -> None:
        """Dispose the machine now: remove ``Start`` (when defined and active), drop
        handlers, fail pending waiters with ``MachineDisposedError``, expire every state
        context, run ``on_dispose`` callbacks. Mutations return CANCELED afterwards and
        queries show an empty machine. From inside a handler, disposal happens when the
        current queue drain ends. Idempotent."""
        if self._disposed or self._disposing:
            return
        if self._busy:
            self._dispose_pending = True
            return
        self._closing = True
        start = self._c.index.get("Start")
        if start is not None and (self._active >> start) & 1:
            self.remove1("Start")
        self._disposing = True
        self._log(LogLevel.EVERYTHING, "[dispose]")
        self._trace("machine_dispose", self)
        self._queue.clear()
        self._queue_pending = 0
        self._bindings = []
        self._tables = None
        reg = self._reg
        if reg is not None:
            disposed_waiters = list(reg.disposed)
            for sub in reg.all_pending():
                if sub not in disposed_waiters:
                    sub._resolve(
                        MachineDisposedError(f"machine disposed ({sub.kind})", machine_id=self._id)
                    )
        else:
            disposed_waiters = []
        if self._ctxs:
            ctxs, self._ctxs = self._ctxs, {}
            for ctx in ctxs.values():
                ctx._expire()
        for fn in list(self._on_dispose or ()):
            try:
                fn(self._id)
            except Exception as exc:
                self._internal_error(exc)
                _logger.exception("on_dispose callback raised", extra={"machine_id": self._id})
        self._on_disposed()
        self._ticks = [0] * self._c.n
        self._active = 0
        self._active_list = []
        self._disposed = True
        self._disposing = False
        for sub in disposed_waiters:
            sub._resolve()

    def _on_disposed(self) -> None:
        """Hook for the Trio layer: cancel the machine's own scope."""
