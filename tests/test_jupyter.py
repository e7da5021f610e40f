"""trio_am.jupyter: a Trio guest run on an asyncio loop, driven from asyncio code.

Each test hosts the guest on a fresh ``asyncio.run`` loop (what a Jupyter kernel provides)
and closes it before the loop ends. Waits are bounded with ``asyncio.timeout`` as a
safety net only; nothing asserts durations.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_am as am
from trio_am import jupyter
from trio_am.jupyter import GuestClosedError, TrioGuest, get_guest, start_guest

CAP = 10.0  # seconds: a hang fails the test instead of blocking the suite


@pytest.fixture(autouse=True)
def _no_leaked_running_loop() -> Iterator[None]:
    """These sync tests host their own asyncio loops. An earlier test may have left its
    loop registered as this thread's running loop (Playwright's sync API in
    tests/browser does); hide it meanwhile, or asyncio.run() and start_guest() would see it."""
    leaked = asyncio._get_running_loop()
    if leaked is not None:
        asyncio._set_running_loop(None)
    try:
        yield
    finally:
        if leaked is not None:
            asyncio._set_running_loop(leaked)


def host(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main`` on a new asyncio loop, bounded by CAP."""

    async def bounded() -> Any:
        async with asyncio.timeout(CAP):
            return await main()

    return asyncio.run(bounded())


async def _closed(guest: TrioGuest) -> None:
    await guest.aclose()
    assert guest.closed


# ------------------------------------------------------------------------------- basics
def test_run_returns_results_and_keeps_one_trio_run() -> None:
    async def main() -> None:
        guest = start_guest()
        assert guest.running and guest.status == "running"

        async def add(a: int, b: int) -> tuple[int, object]:
            await trio.sleep(0)
            return a + b, trio.lowlevel.current_root_task()

        (s1, root1), (s2, root2) = await asyncio.gather(guest.run(add, 1, 2), guest.run(add, 3, 4))
        assert (s1, s2) == (3, 7)
        assert root1 is root2  # both calls ran in the same Trio run
        assert await guest.run_sync(lambda x: x * 2, 21) == 42
        task = await guest.run_sync(trio.lowlevel.current_task)
        assert task.name.endswith("_run_call")  # run_sync runs inside a Trio task
        await _closed(guest)

    host(main)


def test_get_guest_is_shared_per_loop_and_restarts_after_close() -> None:
    async def main() -> None:
        g1 = get_guest()
        assert get_guest() is g1
        assert await jupyter.run(trio.sleep, 0.0) is None  # type: ignore[func-returns-value]
        assert await jupyter.run_sync(len, "abc") == 3
        assert get_guest() is g1
        await g1.aclose()
        g2 = get_guest()
        assert g2 is not g1 and g2.running
        await _closed(g2)

    host(main)
    # a second loop gets its own guest
    host(lambda: _closed(get_guest()))


def test_errors_reach_the_caller_unchanged_and_the_guest_survives() -> None:
    async def main() -> None:
        guest = start_guest()
        err = ValueError("boom")

        async def fail() -> None:
            await trio.sleep(0)
            raise err

        with pytest.raises(ValueError) as info:
            await guest.run(fail)
        assert info.value is err

        async def group() -> None:
            async with trio.open_nursery() as n:
                n.start_soon(fail)

        with pytest.raises(ExceptionGroup) as ginfo:
            await guest.run(group)
        assert ginfo.value.exceptions == (err,)

        with pytest.raises(KeyError):
            await guest.run_sync({}.__getitem__, "missing")
        with pytest.raises(TypeError, match="not an awaitable"):
            await guest.run(lambda: 1)  # type: ignore[arg-type,return-value]
        assert guest.running
        assert await guest.run_sync(lambda: "still alive") == "still alive"
        await _closed(guest)

    host(main)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.one_of(st.integers(), st.text(max_size=3).map(ValueError)), max_size=6))
