"""Helpers: wait_for_*, add1_sync / add1_async / remove1_sync, MutRequest.

api.md "Helpers"; machine.md §15.1, §16, §17.5.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_am as am

SCHEMA = {"Foo": {}, "Bar": {}, "Baz": {}, "M": {"multi": True}}


def pending(mach):
    """How many waiters the machine holds (white box: the registry's count)."""
    return 0 if mach._reg is None else mach._reg.count


class Relayed(am.Machine):
    """A machine whose add/add1/remove/remove1, called from outside, are re-issued from
    inside a transition (a ``Relay_state`` handler), so they return QUEUED exactly as
    a call made from a handler does. Async code never sees a busy machine otherwise."""

    def __init__(self, schema, **kw):
        super().__init__({**schema, "Relay": {"multi": True}}, **kw)
        self.relayed = []
        self.bind_handler_maps(None, {"Relay_state": self._relay}, id="relay")

    def _relay(self, e):
        name, states, args = e.args["call"]
        self.relayed.append(getattr(am.Machine, name)(self, states, args))

    def _via(self, name, states, args):
        am.Machine.add1(self, "Relay", {"call": (name, states, args)})
        return self.relayed[-1]

    def add(self, states, args=None, *, event=None):
        return self._via("add", states, args)

    def add1(self, state, args=None, *, event=None):
        return self._via("add1", state, args)

    def remove(self, states, args=None, *, event=None):
        return self._via("remove", states, args)

    def remove1(self, state, args=None, *, event=None):
        return self._via("remove1", state, args)


async def script(mach, *steps):
    """Fork a task that sleeps and mutates: ``(delay, method, *args)`` steps."""

    async def run():
        for delay, name, *args in steps:
            await trio.sleep(delay)
            getattr(mach, name)(*args)

    mach.fork(run)


# ---------------------------------------------------------------------------------------
# wait_for_all / wait_for_any
# ---------------------------------------------------------------------------------------


async def test_wait_for_all_waits_for_every_waiter(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        t0 = trio.current_time()
        ws = [mach.when1("Foo"), mach.when1("Bar"), mach.when_not1("Baz")]
        await script(mach, (1, "add1", "Foo"), (2, "add1", "Bar"))
        await am.wait_for_all(*ws, timeout=5)
        assert trio.current_time() - t0 == pytest.approx(3)
        assert all(w.is_set() for w in ws)


async def test_wait_for_all_no_waiters_and_already_set(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        with trio.testing.assert_checkpoints():
            await am.wait_for_all()
        mach.add1("Foo")
        with trio.testing.assert_checkpoints():
            await am.wait_for_all(mach.when1("Foo"), mach.when_not1("Bar"), timeout=1)
        assert trio.current_time() == 0


async def test_wait_for_all_timeout(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        t0 = trio.current_time()
        w_foo, w_bar = mach.when1("Foo"), mach.when1("Bar")
        await script(mach, (1, "add1", "Foo"), (5, "add1", "Bar"))
        with pytest.raises(am.TimeoutError) as info:
            await am.wait_for_all(w_foo, w_bar, timeout=3)
        assert isinstance(info.value, trio.TooSlowError)
        assert isinstance(info.value, am.Error)
        assert trio.current_time() - t0 == pytest.approx(3)  # one shared deadline
        assert w_foo.is_set()
        # the waiters are not closed by the timeout
        assert not w_bar.done
        await w_bar
        assert trio.current_time() - t0 == pytest.approx(6)


async def test_wait_for_all_without_timeout_is_cancellable(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        with trio.move_on_after(10) as cs:
            await am.wait_for_all(mach.when1("Foo"))
        assert cs.cancelled_caught


async def test_wait_for_all_disposed_machine(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        await script(mach, (1, "dispose"))
        with pytest.raises(am.MachineDisposedError):
            await am.wait_for_all(w, timeout=5)
        assert trio.current_time() == pytest.approx(1)
        with pytest.raises(am.MachineDisposedError):
            await am.wait_for_all(mach.when1("Foo"))  # created after disposal


async def test_wait_for_all_fails_early_on_one_failed_waiter(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        w_closed = mach.when1("Foo")
        w_closed.close()
        with pytest.raises(am.SubscriptionClosed):
            await am.wait_for_all(mach.when1("Bar"), w_closed, timeout=5)
        assert trio.current_time() == 0


async def test_wait_for_all_across_machines(autojump_clock):
    async with am.open_machine(SCHEMA, id="a") as a, am.open_machine(SCHEMA, id="b") as b:
        ws = am.group_when1([a, b], "Foo")
        await script(a, (1, "add1", "Foo"))
        await script(b, (2, "add1", "Foo"))
        await am.wait_for_all(*ws)
        assert trio.current_time() == pytest.approx(2)
        with pytest.raises(am.StateUnknownError):
            am.group_when1([a, am.Machine({"Other": {}})], "Foo")


async def test_wait_for_any_returns_index(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        ws = [mach.when1("Foo"), mach.when1("Bar"), mach.when1("Baz")]
        await script(mach, (1, "add1", "Bar"), (1, "add1", "Foo"))
        assert await am.wait_for_any(*ws) == 1
        assert trio.current_time() == pytest.approx(1)
        mach.add1("Foo")
        assert await am.wait_for_any(*ws) == 0  # the lowest of those done


async def test_wait_for_any_timeout_and_errors(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        with pytest.raises(am.TimeoutError):
            await am.wait_for_any(mach.when1("Foo"), timeout=2)
        assert trio.current_time() == pytest.approx(2)
        with pytest.raises(ValueError):
            await am.wait_for_any()
        w = mach.when1("Foo")
        await script(mach, (1, "dispose"))
        with pytest.raises(am.MachineDisposedError):
            await am.wait_for_any(w, mach.when1("Bar"))


# ---------------------------------------------------------------------------------------
# wait_for_err_all / wait_for_err_any
# ---------------------------------------------------------------------------------------


async def test_wait_for_err_all_raises_when_exception_activates(autojump_clock):
    boom = ValueError("boom")
    async with am.open_machine(SCHEMA, id="errs") as mach:
        await script(mach, (1, "add1", "Foo"), (1, "add_err", boom))
        before = pending(mach)
        with pytest.raises(am.ExceptionActiveError) as info:
            await am.wait_for_err_all(mach, mach.when1("Foo"), mach.when1("Bar"), timeout=5)
        assert info.value.err is boom
        assert info.value.machine_id == "errs"
        assert "boom" in str(info.value)
        assert trio.current_time() == pytest.approx(2)
        assert pending(mach) == before + 1  # only the Bar waiter is left registered


async def test_wait_for_err_all_passes_without_errors(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        await script(mach, (1, "add1", "Foo"), (1, "add1", "Bar"), (1, "add_err", ValueError()))
        await am.wait_for_err_all(mach, mach.when1("Foo"), mach.when1("Bar"))
        assert trio.current_time() == pytest.approx(2)
        assert not mach.is_err()
        assert pending(mach) == 0  # the internal Exception waiter was closed


async def test_wait_for_err_all_fails_at_once_when_exception_active():
    async with am.open_machine(SCHEMA) as mach:
        mach.add1("Foo")
        err = RuntimeError("old")
        mach.add_err(err)
        with pytest.raises(am.ExceptionActiveError) as info:
            await am.wait_for_err_all(mach, mach.when1("Foo"))  # even though Foo is set
        assert info.value.err is err


async def test_wait_for_err_all_timeout(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        with pytest.raises(am.TimeoutError):
            await am.wait_for_err_all(mach, mach.when1("Foo"), timeout=1.5)
        assert trio.current_time() == pytest.approx(1.5)


async def test_wait_for_err_any(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        await script(mach, (1, "add1", "Bar"))
        assert await am.wait_for_err_any(mach, mach.when1("Foo"), mach.when1("Bar")) == 1
        await script(mach, (1, "add_err", KeyError("k")))
        with pytest.raises(am.ExceptionActiveError):
            await am.wait_for_err_any(mach, mach.when1("Baz"), timeout=5)
        assert trio.current_time() == pytest.approx(2)
        # already active: fails at once even with a set waiter
        with pytest.raises(am.ExceptionActiveError):
            await am.wait_for_err_any(mach, mach.when1("Bar"))
        mach.remove1("Exception")
        with pytest.raises(am.TimeoutError):
            await am.wait_for_err_any(mach, mach.when1("Baz"), timeout=1)
        with pytest.raises(ValueError):
            await am.wait_for_err_any(mach)


# ---------------------------------------------------------------------------------------
# add1_sync / remove1_sync / add1_async
# ---------------------------------------------------------------------------------------


class VetoBar:
    def Bar_enter(self, e):
        return False


async def test_add1_sync_direct():
    async with am.open_machine(SCHEMA, handlers=VetoBar()) as mach:
        with trio.testing.assert_checkpoints():
            r = await am.add1_sync(mach, "Foo")
        assert r == am.Result.EXECUTED and not r.is_queued
        assert mach.is1("Foo")
        assert await am.add1_sync(mach, "Bar") == am.Result.CANCELED
        with pytest.raises(am.StateUnknownError):
            await am.add1_sync(mach, "Nope")


async def test_add1_sync_from_forked_task_while_a_transition_is_queued():
    results = []

    class H:
        def Foo_state(self, e):
            e.fork(self.work)
            e.machine.add1("Baz")  # queued behind Foo's transition

        async def work(self):
            results.append(await am.add1_sync(mach, "Bar"))
            results.append(await am.add_sync(mach, ["Baz", "M"]))

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        mach.add1("Foo")
        await trio.testing.wait_all_tasks_blocked()
        assert results == [am.Result.EXECUTED, am.Result.EXECUTED]
        assert not any(r.is_queued for r in results)
        assert mach.is_all(["Foo", "Bar", "Baz", "M"])


async def test_add1_sync_never_returns_queued():
    mach = Relayed(SCHEMA, handlers=VetoBar())
    r = await am.add1_sync(mach, "Foo")
    assert mach.relayed[-1].is_queued  # the mutation itself was queued
    assert r == am.Result.EXECUTED and not r.is_queued
    assert mach.is1("Foo")
    r = await am.add1_sync(mach, "Bar")  # queued, then vetoed
    assert mach.relayed[-1].is_queued
    assert r == am.Result.CANCELED
    r = await am.add_sync(mach, ["Baz", "M"])
    assert mach.relayed[-1].is_queued
    assert r == am.Result.EXECUTED


async def test_remove1_sync():
    class H:
        def Bar_exit(self, e):
            return False

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        mach.add(["Foo", "Bar"])
        assert await am.remove1_sync(mach, "Foo") == am.Result.EXECUTED
        assert mach.not1("Foo")
        assert await am.remove1_sync(mach, "Bar") == am.Result.CANCELED
        assert mach.is1("Bar")
    relayed = Relayed(SCHEMA, handlers=H())
    relayed.add(["Foo", "Bar"])
    r = await am.remove1_sync(relayed, "Foo")
    assert relayed.relayed[-1].is_queued
    assert r == am.Result.EXECUTED and relayed.not1("Foo")
    r = await am.remove1_sync(relayed, "Bar")
    assert relayed.relayed[-1].is_queued
    assert r == am.Result.CANCELED and relayed.is1("Bar")


async def test_add1_async_waits_for_next_activation(autojump_clock):
    class H:
        def Req_state(self, e):
            e.fork(self.respond, e.machine)

        async def respond(self, mach):
            await trio.sleep(2)
            mach.add1("Resp")

    schema = {"Req": {"multi": True}, "Resp": {"multi": True}}
    async with am.open_machine(schema, handlers=H()) as mach:
        assert await am.add1_async(mach, "Resp", "Req") is True
        assert mach.tick("Resp") == 1
        assert trio.current_time() == pytest.approx(2)
        assert await am.add1_async(mach, "Resp", "Req") is True  # Multi, already active
        assert mach.tick("Resp") == 3
        assert trio.current_time() == pytest.approx(4)


async def test_add1_async_same_transition_and_canceled():
    class H:
        def Foo_state(self, e):
            e.machine.add1("M")

        def Bar_enter(self, e):
            return False

    async with am.open_machine(SCHEMA, handlers=H()) as mach:
        assert await am.add1_async(mach, "M", "Foo") is True  # resolved in the same drain
        assert mach.is1("M")
        assert await am.add1_async(mach, "Baz", "Bar") is False
        assert pending(mach) == 0  # its waiter was closed


# ---------------------------------------------------------------------------------------
# MutRequest
# ---------------------------------------------------------------------------------------


class Veto:
    """Foo_enter / Foo_exit veto the first ``n`` attempts, recording their times."""

    def __init__(self, n):
        self.n = n
        self.times = []

    def _gate(self):
        self.times.append(trio.current_time())
        if len(self.times) <= self.n:
            return False
        return None

    def Foo_enter(self, e):
        return self._gate()

    def Foo_exit(self, e):
        return self._gate()


async def test_mut_request_retries_until_executed(autojump_clock):
    veto = Veto(2)
    async with am.open_machine(SCHEMA, handlers=veto) as mach:
        req = am.MutRequest(mach, "add", ["Foo"], {"x": 1})
        r = await req.run()
        assert r == am.Result.EXECUTED
        assert mach.is1("Foo")
        assert req.attempts == 3
        # first delay 0.1 s, doubling
        assert veto.times == pytest.approx([0, 0.1, 0.3])


async def test_mut_request_remove(autojump_clock):
    veto = Veto(0)
    async with am.open_machine(SCHEMA, handlers=veto) as mach:
        mach.add1("Foo")
        veto.n, veto.times = 1, []
        req = am.MutRequest(mach, "remove", "Foo", delay=1)
        assert await req.run() == am.Result.EXECUTED
        assert mach.not1("Foo")
        assert veto.times == pytest.approx([0, 1])


async def test_mut_request_runs_out_of_retries(autojump_clock):
    veto = Veto(100)
    async with am.open_machine(SCHEMA, handlers=veto, id="req") as mach:
        req = am.MutRequest(mach, "add", ["Foo"], retries=3)
        with pytest.raises(am.MutationCanceledError) as info:
            await req.run()
        assert isinstance(info.value, am.Error)
        assert info.value.machine_id == "req"
        assert req.attempts == 4  # the first attempt plus 3 retries
        assert veto.times == pytest.approx([0, 0.1, 0.3, 0.7])
        assert trio.current_time() == pytest.approx(0.7)
        assert mach.not1("Foo")


async def test_mut_request_runs_out_of_time(autojump_clock):
    veto = Veto(100)
    async with am.open_machine(SCHEMA, handlers=veto) as mach:
        req = am.MutRequest(mach, "add", ["Foo"], delay=1, backoff=0, max_duration=2.5)
        with pytest.raises(am.MutationCanceledError):
            await req.run()
        assert veto.times == pytest.approx([0, 1, 2])  # fixed delay; a 4th would pass 2.5 s


async def test_mut_request_backoff_cap(autojump_clock):
    veto = Veto(4)
    async with am.open_machine(SCHEMA, handlers=veto) as mach:
        req = am.MutRequest(mach, "add", ["Foo"], delay=1, backoff=2, max_duration=100)
        assert await req.run() == am.Result.EXECUTED
        assert veto.times == pytest.approx([0, 1, 3, 5, 7])  # 1, 2, then capped at 2


async def test_mut_request_default_max_duration(autojump_clock):
    veto = Veto(100)
    async with am.open_machine(SCHEMA, handlers=veto) as mach:
        req = am.MutRequest(mach, "add", ["Foo"], retries=100)
        with pytest.raises(am.MutationCanceledError):
            await req.run()
        # 0.1, 0.2, 0.4, 0.8, 1.6 -> 3.1 s; the next 3.2 s delay would pass 5 s
        assert veto.times[-1] == pytest.approx(3.1)
        assert trio.current_time() <= 5


async def test_mut_request_queued_is_success():
    mach = Relayed(SCHEMA)
    req = am.MutRequest(mach, "add", ["Foo"])
    r = await req.run()
    assert r.is_queued
    assert req.attempts == 1
    assert mach.is1("Foo")


async def test_mut_request_bad_input_and_clone():
    async with am.open_machine(SCHEMA) as mach:
        with pytest.raises(am.StateUnknownError):
            am.MutRequest(mach, "add", ["Nope"])
        with pytest.raises(ValueError):
            am.MutRequest(mach, "set", ["Foo"])
        req = am.MutRequest(mach, "add", "Foo", retries=2, delay=0.5, backoff=1, max_duration=3)
        assert req.states == ["Foo"]
        twin = req.clone()
        assert twin is not req
        assert (twin.kind, twin.states, twin.retries, twin.delay, twin.backoff) == (
            "add",
            ["Foo"],
            2,
            0.5,
            1,
        )
        assert twin.max_duration == 3 and twin.attempts == 0
        assert await twin.run() == am.Result.EXECUTED


async def test_request_shortcuts(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        await am.helpers.request_add1(mach, "Foo").run()
        await am.helpers.request_add(mach, ["Bar", "Baz"]).run()
        assert mach.is_all(["Foo", "Bar", "Baz"])
        await am.helpers.request_remove1(mach, "Foo").run()
        await am.helpers.request_remove(mach, ["Bar", "Baz"]).run()
        assert mach.active_states() == []


async def test_activations():
    assert [am.helpers.activations(t) for t in range(6)] == [0, 1, 1, 2, 2, 3]


async def test_wait_for_err_all_fails_first_when_both_happen_together():
    """machine.md §15.1: with Exception active at the end, trio_am fails first."""
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")

        async def both():
            mach.add(["Foo", "Exception"])

        mach.fork(both)
        with pytest.raises(am.ExceptionActiveError):
            await am.wait_for_err_all(mach, w)
        assert w.is_set()


async def test_wait_for_err_helpers_on_a_disposed_machine(autojump_clock):
    async with am.open_machine(SCHEMA) as mach:
        w = mach.when1("Foo")
        await script(mach, (1, "dispose"))
        with pytest.raises(am.MachineDisposedError):
            await am.wait_for_err_all(mach, w, timeout=5)
        assert trio.current_time() == pytest.approx(1)
        with pytest.raises(am.MachineDisposedError):
            await am.wait_for_err_any(mach, mach.when1("Bar"), timeout=5)


async def test_sync_helpers_on_a_disposed_machine():
    async with am.open_machine(SCHEMA) as mach:
        mach.dispose()
        assert await am.add1_sync(mach, "Foo") == am.Result.CANCELED
        assert await am.remove1_sync(mach, "Foo") == am.Result.CANCELED
        assert await am.add1_async(mach, "Foo", "Foo") is False


async def test_timeout_error_names_the_machine(autojump_clock):
    mach = am.Machine({"Foo": {}}, id="slowpoke")
    with pytest.raises(am.TimeoutError) as info:
        await am.wait_for_all(mach.when1("Foo"), timeout=1)
    assert info.value.machine_id == "slowpoke"
    assert "slowpoke" in str(info.value)
