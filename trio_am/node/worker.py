"""The worker side of a pool: :func:`worker` serves the application's machine to its
supervisor and to one client at a time (arpc.md D2).

A worker program is started by a :class:`~trio_am.node.Supervisor`, which passes
``AM_NODE_FD`` (an inherited socket), ``AM_NODE_KIND``, ``AM_NODE_ID`` and
``AM_NODE_URL`` in the environment. :func:`worker` then runs two aRPC servers on the
same machine:

- the **local** one, on that socket, for the supervisor (full rights; it answers the
  getter ``node.addr`` with the public address);
- the **public** one, on ``AM_NODE_URL`` (port 0), for clients. Only the client named
  by the supervisor's ``ServeClient {client_id, token}`` gets in, with that token; it
  may mutate the application's states, ``WorkRequested``, ``Idle``, ``Exception`` and
  ``ErrOnClient``, not the node's own states.

The token belongs to one assignment: it lets that client (and its reconnects) in until
the assignment ends, and nobody else, ever. The assignment ends when the client leaves
(BYE), when its connection stays away for ``session_ttl`` seconds, when it does not
connect within ``claim_timeout`` seconds, or when the supervisor removes
``ServeClient``. :func:`worker` returns when the supervisor's link closes, so a worker
never outlives its supervisor.

With ``AM_NODE_TRANSPORT=tcp`` the local server listens on ``127.0.0.1:0`` instead,
accepts only the token ``AM_NODE_SECRET``, and the worker prints
``AM-NODE-READY {"local": ..., "public": ..., "id": ...}`` on stdout; it then returns at
the end of its stdin (the supervisor holds the other end of that pipe).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any, Final

import attrs
import trio

from .._core._types import Event
from .._errors import SchemaError
from .._runtime._machine import Machine
from ..rpc import Grant, Server, TokenAuth, serve
from ..rpc.protocol import ID_RE
from ..rpc.transport import TcpFrameStream, parse_url
from . import _pool
from ._pool import check_kind
from .errors import NodeError, WorkerEnvError
from .states import WorkerStates

__all__ = ["CLIENT_MUTABLE_NODE_STATES", "Worker", "worker"]

_log: Final = logging.getLogger("trio_am.node")

#: The node states a client may mutate on its worker (besides the application's own).
CLIENT_MUTABLE_NODE_STATES: Final = frozenset({"WorkRequested", "Idle", "Exception", "ErrOnClient"})
_NODE_ONLY: Final = frozenset(WorkerStates.names()) - CLIENT_MUTABLE_NODE_STATES


@attrs.frozen
class _Env:
    kind: str
    id: str
    url: str
    transport: str
    fd: int | None
    secret: str


def _read_env(env: Mapping[str, str], kind: str) -> _Env:
    given = env.get(_pool.ENV_KIND)
    if given is None:
        raise WorkerEnvError(
            f"not started by a supervisor: {_pool.ENV_KIND} is not set "
            "(run this program through am.node.Supervisor)"
        )
    if given != kind:
        raise WorkerEnvError(f"this worker is of kind {kind!r}, the supervisor wants {given!r}")
    wid = env.get(_pool.ENV_ID, "")
    if not ID_RE.fullmatch(wid):
        raise WorkerEnvError(f"{_pool.ENV_ID} must match [A-Za-z0-9._-]{{1,128}}, not {wid!r}")
    url = env.get(_pool.ENV_URL) or "tcp://127.0.0.1:0"
    try:
        scheme, _host, _port, _path = parse_url(url)
    except ValueError as exc:
        raise WorkerEnvError(f"{_pool.ENV_URL}: {exc}") from None
    if scheme == "wss":
        raise WorkerEnvError(f"{_pool.ENV_URL}: wss:// needs TLS settings; use tcp:// or ws://")
    transport = env.get(_pool.ENV_TRANSPORT) or "socketpair"
    if transport == "tcp":
        secret = env.get(_pool.ENV_SECRET, "")
        if len(secret) < 16:
            raise WorkerEnvError(f"{_pool.ENV_SECRET} (16 characters or more) is not set")
        return _Env(kind, wid, url, transport, None, secret)
    if transport != "socketpair":
        raise WorkerEnvError(f"{_pool.ENV_TRANSPORT} must be 'tcp' or unset, not {transport!r}")
    raw = env.get(_pool.ENV_FD, "")
    try:
        fd = int(raw)
    except ValueError:
        raise WorkerEnvError(f"{_pool.ENV_FD} must be a file descriptor, not {raw!r}") from None
    if fd < 0:
        raise WorkerEnvError(f"{_pool.ENV_FD} must be a file descriptor, not {raw!r}")
    return _Env(kind, wid, url, transport, fd, "")


def _socket_stream(fd: int) -> TcpFrameStream:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise WorkerEnvError(f"{_pool.ENV_FD}={fd} is not an open socket: {exc}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise WorkerEnvError(f"{_pool.ENV_FD}={fd} is not a stream socket")
    tsock = trio.socket.from_stdlib_socket(sock)
    return TcpFrameStream(trio.SocketStream(tsock), peer="supervisor")


class _MachHandlers:
    """Handlers the worker binds on the application's machine."""

    def __init__(self, w: Worker) -> None:
        self._w = w

    def ServeClient_enter(self, e: Event) -> bool:
        cid = e.args.get("client_id")
        token = e.args.get("token")
        return (
            isinstance(cid, str)
            and ID_RE.fullmatch(cid) is not None
            and isinstance(token, str)
            and 16 <= len(token) <= 512
        )

    def ServeClient_state(self, e: Event) -> None:
        self._w._assign(str(e.args["client_id"]), str(e.args["token"]))

    def ServeClient_end(self, e: Event) -> None:
        self._w._unassign(str(e.args.get("reason") or "released"))

    def ClientSendPayload_enter(self, e: Event) -> bool:
        name = e.args.get("name")
        return isinstance(name, str) and bool(name)

    def ClientSendPayload_state(self, e: Event) -> None:
        w = self._w
        name = str(e.args["name"])
        try:
            sent = w.send_payload_nowait(name, e.args.get("data"))
        except Exception as exc:  # an unencodable or oversized payload
            e.machine.add_err_state("ErrClient", exc, {"payload": name})
            return
        if not sent:
            e.machine.add_err_state(
                "ErrClient", NodeError(f"payload {name!r}: the client is not connected")
            )


