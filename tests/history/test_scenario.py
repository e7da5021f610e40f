"""The FX machine of scenarios-tools.md ("Conventions") through a history: its 8
transitions as records, the final ticks (Start 1, Ready 1, Foo 3, Bar 1, Baz 2,
Healthcheck 1; machine time 9), and queries over them, from both stores."""

from __future__ import annotations

import sys
from pathlib import Path

import trio_am as am
from trio_am.history import Config, Query

from ._support import Factory

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fx import SCHEMA as FX_SCHEMA  # noqa: E402
from tests.support.fx import FxHandlers, run_fx  # noqa: E402

STATES = ["Start", "Ready", "Foo", "Bar", "Baz", "Healthcheck"]


def fx() -> am.Machine:
    return am.Machine(FX_SCHEMA, id="fx-a", handlers=FxHandlers(), tags=["fixture", "env:test"])


def test_fx_records_every_transition(make: Factory) -> None:
    mach = fx()
    hist = make(mach, Config(tracked_states=STATES, track_rejected=True, store_transitions=True))
    run_fx(mach)
    recs = hist.export()
    assert [r.time.id for r in recs] == list(range(1, 9))
    txs = [r.transition for r in recs]
    assert all(tx is not None for tx in txs)
    assert [(tx.called, tx.is_auto, tx.is_accepted) for tx in txs] == [  # type: ignore[union-attr]
        (("Start",), False, True),
        (("Ready",), True, True),
        (("Bar",), False, True),
        (("Baz",), False, True),
        (("Foo",), False, False),  # canceled
        (("Healthcheck",), False, True),
        (("Baz",), False, True),
        (("Foo",), False, True),
    ]
    assert [r.time.mut_type for r in recs][6] == am.MutationType.REMOVE
    changes = [(r.time.activated, r.time.deactivated) for r in recs]
    assert changes == [
        (("Start",), ()),
        (("Ready",), ()),
        (("Foo", "Bar"), ()),
        (("Baz",), ("Foo",)),
        ((), ()),
        (("Healthcheck",), ()),
        ((), ("Baz",)),
        (("Foo",), ()),
    ]
    last = recs[-1].time
    assert dict(zip(STATES, last.mtime_tracked, strict=True)) == {
        "Start": 1,
        "Ready": 1,
        "Foo": 3,
        "Bar": 1,
        "Baz": 2,
        "Healthcheck": 1,
    }
    assert last.mtime_sum == 9 and last.mtime_tracked_sum == 9
    assert hist.machine_record().mtime_sum == 9


def test_fx_queries(make: Factory) -> None:
    mach = fx()
    hist = make(mach, STATES)  # canceled transitions are not recorded: 7 records
    run_fx(mach)
    assert hist.count() == 7

    def calls(q: Query) -> list[int]:
        return [r.time.mtime_sum for r in hist.find_latest(q)]

    assert calls(Query(activated=["Foo"])) == [9, 4]  # add Foo (last), add Bar
    assert calls(Query(deactivated=["Foo"])) == [6]  # add Baz
    assert calls(Query(active=["Baz"])) == [7, 6]
    assert calls(Query(inactive=["Foo"], active=["Start"])) == [8, 7, 6, 2, 1]
    assert calls(Query(activated=["Healthcheck"], active=["Baz"])) == [7]
    assert hist.clock_at(mtime_sum=6) == {
        "Start": 1,
        "Ready": 1,
        "Foo": 2,
        "Bar": 1,
        "Baz": 1,
        "Healthcheck": 0,
    }
