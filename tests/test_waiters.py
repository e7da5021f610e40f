"""Subscriptions: every ``when*`` waiter, registration, closing, cancellation, disposal.

api.md "Subscriptions"; machine.md §7 (7), §9.1, §9.2, §16, §17.4.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_am as am

SCHEMA = {"Foo": {}, "Bar": {}, "M": {"multi": True}}


def pending(mach):
    """How many waiters the machine holds (white box: the registry's count)."""
    return 0 if mach._reg is None else mach._reg.count


# ---------------------------------------------------------------------------------------
# one table of every kind: (make waiter, make it true and false again)
# ---------------------------------------------------------------------------------------


def _flip(*steps):
    def run(m):
        for fn, *a in steps:
            getattr(m, fn)(*a)

    return run


# name -> (setup, waiter factory, mutations that make the condition hold, then not)
BLIPS = {
    "when": (
        _flip(),
        lambda m: m.when(["Foo", "Bar"]),
        _flip(("add", ["Foo", "Bar"]), ("remove", ["Foo", "Bar"])),
    ),
    "when1": (_flip(), lambda m: m.when1("Foo"), _flip(("add1", "Foo"), ("remove1", "Foo"))),
    "when_not": (
        _flip(("add", ["Foo", "Bar"])),
        lambda m: m.when_not(["Foo", "Bar"]),
        _flip(("remove", ["Foo", "Bar"]), ("add", ["Foo", "Bar"])),
    ),
    "when_not1": (
        _flip(("add1", "Foo")),
        lambda m: m.when_not1("Foo"),
        _flip(("remove1", "Foo"), ("add1", "Foo")),
    ),
    "when_args": (
        _flip(),
        lambda m: m.when_args("Foo", {"a": 1}),
        _flip(("add1", "Foo", {"a": 1, "b": 2}), ("remove1", "Foo")),
    ),
    "when_time": (
        _flip(),
        lambda m: m.when_time(["Foo", "Bar"], [1, 1]),
        _flip(("add", ["Foo", "Bar"]), ("remove", ["Foo", "Bar"])),
    ),
    "when_time1": (
        _flip(),
        lambda m: m.when_time1("Foo", 3),
        _flip(("add1", "Foo"), ("remove1", "Foo"), ("add1", "Foo"), ("remove1", "Foo")),
    ),
    "when_ticks": (
        _flip(("add1", "Foo")),
        lambda m: m.when_ticks("Foo", 2),
        _flip(("remove1", "Foo"), ("add1", "Foo"), ("remove1", "Foo")),
    ),
    "when_next_active": (
        _flip(("add1", "Foo")),
        lambda m: m.when_next_active("Foo"),
        _flip(("remove1", "Foo"), ("add1", "Foo"), ("remove1", "Foo")),
    ),
    "when_query": (
        _flip(),
        lambda m: m.when_query(lambda c: c["Foo"] == 1 and c["Bar"] == 1),
        _flip(("add", ["Foo", "Bar"]), ("remove", ["Foo", "Bar"])),
    ),
    "when_err": (
        _flip(),
        lambda m: m.when_err(),
        _flip(("add_err", ValueError("x")), ("remove1", "Exception")),
    ),
    "when_disposed": (_flip(), lambda m: m.when_disposed(), _flip(("dispose",))),
}


@pytest.mark.parametrize("kind", sorted(BLIPS))
async def test_registered_at_call_time(kind):
    """A condition that held only between the call and the await still resolves it."""
    setup, make, blip = BLIPS[kind]
    async with am.open_machine(SCHEMA) as mach:
        setup(mach)
        w = make(mach)
        assert isinstance(w, am.Waiter)
        assert not w.is_set()
        blip(mach)
        assert w.is_set()
        with trio.fail_after(1):
            await w


@pytest.mark.parametrize("kind", sorted(set(BLIPS) - {"when_disposed", "when_args"}))
async def test_not_resolved_before_condition(kind, autojump_clock):
    setup, make, _ = BLIPS[kind]
    async with am.open_machine(SCHEMA) as mach:
        setup(mach)
        w = make(mach)
        mach.add1("M")  # an unrelated transition
        assert not w.is_set()
        assert not w.done
        with trio.move_on_after(0.01) as cs:
            await w
        assert cs.cancelled_caught


# ---------------------------------------------------------------------------------------
# already-true conditions
# ---------------------------------------------------------------------------------------

ALREADY = {
    "when": lambda m: m.when(["Foo", "Bar"]),
    "when1": lambda m: m.when1("Foo"),
    "when_not": lambda m: m.when_not(["M"]),
    "when_not1": lambda m: m.when_not1("M"),
    "when_time": lambda m: m.when_time(["Foo", "Bar"], [1, 1]),
    "when_time1": lambda m: m.when_time1("Foo", 1),
    "when_ticks_0": lambda m: m.when_ticks("Foo", 0),
    "when_query": lambda m: m.when_query(lambda c: c["Foo"] == 1),
    "when_queue": lambda m: m.when_queue(m.queue_tick),
    "when_queue_ends": lambda m: m.when_queue_ends(),
    "when_err": lambda m: m.when_err(),
}


@pytest.mark.parametrize("kind", sorted(ALREADY))
async def test_already_true_resolves_at_once(kind):
    async with am.open_machine(SCHEMA) as mach:
        mach.add(["Foo", "Bar"])
        mach.add_err(ValueError("x"))
        before = pending(mach)
        w = ALREADY[kind](mach)
        assert w.is_set()
        assert w.done
        assert w.error is None
        assert pending(mach) == before  # nothing left registered
        with trio.testing.assert_checkpoints():
            await w
        await w  # awaiting again is fine


async def test_when_next_active_inactive_and_active_and_multi():
    async with am.open_machine(SCHEMA) as mach:
        w_off = mach.when_next_active("Foo")  # inactive: the next activation
        mach.add1("Foo")
        assert w_off.is_set()
        w_on = mach.when_next_active("Foo")  # active: needs a new activation
        mach.add1("Foo")  # non-multi re-add: no tick change
        assert not w_on.is_set()
        mach.remove1("Foo")
        assert not w_on.is_set()
        mach.add1("Foo")
        assert w_on.is_set()
        mach.add1("M")
        w_multi = mach.when_next_active("M")
        mach.add1("M")  # Multi re-activation counts
        assert w_multi.is_set()


async def test_when_ticks_counts_from_call_time():
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("Foo")
        mach.remove1("Foo")  # tick 2
        w = mach.when_ticks("Foo", 3)
        mach.add1("Foo")
        mach.remove1("Foo")
        assert not w.is_set()
        mach.add1("Foo")
        assert w.is_set()
        assert mach.tick("Foo") == 5


async def test_when_args_matching():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when_args("Foo", {"a": 1, "b": "x"})
        mach.add1("Foo", {"a": 1})  # missing key
        assert not w.is_set()
        mach.remove1("Foo")
        mach.add1("Foo", {"a": 2, "b": "x"})  # wrong value
        assert not w.is_set()
        mach.add1("Foo", {"a": 1, "b": "x"})  # already active, not multi: no Foo_state
        assert not w.is_set()
        mach.remove1("Foo")
        mach.add1("Foo", {"a": 1, "b": "x", "c": None})
        assert w.is_set()


async def test_when_args_multi_reactivation():
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("M", {"n": 1})
        w = mach.when_args("M", {"n": 2})
        mach.add1("M", {"n": 2})
        assert w.is_set()


async def test_when_args_already_active_does_not_resolve():
    """when_args waits for an activation; a state already active with those args is not it."""
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("Foo", {"a": 1})
        w = mach.when_args("Foo", {"a": 1})
        assert not w.is_set()


async def test_when_query_evaluated_at_registration_and_after_transitions():
    calls = []

    def q(clock):
        calls.append(dict(clock))
        return clock["Bar"] >= 1

    async with am.open_machine(SCHEMA) as mach:
        w = mach.when_query(q)
        assert len(calls) == 1  # evaluated now (machine.md §16)
        assert isinstance(calls[0], dict) and set(calls[0]) >= {"Foo", "Bar", "M", "Exception"}
        mach.add1("Foo")
        assert not w.is_set()
        mach.add1("Bar")
        assert w.is_set()
        n = len(calls)
        mach.add1("M")
        assert len(calls) == n  # no longer evaluated


async def test_when_query_predicate_error_fails_the_waiter():
    def q(clock):
        if clock["Foo"]:
            raise KeyError("bad predicate")
        return False

    async with am.open_machine(SCHEMA) as mach:
        w = mach.when_query(q)
        mach.add1("Foo")
        assert w.done and not w.is_set()
        with pytest.raises(KeyError):
            await w


async def test_when_err_resolves_on_multi_reentry():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when_err()
        mach.add_err(ValueError("a"))
        assert w.is_set()
        w2 = mach.when_next_active("Exception")
        mach.add_err(ValueError("b"))
        assert w2.is_set()


# ---------------------------------------------------------------------------------------
# queue waiters
# ---------------------------------------------------------------------------------------


async def test_when_queue_for_a_queued_mutation_that_was_canceled():
    """machine.md §16: WhenQueue is checked after every processed mutation, so a
    canceled last mutation still resolves it."""
    seen = {}

    class H:
        def Foo_state(self, e):
            r = e.machine.add1("Bar")
            seen["r"] = r
            seen["w"] = e.machine.when_queue(r.queue_tick)
            seen["set_in_handler"] = seen["w"].is_set()

        def Bar_enter(self, e):
            return False

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        assert mach.add1("Foo") == am.Result.EXECUTED
        r = seen["r"]
        assert r == am.Result.QUEUED and r.is_queued
        assert seen["set_in_handler"] is False
        assert mach.not1("Bar")
        assert seen["w"].is_set()
        with trio.fail_after(1):
            await seen["w"]
        # registered afterwards: at once
        assert mach.when_queue(r.queue_tick).is_set()


async def test_when_queue_waits_for_its_own_tick():
    seen = {}

    class H:
        def Foo_state(self, e):
            m = e.machine
            r1 = m.add1("Bar")
            r2 = m.add1("M")
            seen["ticks"] = (r1.queue_tick, r2.queue_tick)
            seen["w2"] = m.when_queue(r2.queue_tick)

        def Bar_state(self, e):
            seen["w2_in_bar"] = seen["w2"].is_set()

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        q0 = mach.queue_tick
        mach.add1("Foo")
        t1, t2 = seen["ticks"]
        assert (t1, t2) == (q0 + 2, q0 + 3)
        assert seen["w2_in_bar"] is False
        assert seen["w2"].is_set()
        assert mach.queue_tick == t2


async def test_when_queue_future_tick_from_outside():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when_queue(mach.queue_tick + 2)
        mach.add1("Foo")
        assert not w.is_set()
        mach.add1("Foo")  # any processed mutation counts
        assert w.is_set()


async def test_when_queue_ends_resolves_after_drain():
    seen = {}

    class H:
        def Foo_state(self, e):
            seen["w"] = e.machine.when_queue_ends()
            e.machine.add1("Bar")

        def Bar_state(self, e):
            seen["in_bar"] = seen["w"].is_set()

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        mach.add1("Foo")
        assert seen["in_bar"] is False
        assert seen["w"].is_set()


# ---------------------------------------------------------------------------------------
# waiting tasks, close, cancellation
# ---------------------------------------------------------------------------------------


async def test_await_wakes_a_blocked_task():
    async with am.open_machine(SCHEMA) as mach:
        done = []

        async def waiter():
            await mach.when1("Foo")
            done.append(mach.is1("Foo"))

        mach.nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        mach.add1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert done == [True]


async def test_wait_method_same_as_await():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        mach.add1("Foo")
        await w.wait()


async def test_close_before_await_raises_subscription_closed():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        assert pending(mach) == 1
        w.close()
        assert pending(mach) == 0
        assert w.done and not w.is_set()
        assert isinstance(w.error, am.SubscriptionClosed)
        with pytest.raises(am.SubscriptionClosed):
            await w
        mach.add1("Foo")
        assert not w.is_set()
        w.close()  # idempotent


async def test_close_wakes_pending_await():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        errors = []

        async def waiter():
            try:
                await w
            except am.SubscriptionClosed as exc:
                errors.append(exc)

        mach.nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        w.close()
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 1
        assert errors[0].machine_id == mach.id


async def test_close_after_set_keeps_outcome():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        mach.add1("Foo")
        w.close()
        assert w.is_set()
        await w


async def test_waiter_as_context_manager_closes():
    async with am.open_machine(SCHEMA) as mach:
        with mach.when1("Foo") as w:
            assert pending(mach) == 1
        assert pending(mach) == 0
        with pytest.raises(am.SubscriptionClosed):
            await w


async def test_cancellation_unregisters(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        assert pending(mach) == 0
        w = mach.when1("Foo")
        w2 = mach.when_not1("Exception")  # already true: not registered
        assert w2.is_set()
        assert pending(mach) == 1
        with trio.move_on_after(1) as cs:
            await w
        assert cs.cancelled_caught
        assert pending(mach) == 0
        assert w.done and not w.is_set()
        mach.add1("Foo")
        assert not w.is_set()


async def test_cancellation_of_one_of_two_awaiting_tasks_keeps_it_registered():
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        done = []

        async def patient():
            await w
            done.append("patient")

        mach.nursery.start_soon(patient)
        await trio.testing.wait_all_tasks_blocked()
        with trio.CancelScope() as cs:
            cs.cancel()
            await w
        assert cs.cancelled_caught
        assert pending(mach) == 1
        mach.add1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert done == ["patient"]


@pytest.mark.parametrize(
    "make",
    [
        lambda m: m.when1("Foo"),
        lambda m: m.when(["Foo", "Bar"]),
        lambda m: m.when_not1("M"),
        lambda m: m.when_args("Foo", {"a": 1}),
        lambda m: m.when_time1("Foo", 5),
        lambda m: m.when_ticks("Foo", 4),
        lambda m: m.when_next_active("Foo"),
        lambda m: m.when_query(lambda c: False),
        lambda m: m.when_queue(m.queue_tick + 10),
        lambda m: m.when_err(),
    ],
)
async def test_cancelled_waiter_of_each_kind_leaves_registry(make):
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("M")
        w = make(mach)
        assert pending(mach) == 1
        with trio.CancelScope() as cs:
            cs.cancel()
            await w
        assert pending(mach) == 0
        for _ in range(3):  # transitions do not touch it any more
            mach.toggle(["Foo", "Bar", "M"])
        assert not w.is_set()


# ---------------------------------------------------------------------------------------
# disposal
# ---------------------------------------------------------------------------------------

ANY_KIND = {
    "when": lambda m: m.when(["Foo", "Bar"]),
    "when1": lambda m: m.when1("Foo"),
    "when_not": lambda m: m.when_not(["M"]),
    "when_not1": lambda m: m.when_not1("M"),
    "when_args": lambda m: m.when_args("Foo", {}),
    "when_time": lambda m: m.when_time(["Foo"], [9]),
    "when_time1": lambda m: m.when_time1("Foo", 9),
    "when_ticks": lambda m: m.when_ticks("Foo", 9),
    "when_next_active": lambda m: m.when_next_active("Foo"),
    "when_query": lambda m: m.when_query(lambda c: False),
    "when_queue": lambda m: m.when_queue(m.queue_tick + 100),
    "when_err": lambda m: m.when_err(),
}


@pytest.mark.parametrize("kind", sorted(ANY_KIND))
async def test_disposal_fails_pending_waiters(kind):
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("M")
        w = ANY_KIND[kind](mach)
        gone = mach.when_disposed()
        assert not w.done
        errors = []

        async def waiter():
            try:
                await w
            except am.MachineDisposedError as exc:
                errors.append(exc)

        mach.nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        mach.dispose()
        await trio.testing.wait_all_tasks_blocked()
        assert len(errors) == 1
        assert errors[0].machine_id == mach.id
        assert not w.is_set()
        assert gone.is_set()
        await gone
        assert pending(mach) == 0


@pytest.mark.parametrize("kind", sorted(ANY_KIND))
async def test_waiters_created_after_disposal_fail(kind):
    async with am.open_machine(SCHEMA) as mach:
        mach.dispose()
        w = ANY_KIND[kind](mach)
        assert w.done and not w.is_set()
        with pytest.raises(am.MachineDisposedError):
            await w


async def test_when_disposed_after_disposal_succeeds():
    async with am.open_machine(SCHEMA) as mach:
        mach.dispose()
        w = mach.when_disposed()
        assert w.is_set()
        await w


async def test_when_disposed_wakes_task_when_block_ends():
    done = []
    async with am.open_machine(SCHEMA) as outer:
        async with am.open_machine(SCHEMA) as mach:

            async def watcher():
                await mach.when_disposed()
                done.append(mach.disposed)

            outer.nursery.start_soon(watcher)
            await trio.testing.wait_all_tasks_blocked()
            assert done == []
        await trio.testing.wait_all_tasks_blocked()
        assert done == [True]


async def test_when_disposed_fires_after_disposal_finished():
    """WhenDisposed resolves once disposal finished (other waiters already failed)."""
    order = []
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        gone = mach.when_disposed()
        mach.on_dispose(lambda mid: order.append(("on_dispose", w.done, gone.done)))
        mach.dispose()
        assert order == [("on_dispose", True, False)]
        assert gone.is_set()


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------


async def test_when_time_mismatched_or_empty_lengths():
    async with am.open_machine(SCHEMA) as mach:
        with pytest.raises(ValueError):
            mach.when_time(["Foo", "Bar"], [1])
        with pytest.raises(ValueError):
            mach.when_time(["Foo"], [1, 2])
        with pytest.raises(ValueError):
            mach.when_time([], [])
        assert pending(mach) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.when(["Foo", "Nope"]),
        lambda m: m.when1("Nope"),
        lambda m: m.when_not(["Nope"]),
        lambda m: m.when_not1("Nope"),
        lambda m: m.when_args("Nope", {}),
        lambda m: m.when_time(["Nope"], [1]),
        lambda m: m.when_time1("Nope", 1),
        lambda m: m.when_ticks("Nope", 1),
        lambda m: m.when_next_active("Nope"),
    ],
)
async def test_unknown_states_raise(call):
    async with am.open_machine(SCHEMA) as mach:
        with pytest.raises(am.StateUnknownError, match="Nope"):
            call(mach)
        assert pending(mach) == 0
        mach.dispose()
        with pytest.raises(am.StateUnknownError):  # the name check comes first
            call(mach)