def test_each_concurrent_call_gets_its_own_outcome(outcomes: list[Any]) -> None:
    async def main() -> list[Any]:
        guest = start_guest()

        async def echo(i: int, x: Any) -> Any:
            for _ in range(len(outcomes) - i):  # finish in reverse order
                await trio.lowlevel.checkpoint()
            if isinstance(x, BaseException):
                raise x
            return x

        got = await asyncio.gather(
            *(guest.run(echo, i, x) for i, x in enumerate(outcomes)), return_exceptions=True
        )
        await guest.aclose()
        return got

    got = host(main)
    assert len(got) == len(outcomes)
    for want, have in zip(outcomes, got, strict=True):
        assert have is want or have == want


# -------------------------------------------------------------------------- cancellation
def test_asyncio_cancellation_cancels_the_trio_task_and_waits_for_its_cleanup() -> None:
    events: list[str] = []

    async def main() -> None:
        guest = start_guest()
        started = asyncio.Event()

        async def forever() -> None:
            try:
                started.set()  # same thread: the guest runs on this loop
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.lowlevel.checkpoint()  # cleanup that awaits
                events.append("trio cleanup")

        task = asyncio.ensure_future(guest.run(forever))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events.append("caller cancelled")
        # timeouts are cancellations too
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await guest.run(forever)
        assert guest.running
        await _closed(guest)

    host(main)
    assert events == ["trio cleanup", "caller cancelled", "trio cleanup"]


def test_an_error_in_cancelled_cleanup_replaces_the_cancellation() -> None:
    async def main() -> None:
        guest = start_guest()
        started = asyncio.Event()

        async def bad_cleanup() -> None:
            try:
                started.set()
                await trio.sleep_forever()
            finally:
                raise RuntimeError("cleanup failed")

        task = asyncio.ensure_future(guest.run(bad_cleanup))
        await started.wait()
        task.cancel()
        with pytest.raises(RuntimeError, match="cleanup failed"):
            await task
        await _closed(guest)

    host(main)


def test_closing_the_guest_cancels_running_calls() -> None:
    cleaned: list[str] = []

    async def main() -> None:
        guest = start_guest()
        started = asyncio.Event()

        async def forever() -> None:
            try:
                started.set()
                await trio.sleep_forever()
            finally:
                cleaned.append("yes")

        task = asyncio.ensure_future(guest.run(forever))
        await started.wait()
        await guest.aclose()
        assert guest.status == "closed" and not guest.running
        with pytest.raises(GuestClosedError, match="closed during the call"):
            await task
        with pytest.raises(GuestClosedError, match="closed"):
            await guest.run(trio.sleep, 0)
        with pytest.raises(GuestClosedError):
            await guest.enter_context(am.open_machine({"A": {}}))
        await guest.aclose()  # idempotent

    host(main)
    assert cleaned == ["yes"]


# ---------------------------------------------------------------------- machines, contexts
class Handlers:
    def __init__(self) -> None:
        self.ended: list[int] = []

    def Download_state(self, e: am.Event) -> None:
        e.fork(self.download, e.machine)

    async def download(self, mach: am.Machine) -> None:
        try:
            while True:
                await trio.sleep(0.001)
                mach.add1("Chunk")
        finally:
            self.ended.append(mach.tick("Chunk"))


SCHEMA = {"Download": {}, "Chunk": {"multi": True}, "Done": {}}


def test_a_machine_opened_across_calls_forks_waits_and_cancels_with_its_state() -> None:
    handlers = Handlers()

    async def main() -> None:
        guest = start_guest()
        mach = await guest.enter_context(am.open_machine(SCHEMA, handlers=handlers, id="nb"))
        assert guest.contexts == [mach]
        # a waiter registered from the asyncio side, resolved by a mutation made there
        waiter = mach.when1("Done")
        mach.add1("Done")
        await guest.run(waiter.wait)
        # a mutation whose handler forks, from the asyncio side and through run_sync
        mach.add1("Download")
        await guest.run(mach.when_ticks, "Chunk", 6)
        mach.remove1("Download")  # ends the activation: cancels the fork
        await guest.run(trio.testing.wait_all_tasks_blocked)
        assert len(handlers.ended) == 1
        await guest.run_sync(mach.add1, "Download")
        await guest.run(mach.when_ticks, "Chunk", 2)
        await guest.exit_context(mach)  # disposes the machine, cancels its forks
        assert mach.disposed and guest.contexts == []
        assert len(handlers.ended) == 2
        with pytest.raises(ValueError, match="no open context"):
            await guest.exit_context(mach)
        await _closed(guest)

    host(main)


