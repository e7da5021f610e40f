"""``NetMachine``: a local mirror of a remote machine, with the ``Machine`` API (B14).

Checks, clocks, ``when*`` waiters, state contexts and forks run on the mirror, which
the server's clock pushes move through synthetic transitions (final handlers and
tracers run, scopes of ended states are cancelled). Mutations go to the server: the
plain ones (``add``, ``remove``, ``set``, ``toggle`` and the ``1`` forms) return
``QUEUED`` at once; the ``*_remote`` forms await the server's ``Result``; the ``*_ns``
forms ask for no result at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._core._engine import _compile
from .._core._schema import normalize_schema
from .._core._types import MutationType, MutSource, Result
from .._errors import SchemaError
from .._runtime._machine import Machine
from .errors import UnsupportedError
from .protocol import FLAG_ERROR, FLAG_NO_RESULT, Op

if TYPE_CHECKING:
    from .._core._types import Event
    from .._runtime._waiters import Waiter
    from .client import Client

__all__ = ["NetMachine", "RemoteResult"]

StatesArg = Iterable[str] | str


@attrs.frozen
class RemoteResult:
    """The server's answer to a mutation: ``result`` (an ``am.Result``) and, for a
    queued one, the source's ``queue_tick`` it will run at."""

    result: Result
    queue_tick: int = 0


