"""The Trio layer: machine lifetime, state contexts, forks.

api.md "Machines", "Structured concurrency"; machine.md §9.3, §10, §17.2, §17.3.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_am as am

FB = {"Foo": {}, "Bar": {}}


class Probe:
    """A forked task body that records its life: started, finished, cancelled."""

    def __init__(self):
        self.started = trio.Event()
        self.finished = False
        self.cancelled = False

    async def __call__(self):
        self.started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise
        finally:
            self.finished = True


# ---------------------------------------------------------------------------------------
# lifetime: open_machine / async with mach / aclose
# ---------------------------------------------------------------------------------------


async def test_nursery_bound_inside_open_machine_and_error_outside():
    async with am.open_machine(FB, id="life") as mach:
        assert isinstance(mach, am.Machine)
        assert mach.id == "life"
        assert isinstance(mach.nursery, trio.Nursery)
        assert not mach.disposed
    with pytest.raises(am.Error, match="life"):
        mach.nursery  # noqa: B018


async def test_unbound_machine_has_no_nursery_and_cannot_fork():
    mach = am.Machine(FB, id="loose")
    with pytest.raises(am.Error, match="loose"):
        mach.nursery  # noqa: B018
    probe = Probe()
    with pytest.raises(am.Error):
        mach.fork(probe)
    assert not probe.started.is_set()


async def test_async_with_existing_machine_binds_and_disposes():
    mach = am.Machine(FB)
    mach.add1("Foo")
    async with mach as bound:
        assert bound is mach
        assert isinstance(mach.nursery, trio.Nursery)
        assert mach.is1("Foo")
        assert mach.add1("Bar") == am.Result.EXECUTED
    assert mach.disposed
    assert mach.add1("Foo") == am.Result.CANCELED
    assert not mach.is1("Foo")
    with pytest.raises(am.Error):
        mach.nursery  # noqa: B018


async def test_binding_twice_or_after_disposal_raises():
    mach = am.Machine(FB)
    async with mach:
        with pytest.raises(am.Error):
            async with mach:
                pass  # pragma: no cover
        assert not mach.disposed
    with pytest.raises(am.Error):
        async with mach:
            pass  # pragma: no cover


async def test_leaving_block_disposes():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        gone = mach.when_disposed()
        pending = mach.when1("Bar")
        assert not gone.is_set()
    assert mach.disposed
    assert gone.is_set()
    with pytest.raises(am.MachineDisposedError):
        await pending
    assert mach.add1("Bar") == am.Result.CANCELED
    assert mach.remove1("Foo") == am.Result.CANCELED
    assert mach.active_states() == []


async def test_leaving_block_cancels_forks():
    probes = [Probe(), Probe()]
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        mach.fork(probes[0])
        mach.fork(probes[1], state="Foo")
        for p in probes:
            await p.started.wait()
        assert not any(p.finished for p in probes)
    assert all(p.cancelled and p.finished for p in probes)


async def test_exception_in_block_propagates_and_disposes():
    probe = Probe()
    # like a nursery, the machine's block may wrap the error in an ExceptionGroup
    boom = pytest.RaisesExc(RuntimeError, match="boom")
    with pytest.RaisesGroup(boom, allow_unwrapped=True):
        async with am.open_machine(FB) as mach:
            mach.fork(probe)
            await probe.started.wait()
            raise RuntimeError("boom")
    assert mach.disposed
    assert probe.cancelled


async def test_start_removed_on_disposal():
    log = []

    class H:
        def Start_end(self, e):
            log.append(("Start_end", e.machine.disposed))

    async with am.open_machine({"Start": {}}, handlers=H()) as mach:
        mach.add1("Start")
    assert log == [("Start_end", False)]
    assert mach.disposed


async def test_disposing_state_added_before_disposal():
    log = []

    class H:
        def Disposing_state(self, e):
            log.append(("Disposing_state", e.machine.disposed, e.machine.is1("Start")))

        def Start_end(self, e):
            log.append(("Start_end", e.machine.disposed))

    schema = {"Start": {}, "Disposing": {"remove": ["Start"]}}
    async with am.open_machine(schema, handlers=H()) as mach:
        mach.add1("Start")
        assert log == []
    assert mach.disposed
    assert log == [("Start_end", False), ("Disposing_state", False, False)]


@pytest.mark.parametrize("panic_to_exception", [True, False])
async def test_leaving_block_disposes_even_if_disposing_handler_raises(panic_to_exception):
    """api.md: "Leaving the block disposes the machine and cancels every state context"."""

    class H:
        def Disposing_state(self, e):
            raise RuntimeError("cleanup failed")

    schema = {"Foo": {}, "Disposing": {}}
    try:
        async with am.open_machine(
            schema, handlers=H(), panic_to_exception=panic_to_exception
        ) as mach:
            mach.add1("Foo")
            ctx = mach.state_ctx("Foo")
            w = mach.when_not1("Foo")
    except* RuntimeError:
        pass  # whether the handler's error propagates is not the point here
    assert mach.disposed
    assert ctx.expired
    assert w.done
    assert mach.add1("Foo") == am.Result.CANCELED


async def test_enclosing_cancel_scope_disposes_machine():
    probe = Probe()
    with trio.CancelScope() as cs:
        async with am.open_machine(FB) as mach:
            mach.fork(probe)
            await probe.started.wait()
            cs.cancel()
            await trio.sleep_forever()
    assert cs.cancelled_caught
    assert mach.disposed
    assert probe.cancelled


async def test_enclosing_deadline_disposes_and_adds_disposing(autojump_clock):
    seen = []

    class H:
        def Disposing_state(self, e):
            seen.append(trio.current_time())

    schema = {"Ready": {}, "Disposing": {}}
    with trio.move_on_after(3) as cs:
        async with am.open_machine(schema, handlers=H()) as mach:
            await mach.when1("Ready")  # never: the deadline ends the block
    assert cs.cancelled_caught
    assert seen == [pytest.approx(3)]
    assert mach.disposed


async def test_dispose_inside_block_cancels_forks_and_keeps_nursery():
    probe = Probe()
    async with am.open_machine(FB) as mach:
        mach.fork(probe)
        await probe.started.wait()
        mach.dispose()
        assert mach.disposed
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled
        assert isinstance(mach.nursery, trio.Nursery)
        # a fork made after disposal never starts its body
        late = Probe()
        mach.fork(late)
        await trio.testing.wait_all_tasks_blocked()
        assert not late.started.is_set() and not late.finished


async def test_aclose_waits_for_forks_to_finish_cancelling(autojump_clock):
    cleaned = []

    async def slow_cleanup(tag):
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(2)
            cleaned.append((tag, trio.current_time()))

    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        mach.fork(slow_cleanup, "life")
        mach.fork(slow_cleanup, "foo", state="Foo")
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        await mach.aclose()
        assert mach.disposed
        assert sorted(tag for tag, _ in cleaned) == ["foo", "life"]
        assert all(t == pytest.approx(t0 + 2) for _, t in cleaned)
        assert trio.current_time() == pytest.approx(t0 + 2)


async def test_aclose_without_forks_returns_and_checkpoints():
    async with am.open_machine(FB) as mach:
        with trio.testing.assert_checkpoints():
            await mach.aclose()
        assert mach.disposed
        await mach.aclose()  # idempotent


# ---------------------------------------------------------------------------------------
# state_ctx
# ---------------------------------------------------------------------------------------


async def test_state_ctx_same_object_until_expiry():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        assert isinstance(ctx, am.StateCtx)
        assert mach.state_ctx("Foo") is ctx
        mach.add1("Bar")  # unrelated
        mach.add1("Foo")  # re-adding an active non-multi state keeps its tick
        assert mach.state_ctx("Foo") is ctx
        assert not ctx.expired
        mach.remove1("Foo")
        assert ctx.expired
        fresh = mach.state_ctx("Foo")
        assert fresh is not ctx
        assert not fresh.expired


async def test_state_ctx_expires_on_deactivation():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        assert not ctx.cancel_scope.cancel_called
        mach.remove1("Foo")
        assert ctx.expired
        assert ctx.cancel_scope.cancel_called


async def test_state_ctx_taken_while_inactive_expires_on_activation():
    async with am.open_machine(FB) as mach:
        ctx = mach.state_ctx("Foo")
        assert not ctx.expired
        mach.remove1("Foo")  # no tick change
        mach.add1("Bar")
        assert not ctx.expired
        mach.add1("Foo")
        assert ctx.expired
        active_ctx = mach.state_ctx("Foo")
        assert active_ctx is not ctx
        assert not active_ctx.expired


async def test_state_ctx_expires_on_multi_reactivation():
    async with am.open_machine({"M": {"multi": True}}) as mach:
        mach.add1("M")
        first = mach.state_ctx("M")
        mach.add1("M")
        assert mach.is1("M")
        assert first.expired
        second = mach.state_ctx("M")
        assert second is not first
        assert not second.expired


async def test_state_ctx_expired_in_end_but_not_in_exit():
    seen = {}

    class H:
        def Foo_exit(self, e):
            seen["exit"] = ctx.expired

        def Foo_end(self, e):
            seen["end"] = ctx.expired
            seen["end_new"] = e.machine.state_ctx("Foo") is ctx

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        mach.remove1("Foo")
    assert seen == {"exit": False, "end": True, "end_new": False}


async def test_state_ctx_not_expired_by_canceled_removal():
    class H:
        def Foo_exit(self, e):
            return False

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        assert mach.remove1("Foo") == am.Result.CANCELED
        assert not ctx.expired
        assert mach.state_ctx("Foo") is ctx


async def test_state_ctx_cancel_scope_cancels_work():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        outcome = []

        async def work():
            with ctx.cancel_scope:
                await trio.sleep_forever()
            outcome.append(ctx.cancel_scope.cancelled_caught)

        mach.nursery.start_soon(work)
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == []
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == [True]


async def test_state_ctx_cancel_scope_of_expired_ctx_is_cancelled():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        mach.remove1("Foo")
        assert ctx.cancel_scope.cancel_called  # created after expiry


async def test_with_ctx_many_times_and_from_several_tasks():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        # sequential use before expiry: fresh scopes, not cancelled
        for _ in range(3):
            with ctx as scope:
                await trio.lowlevel.checkpoint()
            assert isinstance(scope, trio.CancelScope)
            assert not scope.cancel_called
        caught = []

        async def work(i):
            with ctx as scope:
                await trio.sleep_forever()
            caught.append((i, scope.cancelled_caught))

        for i in range(3):
            mach.nursery.start_soon(work, i)
        await trio.testing.wait_all_tasks_blocked()
        assert caught == []
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(caught) == [(0, True), (1, True), (2, True)]
        # after expiry, `with ctx:` cancels what it wraps at once
        with ctx as scope:
            await trio.sleep_forever()
        assert scope.cancelled_caught


async def test_with_ctx_nested_in_one_task():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        after_inner = []
        with ctx as outer:
            with ctx as inner:
                mach.remove1("Foo")
                await trio.sleep_forever()
            after_inner.append(True)  # pragma: no cover
        # both are cancelled; Trio delivers the Cancelled to the outermost one
        assert inner.cancel_called and outer.cancel_called
        assert outer.cancelled_caught
        assert after_inner == []


async def test_wait_expired():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        done = []

        async def waiter():
            await ctx.wait_expired()
            done.append(ctx.expired)

        mach.nursery.start_soon(waiter)
        mach.nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert done == [True, True]
        with trio.testing.assert_checkpoints():
            await ctx.wait_expired()  # already expired: at once


async def test_disposal_expires_all_state_contexts():
    async with am.open_machine({"Foo": {}, "Bar": {}, "M": {"multi": True}}) as mach:
        mach.add(["Foo", "M"])
        ctxs = [mach.state_ctx(s) for s in ("Foo", "Bar", "M")]
        assert not any(c.expired for c in ctxs)
        mach.dispose()
        assert all(c.expired for c in ctxs)
        assert all(c.cancel_scope.cancel_called for c in ctxs)
        # a context taken after disposal is born expired
        assert mach.state_ctx("Foo").expired


async def test_state_ctx_unknown_state():
    async with am.open_machine(FB) as mach:
        with pytest.raises(am.StateUnknownError):
            mach.state_ctx("Nope")


async def test_leaving_block_expires_state_contexts():
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
    assert ctx.expired


# ---------------------------------------------------------------------------------------
# fork / e.fork / fork_after
# ---------------------------------------------------------------------------------------


async def test_fork_cancelled_when_state_deactivates():
    probe = Probe()
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        mach.fork(probe, state="Foo")
        await probe.started.wait()
        mach.add1("Bar")
        await trio.testing.wait_all_tasks_blocked()
        assert not probe.finished  # running until Foo ends
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert probe.finished and probe.cancelled


async def test_fork_is_cancelled_from_inside_the_end_handler():
    """The fork's scope is cancelled before Foo_end runs (expiry precedes finals)."""
    probe = Probe()
    seen = []

    class H:
        def Foo_end(self, e):
            seen.append(ctx.cancel_scope.cancel_called)

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        ctx = mach.state_ctx("Foo")
        mach.fork(probe, state="Foo")
        await probe.started.wait()
        mach.remove1("Foo")
        assert seen == [True]
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled


