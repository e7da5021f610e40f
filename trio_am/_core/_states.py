"""Typed state sets (``am.States``) and reusable schemas (``am.BASIC_SCHEMA``).

A subclass of :class:`States` lists state names as annotations; each gets its own name
as value. Inheritance merges names in Go's embedding order: base classes first (in
MRO-reversed order), then the class's own, without duplicates.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Final

from ._schema import NAME_RE, State

__all__ = ["BASIC_SCHEMA", "BasicStates", "States"]


class States:
    """Base of typed state sets.

    Names are ordered like Go's struct embedding: the names of each base class, left
    to right (each with its own bases first), then the class's own; duplicates keep
    their first position.

    Example::

        class WorkerStates(am.BasicStates):
            Working: str
            Done: str

        ss = WorkerStates()
        ss.Working            # "Working"
        ss.names()            # BasicStates' names, then "Working", "Done"
        ss.groups()           # {"BasicStates": [...], "WorkerStates": ["Working", "Done"]}
    """

    _am_own: ClassVar[tuple[str, ...]] = ()
    _am_names: ClassVar[tuple[str, ...]] = ()
    _am_groups: ClassVar[dict[str, list[str]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own: list[str] = []
        for name in inspect.get_annotations(cls):
            if name.startswith("_") or not NAME_RE.match(name):
                continue
            own.append(name)
            setattr(cls, name, name)
        cls._am_own = tuple(own)
        # Go's embedding order: each base (left to right) with its own bases first,
        # then the class's own names; the first occurrence of a name wins
        names: list[str] = []
        groups: dict[str, list[str]] = {}
        for base in cls.__bases__:
            if isinstance(base, type) and issubclass(base, States) and base is not States:
                for name in base._am_names:
                    if name not in names:
                        names.append(name)
                for gname, group in base._am_groups.items():
                    groups.setdefault(gname, list(group))
        for name in own:
            if name not in names:
                names.append(name)
        if own:
            groups[cls.__name__] = list(own)
        cls._am_names = tuple(names)
        cls._am_groups = groups

    @classmethod
    def names(cls) -> list[str]:
        """All state names, bases first, without duplicates."""
        return list(cls._am_names)

    @classmethod
    def groups(cls) -> dict[str, list[str]]:
        """One group of names per class that declared some (for debuggers)."""
        return {k: list(v) for k, v in cls._am_groups.items()}

    def __iter__(self) -> Any:
        return iter(self._am_names)

    def __contains__(self, name: object) -> bool:
        return name in self._am_names

    def __len__(self) -> int:
        return len(self._am_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._am_names)})"


class BasicStates(States):
    """The basic reusable states; their schema is :data:`BASIC_SCHEMA`."""

    Exception: str
    ErrNetwork: str
    ErrHandlerTimeout: str
    Start: str
    Ready: str
    Healthcheck: str
    Heartbeat: str


#: The schema of :class:`BasicStates`.
BASIC_SCHEMA: Final[dict[str, State]] = {
    "Exception": State(multi=True),
    "ErrNetwork": State(multi=True, require=["Exception"], add=["Exception"]),
    "ErrHandlerTimeout": State(multi=True, require=["Exception"], add=["Exception"]),
    "Start": State(),
    "Ready": State(require=["Start"]),
    "Healthcheck": State(multi=True),
    "Heartbeat": State(),
}
