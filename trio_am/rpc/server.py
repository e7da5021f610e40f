"""The aRPC server: serves one machine (the *state source*) to many clients (arpc.md B).

Each connection runs a :class:`_Session` in its own nursery: a reader task that checks
and applies frames strictly in order, and one writer task that does all the writing
(queued frames first, then a clock push when the source changed and the push interval
has passed). Deltas are computed at send time, so a slow reader gets merged deltas,
never a backlog. Sessions outlive their connection for ``session_ttl`` seconds and can
be resumed; nothing a peer sends can stop the server, its other sessions, or touch the
source beyond the mutations its grant allows.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import ssl
from collections import OrderedDict, deque
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import msgpack
import trio

from .._core._engine import Engine
from .._core._types import MutSource
from .._runtime._machine import Machine
from . import _codec
from .auth import ALL, FULL_GRANT, Grant
from .errors import (
    WS_CLOSE_CODES,
    ArgsEncodeError,
    DeliveryError,
    ErrorCode,
    PayloadTooLargeError,
    RpcError,
)
from .netmachine import NetMachine
from .protocol import (
    FLAG_ERROR,
    FLAG_NO_RESULT,
    ID_RE,
    PROTO,
    ClockView,
    Frame,
    FrameError,
    Kind,
    parse_client_frame,
    schema_hash,
    wire_schema,
)
from .states import SERVER_SCHEMA
from .transport import EmptyFrame, FrameStream, FrameTooLarge, StreamClosed, serve_streams

__all__ = ["Payload", "Server", "SessionInfo", "SessionStats", "serve", "serve_stream"]

_log: Final = logging.getLogger("trio_am.rpc")
_RESULT_CACHE: Final = 1024
_MUTS_LOG: Final = 10_000
_NON_ABUSE: Final = frozenset({ErrorCode.FORBIDDEN, ErrorCode.UNSUPPORTED, ErrorCode.INTERNAL})
AuthFn = Callable[[str, str | None, str], Awaitable[Grant | None]]
Getter = Callable[["SessionInfo", Mapping[str, Any] | None], Any]


@attrs.frozen
class Payload:
    """A payload sent by a server to a client's consumer (arpc.md B8).

    Attributes:
        name: what it is (e.g. ``"mypayload"``).
        data: any encodable value.
        source: the id of the machine that sent it.
        source_tx: the id of the transition it was sent from ("" outside one).
        dest: the client id it was addressed to, or None for a broadcast.
        token: the delivery token.
    """

    name: str
    data: Any
    source: str
    source_tx: str = ""
    dest: str | None = None
    token: int = 0


@attrs.frozen
class SessionInfo:
    """A read-only view of one session.

    Attributes:
        sid: the session id (32 hex characters, as sent in WELCOME).
        client_id: the HELLO id.
        peer: the remote address of the current (or last) connection.
        seq: the last ``seq`` sent.
        ack: the last request handled.
        connected: whether a connection is attached now.
        grant: the session's :class:`~trio_am.rpc.Grant`.
    """

    sid: str
    client_id: str
    peer: str
    seq: int
    ack: int
    connected: bool
    grant: Grant


@attrs.define
class SessionStats:
    """Counters of one session (across its connections)."""

    frames_in: int = 0
    frames_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    outbound_frames: int = 0
    clock_frames: int = 0
    errors_sent: int = 0
    connections: int = 0


def _request_of(data: bytes, code: int) -> tuple[int, int | None]:
    """For a frame that failed to decode: the code to answer with and the request id.

    Only for a request (``[kind, req, ...]``) that is whole, valid msgpack, refused by
    the checks after unpacking (nesting depth, map keys, typed args): the caller's
    request then fails instead of waiting. Too deep a MUTATE is ``BAD_ARGS`` (only its
    args can nest). Anything else names no request."""
    kind = _codec.frame_kind(data)
    if kind not in (Kind.MUTATE, Kind.GET, Kind.SYNC):
        return code, None
    try:
        unpacker = msgpack.Unpacker(max_buffer_size=len(data))
        unpacker.feed(data)
        n = unpacker.read_array_header()
        if n < 2:
            return code, None
        unpacker.skip()
        req = unpacker.unpack()
        for _ in range(n - 2):
            unpacker.skip()
        if unpacker.tell() != len(data):
            return code, None
    except Exception:
        return code, None
    if type(req) is not int or not 0 < req < 2**53:
        return code, None
    if kind == Kind.MUTATE and code == ErrorCode.MALFORMED:
        code = ErrorCode.BAD_ARGS
    return code, req


class _Closing(Exception):
    """End the connection (after the ERROR frame, if any, was written)."""

    def __init__(self, code: int = 0, message: str = "", ws_code: int = 1000) -> None:
        super().__init__(message)
        self.code = code
        self.ws_code = ws_code


class _Session:
    """Server-side state of one client session (survives its connections)."""

    def __init__(
        self,
        server: Server,
        client_id: str,
        peer: str,
        grant: Grant,
        hello: Mapping[str, Any],
    ) -> None:
        self.server = server
        self.sid = secrets.token_hex(16)
        self.client_id = client_id
        self.peer = peer
        self.grant = grant
        self._allow = hello.get("allow")
        self._skip = hello.get("skip") or ()
        self.names: list[str] = []
        self.view = ClockView([], [], bool(hello.get("shallow")))
        self.layout()
        push = hello.get("push")
        self.push_interval = server._clamp_push(push)
        self.muts = bool(hello.get("muts"))
        self.muts_log: deque[tuple[int, list[int], list[int], int, int]] = deque()
        self.muts_overflow = False
        self.seq = 0
        self.ack = 0
        self.last_req = 0
        self.results: OrderedDict[int, int] = OrderedDict()
        self.outbound: deque[Any] = deque()
        self.wake = trio.Event()
        self.drained = trio.Event()
        self.send_cost = 0.0
        self.write_scope: trio.CancelScope | None = None
        self.dirty = False
        self.last_delta = -math.inf
        self.stats = SessionStats()
        self.scope: trio.CancelScope | None = None
        self.conn_done: trio.Event | None = None
        self.stream: FrameStream | None = None
        self.expires = math.inf
        self.ended = False
        self.errors: deque[float] = deque()
        self.payload_waits: dict[int, tuple[trio.Event, list[Any]]] = {}
        self.last_recv = 0.0

    def layout(self) -> bool:
        """Map the session's states onto the source's current schema. False when the
        source dropped or reordered states the session shows (``SOURCE_GONE``)."""
        server = self.server
        src = server.source
        grant = self.grant
        names = src.state_names
        readable = [n for n in names if server._visible(n) and grant.can_read(n)]
        if "Exception" not in readable and "Exception" in names:
            readable.append("Exception")
            readable.sort(key=names.index)
        if readable[: len(self.names)] != self.names:
            return False
        self.names = readable
        self.index = {n: i for i, n in enumerate(readable)}
        self.src_idx = [names.index(n) for n in readable]
        allow = self._allow
        skip = self._skip
        tracked = [
            i for i, n in enumerate(readable) if (allow is None or n in allow) and n not in skip
        ]
        view = self.view
        view.src_idx = self.src_idx
        view.tracked = tracked
        view.base = view.base + [0] * (len(readable) - len(view.base))
        self.mutable = {i for i, n in enumerate(readable) if grant.can_mutate(n)}
        self.compiled = src._c
        return True

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.sid,
            self.client_id,
            self.peer,
            self.seq,
            self.ack,
            self.stream is not None,
            self.grant,
        )

    def push(self, frame: Any) -> None:
        self.outbound.append(frame)
        lim = self.server.limits
        if len(self.outbound) > lim.outbound_frames:
            raise _Closing(ErrorCode.OVERLOAD, "outbound queue full", 1013)
        self.wake.set()


class Server:
    """A running aRPC server; create it with :func:`serve`.

    Attributes:
        source: the machine served.
        rpc: the server's own machine (``rs-<source id>``, :data:`SERVER_SCHEMA`).
        urls: the bound URLs (real ports when 0 was asked for).
        epoch: a random id of this server run; clients see a new one after a restart.
    """

    def __init__(
        self,
        source: Engine,
        *,
        auth: AuthFn | None = None,
        expose: Iterable[str] | None = None,
        push_interval: float | None = 0.005,
        heartbeat: float | None = 5.0,
        handshake_timeout: float = 5.0,
        session_ttl: float = 60.0,
        write_timeout: float = 10.0,
        limits: _codec.Limits | None = None,
        args_types: Iterable[type[Any]] = (),
        strict_args: bool = True,
        id: str | None = None,
        parent: Engine | None = None,
    ) -> None:
        self.source = source
        self.rpc = Machine(
            SERVER_SCHEMA, id=f"rs-{id or source.id}", parent=parent or source, tags=("rpc-server",)
        )
        self.urls: list[str] = []
        self.epoch = secrets.token_hex(8)
        self.limits = limits or _codec.Limits()
        self._auth = auth
        self._expose = None if expose is None else frozenset(expose)
        self.push_interval = push_interval
        self.heartbeat = heartbeat
        self.handshake_timeout = handshake_timeout
        self.session_ttl = session_ttl
        self.write_timeout = write_timeout
        from ..args import args_key

        self.args_types: dict[str, type[Any]] = {args_key(t): t for t in args_types}
        self.strict_args = strict_args
        self._sessions: dict[str, _Session] = {}
        self._getters: dict[str, Getter] = {
            "args": lambda s, p: sorted(self.args_types),
            "export": lambda s, p: self._export(s),
            "tags": lambda s, p: list(self.source.tags),
        }
        self._nursery: trio.Nursery | None = None
        self._token = 0
        self._stop_change: Callable[[], None] | None = None
        self._gone = False
        self.ssl_context: ssl.SSLContext | None = None

    # -------------------------------------------------------------- public API
    @property
    def sessions(self) -> list[SessionInfo]:
        """Read-only views of the live sessions."""
        return [s.info() for s in self._sessions.values() if not s.ended]

    def session_stats(self, sid: str) -> SessionStats:
        """Counters of session ``sid`` (a copy)."""
        s = self._sessions[sid]
        s.stats.outbound_frames = len(s.outbound)
        return attrs.evolve(s.stats)

    def add_getter(self, name: str, fn: Getter) -> None:
        """Answer GET ``name`` with ``fn(session_info, params)`` (sync or async)."""
        self._getters[name] = fn

    def send_payload_nowait(
        self, name: str, data: Any = None, *, dest: str | None = None, source: str | None = None
    ) -> int:
        """Send a payload without waiting; returns how many sessions it was queued for.
        The outcome adds ``PayloadDelivered`` or ``ErrDelivery`` to :attr:`rpc`.

        With ``dest`` None inside a transition caused by a remote mutation, it goes back
        to that session only (the getter flow); otherwise to every session allowed
        payloads (or to the sessions of client ``dest``). ``source`` overrides the
        payload's source (default: the served machine's id), e.g. to forward a payload
        received from another machine unchanged.

        Raises:
            PayloadTooLargeError: the payload exceeds the frame limit.
            ArgsEncodeError: ``data`` cannot be encoded.
        """
        targets, frames = self._payload_frames(name, data, dest, source)
        for sess, token, frame in frames:
            self._start_payload(sess, token, frame, None)
        return len(targets)

    async def send_payload(
        self,
        name: str,
        data: Any = None,
        *,
        dest: str | None = None,
        source: str | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Send a payload and wait for every acknowledgement; returns the count.
        ``dest`` and ``source`` are as for :meth:`send_payload_nowait`.

        Raises:
            DeliveryError: a client refused it, or no ack came within ``timeout``.
            PayloadTooLargeError, ArgsEncodeError: before anything is sent.
        """
        _, frames = self._payload_frames(name, data, dest, source)
        waits = []
        for sess, token, frame in frames:
            ev = trio.Event()
            box: list[Any] = []
            self._start_payload(sess, token, frame, (ev, box))
            waits.append((sess, token, ev, box))
        with trio.move_on_after(timeout) as cs:
            for _sess, _token, ev, _box in waits:
                await ev.wait()
        if cs.cancelled_caught:
            for sess, token, _ev, _box in waits:
                sess.payload_waits.pop(token, None)
            raise DeliveryError(
                f"payload {name!r}: no ack within {timeout}s", machine_id=self.rpc.id
            )
        for _sess, _token, _ev, box in waits:
            ok, code = box[0]
            if not ok:
                raise DeliveryError(
                    f"payload {name!r} refused by the client",
                    code=code or ErrorCode.PAYLOAD,
                    machine_id=self.rpc.id,
                )
        return len(waits)

    async def serve_stream(self, stream: FrameStream) -> None:
        """Serve one already open :class:`FrameStream` (e.g. from a relay) until it ends."""
        await self._handle(stream)

    # -------------------------------------------------------------- internals
    def _visible(self, name: str) -> bool:
        return self._expose is None or name in self._expose or name == "Exception"

    def _clamp_push(self, push: object) -> float | None:
        base = self.push_interval
        if base is None:
            return None
        if isinstance(push, (int, float)) and not isinstance(push, bool) and push >= 0:
            return max(base, min(float(push), 60.0))
        return base

    def _export(self, s: SessionInfo) -> dict[str, Any]:
        sess = self._sessions.get(s.sid)
        data = self.source.export()
        if sess is not None:
            ticks = self.source._ticks
            data["state_names"] = list(sess.names)
            data["time"] = [ticks[i] for i in sess.src_idx]
        return data

    def _on_change(self, m: Engine, before: Any, after: Any) -> None:
        for sess in self._sessions.values():
            if not sess.ended:
                sess.dirty = True
                sess.wake.set()

    def transition_end(self, tx: Any) -> None:
        """Tracer hook, bound only while a session wants one delta per mutation."""
        m = self.source
        mut = tx.mutation
        entry = None
        for sess in self._sessions.values():
            if not sess.muts or sess.ended:
                continue
            if len(sess.muts_log) >= _MUTS_LOG:
                sess.muts_overflow = True
                sess.muts_log.clear()
                continue
            if entry is None:
                entry = (
                    int(mut.type),
                    list(mut._called),
                    list(m._ticks),
                    m.queue_tick,
                    m.machine_tick,
                )
            back = {si: j for j, si in enumerate(sess.src_idx)}
            called = [back[i] for i in entry[1] if i in back]
            sess.muts_log.append((entry[0], called, entry[2], entry[3], entry[4]))

    def _payload_frames(
        self, name: str, data: Any, dest: str | None, source: str | None = None
    ) -> tuple[list[_Session], list[tuple[_Session, int, list[Any]]]]:
        src = self.source
        tx = src.transition
        tx_id = tx.id if tx is not None else ""
        targets: list[_Session]
        if (
            dest is None
            and tx is not None
            and tx.mutation.source is not None
            and tx.mutation.source.session_id
        ):
            sid = tx.mutation.source.session_id
            targets = [s for s in self._sessions.values() if s.sid == sid and not s.ended]
        elif dest is None:
            targets = [s for s in self._sessions.values() if not s.ended and s.grant.payloads]
        else:
            targets = [
                s
                for s in self._sessions.values()
                if not s.ended and s.client_id == dest and s.grant.payloads
            ]
        out = []
        size_checked = False
        for sess in targets:
            self._token += 1
            frame = [Kind.PAYLOAD, self._token, name, data, source or src.id, tx_id, dest]
            if not size_checked:
                size = len(_codec.encode(frame))
                if size > self.limits.frame:
                    raise PayloadTooLargeError(
                        f"payload {name!r} is {size} bytes, limit {self.limits.frame}",
                        machine_id=self.rpc.id,
                    )
                size_checked = True
            out.append((sess, self._token, frame))
        if not targets:
            _codec.encode(data)  # still report unencodable data
        return targets, out

    def _start_payload(
        self,
        sess: _Session,
        token: int,
        frame: list[Any],
        wait: tuple[trio.Event, list[Any]] | None,
    ) -> None:
        if wait is None:
            wait = (trio.Event(), [])
            nursery = self._nursery
            if nursery is not None:
                nursery.start_soon(self._await_payload, sess, token, wait)
        sess.payload_waits[token] = wait
        try:
            sess.push(frame)
        except _Closing:
            sess.outbound.pop()
            wait[1].append((False, ErrorCode.OVERLOAD))
            wait[0].set()

    async def _await_payload(
        self, sess: _Session, token: int, wait: tuple[trio.Event, list[Any]]
    ) -> None:
        with trio.move_on_after(5.0):
            await wait[0].wait()
        sess.payload_waits.pop(token, None)
        if wait[1] and wait[1][0][0]:
            self.rpc.add1("PayloadDelivered", {"token": token, "client": sess.client_id})
        else:
            self.rpc.add_err_state("ErrDelivery", DeliveryError(f"payload {token} not delivered"))

    def _peer_error(self, sess: _Session | None, code: int, msg: str) -> None:
        self.rpc.add1(
            "PeerError",
            {"code": int(code), "msg": msg, "client": sess.client_id if sess else None},
        )

    # -------------------------------------------------------------- connection
    async def _handle(self, stream: FrameStream) -> None:
        sess: _Session | None = None
        try:
            sess = await self._handshake(stream)
            if sess is None:
                return
            await self._run_session(sess, stream)
        except _Closing as c:
            await self._close(stream, c, sess)
        except StreamClosed:
            pass
        except Exception:
            _log.exception("aRPC server %s: connection handler failed", self.rpc.id)
            await stream.aclose(1011, "internal error")
        finally:
            if not stream.closed:
                await stream.aclose()

    async def _close(self, stream: FrameStream, c: _Closing, sess: _Session | None) -> None:
        if c.code:
            frame = [Kind.ERROR, None, int(c.code), str(c), True]
            with trio.move_on_after(1.0):
                try:
                    await stream.send_frame(_codec.encode(frame))
                except (StreamClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            if sess is not None:
                sess.stats.errors_sent += 1
        await stream.aclose(c.ws_code, str(c)[:100])

    async def _handshake(self, stream: FrameStream) -> _Session | None:
        data = b""
        with trio.move_on_after(self.handshake_timeout) as cs:
            try:
                data = await stream.receive_frame()
            except (FrameTooLarge, EmptyFrame) as exc:
                self._peer_error(None, ErrorCode.HANDSHAKE, f"bad first frame: {exc}")
                raise _Closing(ErrorCode.HANDSHAKE, f"bad first frame: {exc}", 1002)
        if cs.cancelled_caught:
            self._peer_error(None, ErrorCode.HANDSHAKE, "no HELLO in time")
            raise _Closing(ErrorCode.HANDSHAKE, f"no HELLO within {self.handshake_timeout}s", 1002)
        try:
            obj = _codec.decode(data, limits=self.limits)
            frame = parse_client_frame(obj)
        except (_codec.DecodeError, FrameError) as exc:
            self._peer_error(None, ErrorCode.HANDSHAKE, str(exc))
            raise _Closing(ErrorCode.HANDSHAKE, f"expected HELLO: {exc}", 1002)
        if frame.kind != Kind.HELLO or frame.data is None:
            self._peer_error(None, ErrorCode.HANDSHAKE, "first frame is not HELLO")
            raise _Closing(ErrorCode.HANDSHAKE, "the first frame must be HELLO", 1002)
        hello = frame.data
        proto = hello.get("proto")
        if proto != PROTO:
            self._peer_error(None, ErrorCode.VERSION, f"proto {proto!r}")
            await stream.send_frame(
                _codec.encode(
                    [
                        Kind.ERROR,
                        None,
                        ErrorCode.VERSION,
                        f"unsupported protocol {proto!r}",
                        True,
                        {"supported": [PROTO]},
                    ]
                )
            )
            await stream.aclose(1002, "unsupported protocol")
            return None
        cid = hello.get("id")
        if not isinstance(cid, str) or not ID_RE.fullmatch(cid):
            self._peer_error(None, ErrorCode.HANDSHAKE, "bad HELLO id")
            raise _Closing(ErrorCode.HANDSHAKE, "HELLO id must match [A-Za-z0-9._-]{1,128}", 1002)
        token = hello.get("token")
        if token is not None and not isinstance(token, str):
            self._peer_error(None, ErrorCode.HANDSHAKE, "bad HELLO token")
            raise _Closing(ErrorCode.HANDSHAKE, "HELLO token must be a string", 1002)
        for key in ("allow", "skip"):
            v = hello.get(key)
            if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                self._peer_error(None, ErrorCode.HANDSHAKE, f"bad HELLO {key}")
                raise _Closing(ErrorCode.HANDSHAKE, f"HELLO {key} must be a list of names", 1002)
        grant: Grant | None = FULL_GRANT
        if self._auth is not None:
            try:
                grant = await self._auth(cid, token, stream.peer)
            except Exception:
                _log.exception("aRPC server %s: auth callable raised", self.rpc.id)
                grant = None
        if grant is None or (grant.client_ids is not None and cid not in grant.client_ids):
            self.rpc.add1("ClientRejected", {"client": cid, "peer": stream.peer})
            raise _Closing(ErrorCode.AUTH, "authentication refused", 1008)
        # resume?
        resume = hello.get("resume")
        sess = None
        resumed = False
        if isinstance(resume, dict):
            old = self._sessions.get(resume.get("sid"))  # type: ignore[arg-type]
            if (
                old is not None
                and not old.ended
                and resume.get("epoch") == self.epoch
                and old.client_id == cid
            ):
                sess = old
                resumed = True
                if sess.scope is not None:
                    sess.scope.cancel()
                if sess.conn_done is not None:
                    await sess.conn_done.wait()
        if sess is None:
            live = sum(1 for s in self._sessions.values() if not s.ended)
            if live >= self.limits.sessions:
                raise _Closing(ErrorCode.OVERLOAD, "too many sessions", 1013)
            sess = _Session(self, cid, stream.peer, grant, hello)
            self._sessions[sess.sid] = sess
            if sess.muts and self not in self.source.tracers:
                self.source.bind_tracer(self)
        sess.peer = stream.peer
        sess.stream = stream
        sess.expires = math.inf
        sess.stats.connections += 1
        sess.outbound.clear()
        sess.dirty = False
        await self._welcome(sess, stream, hello, resumed, resume if resumed else None)
        return sess

    async def _welcome(
        self,
        sess: _Session,
        stream: FrameStream,
        hello: Mapping[str, Any],
        resumed: bool,
        resume: Mapping[str, Any] | None,
    ) -> None:
        src = self.source
        time = self._snapshot(sess.view)
        sess.seq += 1
        wire = wire_schema(src.schema, sess.names)
        h = schema_hash(wire, sess.names)
        want_schema = hello.get("schema", True) is not False
        schema: Any = None
        if want_schema and hello.get("hash") != h:
            schema = wire
        lim = self.limits.to_wire()
        lim["hb"] = self.heartbeat
        lim["push"] = sess.push_interval
        welcome = {
            "proto": PROTO,
            "sid": sess.sid,
            "epoch": self.epoch,
            "resumed": resumed,
            "id": src.id,
            "parent": src.parent_id,
            "tags": list(src.tags),
            "names": list(sess.names),
            "schema": schema,
            "complete": len(sess.names) == len(src.state_names),
            "hash": h,
            "time": time,
            "qt": sess.view.qt,
            "mt": sess.view.mt,
            "seq": sess.seq,
            "ack": sess.ack,
            "limits": lim,
            "grant": sess.grant.to_wire(sess.names),
        }
        data = _codec.encode([Kind.WELCOME, welcome])
        # before WELCOME goes out: a client that is Ready finds HasClients already active
        self.rpc.add1("ClientConnected", {"client": sess.client_id, "sid": sess.sid})
        self.rpc.add1("HasClients")
        try:
            with trio.fail_after(self.write_timeout):
                await stream.send_frame(data)
        except BaseException:
            sess.stream = None
            sess.expires = trio.current_time() + self.session_ttl
            self._disconnected(sess)
            raise
        sess.stats.frames_out += 1
        sess.stats.bytes_out += len(data)
        sess.last_delta = trio.current_time()
        if resume is not None:
            pending = resume.get("pending") or []
            if isinstance(pending, list):
                for req in pending:
                    if isinstance(req, int) and 0 < req <= sess.ack:
                        res = sess.results.get(req, -1)
                        sess.outbound.append([Kind.RESULT, None, None, None, req, res])

    async def _run_session(self, sess: _Session, stream: FrameStream) -> None:
        sess.conn_done = done = trio.Event()
        sess.last_recv = trio.current_time()
        closing: _Closing | None = None
        try:
            async with trio.open_nursery() as nursery:
                sess.scope = nursery.cancel_scope

                async def guard(fn: Callable[[], Awaitable[None]]) -> None:
                    nonlocal closing
                    try:
                        await fn()
                    except _Closing as c:
                        closing = c
                    except (StreamClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    except trio.TooSlowError:
                        pass  # write timeout: drop the connection, keep the session
                    nursery.cancel_scope.cancel()

                nursery.start_soon(guard, lambda: self._reader(sess, stream))
                nursery.start_soon(guard, lambda: self._writer(sess, stream))
                if self.heartbeat:
                    nursery.start_soon(guard, lambda: self._watchdog(sess))
            if closing is not None:
                if closing.code == ErrorCode.TIMEOUT:
                    self._peer_error(sess, ErrorCode.TIMEOUT, "no heartbeat")
                await self._close(stream, closing, sess)
        finally:
            if sess.stream is stream:
                sess.stream = None
                sess.scope = None
                if not sess.ended:
                    sess.expires = trio.current_time() + self.session_ttl
                    if self._nursery is not None:
                        self._nursery.start_soon(self._expire_later, sess)
                self._disconnected(sess)
            done.set()

    def _disconnected(self, sess: _Session) -> None:
        self.rpc.add1("ClientDisconnected", {"client": sess.client_id, "sid": sess.sid})
        if not any(s.stream is not None for s in self._sessions.values()):
            self.rpc.remove1("HasClients")
        for wait in list(sess.payload_waits.values()):
            if not wait[0].is_set():
                wait[1].append((False, ErrorCode.PAYLOAD))
                wait[0].set()
        sess.payload_waits.clear()

    async def _expire_later(self, sess: _Session) -> None:
        while sess.stream is None and not sess.ended:
            delay = sess.expires - trio.current_time()
            if delay <= 0:
                sess.ended = True
                self._sessions.pop(sess.sid, None)
                return
            await trio.sleep(delay)

    async def _watchdog(self, sess: _Session) -> None:
        assert self.heartbeat
        # a little less than 3 heartbeats: a cut is reported within 3 heartbeats even
        # when the last frame arrived just before it (timer and scheduling jitter)
        limit = 3 * self.heartbeat * 0.95
        while True:
            left = sess.last_recv + limit - trio.current_time()
            if left <= 0:
                raise _Closing(ErrorCode.TIMEOUT, "no frame for 3 heartbeats", 1001)
            await trio.sleep(left)

    # -------------------------------------------------------------- reading
    async def _reader(self, sess: _Session, stream: FrameStream) -> None:
        lim = self.limits
        while True:
            while len(sess.outbound) >= lim.inflight:
                # backpressure (B10): answers pile up unread, so stop reading requests
                sess.drained = trio.Event()
                await sess.drained.wait()
            try:
                data = await stream.receive_frame()
            except FrameTooLarge as exc:
                sess.last_recv = trio.current_time()
                if exc.fatal:
                    raise _Closing(ErrorCode.TOO_LARGE, f"frame over {lim.hard_frame} bytes", 1009)
                self._error(sess, None, ErrorCode.TOO_LARGE, f"frame over {lim.frame} bytes")
                continue
            except EmptyFrame:
                sess.last_recv = trio.current_time()
                self._error(sess, None, ErrorCode.MALFORMED, "empty frame")
                continue
            sess.last_recv = trio.current_time()
            sess.stats.frames_in += 1
            sess.stats.bytes_in += len(data)
            try:
                obj = _codec.decode(
                    data, limits=lim, args_types=self.args_types, strict_args=self.strict_args
                )
                frame = parse_client_frame(obj)
            except _codec.DecodeError as exc:
                code, req = _request_of(data, exc.code)
                if req is not None and req > sess.last_req:
                    # a request refused as a whole: it is handled (acked), like a
                    # MUTATE refused after decoding, so the caller gets its answer
                    sess.last_req = sess.ack = req
                    self._cache(sess, req, 1)
                self._error(sess, req, code, str(exc))
                continue
            except FrameError as exc:
                self._error(sess, exc.req, exc.code, str(exc))
                continue
            try:
                await self._dispatch(sess, frame)
            except FrameError as exc:
                self._error(sess, exc.req, exc.code, str(exc))
            except (_Closing, StreamClosed, trio.Cancelled):
                raise
            except RpcError as exc:
                self._error(
                    sess,
                    frame.fields[0] if frame.fields else None,
                    exc.code or ErrorCode.INTERNAL,
                    str(exc),
                )
            except Exception as exc:
                _log.exception("aRPC server %s: frame %r failed", self.rpc.id, frame)
                req = frame.fields[0] if frame.fields and isinstance(frame.fields[0], int) else None
                self._error(sess, req, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    def _error(self, sess: _Session, req: int | None, code: int, msg: str) -> None:
        code = ErrorCode(code)
        sess.stats.errors_sent += 1
        sess.push([Kind.ERROR, req, int(code), msg, False])
        if code in _NON_ABUSE:
            return
        self._peer_error(sess, code, msg)
        now = trio.current_time()
        errs = sess.errors
        errs.append(now)
        while errs and errs[0] < now - self.limits.errors_window:
            errs.popleft()
        if len(errs) > self.limits.errors:
            raise _Closing(ErrorCode.ABUSE, "too many bad frames", 1008)

    async def _dispatch(self, sess: _Session, frame: Frame) -> None:
        kind = frame.kind
        f = frame.fields
        if kind == Kind.MUTATE:
            await self._mutate(sess, f)
        elif kind == Kind.PING:
            sess.push([Kind.PONG, f[0]])
        elif kind == Kind.PONG:
            pass
        elif kind == Kind.SYNC:
            self._take_req(sess, f[0])
            sess.ack = f[0]
            self.rpc.add1("MetricSync", {"client": sess.client_id})
            sess.push([Kind.SNAPSHOT, None, None, None, None, None, f[0]])
        elif kind == Kind.GET:
            await self._get(sess, f)
        elif kind == Kind.PAYLOAD_ACK:
            wait = sess.payload_waits.get(f[0])
            if wait is not None and not wait[0].is_set():
                wait[1].append((f[1], f[2]))
                wait[0].set()
        elif kind == Kind.BYE:
            sess.ended = True
            self._sessions.pop(sess.sid, None)
            raise _Closing(0, "bye", 1000)
        elif kind == Kind.ERROR:
            _log.info("aRPC server %s: client %s sent ERROR %s", self.rpc.id, sess.client_id, f)
        elif kind == Kind.HELLO:  # B11: a repeated HELLO is fatal (1002)
            self._peer_error(sess, ErrorCode.HANDSHAKE, "HELLO repeated")
            raise _Closing(ErrorCode.HANDSHAKE, "HELLO repeated", 1002)

    def _take_req(self, sess: _Session, req: int) -> None:
        if req <= sess.last_req:
            raise FrameError(ErrorCode.REQ_ORDER, f"request id {req} after {sess.last_req}", req)
        sess.last_req = req

    async def _mutate(self, sess: _Session, f: list[Any]) -> None:
        req, op, idxs, args, flags, src = f
        flags = flags or 0
        self._take_req(sess, req)
        sess.ack = req
        try:
            res = self._apply(sess, req, op, idxs, args, flags, src)
            if not isinstance(res, int):
                # a replica (NetMachine source): the answer comes from upstream; the
                # session waits for it, so its frames stay in order
                try:
                    res = await res
                except RpcError as exc:
                    raise FrameError(
                        ErrorCode.FORBIDDEN if exc.code in (7, 8) else ErrorCode.INTERNAL,
                        f"upstream: {exc}",
                        req,
                    ) from None
                except trio.TooSlowError:
                    raise FrameError(ErrorCode.INTERNAL, "upstream did not answer", req) from None
        except FrameError:
            self._cache(sess, req, 1)
            raise
        self._cache(sess, req, int(res))
        if not flags & FLAG_NO_RESULT:
            sess.push([Kind.RESULT, None, None, None, req, int(res)])

    def _cache(self, sess: _Session, req: int, res: int) -> None:
        sess.results[req] = res
        if len(sess.results) > _RESULT_CACHE:
            sess.results.popitem(last=False)

    def _apply(
        self, sess: _Session, req: int, op: int, idxs: list[int], args: Any, flags: int, src: Any
    ) -> int | Coroutine[Any, Any, int]:
        if op > 3:
            raise FrameError(ErrorCode.BAD_FIELD, f"MUTATE op {op} is not 0-3", req)
        n = len(sess.names)
        seen: set[int] = set()
        for i in idxs:
            if i >= n or i in seen:
                raise FrameError(
                    ErrorCode.UNKNOWN_STATE, f"state index {i} is unknown or repeated", req
                )
            seen.add(i)
        names = [sess.names[i] for i in idxs]
        refused = [sess.names[i] for i in idxs if i not in sess.mutable]
        source = self.source
        if op == 2:  # set also removes every active readable state it leaves out
            active = source._active
            for j, si in enumerate(sess.src_idx):
                if (active >> si) & 1 and j not in seen and j not in sess.mutable:
                    refused.append(sess.names[j])
        if flags & FLAG_ERROR:
            for extra in ("Exception", "ErrOnClient"):
                if extra in source.state_names and not sess.grant.can_mutate(extra):
                    refused.append(extra)
        if refused:
            raise FrameError(
                ErrorCode.FORBIDDEN, f"not granted: {', '.join(sorted(set(refused)))}", req
            )
        if args is not None:
            try:
                _codec.check_args(args, self.limits)
            except RpcError as exc:
                raise FrameError(ErrorCode.BAD_ARGS, str(exc), req)
        if src is not None:
            msrc = MutSource(src[0], src[1], src[2], sess.sid)
        else:
            msrc = MutSource(sess.client_id, "", 0, sess.sid)
        if flags & FLAG_ERROR:
            err_states = [n for n in ("Exception", "ErrOnClient") if n in source.state_names]
            names = list(dict.fromkeys([*names, *err_states]))
            op = 0
        if isinstance(source, NetMachine):
            called, _ = source._parse(names)
            fwd = [msrc.mach_id, msrc.tx_id, msrc.mach_time]
            return source._client._call(op, called, args, flags & FLAG_ERROR, fwd)
        return int(source.mutate(op, names, args, source=msrc))

    async def _get(self, sess: _Session, f: list[Any]) -> None:
        req, name, params = f
        self._take_req(sess, req)
        sess.ack = req
        fn = self._getters.get(name)
        if fn is None:
            raise FrameError(ErrorCode.UNSUPPORTED, f"unknown getter {name!r}", req)
        if sess.grant.getters is not ALL and name not in sess.grant.getters:
            raise FrameError(ErrorCode.FORBIDDEN, f"getter {name!r} not granted", req)
        value = fn(sess.info(), params)
        if hasattr(value, "__await__"):
            value = await value
        try:
            _codec.encode(value)
        except ArgsEncodeError as exc:
            raise FrameError(ErrorCode.INTERNAL, f"getter {name!r}: {exc}", req)
        sess.push([Kind.VALUE, req, value])

    # -------------------------------------------------------------- writing
    async def _writer(self, sess: _Session, stream: FrameStream) -> None:
        # one scope for the session's write timeout: each send moves its deadline (a
        # fresh fail_after per frame costs more than the rest of a small send)
        with trio.CancelScope() as scope:
            sess.write_scope = scope
            try:
                await self._writer_loop(sess, stream)
            finally:
                sess.write_scope = None
        if scope.cancelled_caught:
            raise trio.TooSlowError(f"a send took over {self.write_timeout}s")

    async def _writer_loop(self, sess: _Session, stream: FrameStream) -> None:
        src = self.source
        view = sess.view
        out = sess.outbound
        stats = sess.stats
        while True:
            if self._gone:
                raise _Closing(ErrorCode.SOURCE_GONE, "the source machine was disposed", 1011)
            if src._c is not sess.compiled:
                await self._schema_changed(sess, stream)
            if out:
                item = out.popleft()
                if len(out) < self.limits.inflight // 2:
                    sess.drained.set()
                kind = item[0]
                if kind == Kind.RESULT and item[1] is None:
                    d = self._delta(view)
                    if d is not None:
                        sess.seq += 1
                        sess.last_delta = trio.current_time()
                    item[1] = sess.seq
                    item[2] = sess.ack
                    item[3] = d
                elif kind == Kind.SNAPSHOT and item[1] is None:
                    sess.seq += 1
                    item[1] = sess.seq
                    item[2] = sess.ack
                    item[3] = self._snapshot(view)
                    item[4] = view.qt
                    item[5] = view.mt
                    sess.last_delta = trio.current_time()
                    sess.dirty = False
                await self._send(sess, stream, item)
                continue
            if sess.dirty and sess.push_interval is not None:
                now = trio.current_time()
                # a reader slower than the pushes gets fewer, merged deltas: the wait
                # also grows with the time the last push took to write
                # (a write that took under 1 ms is only other tasks' turn, not a slow link)
                cost = sess.send_cost
                due = sess.last_delta + max(sess.push_interval, 8 * cost if cost > 0.001 else 0.0)
                if now >= due:
                    sess.dirty = False
                    if sess.muts and sess.muts_overflow:
                        sess.muts_overflow = False
                        sess.muts_log.clear()
                        out.append([Kind.SNAPSHOT, None, None, None, None, None, None])
                        continue
                    if sess.muts and sess.muts_log:
                        entries = []
                        while sess.muts_log:
                            mtype, called, ticks, qt, mt = sess.muts_log.popleft()
                            d = view.delta(ticks, qt, mt)
                            if d is not None:
                                entries.append([mtype, called, d])
                        d = self._delta(view)
                        if d is not None:
                            entries.append([0, [], d])
                        if entries:
                            sess.seq += 1
                            sess.last_delta = now
                            stats.clock_frames += 1
                            await self._send(
                                sess, stream, [Kind.MUTATIONS, sess.seq, sess.ack, entries]
                            )
                        continue
                    d = self._delta(view)
                    if d is not None:
                        sess.seq += 1
                        sess.last_delta = now
                        stats.clock_frames += 1
                        t0 = trio.current_time()
                        await self._send(sess, stream, [Kind.CLOCK, sess.seq, sess.ack, d])
                        # decays by half per push, so one quick write does not forget
                        # a slow link
                        sess.send_cost = max(trio.current_time() - t0, sess.send_cost / 2)
                    continue
                with trio.move_on_after(due - now):
                    await self._wait(sess)
                continue
            await self._wait(sess)

    async def _schema_changed(self, sess: _Session, stream: FrameStream) -> None:
        """The source's schema grew: send SCHEMA (a snapshot too); a drop or a reorder
        of shown states ends the session with ``SOURCE_GONE`` (B6)."""
        before = len(sess.names)
        if not sess.layout():
            sess.ended = True
            raise _Closing(ErrorCode.SOURCE_GONE, "the source's states were reordered", 1011)
        if len(sess.names) == before:
            return
        time = self._snapshot(sess.view)
        sess.seq += 1
        sess.dirty = False
        wire = wire_schema(self.source.schema, sess.names)
        frame = [
            Kind.SCHEMA,
            {
                "names": list(sess.names),
                "schema": wire,
                "hash": schema_hash(wire, sess.names),
                "time": time,
                "qt": sess.view.qt,
                "mt": sess.view.mt,
                "seq": sess.seq,
            },
        ]
        await self._send(sess, stream, frame)

    def _delta(self, view: ClockView) -> list[Any] | None:
        src = self.source
        return view.delta(src._ticks, src.queue_tick, src.machine_tick)

    def _snapshot(self, view: ClockView) -> list[int]:
        src = self.source
        return view.snapshot(src._ticks, src.queue_tick, src.machine_tick)

    async def _wait(self, sess: _Session) -> None:
        if not sess.outbound:
            sess.wake = trio.Event()
            await sess.wake.wait()

    async def _send(self, sess: _Session, stream: FrameStream, frame: list[Any]) -> None:
        data = _codec.encode(frame)
        scope = sess.write_scope
        if scope is None:
            with trio.fail_after(self.write_timeout):
                await stream.send_frame(data)
        else:
            scope.deadline = trio.current_time() + self.write_timeout
            await stream.send_frame(data)
            scope.deadline = math.inf
        sess.stats.frames_out += 1
        sess.stats.bytes_out += len(data)

    # -------------------------------------------------------------- lifetime
    async def _run(
        self, urls: Sequence[str], task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.rpc.add1("Start")
            for url in urls:
                bound = await nursery.start(
                    functools.partial(
                        serve_streams,
                        url,
                        self._handle,
                        max_frame=self.limits.frame,
                        hard_frame=self.limits.hard_frame,
                        ssl_context=None if url.startswith("ws://") else self.ssl_context,
                    )
                )
                self.urls.append(bound)
            self.rpc.add1("Listening")
            task_status.started()
            # stay open with no URLs too (serve_stream): session expiry and payload
            # tasks are started here
            await trio.sleep_forever()

    async def _shutdown(self) -> None:
        for sess in list(self._sessions.values()):
            stream = sess.stream
            if stream is not None and not stream.closed:
                with trio.move_on_after(0.5):
                    try:
                        await stream.send_frame(
                            _codec.encode(
                                [Kind.ERROR, None, ErrorCode.SHUTDOWN, "server stopping", True]
                            )
                        )
                    except Exception:
                        pass
                    await stream.aclose(WS_CLOSE_CODES[ErrorCode.SHUTDOWN], "server stopping")
            sess.ended = True
        self.rpc.remove1("Start")


@asynccontextmanager
async def serve(
    mach: Engine,
    *urls: str,
    auth: AuthFn | None = None,
    expose: Iterable[str] | None = None,
    push_interval: float | None = 0.005,
    heartbeat: float | None = 5.0,
    handshake_timeout: float = 5.0,
    session_ttl: float = 60.0,
    limits: _codec.Limits | None = None,
    args_types: Iterable[type[Any]] = (),
    strict_args: bool = True,
    id: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **limit_kwargs: int,
) -> AsyncIterator[Server]:
    """Serve ``mach`` over aRPC at each URL (``ws://host:port`` or ``tcp://host:port``;
    port 0 picks a free one, see ``server.urls``).

    Args:
        mach: the state source (a ``Machine``, or a ``NetMachine`` for a replica tree).
        auth: ``async (client_id, token, peer) -> Grant | None``; None grants all.
        expose: the only states any client may see (``Exception`` always is).
        push_interval: minimum seconds between clock pushes (None: no pushes).
        heartbeat: a session with no frame for 3 heartbeats is closed (resumable).
        handshake_timeout: seconds to wait for HELLO.
        session_ttl: seconds a session can be resumed after its connection dropped.
        limits: frame and args limits; ``max_frame=`` / ``hard_frame=`` also work.
        args_types: typed-args classes that may arrive (others: ``BAD_ARGS``).
        strict_args: with False, unknown typed args arrive as ``RawArgs``.
        id: the server machine's id suffix (default: the source's id).
        ssl_context: a server-side TLS context, used by ``wss://`` URLs (which need
            one) and by ``tcp://`` URLs (TLS on); ``ws://`` URLs stay plain.

    Yields:
        The :class:`Server`, listening.
    """
    if limit_kwargs:
        mapping = {"max_frame": "frame", "hard_frame": "hard_frame", "max_args": "args"}
        kw = {mapping.get(k, k): v for k, v in limit_kwargs.items()}
        limits = attrs.evolve(limits or _codec.Limits(), **kw)
    server = Server(
        mach,
        auth=auth,
        expose=expose,
        push_interval=push_interval,
        heartbeat=heartbeat,
        handshake_timeout=handshake_timeout,
        session_ttl=session_ttl,
        limits=limits,
        args_types=args_types,
        strict_args=strict_args,
        id=id,
    )
    server.ssl_context = ssl_context
    stop = mach.on_change(server._on_change)

    def on_dispose(_id: str) -> None:
        server._gone = True
        for sess in server._sessions.values():
            sess.wake.set()

    mach.on_dispose(on_dispose)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server._run, list(urls))
            try:
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await server._shutdown()
                nursery.cancel_scope.cancel()
    finally:
        stop()
        if server in mach.tracers:
            mach.detach_tracer(server)
        server.rpc.dispose()


async def serve_stream(mach: Engine, stream: FrameStream, **kwargs: Any) -> None:
    """Serve ``mach`` on one open :class:`FrameStream` until it closes (a relay tunnel,
    a memory pair in tests). Takes the keyword arguments of :func:`serve`."""
    async with serve(mach, **kwargs) as server:
        await server.serve_stream(stream)