async def test_fork_passes_args():
    got = []

    async def work(a, b):
        got.append((a, b))

    class H:
        def Foo_state(self, e):
            e.fork(work, 3, "four")

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.fork(work, 1, "two")
        mach.add1("Foo")
        await trio.testing.wait_all_tasks_blocked()
    assert sorted(got) == [(1, "two"), (3, "four")]


async def test_fork_on_inactive_state_runs_until_activation():
    """A context of an inactive state expires when it activates (machine.md §9.3)."""
    probe = Probe()
    async with am.open_machine(FB) as mach:
        mach.fork(probe, state="Foo")
        await probe.started.wait()
        mach.add1("Bar")
        await trio.testing.wait_all_tasks_blocked()
        assert not probe.finished
        mach.add1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled


async def test_e_fork_binds_to_the_new_activation():
    probes = []

    class H:
        def Foo_state(self, e):
            p = Probe()
            probes.append(p)
            e.fork(p)

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        assert len(probes) == 1
        await probes[0].started.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not probes[0].finished  # not bound to the old (inactive) tick
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert probes[0].cancelled
        mach.add1("Foo")
        await probes[1].started.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not probes[1].finished


async def test_e_fork_multi_reactivation_cancels_previous():
    probes = []

    class H:
        def M_state(self, e):
            p = Probe()
            probes.append(p)
            e.fork(p)

    async with am.open_machine({"M": {"multi": True}}, handlers=H()) as mach:
        mach.add1("M")
        await probes[0].started.wait()
        mach.add1("M")
        await probes[1].started.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert probes[0].cancelled
        assert not probes[1].finished


