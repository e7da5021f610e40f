"""A shared test suite of the machine API, for a local :class:`~trio_am.Machine` and for a
:class:`~trio_am.rpc.NetMachine` mirroring a served machine.

A :class:`MachineHarness` builds the machine under test. Entering it (it is an async
context manager factory) yields ``(view, driver)``:

- ``view`` is what the checks read: the local machine itself, or the ``NetMachine``
  mirror of a machine served over aRPC (WebSocket, TCP or memory);
- ``driver`` (a :class:`Driver`) changes the machine the way its kind wants and returns
  only once ``view`` shows the change: the synchronous calls on a local machine, the
  ``*_remote`` calls (which await the server's ``Result``) on a ``NetMachine``, followed
  by a wait until the mirror's clock and queue tick equal the source's.
  ``driver.source`` is the machine that decides (the view itself when local).

Each ``check_*`` function takes a harness, opens it (a fresh machine of
:data:`API_SCHEMA`) and raises ``AssertionError`` when the view misbehaves. Where a mirror
differs from a local machine on purpose (plain mutations return ``QUEUED``; negotiation
handlers cannot be bound to a mirror), the check asserts the documented difference.

Run them from any test framework; with pytest::

    import pytest
    from trio_am import testing

    @pytest.mark.parametrize("harness", testing.HARNESSES)
    @pytest.mark.parametrize("check", sorted(testing.CHECKS))
    async def test_machine_api(harness: str, check: str) -> None:
        await testing.CHECKS[check](testing.make_harness(harness))

This module does not import pytest.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import trio

from ._core._schema import SchemaLike, State, schema_merge
from ._core._types import Event, Result
from ._errors import SchemaError, StateUnknownError
from ._runtime._machine import Machine, open_machine
from .rpc.client import Client, attach, connect
from .rpc.netmachine import NetMachine
from .rpc.server import serve, serve_stream
from .rpc.states import STATE_SOURCE
from .rpc.transport import memory_pair

__all__ = [
    "API_SCHEMA",
    "CHECKS",
    "HARNESSES",
    "Check",
    "Driver",
    "LocalDriver",
    "LocalHarness",
    "MachineHarness",
    "NetDriver",
    "NetHarness",
    "check_checks",
    "check_clocks",
    "check_final_handlers",
    "check_negotiation_handlers",
    "check_plain_mutations",
    "check_queue_tick",
    "check_relations",
    "check_results",
    "check_state_ctx",
    "check_waiters",
    "make_harness",
]

StatesArg = Iterable[str] | str
#: A check: takes a harness, raises ``AssertionError`` on a failure.
Check = Callable[["MachineHarness"], Awaitable[None]]

#: The schema of every check: one state per relation the checks exercise.
#:
#: - ``Ready`` requires ``Start`` (a lone ``add1("Ready")`` is ``CANCELED``);
#: - ``Bar`` requires ``Foo`` (removing ``Foo`` removes ``Bar``);
#: - ``Solo`` removes ``Foo``; ``Pair`` adds ``Foo``;
#: - ``Auto`` is auto and requires ``Pair``;
#: - ``Tick`` is multi;
#: - ``ErrOnClient`` (:data:`trio_am.rpc.STATE_SOURCE`) takes error mutations of clients.
API_SCHEMA: Final[dict[str, State]] = schema_merge(
    {
        "Start": State(),
        "Ready": State(require=["Start"]),
        "Foo": State(),
        "Bar": State(require=["Foo"]),
        "Solo": State(remove=["Foo"]),
        "Pair": State(add=["Foo"]),
        "Auto": State(auto=True, require=["Pair"]),
        "Tick": State(multi=True),
    },
    STATE_SOURCE,
)

#: The harness names :func:`make_harness` knows.
HARNESSES: Final = ("local", "net-ws", "net-tcp", "net-memory")

_OPS: Final = ("add", "remove", "set", "toggle")


# ------------------------------------------------------------------------------ drivers
class Driver(abc.ABC):
    """Changes the machine under test and waits until the view shows the change.

    Every mutation method returns the ``Result`` decided by :attr:`source` (never
    ``QUEUED`` for a local source) once :attr:`view` caught up.

    Attributes:
        view: the machine under test.
        source: the machine that decides (``view`` itself for a local machine).
        timeout: seconds to wait for the view before ``trio.TooSlowError``.
    """

    #: True when :attr:`view` is a mirror of another machine.
    remote: bool = False

    def __init__(self, view: Machine, source: Machine, *, timeout: float = 5.0) -> None:
        self.view = view
        self.source = source
        self.timeout = timeout

    @abc.abstractmethod
    async def mutate(
        self, op: str, states: StatesArg, args: Mapping[str, Any] | None = None
    ) -> Result:
        """Apply mutation ``op`` (``"add"``, ``"remove"``, ``"set"`` or ``"toggle"``)."""

    @abc.abstractmethod
    async def add_err(self, err: Exception) -> Result:
        """Report ``err`` (adds ``Exception``; on a mirror also ``ErrOnClient``)."""

    @abc.abstractmethod
    async def caught_up(self) -> None:
        """Wait until :attr:`view` shows what :attr:`source` shows now."""

    async def add(self, states: StatesArg, args: Mapping[str, Any] | None = None) -> Result:
        """``add``, see :meth:`mutate`."""
        return await self.mutate("add", states, args)

    async def add1(self, state: str, args: Mapping[str, Any] | None = None) -> Result:
        """``add1``, see :meth:`mutate`."""
        return await self.mutate("add", [state], args)

    async def remove(self, states: StatesArg, args: Mapping[str, Any] | None = None) -> Result:
        """``remove``, see :meth:`mutate`."""
        return await self.mutate("remove", states, args)

    async def remove1(self, state: str, args: Mapping[str, Any] | None = None) -> Result:
        """``remove1``, see :meth:`mutate`."""
        return await self.mutate("remove", [state], args)

    async def set(self, states: StatesArg, args: Mapping[str, Any] | None = None) -> Result:
        """``set``, see :meth:`mutate`."""
        return await self.mutate("set", states, args)

    async def toggle(self, states: StatesArg, args: Mapping[str, Any] | None = None) -> Result:
        """``toggle`` (decided by the source), see :meth:`mutate`."""
        return await self.mutate("toggle", states, args)

    async def toggle1(self, state: str, args: Mapping[str, Any] | None = None) -> Result:
        """``toggle1``, see :meth:`mutate`."""
        return await self.mutate("toggle", [state], args)


class LocalDriver(Driver):
    """The driver of a local machine: its synchronous calls, then one checkpoint."""

    async def mutate(
        self, op: str, states: StatesArg, args: Mapping[str, Any] | None = None
    ) -> Result:
        src = self.source
        fns: dict[str, Callable[..., Result]] = {
            "add": src.add,
            "remove": src.remove,
            "set": src.set,
            "toggle": src.toggle,
        }
        fn = fns.get(op)
        if fn is None:
            raise ValueError(f"unknown mutation op {op!r}")
        res = fn(states, None if args is None else dict(args))
        await trio.lowlevel.checkpoint()
        return res

    async def add_err(self, err: Exception) -> Result:
        res = self.source.add_err(err)
        await trio.lowlevel.checkpoint()
        return res

    async def caught_up(self) -> None:
        await trio.lowlevel.checkpoint()


class NetDriver(Driver):
    """The driver of a :class:`~trio_am.rpc.NetMachine`: ``mutate_remote`` (the server's
    ``Result``), then a wait until the mirror's ticks and queue tick reach the source's.

    Attributes:
        client: the :class:`~trio_am.rpc.Client` owning the view.
    """

    remote = True

    def __init__(
        self, view: NetMachine, source: Machine, client: Client, *, timeout: float = 5.0
    ) -> None:
        super().__init__(view, source, timeout=timeout)
        self.net: NetMachine = view
        self.client = client

    async def mutate(
        self, op: str, states: StatesArg, args: Mapping[str, Any] | None = None
    ) -> Result:
        if op not in _OPS:
            raise ValueError(f"unknown mutation op {op!r}")
        with trio.fail_after(self.timeout):
            res = await self.net.mutate_remote(op, states, None if args is None else dict(args))
        await self.caught_up()
        return res.result

    async def add_err(self, err: Exception) -> Result:
        with trio.fail_after(self.timeout):
            res = await self.net.add_err_remote(err)
        await self.caught_up()
        return res

    async def caught_up(self) -> None:
        src, view = self.source, self.view
        if view.state_names != src.state_names:
            raise AssertionError(
                f"the mirror's states {view.state_names} differ from {src.state_names}"
            )
        with trio.fail_after(self.timeout):
            await view.when_time(src.state_names, list(src.time()))
            await view.when_queue(src.queue_tick)


# ------------------------------------------------------------------------------ harnesses
class MachineHarness(abc.ABC):
    """Builds the machine under test: ``async with harness() as (view, driver):``.

    Attributes:
        name: the harness name (one of :data:`HARNESSES` for the built-in ones).
        remote: True when the view is a mirror.
        timeout: seconds the driver and the checks wait for anything.
    """

    name: str = ""
    remote: bool = False

    def __init__(self, *, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def __call__(
        self,
        schema: SchemaLike = API_SCHEMA,
        *,
        id: str = "api",
        handlers: object | None = None,
    ) -> AbstractAsyncContextManager[tuple[Machine, Driver]]:
        """Same as :meth:`open`."""
        return self.open(schema, id=id, handlers=handlers)

    def open(
        self,
        schema: SchemaLike = API_SCHEMA,
        *,
        id: str = "api",
        handlers: object | None = None,
    ) -> AbstractAsyncContextManager[tuple[Machine, Driver]]:
        """Build a machine of ``schema`` (id ``id``, with ``handlers`` bound to the
        source: negotiation handlers are allowed there) and yield ``(view, driver)``."""
        return self._open(schema, id, handlers)

    @abc.abstractmethod
    def _open(
        self, schema: SchemaLike, id: str, handlers: object | None
    ) -> AbstractAsyncContextManager[tuple[Machine, Driver]]:
        """The harness's own ``open``."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class LocalHarness(MachineHarness):
    """The view is a local :class:`~trio_am.Machine` (from :func:`~trio_am.open_machine`)."""

    name = "local"

    @asynccontextmanager
    async def _open(
        self, schema: SchemaLike, id: str, handlers: object | None
    ) -> AsyncIterator[tuple[Machine, Driver]]:
        async with open_machine(schema, id=id, handlers=handlers) as mach:
            yield mach, LocalDriver(mach, mach, timeout=self.timeout)


