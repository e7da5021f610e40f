"""The query semantics shared by every store (sans-I/O).

A :class:`~trio_am.history.Query` is validated and compiled once against the tracked
states into a :class:`Compiled` query. The in-memory store runs it with :func:`match`
over :class:`Entry` objects; the SQLite store translates the same compiled form to SQL
over columns computed from the same entries. Which states count as activated or
deactivated is decided once, when the entry is built (:class:`Entry`), so both stores
answer alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final

import attrs

from .._core._types import MutationType, Time
from ._errors import QueryError
from ._records import ConditionTime, Query, TimeRecord, TransitionRecord, from_us, to_us

__all__ = [
    "MUT_TYPES",
    "SCALAR_FIELDS",
    "Compiled",
    "Entry",
    "MaskNames",
    "compile_at",
    "compile_query",
    "mask_names",
    "match",
]

#: Scalar fields of :class:`ConditionTime` -> the record column they bound.
SCALAR_FIELDS: Final = (
    ("htime", "htime_us"),
    ("mtime_sum", "mtime_sum"),
    ("mtime_tracked_sum", "mtime_tracked_sum"),
    ("mtime_diff_sum", "mtime_diff_sum"),
    ("mtime_tracked_diff_sum", "mtime_tracked_diff_sum"),
    ("mtime_record_diff_sum", "mtime_record_diff_sum"),
    ("mach_tick", "mach_tick"),
)


#: ``MutationType`` by value, without the enum lookup.
MUT_TYPES: Final = tuple(MutationType)


def mask_names(mask: int, names: Sequence[str]) -> tuple[str, ...]:
    """The names of the bits set in ``mask`` (bit i = ``names[i]``)."""
    if not mask:
        return ()
    return tuple([name for i, name in enumerate(names) if (mask >> i) & 1])


class MaskNames:
    """:func:`mask_names` for one list of names, cached per mask."""

    __slots__ = ("_cache", "_names")

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)
        self._cache: dict[int, tuple[str, ...]] = {0: ()}

    def __call__(self, mask: int) -> tuple[str, ...]:
        found = self._cache.get(mask)
        if found is None:
            found = mask_names(mask, self._names)
            if len(self._cache) < 4096:
                self._cache[mask] = found
        return found


class Entry:
    """One record as a store keeps it: flat fields, bit masks over the tracked states.

    ``active``, ``activated`` and ``deactivated`` have bit i set for tracked state i.
    ``htime_us`` is microseconds since the Unix epoch (UTC). Tick lists are plain tuples
    (the garbage collector stops tracking those), made ``Time`` when a record is built.
    """

    __slots__ = (
        "activated",
        "active",
        "deactivated",
        "htime_us",
        "id",
        "mach_tick",
        "mtime_diff_sum",
        "mtime_record_diff_sum",
        "mtime_sum",
        "mtime_tracked",
        "mtime_tracked_diff",
        "mtime_tracked_diff_sum",
        "mtime_tracked_sum",
        "mut_type",
        "tx",
    )

    def __init__(
        self,
        id: int,
        mut_type: int,
        mtime_sum: int,
        mtime_tracked_sum: int,
        mtime_diff_sum: int,
        mtime_tracked_diff_sum: int,
        mtime_record_diff_sum: int,
        htime_us: int,
        mtime_tracked: tuple[int, ...],
        mtime_tracked_diff: tuple[int, ...],
        mach_tick: int,
        active: int,
        activated: int,
        deactivated: int,
        tx: TransitionRecord | None,
    ) -> None:
        self.id = id
        self.mut_type = mut_type
        self.mtime_sum = mtime_sum
        self.mtime_tracked_sum = mtime_tracked_sum
        self.mtime_diff_sum = mtime_diff_sum
        self.mtime_tracked_diff_sum = mtime_tracked_diff_sum
        self.mtime_record_diff_sum = mtime_record_diff_sum
        self.htime_us = htime_us
        self.mtime_tracked = mtime_tracked
        self.mtime_tracked_diff = mtime_tracked_diff
        self.mach_tick = mach_tick
        self.active = active
        self.activated = activated
        self.deactivated = deactivated
        self.tx = tx

    def time_record(self, names: MaskNames) -> TimeRecord:
        """The public :class:`TimeRecord` of this entry (``names``: of the tracked
        states)."""
        return TimeRecord(
            id=self.id,
            mut_type=MUT_TYPES[self.mut_type],
            mtime_sum=self.mtime_sum,
            mtime_tracked_sum=self.mtime_tracked_sum,
            mtime_diff_sum=self.mtime_diff_sum,
            mtime_tracked_diff_sum=self.mtime_tracked_diff_sum,
            mtime_record_diff_sum=self.mtime_record_diff_sum,
            htime=from_us(self.htime_us),
            mtime_tracked=Time(self.mtime_tracked),
            mtime_tracked_diff=Time(self.mtime_tracked_diff),
            mach_tick=self.mach_tick,
            activated=names(self.activated),
            deactivated=names(self.deactivated),
        )


@attrs.frozen
class Compiled:
    """A validated query, in terms of tracked-state positions and record columns.

    Attributes:
        active: bit mask of states that must be active.
        activated: bit mask of states that must have been activated.
        inactive: bit mask of states that must be inactive.
        deactivated: bit mask of states that must have been deactivated.
        ticks: ``(tracked position, low, high)`` per-state tick ranges.
        ranges: ``(column, low, high)`` closed ranges on scalar columns (``htime_us``
            in microseconds).
    """

    active: int = 0
    activated: int = 0
    inactive: int = 0
    deactivated: int = 0
    ticks: tuple[tuple[int, int, int], ...] = ()
    ranges: tuple[tuple[str, int, int], ...] = ()

    def state_conditions(self) -> list[tuple[int, str]]:
        """``(tracked position, condition)`` pairs, condition being ``active``,
        ``activated``, ``inactive`` or ``deactivated``; for translating to other query
        languages."""
        out: list[tuple[int, str]] = []
        for kind in ("active", "activated", "inactive", "deactivated"):
            mask: int = getattr(self, kind)
            i = 0
            while mask:
                if mask & 1:
                    out.append((i, kind))
                mask >>= 1
                i += 1
        return out


def _positions(
    names: Iterable[str], index: Mapping[str, int], tracked: Sequence[str], what: str
) -> list[int]:
    out = []
    for name in names:
        pos = index.get(name)
        if pos is None:
            raise QueryError(
                f"{what}: state {name!r} is not tracked (tracked: {', '.join(tracked)})",
                state=name,
            )
        out.append(pos)
    return out


def _mask(positions: Iterable[int]) -> int:
    mask = 0
    for p in positions:
        mask |= 1 << p
    return mask


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueryError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _scalar(value: object, name: str, end: str) -> int:
    if name == "htime":
        if not isinstance(value, datetime):
            raise QueryError(f"{end}.htime must be a datetime, not {type(value).__name__}")
        try:
            return to_us(value)
        except ValueError as exc:
            raise QueryError(f"{end}.htime: {exc}") from None
    return _as_int(value, f"{end}.{name}")


def compile_query(query: Query, tracked: Sequence[str]) -> Compiled:
    """Validate ``query`` against the tracked states and compile it.

    Raises:
        QueryError: an untracked state, a range with one end only, a naive datetime,
            ticks that do not match their states, or a value of the wrong type.
    """
    if not isinstance(query, Query):
        raise QueryError(f"expected a Query, got {type(query).__name__}")
    index = {name: i for i, name in enumerate(tracked)}
    masks = {
        kind: _mask(_positions(getattr(query, kind), index, tracked, kind))
        for kind in ("active", "activated", "inactive", "deactivated")
    }
    start, end = query.start, query.end
    for side, cond in (("start", start), ("end", end)):
        if not isinstance(cond, ConditionTime):
            raise QueryError(f"Query.{side} must be a ConditionTime, not {type(cond).__name__}")
        if len(cond.mtime_states) != len(cond.mtime):
            raise QueryError(
                f"{side}: {len(cond.mtime_states)} states in mtime_states but "
                f"{len(cond.mtime)} ticks in mtime"
            )
    if tuple(start.mtime_states) != tuple(end.mtime_states):
        raise QueryError(
            "per-state tick ranges need the same mtime_states in start and end, got "
            f"{list(start.mtime_states)} and {list(end.mtime_states)}"
        )
    positions = _positions(start.mtime_states, index, tracked, "mtime_states")
    ticks = tuple(
        (pos, int(lo), int(hi))
        for pos, lo, hi in zip(positions, start.mtime, end.mtime, strict=True)
    )
    ranges: list[tuple[str, int, int]] = []
    for name, column in SCALAR_FIELDS:
        lo = getattr(start, name)
        hi = getattr(end, name)
        if lo is None and hi is None:
            continue
        if lo is None or hi is None:
            have, missing = ("start", "end") if hi is None else ("end", "start")
            raise QueryError(
                f"{name} is set in Query.{have} only: a range needs both ends "
                f"(set {missing}.{name} too)"
            )
        ranges.append((column, _scalar(lo, name, "start"), _scalar(hi, name, "end")))
    return Compiled(ticks=ticks, ranges=tuple(ranges), **masks)


def compile_at(
    htime: datetime | None, mtime_sum: int | None, mach_tick: int | None
) -> tuple[str, int]:
    """Validate a point in time for a "newest record at or before" lookup: exactly one of
    the three. Returns ``(column, value)``.

    Raises:
        QueryError: none or several given, or a bad value.
    """
    given = [
        (name, value)
        for name, value in (("htime", htime), ("mtime_sum", mtime_sum), ("mach_tick", mach_tick))
        if value is not None
    ]
    if len(given) != 1:
        raise QueryError(
            "give exactly one of htime, mtime_sum, mach_tick "
            f"(got {', '.join(n for n, _ in given) or 'none'})"
        )
    name, value = given[0]
    column = dict(SCALAR_FIELDS)[name]
    return column, _scalar(value, name, "at")


def match(entries: Iterable[Entry], q: Compiled, limit: int = 0) -> list[Entry]:
    """The entries of ``entries`` (newest first) that match ``q``, at most ``limit`` of
    them (0: all)."""
    out: list[Entry] = []
    act, acd, ina, dea = q.active, q.activated, q.inactive, q.deactivated
    ticks = q.ticks
    ranges = q.ranges
    for e in entries:
        if act and e.active & act != act:
            continue
        if acd and e.activated & acd != acd:
            continue
        if ina and e.active & ina:
            continue
        if dea and e.deactivated & dea != dea:
            continue
        if ticks:
            mt = e.mtime_tracked
            if any(mt[pos] < lo or mt[pos] > hi for pos, lo, hi in ticks):
                continue
        if ranges and any(
            getattr(e, column) < lo or getattr(e, column) > hi for column, lo, hi in ranges
        ):
            continue
        out.append(e)
        if limit and len(out) >= limit:
            break
    return out
