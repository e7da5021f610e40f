"""Run Trio inside Jupyter: a Trio run in guest mode on the kernel's asyncio loop.

An IPython kernel executes cells on an asyncio loop, and a cell may ``await`` at top level,
but only asyncio awaitables. Trio cannot start a second loop in the same thread
(``trio.run`` would block the kernel), so this module starts Trio in **guest mode**
(``trio.lowlevel.start_guest_run``): Trio's scheduler runs as callbacks of the kernel's
loop, its I/O waits in a helper thread, and the kernel stays responsive between cells.

A :class:`TrioGuest` is one such Trio run, alive until :meth:`TrioGuest.aclose`. From a cell
(an asyncio task) it runs Trio code and hands back the result::

    from trio_am.jupyter import get_guest

    guest = get_guest()                                   # the kernel loop's Trio run
    mach = await guest.enter_context(am.open_machine(schema))  # open across cells
    await guest.run_sync(mach.add1, "Start")              # mutate inside the Trio run
    await guest.run(mach.when1, "Ready")                  # wait for a state
    await guest.run(trio.sleep, 1)                        # any Trio coroutine function

Rules that keep it structured:

* :meth:`~TrioGuest.run` starts one Trio task per call, in the guest's nursery, and the
  cell waits for it. Cancelling the cell's task (``asyncio.timeout``,
  ``asyncio.wait_for``, ``task.cancel()``, a kernel interrupt that reaches the await)
  cancels that Trio task, waits for its cleanup, then raises ``asyncio.CancelledError``
  (or the error its cleanup raised).
* Exceptions of the Trio task reach the cell unchanged; they never end the guest run.
* :meth:`~TrioGuest.enter_context` enters an async context manager (``am.open_machine``,
  ``trio.open_nursery``...) in a Trio task of its own and keeps it open until
  :meth:`~TrioGuest.exit_context` or :meth:`~TrioGuest.aclose`, which exit the contexts
  last in, first out, before cancelling whatever still runs and ending the Trio run.
* Trio does not take over ``SIGINT``: the kernel's interrupt behaves as in any asyncio
  cell. (ipykernel 7 applies an interrupt of a cell that awaits at top level only once
  the await ends, ipython/ipykernel#881; bound long waits with ``asyncio.timeout``.)
* While the guest runs, the kernel's thread is inside the Trio run, so synchronous machine
  calls (``mach.add1``, ``mach.is1``, ``mach.when1`` registering a waiter) work from a cell
  directly, including mutations whose handlers fork tasks. :meth:`~TrioGuest.run_sync`
  calls a function from inside a Trio task, for code that needs one
  (``trio.lowlevel.current_task()``, ``trio.from_thread``...). For the same reason
  ``trio.run()`` cannot be called in the kernel while a guest runs: use the guest.

The guest works on any running asyncio loop, not only a kernel's (tests use
``asyncio.run``). Nothing here imports IPython.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import FrameType
from typing import Any, Final, TypeVar

import outcome
import trio

from ._errors import Error

__all__ = ["GuestClosedError", "TrioGuest", "get_guest", "run", "run_sync", "start_guest"]

T = TypeVar("T")

#: What the result future of a call cancelled from the asyncio side holds.
_CANCELLED: Final = object()


class GuestClosedError(Error):
    """The Trio guest run is closed (or closing), so it cannot run this call; or it was
    closed while the call was running, which cancelled the call.

    Start a new run with :func:`get_guest` (or :func:`start_guest`).
    """


def _settle(fut: asyncio.Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Resolve ``fut`` unless it is already done (it may have been cancelled)."""
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def _only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is ``trio.Cancelled`` or a group holding only ``Cancelled``."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return False


def _forward_sigint(signum: int, frame: FrameType | None) -> None:
    """Stand-in SIGINT handler while Trio starts: behaves as Python's default one."""
    signal.default_int_handler(signum, frame)