def test_aclose_exits_contexts_last_in_first_out_then_reports_exit_errors() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def ctx(name: str, fail: bool = False) -> AsyncIterator[str]:
        log.append(f"enter {name}")
        try:
            yield name
        finally:
            await trio.lowlevel.checkpoint()
            log.append(f"exit {name}")
            if fail:
                raise OSError(f"{name} failed to exit")

    async def main() -> None:
        guest = start_guest()
        assert await guest.enter_context(ctx("a", fail=True)) == "a"
        assert await guest.enter_context(ctx("b")) == "b"
        assert await guest.enter_context(ctx("c")) == "c"
        assert guest.contexts == ["a", "b", "c"]
        with pytest.raises(OSError, match="a failed to exit"):
            await guest.aclose()
        assert guest.closed

    host(main)
    assert log == ["enter a", "enter b", "enter c", "exit c", "exit b", "exit a"]


def test_context_entry_and_exit_errors_reach_the_caller() -> None:
    @asynccontextmanager
    async def broken_entry() -> AsyncIterator[None]:
        raise LookupError("no entry")
        yield  # pragma: no cover

    @asynccontextmanager
    async def broken_exit() -> AsyncIterator[int]:
        yield 7
        raise OSError("no exit")

    async def main() -> None:
        guest = start_guest()
        with pytest.raises(LookupError, match="no entry"):
            await guest.enter_context(broken_entry())
        assert guest.contexts == []
        value = await guest.enter_context(broken_exit())
        with pytest.raises(OSError, match="no exit"):
            await guest.exit_context(value)
        assert guest.contexts == [] and guest.running
        await _closed(guest)

    host(main)


def test_cancelling_an_entry_exits_the_context_again() -> None:
    log: list[str] = []

    @asynccontextmanager
    async def slow() -> AsyncIterator[None]:
        log.append("entering")
        try:
            await trio.sleep_forever()
        finally:
            log.append("entry cancelled")
        yield  # pragma: no cover

    async def main() -> None:
        guest = start_guest()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await guest.enter_context(slow())
        assert guest.contexts == []
        await _closed(guest)

    host(main)
    assert log == ["entering", "entry cancelled"]


# ------------------------------------------------------------------------------- misuse
def test_misuse_is_refused_clearly() -> None:
    with pytest.raises(RuntimeError, match="no running asyncio loop"):
        get_guest()
    with pytest.raises(RuntimeError, match="no running asyncio loop"):
        start_guest()

    async def main() -> TrioGuest:
        guest = start_guest()
        with pytest.raises(RuntimeError, match="already started"):
            guest.start()
        never = TrioGuest(asyncio.get_running_loop())
        assert never.status == "new" and not never.running
        with pytest.raises(GuestClosedError, match="not started"):
            await never.run(trio.sleep, 0)
        await never.aclose()
        assert never.closed
        await _closed(guest)
        return guest

    guest = host(main)

    async def other_loop() -> None:
        with pytest.raises(RuntimeError, match="another asyncio loop"):
            await guest.run(trio.sleep, 0)

    host(other_loop)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread"
)
def test_trio_does_not_take_over_sigint() -> None:
    """With Python's default SIGINT handler in place (a kernel running a sync cell), a
    plain guest run installs Trio's KeyboardInterrupt handler; TrioGuest does not."""

    async def main() -> tuple[Any, Any]:
        loop = asyncio.get_running_loop()
        saved = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            done = loop.create_future()
            trio.lowlevel.start_guest_run(
                trio.sleep,
                0,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                done_callback=done.set_result,
                host_uses_signal_set_wakeup_fd=True,
            )
            plain = signal.getsignal(signal.SIGINT)
            (await done).unwrap()
            guest = start_guest()
            ours = signal.getsignal(signal.SIGINT)
            await guest.aclose()
            return plain, ours
        finally:
            signal.signal(signal.SIGINT, saved)

    plain, ours = host(main)
    assert plain is not signal.default_int_handler  # Trio's own handler
    assert ours is signal.default_int_handler
