"""The supervisor: a pool of worker processes of one kind, handed to clients
(arpc.md D1, D2).

One task per worker starts its process (:mod:`._proc`), reads its output and runs the
*local link*: the supervisor is the aRPC client of the worker, over an inherited
socketpair (or, with ``transport="tcp"``, over a TCP connection announced on the
worker's stdout). The supervisor machine is served on the public URL; node clients add
``ProvideWorker`` there and get a worker's address and a one-time token as a payload.

Two more tasks keep the pool in shape: the *normaliser* (forks up to the target, trims
idle surplus, and waits for ``min`` ready workers, in up to ``normalize_rounds`` rounds)
and the *heartbeat* (3 health checks per worker; an error for each worker that failed
them all, and a kill on the 4th recent error).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Literal

import attrs
import trio

from .._core._schema import SchemaLike, normalize_schema
from .._core._types import Event, Result
from .._errors import SchemaError
from .._runtime._machine import Machine
from ..rpc import Backoff, Client, Grant, NetMachine, RpcError, Server, attach, connect, serve
from ..rpc.protocol import ID_RE
from ..rpc.transport import TcpFrameStream, parse_url
from . import _pool
from ._pool import Pool, check_kind
from ._proc import OutputTail, open_worker_process, pump, stop_process
from .errors import (
    NodeError,
    PoolError,
    SpawnError,
    WorkerExitError,
    WorkerHealthError,
)
from .states import SUPERVISOR_SCHEMA, SupervisorStates, WorkerStates

__all__ = ["Supervisor", "WorkerInfo"]

_log: Final = logging.getLogger("trio_am.node")

#: What a node client may mutate on the supervisor (arpc.md D2, hand-over step 1).
CLIENT_MUTABLE: Final = frozenset({"ProvideWorker", "WorkerIssues"})

WorkerStatus = Literal["starting", "idle", "busy", "stopping"]


@attrs.frozen
class WorkerInfo:
    """A read-only view of one worker of a :class:`Supervisor`.

    Attributes:
        id: the worker's id (``<kind>-<n>-<hex>``), also its ``AM_NODE_ID``.
        pid: the process id (its process group id too); None before it started.
        status: ``"starting"`` (not ready yet), ``"idle"``, ``"busy"`` (assigned to a
            client) or ``"stopping"``.
        addr: the URL of its public server, once known.
        client_id: the client it is assigned to, or None.
        errors: errors recorded for it within ``error_ttl``.
        healthy: no error recorded within ``recent_errors`` seconds.
    """

    id: str
    pid: int | None
    status: WorkerStatus
    addr: str | None
    client_id: str | None
    errors: int
    healthy: bool


class _Worker:
    """The supervisor's books on one worker."""

    def __init__(self, wid: str, tail_limit: int) -> None:
        self.id = wid
        self.status: WorkerStatus = "starting"
        self.proc: trio.Process | None = None
        self.client: Client | None = None
        self.addr: str | None = None
        self.client_id: str | None = None
        self.token: str | None = None
        #: ServeClient's tick on the mirror once the worker confirmed the assignment
        self.serve_tick = 0
        self.errors: deque[float] = deque()
        self.stderr = OutputTail(tail_limit)
        self.scope = trio.CancelScope()
        self.kill_reason: str | None = None
        self.exited = trio.Event()
        self.exit_code: int | None = None
        self.ready_info: dict[str, Any] | None = None
        self.ready_line = trio.Event()
        self.spawn_failed = False
        #: the client reported issues; the worker is letting it go
        self.releasing = False

    @property
    def mirror(self) -> NetMachine | None:
        return self.client.mach if self.client is not None else None


