"""State contexts as Trio cancel scopes (machine.md §9.3, §17.4)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import trio

from .._core._subs import CtxBase

__all__ = ["StateCtx"]


class StateCtx(CtxBase):
    """The context of one activation of a state (``mach.state_ctx("Foo")``).

    It expires when that activation ends: the state's tick changes (deactivation, a
    Multi re-activation; for a state that was inactive, its activation) or the machine
    is disposed. Expiry happens while the transition is applied, before final handlers.

    * ``ctx.expired`` tells whether it expired;
    * ``ctx.cancel_scope`` is one ``trio.CancelScope`` cancelled at expiry;
    * ``with ctx:`` enters a fresh cancel scope tied to the same expiry (usable many
      times, from many tasks);
    * ``await ctx.wait_expired()`` waits for expiry.

    Example::

        def Download_state(self, e):
            ctx = e.machine.state_ctx("Download")
            e.machine.fork(self.fetch, ctx)   # or simply e.fork(self.fetch)
    """

    __slots__ = ("_event", "_scope", "_scopes")

    def __init__(self, machine: Any, state: str, tick: int) -> None:
        super().__init__(machine, state, tick)
        self._scope: trio.CancelScope | None = None
        self._scopes: dict[Any, list[trio.CancelScope]] = {}
        self._event: trio.Event | None = None

    @property
    def cancel_scope(self) -> trio.CancelScope:
        """A cancel scope cancelled at expiry (already cancelled if expired)."""
        if self._scope is None:
            self._scope = trio.CancelScope()
            if self._expired:
                self._scope.cancel()
        return self._scope

    def _on_expire(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        for scopes in self._scopes.values():
            for scope in scopes:
                scope.cancel()
        if self._event is not None:
            self._event.set()

    def open_scope(self) -> trio.CancelScope:
        """A new cancel scope that this context cancels at expiry; enter it yourself
        (``with ctx.open_scope():``). Prefer ``with ctx:``, which also forgets it."""
        scope = trio.CancelScope()
        if self._expired:
            scope.cancel()
        else:
            self._scopes.setdefault(None, []).append(scope)
        return scope

    def __enter__(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self._expired:
            scope.cancel()
        task = trio.lowlevel.current_task()
        self._scopes.setdefault(task, []).append(scope)
        scope.__enter__()
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        task = trio.lowlevel.current_task()
        scopes = self._scopes[task]
        scope = scopes.pop()
        if not scopes:
            del self._scopes[task]
        return scope.__exit__(exc_type, exc, tb)

    async def wait_expired(self) -> None:
        """Wait until the context expires (returns at once, after a checkpoint, if it
        already did)."""
        if self._expired:
            await trio.lowlevel.checkpoint()
            return
        if self._event is None:
            self._event = trio.Event()
        await self._event.wait()