async def test_waiter_repr_and_sync_use_without_trio_run_state():
    mach = am.Machine(SCHEMA)  # unbound: subscriptions still register and resolve
    w = mach.when1("Foo")
    assert "pending" in repr(w)
    mach.add1("Foo")
    assert w.is_set()
    assert "set" in repr(w)
    await w


# ---------------------------------------------------------------------------------------
# evaluation points (machine.md §9.1)
# ---------------------------------------------------------------------------------------


async def test_condition_between_two_queued_transitions_resolves():
    seen = {}

    class H:
        def Foo_state(self, e):
            seen["w"] = e.machine.when1("Bar")
            e.machine.add1("Bar")
            e.machine.remove1("Bar")

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        mach.add1("Foo")
        assert mach.not1("Bar")
        assert mach.tick("Bar") == 2
        assert seen["w"].is_set()


async def test_waiter_registered_in_negotiation_resolves_with_that_transition():
    seen = {}

    class H:
        def Foo_enter(self, e):
            seen["w"] = e.machine.when1("Foo")
            seen["w_not"] = e.machine.when_not1("Foo")

        def Foo_state(self, e):
            seen["in_state"] = seen["w"].is_set()

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        mach.add1("Foo")
        assert seen["w"].is_set()
        assert seen["w_not"].is_set()  # Foo was inactive when it was registered
        assert seen["in_state"] is False  # evaluated after the final handlers


async def test_canceled_transition_resolves_nothing():
    class H:
        def Bar_enter(self, e):
            return False

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        w = mach.when(["Foo", "Bar"])
        wq = mach.when_query(lambda c: c["Foo"] == 1)
        assert mach.add(["Foo", "Bar"]) == am.Result.CANCELED
        assert not w.is_set()
        assert not wq.is_set()
        mach.add1("Foo")
        assert wq.is_set()
        assert not w.is_set()


async def test_when_many_states_tracked_incrementally():
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("Foo")
        w = mach.when(["Foo", "Bar"])
        wn = mach.when_not(["Foo", "Bar"])
        mach.add1("Bar")
        assert w.is_set()
        mach.remove1("Foo")
        assert not wn.is_set()
        mach.remove1("Bar")
        assert wn.is_set()


async def test_auto_state_resolves_waiter():
    async with am.open_machine({"Foo": {}, "Auto": {"auto": True, "require": ["Foo"]}}) as mach:
        w = mach.when1("Auto")
        mach.add1("Foo")
        assert mach.is1("Auto")
        assert w.is_set()
