"""The SQLite history store (standard library ``sqlite3``).

Tables (one file may hold many machines; times are microseconds since the Unix epoch,
UTC; lists are JSON):

* ``machines``: one row per machine id, the :class:`MachineRecord` plus the tracked
  states (the layout of ``times.mtime_tracked``);
* ``states``: the tracked states of each machine (``idx`` in the machine, ``tracked_idx``
  in the records);
* ``times``: one row per :class:`TimeRecord`, keyed ``(machine_id, id)``;
* ``ticks``: one row per record and tracked state: ``tick``, ``active``, ``activated``,
  ``deactivated`` (what state conditions of queries join on);
* ``transitions``: one row per :class:`TransitionRecord` (created with
  ``store_transitions``).

Writes are batched: the tracer appends to an in-memory buffer, and the buffer is written
in one transaction by :meth:`SQLiteMemory.sync`, by every query, by the Trio task
:meth:`SQLiteMemory.run` (in a worker thread) when it runs, and otherwise by the tracer
itself once ``batch_size`` records wait. A failed write keeps its records buffered.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import trio

from .._core._types import Time
from ._base import BaseMemory, Clock, ErrorHandler
from ._errors import ConfigError, HistoryError, StoreError
from ._query import MUT_TYPES, Compiled, Entry
from ._records import (
    Config,
    MachineRecord,
    MemoryRecord,
    TimeRecord,
    TransitionRecord,
    from_us,
)

if TYPE_CHECKING:
    from .._core._engine import Engine

__all__ = ["SCHEMA_VERSION", "SQLiteMemory", "list_machines", "open_sqlite"]

#: ``PRAGMA user_version`` of the files this module writes.
SCHEMA_VERSION: Final = 1

_DDL: Final = """
CREATE TABLE IF NOT EXISTS machines (
    id INTEGER PRIMARY KEY,
    mach_id TEXT NOT NULL UNIQUE,
    state_names TEXT NOT NULL,
    schema TEXT,
    tracked_states TEXT NOT NULL,
    first_tracking INTEGER NOT NULL,
    last_tracking INTEGER NOT NULL,
    last_sync INTEGER NOT NULL,
    mtime TEXT NOT NULL,
    mtime_sum INTEGER NOT NULL,
    mach_tick INTEGER NOT NULL,
    next_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    id INTEGER PRIMARY KEY,
    machine_id INTEGER NOT NULL REFERENCES machines (id),
    name TEXT NOT NULL,
    idx INTEGER NOT NULL,
    tracked_idx INTEGER NOT NULL,
    UNIQUE (machine_id, name)
);
CREATE TABLE IF NOT EXISTS times (
    machine_id INTEGER NOT NULL,
    id INTEGER NOT NULL,
    mut_type INTEGER NOT NULL,
    mtime_sum INTEGER NOT NULL,
    mtime_tracked_sum INTEGER NOT NULL,
    mtime_diff_sum INTEGER NOT NULL,
    mtime_tracked_diff_sum INTEGER NOT NULL,
    mtime_record_diff_sum INTEGER NOT NULL,
    htime_us INTEGER NOT NULL,
    mtime_tracked TEXT NOT NULL,
    mtime_tracked_diff TEXT NOT NULL,
    mach_tick INTEGER NOT NULL,
    activated TEXT NOT NULL,
    deactivated TEXT NOT NULL,
    PRIMARY KEY (machine_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ticks (
    machine_id INTEGER NOT NULL,
    time_id INTEGER NOT NULL,
    state_id INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    active INTEGER NOT NULL,
    activated INTEGER NOT NULL,
    deactivated INTEGER NOT NULL,
    PRIMARY KEY (machine_id, time_id, state_id)
) WITHOUT ROWID;
"""

_DDL_TRANSITIONS: Final = """
CREATE TABLE IF NOT EXISTS transitions (
    machine_id INTEGER NOT NULL,
    time_id INTEGER NOT NULL,
    tx_id TEXT NOT NULL,
    source_tx TEXT,
    source_mach TEXT,
    is_auto INTEGER NOT NULL,
    is_accepted INTEGER NOT NULL,
    is_check INTEGER NOT NULL,
    is_broken INTEGER NOT NULL,
    queue_len INTEGER NOT NULL,
    queued_at INTEGER NOT NULL,
    executed_at INTEGER NOT NULL,
    called TEXT NOT NULL,
    arguments TEXT NOT NULL,
    PRIMARY KEY (machine_id, time_id)
) WITHOUT ROWID;
"""

_MACHINE_COLS: Final = (
    "mach_id, state_names, schema, tracked_states, first_tracking, last_tracking, "
    "last_sync, mtime, mtime_sum, mach_tick, next_id"
)
_TIME_COLS: Final = (
    "t.id, t.mut_type, t.mtime_sum, t.mtime_tracked_sum, t.mtime_diff_sum, "
    "t.mtime_tracked_diff_sum, t.mtime_record_diff_sum, t.htime_us, t.mtime_tracked, "
    "t.mtime_tracked_diff, t.mach_tick, t.activated, t.deactivated"
)
_TX_COLS: Final = (
    "x.tx_id, x.source_tx, x.source_mach, x.is_auto, x.is_accepted, x.is_check, "
    "x.is_broken, x.queue_len, x.queued_at, x.executed_at, x.called, x.arguments"
)
_N_TIME_COLS: Final = 13
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_EMPTY: Final = "[]"

_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads


def _clamp(value: int) -> int:
    """Bounds beyond SQLite's integers mean "no bound" for the values it can hold."""
    return _INT64_MIN if value < _INT64_MIN else (_INT64_MAX if value > _INT64_MAX else value)


def _ticks_json(ticks: Sequence[int]) -> str:
    """JSON of a list of ints, faster than ``json.dumps`` (``[1, 0, 3]``)."""
    return str(list(ticks))


def _ticks_parse(text: str) -> Time:
    """The ticks of :func:`_ticks_json` (any JSON list of ints), faster than ``json``."""
    if len(text) <= 2:
        return Time()
    return Time(map(int, text[1:-1].split(",")))


def _machine_from_row(row: Sequence[Any]) -> MachineRecord:
    schema = _loads(row[2]) if row[2] is not None else None
    return MachineRecord(
        mach_id=row[0],
        state_names=_loads(row[1]),
        schema=schema,
        first_tracking=from_us(row[4]),
        last_tracking=from_us(row[5]),
        last_sync=from_us(row[6]),
        mtime=_loads(row[7]),
        mtime_sum=row[8],
        mach_tick=row[9],
        next_id=row[10],
    )


def _connect(path: str, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        uri = "file:" + path.replace("?", "%3f").replace("#", "%23") + "?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)


def _check_version(conn: sqlite3.Connection, path: str) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise StoreError(
            f"{path}: history format {version} is not supported (this is {SCHEMA_VERSION})"
        )
    if version == 0:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables:
            raise StoreError(f"{path}: not a trio_am history database (it has other tables)")
    return version


def list_machines(path: str | os.PathLike[str]) -> list[MachineRecord]:
    """The machine records in a history file, by id, without tracking anything.

    Opens the file read-only.

    Raises:
        StoreError: the file does not exist or is not a history database.
    """
    spath = os.fspath(path)
    if not os.path.exists(spath):
        raise StoreError(f"{spath}: no such file")
    try:
        conn = _connect(spath, read_only=True)
    except sqlite3.Error as exc:
        raise StoreError(f"{spath}: cannot open: {exc}") from exc
    try:
        if _check_version(conn, spath) == 0:
            return []
        rows = conn.execute(f"SELECT {_MACHINE_COLS} FROM machines ORDER BY mach_id").fetchall()
        return [_machine_from_row(r) for r in rows]
    except sqlite3.Error as exc:
        raise StoreError(f"{spath}: {exc}") from exc
    finally:
        conn.close()


class SQLiteMemory(BaseMemory):
    """A history kept in an SQLite database (the standard library's ``sqlite3``): it
    survives restarts, and one file can hold the histories of many machines.

    Recording only appends to a buffer; see the module docs for when it is written.
    In a Trio program start :meth:`run` (e.g. ``mach.fork(hist.run)`` or
    ``nursery.start_soon(hist.run)``) so that writes happen in a worker thread, off the
    machine's path. Without it, the tracer writes a batch itself every ``batch_size``
    records. Queries write what is buffered first, so they see every record.

    Opening a file that already has this machine's records goes on from them: record ids
    continue, :attr:`stored_record` is the machine record as it was saved, and
    :meth:`restore` brings the machine back to that time.

    Args:
        mach: the machine to track.
        config: a :class:`Config`, or the list of states to track. A file that has
            records of this machine must be opened with the same ``tracked_states``.
        path: the database file (created if missing), or ``":memory:"``.
        batch_size: records per written batch.
        clock: where human times come from (default: the system clock, UTC).
        on_error: called with a :class:`StoreError` when a write nobody waits for
            fails (default: logged on ``trio_am.history``); the records stay buffered.

    Raises:
        StoreError: the file cannot be opened or is not a history database.
        ConfigError: bad config, or other tracked states than the stored records'.
        HistoryError: the machine is disposed.

    Example::

        with SQLiteMemory(mach, ["Start", "Ready"], "history.sqlite") as hist:
            mach.add1("Start")
            hist.find_latest(limit=1)
    """

    def __init__(
        self,
        mach: Engine,
        config: Config | str | Iterable[str],
        path: str | os.PathLike[str] = ":memory:",
        *,
        batch_size: int = 1000,
        clock: Clock | None = None,
        on_error: ErrorHandler | None = None,
    ) -> None:
        super().__init__(mach, config, clock=clock, on_error=on_error)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, not {batch_size!r}")
        self._path = os.fspath(path)
        self._batch = batch_size
        self._lock = threading.Lock()
        self._buffer: deque[Entry] = deque()
        self._closed = False
        self._retry_at = batch_size
        self._recorded = 0
        self._written = 0
        self._task_running = False
        self._wake: trio.Event | None = None
        self._flushed: trio.Event | None = None
        self._db_id = 0
        self._sids: list[int] = []
        self._states_dirty = False
        self._gc_upto = 0
        self._mask_json: dict[int, str] = {}
        self._json_names: dict[str, tuple[str, ...]] = {_EMPTY: ()}
        try:
            self._conn = _connect(self._path)
        except sqlite3.Error as exc:
            raise StoreError(f"{self._path}: cannot open: {exc}", machine_id=mach.id) from exc
        try:
            stored, next_id = self._setup()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"{self._path}: {exc}", machine_id=mach.id) from exc
        except BaseException:
            self._conn.close()
            raise
        self._open(stored, next_id)

    # ----------------------------------------------------------------- setup
    def _setup(self) -> tuple[MachineRecord | None, int]:
        conn = self._conn
        mach = self._mach
        version = _check_version(conn, self._path)
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _DDL.split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            if self._store_tx:
                conn.execute(_DDL_TRANSITIONS)
            if version == 0:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            row = conn.execute(
                f"SELECT id, tracked_states, {_MACHINE_COLS} FROM machines WHERE mach_id = ?",
                (mach.id,),
            ).fetchone()
            stored: MachineRecord | None = None
            next_id = 1
            now = self._last_tracking
            if row is None:
                cur = conn.execute(
                    f"INSERT INTO machines ({_MACHINE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        mach.id,
                        _dumps(list(self._state_names)),
                        _dumps(self._schema) if self._schema is not None else None,
                        _dumps(list(self._tracked)),
                        now,
                        now,
                        now,
                        _dumps(list(self._mtime)),
                        sum(self._mtime),
                        self._mach_tick,
                        1,
                    ),
                )
                self._db_id = int(cur.lastrowid or 0)
            else:
                self._db_id = int(row[0])
                stored = _machine_from_row(row[2:])
                stored_tracked = tuple(_loads(row[1]))
                (count, max_id) = conn.execute(
                    "SELECT COUNT(*), MAX(id) FROM times WHERE machine_id = ?", (self._db_id,)
                ).fetchone()
                if stored_tracked != self._tracked and count:
                    raise ConfigError(
                        f"{self._path} holds {count} records of this machine tracking "
                        f"{list(stored_tracked)}; open it with the same tracked_states "
                        f"(not {list(self._tracked)}) or use another file",
                        machine_id=mach.id,
                    )
                next_id = max(stored.next_id, (max_id or 0) + 1)
                self._gc_upto = next_id - 1 - self._config.max_records
                conn.execute(
                    "UPDATE machines SET tracked_states = ?, last_tracking = ? WHERE id = ?",
                    (_dumps(list(self._tracked)), now, self._db_id),
                )
            self._write_states()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._states_dirty = False
        return stored, next_id

    def _write_states(self) -> None:
        """Upsert the tracked states' rows and cache their ids (in a transaction)."""
        conn = self._conn
        mid = self._db_id
        sids: list[int] = []
        for pos, (name, idx) in enumerate(zip(self._tracked, self._idxs, strict=True)):
            conn.execute(
                "INSERT INTO states (machine_id, name, idx, tracked_idx) VALUES (?,?,?,?) "
                "ON CONFLICT (machine_id, name) DO UPDATE SET idx = excluded.idx, "
                "tracked_idx = excluded.tracked_idx",
                (mid, name, idx, pos),
            )
            sid = conn.execute(
                "SELECT id FROM states WHERE machine_id = ? AND name = ?", (mid, name)
            ).fetchone()[0]
            sids.append(int(sid))
        conn.execute(
            f"UPDATE states SET tracked_idx = -1 WHERE machine_id = ? AND name NOT IN "
            f"({','.join('?' * len(self._tracked))})",
            (mid, *self._tracked),
        )
        self._sids = sids

    def _layout_changed(self) -> None:
        super()._layout_changed()
        self._states_dirty = True

    # ----------------------------------------------------------------- writing
    def _store(self, entry: Entry) -> None:
        buf = self._buffer
        buf.append(entry)
        self._recorded += 1
        if len(buf) >= self._batch:
            if self._task_running:
                wake = self._wake
                if wake is not None:
                    wake.set()
            elif len(buf) >= self._retry_at:
                try:
                    self._write_pending()
                except StoreError as exc:
                    self._retry_at = len(buf) + self._batch
                    self._report(exc)
                else:
                    self._retry_at = self._batch
                    self._notify()

    def _write_pending(self, force: bool = False) -> int:
        """Write every buffered entry in one transaction (any thread). Returns how many.
        With ``force``, the machine record is written even when nothing is buffered.

        Raises:
            StoreError: the write failed; the entries are buffered again.
        """
        with self._lock:
            if self._closed:
                return 0
            return self._write_locked(force)

    def _write_locked(self, force: bool = False) -> int:
        buf = self._buffer
        n = len(buf)
        if not n and not force and not self._states_dirty:
            return 0
        batch = [buf.popleft() for _ in range(n)]
        conn = self._conn
        dirty = self._states_dirty
        self._states_dirty = False  # a layout change from now on marks it again
        try:
            conn.execute("BEGIN IMMEDIATE")
            if dirty:
                self._write_states()
            if batch:
                self._insert(batch)
            self._last_sync = self._now_us()
            mtime = self._mtime
            conn.execute(
                "UPDATE machines SET state_names = ?, schema = ?, last_sync = ?, mtime = ?, "
                "mtime_sum = ?, mach_tick = ?, next_id = ? WHERE id = ?",
                (
                    _dumps(list(self._state_names)),
                    _dumps(self._schema) if self._schema is not None else None,
                    self._last_sync,
                    _dumps(list(mtime)),
                    sum(mtime),
                    self._mach_tick,
                    batch[-1].id + 1 if batch else self._next_id,
                    self._db_id,
                ),
            )
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            buf.extendleft(reversed(batch))
            if dirty:
                self._states_dirty = True
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"{self._path}: writing {n} records failed: {exc}", machine_id=self._mach.id
                ) from exc
            raise
        self._written += n
        return n

    def _insert(self, batch: list[Entry]) -> None:
        conn = self._conn
        mid = self._db_id
        tracked = self._tracked
        sids = self._sids
        n_tracked = len(tracked)
        names_json = self._names_json
        times = []
        ticks = []
        for e in batch:
            eid = e.id
            mt = e.mtime_tracked
            act, acd, dea = e.active, e.activated, e.deactivated
            times.append(
                (
                    mid,
                    eid,
                    e.mut_type,
                    e.mtime_sum,
                    e.mtime_tracked_sum,
                    e.mtime_diff_sum,
                    e.mtime_tracked_diff_sum,
                    e.mtime_record_diff_sum,
                    e.htime_us,
                    _ticks_json(mt),
                    _ticks_json(e.mtime_tracked_diff),
                    e.mach_tick,
                    names_json(acd),
                    names_json(dea),
                )
            )
            for pos in range(n_tracked):
                ticks.append(
                    (
                        mid,
                        eid,
                        sids[pos],
                        mt[pos],
                        (act >> pos) & 1,
                        (acd >> pos) & 1,
                        (dea >> pos) & 1,
                    )
                )
        conn.executemany("INSERT INTO times VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", times)
        conn.executemany("INSERT INTO ticks VALUES (?,?,?,?,?,?,?)", ticks)
        if self._store_tx:
            txs = []
            for e in batch:
                x = e.tx
                if x is None:
                    continue
                txs.append(
                    (
                        mid,
                        e.id,
                        x.tx_id,
                        x.source_tx,
                        x.source_mach,
                        int(x.is_auto),
                        int(x.is_accepted),
                        int(x.is_check),
                        int(x.is_broken),
                        x.queue_len,
                        x.queued_at,
                        x.executed_at,
                        _dumps(list(x.called)),
                        _dumps(dict(x.arguments)),
                    )
                )
            conn.executemany("INSERT INTO transitions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", txs)
        # drop the oldest records beyond max_records
        upto = batch[-1].id - self._config.max_records
        if upto > self._gc_upto:
            for table, col in (("times", "id"), ("ticks", "time_id")) + (
                (("transitions", "time_id"),) if self._store_tx else ()
            ):
                conn.execute(
                    f"DELETE FROM {table} WHERE machine_id = ? AND {col} <= ?", (mid, upto)
                )
            self._gc_upto = upto

    def _names_json(self, mask: int) -> str:
        """JSON list of the tracked states in ``mask`` (cached per mask)."""
        if not mask:
            return _EMPTY
        cache = self._mask_json
        text = cache.get(mask)
        if text is None:
            names = self._tracked
            text = _dumps([name for i, name in enumerate(names) if (mask >> i) & 1])
            if len(cache) < 4096:
                cache[mask] = text
        return text

    def _names_parse(self, text: str) -> tuple[str, ...]:
        """The names of a JSON list of names (cached per text)."""
        cache = self._json_names
        found = cache.get(text)
        if found is None:
            found = tuple(_loads(text))
            if len(cache) < 4096:
                cache[text] = found
        return found

    def _notify(self) -> None:
        """Wake :meth:`wait_flushed` callers (Trio thread only)."""
        evt = self._flushed
        if evt is not None:
            self._flushed = None
            evt.set()

    def _sync(self) -> None:
        if self._closed:
            return
        self._write_pending(force=True)
        self._retry_at = self._batch
        self._notify()

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()
        wake = self._wake
        if wake is not None:
            wake.set()
        self._notify()

    # ----------------------------------------------------------------- Trio
    @property
    def pending(self) -> int:
        """Records recorded but not written yet."""
        return len(self._buffer)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    async def run(
        self,
        *,
        interval: float = 1.0,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write buffered records from a Trio task until cancelled or disposed: a batch
        as soon as ``batch_size`` records wait, the rest every ``interval`` seconds, each
        in a worker thread so the machine never waits for the disk. Failed writes are
        reported to ``on_error`` and retried a round later. When cancelled, it writes
        what is left (blocking) before it returns. Use with ``nursery.start``.

        Raises:
            HistoryError: another ``run()`` of this history is running.
        """
        self._check()
        if not interval > 0:
            raise ConfigError(f"interval must be > 0 seconds, not {interval!r}")
        if self._task_running:
            raise HistoryError("run() is already running for this history")
        self._task_running = True
        try:
            task_status.started()
            while not self._closed:
                wake = self._wake = trio.Event()
                if len(self._buffer) < self._batch:
                    with trio.move_on_after(interval):
                        await wake.wait()
                if self._closed:
                    break
                if not self._buffer:
                    continue
                try:
                    await trio.to_thread.run_sync(self._write_pending)
                except StoreError as exc:
                    self._report(exc)
                    await trio.sleep(interval)
                else:
                    self._notify()
        finally:
            self._task_running = False
            self._wake = None
            if not self._closed and self._buffer:
                try:
                    self._write_pending()
                except StoreError as exc:
                    self._report(exc)
            self._notify()  # waiters re-check (and write themselves, with no task now)

    async def flush(self) -> None:
        """Write every buffered record now, in a worker thread; returns once they are
        committed.

        Raises:
            StoreError: the write failed (the records stay buffered).
            HistoryDisposedError: the history was disposed.
        """
        self._check()
        await trio.to_thread.run_sync(self._write_pending)
        self._notify()

    async def wait_flushed(self) -> None:
        """Wait until every record made before the call is written: by :meth:`run` when
        it runs, else by writing them now (like :meth:`flush`).

        Raises:
            HistoryDisposedError: the history was (or gets) disposed first.
        """
        self._check()
        target = self._recorded
        while self._written < target:
            self._check()
            if not self._task_running:
                await self.flush()
                continue
            if self._flushed is None:
                self._flushed = trio.Event()
            await self._flushed.wait()
        await trio.lowlevel.checkpoint()

    # ----------------------------------------------------------------- reading
    def _select(self, where: str, params: list[Any], with_tx: bool, tail: str) -> list[Any]:
        cols = _TIME_COLS + (", " + _TX_COLS if with_tx else "")
        join = (
            " LEFT JOIN transitions x ON x.machine_id = t.machine_id AND x.time_id = t.id"
            if with_tx
            else ""
        )
        sql = f"SELECT {cols} FROM times t{join} {where} {tail}"
        with self._lock:
            self._check()
            self._write_locked()
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self._path}: query failed: {exc}") from exc

    def _row_record(self, row: Sequence[Any], with_tx: bool) -> MemoryRecord:
        names = self._names_parse
        t = TimeRecord(
            id=row[0],
            mut_type=MUT_TYPES[row[1]],
            mtime_sum=row[2],
            mtime_tracked_sum=row[3],
            mtime_diff_sum=row[4],
            mtime_tracked_diff_sum=row[5],
            mtime_record_diff_sum=row[6],
            htime=from_us(row[7]),
            mtime_tracked=_ticks_parse(row[8]),
            mtime_tracked_diff=_ticks_parse(row[9]),
            mach_tick=row[10],
            activated=names(row[11]),
            deactivated=names(row[12]),
        )
        tx: TransitionRecord | None = None
        if with_tx and row[_N_TIME_COLS] is not None:
            x = row[_N_TIME_COLS:]
            tx = TransitionRecord(
                tx_id=x[0],
                time_record_id=row[0],
                source_tx=x[1],
                source_mach=x[2],
                is_auto=bool(x[3]),
                is_accepted=bool(x[4]),
                is_check=bool(x[5]),
                is_broken=bool(x[6]),
                queue_len=x[7],
                queued_at=x[8],
                executed_at=x[9],
                called=_loads(x[10]),
                arguments=_loads(x[11]),
            )
        return MemoryRecord(time=t, transition=tx)

    def _find(self, q: Compiled, limit: int, with_tx: bool) -> list[MemoryRecord]:
        joins: list[str] = []
        join_params: list[Any] = []
        conds = ["t.machine_id = ?"]
        params: list[Any] = [self._db_id]
        aliases: dict[int, str] = {}

        def alias(pos: int) -> str:
            a = aliases.get(pos)
            if a is None:
                a = aliases[pos] = f"s{pos}"
                joins.append(
                    f"JOIN ticks {a} ON {a}.machine_id = t.machine_id "
                    f"AND {a}.time_id = t.id AND {a}.state_id = ?"
                )
                join_params.append(self._sids[pos])
            return a

        for pos, kind in q.state_conditions():
            a = alias(pos)
            conds.append(
                {
                    "active": f"{a}.active = 1",
                    "inactive": f"{a}.active = 0",
                    "activated": f"{a}.activated = 1",
                    "deactivated": f"{a}.deactivated = 1",
                }[kind]
            )
        for pos, lo, hi in q.ticks:
            conds.append(f"{alias(pos)}.tick BETWEEN ? AND ?")
            params += [_clamp(lo), _clamp(hi)]
        for column, lo, hi in q.ranges:
            conds.append(f"t.{column} BETWEEN ? AND ?")
            params += [_clamp(lo), _clamp(hi)]
        tail = "ORDER BY t.id DESC" + (" LIMIT ?" if limit else "")
        if limit:
            params.append(limit)
        where = " ".join(joins) + " WHERE " + " AND ".join(conds)
        rows = self._select(where, join_params + params, with_tx, tail)
        return [self._row_record(r, with_tx) for r in rows]

    def _at(self, column: str, value: int, with_tx: bool) -> MemoryRecord | None:
        rows = self._select(
            f"WHERE t.machine_id = ? AND t.{column} <= ?",
            [self._db_id, _clamp(value)],
            with_tx,
            "ORDER BY t.id DESC LIMIT 1",
        )
        return self._row_record(rows[0], with_tx) if rows else None

    def _export(self, with_tx: bool) -> list[MemoryRecord]:
        rows = self._select("WHERE t.machine_id = ?", [self._db_id], with_tx, "ORDER BY t.id")
        return [self._row_record(r, with_tx) for r in rows]

    def _count(self) -> int:
        with self._lock:
            self._check()
            self._write_locked()
            n: int = self._conn.execute(
                "SELECT COUNT(*) FROM times WHERE machine_id = ?", (self._db_id,)
            ).fetchone()[0]
            return n


@asynccontextmanager
async def open_sqlite(
    mach: Engine,
    config: Config | str | Iterable[str],
    path: str | os.PathLike[str] = ":memory:",
    *,
    interval: float = 1.0,
    batch_size: int = 1000,
    clock: Clock | None = None,
    on_error: ErrorHandler | None = None,
) -> AsyncIterator[SQLiteMemory]:
    """Open an :class:`SQLiteMemory` with its writer task (:meth:`SQLiteMemory.run`)
    running in a nursery of its own; on exit, stop the task and dispose the history
    (writing what is left).

    Example::

        async with history.open_sqlite(mach, ["Start", "Ready"], "history.sqlite") as hist:
            mach.add1("Start")

    Raises:
        StoreError: the file cannot be opened (or the last write failed).
        ConfigError: bad config.
    """
    hist = SQLiteMemory(mach, config, path, batch_size=batch_size, clock=clock, on_error=on_error)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(hist.run, interval=interval))
            try:
                yield hist
            finally:
                nursery.cancel_scope.cancel()
    finally:
        hist.dispose()