class _PublicHandlers:
    """Handlers bound on the public server's machine: they follow the client's link."""

    def __init__(self, w: Worker) -> None:
        self._w = w

    def ClientConnected_state(self, e: Event) -> None:
        w = self._w
        if e.args.get("client") == w.client_id and w.mach.is1("ServeClient"):
            w.mach.add1("ClientConnected")

    def ClientDisconnected_state(self, e: Event) -> None:
        w = self._w
        cid = e.args.get("client")
        if cid is None or cid != w.client_id or w.public is None:
            return
        if not any(s.client_id == cid and s.connected for s in w.public.sessions):
            w.mach.remove1("ClientConnected")
        if not w._session_alive(cid):  # it said goodbye: the token is spent now
            w._release("the client left")


class Worker:
    """A running worker (given by :func:`worker` through ``task_status``).

    Attributes:
        mach: the application's machine.
        kind: the worker kind.
        id: the worker's id (from the supervisor).
        public: the public aRPC server (clients).
        local: the local aRPC server (the supervisor).
        claim_timeout, session_ttl: see :func:`worker`.
    """

    def __init__(
        self, mach: Machine, env: _Env, *, claim_timeout: float, session_ttl: float
    ) -> None:
        self.mach = mach
        self.kind = env.kind
        self.id = env.id
        self.claim_timeout = claim_timeout
        self.session_ttl = session_ttl
        self.public: Server | None = None
        self.local: Server | None = None
        self._env = env
        self._pair: tuple[str, str] | None = None
        self._watch: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._mutable = frozenset(n for n in mach.state_names if n not in _NODE_ONLY)

    @property
    def client_id(self) -> str | None:
        """The client this worker is assigned to, or None."""
        return self._pair[0] if self._pair is not None else None

    @property
    def public_url(self) -> str:
        """The URL clients connect to.

        Raises:
            WorkerEnvError: the public server is not up.
        """
        if self.public is None or not self.public.urls:
            raise WorkerEnvError("the worker's public server is not up", machine_id=self.mach.id)
        return self.public.urls[0]

    def send_payload_nowait(self, name: str, data: Any = None) -> int:
        """Send a payload to the assigned client; returns 1 if it was queued for a
        connected session, else 0. (From handlers, ``ClientSendPayload {name, data}``
        does the same.)

        Raises:
            am.rpc.PayloadTooLargeError, am.rpc.ArgsEncodeError: before sending.
        """
        cid = self.client_id
        if cid is None or self.public is None:
            return 0
        return self.public.send_payload_nowait(name, data, dest=cid)

    def info(self) -> dict[str, Any]:
        """The answer of the ``node.addr`` getter."""
        return {"addr": self.public_url, "id": self.id, "kind": self.kind, "pid": os.getpid()}

    # -------------------------------------------------------------- the client
    async def _auth(self, client_id: str, token: str | None, peer: str) -> Grant | None:
        pair = self._pair
        if pair is None or token is None:
            return None
        same_id = hmac.compare_digest(client_id.encode(), pair[0].encode())
        same_token = hmac.compare_digest(token.encode(), pair[1].encode())
        if not (same_id and same_token):
            return None
        return Grant(mutable=self._mutable, client_ids={client_id})

    def _assign(self, client_id: str, token: str) -> None:
        self._pair = (client_id, token)
        _log.info("worker %s: assigned to %s", self.id, client_id)
        nursery = self._nursery
        if nursery is not None:
            scope = trio.CancelScope()
            if self._watch is not None:
                self._watch.cancel()
            self._watch = scope
            nursery.start_soon(self._watch_client, client_id, scope)

    def _unassign(self, reason: str) -> None:
        _log.info("worker %s: client %s released (%s)", self.id, self.client_id, reason)
        self._pair = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _release(self, reason: str) -> None:
        if not self.mach.disposed and self.mach.is1("ServeClient"):
            self.mach.remove1("ServeClient", {"reason": reason})

    def _session_alive(self, client_id: str) -> bool:
        public = self.public
        return public is not None and any(s.client_id == client_id for s in public.sessions)

    async def _watch_client(self, client_id: str, scope: trio.CancelScope) -> None:
        mach = self.mach
        with scope:
            with trio.move_on_after(self.claim_timeout):
                await mach.when1("ClientConnected")
            if not mach.is1("ClientConnected"):
                self._release(f"the client did not connect within {self.claim_timeout} s")
                return
            while True:
                await mach.when_not1("ClientConnected")
                if not self._session_alive(client_id):
                    self._release("the client left")
                    return
                with trio.move_on_after(self.session_ttl):
                    await mach.when1("ClientConnected")
                if not mach.is1("ClientConnected"):
                    self._release(f"the client did not come back within {self.session_ttl} s")
                    return

    # -------------------------------------------------------------- running
    async def _run(
        self, task_status: trio.TaskStatus[Worker], stream: TcpFrameStream | None
    ) -> None:
        mach = self.mach
        env = self._env
        binding = mach.bind_handlers(_MachHandlers(self))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._serve(task_status, stream)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._pair = None
            if not mach.disposed:
                mach.remove(
                    ["ServeClient", "SuperConnected", "LocalRpcReady", "PublicRpcReady", "Ready"]
                )
                mach.detach_handlers(binding)
            _log.info("worker %s (%s): stopped", env.id, env.kind)

    async def _serve(
        self, task_status: trio.TaskStatus[Worker], stream: TcpFrameStream | None
    ) -> None:
        mach = self.mach
        env = self._env
        if not mach.is1("Start"):
            mach.add1("Start")
        async with serve(
            mach, env.url, auth=self._auth, session_ttl=self.session_ttl, id=f"{mach.id}.public"
        ) as public:
            self.public = public
            public.rpc.bind_handlers(_PublicHandlers(self))
            mach.add1("PublicRpcReady")
            tcp = env.transport == "tcp"
            local_urls = ["tcp://127.0.0.1:0"] if tcp else []
            local_auth = TokenAuth({env.secret: Grant()}) if tcp else None
            async with serve(
                mach, *local_urls, auth=local_auth, heartbeat=None, id=f"{mach.id}.local"
            ) as local:
                self.local = local
                local.add_getter(_pool.GETTER_ADDR, lambda info, params: self.info())
                mach.add1("LocalRpcReady")
                mach.add1("Ready")
                if tcp:
                    line = json.dumps(
                        {"local": local.urls[0], "public": self.public_url, "id": self.id}
                    )
                    print(f"{_pool.READY_LINE} {line}", flush=True)
                    task_status.started(self)
                    await self._until_stdin_ends()
                else:
                    assert stream is not None
                    task_status.started(self)
                    mach.add1("SuperConnected")
                    try:
                        await local.serve_stream(stream)
                    finally:
                        await stream.aclose()
                    if local.sessions:  # no goodbye: the supervisor's link broke
                        mach.add_err_state(
                            "ErrSupervisor",
                            NodeError("the link to the supervisor broke", machine_id=mach.id),
                        )

    async def _until_stdin_ends(self) -> None:
        """Return at the end of stdin: the supervisor holds its other end."""
        if os.name == "posix":
            stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            try:
                while await stream.receive_some(4096):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await stream.aclose()
        else:  # pragma: no cover - Windows: a thread reads stdin
            while await trio.to_thread.run_sync(
                sys.stdin.buffer.read, 4096, abandon_on_cancel=True
            ):
                pass


