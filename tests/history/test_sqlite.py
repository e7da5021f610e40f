"""The SQLite store: its tables, batching, the Trio writer task, failures, and surviving a
restart (in process and across a killed process)."""

from __future__ import annotations

import functools
import selectors
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_am as am
from trio_am import history
from trio_am.history import Config, Query

from ._support import FakeClock

SCHEMA = {"A": {}, "B": {"remove": ["A"]}, "C": {"multi": True}, "MachineRestored": {}}
ROOT = Path(__file__).resolve().parents[2]


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read with a connection of our own (what another process would see)."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def n_times(path: Path) -> int:
    return int(rows(path, "SELECT COUNT(*) FROM times")[0][0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hist.sqlite"


# ------------------------------------------------------------------------------- tables
def test_tables(db: Path, clock: FakeClock) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A", "B"], db, clock=clock) as hist:
        mach.add1("A")
        mach.add1("B")
        hist.sync()
        tables = {r[0] for r in rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"machines", "states", "times", "ticks"}  # no transitions table
        assert rows(db, "SELECT mach_id, tracked_states, next_id FROM machines") == [
            ("m", '["A","B"]', 3)
        ]
        assert rows(db, "SELECT name, idx, tracked_idx FROM states ORDER BY tracked_idx") == [
            ("A", 0, 0),
            ("B", 1, 1),
        ]
        assert rows(
            db, "SELECT id, mtime_sum, mtime_tracked, activated, deactivated FROM times"
        ) == [
            (1, 1, "[1, 0]", '["A"]', "[]"),
            (2, 3, "[2, 1]", '["B"]', '["A"]'),
        ]
        # one ticks row per record and tracked state, with the activation flags
        assert rows(
            db,
            "SELECT k.time_id, s.name, k.tick, k.active, k.activated, k.deactivated "
            "FROM ticks k JOIN states s ON s.id = k.state_id ORDER BY k.time_id, s.name",
        ) == [
            (1, "A", 1, 1, 1, 0),
            (1, "B", 0, 0, 0, 0),
            (2, "A", 2, 0, 0, 1),
            (2, "B", 1, 1, 1, 0),
        ]
        assert rows(db, "PRAGMA user_version") == [(history._sqlite.SCHEMA_VERSION,)]  # type: ignore[attr-defined]


def test_transitions_table(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, Config(tracked_states=["A"], store_transitions=True), db):
        mach.add1("A", {"name": "n"})
        mach.add1("C")
    assert rows(db, "SELECT time_id, tx_id, called, arguments, is_auto FROM transitions") == [
        (1, "m:1", '["A"]', '{"name":"n"}', 0),
        (2, "m:2", '["C"]', "{}", 0),
    ]


# ------------------------------------------------------------------------------- restart
def test_restart_in_process(db: Path, clock: FakeClock) -> None:
    cfg = Config(tracked_states=["A", "B", "C"], store_transitions=True, store_schema=True)
    mach = am.Machine(SCHEMA, id="m")
    hist = history.SQLiteMemory(mach, cfg, db, clock=clock)
    mach.add1("A")
    clock.advance()
    mach.add1("C", {"id": 1})
    mach.add1("B")
    before = hist.find_latest(with_tx=True)
    saved = hist.machine_record()
    hist.dispose()

    # "the process restarts": a new machine with the same id, the same file
    clock.advance(60)
    mach2 = am.Machine(SCHEMA, id="m")
    hist2 = history.SQLiteMemory(mach2, cfg, db, clock=clock)
    try:
        assert hist2.find_latest(with_tx=True) == before
        assert hist2.count() == 3
        stored = hist2.stored_record
        assert stored is not None
        assert stored.mtime == saved.mtime and stored.mtime_sum == 4
        assert stored.next_id == 4 and stored.schema == saved.schema
        assert stored.first_tracking == saved.first_tracking
        assert hist2.machine_record().first_tracking == saved.first_tracking
        assert hist2.machine_record().last_tracking == clock.now
        # restore the machine's time (mach.import_data): +MachineRestored, machine tick 1
        hist2.restore()
        assert mach2.time(["A", "B", "C"]) == (2, 1, 1)
        assert mach2.machine_tick == 1 and mach2.is1("MachineRestored")
        mach2.remove1("B")
        new = hist2.find_latest(limit=2)
        assert [r.time.id for r in new] == [5, 4]  # ids go on (4: +MachineRestored)
        assert new[0].time.activated == () and new[0].time.deactivated == ("B",)
        # compared with the restored time, +MachineRestored activated no tracked state
        assert new[1].time.mach_tick == 1 and new[1].time.activated == ()
        assert new[1].time.mtime_record_diff_sum == 1
        assert hist2.clock_at(mach_tick=0) == {"A": 2, "B": 1, "C": 1}
    finally:
        hist2.dispose()


def test_restore_needs_a_stored_record(db: Path) -> None:
    with history.SQLiteMemory(am.Machine(SCHEMA, id="m"), ["A"], db) as hist:
        assert hist.stored_record is None
        with pytest.raises(history.HistoryError, match="nothing to restore"):
            hist.restore()


CHILD = """
import sys
import trio_am as am
from trio_am import history

mode, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mach = am.Machine({"A": {}, "B": {}}, id="child")
hist = history.SQLiteMemory(mach, history.Config(tracked_states=["A", "B"], max_records=10**6),
                            path, batch_size=100)
for _ in range(n):
    mach.toggle1("A")
if mode == "sync":
    hist.sync()
elif mode == "dispose":
    mach.dispose()
print("ready", hist.pending, flush=True)
sys.stdin.readline()  # wait to be killed
"""


def _run_child(tmp_path: Path, mode: str, db: Path, n: int) -> str:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(db), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            assert sel.select(timeout=60), "the child did not answer"
        finally:
            sel.close()
        line = proc.stdout.readline()
        assert line.startswith("ready"), proc.stderr.read() if proc.stderr else line
        proc.kill()  # no cleanup runs in the child
        proc.wait(timeout=30)
        return line.strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("mode", ["sync", "dispose"])
def test_survives_a_killed_process(tmp_path: Path, db: Path, mode: str) -> None:
    assert _run_child(tmp_path, mode, db, 250) == "ready 0"
    mach = am.Machine({"A": {}, "B": {}}, id="child")
    with history.SQLiteMemory(mach, ["A", "B"], db) as hist:
        assert hist.count() == 250
        assert [r.time.id for r in hist.export()] == list(range(1, 251))
        assert len(hist.find_latest(Query(activated=["A"]))) == 125
        stored = hist.stored_record
        assert stored is not None and stored.mtime[0] == 250 and stored.next_id == 251
        hist.restore()
        assert mach.tick("A") == 250


def test_killed_before_sync_keeps_full_batches(tmp_path: Path, db: Path) -> None:
    """Without sync, what the tracer wrote (every 100 records) is on disk; the buffered
    rest is what a kill loses (dispose or sync prevent it, see above)."""
    assert _run_child(tmp_path, "none", db, 250) == "ready 50"
    assert n_times(db) == 200
    assert rows(db, "SELECT MAX(id) FROM times") == [(200,)]


# ------------------------------------------------------------------------------- files
def test_tracked_states_must_match_the_records(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A", "B"], db):
        mach.add1("A")
    with pytest.raises(history.ConfigError, match="tracking \\['A', 'B'\\]"):
        history.SQLiteMemory(am.Machine(SCHEMA, id="m"), ["B", "A"], db)
    # another machine in the same file is free to track what it wants
    with history.SQLiteMemory(am.Machine(SCHEMA, id="other"), ["C"], db) as other:
        assert other.count() == 0


def test_tracked_states_may_change_without_records(db: Path) -> None:
    with history.SQLiteMemory(am.Machine(SCHEMA, id="m"), ["A", "B"], db):
        pass
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["C", "A"], db) as hist:
        mach.add1("C")
        assert hist.find_latest()[0].time.mtime_tracked == (1, 0)
    assert rows(db, "SELECT name, tracked_idx FROM states ORDER BY name") == [
        ("A", 1),
        ("B", -1),
        ("C", 0),
    ]


def test_bad_files(tmp_path: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(history.StoreError, match="junk.sqlite"):
        history.SQLiteMemory(mach, ["A"], junk)
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(history.StoreError, match="not a trio_am history"):
        history.SQLiteMemory(mach, ["A"], foreign)
    future = tmp_path / "future.sqlite"
    conn = sqlite3.connect(future)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(history.StoreError, match="format 99"):
        history.SQLiteMemory(mach, ["A"], future)
    with pytest.raises(history.StoreError):
        history.SQLiteMemory(mach, ["A"], tmp_path / "no" / "such" / "dir.sqlite")
    with pytest.raises(history.StoreError, match="no such file"):
        history.list_machines(tmp_path / "missing.sqlite")
    assert mach.tracers == []  # nothing stayed bound
    with pytest.raises(history.ConfigError, match="batch_size"):
        history.SQLiteMemory(mach, ["A"], tmp_path / "ok.sqlite", batch_size=0)


def test_list_machines_and_shared_file(db: Path) -> None:
    m1 = am.Machine(SCHEMA, id="m1")
    m2 = am.Machine(SCHEMA, id="m2")
    h1 = history.SQLiteMemory(m1, ["A"], db)
    h2 = history.SQLiteMemory(m2, ["B", "C"], db)
    try:
        for _ in range(3):
            m1.toggle1("A")
            m2.add1("C")
        m2.add1("B")
        assert h1.count() == 3 and h2.count() == 4
        assert [r.time.mtime_tracked for r in h2.find_latest(limit=2)] == [(1, 5), (0, 5)]
    finally:
        h1.dispose()
        h2.dispose()
    listed = history.list_machines(db)
    assert [(r.mach_id, r.next_id, r.mtime_sum) for r in listed] == [("m1", 4, 3), ("m2", 5, 6)]
    empty = db.parent / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert history.list_machines(empty) == []


def test_memory_database() -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A"]) as hist:
        mach.add1("A")
        assert hist.path == ":memory:" and hist.count() == 1


def test_max_records(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(
        mach,
        Config(tracked_states=["A", "B"], max_records=3, store_transitions=True),
        db,
        batch_size=2,
    ) as hist:
        for _ in range(7):
            mach.toggle1("A")
        hist.sync()
        assert n_times(db) == 3
        assert rows(db, "SELECT COUNT(*) FROM ticks") == [(6,)]
        assert rows(db, "SELECT MIN(time_id) FROM transitions") == [(5,)]
        assert [r.time.id for r in hist.export()] == [5, 6, 7]


# ------------------------------------------------------------------------------- batching
def test_batches_without_a_task(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A"], db, batch_size=10) as hist:
        for _ in range(9):
            mach.toggle1("A")
        assert hist.pending == 9 and n_times(db) == 0  # nothing written on the hot path yet
        mach.toggle1("A")  # the 10th: a batch
        assert hist.pending == 0 and n_times(db) == 10
        for _ in range(3):
            mach.toggle1("A")
        assert n_times(db) == 10
        assert hist.count() == 13  # a query writes first
        assert n_times(db) == 13


def test_machine_dispose_writes(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A"], db):
        mach.add1("A")
        mach.add1("C")
        assert n_times(db) == 0
        mach.dispose()
        assert n_times(db) == 2
        assert rows(db, "SELECT mtime_sum FROM machines") == [(2,)]


def test_failed_writes_lose_nothing(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[BaseException] = []
    mach = am.Machine(SCHEMA, id="m")
    hist = history.SQLiteMemory(mach, ["A"], db, batch_size=4, on_error=errors.append)
    real_insert = hist._insert
    fail = {"on": True}

    def flaky(batch: Any) -> None:
        real_insert(batch)  # written, then the transaction fails: all of it rolls back
        if fail["on"]:
            raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(hist, "_insert", flaky)
    try:
        for _ in range(6):
            mach.toggle1("A")
        # the tracer's batch write failed: reported, kept, the machine went on
        assert len(errors) == 1 and isinstance(errors[0], history.StoreError)
        assert "disk I/O error" in str(errors[0])
        assert hist.pending == 6 and n_times(db) == 0 and hist.recording
        with pytest.raises(history.StoreError):
            hist.sync()
        assert hist.pending == 6
        fail["on"] = False
        for _ in range(2):
            mach.toggle1("A")  # retried once 4 more records wait (8)
        assert hist.pending == 0 and n_times(db) == 8
        assert [r.time.id for r in hist.export()] == list(range(1, 9))
    finally:
        hist.dispose()


# ------------------------------------------------------------------------------- Trio
async def test_run_writes_off_the_machines_thread(db: Path) -> None:
    threads: list[int] = []
    async with am.open_machine(SCHEMA, id="m") as mach:
        hist = history.SQLiteMemory(mach, ["A"], db, batch_size=5)
        real_insert = hist._insert

        def spy(batch: Any) -> None:
            threads.append(threading.get_ident())
            real_insert(batch)

        hist._insert = spy  # type: ignore[method-assign]
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(hist.run, interval=3600))
                for _ in range(4):
                    mach.toggle1("A")
                assert hist.pending == 4  # below a batch: the tracer only buffered
                mach.toggle1("A")
                assert hist.pending == 5  # a batch: the task is woken, the tracer returns
                with trio.fail_after(30):
                    await hist.wait_flushed()
                assert hist.pending == 0 and n_times(db) == 5
                assert threads and threading.get_ident() not in threads
                with pytest.raises(history.HistoryError, match="already running"):
                    await hist.run()
                # the rest: cancelling the task writes what is left
                for _ in range(3):
                    mach.toggle1("A")
                nursery.cancel_scope.cancel()
            assert hist.pending == 0 and n_times(db) == 8
        finally:
            hist.dispose()


async def test_run_writes_the_rest_every_interval(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    hist = history.SQLiteMemory(mach, ["A"], db, batch_size=1000)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(hist.run, interval=0.01))
            for _ in range(3):
                mach.toggle1("A")
            with trio.fail_after(30):
                await hist.wait_flushed()  # the task's interval round wrote them
            assert n_times(db) == 3
            hist.dispose()  # ends run()
        assert hist.disposed
    finally:
        hist.dispose()


async def test_flush_and_wait_flushed_without_a_task(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A"], db) as hist:
        mach.toggle1("A")
        await hist.flush()
        assert n_times(db) == 1
        mach.toggle1("A")
        with trio.fail_after(30):
            await hist.wait_flushed()  # no task: writes itself
        assert n_times(db) == 2
    with pytest.raises(history.HistoryDisposedError):
        await hist.flush()


async def test_fork_run_with_the_machine(db: Path) -> None:
    """The writer task lives and dies with the machine; disposal writes the rest."""
    async with am.open_machine(SCHEMA, id="m") as mach:
        hist = history.SQLiteMemory(mach, ["A"], db, batch_size=2)
        mach.fork(hist.run)
        for _ in range(5):
            mach.toggle1("A")
        with trio.fail_after(30):
            await hist.wait_flushed()
        mach.toggle1("A")
    assert n_times(db) == 6
    hist.dispose()


def test_states_follow_the_machines_order(db: Path) -> None:
    mach = am.Machine(SCHEMA, id="m")
    with history.SQLiteMemory(mach, ["A", "C"], db) as hist:
        mach.verify_states(["C", "B", "A", "MachineRestored", "Exception"])
        mach.add1("C")
        hist.sync()
        assert rows(db, "SELECT name, idx, tracked_idx FROM states ORDER BY name") == [
            ("A", 2, 0),
            ("C", 0, 1),
        ]
        assert hist.find_latest()[0].time.mtime_tracked == (0, 1)


def test_failed_background_write_is_logged(
    db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    mach = am.Machine(SCHEMA, id="m")
    hist = history.SQLiteMemory(mach, ["A"], db, batch_size=1)

    def broken(batch: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(hist, "_insert", broken)
    with caplog.at_level("ERROR", logger="trio_am.history"):
        mach.add1("A")
    assert "database or disk is full" in caplog.text
    assert hist.pending == 1 and hist.recording
    monkeypatch.undo()
    hist.dispose()
    assert n_times(db) == 1


async def test_open_sqlite(db: Path) -> None:
    async with am.open_machine(SCHEMA, id="m") as mach:
        async with history.open_sqlite(mach, ["A"], db, batch_size=3, interval=3600) as hist:
            for _ in range(7):
                mach.toggle1("A")
            with trio.fail_after(30):
                await hist.wait_flushed()  # woken by a full batch, the task wrote all 7
            assert n_times(db) == 7 and hist.pending == 0
            mach.toggle1("A")
        assert hist.disposed and n_times(db) == 8
    with pytest.raises(history.StoreError):
        async with history.open_sqlite(am.Machine(SCHEMA), ["A"], db.parent / "x" / "y.db"):
            pass  # pragma: no cover


def test_a_raising_on_error_breaks_nothing(
    db: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def bad_handler(exc: BaseException) -> None:
        raise RuntimeError("handler bug")

    mach = am.Machine(SCHEMA, id="m")
    hist = history.SQLiteMemory(mach, ["A"], db, batch_size=1, on_error=bad_handler)
    monkeypatch.setattr(
        hist, "_insert", lambda batch: (_ for _ in ()).throw(sqlite3.OperationalError("locked"))
    )
    with caplog.at_level("ERROR", logger="trio_am.history"):
        mach.add1("A")
    assert "on_error raised" in caplog.text
    assert hist.recording and mach.tracers  # the tracer stayed bound
    monkeypatch.undo()
    mach.add1("B")
    hist.dispose()
    assert n_times(db) == 2


async def test_run_checks_its_interval(db: Path) -> None:
    with history.SQLiteMemory(am.Machine(SCHEMA), ["A"], db) as hist:
        with pytest.raises(history.ConfigError, match="interval"):
            await hist.run(interval=0)
        with pytest.raises(history.ConfigError, match="interval"):
            await hist.run(interval=-1)