async def test_e_fork_with_state_removed_in_same_drain_never_runs():
    """Foo is removed by a mutation queued from Foo_state: the fork is already expired
    when its task gets its first turn, so its body never starts."""
    probe = Probe()

    class H:
        def Foo_state(self, e):
            e.fork(probe)
            e.machine.remove1("Foo")

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        assert mach.not1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert not probe.started.is_set() and not probe.finished


@pytest.mark.parametrize("use_limiter", [False, True])
async def test_fork_whose_context_expired_before_it_started_does_not_run(use_limiter):
    """Foo's activation ends (a removal queued by Foo_state) before the forked task gets
    its first turn: the task "is cancelled when that tick changes" (machine.md §17.3),
    so none of its body may run; with a limiter it already does not (the limiter's
    checkpoint raises Cancelled first)."""
    ran = []

    class H:
        def Foo_state(self, e):
            limiter = trio.CapacityLimiter(1) if use_limiter else None
            e.machine.fork(self.work, state="Foo", limiter=limiter)
            e.machine.remove1("Foo")

        async def work(self):
            ran.append(mach.is1("Foo"))
            mach.add1("Bar")  # stale work: Foo is already gone
            await trio.lowlevel.checkpoint()

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        assert mach.not1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert ran == []
        assert mach.not1("Bar")


