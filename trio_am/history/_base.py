"""What every history store shares: the tracer, the record builder and the public API.

Sans-I/O: the tracer turns a finished transition into an :class:`~._query.Entry` and hands
it to the store (``_store``); queries are validated and compiled here and run by the
store. A store implements the few ``_``-methods marked abstract.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import attrs

from .._core._engine import Engine
from .._core._logargs import default_log_args
from .._core._tracer import TracerBase
from .._core._types import Time, Transition
from ._errors import ConfigError, HistoryDisposedError, HistoryError, QueryError
from ._query import Compiled, Entry, MaskNames, compile_at, compile_query
from ._records import (
    ConditionTime,
    Config,
    MachineRecord,
    MemoryRecord,
    Query,
    TransitionRecord,
    from_us,
    to_us,
)

__all__ = ["BaseMemory", "Clock", "ErrorHandler"]

_logger = logging.getLogger("trio_am.history")

#: A source of human time: returns an aware ``datetime`` (UTC is stored).
Clock = Callable[[], datetime]
#: Called with errors a history cannot raise to anyone (a failed background write).
ErrorHandler = Callable[[BaseException], Any]


def _log_error(exc: BaseException) -> None:
    _logger.error("history: %s", exc, exc_info=exc)


class _Tracer(TracerBase):
    """Feeds one history from one machine's tracer hooks."""

    def __init__(self, hist: BaseMemory) -> None:
        self._hist = hist

    def transition_end(self, tx: Transition) -> None:
        self._hist._record(tx)

    def schema_change(self, mach: Engine, old_schema: Any) -> None:
        self._hist._layout_changed()

    def verify_states(self, mach: Engine) -> None:
        self._hist._layout_changed()

    def machine_dispose(self, mach: Engine) -> None:
        self._hist._machine_disposed()

    def __repr__(self) -> str:
        return f"<history tracer of {self._hist!r}>"


def _resolve_config(config: Config | str | Iterable[str], mach: Engine) -> Config:
    if not isinstance(config, Config):
        if isinstance(config, (str, Iterable)):
            config = Config(tracked_states=config)
        else:
            raise ConfigError(
                f"expected a Config or a list of states, got {type(config).__name__}",
                machine_id=mach.id,
            )
    tracked = list(config.tracked_states)
    if not config.called_exclude:
        tracked += config.called
    if not config.changed_exclude:
        tracked += config.changed
    for name in (*tracked, *config.called, *config.changed):
        if not isinstance(name, str) or not mach.has1(name):
            raise ConfigError(
                f"state {name!r} is not in the machine's schema",
                machine_id=mach.id,
                state=str(name),
            )
    tracked = list(dict.fromkeys(tracked))
    if not tracked:
        raise ConfigError(
            "no states to track: set tracked_states (or a called/changed allow list)",
            machine_id=mach.id,
        )
    max_records = config.max_records
    if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
        raise ConfigError(
            f"max_records must be a positive int, not {max_records!r}", machine_id=mach.id
        )
    return attrs.evolve(config, tracked_states=tuple(tracked))


def _active_mask(ticks: Iterable[int]) -> int:
    mask = 0
    bit = 1
    for t in ticks:
        if t & 1:
            mask |= bit
        bit <<= 1
    return mask


