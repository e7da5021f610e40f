"""The public :class:`Machine`: the engine plus Trio lifetime, forks and waiters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, ClassVar

import trio

from .._core._engine import Engine
from .._core._schema import Schema, SchemaLike
from .._core._subs import CtxBase, Sub
from .._core._types import EVAL, LogLevel, Mutation
from .._errors import Error
from ._scopes import StateCtx
from ._waiters import Waiter

__all__ = ["Machine", "open_machine"]

_logger = logging.getLogger("trio_am.machine")


def _state_names(states: Any) -> Sequence[str] | None:
    if states is None:
        return None
    if isinstance(states, type):
        states = states()
    names = getattr(states, "names", None)
    if callable(names):
        return list(names())
    return list(states)


class Machine(Engine):
    """A state machine: a schema of states with relations, handlers, a queue and clocks.

    Usable synchronously (mutations, checks, clocks) without a Trio run; state contexts
    as cancel scopes, forks and awaiting subscriptions need it bound to a nursery with
    ``async with mach:`` (or created by :func:`open_machine`). Leaving that block
    disposes the machine and cancels all its work.

    Args:
        schema: state name -> ``am.State`` or dict (``{"Foo": {"require": ["Bar"]}}``).
        id: the machine id (default: a short random one).
        handlers: an object whose methods are bound as handlers (see ``bind_handlers``).
        parent: the parent machine (or its id).
        tags: free strings describing the machine.
        log_level: an ``am.LogLevel``.
        tracers: observers bound at creation (their ``machine_init`` is called).
        queue_limit: mutations beyond this many queued are CANCELED.
        panic_to_exception: turn handler exceptions into the Exception state (default);
            with False they propagate out of the mutation call.
        allow_any_names: accept state names outside ``[A-Z][A-Za-z0-9]*`` (bind their
            handlers with ``bind_handler_maps``).
        states: a state order, or an ``am.States`` class/instance (calls
            ``verify_states`` and sets groups).
        handler_timeout: seconds a handler may run; an overrun is reported to
            ``internal_errors`` as ``am.HandlerTimeoutError`` (a negotiation handler
            that overran vetoes). None (default) disables timing.
        timeouts_to_exception: also add the ``Exception`` state on an overrun.

    Raises:
        SchemaError: invalid schema.
        HandlerBindError: invalid handlers.

    Example::

        mach = am.Machine({"Start": {}, "Ready": {"require": ["Start"]}}, id="svc")
        mach.add(["Start", "Ready"])
        assert mach.string() == "(Start:1 Ready:1)"
    """

    _sub_cls: ClassVar[type[Sub]] = Waiter
    _ctx_cls: ClassVar[type[CtxBase]] = StateCtx

    __slots__ = ("_forks", "_forks_done", "_life", "_nursery", "_nursery_cm")

    def __init__(
        self,
        schema: SchemaLike | Schema,
        *,
        id: str | None = None,
        handlers: object | None = None,
        parent: Engine | str | None = None,
        tags: Iterable[str] = (),
        log_level: LogLevel | int = LogLevel.NOTHING,
        tracers: Iterable[object] = (),
        queue_limit: int = 1000,
        panic_to_exception: bool = True,
        allow_any_names: bool = False,
        states: Any = None,
        handler_timeout: float | None = None,
        timeouts_to_exception: bool = False,
    ) -> None:
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._life: StateCtx | None = None
        self._forks = 0
        self._forks_done: trio.Event | None = None
        super().__init__(
            schema,
            id=id,
            handlers=handlers,
            parent=parent,
            tags=tags,
            log_level=log_level,
            tracers=tracers,
            queue_limit=queue_limit,
            panic_to_exception=panic_to_exception,
            allow_any_names=allow_any_names,
            states=_state_names(states),
            handler_timeout=handler_timeout,
            timeouts_to_exception=timeouts_to_exception,
        )
        groups = getattr(states, "groups", None)
        if callable(groups):
            try:
                self.set_groups(groups())
            except Error:  # pragma: no cover - groups naming states outside the schema
                pass

    # typed overrides of the subscription methods ---------------------------------------
    def when(self, states: Iterable[str] | str) -> Waiter:
        return super().when(states)  # type: ignore[return-value]

    def when1(self, state: str) -> Waiter:
        return super().when1(state)  # type: ignore[return-value]

    def when_not(self, states: Iterable[str] | str) -> Waiter:
        return super().when_not(states)  # type: ignore[return-value]

    def when_not1(self, state: str) -> Waiter:
        return super().when_not1(state)  # type: ignore[return-value]

    def when_err(self) -> Waiter:
        return super().when_err()  # type: ignore[return-value]

    def when_time(self, states: Iterable[str] | str, times: Sequence[int]) -> Waiter:
        return super().when_time(states, times)  # type: ignore[return-value]

    def when_time1(self, state: str, tick: int) -> Waiter:
        return super().when_time1(state, tick)  # type: ignore[return-value]

    def when_ticks(self, state: str, n: int) -> Waiter:
        return super().when_ticks(state, n)  # type: ignore[return-value]

    def when_next_active(self, state: str) -> Waiter:
        return super().when_next_active(state)  # type: ignore[return-value]

    def when_args(self, state: str, args: Mapping[str, Any]) -> Waiter:
        return super().when_args(state, args)  # type: ignore[return-value]

    def when_query(self, fn: Callable[[dict[str, int]], bool]) -> Waiter:
        return super().when_query(fn)  # type: ignore[return-value]

    def when_queue(self, queue_tick: int) -> Waiter:
        return super().when_queue(queue_tick)  # type: ignore[return-value]

    def when_queue_ends(self) -> Waiter:
        return super().when_queue_ends()  # type: ignore[return-value]

    def when_disposed(self) -> Waiter:
        return super().when_disposed()  # type: ignore[return-value]

    def state_ctx(self, state: str) -> StateCtx:
        return super().state_ctx(state)  # type: ignore[return-value]

    def state_scope(self, state: str) -> StateCtx:
        """The state's context, to use as ``with mach.state_scope("Foo"):`` (a cancel
        scope that ends with the state's current activation). Same as :meth:`state_ctx`."""
        return self.state_ctx(state)

    def _is_cancellation(self, err: object) -> bool:
        return isinstance(err, trio.Cancelled)

    # lifetime ----------------------------------------------------------------------------
    @property
    def nursery(self) -> trio.Nursery:
        """The nursery the machine is bound to.

        Raises:
            Error: the machine is not bound (use ``async with mach:`` or ``open_machine``).
        """
        if self._nursery is None:
            raise Error(
                "the machine is not bound to a nursery; use `async with mach:` or am.open_machine()",
                machine_id=self._id,
            )
        return self._nursery

    async def __aenter__(self) -> Machine:
        if self._nursery is not None:
            raise Error("the machine is already bound to a nursery", machine_id=self._id)
        if self.disposed:
            raise Error("cannot bind a disposed machine", machine_id=self._id)
        cm = trio.open_nursery()
        nursery = await cm.__aenter__()
        self._nursery_cm = cm
        self._nursery = nursery
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm = self._nursery_cm
        try:
            self._shutdown()
        finally:
            nursery = self._nursery
            if nursery is not None:
                nursery.cancel_scope.cancel()
            self._nursery_cm = None
            result = await cm.__aexit__(exc_type, exc, tb)
            self._nursery = None
        return result  # type: ignore[no-any-return]

    def _shutdown(self) -> None:
        if self.disposed:
            return
        idx = self._c.index.get("Disposing")
        try:
            if idx is not None and not self._busy:
                self.add1("Disposing")
        finally:
            self.dispose()

    def _on_disposed(self) -> None:
        if self._life is not None:
            self._life._expire()

    async def aclose(self) -> None:
        """Dispose the machine and wait until its forked work finished cancelling."""
        self._shutdown()
        while self._forks:
            if self._forks_done is None:
                self._forks_done = trio.Event()
            await self._forks_done.wait()
        await trio.lowlevel.checkpoint()

    # forks -------------------------------------------------------------------------------
    def fork(
        self,
        async_fn: Callable[..., Awaitable[Any]],
        *args: Any,
        state: str | None = None,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        """Start ``async_fn(*args)`` in the machine's nursery, inside the context of
        ``state``'s current activation (cancelled when it ends), or of the machine's
        lifetime when ``state`` is None.

        An exception escaping the task is added to the machine with ``add_err`` (it
        never crashes the nursery); cancellation at expiry is normal. With ``limiter``
        the task first acquires it. Does not block.

        Raises:
            Error: the machine is not bound to a nursery.
            StateUnknownError: ``state`` is not in the schema.
        """
        nursery = self.nursery
        ctx: StateCtx
        if state is not None:
            ctx = self.state_ctx(state)
        elif self._life is not None:
            ctx = self._life
        else:
            ctx = self._life = StateCtx(self, "", 0)
            if self.disposed:
                ctx._expire()
        self._forks += 1
        name = getattr(async_fn, "__qualname__", repr(async_fn))
        nursery.start_soon(self._run_fork, ctx, async_fn, args, limiter, name=f"{self._id}:{name}")

    def fork_after(
        self,
        delay: float,
        async_fn: Callable[..., Awaitable[Any]],
        *args: Any,
        state: str | None = None,
    ) -> None:
        """Like :meth:`fork`, starting ``async_fn`` after ``delay`` seconds (the wait is
        cancelled with the context too)."""

        async def delayed() -> None:
            await trio.sleep(delay)
            await async_fn(*args)

        delayed.__qualname__ = getattr(async_fn, "__qualname__", "delayed")
        self.fork(delayed, state=state)

    async def _run_fork(
        self,
        ctx: StateCtx,
        async_fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        limiter: trio.CapacityLimiter | None,
    ) -> None:
        try:
            with ctx:
                # an activation that ended before the task started: do not run at all
                await trio.lowlevel.checkpoint_if_cancelled()
                try:
                    if limiter is not None:
                        async with limiter:
                            await async_fn(*args)
                    else:
                        await async_fn(*args)
                except Exception as exc:
                    if self.disposed:
                        _logger.warning(
                            "[%s] forked task %r raised after disposal: %r",
                            self._id,
                            async_fn,
                            exc,
                            extra={"machine_id": self._id},
                        )
                    else:
                        try:
                            self.add_err(exc)
                        except Exception as exc2:
                            # panic_to_exception=False and a raising Exception handler
                            self._internal_error(exc2)
                            _logger.exception(
                                "[%s] reporting a forked task's error failed",
                                self._id,
                                extra={"machine_id": self._id},
                            )
        finally:
            self._forks -= 1
            if not self._forks and self._forks_done is not None:
                self._forks_done.set()
                self._forks_done = None

    # eval --------------------------------------------------------------------------------
    async def eval_async(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` between transitions and return its result: at once when idle,
        else prepended to the queue (so it runs right after the current transition)."""
        if not self._busy:
            await trio.lowlevel.checkpoint()
            return fn()
        done = trio.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except Exception as exc:
                box["error"] = exc
            finally:
                done.set()

        mut = Mutation(self._c.names, EVAL, (), 0, None, prepended=True)
        mut.eval_fn = run
        self._queue.insert(0, mut)
        await done.wait()
        if "error" in box:
            raise box["error"]
        return box.get("value")


@asynccontextmanager
async def open_machine(schema: SchemaLike | Schema, **kwargs: Any) -> AsyncIterator[Machine]:
    """Create a :class:`Machine` bound to a new nursery; leaving the block disposes it
    and cancels all its work (state contexts, forks).

    Takes the same arguments as :class:`Machine`.

    Example::

        async with am.open_machine(schema, handlers=Worker(), id="worker") as mach:
            mach.add1("Start")
            await mach.when1("Ready")
    """
    mach = Machine(schema, **kwargs)
    async with mach:
        yield mach