class NetMachine(Machine):
    """A mirror of a remote machine (id ``rnm-<client id>``); see the module docs.

    It exists before the handshake, with no states but ``Exception``; ``WELCOME`` gives
    it the source's states (``state_names``), schema and clock.

    Attributes:
        remote_id: the source machine's id (None before the handshake).
    """

    __slots__ = ("_client", "_has_schema", "_inferred", "_requires", "remote_id")

    def __init__(self, client: Client, id: str, *, parent: Machine | None = None) -> None:
        super().__init__({}, id=id, parent=parent, tags=("rpc-mirror",))
        self._client = client
        self.remote_id: str | None = None
        self._has_schema = False
        self._inferred = 0
        self._requires: list[int] = []

    # -------------------------------------------------------------- mirror setup
    def _install(
        self, names: Sequence[str], wire: Mapping[str, Any] | None, keep_schema: bool
    ) -> None:
        """Take the states and schema from WELCOME (names in source order)."""
        if wire is None and keep_schema and list(names) == self.state_names:
            return
        if wire is not None:
            schema: dict[str, Any] = {n: dict(wire.get(n) or {}) for n in names}
            self._has_schema = True
        else:
            schema = {n: {} for n in names}
            self._has_schema = False
        norm = normalize_schema(schema, machine_id=self._id)
        old = self._c
        ticks = {n: self._ticks[old.index[n]] for n in old.names}
        order = list(names)
        if "Exception" not in order:
            order.append("Exception")
        if self._reg is not None and self._reg.count and order[: old.n] != list(old.names):
            known = [n for n in old.names if n in order]
            if order[: len(known)] != known:
                raise SchemaError(
                    "the remote state order changed while waiters were pending",
                    machine_id=self._id,
                )
        new = _compile(norm, order)
        self._ticks = [ticks.get(n, 0) for n in order]
        self._active = sum(1 << i for i, t in enumerate(self._ticks) if t & 1)
        self._active_list = [i for i in range(new.n) if (self._active >> i) & 1]
        if self._ctxs:
            self._ctxs = {
                new.index[old.names[i]]: c
                for i, c in self._ctxs.items()
                if old.names[i] in new.index
            }
        self._c = new
        self._requires = [0] * new.n
        for i, n in enumerate(order):
            for r in norm[n].require:
                self._requires[i] |= 1 << new.index[r]
        self._rebuild_tables()
        self._trace("schema_change", self, old.schema)

    def _infer(self, ticks: Sequence[int], tracked: int) -> int:
        """States required (transitively) by active ones and not tracked."""
        if not self._has_schema or tracked == (1 << self._c.n) - 1:
            return 0
        active = 0
        for i, t in enumerate(ticks):
            if t & 1:
                active |= 1 << i
        inferred = 0
        frontier = active
        while frontier:
            i = frontier.bit_length() - 1
            frontier &= ~(1 << i)
            req = self._requires[i] & ~tracked & ~inferred
            inferred |= req
            frontier |= req
        return inferred

    # -------------------------------------------------------------- properties
    @property
    def schema(self) -> Any:
        """The source's schema (readable part), or None when the client asked for none."""
        return self._c.schema if self._has_schema else None

    @property
    def client(self) -> Client:
        """The :class:`~trio_am.rpc.Client` this mirror belongs to."""
        return self._client

    def inferred_states(self) -> list[str]:
        """States counted as active without being synced (required by active ones)."""
        inf = self._inferred
        return [n for i, n in enumerate(self._c.names) if (inf >> i) & 1]

    # -------------------------------------------------------------- mutations
    def _src(self, event: Event | None) -> list[Any] | None:
        if event is None:
            return None
        m = event.machine
        return [m.id, event.transition.id, sum(m._ticks)]

    def _mutate(
        self,
        mtype: MutationType,
        called: tuple[int, ...],
        mask: int,
        args: Any,
        event: Event | None,
        *,
        limit: bool = True,
        source: MutSource | None = None,
    ) -> Result:
        return self._client._send(int(mtype), called, args, 0, self._src(event))

    def toggle(self, states: StatesArg, args: Any = None, *, event: Event | None = None) -> Result:
        """Toggle on the server (it decides); returns ``QUEUED``."""
        called, _ = self._parse(states)
        return self._client._send(Op.TOGGLE, called, args, 0, self._src(event))

    def toggle1(self, state: str, args: Any = None, *, event: Event | None = None) -> Result:
        """:meth:`toggle` for one state."""
        return self.toggle([state], args, event=event)

    def mutate(
        self, op: Any, states: StatesArg, args: Any = None, *, source: MutSource | None = None
    ) -> Result:
        """Send mutation ``op`` (``"add"``, ``"remove"``, ``"set"``, ``"toggle"``)."""
        called, _ = self._parse(states)
        src = None if source is None else [source.mach_id, source.tx_id, source.mach_time]
        return self._client._send(_op(op), called, args, 0, src)

    def add_err(self, err: Any, args: Any = None, *, event: Event | None = None) -> Result:
        """Report ``err`` to the server: adds ``Exception`` (and ``ErrOnClient``) there."""
        return self._send_err((), err, args, event)

    def add_err_state(
        self, state: str, err: Any, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """Like :meth:`add_err`, adding ``state`` too."""
        return self._send_err((self._idx(state),), err, args, event)

    def _send_err(
        self, called: tuple[int, ...], err: Any, args: Any, event: Event | None
    ) -> Result:
        if err is None or self._is_cancellation(err):
            return Result.CANCELED
        self._record_err(err)
        a = dict(args or {})
        a["err"] = err
        return self._client._send(
            Op.ADD, (*called, self._c.exception), a, FLAG_ERROR, self._src(event)
        )

    async def mutate_remote(
        self, op: Any, states: StatesArg, args: Any = None, *, event: Event | None = None
    ) -> RemoteResult:
        """Send a mutation and await the server's answer.

        Raises:
            AuthError: not granted (nothing applied). ArgsError: args refused.
            ConnectionLostError: the link failed for good (OutcomeUnknownError when
                the request had been sent). trio.TooSlowError: ``call_timeout``.
        """
        called, _ = self._parse(states)
        res = await self._client._call(_op(op), called, args, 0, self._src(event))
        if res >= 2:
            return RemoteResult(Result(2, res), res)
        return RemoteResult(Result(res))

    async def add_remote(
        self, states: StatesArg, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``add`` on the server; returns its ``Result``."""
        return (await self.mutate_remote(Op.ADD, states, args, event=event)).result

    async def add1_remote(
        self, state: str, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``add1`` on the server; returns its ``Result``."""
        return (await self.mutate_remote(Op.ADD, [state], args, event=event)).result

    async def remove_remote(
        self, states: StatesArg, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``remove`` on the server; returns its ``Result``."""
        return (await self.mutate_remote(Op.REMOVE, states, args, event=event)).result

    async def remove1_remote(
        self, state: str, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``remove1`` on the server; returns its ``Result``."""
        return (await self.mutate_remote(Op.REMOVE, [state], args, event=event)).result

    async def set_remote(
        self, states: StatesArg, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``set`` on the server; returns its ``Result``."""
        return (await self.mutate_remote(Op.SET, states, args, event=event)).result

    async def toggle_remote(
        self, states: StatesArg, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``toggle`` on the server (decided there); returns its ``Result``."""
        return (await self.mutate_remote(Op.TOGGLE, states, args, event=event)).result

    async def toggle1_remote(
        self, state: str, args: Any = None, *, event: Event | None = None
    ) -> Result:
        """``toggle1`` on the server; returns its ``Result``."""
        return (await self.mutate_remote(Op.TOGGLE, [state], args, event=event)).result

    async def add_err_remote(self, err: BaseException, args: Any = None) -> Result:
        """``add_err`` on the server; returns its ``Result``."""
        a = dict(args or {})
        a["err"] = err
        i = self._c.exception
        res = await self._client._call(Op.ADD, (i,), a, FLAG_ERROR, None)
        return Result(res) if res < 2 else Result(2, res)

    def _ns(self, op: int, states: StatesArg, args: Any) -> Result:
        called, _ = self._parse(states)
        return self._client._send(op, called, args, FLAG_NO_RESULT, None)

    def add_ns(self, states: StatesArg, args: Any = None) -> Result:
        """``add`` with no RESULT (only the ``ack`` confirms it); returns ``QUEUED``."""
        return self._ns(Op.ADD, states, args)

    def add1_ns(self, state: str, args: Any = None) -> Result:
        """``add1`` with no RESULT."""
        return self._ns(Op.ADD, [state], args)

    def remove_ns(self, states: StatesArg, args: Any = None) -> Result:
        """``remove`` with no RESULT."""
        return self._ns(Op.REMOVE, states, args)

    def remove1_ns(self, state: str, args: Any = None) -> Result:
        """``remove1`` with no RESULT."""
        return self._ns(Op.REMOVE, [state], args)

    def set_ns(self, states: StatesArg, args: Any = None) -> Result:
        """``set`` with no RESULT."""
        return self._ns(Op.SET, states, args)

    def toggle1_ns(self, state: str, args: Any = None) -> Result:
        """``toggle1`` with no RESULT."""
        return self._ns(Op.TOGGLE, [state], args)

    # -------------------------------------------------------------- local-only rules
    def _dry(self, mtype: Any, called: tuple[int, ...], mask: int, args: Any) -> Result:
        if not self._has_schema:
            raise UnsupportedError(
                "can_add/can_remove need the schema (connect with schema=True)",
                machine_id=self._id,
            )
        return super()._dry(mtype, called, mask, args)

    def _add_binding(self, *a: Any, **kw: Any) -> Any:
        bid = super()._add_binding(*a, **kw)
        tables = self._tables
        if tables is not None and tables.has_negotiation:
            self.detach_handlers(bid)
            raise SchemaError(
                "a NetMachine runs final handlers only; negotiation happens on the source",
                machine_id=self._id,
            )
        return bid

    def when_args(self, state: str, args: Mapping[str, Any]) -> Waiter:
        """Not supported over aRPC v1 (the args of remote transitions are not synced).

        Raises:
            UnsupportedError: always.
        """
        raise UnsupportedError("when_args is not supported on a NetMachine", machine_id=self._id)


def _op(op: Any) -> int:
    if isinstance(op, int):
        if 0 <= op <= 3:
            return int(op)
    elif isinstance(op, str) and op in ("add", "remove", "set", "toggle"):
        return ("add", "remove", "set", "toggle").index(op)
    raise ValueError(f"unknown mutation op {op!r}")
