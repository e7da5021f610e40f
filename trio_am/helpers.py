"""Waiting and mutation helpers (machine.md §15.1), built on the public machine API.

All ``wait_*`` functions take waiters returned by ``mach.when*()`` (registered before the
helper is called, so nothing is missed), share one deadline when ``timeout`` is given,
and raise :class:`trio_am.TimeoutError` (also a ``trio.TooSlowError``) when it runs out.
Waiting on waiters never closes them, except as ``await w`` itself does on cancellation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import trio

from ._core._types import Result
from ._errors import Error, ExceptionActiveError, StateUnknownError
from ._runtime._machine import Machine
from ._runtime._waiters import TimeoutError, Waiter

__all__ = [
    "MutRequest",
    "MutationCanceledError",
    "activations",
    "add1_async",
    "add1_sync",
    "add_sync",
    "group_when1",
    "remove1_sync",
    "request_add",
    "request_add1",
    "request_remove",
    "request_remove1",
    "wait_for_all",
    "wait_for_any",
    "wait_for_err_all",
    "wait_for_err_any",
]


class MutationCanceledError(Error):
    """A :class:`MutRequest` ran out of retries or time while the mutation kept being
    CANCELED."""


def activations(tick: int) -> int:
    """How many times a state with this tick was activated: ``(tick + 1) // 2``."""
    return (tick + 1) // 2


async def _wait_until(waiters: Sequence[Waiter], done: Callable[[], bool]) -> None:
    """Sleep until ``done()`` holds, re-checking whenever a waiter finishes."""
    while not done():
        event = trio.Event()
        pending = [w for w in waiters if not w.done]
        for w in pending:
            w._add_callback(event.set)
        try:
            if done():
                break
            await event.wait()
        finally:
            for w in pending:
                w._remove_callback(event.set)
    await trio.lowlevel.checkpoint()


def _deadline(timeout: float | None) -> float:
    if timeout is None:
        return math.inf
    return trio.current_time() + timeout


async def _wait(
    what: str,
    timeout: float | None,
    watch: Sequence[Waiter],
    done: Callable[[], bool],
    waiters: Sequence[Waiter],
) -> None:
    """Wait until ``done()`` holds, re-checked whenever a waiter of ``watch`` finishes,
    under one deadline; name the pending ``waiters`` in the timeout error."""
    with trio.move_on_at(_deadline(timeout)):
        await _wait_until(watch, done)
    if not done():  # a condition that holds wins over a deadline that passed meanwhile
        pending = [w for w in waiters if not w.done]
        kinds = ", ".join(w.kind for w in pending)
        raise TimeoutError(
            f"{what}: timed out after {timeout} s waiting on {kinds or 'nothing'}",
            machine_id=pending[0]._machine.id if pending else None,
        )


def _first_error(waiters: Iterable[Waiter]) -> BaseException | None:
    for w in waiters:
        if w.done and w.error is not None:
            return w.error
    return None


def _raise_first_error(waiters: Iterable[Waiter]) -> None:
    err = _first_error(waiters)
    if err is not None:
        raise err


def _first_done(waiters: Sequence[Waiter]) -> int:
    """The position of the first finished waiter; a failed one raises its error."""
    for i, w in enumerate(waiters):
        if w.done:
            if w.error is not None:
                raise w.error
            return i
    raise AssertionError("unreachable")  # pragma: no cover


async def wait_for_all(*waiters: Waiter, timeout: float | None = None) -> None:
    """Wait until every waiter's condition held.

    Raises:
        TimeoutError: ``timeout`` seconds passed first.
        MachineDisposedError / SubscriptionClosed: a waiter failed (the first one seen).
    """
    ws = list(waiters)

    def done() -> bool:
        return all(w.done for w in ws) or _first_error(ws) is not None

    await _wait("wait_for_all", timeout, ws, done, ws)
    _raise_first_error(ws)


