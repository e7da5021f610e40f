"""Property tests: random mutation sequences and random queries get the same answers from
``Memory`` and ``SQLiteMemory`` tracking the same machine, and those answers are what
§3.2 defines, checked against a brute-force evaluation of each query over the records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import trio_am as am
from trio_am import history
from trio_am.history import ConditionTime, Config, Query, TimeRecord

from ._support import T0, FakeClock

SCHEMA: dict[str, dict[str, Any]] = {
    "A": {},
    "B": {"remove": ["A"]},
    "C": {"multi": True},
    "D": {"require": ["A"]},
    "E": {"add": ["F"]},
    "F": {},
    "G": {"auto": True, "require": ["E"]},
}
STATES = list(SCHEMA)
SCALARS = [
    "mtime_sum",
    "mtime_tracked_sum",
    "mtime_diff_sum",
    "mtime_tracked_diff_sum",
    "mtime_record_diff_sum",
    "mach_tick",
]

ops_st = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "set", "toggle", "restore"]),
        st.lists(st.sampled_from(STATES), min_size=1, max_size=3, unique=True),
        st.integers(0, 2),  # seconds the clock moves before the mutation
    ),
    max_size=30,
)

config_st = st.builds(
    Config,
    tracked_states=st.lists(st.sampled_from(STATES), min_size=1, max_size=5, unique=True),
    called=st.lists(st.sampled_from(STATES), max_size=2, unique=True),
    called_exclude=st.booleans(),
    changed=st.lists(st.sampled_from(STATES), max_size=2, unique=True),
    changed_exclude=st.booleans(),
    track_rejected=st.booleans(),
    store_transitions=st.booleans(),
    max_records=st.sampled_from([3, 10_000]),
)


@st.composite
def query_st(draw: st.DrawFn, tracked: tuple[str, ...]) -> Query:
    names = st.lists(st.sampled_from(tracked), max_size=2, unique=True)
    start: dict[str, Any] = {}
    end: dict[str, Any] = {}
    if draw(st.booleans()):
        lo, hi = draw(st.integers(-1, 40)), draw(st.integers(-1, 40))
        start["htime"] = T0 + timedelta(seconds=lo)
        end["htime"] = T0 + timedelta(seconds=hi)
    for name in draw(st.lists(st.sampled_from(SCALARS), max_size=2, unique=True)):
        start[name] = draw(st.integers(-1, 30))
        end[name] = draw(st.integers(-1, 30))
    ticks = draw(names)
    if ticks:
        start["mtime_states"] = end["mtime_states"] = ticks
        start["mtime"] = draw(
            st.lists(st.integers(0, 12), min_size=len(ticks), max_size=len(ticks))
        )
        end["mtime"] = draw(st.lists(st.integers(0, 12), min_size=len(ticks), max_size=len(ticks)))
    return Query(
        active=draw(names),
        activated=draw(names),
        inactive=draw(names),
        deactivated=draw(names),
        start=ConditionTime(**start),
        end=ConditionTime(**end),
    )


def drive(
    mach: am.Machine,
    hists: list[history.BaseMemory],
    clock: FakeClock,
    ops: list[tuple[str, list[str], int]],
) -> None:
    for op, states, wait in ops:
        clock.advance(wait)
        if op == "restore":
            # travel: back to the first history's view of the machine, via import_data
            hists[0].restore(hists[0].machine_record())
        else:
            mach.mutate(op, states)


def _is_active(rec: TimeRecord | None, pos: int) -> bool:
    return rec is not None and bool(rec.mtime_tracked[pos] & 1)


def brute_force(records: list[TimeRecord], tracked: tuple[str, ...], q: Query) -> list[int]:
    """Ids of the records matching ``q``, newest first, straight from §3.2's words.

    Only valid when every record of the session is kept (the first is compared with the
    machine at tracking start, all-inactive here) and no restore happened.
    """
    pos = {s: i for i, s in enumerate(tracked)}
    out = []
    for k, rec in enumerate(records):
        prev = records[k - 1] if k else None
        ok = all(_is_active(rec, pos[s]) for s in q.active)
        ok = ok and all(not _is_active(rec, pos[s]) for s in q.inactive)
        ok = ok and all(
            _is_active(rec, pos[s]) and not _is_active(prev, pos[s]) for s in q.activated
        )
        ok = ok and all(
            not _is_active(rec, pos[s]) and _is_active(prev, pos[s]) for s in q.deactivated
        )
        s, e = q.start, q.end
        if s.htime is not None:
            assert e.htime is not None
            ok = ok and s.htime <= rec.htime <= e.htime
        for name in SCALARS:
            lo, hi = getattr(s, name), getattr(e, name)
            if lo is not None:
                ok = ok and lo <= getattr(rec, name) <= hi
        for state, lo, hi in zip(s.mtime_states, s.mtime, e.mtime, strict=True):
            ok = ok and lo <= rec.mtime_tracked[pos[state]] <= hi
        if ok:
            out.append(rec.id)
    return out[::-1]


@settings(max_examples=60)  # ~25 ms an example: two stores, 8 queries
@given(config=config_st, ops=ops_st, data=st.data())
def test_stores_answer_alike(
    config: Config, ops: list[tuple[str, list[str], int]], data: st.DataObject
) -> None:
    clock = FakeClock()
    mach = am.Machine({**SCHEMA, "MachineRestored": {}}, id="p")
    mem = history.Memory(mach, config, clock=clock)
    sql = history.SQLiteMemory(mach, config, clock=clock, batch_size=4)
    try:
        drive(mach, [mem, sql], clock, ops)
        tracked = mem.tracked_states
        assert sql.tracked_states == tracked
        assert mem.count() == sql.count() <= config.max_records
        assert mem.export() == sql.export()
        for _ in range(8):
            q = data.draw(query_st(tracked))
            limit = data.draw(st.sampled_from([0, 1, 2, 5]))
            with_tx = data.draw(st.booleans())
            assert mem.find_latest(q, limit, with_tx) == sql.find_latest(q, limit, with_tx), q
        for _ in range(3):
            at: dict[str, Any] = data.draw(
                st.sampled_from(
                    [
                        {"htime": T0 + timedelta(seconds=data.draw(st.integers(-1, 70)))},
                        {"mtime_sum": data.draw(st.integers(-1, 60))},
                        {"mach_tick": data.draw(st.integers(-1, 3))},
                    ]
                )
            )
            assert mem.record_at(**at, with_tx=True) == sql.record_at(**at, with_tx=True)
            assert mem.clock_at(**at) == sql.clock_at(**at)
        state = data.draw(st.sampled_from(tracked))
        lo = T0 + timedelta(seconds=data.draw(st.integers(0, 60)))
        hi = lo + timedelta(seconds=data.draw(st.integers(0, 20)))
        for name in (
            "activated_between",
            "active_between",
            "deactivated_between",
            "inactive_between",
        ):
            assert getattr(mem, name)(state, lo, hi) == getattr(sql, name)(state, lo, hi)
    finally:
        mem.dispose()
        sql.dispose()


@settings(max_examples=60)
@given(
    tracked=st.lists(st.sampled_from(STATES), min_size=1, max_size=7, unique=True),
    ops=ops_st.map(lambda ops: [o for o in ops if o[0] != "restore"]),
    data=st.data(),
)
def test_answers_follow_the_definitions(
    tracked: list[str], ops: list[tuple[str, list[str], int]], data: st.DataObject
) -> None:
    clock = FakeClock()
    mach = am.Machine(SCHEMA, id="p")
    hists = [
        history.Memory(mach, tracked, clock=clock),
        history.SQLiteMemory(mach, tracked, clock=clock),
    ]
    try:
        drive(mach, hists, clock, ops)
        records = [r.time for r in hists[0].export()]
        names = tuple(tracked)
        # the activation flags are the definitions, record after record
        for k, rec in enumerate(records):
            prev = records[k - 1] if k else None
            assert rec.activated == tuple(
                s for i, s in enumerate(names) if _is_active(rec, i) and not _is_active(prev, i)
            )
            assert rec.deactivated == tuple(
                s for i, s in enumerate(names) if not _is_active(rec, i) and _is_active(prev, i)
            )
            assert rec.mtime_record_diff_sum == rec.mtime_sum - (prev.mtime_sum if prev else 0)
            assert rec.mtime_tracked_sum == sum(rec.mtime_tracked)
        assert records == [] or records[-1].mtime_tracked == mach.time(tracked)
        for _ in range(10):
            q = data.draw(query_st(names))
            expected = brute_force(records, names, q)
            for hist in hists:
                assert [r.time.id for r in hist.find_latest(q)] == expected, q
    finally:
        for hist in hists:
            hist.dispose()


def test_brute_force_oracle_is_not_vacuous() -> None:
    """The oracle above finds what it should on a known history."""
    clock = FakeClock()
    mach = am.Machine(SCHEMA, id="p")
    with history.Memory(mach, ["A", "B"], clock=clock) as hist:
        mach.add1("A")
        mach.add1("B")
        records = [r.time for r in hist.export()]
    assert brute_force(records, ("A", "B"), Query(activated=["A"])) == [1]
    assert brute_force(records, ("A", "B"), Query(deactivated=["A"], activated=["B"])) == [2]
    assert brute_force(records, ("A", "B"), Query(active=["A", "B"])) == []
    when = ConditionTime(htime=datetime(2000, 1, 1, tzinfo=T0.tzinfo))
    assert brute_force(records, ("A", "B"), Query(start=when, end=ConditionTime(htime=T0))) == [
        2,
        1,
    ]
