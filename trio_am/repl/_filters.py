"""Which machines a listing or a group mutation picks (tools.md §3.1 "Filters").

Pure: :meth:`ListFilters.select` works on :class:`MachSnapshot` values, so it is tested
without a network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import attrs

__all__ = ["ListFilters", "MachSnapshot"]

T = TypeVar("T")


@attrs.frozen
class MachSnapshot:
    """What the filters look at for one machine.

    Attributes:
        id: the machine id.
        parent: the parent machine's id, or None.
        connected: its connection is ready.
        clock: ``{state: tick}`` of every state it has.
    """

    id: str
    parent: str | None
    connected: bool
    clock: Mapping[str, int]

    def mtime(self, states: Sequence[str] = ()) -> int:
        """The machine time: the sum of the ticks of ``states`` (all when empty); a state
        the machine lacks counts as 0."""
        if not states:
            return sum(self.clock.values())
        return sum(self.clock.get(s, 0) for s in states)


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return None if pattern is None else re.compile(pattern)


@attrs.frozen
class ListFilters:
    """Filters of ``list``, ``group-add`` and ``group-remove``; unset fields match all.

    Attributes:
        active: states that must all be active (a machine lacking one does not match).
        inactive: states that must all be inactive (and exist).
        mtime_states: the states whose ticks make the machine time (default all).
        mtime_min, mtime_max: bounds of the machine time, inclusive.
        parent: the parent id.
        id_exact, id_regexp, id_partial, id_prefix, id_suffix: machine id matches
            (the regexp is searched anywhere in the id).
        limit: at most this many machines.
        start: skip the first ``start`` machines (by position, before filtering).
        skip_disconnected: leave out machines whose connection is not ready.
    """

    active: tuple[str, ...] = ()
    inactive: tuple[str, ...] = ()
    mtime_states: tuple[str, ...] = ()
    mtime_min: int | None = None
    mtime_max: int | None = None
    parent: str | None = None
    id_exact: str | None = None
    id_regexp: re.Pattern[str] | None = attrs.field(default=None, converter=_compile)
    id_partial: str | None = None
    id_prefix: str | None = None
    id_suffix: str | None = None
    limit: int | None = None
    start: int = 0
    skip_disconnected: bool = False

    def __attrs_post_init__(self) -> None:
        for name in ("mtime_min", "mtime_max", "limit"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start}")

    def matches(self, m: MachSnapshot) -> bool:
        """Whether one machine passes every filter but ``limit`` and ``start``."""
        if self.skip_disconnected and not m.connected:
            return False
        mid = m.id
        if self.id_exact is not None and mid != self.id_exact:
            return False
        if self.id_regexp is not None and not self.id_regexp.search(mid):
            return False
        if self.id_partial is not None and self.id_partial not in mid:
            return False
        if self.id_prefix is not None and not mid.startswith(self.id_prefix):
            return False
        if self.id_suffix is not None and not mid.endswith(self.id_suffix):
            return False
        if self.parent is not None and m.parent != self.parent:
            return False
        if self.mtime_min is not None or self.mtime_max is not None:
            t = m.mtime(self.mtime_states)
            if self.mtime_min is not None and t < self.mtime_min:
                return False
            if self.mtime_max is not None and t > self.mtime_max:
                return False
        clock = m.clock
        for s in self.active:
            if s not in clock or not clock[s] & 1:
                return False
        return all(s in clock and not clock[s] & 1 for s in self.inactive)

    def select(self, items: Sequence[T], snapshot: Callable[[T], MachSnapshot | None]) -> list[T]:
        """The items that pass, in order: the first ``start`` are skipped, then at most
        ``limit`` are taken. ``snapshot(item)`` returning None (a machine never seen)
        leaves the item out."""
        out: list[T] = []
        for i, item in enumerate(items):
            if i < self.start:
                continue
            if self.limit is not None and len(out) >= self.limit:
                break
            snap = snapshot(item)
            if snap is not None and self.matches(snap):
                out.append(item)
        return out