@pytest.mark.parametrize(
    "handler", ["Foo_enter", "Foo_exit", "Foo_end", "Foo_Bar", "any_enter", "any_state"]
)
async def test_e_fork_outside_state_handler_raises(handler):
    errors = []
    probe = Probe()

    def fn(self, e):
        try:
            e.fork(probe)
        except am.Error as exc:
            errors.append(exc)

    H = type("H", (), {handler: fn})
    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        mach.add1("Bar")
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert errors, handler
        assert not probe.started.is_set()
        assert mach.not1("Exception")


async def test_fork_from_negotiation_via_mach_fork_is_allowed_with_state():
    """The error message points to mach.fork(..., state=...), which works anywhere."""
    probe = Probe()

    class H:
        def Foo_end(self, e):
            e.machine.fork(probe, state="Bar")

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add(["Foo", "Bar"])
        mach.remove1("Foo")
        await probe.started.wait()
        mach.remove1("Bar")
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled


async def test_fork_that_raises_adds_exception_and_nursery_survives():
    boom = ValueError("boom")
    survivor = Probe()
    seen = []

    class H:
        def Exception_state(self, e):
            seen.append(e.args.get("err"))

    async def bad():
        await trio.lowlevel.checkpoint()
        raise boom

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.fork(survivor)
        w = mach.when_err()
        mach.fork(bad, state="Foo")
        await w
        assert mach.is1("Exception")
        assert mach.err is boom
        assert seen == [boom]
        await trio.testing.wait_all_tasks_blocked()
        assert not survivor.finished  # the nursery did not crash
        assert mach.add1("Foo") == am.Result.EXECUTED  # still usable
    assert survivor.cancelled


async def test_fork_raising_after_disposal_does_not_crash():
    async def bad():
        try:
            await trio.sleep_forever()
        finally:
            raise ValueError("late")  # noqa: B012

    async with am.open_machine(FB) as mach:
        mach.fork(bad)
        await trio.testing.wait_all_tasks_blocked()
        mach.dispose()
        await trio.testing.wait_all_tasks_blocked()
        assert mach.err is None