class _Call:
    """One :meth:`TrioGuest.run` call: its result future and the Trio task's cancel scope."""

    __slots__ = ("cancel_requested", "future", "scope")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.scope: trio.CancelScope | None = None
        self.cancel_requested = False

    def cancel(self) -> None:
        """Cancel the Trio task (called inside the Trio run)."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


class _Holder:
    """An async context manager kept open by a Trio task of the guest."""

    __slots__ = (
        "cancel_requested",
        "cm",
        "done",
        "entered",
        "exit_error",
        "release",
        "scope",
        "value",
    )

    def __init__(self, cm: AbstractAsyncContextManager[Any]) -> None:
        self.cm = cm
        self.value: Any = None
        self.entered = False
        self.cancel_requested = False
        self.scope: trio.CancelScope | None = None
        self.release = trio.Event()
        self.done = trio.Event()
        self.exit_error: BaseException | None = None


class TrioGuest:
    """A Trio run in guest mode on an asyncio loop, running Trio work for asyncio code.

    Build one with :func:`start_guest` or get the loop's shared one with :func:`get_guest`;
    every method must be called from that loop's thread. See the module docstring.

    Attributes:
        loop: the asyncio loop hosting the Trio run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Prepare a guest run on ``loop``; :meth:`start` starts it."""
        self.loop = loop
        self._ready: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._outcome: outcome.Outcome[None] | None = None
        self._started = False
        self._closing = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._contexts: list[_Holder] = []

    def __repr__(self) -> str:
        return f"<TrioGuest {self.status} contexts={len(self._contexts)}>"

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def status(self) -> str:
        """``"new"``, ``"running"``, ``"closing"`` or ``"closed"``."""
        if self._done.done():
            return "closed"
        if self._closing:
            return "closing"
        return "running" if self._started else "new"

    @property
    def running(self) -> bool:
        """Whether the run was started and accepts calls (not closing, not ended)."""
        return self.status == "running"

    @property
    def closed(self) -> bool:
        """Whether the Trio run has ended."""
        return self._done.done()

    def start(self) -> None:
        """Start the Trio run on :attr:`loop` (once). Trio does not install its SIGINT
        handler: interrupts keep reaching the loop's code as before.

        Raises:
            RuntimeError: already started, or called from another thread than the one
                running :attr:`loop`.
        """
        if self._started:
            raise RuntimeError("this TrioGuest was already started")
        self._check_thread()
        self._started = True
        kw: dict[str, Any] = {
            "run_sync_soon_threadsafe": self.loop.call_soon_threadsafe,
            "run_sync_soon_not_threadsafe": self.loop.call_soon,
            "done_callback": self._on_done,
            # asyncio may use signal.set_wakeup_fd: leave it alone
            "host_uses_signal_set_wakeup_fd": True,
        }
        # Trio installs its KeyboardInterrupt handler only over Python's default one; put a
        # look-alike in place while it starts so the kernel's interrupts stay the kernel's.
        swap = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        if swap:
            signal.signal(signal.SIGINT, _forward_sigint)
        try:
            trio.lowlevel.start_guest_run(self._main, **kw)
        finally:
            if swap and signal.getsignal(signal.SIGINT) is _forward_sigint:
                signal.signal(signal.SIGINT, signal.default_int_handler)

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            _settle(self._ready)
            await trio.sleep_forever()

    def _on_done(self, result: outcome.Outcome[None]) -> None:
        self._outcome = result
        self._closing = True
        err = GuestClosedError("the Trio guest run ended before it was ready")
        if isinstance(result, outcome.Error):
            err.__cause__ = result.error
        if not self._ready.done():
            self._ready.set_exception(err)
            self._ready.exception()  # marked retrieved: no "never retrieved" warning
        _settle(self._done)

    async def aclose(self) -> None:
        """Exit the entered contexts (last in, first out), cancel the Trio tasks still
        running, and wait for the Trio run to end. Idempotent.

        Raises:
            Exception: what exiting a context raised (a group when several did); the run
                is closed anyway.
        """
        self._check_thread()
        if not self._started:
            self._started = True
            self._closing = True
            self._ready.set_exception(GuestClosedError("the Trio guest run was never started"))
            self._ready.exception()
            _settle(self._done)
            return
        if self._done.done():
            return
        try:
            if not self._closing and self._contexts:
                await self.run(self._exit_all)
        finally:
            self._closing = True
            if not self._done.done():
                try:
                    await asyncio.shield(self._ready)
                except GuestClosedError:
                    pass
                else:
                    self._submit(self._cancel_all)
                await asyncio.shield(self._done)
        if isinstance(self._outcome, outcome.Error):
            raise GuestClosedError("the Trio guest run failed") from self._outcome.error

    def _cancel_all(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _exit_all(self) -> None:
        errors: list[BaseException] = []
        for holder in reversed(list(self._contexts)):
            holder.release.set()
            await holder.done.wait()
            if holder.exit_error is not None:
                errors.append(holder.exit_error)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise BaseExceptionGroup("errors while exiting the guest's contexts", errors)

    # -- calls ---------------------------------------------------------------------------
    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await fn(*args)`` in a new Trio task of the guest and return its result.

        ``fn`` is a Trio coroutine function, or any callable returning something Trio can
        await (``mach.when1`` returns a waiter). The task is a child of the guest's
        nursery, so it outlives nothing but the guest itself.

        Raises:
            GuestClosedError: the guest is not running, or was closed during the call.
            RuntimeError: called from a loop other than :attr:`loop`.
            TypeError: ``fn(*args)`` returned something not awaitable.
            asyncio.CancelledError: this asyncio task was cancelled; the Trio task was
                cancelled too, and has finished.
            BaseException: whatever the Trio task raised, unchanged.
        """
        await self._wait_ready()
        fut: asyncio.Future[Any] = self.loop.create_future()
        call = _Call(fut)
        self._submit(self._spawn, call, fn, args)
        try:
            result = await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.done():  # the Trio task finished first: its outcome stays unused
                if not fut.cancelled():
                    fut.exception()
                raise
            self._submit_quiet(call.cancel)
            try:
                await asyncio.shield(fut)  # the Trio task's cleanup
            except asyncio.CancelledError:
                pass
            raise
        if result is _CANCELLED:  # pragma: no cover - only after an asyncio cancellation
            raise asyncio.CancelledError()
        value: T = result
        return value

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` inside the Trio run (in a Trio task) and return its result.

        For code that needs a Trio context: mutations whose handlers fork tasks
        (``e.fork``, ``mach.fork``), ``trio.lowlevel`` calls, starting tasks in a nursery.

        Raises:
            GuestClosedError: the guest is not running.
            BaseException: whatever ``fn`` raised.
        """

        async def call() -> T:
            return fn(*args)

        return await self.run(call)

    async def enter_context(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter ``cm`` in a Trio task of its own and return what it yields; the context
        stays open across cells until :meth:`exit_context` or :meth:`aclose`.

        ``mach = await guest.enter_context(am.open_machine(schema))`` keeps a machine bound
        (its forks running) between cells.

        Raises:
            GuestClosedError: the guest is not running.
            BaseException: what entering ``cm`` raised.
        """
        await self._wait_ready()
        fut: asyncio.Future[Any] = self.loop.create_future()
        holder = _Holder(cm)
        self._submit(self._spawn_holder, holder, fut)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # exit the context again (it may still be entering), then give up
            try:
                await self.run(self._cancel_holder, holder)
            except GuestClosedError:
                pass
            if fut.done() and not fut.cancelled():
                fut.exception()  # an entry error has nobody to go to now
            raise
        value: T = holder.value
        return value

    async def exit_context(self, value: object) -> None:
        """Exit the context that :meth:`enter_context` returned ``value`` for (its async
        exit runs in the Trio task that entered it) and wait until it is exited.

        Raises:
            ValueError: ``value`` is not the result of an open :meth:`enter_context`.
            BaseException: what exiting the context raised.
        """
        for holder in self._contexts:
            if holder.value is value:
                await self.run(self._release, holder)
                return
        raise ValueError(f"no open context of this guest returned {value!r}")

    @property
    def contexts(self) -> list[object]:
        """What the open contexts returned, in the order they were entered."""
        return [h.value for h in self._contexts]

    # -- internals -----------------------------------------------------------------------
    def _check_thread(self) -> None:
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is not None and current is not self.loop:
            raise RuntimeError("TrioGuest used from another asyncio loop than its own")
        if current is None and self.loop.is_running():
            raise RuntimeError("TrioGuest used outside the thread running its loop")

    async def _wait_ready(self) -> None:
        self._check_thread()
        if not self._started:
            raise GuestClosedError("the Trio guest run was not started: call start()")
        if self._closing or self._done.done():
            raise GuestClosedError("the Trio guest run is closed: start a new one")
        await asyncio.shield(self._ready)

    def _submit(self, fn: Callable[..., object], *args: Any) -> None:
        token = self._token
        if token is None:
            raise GuestClosedError("the Trio guest run is not ready")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise GuestClosedError("the Trio guest run is closed: start a new one") from None

    def _submit_quiet(self, fn: Callable[..., object], *args: Any) -> None:
        try:
            self._submit(fn, *args)
        except GuestClosedError:
            pass

    def _spawn(self, call: _Call, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        """Start the task of a call (runs inside the Trio run, from ``run_sync_soon``)."""
        nursery = self._nursery
        if nursery is None or self._done.done():
            _settle(call.future, exc=GuestClosedError("the Trio guest run is closed"))
            return
        try:
            nursery.start_soon(self._run_call, call, fn, args)
        except RuntimeError:  # the nursery closed to new tasks: the run is ending
            _settle(call.future, exc=GuestClosedError("the Trio guest run is closed"))

    async def _run_call(
        self, call: _Call, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        fut = call.future
        try:
            with trio.CancelScope() as scope:
                call.scope = scope
                if call.cancel_requested:
                    scope.cancel()
                aw = fn(*args)
                if not inspect.isawaitable(aw):
                    raise TypeError(
                        f"{fn!r} returned {type(aw).__name__}, not an awaitable: "
                        "run() takes a Trio coroutine function, run_sync() a plain one"
                    )
                value = await aw
            _settle(fut, _CANCELLED if scope.cancelled_caught else value)
        except BaseException as exc:
            if _only_cancelled(exc):  # the guest is closing
                _settle(fut, exc=GuestClosedError("the Trio guest run was closed during the call"))
                raise
            _settle(fut, exc=exc)

    def _spawn_holder(self, holder: _Holder, fut: asyncio.Future[Any]) -> None:
        nursery = self._nursery
        if nursery is None or self._done.done():
            _settle(fut, exc=GuestClosedError("the Trio guest run is closed"))
            return
        try:
            nursery.start_soon(self._hold, holder, fut)
        except RuntimeError:
            _settle(fut, exc=GuestClosedError("the Trio guest run is closed"))

    async def _hold(self, holder: _Holder, fut: asyncio.Future[Any]) -> None:
        try:
            with trio.CancelScope() as scope:
                holder.scope = scope
                if holder.cancel_requested:
                    scope.cancel()
                async with holder.cm as value:
                    holder.value = value
                    holder.entered = True
                    self._contexts.append(holder)
                    _settle(fut, value)
                    await holder.release.wait()
            if not fut.done():  # cancelled while entering: the caller gave up
                fut.cancel()
        except BaseException as exc:
            if _only_cancelled(exc):
                _settle(fut, exc=GuestClosedError("the Trio guest run was closed"))
                raise
            if holder.entered:
                holder.exit_error = exc
            else:
                _settle(fut, exc=exc)
        finally:
            if holder in self._contexts:
                self._contexts.remove(holder)
            holder.done.set()

    async def _release(self, holder: _Holder) -> None:
        holder.release.set()
        await holder.done.wait()
        err, holder.exit_error = holder.exit_error, None
        if err is not None:
            raise err

    async def _cancel_holder(self, holder: _Holder) -> None:
        holder.release.set()
        if not holder.entered:
            holder.cancel_requested = True
            if holder.scope is not None:
                holder.scope.cancel()
        await holder.done.wait()


_GUESTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TrioGuest] = (
    weakref.WeakKeyDictionary()
)


def _loop(loop: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    if loop is not None:
        return loop
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "no running asyncio loop: call this from a notebook cell or an asyncio task"
        ) from None


def start_guest(loop: asyncio.AbstractEventLoop | None = None) -> TrioGuest:
    """Start a new Trio guest run on ``loop`` (default: the running loop) and return it.

    Raises:
        RuntimeError: no loop given and none running in this thread.
    """
    guest = TrioGuest(_loop(loop))
    guest.start()
    return guest


def get_guest(loop: asyncio.AbstractEventLoop | None = None) -> TrioGuest:
    """The shared Trio guest run of ``loop`` (default: the running loop, in a notebook the
    kernel's), started on first use and again after it was closed.

    Raises:
        RuntimeError: no loop given and none running in this thread.
    """
    lp = _loop(loop)
    guest = _GUESTS.get(lp)
    if guest is None or guest.status in ("closing", "closed"):
        guest = _GUESTS[lp] = start_guest(lp)
    return guest


async def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``await fn(*args)`` in the running loop's shared guest (:meth:`TrioGuest.run`)."""
    return await get_guest().run(fn, *args)


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` inside the running loop's shared guest (:meth:`TrioGuest.run_sync`)."""
    return await get_guest().run_sync(fn, *args)
