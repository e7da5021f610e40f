"""Subscriptions and state contexts, as plain objects (no Trio).

The engine keeps a :class:`Registry` (created on first use) indexing pending
subscriptions by the state they watch, and evaluates only the entries of states whose
tick changed. The Trio layer subclasses :class:`Sub` (awaitable waiters) and
:class:`CtxBase` (cancel scopes); here they only record their outcome and call
:meth:`Sub._wake` / :meth:`CtxBase._on_expire`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["CtxBase", "Registry", "Sub"]


class Sub:
    """A pending or finished subscription (``when*``).

    ``is_set()`` is True once its condition held; a subscription that ended because the
    machine was disposed or it was closed is done but not set.
    """

    __slots__ = ("__weakref__", "_done", "_error", "_lists", "_machine", "data", "kind")

    def __init__(self, machine: Engine, kind: str, data: Any = None) -> None:
        self._machine = machine
        self.kind = kind
        self.data = data
        self._done = False
        self._error: BaseException | None = None
        self._lists: list[list[Sub]] = []

    def is_set(self) -> bool:
        """True once the condition held (False while pending, closed or failed)."""
        return self._done and self._error is None

    @property
    def done(self) -> bool:
        """True once resolved, failed or closed."""
        return self._done

    @property
    def error(self) -> BaseException | None:
        """The error the waiter ends with (disposal, close), or None."""
        return self._error

    def _resolve(self, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        for lst in self._lists:
            try:
                lst.remove(self)
            except ValueError:
                pass
        self._lists = []
        reg = self._machine._reg
        if reg is not None:
            reg.count -= 1
        self._wake()

    def _wake(self) -> None:
        """Called once when the subscription finishes (the Trio layer wakes waiters)."""

    def __repr__(self) -> str:
        state = "set" if self.is_set() else ("failed" if self._done else "pending")
        return f"<{type(self).__name__} {self.kind} {state}>"


class CtxBase:
    """A state context: bound to one activation (tick) of a state; expires when that
    tick changes, or when the machine is disposed."""

    __slots__ = ("__weakref__", "_expired", "machine", "state", "tick")

    def __init__(self, machine: Engine, state: str, tick: int) -> None:
        self.machine = machine
        self.state = state
        self.tick = tick
        self._expired = False

    @property
    def expired(self) -> bool:
        """True once the activation this context is bound to ended."""
        return self._expired

    def _expire(self) -> None:
        if not self._expired:
            self._expired = True
            self._on_expire()

    def _on_expire(self) -> None:
        """Called once at expiry (the Trio layer cancels scopes here)."""

    def __repr__(self) -> str:
        return f"<StateCtx {self.state}@{self.tick}{' expired' if self._expired else ''}>"


class Registry:
    """Pending subscriptions of one machine, indexed for cheap evaluation."""

    __slots__ = (
        "active",
        "args",
        "count",
        "disposed",
        "inactive",
        "queries",
        "queue",
        "queue_ends",
        "ticks",
    )

    def __init__(self) -> None:
        self.count = 0
        self.active: dict[int, list[Sub]] = {}
        self.inactive: dict[int, list[Sub]] = {}
        self.ticks: dict[int, list[Sub]] = {}
        self.args: dict[int, list[Sub]] = {}
        self.queries: list[Sub] = []
        self.queue: list[Sub] = []
        self.queue_ends: list[Sub] = []
        self.disposed: list[Sub] = []

    def add(self, sub: Sub, lst: list[Sub]) -> None:
        lst.append(sub)
        sub._lists.append(lst)

    def add_indexed(self, sub: Sub, table: dict[int, list[Sub]], idx: int) -> None:
        lst = table.get(idx)
        if lst is None:
            lst = table[idx] = []
        self.add(sub, lst)

    def evaluate(
        self, changed: list[int], active: int, ticks: list[int], clock: Callable[[], dict[str, int]]
    ) -> None:
        """Resolve what holds after a transition that changed the given states."""
        for i in changed:
            if (active >> i) & 1:
                lst = self.active.get(i)
                if lst:
                    for sub in list(lst):
                        if not (sub.data & ~active):
                            sub._resolve()
            else:
                lst = self.inactive.get(i)
                if lst:
                    for sub in list(lst):
                        if not (sub.data & active):
                            sub._resolve()
            lst = self.ticks.get(i)
            if lst:
                for sub in list(lst):
                    if all(ticks[j] >= t for j, t in sub.data):
                        sub._resolve()
        if self.queries:
            now = clock()
            for sub in list(self.queries):
                try:
                    ok = sub.data(now)
                except Exception as exc:
                    sub._resolve(exc)
                    continue
                if ok:
                    sub._resolve()

    def match_args(self, idx: int, args: Mapping[str, Any]) -> None:
        """Resolve ``when_args`` subscriptions of a state whose ``_state`` event runs."""
        lst = self.args.get(idx)
        if not lst:
            return
        for sub in list(lst):
            want: Mapping[str, Any] = sub.data
            try:
                if all(k in args and args[k] == v for k, v in want.items()):
                    sub._resolve()
            except Exception as exc:  # a value whose __eq__ raised
                sub._resolve(exc)

    def check_queue(self, queue_tick: int) -> None:
        """Resolve ``when_queue`` subscriptions whose tick was reached."""
        for sub in list(self.queue):
            if queue_tick >= sub.data:
                sub._resolve()

    def all_pending(self) -> list[Sub]:
        """Every pending subscription (each once)."""
        seen: dict[int, Sub] = {}
        for table in (self.active, self.inactive, self.ticks, self.args):
            for lst in table.values():
                for sub in lst:
                    seen[id(sub)] = sub
        for lst in (self.queries, self.queue, self.queue_ends, self.disposed):
            for sub in lst:
                seen[id(sub)] = sub
        return list(seen.values())