async def wait_for_any(*waiters: Waiter, timeout: float | None = None) -> int:
    """Wait until one waiter finishes; return its position (the lowest one when several
    already have). A failed waiter raises its error.

    Raises:
        ValueError: no waiters were given.
        TimeoutError: ``timeout`` seconds passed first.
    """
    ws = list(waiters)
    if not ws:
        raise ValueError("wait_for_any needs at least one waiter")
    await _wait("wait_for_any", timeout, ws, lambda: any(w.done for w in ws), ws)
    return _first_done(ws)


def _err_of(mach: Machine) -> ExceptionActiveError:
    return ExceptionActiveError(f"Exception: {mach.err}", machine_id=mach.id, err=mach.err)


async def wait_for_err_all(mach: Machine, *waiters: Waiter, timeout: float | None = None) -> None:
    """Like :func:`wait_for_all`, but fail as soon as ``mach``'s ``Exception`` state is
    active (also when it already is).

    Raises:
        ExceptionActiveError: Exception activated (``err`` holds ``mach.err``).
        TimeoutError: ``timeout`` seconds passed first.
    """
    if mach.is_err():
        raise _err_of(mach)
    err_w = mach.when_err()
    ws = list(waiters)

    def done() -> bool:
        return err_w.done or all(w.done for w in ws) or _first_error(ws) is not None

    try:
        await _wait("wait_for_err_all", timeout, [*ws, err_w], done, ws)
    finally:
        err_w.close()
    if err_w.is_set():
        raise _err_of(mach)
    _raise_first_error(ws)


async def wait_for_err_any(mach: Machine, *waiters: Waiter, timeout: float | None = None) -> int:
    """Like :func:`wait_for_any`, but fail as soon as ``mach``'s ``Exception`` is active.

    Raises:
        ExceptionActiveError: Exception activated first (or already was).
        TimeoutError: ``timeout`` seconds passed first.
    """
    if not waiters:
        raise ValueError("wait_for_err_any needs at least one waiter")
    if mach.is_err():
        raise _err_of(mach)
    err_w = mach.when_err()
    ws = list(waiters)
    try:
        await _wait(
            "wait_for_err_any",
            timeout,
            [*ws, err_w],
            lambda: err_w.done or any(w.done for w in ws),
            ws,
        )
    finally:
        err_w.close()
    if err_w.is_set():
        raise _err_of(mach)
    return _first_done(ws)


async def _settle(mach: Machine, r: Result, check: Callable[[], bool]) -> Result:
    if r == Result.QUEUED:
        await mach.when_queue(r.queue_tick)
        return Result.EXECUTED if check() else Result.CANCELED
    await trio.lowlevel.checkpoint()
    return r


async def add1_sync(mach: Machine, state: str, args: dict[str, Any] | None = None) -> Result:
    """Add ``state`` and return EXECUTED or CANCELED, never QUEUED: a queued mutation is
    awaited (``when_queue``) and then judged by whether ``state`` is active."""
    return await _settle(mach, mach.add1(state, args), lambda: mach.is1(state))


async def add_sync(
    mach: Machine, states: Sequence[str], args: dict[str, Any] | None = None
) -> Result:
    """Like :func:`add1_sync` for several states (all must be active)."""
    return await _settle(mach, mach.add(states, args), lambda: mach.is_all(states))


async def remove1_sync(mach: Machine, state: str, args: dict[str, Any] | None = None) -> Result:
    """Remove ``state`` and return EXECUTED or CANCELED, never QUEUED."""
    return await _settle(mach, mach.remove1(state, args), lambda: mach.not1(state))


async def add1_async(
    mach: Machine, wait_state: str, add_state: str, args: dict[str, Any] | None = None
) -> bool:
    """Add ``add_state`` and wait for the next activation of ``wait_state`` (registered
    before the mutation, so it works with Multi states). False when the mutation was
    CANCELED."""
    w = mach.when_next_active(wait_state)
    if mach.add1(add_state, args) == Result.CANCELED:
        w.close()
        return False
    await w
    return True


