"""The values of :mod:`trio_am.history`: the tracking config, the records, the queries.

Pure data (frozen ``attrs`` classes): no I/O, no Trio. Both stores hand out these same
classes, so a record read from SQLite compares equal to the one kept in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs

from .._core._types import MutationType, Time

__all__ = [
    "EPOCH",
    "ConditionTime",
    "Config",
    "MachineRecord",
    "MemoryRecord",
    "Query",
    "TimeRecord",
    "TransitionRecord",
    "from_us",
    "to_us",
]

#: The Unix epoch in UTC; human times are kept as whole microseconds since it.
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware ``datetime``.

    Raises:
        ValueError: ``value`` is naive (its time zone is unknown).
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a naive datetime ({value.isoformat()}) has no time zone; pass UTC")
    return (value - EPOCH) // _US


def from_us(us: int) -> datetime:
    """The UTC ``datetime`` of ``us`` microseconds since the Unix epoch."""
    return EPOCH + timedelta(microseconds=us)


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """A lenient list of state names: one name, any iterable of names, or None."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _str_map(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value) if value else {}


def _ticks(value: Iterable[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(int(v) for v in value)


# config --------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class Config:
    """What a history records (Go's ``BaseConfig``).

    A transition is recorded when it was accepted (or ``track_rejected`` is set), was not a
    dry run (checks are never recorded) and passes the ``called`` / ``changed`` filters:

    1. with no allow list (``called`` without ``called_exclude``, ``changed`` without
       ``changed_exclude``) every transition is recorded, otherwise none is by default;
    2. when it called a state of ``called``, it is recorded, or not with
       ``called_exclude``;
    3. when it changed the tick of a state of ``changed``, it is recorded, or not with
       ``changed_exclude``; this rule, checked last, overrules the previous one.

    Attributes:
        tracked_states: the states whose ticks each record keeps (non-empty, after the
            allow lists joined it), in this order. One name or a list.
        called: states called by the mutation (see above).
        called_exclude: turns ``called`` into a block list.
        changed: states whose tick the transition changed (see above).
        changed_exclude: turns ``changed`` into a block list.
        track_rejected: record canceled transitions too.
        store_transitions: keep a :class:`TransitionRecord` with each record.
        store_schema: keep the machine's schema in the :class:`MachineRecord`.
        max_records: how many records are kept; the oldest are dropped beyond it.

    Example::

        cfg = Config(tracked_states=["Start", "Ready"], max_records=10_000)
    """

    tracked_states: tuple[str, ...] = attrs.field(default=(), converter=_names)
    called: tuple[str, ...] = attrs.field(default=(), converter=_names)
    called_exclude: bool = attrs.field(default=False, converter=bool)
    changed: tuple[str, ...] = attrs.field(default=(), converter=_names)
    changed_exclude: bool = attrs.field(default=False, converter=bool)
    track_rejected: bool = attrs.field(default=False, converter=bool)
    store_transitions: bool = attrs.field(default=False, converter=bool)
    store_schema: bool = attrs.field(default=False, converter=bool)
    max_records: int = 1000


# records -------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TimeRecord:
    """One recorded transition: the machine time after it, in several views.

    "Previous record" below means the previous record of this history; the first record
    compares with the machine's time when tracking started, and the first one after the
    machine's time was replaced (``restore()``, ``mach.import_data()``) with that time.

    Attributes:
        id: the record's number, from 1, growing by one per record of this machine (it
            goes on across restarts of an SQLite store).
        mut_type: the mutation type (``am.MutationType``).
        mtime_sum: the sum of all the machine's ticks after the transition.
        mtime_tracked_sum: the same for the tracked states only.
        mtime_diff_sum: how much ``mtime_sum`` grew in this transition.
        mtime_tracked_diff_sum: how much ``mtime_tracked_sum`` grew in this transition.
        mtime_record_diff_sum: how much ``mtime_sum`` grew since the previous record.
        htime: the human time of the record (an aware UTC ``datetime``).
        mtime_tracked: the ticks of the tracked states after the transition, in the
            config's order.
        mtime_tracked_diff: how much each of them grew in this transition.
        mach_tick: the machine tick (``mach.machine_tick``, +1 per restore).
        activated: tracked states active here and inactive in the previous record.
        deactivated: tracked states inactive here and active in the previous record.
    """

    id: int
    mut_type: MutationType
    mtime_sum: int
    mtime_tracked_sum: int
    mtime_diff_sum: int
    mtime_tracked_diff_sum: int
    mtime_record_diff_sum: int
    htime: datetime
    mtime_tracked: Time
    mtime_tracked_diff: Time
    mach_tick: int
    activated: tuple[str, ...] = ()
    deactivated: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class TransitionRecord:
    """Details of a recorded transition (kept with ``store_transitions``).

    Attributes:
        tx_id: the transition's id (``tx.id``).
        time_record_id: the id of its :class:`TimeRecord`.
        source_tx: the id of the transition on another machine that caused it, or None.
        source_mach: that machine's id, or None.
        is_auto: an auto transition.
        is_accepted: it was accepted (False only with ``track_rejected``).
        is_check: a dry run; always False, as checks are never recorded.
        is_broken: always False: trio_am has no broken transitions (Go's panics inside
            the machine's own code).
        queue_len: mutations waiting in the queue when it started.
        queued_at: the queue tick of its mutation (0 when it was not queued).
        executed_at: the machine's queue tick when it ran (0 when it was not queued).
        called: the called states.
        arguments: the mutation args as text, filtered by the machine's log args mapper
            (``mach.set_log_args``).
    """

    tx_id: str
    time_record_id: int
    source_tx: str | None = None
    source_mach: str | None = None
    is_auto: bool = False
    is_accepted: bool = True
    is_check: bool = False
    is_broken: bool = False
    queue_len: int = 0
    queued_at: int = 0
    executed_at: int = 0
    called: tuple[str, ...] = attrs.field(default=(), converter=_names)
    arguments: Mapping[str, str] = attrs.field(factory=dict, converter=_str_map, hash=False)


@attrs.frozen(kw_only=True)
class MemoryRecord:
    """What a query returns: a :class:`TimeRecord` and, when asked for and stored, its
    :class:`TransitionRecord`."""

    time: TimeRecord
    transition: TransitionRecord | None = None


@attrs.frozen(kw_only=True)
class MachineRecord:
    """The tracked machine as of the last record or sync.

    Attributes:
        mach_id: the machine id.
        state_names: the machine's states, in its order (the layout of ``mtime``).
        schema: the schema as plain dicts (``State.to_dict()``) with ``store_schema``,
            else None.
        first_tracking: when this machine was first tracked (by this store).
        last_tracking: when the current tracking session started.
        last_sync: when records were last made visible to queries (a flush for SQLite).
        mtime: the machine's time (all states) as of the last record or sync.
        mtime_sum: its sum.
        mach_tick: the machine tick then.
        next_id: the id the next record will get.
    """

    mach_id: str
    state_names: tuple[str, ...] = attrs.field(converter=_names)
    schema: Mapping[str, Mapping[str, Any]] | None = attrs.field(default=None, hash=False)
    first_tracking: datetime
    last_tracking: datetime
    last_sync: datetime
    mtime: Time = attrs.field(converter=Time)
    mtime_sum: int
    mach_tick: int
    next_id: int

    def to_import_data(self) -> dict[str, Any]:
        """A snapshot for ``mach.import_data()`` (what ``mach.export()`` returns): the id,
        the state order, the time and the machine tick."""
        return {
            "id": self.mach_id,
            "state_names": list(self.state_names),
            "time": list(self.mtime),
            "machine_tick": self.mach_tick,
        }


# queries -------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ConditionTime:
    """One end of the time ranges of a :class:`Query`.

    Each field set here needs its counterpart in the other end: together they make a
    closed range (both ends included). None (or empty) leaves the field unconstrained.

    Attributes:
        htime: a human time (an aware ``datetime``).
        mtime_sum: a bound of :attr:`TimeRecord.mtime_sum`; the others likewise.
        mtime_tracked_sum: see above.
        mtime_diff_sum: see above.
        mtime_tracked_diff_sum: see above.
        mtime_record_diff_sum: see above.
        mach_tick: see above.
        mtime_states: tracked states with a bound on their ticks (the same states, in
            the same order, in both ends).
        mtime: the bounds, one per state of ``mtime_states``.
    """

    htime: datetime | None = None
    mtime_sum: int | None = None
    mtime_tracked_sum: int | None = None
    mtime_diff_sum: int | None = None
    mtime_tracked_diff_sum: int | None = None
    mtime_record_diff_sum: int | None = None
    mach_tick: int | None = None
    mtime_states: tuple[str, ...] = attrs.field(default=(), converter=_names)
    mtime: tuple[int, ...] = attrs.field(default=(), converter=_ticks)


@attrs.frozen
class Query:
    """Conditions on one record; a record matches when it meets all of them.

    Attributes:
        active: states active in the record.
        activated: states active in the record and inactive in the previous one.
        inactive: states inactive in the record.
        deactivated: states inactive in the record and active in the previous one.
        start: the lower ends of the time ranges.
        end: the upper ends of the time ranges.

    Every state named must be tracked. An empty query matches every record.

    Example::

        Query(activated=["Ready"], start=ConditionTime(mach_tick=0),
              end=ConditionTime(mach_tick=0))
    """

    active: tuple[str, ...] = attrs.field(default=(), converter=_names)
    activated: tuple[str, ...] = attrs.field(default=(), converter=_names)
    inactive: tuple[str, ...] = attrs.field(default=(), converter=_names)
    deactivated: tuple[str, ...] = attrs.field(default=(), converter=_names)
    start: ConditionTime = attrs.field(factory=ConditionTime, kw_only=True)
    end: ConditionTime = attrs.field(factory=ConditionTime, kw_only=True)