class _Handlers:
    """Handlers of the supervisor machine (kept off the public class)."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup

    def PoolStarting_state(self, e: Event) -> None:
        self._sup._kick()

    def NormalizingPool_state(self, e: Event) -> None:
        if not self._sup._normalizing:
            self._sup._kick()

    def ForkWorker_state(self, e: Event) -> None:
        self._sup._fork()

    def KillWorker_state(self, e: Event) -> None:
        self._sup._kill(e.args.get("worker_id"), e.args.get("reason") or "killed")

    def ErrWorker_state(self, e: Event) -> None:
        self._sup._record_error(e.args.get("worker_id"))

    def ProvideWorker_state(self, e: Event) -> None:
        self._sup._provide(e)

    def WorkerIssues_state(self, e: Event) -> None:
        self._sup._issues(e)


class Supervisor:
    """Keeps a pool of worker processes of one kind and hands them to clients.

    Create it, then run it with ``async with sup.run(public_url)``; the block keeps the
    pool and the public server up, and leaving it stops every worker (SIGTERM, then
    SIGKILL after ``term_timeout``) and waits for them.

    Args:
        kind: the worker kind (``[A-Za-z0-9._-]{1,64}``); workers check it.
        worker_cmd: the command that starts one worker (``[sys.executable, "w.py"]``).
            The worker program calls :func:`trio_am.node.worker`.
        worker_schema: the workers' schema; it must include the node worker states
            (:data:`~trio_am.node.WORKER_SCHEMA`). A worker that does not show all of
            its states is refused (``ErrWorker``) and killed.
        pool: the pool's size and policy (:class:`Pool`).
        id: the supervisor machine's id (default ``super-<kind>-<hex>``).
        heartbeat: seconds between health-check rounds.
        healthcheck_timeout: seconds one health check may take.
        healthcheck_pause: seconds between the 3 tries of one worker.
        conn_timeout: seconds a worker has to become ready, and to confirm a client.
        pool_pause: seconds between two normalising rounds.
        normalize_rounds: rounds before giving up with ``ErrPool``.
        term_timeout: seconds between SIGTERM and SIGKILL when stopping a worker.
        error_ttl: seconds a worker's error counts towards a kill.
        recent_errors: seconds an error keeps a worker from being handed out.
        kill_after_errors: a worker is killed when it has more recorded errors.
        transport: ``"socketpair"`` (an inherited socket, the default) or ``"tcp"``
            (the worker announces a local TCP server with an ``AM-NODE-READY`` line).
        worker_url: where workers open their public server (port 0); default: the
            scheme and host of the public URL.
        env: extra environment variables for the workers.
        cwd: the workers' working directory.
        stderr_tail: bytes of each worker's stderr kept for ``WorkerGone``.

    Raises:
        ValueError: a bad kind, an empty command, or a bad option.
        SchemaError: ``worker_schema`` is invalid or lacks the node worker states.

    Example::

        sup = am.node.Supervisor("squarer", [sys.executable, "worker.py"], WORKER_SCHEMA,
                                 pool=am.node.Pool(min=2, max=4, warm=1))
        async with sup.run("tcp://127.0.0.1:0"):
            await sup.wait_ready(timeout=30)
            print(sup.url)
    """

    def __init__(
        self,
        kind: str,
        worker_cmd: Sequence[str],
        worker_schema: SchemaLike,
        *,
        pool: Pool | None = None,
        id: str | None = None,
        heartbeat: float = 60.0,
        healthcheck_timeout: float = 5.0,
        healthcheck_pause: float = 0.5,
        conn_timeout: float = 5.0,
        pool_pause: float = 5.0,
        normalize_rounds: int = 5,
        term_timeout: float = 5.0,
        error_ttl: float = 600.0,
        recent_errors: float = 60.0,
        kill_after_errors: int = 3,
        transport: Literal["socketpair", "tcp"] = "socketpair",
        worker_url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stderr_tail: int = 64 * 1024,
    ) -> None:
        self.kind = check_kind(kind)
        if isinstance(worker_cmd, str) or not isinstance(worker_cmd, Sequence):
            raise ValueError("worker_cmd must be a list of strings, e.g. [sys.executable, 'w.py']")
        cmd = list(worker_cmd)
        if not cmd or not all(isinstance(a, str) for a in cmd) or not cmd[0]:
            raise ValueError(f"worker_cmd must be a non-empty list of strings, not {worker_cmd!r}")
        self.worker_cmd = cmd
        if not isinstance(worker_schema, Mapping):
            raise SchemaError(f"worker_schema must be a schema mapping, not {worker_schema!r}")
        norm = normalize_schema(worker_schema)
        missing = [n for n in WorkerStates.names() if n not in norm]
        if missing:
            raise SchemaError(
                f"worker_schema lacks the node worker states {missing}; merge "
                "am.node.WORKER_SCHEMA into it"
            )
        self.worker_schema = norm
        self.pool = Pool() if pool is None else pool
        if not isinstance(self.pool, Pool):
            raise ValueError(f"pool must be an am.node.Pool, not {pool!r}")
        for name, value in (
            ("heartbeat", heartbeat),
            ("healthcheck_timeout", healthcheck_timeout),
            ("conn_timeout", conn_timeout),
            ("term_timeout", term_timeout),
            ("error_ttl", error_ttl),
        ):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        for name, value in (("healthcheck_pause", healthcheck_pause), ("pool_pause", pool_pause)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
        if not isinstance(normalize_rounds, int) or normalize_rounds < 1:
            raise ValueError(f"normalize_rounds must be an int >= 1, not {normalize_rounds!r}")
        if not isinstance(kill_after_errors, int) or kill_after_errors < 0:
            raise ValueError(f"kill_after_errors must be an int >= 0, not {kill_after_errors!r}")
        if transport not in ("socketpair", "tcp"):
            raise ValueError(f"transport must be 'socketpair' or 'tcp', not {transport!r}")
        if transport == "socketpair" and os.name != "posix":  # pragma: no cover
            transport = "tcp"  # Windows: no pass_fds, so no inherited socketpair
        if worker_url is not None:
            parse_url(worker_url)
        self.heartbeat = float(heartbeat)
        self.healthcheck_timeout = float(healthcheck_timeout)
        self.healthcheck_pause = float(healthcheck_pause)
        self.conn_timeout = float(conn_timeout)
        self.pool_pause = float(pool_pause)
        self.normalize_rounds = normalize_rounds
        self.term_timeout = float(term_timeout)
        self.error_ttl = float(error_ttl)
        self.recent_errors = float(recent_errors)
        self.kill_after_errors = kill_after_errors
        self.transport = transport
        self.env = dict(env or {})
        self.cwd = cwd
        self._worker_url = worker_url
        self._tail_limit = stderr_tail
        #: The supervisor machine (:data:`~trio_am.node.SUPERVISOR_SCHEMA`), served to
        #: node clients on the public URL.
        self.mach = Machine(
            SUPERVISOR_SCHEMA,
            id=id or f"super-{self.kind}-{secrets.token_hex(3)}",
            handlers=_Handlers(self),
            states=SupervisorStates,
            tags=("node-supervisor", f"kind:{self.kind}"),
        )
        #: The public aRPC server (while running).
        self.server: Server | None = None
        self._workers: dict[str, _Worker] = {}
        self._seq = 0
        self._nursery: trio.Nursery | None = None
        self._ran = False
        self._stopping = False
        self._normalizing = False
        self._kick_ev = trio.Event()
        self._change_ev = trio.Event()
        self._url_for_workers = "tcp://127.0.0.1:0"
        self._last_error: str = ""

    # -------------------------------------------------------------- public API
    @property
    def url(self) -> str:
        """The public URL clients connect to (with the real port).

        Raises:
            NodeError: the supervisor is not running.
        """
        if self.server is None or not self.server.urls:
            raise NodeError("the supervisor is not running", machine_id=self.mach.id)
        return self.server.urls[0]

    @property
    def workers(self) -> list[WorkerInfo]:
        """The live workers (started, not yet gone), oldest first."""
        return [self._info(w) for w in self._workers.values()]

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the pool is ready (``PoolReady``).

        Raises:
            PoolError: normalising failed first (``ErrPool``).
            trio.TooSlowError: ``timeout`` seconds passed.
        """
        mach = self.mach

        def done(clock: Mapping[str, int]) -> bool:
            return clock["PoolReady"] % 2 == 1 or clock["ErrPool"] % 2 == 1

        with trio.fail_after(_seconds(timeout)):
            await mach.when_query(done)
        if not mach.is1("PoolReady"):
            raise PoolError(
                f"the pool of {self.kind!r} workers could not start: {self._last_error}",
                machine_id=mach.id,
            )

    def run(self, public_url: str) -> AbstractAsyncContextManager[Supervisor]:
        """Serve the supervisor on ``public_url`` (``tcp://host:port`` or
        ``ws://host:port``; port 0 picks one, see :attr:`url`) and keep the pool,
        until the block ends.

        Returns at once (the pool starts in the background; :meth:`wait_ready` waits
        for it). Leaving the block (or a cancellation) stops every worker and waits for
        each process to end.

        Raises:
            ValueError: a bad URL.
            NodeError: the supervisor ran before (a Supervisor runs once).
        """
        scheme, host, _port, _path = parse_url(public_url)
        if scheme == "wss":
            raise ValueError("a Supervisor serves tcp:// or ws:// (wss:// is not supported)")
        if self._ran:
            raise NodeError("a Supervisor runs only once", machine_id=self.mach.id)
        self._ran = True
        if self._worker_url is None:
            worker_scheme = "ws" if scheme == "ws" else "tcp"
            h = f"[{host}]" if ":" in host else host
            self._url_for_workers = f"{worker_scheme}://{h}:0"
        else:
            self._url_for_workers = self._worker_url
        return self._run(public_url)

    @asynccontextmanager
    async def _run(self, public_url: str) -> AsyncIterator[Supervisor]:
        mach = self.mach
        async with mach, serve(mach, public_url, auth=self._client_auth) as server:
            self.server = server
            server.add_getter(_pool.GETTER_KIND, lambda info, params: self._kind_info())
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._pool_loop)
                nursery.start_soon(self._heartbeat_loop)
                mach.add1("Start")
                mach.add1("PublicRpcReady")
                try:
                    yield self
                finally:
                    self._stopping = True
                    _log.debug("%s: stopping %d workers", mach.id, len(self._workers))
                    nursery.cancel_scope.cancel()
            self._nursery = None
            self.server = None

    # -------------------------------------------------------------- views
    def _kind_info(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.mach.id}

    def _healthy(self, w: _Worker) -> bool:
        if not w.errors:
            return True
        return w.errors[-1] < trio.current_time() - self.recent_errors

    def _info(self, w: _Worker) -> WorkerInfo:
        self._expire(w)
        return WorkerInfo(
            id=w.id,
            pid=w.proc.pid if w.proc is not None else None,
            status=w.status,
            addr=w.addr,
            client_id=w.client_id,
            errors=len(w.errors),
            healthy=self._healthy(w),
        )

    def _ready_count(self) -> int:
        return sum(1 for w in self._workers.values() if w.status in ("idle", "busy"))

    def _pickable(self) -> list[_Worker]:
        return [
            w
            for w in self._workers.values()
            if w.status == "idle"
            and w.mirror is not None
            and not w.mirror.is1("ServeClient")  # still letting a client go
            and self._healthy(w)
        ]

    def _update(self) -> None:
        """Set ``PoolReady`` and ``WorkersAvailable`` from the books."""
        mach = self.mach
        if mach.disposed or not mach.is1("Start"):
            return
        if self._ready_count() >= self.pool.min:
            if not mach.is1("PoolReady"):
                mach.add1("PoolReady")
        elif mach.is1("PoolReady"):
            mach.remove1("PoolReady")
        if self._pickable():
            if not mach.is1("WorkersAvailable"):
                mach.add1("WorkersAvailable")
        elif mach.is1("WorkersAvailable"):
            mach.remove1("WorkersAvailable")

    def _changed(self) -> None:
        self._change_ev.set()
        self._change_ev = trio.Event()
        self._update()

    def _kick(self) -> None:
        if not self._stopping:
            self._kick_ev.set()

    # -------------------------------------------------------------- pool
    async def _pool_loop(self) -> None:
        while True:
            await self._kick_ev.wait()
            self._kick_ev = trio.Event()
            await self._normalize()

    def _scale(self) -> None:
        live = [w for w in self._workers.values() if w.status != "stopping"]
        busy = sum(1 for w in live if w.status == "busy")
        missing = self.pool.target(busy) - len(live)
        for _ in range(missing):
            self.mach.add1("ForkWorker")
        if missing < 0:
            idle = [w for w in live if w.status == "idle"]
            for w in reversed(idle[len(idle) + missing :]):
                self.mach.add1("KillWorker", {"worker_id": w.id, "reason": "surplus"})

    async def _normalize(self) -> None:
        mach = self.mach
        self._normalizing = True
        mach.add1("NormalizingPool")
        ok = False
        try:
            for rnd in range(self.normalize_rounds):
                self._scale()
                deadline = trio.current_time() + self.conn_timeout
                while True:
                    if self._ready_count() >= self.pool.min:
                        ok = True
                        break
                    if not any(w.status == "starting" for w in self._workers.values()):
                        break  # every worker of this round failed already
                    change = self._change_ev
                    with trio.move_on_at(deadline):
                        await change.wait()
                    if trio.current_time() >= deadline:
                        break
                if ok:
                    break
                _log.info(
                    "%s: round %d: %d of %d workers ready",
                    mach.id,
                    rnd + 1,
                    self._ready_count(),
                    self.pool.min,
                )
                if rnd + 1 < self.normalize_rounds:
                    await trio.sleep(self.pool_pause)
            if ok:
                if mach.is1("ErrPool"):
                    mach.remove1("ErrPool")
            else:
                err = PoolError(
                    f"{self._ready_count()} of {self.pool.min} workers ready after "
                    f"{self.normalize_rounds} rounds; last error: {self._last_error or 'none'}",
                    machine_id=mach.id,
                )
                mach.add_err_state("ErrPool", err)
                # what failed during this pass must not start the next one at once (a
                # command that always crashes would loop): the next heartbeat retries
                self._kick_ev = trio.Event()
        finally:
            self._normalizing = False
            if not mach.disposed:
                mach.add1("PoolNormalized")
                self._update()

    def _fork(self) -> None:
        nursery = self._nursery
        if nursery is None or self._stopping:
            return
        live = sum(1 for w in self._workers.values() if w.status != "stopping")
        if live >= self.pool.max:
            _log.info("%s: ForkWorker ignored, %d workers is the max", self.mach.id, live)
            return
        self._seq += 1
        wid = f"{self.kind}-{self._seq}-{secrets.token_hex(2)}"
        w = _Worker(wid, self._tail_limit)
        self._workers[wid] = w
        nursery.start_soon(self._run_worker, w, name=f"{self.mach.id}:{wid}")

    def _kill(self, wid: object, reason: str) -> None:
        w = self._workers.get(wid) if isinstance(wid, str) else None
        if w is None or w.status == "stopping":
            return
        _log.info("%s: killing worker %s (%s)", self.mach.id, w.id, reason)
        w.kill_reason = str(reason)
        w.status = "stopping"
        w.scope.cancel()
        self._changed()

    def _expire(self, w: _Worker) -> None:
        limit = trio.current_time() - self.error_ttl
        while w.errors and w.errors[0] < limit:
            w.errors.popleft()

    def _record_error(self, wid: object) -> None:
        err = self.mach.err
        self._last_error = f"{type(err).__name__}: {err}" if err is not None else "unknown"
        w = self._workers.get(wid) if isinstance(wid, str) else None
        if w is None:
            return
        w.errors.append(trio.current_time())
        self._expire(w)
        if len(w.errors) > self.kill_after_errors and w.status != "stopping":
            self.mach.add1(
                "KillWorker", {"worker_id": w.id, "reason": f"{len(w.errors)} errors recorded"}
            )
        self._changed()

    def _worker_error(self, w: _Worker, err: BaseException) -> None:
        self.mach.add_err_state("ErrWorker", err, {"worker_id": w.id})

    # -------------------------------------------------------------- one worker
    async def _run_worker(self, w: _Worker) -> None:
        try:
            with w.scope:
                await self._spawn_and_link(w)
        finally:
            self._gone(w)

    async def _spawn_and_link(self, w: _Worker) -> None:
        env = {**os.environ, **self.env}
        env[_pool.ENV_KIND] = self.kind
        env[_pool.ENV_ID] = w.id
        env[_pool.ENV_URL] = self._url_for_workers
        for key in (_pool.ENV_FD, _pool.ENV_TRANSPORT, _pool.ENV_SECRET):
            env.pop(key, None)
        parent: socket.socket | None = None
        child: socket.socket | None = None
        secret = ""
        fds: tuple[int, ...] = ()
        if self.transport == "socketpair":
            parent, child = socket.socketpair()
            env[_pool.ENV_FD] = str(child.fileno())
            fds = (child.fileno(),)
        else:
            secret = secrets.token_urlsafe(24)
            env[_pool.ENV_TRANSPORT] = "tcp"
            env[_pool.ENV_SECRET] = secret
        try:
            try:
                proc = await open_worker_process(
                    self.worker_cmd,
                    env=env,
                    pass_fds=fds,
                    cwd=self.cwd,
                    stdin_pipe=self.transport == "tcp",
                )
            finally:
                if child is not None:
                    child.close()
        except BaseException as exc:
            if parent is not None:
                parent.close()
            if not isinstance(exc, OSError):
                raise
            w.spawn_failed = True
            self._worker_error(
                w,
                SpawnError(
                    f"cannot start {self.worker_cmd[0]!r}: {exc}",
                    worker_id=w.id,
                    machine_id=self.mach.id,
                ),
            )
            return
        w.proc = proc
        try:
            async with trio.open_nursery() as nursery:
                pumps_done = trio.Event()
                nursery.start_soon(self._pumps, w, proc, pumps_done)
                nursery.start_soon(self._link, w, parent, secret)
                await proc.wait()
                w.exited.set()
                # the process ended: give its pipes a moment to reach EOF
                with trio.move_on_after(0.5):
                    await pumps_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                w.exit_code = await stop_process(proc, self.term_timeout)
                w.exited.set()
                with trio.move_on_after(0.2):
                    await pump(proc.stderr, w.stderr)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        await stream.aclose()
                if parent is not None:
                    parent.close()

    async def _pumps(self, w: _Worker, proc: trio.Process, done: trio.Event) -> None:
        def on_line(line: str) -> None:
            if line.startswith(_pool.READY_LINE + " ") and w.ready_info is None:
                try:
                    info = json.loads(line[len(_pool.READY_LINE) + 1 :])
                except ValueError:
                    info = None
                if isinstance(info, dict) and isinstance(info.get("local"), str):
                    w.ready_info = info
                    w.ready_line.set()
                    return
            _log.debug("%s: worker %s: %s", self.mach.id, w.id, line)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, proc.stderr, w.stderr)
                nursery.start_soon(pump, proc.stdout, None, on_line)
        finally:
            done.set()

    def _open_link(
        self, w: _Worker, parent: socket.socket | None, secret: str
    ) -> AbstractAsyncContextManager[Client]:
        cid = f"sv-{w.id}"
        if parent is not None:
            tsock = trio.socket.from_stdlib_socket(parent)
            stream = TcpFrameStream(trio.SocketStream(tsock), peer=f"worker:{w.id}")
            return attach(stream, id=cid, heartbeat=None, call_timeout=self.conn_timeout)
        assert w.ready_info is not None
        return connect(
            str(w.ready_info["local"]),
            id=cid,
            token=secret,
            heartbeat=None,
            call_timeout=self.conn_timeout,
            connect_timeout=self.conn_timeout,
            reconnect=Backoff(initial=0.05, max=0.5, max_elapsed=self.conn_timeout),
        )

    async def _link(self, w: _Worker, parent: socket.socket | None, secret: str) -> None:
        mach = self.mach
        if parent is None:
            with trio.move_on_after(self.conn_timeout):
                await w.ready_line.wait()
            if w.ready_info is None:
                self._fail_worker(w, f"no {_pool.READY_LINE} line within {self.conn_timeout} s")
                return
        async with self._open_link(w, parent, secret) as client:
            w.client = client
            try:
                with trio.fail_after(self.conn_timeout):
                    await client.rpc.when1("Ready")
                    info = await client.get(_pool.GETTER_ADDR)
                    await client.mach.when1("Ready")
            except (trio.TooSlowError, RpcError) as exc:
                if not w.exited.is_set():
                    self._fail_worker(w, f"not ready within {self.conn_timeout} s ({exc!r})")
                return
            problem = self._check_worker(w, info, client.mach)
            if problem:
                self._fail_worker(w, problem, schema=True)
                return
            w.addr = str(info["addr"])
            if w.status == "starting":
                w.status = "idle"
            mach.add1("WorkerReady", {"worker_id": w.id, "addr": w.addr})
            self._changed()
            stop = client.mach.on_change(lambda m, before, after: self._worker_changed(w))
            try:
                await client.rpc.when1("ReconnectFailed")  # the link broke
                with trio.move_on_after(1.0):
                    await w.exited.wait()
                if not w.exited.is_set():
                    self._fail_worker(w, "the link to the worker broke")
            finally:
                stop()

    def _check_worker(self, w: _Worker, info: object, mirror: NetMachine) -> str:
        if not isinstance(info, dict):
            return f"bad {_pool.GETTER_ADDR} answer: {info!r}"
        if info.get("kind") != self.kind:
            return f"the worker is of kind {info.get('kind')!r}, not {self.kind!r}"
        if info.get("id") != w.id:
            return f"the worker says it is {info.get('id')!r}, not {w.id!r}"
        addr = info.get("addr")
        if not isinstance(addr, str):
            return f"bad worker address {addr!r}"
        try:
            parse_url(addr)
        except ValueError as exc:
            return str(exc)
        missing = [n for n in self.worker_schema if n not in mirror.state_names]
        if missing:
            return f"the worker lacks states of worker_schema: {missing}"
        return ""

    def _fail_worker(self, w: _Worker, why: str, *, schema: bool = False) -> None:
        err: BaseException
        if schema:
            err = SchemaError(f"worker {w.id}: {why}", machine_id=self.mach.id)
        else:
            err = NodeError(f"worker {w.id}: {why}", machine_id=self.mach.id)
        self._worker_error(w, err)
        self.mach.add1("KillWorker", {"worker_id": w.id, "reason": why})

    def _worker_changed(self, w: _Worker) -> None:
        mirror = w.mirror
        if mirror is None or mirror.disposed or not w.serve_tick or w.status != "busy":
            return
        if "ServeClient" in mirror.state_names and mirror.tick("ServeClient") > w.serve_tick:
            self._client_left(w)

    def _client_left(self, w: _Worker) -> None:
        _log.info("%s: worker %s: client %s left", self.mach.id, w.id, w.client_id)
        w.client_id = None
        w.token = None
        w.serve_tick = 0
        w.releasing = False
        if self.pool.recycle:
            self.mach.add1("KillWorker", {"worker_id": w.id, "reason": "recycle"})
        else:
            w.status = "idle"
            self._changed()
        self._kick()

    def _gone(self, w: _Worker) -> None:
        self._workers.pop(w.id, None)
        mach = self.mach
        if mach.disposed:
            return
        stderr = w.stderr.text()
        if w.proc is None and not w.spawn_failed:
            self._changed()
            return  # stopped before its process started: nothing to report
        reason = "spawn failed" if w.proc is None else (w.kill_reason or "exited")
        if w.proc is not None and w.kill_reason is None and not self._stopping:
            self._worker_error(
                w,
                WorkerExitError(
                    f"worker {w.id} exited with status {w.exit_code}"
                    + (f": {stderr.strip()[-200:]}" if stderr.strip() else ""),
                    worker_id=w.id,
                    exit_code=w.exit_code,
                    stderr=stderr,
                    machine_id=mach.id,
                ),
            )
        if w.client_id is not None and self.server is not None and not self._stopping:
            try:
                self.server.send_payload_nowait(
                    _pool.WORKER_GONE,
                    {"worker_id": w.id, "exit_code": w.exit_code, "reason": reason},
                    dest=w.client_id,
                )
            except RpcError:  # pragma: no cover - a tiny, encodable payload
                pass
        mach.add1(
            "WorkerGone",
            {"worker_id": w.id, "exit_code": w.exit_code, "stderr": stderr, "reason": reason},
        )
        self._changed()
        self._kick()

    # -------------------------------------------------------------- heartbeat
    async def _heartbeat_loop(self) -> None:
        while True:
            await trio.sleep(self.heartbeat)
            await self._heartbeat_round()

    async def _check_health(self, w: _Worker, failed: list[_Worker]) -> None:
        mirror = w.mirror
        if mirror is None:
            return
        for attempt in range(3):
            if mirror.disposed or w.status == "stopping":
                return
            before = mirror.tick("Healthcheck")
            with trio.move_on_after(self.healthcheck_timeout):
                try:
                    await mirror.add1_remote("Healthcheck")
                except RpcError:
                    pass
            if mirror.tick("Healthcheck") > before:
                return
            if attempt < 2:
                await trio.sleep(self.healthcheck_pause)
        failed.append(w)

    async def _heartbeat_round(self) -> None:
        mach = self.mach
        mach.add1("Heartbeat")
        failed: list[_Worker] = []
        try:
            checked = [w for w in self._workers.values() if w.status in ("idle", "busy")]
            async with trio.open_nursery() as nursery:
                for w in checked:
                    nursery.start_soon(self._check_health, w, failed)
        finally:
            mach.remove1("Heartbeat")
        for w in failed:
            if w.id in self._workers and w.status != "stopping":
                self._worker_error(
                    w,
                    WorkerHealthError(
                        f"worker {w.id} failed 3 health checks",
                        worker_id=w.id,
                        machine_id=mach.id,
                    ),
                )
        for w in list(self._workers.values()):
            self._expire(w)
        self._changed()
        live = [w for w in self._workers.values() if w.status != "stopping"]
        busy = sum(1 for w in live if w.status == "busy")
        if len(live) != self.pool.target(busy) or self._ready_count() < self.pool.min:
            self._kick()

    # -------------------------------------------------------------- clients
    async def _client_auth(self, client_id: str, token: str | None, peer: str) -> Grant:
        return Grant(mutable=CLIENT_MUTABLE)

    def _client_of(self, e: Event) -> str | None:
        src = e.transition.mutation.source
        server = self.server
        if src is not None and src.session_id and server is not None:
            for info in server.sessions:
                if info.sid == src.session_id:
                    return info.client_id
            return None
        cid = e.args.get("client_id")  # a local mutation may name the client
        return cid if isinstance(cid, str) and ID_RE.fullmatch(cid) else None

    def _send(self, name: str, data: Mapping[str, Any], client_id: str) -> int:
        server = self.server
        if server is None:
            return 0
        try:
            return server.send_payload_nowait(name, dict(data), dest=client_id)
        except RpcError as exc:  # pragma: no cover - small payloads of plain values
            _log.warning("%s: payload %s to %s failed: %s", self.mach.id, name, client_id, exc)
            return 0

    def _provide(self, e: Event) -> None:
        cid = self._client_of(e)
        req = e.args.get("req")
        if not isinstance(req, int) or isinstance(req, bool):
            req = None
        if cid is None:
            _log.info("%s: ProvideWorker without a client id", self.mach.id)
            return
        if self._stopping or self._nursery is None:
            self._send(_pool.NO_WORKER, {"req": req, "reason": "shutting_down"}, cid)
            return
        limit = self.pool.max_per_client
        held = sum(1 for w in self._workers.values() if w.client_id == cid and not w.releasing)
        if limit is not None and held >= limit:
            self._send(_pool.NO_WORKER, {"req": req, "reason": "max_per_client"}, cid)
            return
        free = self._pickable()
        if not free:
            self._send(_pool.NO_WORKER, {"req": req, "reason": "none_free"}, cid)
            self._kick()
            return
        w = free[0]
        w.status = "busy"
        w.client_id = cid
        w.token = secrets.token_urlsafe(24)
        w.serve_tick = 0
        self._nursery.start_soon(self._assign, w, cid, w.token, req)
        self._changed()
        self._kick()  # one more busy worker moves the target

    async def _assign(self, w: _Worker, cid: str, token: str, req: int | None) -> None:
        mirror = w.mirror
        err: BaseException | None = None
        ok = False
        if mirror is not None:
            try:
                with trio.fail_after(self.conn_timeout):
                    res = await mirror.add1_remote(
                        "ServeClient", {"client_id": cid, "token": token}
                    )
                ok = res == Result.EXECUTED and mirror.is1("ServeClient")
                if not ok:
                    err = NodeError(f"worker {w.id} refused ServeClient", machine_id=self.mach.id)
            except (RpcError, trio.TooSlowError) as exc:
                err = exc
        if w.status != "busy" or w.client_id != cid or w.token != token:
            ok = False  # killed or released meanwhile
        if not ok:
            if err is not None and w.id in self._workers:
                self._worker_error(w, err)
            if w.status == "busy" and w.client_id == cid:
                w.status = "idle"
                w.client_id = None
                w.token = None
                self._changed()
            self._send(_pool.NO_WORKER, {"req": req, "reason": "none_free"}, cid)
            return
        assert mirror is not None
        w.serve_tick = mirror.tick("ServeClient")
        data = {
            "req": req,
            "worker_id": w.id,
            "addr": w.addr,
            "token": token,
            "kind": self.kind,
        }
        if not self._send(_pool.WORKER, data, cid):
            mirror.remove1("ServeClient", {"reason": "the client is gone"})

    def _issues(self, e: Event) -> None:
        cid = self._client_of(e)
        wid = e.args.get("worker_id")
        w = self._workers.get(wid) if isinstance(wid, str) else None
        if w is None or cid is None or w.client_id != cid:
            _log.info("%s: WorkerIssues from %s about %r ignored", self.mach.id, cid, wid)
            return
        reason = str(e.args.get("reason") or "unspecified")[:200]
        self._worker_error(
            w, NodeError(f"client {cid} reported worker {w.id}: {reason}", machine_id=self.mach.id)
        )
        w.releasing = True  # it no longer counts for the client's max_per_client
        mirror = w.mirror
        if mirror is not None and not mirror.disposed and w.serve_tick:
            mirror.remove1("ServeClient", {"reason": f"client issues: {reason}"})


def _seconds(timeout: float | None) -> float:
    """``timeout``, or infinity for None (for ``trio.fail_after``)."""
    return math.inf if timeout is None else timeout
