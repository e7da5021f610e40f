"""Behaviour kept identical to asyncmachine-go, found by running random cases through
both implementations (docs/differences.md, "Kept from asyncmachine-go on purpose").
Each test is a case where trio_am used to differ."""

from __future__ import annotations

from typing import Any

import trio_am as am


def recorder(
    mach: am.Machine, veto: set[str] = frozenset(), raise_: set[str] = frozenset()
) -> list[str]:  # type: ignore[assignment]
    """Bind handlers for every name; returns the list they append their names to."""
    calls: list[str] = []
    names = mach.state_names

    def mk(name: str, final: bool) -> Any:
        def handler(e: am.Event) -> bool | None:
            calls.append(name)
            if name in raise_:
                raise ValueError("boom")
            return None if final or name not in veto else False

        return handler

    neg = {"any_enter": mk("any_enter", False)}
    fin = {"any_state": mk("any_state", True)}
    for s in names:
        neg[f"{s}_enter"] = mk(f"{s}_enter", False)
        neg[f"{s}_exit"] = mk(f"{s}_exit", False)
        fin[f"{s}_state"] = mk(f"{s}_state", True)
        fin[f"{s}_end"] = mk(f"{s}_end", True)
        for t in names:
            neg[f"{s}_{t}"] = mk(f"{s}_{t}", False)
    mach.bind_handler_maps(neg, fin)
    return calls


def test_states_in_no_require_relation_are_ordered_first() -> None:
    # C is required by B (absent): C takes part in a require relation, A does not, so
    # A's enter runs first; its veto stops the transition before C_enter
    m = am.Machine({"A": {}, "B": {"require": ["C"]}, "C": {}})
    calls = recorder(m, veto={"A_enter"})
    assert m.set(["C", "A"]) == am.Result.CANCELED
    assert calls == ["A_enter"]


def test_require_cycle_skips_the_require_sort() -> None:
    m = am.Machine({"A": {}, "B": {"require": ["C"], "add": ["C"]}, "C": {"require": ["B"]}})
    calls = recorder(m)
    m.add(["B", "C", "A"])
    enters = [c for c in calls if c.endswith("_enter") and c != "any_enter"]
    assert enters == ["B_enter", "C_enter", "A_enter"]  # list order kept


def test_after_is_applied_by_a_neighbour_sort() -> None:
    m = am.Machine({"A": {}, "B": {"after": ["A"]}, "C": {}})
    calls = recorder(m)
    m.add(["B", "A", "C"])
    enters = [c for c in calls if c.endswith("_enter") and c != "any_enter"]
    assert enters == ["A_enter", "B_enter", "C_enter"]


def test_after_relation_stays_met_when_a_state_stands_between() -> None:
    # Go's neighbour sort would keep [B, C, A] here; trio_am keeps the promise of `after`
    m = am.Machine({"A": {}, "B": {"after": ["A"]}, "C": {}})
    calls = recorder(m)
    m.add(["B", "C", "A"])
    enters = [c for c in calls if c.endswith("_enter") and c != "any_enter"]
    assert enters.index("A_enter") < enters.index("B_enter")


def test_auto_transition_with_every_called_state_rejected_goes_on() -> None:
    # C (auto) implies A and B; C_enter vetoes: C is dropped, the transition goes on with
    # the rest, is re-resolved from no called state and changes nothing
    m = am.Machine(
        {
            "A": {"require": ["B"]},
            "B": {"after": ["A"]},
            "C": {"auto": True, "add": ["A", "B"]},
            "D": {},
        }
    )
    txs: list[tuple[bool, bool]] = []

    class T:
        def transition_end(self, tx: am.Transition) -> None:
            txs.append((tx.is_auto, tx.is_accepted))

    calls = recorder(m, veto={"C_enter"})
    m.bind_tracer(T())
    assert m.add1("D") == am.Result.EXECUTED
    assert txs == [(False, True), (True, True)]
    assert calls.count("any_state") == 2  # the auto transition reached its final phase
    assert m.string_all() == "(D:1) [A:0 B:0 C:0 Exception:0]"


def test_exit_veto_of_an_auto_state_in_an_auto_transition_is_ignored() -> None:
    # A (auto) is active; B (auto, needs D) removes A. When D arrives, the auto round
    # activates B and A exits: A_exit vetoes, but a veto about an auto state does not
    # cancel an auto transition (machine.md §5.6), and A, not being in the target, exits
    # anyway. (asyncmachine-go panics on this case: an index of -1 in its exit phase.)
    m = am.Machine(
        {"A": {"auto": True}, "B": {"auto": True, "require": ["D"], "remove": ["A"]}, "D": {}}
    )
    m.add1("A")
    assert m.string_all() == "(A:1) [B:0 D:0 Exception:0]"
    calls = recorder(m, veto={"A_exit"})
    assert m.add1("D") == am.Result.EXECUTED
    assert "A_exit" in calls
    assert m.string_all() == "(B:1 D:1) [A:2 Exception:0]"


def test_state_rejected_in_the_pair_phase_keeps_its_remaining_pairs() -> None:
    # the auto round for D (needs R) runs after add1("R"); A_D vetoes, so D (auto) is
    # dropped from the target, yet E_D, later in the same phase, still runs
    m = am.Machine({"A": {}, "E": {}, "D": {"auto": True, "require": ["R"]}, "R": {}})
    m.add(["A", "E"])
    calls = recorder(m, veto={"A_D"})
    m.add1("R")
    assert calls.index("A_D") < calls.index("E_D")
    assert m.string_all() == "(A:1 E:1 R:1) [D:0 Exception:0]"