class BaseMemory(abc.ABC):
    """The history API both stores offer (Go's ``MemoryApi``): it records a machine's
    transitions through a tracer, answers queries about them, and finds the machine time
    of a past moment.

    Queries are synchronous and answer from every record made so far. A history stops
    recording when its machine is disposed (after writing what it holds) and keeps
    answering until :meth:`dispose`; it is also a context manager that disposes itself.
    """

    def __init__(
        self,
        mach: Engine,
        config: Config | str | Iterable[str],
        *,
        clock: Clock | None = None,
        on_error: ErrorHandler | None = None,
    ) -> None:
        if not isinstance(mach, Engine):
            raise TypeError(f"expected a trio_am machine, not {type(mach).__name__}")
        if mach.disposed:
            raise HistoryError("cannot track a disposed machine", machine_id=mach.id)
        self._mach = mach
        cfg = _resolve_config(config, mach)
        self._config = cfg
        self._tracked: tuple[str, ...] = cfg.tracked_states
        self._mask_names = MaskNames(self._tracked)
        self._track_rejected = cfg.track_rejected
        self._store_tx = cfg.store_transitions
        self._filtered = bool(cfg.called or cfg.changed)
        self._called_set = frozenset(cfg.called)
        self._default_match = not (
            (cfg.called and not cfg.called_exclude) or (cfg.changed and not cfg.changed_exclude)
        )
        self._idxs: list[int] = []
        self._changed_idxs: list[int] = []
        self._state_names: tuple[str, ...] = ()
        self._schema: dict[str, dict[str, Any]] | None = None
        self._clock = clock
        if clock is not None:
            sample = clock()
            if not isinstance(sample, datetime) or sample.utcoffset() is None:
                raise ConfigError(
                    f"clock() must return an aware datetime, not {sample!r}", machine_id=mach.id
                )
        self._on_error: ErrorHandler = on_error or _log_error
        self._tracer = _Tracer(self)
        self._bound = False
        self._disposed = False
        self.stored_record: MachineRecord | None = None
        """The machine record found when the history was opened (an SQLite file, or
        ``machine_record=`` of :class:`Memory`), before this session changed it; what
        :meth:`restore` restores."""
        # the live machine record
        now = self._now_us()
        self._first_tracking = now
        self._last_tracking = now
        self._last_sync = now
        self._next_id = 1
        self._mtime: Time = mach.time()
        self._mach_tick = mach.machine_tick
        # the "previous record" of the next one: the machine when tracking started, then
        # each record, and the machine's time again whenever it changed outside of a
        # transition (import_data), seen as a transition not starting where the last ended
        self._prev_active = 0
        self._prev_sum = 0
        self._seen: Time = self._mtime
        self._layout_changed()
        self._set_baseline(self._mtime)

    # ----------------------------------------------------------------- setup (stores)
    def _open(self, stored: MachineRecord | None, next_id: int | None = None) -> None:
        """Adopt the stored machine record (if any) and start recording."""
        mach = self._mach
        if stored is not None:
            if stored.mach_id != mach.id:
                raise ConfigError(
                    f"the machine record is of machine {stored.mach_id!r}", machine_id=mach.id
                )
            self._first_tracking = to_us(stored.first_tracking)
            self._next_id = stored.next_id
        if next_id is not None:
            self._next_id = max(self._next_id, next_id)
        self.stored_record = stored
        mach.bind_tracer(self._tracer)
        self._bound = True

    def _set_baseline(self, mtime: Sequence[int]) -> None:
        self._prev_active = _active_mask(mtime[i] for i in self._idxs)
        self._prev_sum = sum(mtime)

    def _now_us(self) -> int:
        clock = self._clock
        if clock is None:
            return time.time_ns() // 1000
        return to_us(clock())

    # ----------------------------------------------------------------- tracer side
    def _layout_changed(self) -> None:
        """The machine's state order or schema changed: recompute positions."""
        mach = self._mach
        # same ticks, new layout: not a time change (see _record)
        self._seen = mach.time()
        self._idxs = mach.index(list(self._tracked))
        self._changed_idxs = mach.index(list(self._config.changed))
        self._state_names = tuple(mach.state_names)
        if self._config.store_schema:
            self._schema = {name: state.to_dict() for name, state in mach.schema.items()}

    def _wanted(self, tx: Transition, before: Sequence[int], after: Sequence[int]) -> bool:
        cfg = self._config
        ok = self._default_match
        if cfg.called:
            called = self._called_set
            if any(name in called for name in tx.mutation.called):
                ok = not cfg.called_exclude
        if cfg.changed and any(after[i] != before[i] for i in self._changed_idxs):
            ok = not cfg.changed_exclude
        return ok

    def _record(self, tx: Transition) -> None:
        """``transition_end``: build an entry and store it (the hot path)."""
        mut = tx.mutation
        if mut.is_check or (not tx.is_accepted and not self._track_rejected):
            return
        mach = self._mach
        before = tx.time_before
        if before != self._seen:  # the time was replaced (a restore): a new baseline
            self._set_baseline(before)
        after = self._seen = mach.time()
        if self._filtered and not self._wanted(tx, before, after):
            return
        idxs = self._idxs
        tracked = tuple([after[i] for i in idxs])
        tracked_before = [before[i] for i in idxs]
        mtime_sum = sum(after)
        tracked_sum = sum(tracked)
        active = _active_mask(tracked)
        prev = self._prev_active
        rid = self._next_id
        self._next_id = rid + 1
        entry = Entry(
            rid,
            int(mut.type),
            mtime_sum,
            tracked_sum,
            mtime_sum - sum(before),
            tracked_sum - sum(tracked_before),
            mtime_sum - self._prev_sum,
            self._now_us(),
            tracked,
            tuple([a - b for a, b in zip(tracked, tracked_before, strict=True)]),
            mach.machine_tick,
            active,
            active & ~prev,
            prev & ~active,
            self._tx_record(tx, rid) if self._store_tx else None,
        )
        self._prev_active = active
        self._prev_sum = mtime_sum
        self._mtime = after
        self._mach_tick = entry.mach_tick
        self._store(entry)

    def _tx_record(self, tx: Transition, rid: int) -> TransitionRecord:
        mut = tx.mutation
        mach = self._mach
        arguments: dict[str, str] = {}
        if mut.args:
            mapper = getattr(mach, "_log_args", None) or default_log_args
            try:
                arguments = {str(k): str(v) for k, v in mapper(mut.args).items()}
            except Exception as exc:  # a user's mapper; never lose the record for it
                arguments = {"<error>": f"args mapper raised {exc!r}"}
        src = mut.source
        queued_at = mut.queue_tick
        return TransitionRecord(
            tx_id=tx.id,
            time_record_id=rid,
            source_tx=src.tx_id if src is not None else None,
            source_mach=src.mach_id if src is not None else None,
            is_auto=mut.is_auto,
            is_accepted=tx.is_accepted,
            is_check=mut.is_check,
            is_broken=False,
            queue_len=tx.queue_len,
            queued_at=queued_at,
            executed_at=mach.queue_tick if queued_at else 0,
            called=tuple(mut.called),
            arguments=arguments,
        )

    def _machine_disposed(self) -> None:
        """``machine_dispose``: keep the last machine time, write, stop recording."""
        self._mtime = self._mach.time()
        self._mach_tick = self._mach.machine_tick
        try:
            self._sync()
        except Exception as exc:  # reported; the records stay buffered
            self._report(exc)
        self._detach()

    def _report(self, exc: BaseException) -> None:
        """Hand an error nobody waits for to ``on_error`` (which must not break us)."""
        try:
            self._on_error(exc)
        except Exception:
            _logger.exception("history: on_error raised while reporting %r", exc)

    def _detach(self) -> None:
        if self._bound:
            self._bound = False
            self._mach.detach_tracer(self._tracer)

    # ----------------------------------------------------------------- store side
    @abc.abstractmethod
    def _store(self, entry: Entry) -> None:
        """Keep a new entry (called from the tracer: must be cheap and never raise)."""

    @abc.abstractmethod
    def _find(self, q: Compiled, limit: int, with_tx: bool) -> list[MemoryRecord]:
        """Entries matching ``q``, newest first."""

    @abc.abstractmethod
    def _at(self, column: str, value: int, with_tx: bool) -> MemoryRecord | None:
        """The newest entry whose ``column`` is <= ``value``."""

    @abc.abstractmethod
    def _export(self, with_tx: bool) -> list[MemoryRecord]:
        """Every entry, oldest first."""

    @abc.abstractmethod
    def _count(self) -> int:
        """How many records are kept."""

    @abc.abstractmethod
    def _sync(self) -> None:
        """Make every record visible (and durable, for a persistent store)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the storage (after a final ``_sync``)."""

    def _record_of(self, e: Entry, with_tx: bool) -> MemoryRecord:
        return MemoryRecord(
            time=e.time_record(self._mask_names), transition=e.tx if with_tx else None
        )

    # ----------------------------------------------------------------- public API
    @property
    def mach(self) -> Engine:
        """The tracked machine."""
        return self._mach

    @property
    def config(self) -> Config:
        """The config in use: ``tracked_states`` includes the states the allow lists
        added, without duplicates."""
        return self._config

    @property
    def tracked_states(self) -> tuple[str, ...]:
        """The tracked states: the layout of ``mtime_tracked`` in every record."""
        return self._tracked

    @property
    def disposed(self) -> bool:
        """True once :meth:`dispose` ran."""
        return self._disposed

    @property
    def recording(self) -> bool:
        """True while the history is bound to its machine (until the machine or the
        history is disposed)."""
        return self._bound

    def is_tracked(self, states: str | Iterable[str]) -> bool:
        """True when every state given is tracked."""
        names = (states,) if isinstance(states, str) else tuple(states)
        return all(name in self._tracked for name in names)

    def index(self, states: str | Iterable[str]) -> list[int]:
        """Positions of the states in ``tracked_states`` (-1 for an untracked one)."""
        names = (states,) if isinstance(states, str) else tuple(states)
        pos = {name: i for i, name in enumerate(self._tracked)}
        return [pos.get(name, -1) for name in names]

    def machine_record(self) -> MachineRecord:
        """The machine as of the last record (or sync): its time, tick, next record id
        and, with ``store_schema``, its schema."""
        self._check()
        return MachineRecord(
            mach_id=self._mach.id,
            state_names=self._state_names,
            schema=self._schema,
            first_tracking=from_us(self._first_tracking),
            last_tracking=from_us(self._last_tracking),
            last_sync=from_us(self._last_sync),
            mtime=self._mtime,
            mtime_sum=sum(self._mtime),
            mach_tick=self._mach_tick,
            next_id=self._next_id,
        )

    def find_latest(
        self, query: Query | None = None, limit: int = 0, with_tx: bool = False
    ) -> list[MemoryRecord]:
        """The records matching ``query``, newest first.

        Args:
            query: the conditions (None or ``Query()``: every record).
            limit: at most this many records (0: all).
            with_tx: include each record's :class:`TransitionRecord` (when the config
                stores them).

        Raises:
            QueryError: the query names an untracked state or is malformed.
            HistoryDisposedError: the history was disposed.
            StoreError: the storage failed.
        """
        self._check()
        q = compile_query(query if query is not None else Query(), self._tracked)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise QueryError(f"limit must be an int >= 0, not {limit!r}")
        return self._find(q, limit, bool(with_tx) and self._store_tx)

    def _between(self, kind: str, state: str, start: datetime, end: datetime) -> bool:
        query = Query(
            **{kind: (state,)},
            start=ConditionTime(htime=start),
            end=ConditionTime(htime=end),
        )
        return bool(self.find_latest(query, limit=1))

    def activated_between(self, state: str, start: datetime, end: datetime) -> bool:
        """True when a record with ``htime`` in ``[start, end]`` has ``state`` activated
        (active there, inactive in the previous record).

        Raises:
            QueryError: ``state`` is not tracked, or a ``datetime`` is naive.
        """
        return self._between("activated", state, start, end)

    def active_between(self, state: str, start: datetime, end: datetime) -> bool:
        """True when a record with ``htime`` in ``[start, end]`` has ``state`` active.

        Raises:
            QueryError: ``state`` is not tracked, or a ``datetime`` is naive.
        """
        return self._between("active", state, start, end)

    def deactivated_between(self, state: str, start: datetime, end: datetime) -> bool:
        """True when a record with ``htime`` in ``[start, end]`` has ``state``
        deactivated (inactive there, active in the previous record).

        Raises:
            QueryError: ``state`` is not tracked, or a ``datetime`` is naive.
        """
        return self._between("deactivated", state, start, end)

    def inactive_between(self, state: str, start: datetime, end: datetime) -> bool:
        """True when a record with ``htime`` in ``[start, end]`` has ``state`` inactive.

        Raises:
            QueryError: ``state`` is not tracked, or a ``datetime`` is naive.
        """
        return self._between("inactive", state, start, end)

    def record_at(
        self,
        *,
        htime: datetime | None = None,
        mtime_sum: int | None = None,
        mach_tick: int | None = None,
        with_tx: bool = False,
    ) -> MemoryRecord | None:
        """Travel back: the newest record made at or before a moment given by exactly one
        of a human time, a machine time sum or a machine tick; None when no record is
        that old.

        Raises:
            QueryError: none or several of the three given, or a naive ``datetime``.
        """
        self._check()
        column, value = compile_at(htime, mtime_sum, mach_tick)
        return self._at(column, value, bool(with_tx) and self._store_tx)

    def clock_at(
        self,
        *,
        htime: datetime | None = None,
        mtime_sum: int | None = None,
        mach_tick: int | None = None,
    ) -> dict[str, int] | None:
        """The recorded ticks of the tracked states at a past moment (see
        :meth:`record_at`), as ``{state: tick}``; None when no record is that old."""
        rec = self.record_at(htime=htime, mtime_sum=mtime_sum, mach_tick=mach_tick)
        if rec is None:
            return None
        return dict(zip(self._tracked, rec.time.mtime_tracked, strict=True))

    def export(self, with_tx: bool = True) -> list[MemoryRecord]:
        """Every kept record, oldest first."""
        self._check()
        return self._export(bool(with_tx) and self._store_tx)

    def count(self) -> int:
        """How many records are kept (at most ``config.max_records``)."""
        self._check()
        return self._count()

    def sync(self) -> None:
        """Refresh the machine record from the machine and make every record visible to
        queries and, for a persistent store, durable. Blocks for a persistent store.

        Raises:
            StoreError: the storage failed (the records stay buffered).
        """
        self._check()
        if self._bound:
            self._mtime = self._mach.time()
            self._mach_tick = self._mach.machine_tick
        self._sync()

    def restore(self, record: MachineRecord | None = None) -> MachineRecord:
        """Restore the machine's time from a machine record (by default
        :attr:`stored_record`, the one found when the history was opened) with
        ``mach.import_data()``: ticks and state order come back, the machine tick grows
        by one and ``MachineRestored`` is added when the schema has it. For every history
        of the machine, the restored time becomes the "previous record" of the next
        record (as after any ``import_data``).

        Returns:
            The record restored from.

        Raises:
            HistoryError: there is no record to restore from.
            trio_am.Error: the record does not fit the machine (other states).
        """
        self._check()
        rec = record if record is not None else self.stored_record
        if rec is None:
            raise HistoryError(
                "nothing to restore: no stored machine record", machine_id=self._mach.id
            )
        data = rec.to_import_data()
        names = list(rec.state_names)
        pos = {name: i for i, name in enumerate(names)}
        missing = [s for s in self._tracked if s not in pos]
        if missing or len(names) != len(rec.mtime):
            raise HistoryError(
                f"the machine record does not fit the machine (missing {missing})",
                machine_id=self._mach.id,
            )
        self._mach.import_data(data)
        self._mtime = self._mach.time()
        self._mach_tick = self._mach.machine_tick
        return rec

    def dispose(self) -> None:
        """Stop recording, write what is buffered, release the storage and forget the
        records. Idempotent; queries raise :class:`HistoryDisposedError` afterwards.

        Raises:
            StoreError: the final write failed (the storage is released anyway).
        """
        if self._disposed:
            return
        self._detach()
        try:
            self._sync()
        finally:
            self._disposed = True
            self._close()

    def _check(self) -> None:
        if self._disposed:
            raise HistoryDisposedError("the history was disposed", machine_id=self._mach.id)

    def __enter__(self) -> BaseMemory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.dispose()

    def __repr__(self) -> str:
        state = "disposed" if self._disposed else ("recording" if self._bound else "stopped")
        return f"<{type(self).__name__} of {self._mach.id} {state}>"
