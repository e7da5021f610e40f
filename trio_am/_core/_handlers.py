"""Handler discovery by name, resolved once per binding into dispatch tables.

Handler grammar (machine.md §17.3)::

    Foo_enter  Foo_exit  Foo_state  Foo_end   per state
    Foo_Foo                                   self handler
    Foo_Bar                                   state-state handler
    any_enter  any_state                      global handlers

Binding validates what looks like a handler: a name with a handler suffix (or a pair of
names) that mentions an unknown state, an ``async def`` handler, or a non-callable
attribute with a handler name raises :class:`~trio_am.HandlerBindError`. Names starting
with ``_`` or a lower-case letter (other than ``any_enter``/``any_state``) are helpers and
are ignored; so is an ``UPPER_CASE`` pair when neither half is a state (constants).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from .._errors import HandlerBindError

__all__ = ["Binding", "ExceptionHandler", "HandlerFn", "Tables", "discover"]

HandlerFn = Callable[[Any], Any]
_SUFFIXES: Final = ("enter", "exit", "state", "end")
_NAME: Final = r"[A-Z][A-Za-z0-9]*"
_HANDLER_RE: Final = re.compile(rf"({_NAME})_([A-Za-z0-9]+)\Z")
_GLOBALS: Final = ("any_enter", "any_state")

# entry: (binding_id, fn, handler_name)
Entry = tuple[str, HandlerFn, str]


class Binding:
    """One bound handler set: handler name -> (state, kind, fn)."""

    __slots__ = ("handlers", "id")

    def __init__(self, id: str, handlers: dict[str, tuple[str, str, HandlerFn]]) -> None:
        self.id = id
        # name -> (state or other, kind, fn); kinds: enter exit state end self pair any_enter any_state
        self.handlers = handlers


def _check_callable(name: str, fn: object, machine_id: str) -> HandlerFn:
    if not callable(fn):
        raise HandlerBindError(
            f"handler attribute {name!r} is not callable ({type(fn).__name__})",
            machine_id=machine_id,
        )
    target: Any = fn
    if isinstance(target, (staticmethod, classmethod)):
        target = target.__func__
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        raise HandlerBindError(
            f"handler {name!r} is async; handlers are plain synchronous functions "
            "(fork async work with e.fork() or mach.fork())",
            machine_id=machine_id,
        )
    return fn


def _classify(
    name: str, states: Mapping[str, int], machine_id: str, strict: bool
) -> tuple[str, str, str | None] | None:
    """Return (state, kind, other) for a handler name, None for a non-handler name."""
    if name in _GLOBALS:
        return ("Any", name, None)
    m = _HANDLER_RE.match(name)
    if m is None:
        return None
    state, suffix = m.group(1), m.group(2)
    if suffix in _SUFFIXES:
        if state not in states:
            raise HandlerBindError(
                f"handler {name!r} names state {state!r}, which is not in the schema",
                machine_id=machine_id,
                state=state,
            )
        return (state, suffix, None)
    if re.fullmatch(_NAME, suffix):
        known_a, known_b = state in states, suffix in states
        if known_a and known_b:
            return (state, "self" if state == suffix else "pair", suffix)
        if known_a or known_b or strict:
            bad = suffix if known_a else state
            raise HandlerBindError(
                f"handler {name!r} names state {bad!r}, which is not in the schema",
                machine_id=machine_id,
                state=bad,
            )
        return None  # e.g. MAX_SIZE: neither half is a state
    if state in states:
        raise HandlerBindError(
            f"handler {name!r}: unknown suffix {suffix!r} for state {state!r}; "
            f"expected one of {', '.join(_SUFFIXES)} or a state name",
            machine_id=machine_id,
            state=state,
        )
    return None


def discover(
    obj: object,
    states: Mapping[str, int],
    machine_id: str,
    *,
    prefix: str = "",
) -> dict[str, tuple[str, str, HandlerFn]]:
    """Find the handlers of ``obj`` by name (attributes of the object and its class).

    With ``prefix``, only names starting with it are considered, and it is stripped.
    """
    found: dict[str, tuple[str, str, HandlerFn]] = {}
    names: Iterable[str] = dir(obj)
    for attr in names:
        if attr.startswith("__"):
            continue
        name = attr
        if prefix:
            if not attr.startswith(prefix):
                continue
            name = attr[len(prefix) :]
        if not name or name.startswith("_"):
            continue
        if name[0].islower() and name not in _GLOBALS:
            continue
        cls_attr = inspect.getattr_static(obj, attr, None)
        kind = _classify(name, states, machine_id, strict=False)
        if kind is None:
            continue
        if isinstance(cls_attr, property):
            raise HandlerBindError(
                f"handler {attr!r} is a property, not a method", machine_id=machine_id
            )
        fn = getattr(obj, attr)
        if inspect.iscoroutinefunction(cls_attr) or inspect.isasyncgenfunction(cls_attr):
            raise HandlerBindError(
                f"handler {attr!r} is async; handlers are plain synchronous functions "
                "(fork async work with e.fork() or mach.fork())",
                machine_id=machine_id,
            )
        fn = _check_callable(attr, fn, machine_id)
        state, k, other = kind
        found[name] = (state if other is None else f"{state}\0{other}", k, fn)
    return found


def from_maps(
    negotiation: Mapping[str, HandlerFn] | None,
    final: Mapping[str, HandlerFn] | None,
    states: Mapping[str, int],
    machine_id: str,
) -> dict[str, tuple[str, str, HandlerFn]]:
    """Handlers from explicit maps (any state names, strict checking).

    Negotiation keys: ``State_enter``, ``State_exit``, ``A_B``, ``any_enter``.
    Final keys: ``State_state``, ``State_end``, ``any_state``. Keys may use any state name
    (even one outside the naming convention): the state is matched against the schema
    by splitting at the last ``_``.
    """
    found: dict[str, tuple[str, str, HandlerFn]] = {}
    for group, allowed in (
        (negotiation, ("enter", "exit", "pair", "self", "any_enter")),
        (final, ("state", "end", "any_state")),
    ):
        for name, fn in (group or {}).items():
            fn = _check_callable(name, fn, machine_id)
            if name in _GLOBALS:
                kind: tuple[str, str, str | None] = ("Any", name, None)
            else:
                head, sep, tail = name.rpartition("_")
                if not sep or head not in states:
                    raise HandlerBindError(
                        f"handler {name!r} names no state of the schema", machine_id=machine_id
                    )
                if tail in _SUFFIXES:
                    kind = (head, tail, None)
                elif tail in states:
                    kind = (head, "self" if head == tail else "pair", tail)
                else:
                    raise HandlerBindError(
                        f"handler {name!r}: {tail!r} is neither a suffix nor a state",
                        machine_id=machine_id,
                    )
            if kind[1] not in allowed:
                raise HandlerBindError(
                    f"handler {name!r} is in the wrong map (a {kind[1]} handler)",
                    machine_id=machine_id,
                )
            state, k, other = kind
            found[name] = (state if other is None else f"{state}\0{other}", k, fn)
    return found


class Tables:
    """Merged dispatch tables of all bindings, in binding order, by state index."""

    __slots__ = (
        "any_enter",
        "any_state",
        "end",
        "enter",
        "exit",
        "has_final",
        "has_negotiation",
        "pairs",
        "self_",
        "state",
    )

    def __init__(self, n: int, index: Mapping[str, int], bindings: Iterable[Binding]) -> None:
        self.enter: list[list[Entry] | None] = [None] * n
        self.exit: list[list[Entry] | None] = [None] * n
        self.state: list[list[Entry] | None] = [None] * n
        self.end: list[list[Entry] | None] = [None] * n
        self.self_: list[list[Entry] | None] = [None] * n
        # (x, y) -> entries
        self.pairs: dict[tuple[int, int], list[Entry]] = {}
        self.any_enter: list[Entry] = []
        self.any_state: list[Entry] = []
        per_state = {
            "enter": self.enter,
            "exit": self.exit,
            "state": self.state,
            "end": self.end,
            "self": self.self_,
        }
        for b in bindings:
            for name, (state, kind, fn) in b.handlers.items():
                entry = (b.id, fn, name)
                if kind == "any_enter":
                    self.any_enter.append(entry)
                elif kind == "any_state":
                    self.any_state.append(entry)
                elif kind == "pair":
                    x, y = state.split("\0")
                    self.pairs.setdefault((index[x], index[y]), []).append(entry)
                else:
                    if kind == "self":
                        state = state.split("\0")[0]
                    table = per_state[kind]
                    i = index[state]
                    lst = table[i]
                    if lst is None:
                        table[i] = [entry]
                    else:
                        lst.append(entry)
        self.has_negotiation = bool(
            self.any_enter
            or self.pairs
            or any(x is not None for x in self.enter)
            or any(x is not None for x in self.exit)
            or any(x is not None for x in self.self_)
        )
        self.has_final = bool(
            self.any_state
            or any(x is not None for x in self.state)
            or any(x is not None for x in self.end)
        )


class ExceptionHandler:
    """A mixin for handler classes: logs every error the ``Exception`` state receives
    (with its traceback) to the ``trio_am.machine`` logger at ERROR level.

    Example::

        class Worker(am.ExceptionHandler):
            def Work_state(self, e): ...
    """

    def Exception_state(self, e: Any) -> None:
        """Log the error passed with the Exception state (``e.args["err"]``)."""
        import logging

        err = e.args.get("err")
        trace = e.args.get("err_trace")
        logging.getLogger("trio_am.machine").error(
            "[%s] [error] %s%s",
            e.machine.id[:5],
            err,
            f"\n{trace}" if trace else "",
            extra={"machine_id": e.machine.id, "am_level": 2},
        )
