"""tools.md §3.2, one rule at a time, against both stores (``kind`` = memory | sqlite).

Every test runs twice through the ``make`` fixture; the human clock is a ``FakeClock``
moved by hand, so time ranges are exact.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import trio_am as am
from trio_am import history
from trio_am.history import ConditionTime, Config, Query

from ._support import T0, Factory, FakeClock

SCHEMA = {
    "A": {},
    "B": {"remove": ["A"]},
    "C": {"multi": True},
    "D": {"require": ["A"]},
    "E": {},
    "F": {"auto": True, "require": ["E"]},
}


def new_mach(**kw: object) -> am.Machine:
    return am.Machine(SCHEMA, id="m", **kw)  # type: ignore[arg-type]


def ids(records: list[history.MemoryRecord]) -> list[int]:
    return [r.time.id for r in records]


def run_abcc(mach: am.Machine, clock: FakeClock) -> None:
    """4 records, 1 s apart: +A; +C; +B -A; C again (multi)."""
    mach.add1("A")
    clock.advance()
    mach.add1("C")
    clock.advance()
    mach.add1("B")
    clock.advance()
    mach.add1("C")


# ------------------------------------------------------------------------------- config
def test_config_needs_states(make: Factory) -> None:
    mach = new_mach()
    with pytest.raises(history.ConfigError, match="no states to track"):
        make(mach, Config())
    with pytest.raises(ValueError):  # ConfigError is a ValueError
        make(mach, [])


def test_config_unknown_state(make: Factory) -> None:
    mach = new_mach()
    with pytest.raises(history.ConfigError, match="'Nope' is not in the machine") as info:
        make(mach, Config(tracked_states=["A", "Nope"]))
    assert info.value.state == "Nope"
    with pytest.raises(history.ConfigError):
        make(mach, Config(tracked_states=["A"], called=["Nope"], called_exclude=True))


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_config_bad_max_records(make: Factory, bad: object) -> None:
    with pytest.raises(history.ConfigError, match="max_records"):
        make(new_mach(), Config(tracked_states=["A"], max_records=bad))  # type: ignore[arg-type]


def test_config_allow_lists_join_tracked(make: Factory) -> None:
    hist = make(new_mach(), Config(tracked_states=["A", "C"], called=["B", "A"], changed=["E"]))
    assert hist.tracked_states == ("A", "C", "B", "E")
    assert hist.config.tracked_states == ("A", "C", "B", "E")
    # block lists do not
    hist2 = make(
        new_mach(),
        Config(
            tracked_states=["A"],
            called=["B"],
            called_exclude=True,
            changed=["E"],
            changed_exclude=True,
        ),
    )
    assert hist2.tracked_states == ("A",)


def test_config_lenient_inputs(make: Factory) -> None:
    assert make(new_mach(), "A").tracked_states == ("A",)
    assert make(new_mach(), ["B", "A", "B"]).tracked_states == ("B", "A")
    hist = make(new_mach(), ["A", "B"])
    assert hist.is_tracked(["A", "B"]) and hist.is_tracked("A")
    assert not hist.is_tracked(["A", "C"])
    assert hist.index(["B", "C", "A"]) == [1, -1, 0]


def test_disposed_machine_cannot_be_tracked(make: Factory) -> None:
    mach = new_mach()
    mach.dispose()
    with pytest.raises(history.HistoryError, match="disposed"):
        make(mach, ["A"])


# ------------------------------------------------------------------------------- records
def test_time_record_fields(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)
    recs = [r.time for r in hist.find_latest()]
    assert [r.id for r in recs] == [4, 3, 2, 1]  # newest first
    r4, r3, r2, r1 = recs
    # 1: +A
    assert r1.mut_type == am.MutationType.ADD
    assert (r1.mtime_sum, r1.mtime_tracked_sum, r1.mtime_diff_sum) == (1, 1, 1)
    assert (r1.mtime_tracked_diff_sum, r1.mtime_record_diff_sum) == (1, 1)
    assert r1.mtime_tracked == (1, 0) and r1.mtime_tracked_diff == (1, 0)
    assert (r1.activated, r1.deactivated) == (("A",), ())
    assert r1.htime == T0 and r1.htime.tzinfo is not None
    assert r1.mach_tick == 0
    # 2: +C (untracked): the sums move, the tracked ones do not
    assert (r2.mtime_sum, r2.mtime_tracked_sum, r2.mtime_diff_sum) == (2, 1, 1)
    assert (r2.mtime_tracked_diff_sum, r2.mtime_record_diff_sum) == (0, 1)
    assert r2.mtime_tracked == (1, 0) and r2.mtime_tracked_diff == (0, 0)
    assert (r2.activated, r2.deactivated) == ((), ())
    assert r2.htime == T0 + timedelta(seconds=1)
    # 3: +B -A
    assert (r3.mtime_sum, r3.mtime_tracked_sum, r3.mtime_diff_sum) == (4, 3, 2)
    assert (r3.mtime_tracked_diff_sum, r3.mtime_record_diff_sum) == (2, 2)
    assert r3.mtime_tracked == (2, 1) and r3.mtime_tracked_diff == (1, 1)
    assert (r3.activated, r3.deactivated) == (("B",), ("A",))
    # 4: C again (multi: +2)
    assert (r4.mtime_sum, r4.mtime_tracked_sum, r4.mtime_diff_sum) == (6, 3, 2)
    assert (r4.mtime_tracked_diff_sum, r4.mtime_record_diff_sum) == (0, 2)
    assert (r4.activated, r4.deactivated) == ((), ())
    assert r4.htime == T0 + timedelta(seconds=3)


def test_record_diff_spans_unrecorded_transitions(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A"], changed=["A"]))
    mach.add1("A")  # recorded, sum 1
    mach.add1("C")  # not recorded (A unchanged), sum 2
    mach.add1("E")  # not recorded, sum 4 (+E, auto +F)
    mach.remove1("A")  # recorded, sum 5
    r_new, r_old = (r.time for r in hist.find_latest())
    assert r_old.mtime_sum == 1
    assert r_new.mtime_sum == 6 - 1  # A:2 C:1 E:1 F:1
    assert r_new.mtime_diff_sum == 1
    assert r_new.mtime_record_diff_sum == 4


def test_first_record_compares_with_tracking_start(make: Factory) -> None:
    mach = new_mach()
    mach.add1("A")  # before tracking
    hist = make(mach, ["A", "C"])
    mach.add1("C")
    (rec,) = hist.find_latest()
    assert rec.time.activated == ("C",)  # A was already active when tracking started
    assert rec.time.mtime_record_diff_sum == 1
    assert hist.find_latest(Query(activated=["A"])) == []


def test_checks_never_recorded(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A", "D"], track_rejected=True))
    assert mach.can_add1("A") == am.Result.EXECUTED
    assert mach.can_add1("D") == am.Result.CANCELED
    mach.can_remove1("A")
    assert hist.count() == 0


def test_rejected_only_with_track_rejected(make: Factory) -> None:
    mach = new_mach()
    plain = make(mach, ["A", "D"])
    tracking = make(
        mach, Config(tracked_states=["A", "D"], track_rejected=True, store_transitions=True)
    )
    assert mach.add1("D") == am.Result.CANCELED  # requires A
    assert plain.count() == 0
    (rec,) = tracking.find_latest(with_tx=True)
    assert rec.transition is not None and rec.transition.is_accepted is False
    assert rec.time.mtime_diff_sum == 0 and rec.time.mtime_tracked == (0, 0)


# ------------------------------------------------------------------------------- filters
def test_called_allow_list(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A"], called=["C"], store_transitions=True))
    mach.add1("A")
    mach.add1("C")
    mach.add(["A", "C"])
    mach.remove1("C")
    called = [r.transition.called for r in hist.find_latest(with_tx=True)]  # type: ignore[union-attr]
    assert called == [("C",), ("A", "C"), ("C",)]


def test_called_block_list(make: Factory) -> None:
    mach = new_mach()
    hist = make(
        mach,
        Config(tracked_states=["A"], called=["C"], called_exclude=True, store_transitions=True),
    )
    mach.add1("A")
    mach.add1("C")
    mach.add(["E", "C"])
    mach.add1("B")
    called = [r.transition.called for r in hist.find_latest(with_tx=True)]  # type: ignore[union-attr]
    # the auto F after +E is not a call of C: it is recorded
    assert called == [("B",), ("F",), ("A",)]


def test_changed_allow_and_block_lists(make: Factory) -> None:
    mach = new_mach()
    allow = make(mach, Config(tracked_states=["E"], changed=["A"]))
    block = make(mach, Config(tracked_states=["E"], changed=["A"], changed_exclude=True))
    mach.add1("A")  # A changed
    mach.add1("A")  # nothing changed (A not multi)
    mach.add1("C")
    mach.add1("B")  # A deactivated: changed
    assert [r.time.id for r in allow.find_latest()] == [2, 1]
    assert [r.time.mtime_sum for r in allow.find_latest()] == [4, 1]
    assert [r.time.mtime_sum for r in block.find_latest()] == [2, 1]


def test_called_allow_changed_block(make: Factory) -> None:
    """The changed rule, checked last, overrules the called one."""
    mach = new_mach()
    hist = make(
        mach,
        Config(
            tracked_states=["A"],
            called=["C"],
            changed=["B"],
            changed_exclude=True,
            store_transitions=True,
        ),
    )
    mach.add1("C")  # called C, B unchanged: recorded
    mach.add(["B", "C"])  # called C, but B changed: not recorded
    mach.add1("A")  # no C: not recorded
    called = [r.transition.called for r in hist.find_latest(with_tx=True)]  # type: ignore[union-attr]
    assert called == [("C",)]


def test_called_block_changed_allow(make: Factory) -> None:
    mach = new_mach()
    hist = make(
        mach,
        Config(
            tracked_states=["E"],
            called=["C"],
            called_exclude=True,
            changed=["A"],
            store_transitions=True,
        ),
    )
    mach.add1("A")  # A changed: recorded
    mach.add(["B", "C"])  # called C, but A changed (deactivated): recorded
    mach.add1("C")  # called C, A unchanged: not recorded
    mach.add1("E")  # no rule matches; an allow list exists: not recorded
    called = [r.transition.called for r in hist.find_latest(with_tx=True)]  # type: ignore[union-attr]
    assert called == [("B", "C"), ("A",)]


# ------------------------------------------------------------------------------- transitions
class QueueHandlers:
    def A_state(self, e: am.Event) -> None:
        e.machine.add1("E", {"name": "from-A", "secret": "x"})


def test_transition_records(make: Factory) -> None:
    mach = new_mach(handlers=QueueHandlers())
    hist = make(mach, Config(tracked_states=["A", "E", "F"], store_transitions=True))
    mach.add1("A", {"id": 7})
    mach.mutate("add", ["C"], source=am.MutSource("other", "other:3", 12))
    recs = hist.find_latest(with_tx=True)
    txs = [r.transition for r in reversed(recs)]
    assert all(t is not None for t in txs)
    a, e, f, c = txs  # type: ignore[misc]
    assert a.called == ("A",) and a.tx_id == "m:1" and a.time_record_id == 1
    assert dict(a.arguments) == {"id": "7"}
    assert not a.is_auto and a.is_accepted and not a.is_check and not a.is_broken
    # E was queued by A_state: it knows when it was queued and ran
    assert e.called == ("E",) and e.queued_at > 0 and e.executed_at >= e.queued_at
    assert dict(e.arguments) == {"name": "from-A"}  # the log args mapper filters
    assert f.called == ("F",) and f.is_auto
    assert (c.source_mach, c.source_tx) == ("other", "other:3")
    assert a.source_mach is None and a.source_tx is None
    # without with_tx the transition is left out; without store_transitions it is None
    assert all(r.transition is None for r in hist.find_latest())
    plain = make(mach, ["A"])
    mach.remove1("A")
    assert plain.find_latest(with_tx=True)[0].transition is None


def test_arguments_use_the_machines_mapper(make: Factory) -> None:
    mach = new_mach()
    mach.set_log_args(am.log_args_mapper(names=["secret"], max_len=5))
    hist = make(mach, Config(tracked_states=["A"], store_transitions=True))
    mach.add1("A", {"secret": "abcdefgh", "name": "n"})
    tx = hist.find_latest(with_tx=True)[0].transition
    assert tx is not None and dict(tx.arguments) == {"secret": "ab..."}


def test_store_schema(make: Factory) -> None:
    mach = new_mach()
    with_schema = make(mach, Config(tracked_states=["A"], store_schema=True))
    without = make(mach, ["A"])
    rec = with_schema.machine_record()
    assert rec.schema is not None
    assert rec.schema["B"] == {"remove": ["A"]} and rec.schema["C"] == {"multi": True}
    assert without.machine_record().schema is None
    mach.set_schema({**SCHEMA, "G": {"require": ["A"]}})
    assert with_schema.machine_record().schema["G"] == {"require": ["A"]}  # type: ignore[index]
    assert "G" in with_schema.machine_record().state_names


def test_machine_record(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)
    rec = hist.machine_record()
    assert rec.mach_id == "m"
    assert rec.state_names == tuple(mach.state_names)
    assert rec.mtime == tuple(mach.time()) and rec.mtime_sum == 6
    assert rec.next_id == 5 and rec.mach_tick == 0
    assert rec.first_tracking == T0 and rec.last_tracking == T0
    mach.add1("E")  # +E, auto +F: recorded
    clock.advance(10)
    hist.sync()
    rec = hist.machine_record()
    assert rec.mtime_sum == 8 and rec.next_id == 7
    assert rec.last_sync == clock.now


# ------------------------------------------------------------------------------- max_records
def test_max_records_drops_the_oldest(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A"], max_records=3))
    for _ in range(5):
        mach.toggle1("A")
    assert hist.count() == 3
    assert ids(hist.find_latest()) == [5, 4, 3]
    assert [r.time.id for r in hist.export()] == [3, 4, 5]
    # activation flags were decided when recording, not from what is left
    assert ids(hist.find_latest(Query(activated=["A"]))) == [5, 3]


# ------------------------------------------------------------------------------- queries
def test_state_conditions(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)
    assert ids(hist.find_latest(Query(active=["A"]))) == [2, 1]
    assert ids(hist.find_latest(Query(inactive=["A"]))) == [4, 3]
    assert ids(hist.find_latest(Query(active=["B"]))) == [4, 3]
    # activated: active here, inactive in the previous record (not merely active)
    assert ids(hist.find_latest(Query(activated=["B"]))) == [3]
    assert ids(hist.find_latest(Query(activated=["A"]))) == [1]
    assert ids(hist.find_latest(Query(deactivated=["A"]))) == [3]
    assert ids(hist.find_latest(Query(deactivated=["B"]))) == []
    # conditions combine
    assert ids(hist.find_latest(Query(active=["B"], deactivated=["A"]))) == [3]
    assert ids(hist.find_latest(Query(active=["A"], inactive=["B"]))) == [2, 1]
    assert ids(hist.find_latest(Query(active=["A", "B"]))) == []
    assert ids(hist.find_latest(Query("B", "B", "A", "A"))) == [3]  # positional, one name


def test_limit_and_order(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)
    assert ids(hist.find_latest(limit=2)) == [4, 3]
    assert ids(hist.find_latest(Query(), limit=10)) == [4, 3, 2, 1]
    assert ids(hist.find_latest(None, 1)) == [4]
    with pytest.raises(history.QueryError, match="limit"):
        hist.find_latest(limit=-1)


def range_query(**bounds: tuple[object, object]) -> Query:
    return Query(
        start=ConditionTime(**{k: lo for k, (lo, _) in bounds.items()}),  # type: ignore[arg-type]
        end=ConditionTime(**{k: hi for k, (_, hi) in bounds.items()}),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"htime": (T0 + timedelta(seconds=1), T0 + timedelta(seconds=2))}, [3, 2]),
        ({"htime": (T0, T0)}, [1]),
        ({"htime": (T0 + timedelta(seconds=3), T0 + timedelta(days=1))}, [4]),
        ({"mtime_sum": (2, 4)}, [3, 2]),
        ({"mtime_sum": (5, 5)}, []),
        ({"mtime_tracked_sum": (3, 3)}, [4, 3]),
        ({"mtime_diff_sum": (2, 2)}, [4, 3]),
        ({"mtime_tracked_diff_sum": (0, 0)}, [4, 2]),
        ({"mtime_record_diff_sum": (1, 1)}, [2, 1]),
        ({"mach_tick": (0, 0)}, [4, 3, 2, 1]),
        ({"mach_tick": (1, 5)}, []),
        ({"mtime_sum": (1, 4), "mtime_tracked_diff_sum": (1, 5)}, [3, 1]),
        ({"mtime_sum": (4, 1)}, []),  # an empty range
        ({"mtime_sum": (-(2**70), 2**70)}, [4, 3, 2, 1]),  # beyond 64 bits
    ],
)
def test_time_ranges_are_closed(
    make: Factory, clock: FakeClock, bounds: dict[str, tuple[object, object]], expected: list[int]
) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)
    assert ids(hist.find_latest(range_query(**bounds))) == expected


def test_per_state_tick_ranges(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)

    def q(states: list[str], lo: list[int], hi: list[int], **kw: object) -> list[int]:
        return ids(
            hist.find_latest(
                Query(
                    start=ConditionTime(mtime_states=states, mtime=lo),
                    end=ConditionTime(mtime_states=states, mtime=hi),
                    **kw,
                )
            )
        )  # type: ignore[arg-type]

    assert q(["A"], [1], [1]) == [2, 1]
    assert q(["A"], [2], [9]) == [4, 3]
    assert q(["B", "A"], [1, 2], [1, 2]) == [4, 3]
    assert q(["B", "A"], [0, 0], [0, 5]) == [2, 1]
    assert ids(
        hist.find_latest(
            Query(
                active=["B"],
                start=ConditionTime(mtime_states=["A"], mtime=[0], mtime_sum=5),
                end=ConditionTime(mtime_states=["A"], mtime=[9], mtime_sum=9),
            )
        )
    ) == [4]


def test_between_queries(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)  # records at +0 s, +1 s, +2 s, +3 s
    at = clock.at
    assert hist.activated_between("A", at(0), at(0))
    assert not hist.activated_between("A", at(1), at(3))
    assert hist.activated_between("B", at(2), at(2))
    assert not hist.activated_between("B", at(2.5), at(9))  # B stays active: no activation
    assert hist.active_between("B", at(2.5), at(9))
    assert not hist.active_between("B", at(0), at(1.5))
    assert hist.active_between("A", at(1), at(1))
    assert hist.deactivated_between("A", at(1.5), at(2))
    assert not hist.deactivated_between("A", at(3), at(4))
    assert hist.inactive_between("A", at(3), at(9))
    assert not hist.inactive_between("A", at(0), at(1))
    # no record in the range at all
    assert not hist.active_between("B", at(10), at(20))
    assert not hist.active_between("B", at(3), at(0))  # start after end


@pytest.mark.parametrize(
    "query",
    [
        Query(active=["C"]),
        Query(activated=["E"]),
        Query(inactive=["Nope"]),
        Query(deactivated=["C"]),
        Query(
            start=ConditionTime(mtime_states=["C"], mtime=[1]),
            end=ConditionTime(mtime_states=["C"], mtime=[2]),
        ),
    ],
)
def test_untracked_state_in_query(make: Factory, query: Query) -> None:
    hist = make(new_mach(), ["A", "B"])
    with pytest.raises(ValueError, match="not tracked") as info:
        hist.find_latest(query)
    assert isinstance(info.value, history.QueryError)
    assert info.value.state in ("C", "E", "Nope")


def test_untracked_state_in_between_queries(make: Factory) -> None:
    hist = make(new_mach(), ["A"])
    for fn in (
        hist.activated_between,
        hist.active_between,
        hist.deactivated_between,
        hist.inactive_between,
    ):
        with pytest.raises(ValueError, match="'B' is not tracked"):
            fn("B", T0, T0)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (Query(start=ConditionTime(mtime_sum=1)), "mtime_sum is set in Query.start only"),
        (Query(end=ConditionTime(htime=T0)), "htime is set in Query.end only"),
        (
            Query(
                start=ConditionTime(htime=datetime(2025, 1, 1)),
                end=ConditionTime(htime=datetime(2025, 1, 2)),
            ),
            "naive",
        ),
        (
            Query(
                start=ConditionTime(mtime_states=["A"], mtime=[1, 2]),
                end=ConditionTime(mtime_states=["A"], mtime=[1, 2]),
            ),
            "1 states in mtime_states",
        ),
        (
            Query(
                start=ConditionTime(mtime_states=["A"], mtime=[1]),
                end=ConditionTime(mtime_states=["B"], mtime=[1]),
            ),
            "same mtime_states",
        ),
        (
            Query(start=ConditionTime(mach_tick="1"), end=ConditionTime(mach_tick=2)),  # type: ignore[arg-type]
            "must be an int",
        ),
        (
            Query(start=ConditionTime(htime=1), end=ConditionTime(htime=2)),  # type: ignore[arg-type]
            "must be a datetime",
        ),
    ],
)
def test_malformed_queries(make: Factory, query: Query, message: str) -> None:
    hist = make(new_mach(), ["A", "B"])
    with pytest.raises(history.QueryError, match=message):
        hist.find_latest(query)


def test_naive_datetime_in_between_query(make: Factory) -> None:
    hist = make(new_mach(), ["A"])
    with pytest.raises(history.QueryError, match="naive"):
        hist.active_between("A", datetime(2025, 1, 1), datetime(2025, 1, 2))


def test_not_a_query(make: Factory) -> None:
    hist = make(new_mach(), ["A"])
    with pytest.raises(history.QueryError, match="expected a Query"):
        hist.find_latest({"active": ["A"]})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- travel back
def test_record_and_clock_at(make: Factory, clock: FakeClock) -> None:
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    run_abcc(mach, clock)  # sums 1, 2, 4, 6 at +0..+3 s
    at = clock.at
    assert hist.clock_at(htime=at(2.5)) == {"A": 2, "B": 1}
    assert hist.clock_at(htime=at(1)) == {"A": 1, "B": 0}
    assert hist.clock_at(htime=at(-1)) is None
    assert hist.clock_at(mtime_sum=3) == {"A": 1, "B": 0}
    assert hist.clock_at(mtime_sum=4) == {"A": 2, "B": 1}
    assert hist.clock_at(mtime_sum=0) is None
    rec = hist.record_at(mtime_sum=5)
    assert rec is not None and rec.time.id == 3
    rec = hist.record_at(mach_tick=0)
    assert rec is not None and rec.time.id == 4
    assert hist.record_at(mach_tick=-1) is None
    with pytest.raises(history.QueryError, match="exactly one"):
        hist.record_at()
    with pytest.raises(history.QueryError, match="exactly one"):
        hist.clock_at(htime=at(1), mtime_sum=2)
    with pytest.raises(history.QueryError, match="naive"):
        hist.record_at(htime=datetime(2025, 1, 1))


def test_record_at_with_tx(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A"], store_transitions=True))
    mach.add1("A")
    rec = hist.record_at(mtime_sum=1, with_tx=True)
    assert rec is not None and rec.transition is not None and rec.transition.tx_id == "m:1"
    rec = hist.record_at(mtime_sum=1)
    assert rec is not None and rec.transition is None


def test_travel_back_across_restores(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A", "C"], store_transitions=True))
    mach.add1("A")
    mach.add1("C")
    snapshot = hist.machine_record()
    mach.add1("B")  # A off
    hist.restore(snapshot)  # A back on, machine tick 1
    mach.add1("C")
    assert mach.machine_tick == 1
    assert hist.clock_at(mach_tick=0) == {"A": 2, "C": 1}
    assert hist.clock_at(mach_tick=1) == {"A": 1, "C": 3}


# ------------------------------------------------------------------------------- restore
def test_restore_from_machine_record() -> None:
    """Memory goes on from a machine record saved elsewhere (SQLite: test_sqlite.py)."""
    schema = {**SCHEMA, "MachineRestored": {}}
    mach = am.Machine(schema, id="m")
    hist = history.Memory(mach, Config(tracked_states=["A", "C"], store_transitions=True))
    mach.add1("A")
    mach.add1("C")
    mach.add1("C")
    rec = hist.machine_record()
    assert rec.to_import_data() == {
        "id": "m",
        "state_names": list(mach.state_names),
        "time": list(mach.time()),
        "machine_tick": 0,
    }
    # a new machine with the same id, a history going on from the record
    hist.dispose()
    mach2 = am.Machine(schema, id="m")
    hist2 = history.Memory(mach2, ["A", "C"], machine_record=rec)
    try:
        assert hist2.stored_record == rec
        hist2.restore()
        assert mach2.time(["A", "C"]) == (1, 3)
        assert mach2.machine_tick == 1
        assert mach2.is1("MachineRestored")
        (r,) = hist2.find_latest()
        assert r.time.id == rec.next_id  # ids go on
        assert r.time.mach_tick == 1
        # the restored time is the "previous record": A was active before, so not activated
        assert r.time.activated == () and r.time.mtime_record_diff_sum == 1
    finally:
        hist2.dispose()


def test_restore_errors(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, ["A"])
    with pytest.raises(history.HistoryError, match="nothing to restore"):
        hist.restore()
    other = am.Machine({"A": {}}, id="m")
    other_hist = history.Memory(other, ["A"])
    rec = other_hist.machine_record()
    other_hist.dispose()
    with pytest.raises(am.Error):  # other states
        hist.restore(rec)
    mach.add1("A")  # still recording normally
    assert hist.find_latest()[0].time.activated == ("A",)


def test_record_of_another_machine(make: Factory) -> None:
    mach = new_mach()
    rec = history.Memory(am.Machine(SCHEMA, id="x"), ["A"]).machine_record()
    with pytest.raises(history.ConfigError, match="machine 'x'"):
        history.Memory(mach, ["A"], machine_record=rec)
    assert mach.tracers == []


# ------------------------------------------------------------------------------- layout
def test_schema_growth_and_reorder(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, ["C", "A"])
    mach.add1("A")
    mach.set_schema({"G": {}, **SCHEMA})  # grows; G is appended
    mach.add1("G")
    mach.add1("C")
    mach.verify_states(["G", "F", "E", "D", "C", "B", "A", "Exception"])
    mach.add1("C")
    recs = [r.time for r in hist.find_latest()]
    assert [r.mtime_tracked for r in recs] == [(3, 1), (1, 1), (0, 1), (0, 1)]
    assert [r.activated for r in recs] == [(), ("C",), (), ("A",)]
    assert hist.machine_record().state_names == tuple(mach.state_names)


# ------------------------------------------------------------------------------- lifecycle
def test_machine_dispose_stops_recording(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, ["A"])
    mach.add1("A")
    assert hist.recording
    mach.dispose()
    assert not hist.recording and mach.tracers == []
    assert hist.count() == 1  # still answers
    assert hist.machine_record().mtime_sum == 1  # the time before disposal


def test_dispose(make: Factory) -> None:
    mach = new_mach()
    hist = make(mach, ["A"])
    mach.add1("A")
    hist.dispose()
    hist.dispose()  # idempotent
    assert hist.disposed and mach.tracers == []
    mach.add1("B")  # not recorded, no error
    for call in (
        hist.find_latest,
        hist.count,
        hist.export,
        hist.sync,
        hist.machine_record,
        lambda: hist.record_at(mtime_sum=1),
        lambda: hist.active_between("A", T0, T0),
    ):
        with pytest.raises(history.HistoryDisposedError):
            call()


def test_context_manager(kind: str, tmp_path: object) -> None:
    mach = new_mach()
    hist: history.BaseMemory = (
        history.Memory(mach, ["A"])
        if kind == "memory"
        else history.SQLiteMemory(mach, ["A"], f"{tmp_path}/cm.sqlite")
    )
    with hist as entered:
        assert entered is hist
        mach.add1("A")
        assert hist.count() == 1
    assert hist.disposed and mach.tracers == []
    assert "disposed" in repr(hist)


def test_clock_must_be_aware(make: Factory) -> None:
    with pytest.raises(history.ConfigError, match="aware datetime"):
        make(new_mach(), ["A"], clock=lambda: datetime(2025, 1, 1))


def test_system_clock_is_utc(kind: str, tmp_path: object) -> None:
    mach = new_mach()
    hist: history.BaseMemory = (
        history.Memory(mach, ["A"])
        if kind == "memory"
        else history.SQLiteMemory(mach, ["A"], f"{tmp_path}/utc.sqlite")
    )
    try:
        mach.add1("A")
        rec = hist.find_latest()[0].time
        assert rec.htime.utcoffset() == timedelta(0)
        assert hist.active_between("A", rec.htime, rec.htime)
    finally:
        hist.dispose()


async def test_in_a_trio_machine(make: Factory) -> None:
    async with am.open_machine(SCHEMA, id="m") as mach:
        hist = make(mach, ["A", "E", "F"])
        mach.add1("E")
        with_f = hist.find_latest(Query(activated=["F"]))
        assert len(with_f) == 1 and with_f[0].time.mtime_tracked == (0, 1, 1)
    assert not hist.recording  # the machine was disposed with its block
    assert hist.count() == 2


def test_not_a_machine(kind: str) -> None:
    cls = history.Memory if kind == "memory" else history.SQLiteMemory
    with pytest.raises(TypeError, match="expected a trio_am machine"):
        cls(object(), ["A"])  # type: ignore[arg-type]


def test_layout_change_keeps_the_previous_record(make: Factory) -> None:
    """A schema change between records is not a change of time: "previous record" stays
    the last record, even when unrecorded transitions changed tracked states since."""
    mach = new_mach()
    hist = make(mach, Config(tracked_states=["A"], called=["C"]))  # tracks A and C
    mach.add(["A", "C"])  # recorded: A, C active
    mach.remove1("A")  # not recorded (did not call C)
    mach.set_schema({**SCHEMA, "G": {}})
    mach.add1("C")  # recorded
    rec = hist.find_latest()[0].time
    assert rec.deactivated == ("A",) and rec.activated == ()
    assert rec.mtime_record_diff_sum == 3  # A +1, C +2


def test_import_data_is_a_new_baseline(make: Factory) -> None:
    """After the machine's time is replaced (import_data by anyone), the next record
    compares with the imported time."""
    mach = new_mach()
    hist = make(mach, ["A", "B"])
    mach.add1("A")  # record 1: A on
    snapshot = mach.export()
    mach.add1("B")  # record 2: B on, A off
    mach.import_data(snapshot)  # back to: A on, B off (no MachineRestored in SCHEMA)
    mach.add1("C")
    rec = hist.find_latest()[0].time
    assert rec.id == 3 and rec.mtime_tracked == (1, 0)
    assert rec.activated == () and rec.deactivated == ()  # vs the imported time, not record 2
    assert rec.mtime_record_diff_sum == 1