async def worker(
    mach: Machine,
    kind: str,
    *,
    claim_timeout: float = 10.0,
    session_ttl: float = 10.0,
    env: Mapping[str, str] | None = None,
    task_status: trio.TaskStatus[Worker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``mach`` as a node worker of ``kind`` until the supervisor goes.

    ``mach``'s schema must include :data:`~trio_am.node.WORKER_SCHEMA`. The worker
    adds ``Start``, then ``PublicRpcReady``, ``LocalRpcReady`` and ``Ready`` (``Idle``
    follows). Handlers send results to the client with ``ClientSendPayload {name,
    data}`` (or :meth:`Worker.send_payload_nowait`). Cancelling it stops both servers.

    Args:
        mach: the application's machine.
        kind: the worker kind; it must be the supervisor's.
        claim_timeout: seconds the assigned client has to connect.
        session_ttl: seconds the assigned client may stay disconnected and still resume.
        env: the environment to read ``AM_NODE_*`` from (default: ``os.environ``).
        task_status: with ``nursery.start``, gets the :class:`Worker` once both servers
            are up.

    Raises:
        WorkerEnvError: not started by a supervisor (no ``AM_NODE_*`` environment), a
            different kind, or a bad variable.
        SchemaError: ``mach`` lacks the node worker states.
        ValueError: a bad kind or timeout.

    Example::

        async with am.open_machine(SCHEMA, id="squarer", handlers=Squarer()) as mach:
            await am.node.worker(mach, "squarer")
    """
    check_kind(kind)
    for name, value in (("claim_timeout", claim_timeout), ("session_ttl", session_ttl)):
        if not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
    missing = [n for n in WorkerStates.names() if n not in mach.state_names]
    if missing:
        raise SchemaError(
            f"a node worker needs the states {missing}; merge am.node.WORKER_SCHEMA into "
            "the schema",
            machine_id=mach.id,
        )
    cfg = _read_env(os.environ if env is None else env, kind)
    # open the inherited socket now: a bad one is reported before anything starts
    stream = _socket_stream(cfg.fd) if cfg.fd is not None else None
    w = Worker(mach, cfg, claim_timeout=float(claim_timeout), session_ttl=float(session_ttl))
    try:
        await w._run(task_status, stream)
    finally:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
