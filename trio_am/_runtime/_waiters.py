"""Awaitable subscriptions (``when*``) and the timeout error of the helpers."""

from __future__ import annotations

from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

import trio

from .._core._subs import Sub
from .._errors import Error

__all__ = ["TimeoutError", "Waiter"]


class TimeoutError(Error, trio.TooSlowError):
    """A helper's ``timeout`` ran out (also a ``trio.TooSlowError``)."""


class Waiter(Sub):
    """A subscription made by ``mach.when*()``: registered when the method was called.

    ``await w`` returns once the condition held (at once if it already holds; it still
    checkpoints). It raises ``MachineDisposedError`` when the machine was disposed first,
    and ``SubscriptionClosed`` after :meth:`close`. If the task awaiting it is cancelled
    (e.g. by ``trio.move_on_after``), the waiter is unregistered and closed.

    Example::

        w = mach.when1("Ready")      # registered now: cannot miss a later activation
        mach.add1("Start")
        with trio.move_on_after(5):
            await w
    """

    __slots__ = ("_awaiting", "_callbacks", "_event")

    def __init__(self, machine: Any, kind: str, data: Any = None) -> None:
        super().__init__(machine, kind, data)
        self._event: trio.Event | None = None
        self._awaiting = 0
        self._callbacks: list[Callable[[], None]] | None = None

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
        if self._callbacks:
            for cb in list(self._callbacks):
                cb()

    def _add_callback(self, cb: Callable[[], None]) -> None:
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(cb)

    def _remove_callback(self, cb: Callable[[], None]) -> None:
        if self._callbacks and cb in self._callbacks:
            self._callbacks.remove(cb)

    async def wait(self) -> None:
        """Wait for the condition. See the class docstring for errors and cancellation."""
        if not self._done:
            if self._event is None:
                self._event = trio.Event()
            self._awaiting += 1
            try:
                await self._event.wait()
            except BaseException:
                self._awaiting -= 1
                if not self._done and self._awaiting == 0:
                    self._machine._close_sub(self)
                raise
            self._awaiting -= 1
        else:
            await trio.lowlevel.checkpoint()
        if self._error is not None:
            raise self._error

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()

    def close(self) -> None:
        """Unregister; a pending ``await`` raises ``SubscriptionClosed``. Idempotent;
        a waiter that already finished keeps its outcome."""
        if not self._done:
            self._machine._close_sub(self)

    def __enter__(self) -> Waiter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