def group_when1(machs: Iterable[Machine], state: str) -> list[Waiter]:
    """One ``when1(state)`` waiter per machine (use with :func:`wait_for_all`).

    Raises:
        StateUnknownError: a machine lacks ``state``.
    """
    machs = list(machs)
    for m in machs:
        if not m.has1(state):
            raise StateUnknownError(
                f"group_when1: no state {state!r}", machine_id=m.id, state=state
            )
    return [m.when1(state) for m in machs]


class MutRequest:
    """A failsafe mutation: retried while it returns CANCELED.

    Args:
        mach: the machine.
        kind: ``"add"`` or ``"remove"``.
        states: the states.
        args: mutation args.
        retries: how many retries after the first attempt (default 10).
        delay: the first delay between attempts, seconds (default 0.1).
        backoff: the cap of the doubling delay; 0 keeps the delay fixed (default 5).
        max_duration: give up after this many seconds (default 5).

    Example::

        r = await am.MutRequest(mach, "add", ["Connected"], retries=3).run()
    """

    def __init__(
        self,
        mach: Machine,
        kind: Literal["add", "remove"],
        states: Sequence[str] | str,
        args: dict[str, Any] | None = None,
        *,
        retries: int = 10,
        delay: float = 0.1,
        backoff: float = 5.0,
        max_duration: float = 5.0,
    ) -> None:
        if kind not in ("add", "remove"):
            raise ValueError(f"MutRequest kind is 'add' or 'remove', not {kind!r}")
        self.mach = mach
        self.kind = kind
        self.states = [states] if isinstance(states, str) else list(states)
        mach.parse_states(self.states)  # unknown names fail now
        self.args = args
        self.retries = retries
        self.delay = delay
        self.backoff = backoff
        self.max_duration = max_duration
        self.attempts = 0

    def clone(self) -> MutRequest:
        """A fresh request with the same settings."""
        return MutRequest(
            self.mach,
            self.kind,
            self.states,
            self.args,
            retries=self.retries,
            delay=self.delay,
            backoff=self.backoff,
            max_duration=self.max_duration,
        )

    async def run(self) -> Result:
        """Mutate until not CANCELED; returns EXECUTED or a QUEUED result.

        Raises:
            MutationCanceledError: out of retries or time.
        """
        deadline = trio.current_time() + self.max_duration
        delay = self.delay
        fn = self.mach.add if self.kind == "add" else self.mach.remove
        while True:
            self.attempts += 1
            r = fn(self.states, self.args)
            if r != Result.CANCELED:
                await trio.lowlevel.checkpoint()
                return r
            if self.attempts > self.retries or trio.current_time() + delay > deadline:
                raise MutationCanceledError(
                    f"{self.kind} {self.states} canceled {self.attempts} time(s)",
                    machine_id=self.mach.id,
                    state=self.states[0] if self.states else None,
                )
            await trio.sleep(delay)
            if self.backoff:
                delay = min(delay * 2, self.backoff)


def request_add(
    mach: Machine, states: Sequence[str], args: dict[str, Any] | None = None, **kw: Any
) -> MutRequest:
    """A :class:`MutRequest` adding ``states``."""
    return MutRequest(mach, "add", states, args, **kw)


def request_add1(
    mach: Machine, state: str, args: dict[str, Any] | None = None, **kw: Any
) -> MutRequest:
    """A :class:`MutRequest` adding one state."""
    return MutRequest(mach, "add", [state], args, **kw)


def request_remove(
    mach: Machine, states: Sequence[str], args: dict[str, Any] | None = None, **kw: Any
) -> MutRequest:
    """A :class:`MutRequest` removing ``states``."""
    return MutRequest(mach, "remove", states, args, **kw)


def request_remove1(
    mach: Machine, state: str, args: dict[str, Any] | None = None, **kw: Any
) -> MutRequest:
    """A :class:`MutRequest` removing one state."""
    return MutRequest(mach, "remove", [state], args, **kw)
