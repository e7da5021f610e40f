"""A burst of 100k transitions loses nothing, in either store, and both stores answer the
query API identically (issue 7, item 3).

One Trio machine feeds both stores at once; the SQLite one writes from its ``run()`` task
in a worker thread while the burst goes on, so writes and recording overlap.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import trio

import trio_am as am
from trio_am import history
from trio_am.history import ConditionTime, Config, Query

from ._support import T0, FakeClock

N = 100_000


def _ops(mach: am.Machine, i: int) -> None:
    # every mutation is accepted: each one is a record
    k = i % 4
    if k == 0:
        mach.toggle1("A")
    elif k == 1:
        mach.add1("C")
    elif k == 2:
        mach.toggle1("B")
    else:
        mach.toggle(["A", "B"])


async def test_burst_of_100k_transitions(tmp_path: object) -> None:
    clock = FakeClock()
    cfg = Config(tracked_states=["A", "B", "C"], max_records=N)
    async with am.open_machine({"A": {}, "B": {}, "C": {"multi": True}}, id="burst") as mach:
        mem = history.Memory(mach, cfg, clock=clock)
        sql = history.SQLiteMemory(
            mach, cfg, f"{tmp_path}/burst.sqlite", clock=clock, batch_size=5000
        )
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(sql.run, interval=0.05))
                for i in range(N):
                    _ops(mach, i)
                    if i % 1000 == 999:
                        clock.advance()
                        await trio.sleep(0)  # let the writer task take a batch
                with trio.fail_after(60):
                    await sql.wait_flushed()
                nursery.cancel_scope.cancel()

            assert sql.pending == 0
            assert mem.count() == N and sql.count() == N
            assert mem.machine_record().next_id == N + 1
            mem_all = mem.export()
            sql_all = sql.export()
            assert [r.time.id for r in sql_all] == list(range(1, N + 1))  # no gap, no dup
            assert mem_all == sql_all
            last = sql_all[-1].time
            assert last.mtime_sum == sum(mach.time())
            assert last.mtime_tracked == tuple(mach.time(["A", "B", "C"]))

            # the query API answers alike
            queries = [
                Query(activated=["A"]),
                Query(deactivated=["B"], inactive=["A"]),
                Query(inactive=["A", "B"]),
                Query(
                    start=ConditionTime(mtime_sum=1000, htime=T0 + timedelta(seconds=3)),
                    end=ConditionTime(mtime_sum=5000, htime=T0 + timedelta(seconds=40)),
                ),
                Query(
                    active=["C"],
                    start=ConditionTime(mtime_states=["C"], mtime=[99]),
                    end=ConditionTime(mtime_states=["C"], mtime=[199]),
                ),
            ]
            for q in queries[:3]:  # dense answers: the newest 300
                found = mem.find_latest(q, limit=300)
                assert len(found) == 300 and found == sql.find_latest(q, limit=300), q
            for q in queries[3:]:  # narrow ones, whole
                found = mem.find_latest(q)
                assert found and found == sql.find_latest(q), q
            # A: toggled every 4th op and by every toggle(A, B): one of the two activates it
            assert sum(1 for r in mem_all if "A" in r.time.activated) == N // 4
            for at in (T0, T0 + timedelta(seconds=50.5), T0 + timedelta(days=1)):
                assert mem.record_at(htime=at) == sql.record_at(htime=at)
            assert mem.clock_at(mtime_sum=12_345) == sql.clock_at(mtime_sum=12_345)
        finally:
            mem.dispose()
            sql.dispose()