class NetHarness(MachineHarness):
    """The view is the :class:`~trio_am.rpc.NetMachine` of a client connected to a
    local machine served with :func:`~trio_am.rpc.serve`.

    Args:
        transport: ``"ws"``, ``"tcp"`` (on ``127.0.0.1``, a free port) or ``"memory"``
            (:func:`~trio_am.rpc.testing.memory_pair`, ``serve_stream`` and ``attach``).
        server_kw: more keyword arguments of ``serve``.
        client_kw: more keyword arguments of ``connect`` / ``attach``.
        timeout: seconds to wait for the handshake, answers and clocks.
    """

    remote = True

    def __init__(
        self,
        transport: str = "ws",
        *,
        server_kw: Mapping[str, Any] | None = None,
        client_kw: Mapping[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> None:
        if transport not in ("ws", "tcp", "memory"):
            raise ValueError(f"transport must be 'ws', 'tcp' or 'memory', not {transport!r}")
        super().__init__(timeout=timeout)
        self.transport = transport
        self.name = f"net-{transport}"
        self.server_kw = dict(server_kw or {})
        self.client_kw = dict(client_kw or {})

    async def _ready(self, client: Client) -> None:
        with trio.fail_after(self.timeout):
            await client.rpc.when1("Ready")

    @asynccontextmanager
    async def _open(
        self, schema: SchemaLike, id: str, handlers: object | None
    ) -> AsyncIterator[tuple[Machine, Driver]]:
        cid = f"{id}-client"
        async with open_machine(schema, id=id, handlers=handlers) as src:
            if self.transport == "memory":
                client_side, server_side = memory_pair()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        functools.partial(serve_stream, src, server_side, **self.server_kw)
                    )
                    async with attach(client_side, id=cid, **self.client_kw) as client:
                        await self._ready(client)
                        yield client.mach, NetDriver(client.mach, src, client, timeout=self.timeout)
                    nursery.cancel_scope.cancel()
            else:
                url = f"{self.transport}://127.0.0.1:0"
                async with (
                    serve(src, url, **self.server_kw) as server,
                    connect(server.urls[0], id=cid, **self.client_kw) as client,
                ):
                    await self._ready(client)
                    yield client.mach, NetDriver(client.mach, src, client, timeout=self.timeout)


def make_harness(name: str, *, timeout: float = 5.0, **kwargs: Any) -> MachineHarness:
    """The harness called ``name`` (one of :data:`HARNESSES`); ``kwargs`` go to
    :class:`NetHarness` (``server_kw``, ``client_kw``)."""
    if name == "local":
        if kwargs:
            raise TypeError(f"the local harness takes no {sorted(kwargs)}")
        return LocalHarness(timeout=timeout)
    if name.startswith("net-"):
        return NetHarness(name[4:], timeout=timeout, **kwargs)
    raise ValueError(f"unknown harness {name!r}; known: {', '.join(HARNESSES)}")


# ------------------------------------------------------------------------------ assertions
def _ok(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def _eq(got: object, want: object, what: str) -> None:
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, expected {want!r}")


def _same(view: Machine, driver: Driver, what: str) -> None:
    """The view shows exactly what the source shows."""
    src = driver.source
    _eq(list(view.time()), list(src.time()), f"{what}: time (view vs source)")
    _eq(view.queue_tick, src.queue_tick, f"{what}: queue_tick (view vs source)")
    _eq(view.string_all(), src.string_all(), f"{what}: string_all (view vs source)")


def _raises(exc: type[BaseException], fn: Callable[[], object], what: str) -> None:
    try:
        fn()
    except exc:
        return
    raise AssertionError(f"{what}: {exc.__name__} not raised")


async def _settle(w: Awaitable[object], timeout: float, what: str) -> None:
    try:
        with trio.fail_after(timeout):
            await w
    except trio.TooSlowError:
        raise AssertionError(f"{what}: not resolved within {timeout}s") from None


def _plain(fn: Callable[[MachineHarness], Awaitable[None]]) -> Check:
    """Let a failing check raise its ``AssertionError`` itself, not wrapped in the
    exception groups of the nurseries it ran in."""

    @functools.wraps(fn)
    async def check(harness: MachineHarness) -> None:
        try:
            await fn(harness)
        except BaseExceptionGroup as group:
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if isinstance(leaf, AssertionError):
                raise leaf from None
            raise

    return check


# ------------------------------------------------------------------------------ checks
@_plain
async def check_checks(harness: MachineHarness) -> None:
    """``is1``, ``is_all``, ``not1``, ``not_any``, ``any1``, ``any_of``,
    ``active_states``, ``has``/``has1`` and ``state_names`` after ``add``, ``remove``,
    ``set`` and ``toggle``."""
    async with harness() as (m, d):
        _eq(m.state_names, [*API_SCHEMA, "Exception"], "state_names")
        _ok(m.has("Foo") and m.has(["Foo", "ErrOnClient"]), "has known states")
        _ok(not m.has("Nope") and not m.has(["Foo", "Nope"]), "has unknown states")
        _ok(m.has1("Exception") and not m.has1("Nope"), "has1")
        _raises(StateUnknownError, lambda: m.is1("Nope"), "is1 of an unknown state")
        _eq(m.active_states(), [], "active_states of a new machine")

        _eq(await d.add(["Start", "Foo"]), Result.EXECUTED, "add Start Foo")
        _ok(m.is1("Start") and m.is1("Foo") and not m.is1("Bar"), "is1 after add")
        _ok(m.is_all(["Start", "Foo"]) and not m.is_all(["Start", "Bar"]), "is_all")
        _ok(m.not1("Bar") and not m.not1("Foo"), "not1")
        _ok(m.not_any(["Bar", "Ready"]) and not m.not_any(["Bar", "Foo"]), "not_any")
        _ok(m.any1("Bar", "Foo") and not m.any1("Bar", "Ready"), "any1")
        _ok(m.any_of("Bar", ["Start", "Foo"]) and not m.any_of("Bar", ["Ready", "Foo"]), "any_of")
        _eq(m.active_states(), ["Start", "Foo"], "active_states after add")
        _eq(m.active_states(["Foo", "Bar"]), ["Foo"], "active_states among Foo Bar")

        _eq(await d.remove1("Start"), Result.EXECUTED, "remove1 Start")
        _eq(m.active_states(), ["Foo"], "active_states after remove")
        _eq(await d.set(["Start", "Ready"]), Result.EXECUTED, "set Start Ready")
        _eq(m.active_states(), ["Start", "Ready"], "active_states after set")
        _eq(await d.toggle1("Ready"), Result.EXECUTED, "toggle1 Ready (off)")
        _ok(m.not1("Ready") and m.is1("Start"), "toggle1 turned Ready off")
        _eq(await d.toggle(["Ready", "Foo"]), Result.EXECUTED, "toggle Ready Foo (on)")
        _eq(m.active_states(), ["Start", "Ready", "Foo"], "active_states after toggle")
        _same(m, d, "checks")


@_plain
async def check_clocks(harness: MachineHarness) -> None:
    """``tick``, ``time``, ``clock``, ``is_time``, ``string`` and ``string_all`` follow
    the source's clock exactly."""
    async with harness() as (m, d):
        _eq(list(m.time()), [0] * len(m.state_names), "time of a new machine")
        await d.add1("Foo")
        await d.remove1("Foo")
        await d.add(["Foo", "Bar"])
        _eq(m.tick("Foo"), 3, "tick Foo")
        _eq(m.tick("Bar"), 1, "tick Bar")
        _eq(tuple(m.time(["Foo", "Bar", "Start"])), (3, 1, 0), "time of Foo Bar Start")
        _eq(m.clock(["Foo", "Bar"]), {"Foo": 3, "Bar": 1}, "clock of Foo Bar")
        _eq(m.clock()["Exception"], 0, "clock of every state")
        now = m.time()
        _ok(m.is_time(now), "is_time of the current time")
        _eq(m.string(), "(Foo:3 Bar:1)", "string")
        _eq(
            m.string_all(),
            "(Foo:3 Bar:1) [Start:0 Ready:0 Solo:0 Pair:0 Auto:0 Tick:0 ErrOnClient:0 Exception:0]",
            "string_all",
        )
        await d.remove1("Bar")
        _ok(not m.is_time(now), "is_time after a change")
        _eq(m.string(), "(Foo:3)", "string after remove")
        _same(m, d, "clocks")


@_plain
async def check_relations(harness: MachineHarness) -> None:
    """``require``, ``remove``, ``add``, ``multi`` and ``auto`` as resolved by the
    source, and ``can_add`` on the view."""
    async with harness() as (m, d):
        # require: refused alone, accepted together, removed with what it requires
        _eq(m.can_add1("Ready"), Result.CANCELED, "can_add1 Ready without Start")
        _eq(await d.add1("Ready"), Result.CANCELED, "add1 Ready without Start")
        _eq(m.tick("Ready"), 0, "a canceled add changes no tick")
        _eq(m.can_add(["Start", "Ready"]), Result.EXECUTED, "can_add Start Ready")
        _eq(await d.add(["Start", "Ready"]), Result.EXECUTED, "add Start Ready")
        await d.add(["Foo", "Bar"])
        _eq(await d.remove1("Foo"), Result.EXECUTED, "remove1 Foo")
        _ok(m.not_any(["Foo", "Bar"]), "removing Foo removed Bar (require)")
        # remove
        await d.add(["Foo", "Bar"])
        _eq(await d.add1("Solo"), Result.EXECUTED, "add1 Solo")
        _ok(m.is1("Solo") and m.not_any(["Foo", "Bar"]), "Solo removed Foo (and Bar)")
        await d.remove1("Solo")
        # add and auto
        _eq(await d.add1("Pair"), Result.EXECUTED, "add1 Pair")
        _ok(m.is_all(["Pair", "Foo", "Auto"]), "Pair added Foo, Auto came by itself")
        _eq(await d.remove1("Pair"), Result.EXECUTED, "remove1 Pair")
        _ok(m.is1("Foo") and m.not_any(["Pair", "Auto"]), "Auto left with Pair, Foo stayed")
        # multi: each add re-activates
        for n in (1, 3, 5):
            _eq(await d.add1("Tick"), Result.EXECUTED, "add1 Tick (multi)")
            _eq(m.tick("Tick"), n, "tick of a multi state")
        _same(m, d, "relations")


@_plain
async def check_results(harness: MachineHarness) -> None:
    """``EXECUTED`` and ``CANCELED`` of every mutation kind, as the source decides them
    (a relation refusing the add, a negotiation handler on the source vetoing it)."""

    class Veto:
        def Solo_enter(self, e: Event) -> bool:
            return False

    async with harness(handlers=Veto()) as (m, d):
        _eq(await d.add1("Foo"), Result.EXECUTED, "add1")
        _eq(await d.add1("Ready"), Result.CANCELED, "add1 refused by require")
        _eq(await d.add1("Solo"), Result.CANCELED, "add1 vetoed by Solo_enter on the source")
        _ok(m.is1("Foo") and m.not1("Solo"), "a veto changes nothing")
        _eq(await d.remove1("Foo"), Result.EXECUTED, "remove1")
        _eq(await d.remove1("Foo"), Result.EXECUTED, "remove1 of an inactive state")
        _eq(await d.set(["Start", "Ready"]), Result.EXECUTED, "set")
        _eq(await d.set(["Ready"]), Result.CANCELED, "set refused by require")
        _eq(m.active_states(), ["Start", "Ready"], "a canceled set changes nothing")
        _eq(await d.toggle1("Start"), Result.EXECUTED, "toggle1 off")
        _ok(m.not_any(["Start", "Ready"]), "toggle1 Start removed Ready too")
        _eq(await d.toggle1("Ready"), Result.CANCELED, "toggle1 on, refused by require")
        _same(m, d, "results")


@_plain
async def check_queue_tick(harness: MachineHarness) -> None:
    """``queue_tick`` equals the source's and grows by one per processed mutation,
    canceled ones included; ``when_queue`` resolves when the source processed it."""
    async with harness() as (m, d):
        qt = m.queue_tick
        _eq(qt, d.source.queue_tick, "queue_tick (view vs source)")
        await d.add1("Foo")
        _eq(m.queue_tick, qt + 1, "queue_tick after an executed mutation")
        await d.add1("Ready")
        _eq(m.queue_tick, qt + 2, "queue_tick after a canceled mutation")
        w = m.when_queue(qt + 3)
        _ok(not w.is_set(), "when_queue of a future tick is pending")
        d.source.add1("Bar")  # directly on the source: the view learns it from a push
        await _settle(w, harness.timeout, "when_queue")
        _eq(m.queue_tick, qt + 3, "queue_tick after a source-side mutation")
        _same(m, d, "queue_tick")


@_plain
async def check_waiters(harness: MachineHarness) -> None:
    """``when1``, ``when_not1``, ``when``, ``when_time``, ``when_ticks``, ``when_query``,
    ``when_next_active`` and ``when_err`` registered on the view resolve on changes made
    by the driver and by the source itself, and not before."""
    t = harness.timeout
    async with harness() as (m, d):
        src = d.source
        w_foo = m.when1("Foo")
        w_both = m.when(["Foo", "Bar"])
        w_time = m.when_time(["Foo", "Bar"], [1, 1])
        w_query = m.when_query(lambda clock: clock["Bar"] == 1)
        w_ticks = m.when_ticks("Tick", 4)
        w_next = m.when_next_active("Tick")
        w_err = m.when_err()
        pending = [w_foo, w_both, w_time, w_query, w_ticks, w_next, w_err]
        _ok(not any(w.is_set() for w in pending), "waiters of future changes are pending")
        _ok(m.when_not1("Foo").is_set(), "when_not1 of an inactive state is done at once")

        await d.add1("Foo")
        await _settle(w_foo, t, "when1 Foo")
        _ok(not w_both.is_set() and not w_time.is_set(), "when and when_time wait for Bar")
        w_not = m.when_not1("Foo")
        _ok(not w_not.is_set(), "when_not1 of an active state is pending")

        src.add1("Bar")  # on the source: reaches the view as a push
        await _settle(w_both, t, "when Foo Bar")
        await _settle(w_time, t, "when_time Foo Bar")
        await _settle(w_query, t, "when_query")

        await d.remove1("Foo")
        await _settle(w_not, t, "when_not1 Foo")
        _ok(m.not1("Bar"), "Bar left with Foo")

        await d.add1("Tick")
        await _settle(w_next, t, "when_next_active Tick")
        _ok(not w_ticks.is_set(), "when_ticks waits for more ticks")
        src.add1("Tick")
        src.remove1("Tick")
        await _settle(w_ticks, t, "when_ticks Tick 4")
        _ok(m.tick("Tick") >= 4, "when_ticks resolved at tick 4 or later")

        _ok(not w_err.is_set(), "when_err is pending")
        await d.add_err(ValueError("boom"))
        await _settle(w_err, t, "when_err")
        _ok(m.is1("Exception"), "Exception is active")
        _eq(m.is1("ErrOnClient"), d.remote, "ErrOnClient marks a client's error mutation")
        await d.caught_up()
        _same(m, d, "waiters")


@_plain
async def check_state_ctx(harness: MachineHarness) -> None:
    """``state_ctx`` and ``fork(..., state=...)`` on the view: work forked for an
    activation is cancelled when the source ends that activation; the next activation
    gets a new context."""
    async with harness() as (m, d):
        await d.add1("Foo")
        ctx = m.state_ctx("Foo")
        _ok(not ctx.expired, "the context of an active state is live")
        _ok(m.state_ctx("Foo") is ctx, "state_ctx returns the same object until expiry")
        started = trio.Event()
        ended = trio.Event()
        cancelled: list[bool] = []

        async def work() -> None:
            started.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.append(True)
                ended.set()

        m.fork(work, state="Foo")
        await _settle(started.wait(), harness.timeout, "the forked task started")
        _ok(not ended.is_set(), "the forked task runs while Foo is active")
        await d.add1("Bar")
        _ok(not ctx.expired and not ended.is_set(), "another state does not end Foo's work")

        await d.remove1("Foo")
        await _settle(ended.wait(), harness.timeout, "the forked task was cancelled")
        _ok(ctx.expired and cancelled == [True], "removing Foo expired its context")
        await d.add1("Foo")
        again = m.state_ctx("Foo")
        _ok(again is not ctx and not again.expired, "a new activation has a new context")
        with trio.move_on_after(harness.timeout) as guard:
            with again as scope:
                d.source.remove1("Foo")  # ended on the source: the view's scope follows
                await trio.sleep_forever()
        _ok(not guard.cancelled_caught, "the scope of Foo was not cancelled in time")
        _ok(scope.cancelled_caught and again.expired, "the scope of an ended activation")


@_plain
async def check_final_handlers(harness: MachineHarness) -> None:
    """Final handlers (``Foo_state``, ``Foo_end``, ``any_state``) bound on the view run
    on the view (on a mirror: when its clock moves), with ``e.machine`` the view."""

    class Finals:
        def __init__(self) -> None:
            self.calls: list[str] = []
            self.machines: set[str] = set()

        def _log(self, e: Event, name: str) -> None:
            self.calls.append(name)
            self.machines.add(e.machine.id)

        def Foo_state(self, e: Event) -> None:
            self._log(e, "Foo_state")

        def Foo_end(self, e: Event) -> None:
            self._log(e, "Foo_end")

        def Bar_state(self, e: Event) -> None:
            self._log(e, "Bar_state")

        def Bar_end(self, e: Event) -> None:
            self._log(e, "Bar_end")

        def Tick_state(self, e: Event) -> None:
            self._log(e, "Tick_state")

    async with harness() as (m, d):
        h = Finals()
        bid = m.bind_handlers(h)
        _ok(bid in m.handler_ids(), "final handlers bind on the view")
        await d.add(["Foo", "Bar"])
        _eq(h.calls, ["Foo_state", "Bar_state"], "state handlers after add Foo Bar")
        await d.remove1("Foo")
        _eq(h.calls[2:], ["Foo_end", "Bar_end"], "end handlers after remove Foo")
        await d.add1("Tick")
        await d.add1("Tick")
        _eq(h.calls[4:], ["Tick_state", "Tick_state"], "a multi re-activation runs Tick_state")
        _eq(h.machines, {m.id}, "handlers run on the view")
        m.detach_handlers(bid)
        await d.add1("Foo")
        _eq(len(h.calls), 6, "detached handlers do not run")


@_plain
async def check_negotiation_handlers(harness: MachineHarness) -> None:
    """Expected difference: negotiation handlers (``Foo_enter``) bind on a local
    machine and veto there; a mirror refuses them with ``SchemaError`` (negotiation
    happens on the source) and binds nothing."""

    class Negotiate:
        def Foo_enter(self, e: Event) -> bool:
            return False

    async with harness() as (m, d):
        before = m.handler_ids()
        if d.remote:
            _raises(SchemaError, lambda: m.bind_handlers(Negotiate()), "negotiation on a mirror")
            _eq(m.handler_ids(), before, "a refused binding leaves nothing bound")
            _eq(await d.add1("Foo"), Result.EXECUTED, "add1 Foo without a veto")
        else:
            bid = m.bind_handlers(Negotiate())
            _eq(await d.add1("Foo"), Result.CANCELED, "add1 Foo vetoed by Foo_enter")
            m.detach_handlers(bid)
            _eq(await d.add1("Foo"), Result.EXECUTED, "add1 Foo after detaching")
        _ok(m.is1("Foo"), "Foo is active")


@_plain
async def check_plain_mutations(harness: MachineHarness) -> None:
    """Expected difference: the view's own ``add1``/``remove1``/``toggle1``/``set``
    return the result on a local machine, ``QUEUED`` on a mirror (the source decides
    later); either way the view ends up showing the source's decision."""
    t = harness.timeout
    async with harness() as (m, d):
        want_ok = Result.QUEUED if d.remote else Result.EXECUTED
        want_no = Result.QUEUED if d.remote else Result.CANCELED
        _eq(m.add1("Foo"), want_ok, "view.add1 Foo")
        await _settle(m.when1("Foo"), t, "when1 Foo after view.add1")
        _eq(m.add1("Ready"), want_no, "view.add1 Ready (refused by require)")
        _eq(m.toggle1("Foo"), want_ok, "view.toggle1 Foo")
        await _settle(m.when_not1("Foo"), t, "when_not1 Foo after view.toggle1")
        _eq(m.set(["Start", "Ready"]), want_ok, "view.set Start Ready")
        await _settle(m.when(["Start", "Ready"]), t, "when Start Ready after view.set")
        _eq(m.remove1("Start"), want_ok, "view.remove1 Start")
        await _settle(m.when_not(["Start", "Ready"]), t, "when_not after view.remove1")
        _eq(m.tick("Ready"), 2, "the refused add never reached Ready")
        await d.caught_up()
        _same(m, d, "plain mutations")


#: Every check by name (the ``check_`` prefix dropped).
CHECKS: Final[Mapping[str, Check]] = {
    "checks": check_checks,
    "clocks": check_clocks,
    "relations": check_relations,
    "results": check_results,
    "queue_tick": check_queue_tick,
    "waiters": check_waiters,
    "state_ctx": check_state_ctx,
    "final_handlers": check_final_handlers,
    "negotiation_handlers": check_negotiation_handlers,
    "plain_mutations": check_plain_mutations,
}
