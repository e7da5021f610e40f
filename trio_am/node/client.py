"""The client side of a pool: ask a supervisor for a worker, then use it directly
(arpc.md D2, hand-over and reassignment).

:func:`connect` keeps a link to one supervisor of the wanted kind (the URLs are tried
in order; one that fails or supervises another kind is skipped for ``blacklist``
seconds). :meth:`NodeClient.request_worker` adds ``ProvideWorker`` there and waits for
the answer, a payload:

- ``node.worker {addr, token, worker_id}``: the client connects to the worker with
  that one-time token; :attr:`NodeClient.worker` is then a ``NetMachine`` of the
  worker, and results come back as payloads to the consumer;
- ``node.no_worker {reason}``: ``none_free`` makes the client back off and ask again
  until its timeout; ``max_per_client`` raises :class:`~trio_am.node.NoWorkerError` at
  once.

If the worker's link does not resume within ``resume_timeout`` seconds, or the
supervisor reports the worker gone (``node.worker_gone``), the client adds
``ErrWorker``, fails the calls still pending on the worker with
``am.rpc.OutcomeUnknownError``, tells the supervisor (``WorkerIssues``), and with
``auto_reassign`` gets a new worker and adds ``WorkerReassigned``. Re-submitting the
work is the application's call.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final

import attrs
import trio

from .._core._schema import SchemaLike, normalize_schema
from .._core._types import Event, Result
from .._errors import SchemaError
from .._runtime._machine import Machine
from ..rpc import (
    AuthError,
    Backoff,
    Client,
    NetMachine,
    OutcomeUnknownError,
    Payload,
    RpcError,
)
from ..rpc import (
    connect as rpc_connect,
)
from ..rpc.protocol import ID_RE
from ..rpc.transport import parse_url
from . import _pool
from ._pool import check_kind
from .errors import NodeError, NoWorkerError, WorkerLostError
from .states import CLIENT_SCHEMA, ClientStates

__all__ = ["NodeClient", "WorkerOffer", "connect", "open_worker"]

_log: Final = logging.getLogger("trio_am.node")


def _active(clock: Mapping[str, int], name: str) -> bool:
    return clock.get(name, 0) % 2 == 1


async def _first(*fns: Callable[[], Awaitable[object]]) -> int:
    """Run the awaitables ``fns()`` until one finishes; return its position."""
    winner = -1
    async with trio.open_nursery() as nursery:

        async def run(i: int, fn: Callable[[], Awaitable[object]]) -> None:
            nonlocal winner
            await fn()
            if winner < 0:
                winner = i
            nursery.cancel_scope.cancel()

        for i, fn in enumerate(fns):
            nursery.start_soon(run, i, fn)
    return winner


@attrs.frozen
class WorkerOffer:
    """A worker handed to a client: the data of the ``node.worker`` payload.

    Attributes:
        worker_id: the worker's id.
        addr: the URL of its public server.
        token: the one-time token to connect with (with this client's id only).
        kind: the worker kind.
        req: the request number it answers.
    """

    worker_id: str
    addr: str
    token: str = attrs.field(repr=False)
    kind: str = ""
    req: int | None = None

    @classmethod
    def from_payload(cls, data: object) -> WorkerOffer:
        """Read a ``node.worker`` payload's data.

        Raises:
            ValueError: it is not a valid offer.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a worker offer is a map, not {type(data).__name__}")
        wid, addr, token = data.get("worker_id"), data.get("addr"), data.get("token")
        if not isinstance(wid, str) or not ID_RE.fullmatch(wid):
            raise ValueError(f"bad worker_id {wid!r}")
        if not isinstance(addr, str):
            raise ValueError(f"bad addr {addr!r}")
        parse_url(addr)
        if not isinstance(token, str) or not token:
            raise ValueError("the offer has no token")
        kind = data.get("kind")
        req = data.get("req")
        return cls(
            worker_id=wid,
            addr=addr,
            token=token,
            kind=kind if isinstance(kind, str) else "",
            req=req if isinstance(req, int) and not isinstance(req, bool) else None,
        )


@asynccontextmanager
async def open_worker(
    offer: WorkerOffer,
    *,
    id: str,
    consumer: Machine | None = None,
    timeout: float = 5.0,
    **rpc_options: Any,
) -> AsyncIterator[Client]:
    """Connect to the worker of ``offer`` as client ``id`` and wait for the handshake.

    ``rpc_options`` go to ``am.rpc.connect`` (by default the link retries for up to
    5 s, then gives up).

    Raises:
        am.rpc.AuthError: the worker refused the token (another client id, a token used
            up or revoked).
        WorkerLostError: the worker could not be reached.
        trio.TooSlowError: no handshake within ``timeout`` seconds.
    """
    rpc_options.setdefault("reconnect", Backoff(initial=0.05, max=0.5, max_elapsed=5.0))
    # the failures are raised outside the link's block, so they are not wrapped in an
    # exception group by its nursery
    stack = AsyncExitStack()
    client = await stack.enter_async_context(
        rpc_connect(offer.addr, id=id, token=offer.token, consumer=consumer, **rpc_options)
    )

    def settled(clock: Mapping[str, int]) -> bool:
        return _active(clock, "Ready") or _active(clock, "ReconnectFailed")

    ready = failed = False
    err: object = None
    try:
        with trio.move_on_after(timeout):
            await client.rpc.when_query(settled)
        ready = client.rpc.is1("Ready")
        failed = client.rpc.is1("ReconnectFailed")
        err = client.rpc.err
    finally:
        if not ready:
            await stack.aclose()
    if not ready and not failed:
        raise trio.TooSlowError(f"no handshake with worker {offer.worker_id} within {timeout} s")
    if not ready:
        if isinstance(err, AuthError):
            raise err
        raise WorkerLostError(
            f"cannot reach worker {offer.worker_id} at {offer.addr}: {err}",
            worker_id=offer.worker_id,
            machine_id=client.rpc.id,
        )
    async with stack:
        yield client


class _Refused(Exception):
    """Internal: leave a worker link's block after a failed check."""


class _Answer:
    __slots__ = ("event", "payload")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.payload: Payload | None = None


class _Handlers:
    def __init__(self, nc: NodeClient) -> None:
        self._nc = nc

    def ServerPayload_state(self, e: Event) -> None:
        p = e.args.get("payload")
        if isinstance(p, Payload):
            self._nc._on_payload(p)


class NodeClient:
    """A client of a worker pool; create it with :func:`connect`.

    Attributes:
        id: the client id, used with the supervisor and with the worker.
        kind: the worker kind.
        mach: the client's machine (:data:`~trio_am.node.CLIENT_SCHEMA`); it is also
            the consumer of both links and passes every payload on to ``consumer``.
        consumer: the application's payload consumer, or None.
        worker_schema: the schema the worker must show (normalised).
        auto_reassign: get a new worker when the current one is lost.
    """

    def __init__(
        self,
        super_urls: str | Sequence[str],
        kind: str,
        worker_schema: SchemaLike,
        *,
        consumer: Machine | None = None,
        auto_reassign: bool = True,
        id: str | None = None,
        heartbeat: float = 5.0,
        blacklist: float = 30.0,
        super_retry: float = 5.0,
        resume_timeout: float = 5.0,
        request_timeout: float = 30.0,
        call_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        backoff: Backoff | None = None,
    ) -> None:
        urls = [super_urls] if isinstance(super_urls, str) else list(super_urls)
        if not urls:
            raise ValueError("super_urls is empty: give at least one supervisor URL")
        for url in urls:
            parse_url(url)
        self.super_urls = urls
        self.kind = check_kind(kind)
        if not isinstance(worker_schema, Mapping):
            raise SchemaError(f"worker_schema must be a schema mapping, not {worker_schema!r}")
        self.worker_schema = normalize_schema(worker_schema)
        if id is None:
            id = f"node-{secrets.token_hex(4)}"
        if not isinstance(id, str) or not ID_RE.fullmatch(id):
            raise ValueError(f"a client id must match [A-Za-z0-9._-]{{1,128}}, not {id!r}")
        self.id = id
        if consumer is not None and "ServerPayload" not in consumer.state_names:
            raise SchemaError(
                "the consumer needs the multi state ServerPayload (am.rpc.CONSUMER_SCHEMA)",
                machine_id=consumer.id,
            )
        self.consumer = consumer
        self.auto_reassign = auto_reassign
        for name, value in (
            ("heartbeat", heartbeat),
            ("blacklist", blacklist),
            ("super_retry", super_retry),
            ("resume_timeout", resume_timeout),
            ("request_timeout", request_timeout),
            ("call_timeout", call_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        self.heartbeat = float(heartbeat)
        self.blacklist = float(blacklist)
        self.super_retry = float(super_retry)
        self.resume_timeout = float(resume_timeout)
        self.request_timeout = float(request_timeout)
        self.call_timeout = float(call_timeout)
        self.connect_timeout = float(connect_timeout)
        self.backoff = backoff or Backoff(initial=0.1, max=2.0)
        self.mach = Machine(
            CLIENT_SCHEMA,
            id=f"nc-{id}",
            handlers=_Handlers(self),
            states=ClientStates,
            tags=("node-client", f"kind:{self.kind}"),
        )
        #: The supervisor link, while one is up.
        self.super_client: Client | None = None
        #: The URL of the supervisor in use.
        self.super_url: str | None = None
        #: The worker link, while one is up.
        self.worker_client: Client | None = None
        #: The assigned worker's offer.
        self.offer: WorkerOffer | None = None
        #: URL -> the time (``trio.current_time()``) it may be tried again.
        self.blacklisted: dict[str, float] = {}
        self._answers: dict[int, _Answer] = {}
        self._req = 0
        self._last_reason = ""
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._gone: dict[str, trio.Event] = {}
        self._link_scope: trio.CancelScope | None = None
        self._link_done: trio.Event | None = None
        self._super_scope: trio.CancelScope | None = None
        self._super_done: trio.Event | None = None
        self._closing = False

    # -------------------------------------------------------------- views
    @property
    def supervisor(self) -> NetMachine | None:
        """The mirror of the supervisor in use, or None."""
        return self.super_client.mach if self.super_client is not None else None

    @property
    def worker(self) -> NetMachine | None:
        """The mirror of the assigned worker (mutate it to give work), or None."""
        return self.worker_client.mach if self.worker_client is not None else None

    @property
    def worker_id(self) -> str | None:
        """The assigned worker's id, or None."""
        return self.offer.worker_id if self.offer is not None else None

    # -------------------------------------------------------------- requests
    async def request_worker(self, *, timeout: float | None = None) -> NetMachine:
        """Get a worker from the supervisor and connect to it; returns its mirror
        (also :attr:`worker`). With a worker already assigned and ready, returns it.

        Blocks until the worker is ``Ready`` (the client reaches ``WorkerReady``, then
        ``Ready``), backing off while the supervisor has none free.

        Raises:
            NoWorkerError: ``max_per_client`` (at once), or nothing within ``timeout``
                seconds (default ``request_timeout``); ``reason`` says why.
            SchemaError: the worker does not show every state of ``worker_schema``.
        """
        limit = self.request_timeout if timeout is None else timeout
        async with self._lock:
            current = self.worker
            if current is not None and self.mach.is1("WorkerReady"):
                return current
            self.mach.add1("WorkerRequested")
            try:
                with trio.move_on_after(limit):
                    return await self._request()
            finally:
                if not self.mach.is1("WorkerReady"):
                    self.mach.remove1("WorkerRequested")
        reason = self._last_reason or "timeout"
        raise NoWorkerError(
            f"no {self.kind!r} worker within {limit} s (last: {reason})",
            reason=reason,
            machine_id=self.mach.id,
        )

    async def release_worker(self) -> None:
        """Let the assigned worker go (the worker link says goodbye); no-op without one.
        With ``Pool(recycle=True)`` the supervisor then replaces that worker."""
        scope = self._link_scope
        if scope is not None:
            scope.cancel()
            await self.mach.when1("WorkerDisconnected")

    async def _supervisor(self) -> Client:
        while True:
            client = self.super_client
            if client is not None and self.mach.is1("SuperReady"):
                return client
            self._last_reason = "no_supervisor"
            await self.mach.when1("SuperReady")

    async def _request(self) -> NetMachine:
        attempt = 0
        while True:
            if attempt:
                await trio.sleep(self.backoff.delay(attempt - 1))
            attempt += 1
            client = await self._supervisor()
            self._req += 1
            req = self._req
            answer = self._answers[req] = _Answer()
            try:
                try:
                    res = await client.mach.add1_remote("ProvideWorker", {"req": req})
                except (RpcError, trio.TooSlowError) as exc:
                    _log.info("%s: ProvideWorker failed: %s", self.mach.id, exc)
                    self._last_reason = "no_supervisor"
                    continue
                if res == Result.CANCELED:
                    self._last_reason = "refused"
                    continue
                with trio.move_on_after(self.call_timeout):
                    await answer.event.wait()
            finally:
                self._answers.pop(req, None)
            p = answer.payload
            if p is None:
                self._last_reason = "timeout"
                continue
            data = p.data if isinstance(p.data, Mapping) else {}
            if p.name == _pool.NO_WORKER:
                reason = str(data.get("reason") or "none_free")
                self._last_reason = reason
                if reason == "max_per_client":
                    raise NoWorkerError(
                        f"this client ({self.id}) holds its maximum of workers",
                        reason=reason,
                        machine_id=self.mach.id,
                    )
                continue
            try:
                offer = WorkerOffer.from_payload(data)
            except ValueError as exc:
                _log.warning("%s: bad worker offer: %s", self.mach.id, exc)
                self._last_reason = "refused"
                continue
            nursery = self._nursery
            assert nursery is not None
            try:
                mirror: NetMachine = await nursery.start(self._worker_link, offer)
            except (AuthError, WorkerLostError, trio.TooSlowError) as exc:
                _log.info("%s: worker %s unusable: %s", self.mach.id, offer.worker_id, exc)
                self._last_reason = "none_free"
                self._report(offer.worker_id, f"cannot connect: {exc}")
                continue
            return mirror

    def _report(self, worker_id: str, reason: str) -> None:
        sup = self.supervisor
        if sup is not None and not sup.disposed and self.mach.is1("SuperReady"):
            sup.add1("WorkerIssues", {"worker_id": worker_id, "reason": reason[:200]})

    # -------------------------------------------------------------- payloads
    def _on_payload(self, p: Payload) -> None:
        sup = self.supervisor
        if p.name.startswith("node.") and sup is not None and p.source == sup.remote_id:
            data = p.data if isinstance(p.data, Mapping) else {}
            if p.name in (_pool.WORKER, _pool.NO_WORKER):
                req = data.get("req")
                answer = self._answers.get(req) if isinstance(req, int) else None
                if answer is not None and not answer.event.is_set():
                    answer.payload = p
                    answer.event.set()
            elif p.name == _pool.WORKER_GONE:
                wid = data.get("worker_id")
                ev = self._gone.get(wid) if isinstance(wid, str) else None
                if ev is not None:
                    ev.set()
        consumer = self.consumer
        if consumer is not None and not consumer.disposed:
            consumer.add1("ServerPayload", {"payload": p})

    # -------------------------------------------------------------- the worker link
    async def _worker_link(
        self, offer: WorkerOffer, task_status: trio.TaskStatus[NetMachine]
    ) -> None:
        mach = self.mach
        gone = self._gone[offer.worker_id] = trio.Event()
        done = self._link_done = trio.Event()
        lost = ""
        problem: BaseException | None = None
        mach.add1("WorkerConnecting")
        try:
            async with open_worker(
                offer,
                id=self.id,
                consumer=mach,
                timeout=self.connect_timeout + self.call_timeout,
                heartbeat=self.heartbeat,
                call_timeout=self.call_timeout,
                connect_timeout=self.connect_timeout,
                reconnect=Backoff(initial=0.05, max=0.5, max_elapsed=self.resume_timeout),
            ) as client:
                with trio.move_on_after(self.call_timeout):
                    await client.mach.when1("Ready")
                missing = [n for n in self.worker_schema if n not in client.mach.state_names]
                if not client.mach.is1("Ready"):
                    problem = WorkerLostError(
                        f"worker {offer.worker_id} is not Ready",
                        worker_id=offer.worker_id,
                        machine_id=mach.id,
                    )
                elif missing:
                    problem = SchemaError(
                        f"worker {offer.worker_id} lacks states of worker_schema: {missing}",
                        machine_id=mach.id,
                    )
                if problem is not None:
                    raise _Refused  # leave the link's block (it says goodbye)
                self.worker_client = client
                self.offer = offer
                mach.add1("WorkerConnected")
                mach.add1("WorkerReady")
                with trio.CancelScope() as scope:
                    self._link_scope = scope
                    task_status.started(client.mach)
                    lost = await self._watch(client, gone)
                self._link_scope = None
                if lost:
                    err = WorkerLostError(
                        f"worker {offer.worker_id} lost: {lost}",
                        worker_id=offer.worker_id,
                        machine_id=mach.id,
                    )
                    mach.add_err_state("ErrWorker", err, {"worker_id": offer.worker_id})
                    client._fail_all(OutcomeUnknownError, f"worker {offer.worker_id} lost: {lost}")
                    if not gone.is_set():
                        self._report(offer.worker_id, lost)
        except* _Refused:
            pass
        finally:
            done.set()
            self._gone.pop(offer.worker_id, None)
            self._link_scope = None
            if self.offer is offer:
                self.offer = None
                self.worker_client = None
            if not mach.disposed:
                mach.add1("WorkerDisconnected")
        if problem is not None:
            raise problem
        if lost and self.auto_reassign and not self._closing and self._nursery is not None:
            self._nursery.start_soon(self._reassign, offer.worker_id)

    async def _watch(self, client: Client, gone: trio.Event) -> str:
        """Follow the worker link; return why the worker is lost (never "" here: a
        release cancels this)."""
        rpc = client.rpc
        mach = self.mach

        async def link_down() -> None:
            await rpc.when_query(lambda c: not _active(c, "HandshakeDone"))

        async def link_settled() -> None:
            await rpc.when_query(
                lambda c: _active(c, "HandshakeDone") or _active(c, "ReconnectFailed")
            )

        while True:
            if await _first(link_down, gone.wait) == 1:
                return "the supervisor reports it gone"
            if rpc.is1("ReconnectFailed"):
                return "its link failed"
            mach.add1("WorkerConnecting")
            which = -1
            with trio.move_on_after(self.resume_timeout):
                which = await _first(link_settled, gone.wait)
            if which < 0:
                return f"its link did not resume within {self.resume_timeout} s"
            if which == 1:
                return "the supervisor reports it gone"
            if rpc.is1("ReconnectFailed"):
                return "its link failed"
            mach.add1("WorkerConnected")
            mach.add1("WorkerReady")

    async def _reassign(self, old: str) -> None:
        while not self._closing:
            try:
                await self.request_worker()
            except NoWorkerError as exc:
                _log.info("%s: reassigning: %s", self.mach.id, exc)
                if exc.reason == "max_per_client":
                    self.mach.add_err_state("ErrWorker", exc)
                    return
                continue
            except (SchemaError, RpcError) as exc:
                self.mach.add_err_state("ErrWorker", exc)
                return
            self.mach.add1("WorkerReassigned", {"old": old, "new": self.worker_id})
            return

    # -------------------------------------------------------------- the supervisor link
    def _next_url(self) -> str | None:
        now = trio.current_time()
        for url in self.super_urls:
            if self.blacklisted.get(url, -math.inf) <= now:
                return url
        return None

    def _ban(self, url: str, err: BaseException) -> None:
        _log.info("%s: supervisor %s skipped for %s s: %s", self.mach.id, url, self.blacklist, err)
        self.blacklisted[url] = trio.current_time() + self.blacklist
        self.mach.add_err_state("ErrSupervisor", err, {"url": url})

    async def _super_loop(self) -> None:
        while not self._closing:
            url = self._next_url()
            if url is None:
                await trio.sleep_until(min(self.blacklisted.values()))
                continue
            await self._super_session(url)

    async def _super_session(self, url: str) -> None:
        mach = self.mach
        mach.add1("SuperConnecting")
        done = self._super_done = trio.Event()
        try:
            async with rpc_connect(
                url,
                id=self.id,
                consumer=mach,
                heartbeat=self.heartbeat,
                call_timeout=self.call_timeout,
                connect_timeout=self.connect_timeout,
                reconnect=Backoff(initial=0.05, max=1.0, max_elapsed=self.super_retry),
            ) as client:
                rpc = client.rpc

                async def settled() -> None:
                    await rpc.when_query(
                        lambda c: _active(c, "HandshakeDone") or _active(c, "ReconnectFailed")
                    )

                await settled()
                if not rpc.is1("HandshakeDone"):
                    self._ban(url, NodeError(f"cannot reach {url}: {rpc.err}"))
                    return
                try:
                    info = await client.get(_pool.GETTER_KIND)
                except (RpcError, trio.TooSlowError) as exc:
                    self._ban(url, NodeError(f"{url} is not a node supervisor: {exc}"))
                    return
                kind = info.get("kind") if isinstance(info, Mapping) else None
                if kind != self.kind:
                    self._ban(url, NodeError(f"{url} supervises {kind!r}, not {self.kind!r}"))
                    return
                self.super_client = client
                self.super_url = url
                try:
                    with trio.CancelScope() as self._super_scope:
                        await self._follow_super(url, rpc, settled)
                finally:
                    self.super_client = None
                    self._super_scope = None
        finally:
            done.set()
            if not mach.disposed:
                mach.add1("SuperDisconnected")

    async def _follow_super(
        self, url: str, rpc: Machine, settled: Callable[[], Awaitable[None]]
    ) -> None:
        mach = self.mach
        while True:
            mach.add1("SuperConnected")
            mach.add1("SuperReady")
            await rpc.when_query(lambda c: not _active(c, "HandshakeDone"))
            if rpc.is1("ReconnectFailed"):
                break
            mach.add1("SuperConnecting")
            await settled()
            if rpc.is1("ReconnectFailed"):
                break
        self._ban(url, NodeError(f"lost the supervisor at {url}: {rpc.err}"))

    async def _aclose(self) -> None:
        """Leave both links through their blocks, so that each says goodbye (a link
        cancelled from outside would just drop)."""
        self._closing = True
        for scope, done in (
            (self._link_scope, self._link_done),
            (self._super_scope, self._super_done),
        ):
            if scope is not None:
                scope.cancel()
            if done is not None:
                await done.wait()


@asynccontextmanager
async def connect(
    super_urls: str | Sequence[str],
    kind: str,
    worker_schema: SchemaLike,
    *,
    consumer: Machine | None = None,
    auto_reassign: bool = True,
    **options: Any,
) -> AsyncIterator[NodeClient]:
    """Be a client of a pool of ``kind`` workers for the block.

    Returns at once; the supervisor link comes up in the background (``SuperReady`` on
    ``nc.mach``). Call :meth:`NodeClient.request_worker` for a worker. Leaving the
    block says goodbye to the worker (which frees it) and to the supervisor.

    Args:
        super_urls: one supervisor URL or several, tried in order.
        kind: the worker kind.
        worker_schema: the schema a worker must show (each of its states).
        consumer: a machine with ``ServerPayload`` (multi): every payload, from the
            supervisor and from the worker, is passed on to it.
        auto_reassign: get a new worker when the current one is lost.
        options: ``id`` (the client id, default ``node-<hex>``), ``heartbeat`` (of
            both links, 5 s), ``blacklist`` (seconds a failed supervisor is skipped,
            30), ``super_retry`` (seconds a supervisor link retries before it counts as
            failed, 5), ``resume_timeout`` (5), ``request_timeout`` (30),
            ``call_timeout`` (5), ``connect_timeout`` (3), ``backoff`` (an
            ``am.rpc.Backoff`` for asking again).

    Raises:
        ValueError: no URL, a bad URL, kind, id or option.
        SchemaError: a bad ``worker_schema``, or a consumer without ``ServerPayload``.
    """
    nc = NodeClient(
        super_urls, kind, worker_schema, consumer=consumer, auto_reassign=auto_reassign, **options
    )
    async with nc.mach, trio.open_nursery() as nursery:
        nc._nursery = nursery
        nc.mach.add1("Start")
        nursery.start_soon(nc._super_loop)
        try:
            yield nc
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await nc._aclose()
            nursery.cancel_scope.cancel()