async def test_fork_without_state_lives_until_disposal():
    probe = Probe()
    async with am.open_machine(FB) as mach:
        mach.fork(probe)
        await probe.started.wait()
        mach.add(["Foo", "Bar"])
        mach.set([])
        mach.add_err(ValueError("x"))
        mach.remove1("Exception")
        await trio.testing.wait_all_tasks_blocked()
        assert not probe.finished
        mach.dispose()
        await trio.testing.wait_all_tasks_blocked()
        assert probe.cancelled


async def test_fork_limiter_limits_concurrency(autojump_clock):
    limiter = trio.CapacityLimiter(1)
    running = 0
    peak = 0
    ends = []

    async def work(i):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1
        ends.append((i, trio.current_time()))

    async with am.open_machine(FB) as mach:
        t0 = trio.current_time()
        for i in range(3):
            mach.fork(work, i, limiter=limiter)
        await trio.testing.wait_all_tasks_blocked()
        assert running == 1
        assert limiter.statistics().tasks_waiting == 2
        while len(ends) < 3:
            await trio.sleep(0.5)
    assert peak == 1
    assert sorted(t - t0 for _, t in ends) == pytest.approx([1, 2, 3])


async def test_fork_limiter_waiting_task_cancelled_with_its_state():
    limiter = trio.CapacityLimiter(1)
    holder = Probe()
    waiting = Probe()
    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        mach.fork(holder, limiter=limiter)
        await holder.started.wait()
        mach.fork(waiting, state="Foo", limiter=limiter)
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.statistics().tasks_waiting == 1
        mach.remove1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.statistics().tasks_waiting == 0
        assert not waiting.started.is_set()
        assert not holder.finished


async def test_fork_after_delay(autojump_clock):
    ran = []

    async def work(tag):
        ran.append((tag, trio.current_time()))

    async with am.open_machine(FB) as mach:
        t0 = trio.current_time()
        mach.fork_after(2.5, work, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert ran == []
        await trio.sleep(3)
    assert ran == [("a", pytest.approx(t0 + 2.5))]


async def test_fork_after_cancelled_with_state_before_delay(autojump_clock):
    ran = []

    async def work():
        ran.append(trio.current_time())

    async with am.open_machine(FB) as mach:
        mach.add1("Foo")
        mach.fork_after(5, work, state="Foo")
        await trio.sleep(1)
        mach.remove1("Foo")
        await trio.sleep(10)
        assert ran == []


async def test_fork_unknown_state():
    async with am.open_machine(FB) as mach:
        with pytest.raises(am.StateUnknownError):
            mach.fork(Probe(), state="Nope")


async def test_fork_after_block_raises():
    async with am.open_machine(FB) as mach:
        pass
    probe = Probe()
    with pytest.raises(am.Error):
        mach.fork(probe)
    assert not probe.started.is_set()


async def test_dispose_from_a_handler_happens_after_the_drain():
    in_handler = []

    class H:
        def Foo_state(self, e):
            e.machine.dispose()
            in_handler.append(e.machine.disposed)  # deferred until the drain ends

    async with am.open_machine(FB, handlers=H()) as mach:
        w = mach.when_next_active("Foo")
        ctx = mach.state_ctx("Bar")
        assert mach.add1("Foo") == am.Result.EXECUTED
        assert in_handler == [False]
        assert mach.disposed
        assert ctx.expired
        assert w.is_set()  # Foo activated before disposal
        w2 = mach.when1("Bar")
        with pytest.raises(am.MachineDisposedError):
            await w2


async def test_disposal_wakes_wait_expired():
    async with am.open_machine(FB) as mach:
        ctx = mach.state_ctx("Foo")
        done = []

        async def waiter():
            await ctx.wait_expired()
            done.append(True)

        mach.nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        mach.dispose()
        await trio.testing.wait_all_tasks_blocked()
        assert done == [True]


async def test_fork_from_a_state_handler_that_raises_is_cancelled_by_the_rollback():
    probe = Probe()

    class H:
        def Foo_state(self, e):
            e.fork(probe)
            raise ValueError("Foo_state failed")

    async with am.open_machine(FB, handlers=H()) as mach:
        mach.add1("Foo")
        assert mach.not1("Foo")  # rolled back
        assert mach.is1("Exception")
        await trio.testing.wait_all_tasks_blocked()
        # the rollback ended Foo's activation before the task's first turn
        assert not probe.started.is_set() and not probe.finished
