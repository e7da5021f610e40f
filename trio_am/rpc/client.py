"""The aRPC client: connects, mirrors the source as a :class:`NetMachine`, sends
mutations, survives reconnects (arpc.md B5 to B9).

One task owns the connection: it dials, sends HELLO (with ``resume`` after a loss),
applies WELCOME, resends what the server has not acknowledged, then runs a reader, a
writer and a heartbeat until the link fails, and dials again with backoff. Request ids
grow by one and a resumed session replays cached results, so a mutation is applied at
most once within an epoch and exactly once across a resume; after a server restart
(a new epoch) the requests that were sent fail with ``OutcomeUnknownError``.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from .._core._mirror import apply_clock
from .._core._types import Result
from .._runtime._machine import Machine
from . import _codec
from .errors import (
    ConnectionLostError,
    ErrorCode,
    NotConnectedError,
    OutcomeUnknownError,
    ProtocolError,
    QueueResetError,
    RpcError,
    error_from_frame,
)
from .netmachine import NetMachine
from .protocol import (
    FLAG_NO_RESULT,
    PROTO,
    Frame,
    FrameError,
    Kind,
    Mirror,
    parse_server_frame,
)
from .server import Payload
from .states import CLIENT_ERRORS, CLIENT_SCHEMA
from .transport import EmptyFrame, FrameStream, FrameTooLarge, StreamClosed, connect_stream

__all__ = ["Backoff", "Client", "attach", "connect"]

_log: Final = logging.getLogger("trio_am.rpc")
_WRITE_TIMEOUT: Final = 10.0  # a send blocked longer drops the connection (B9)
#: A peer is dead after ``3 * heartbeat * _DEAD_MARGIN`` seconds of silence (B9): a
#: little less than 3 heartbeats, so that a cut is reported within 3 heartbeats even
#: when the last frame arrived just before it (timer and scheduling jitter).
_DEAD_MARGIN: Final = 0.95


@attrs.frozen
class Backoff:
    """Reconnect delays: ``initial``, then times ``factor`` up to ``max`` seconds, with
    ``jitter`` (a fraction, ±), giving up after ``max_elapsed`` seconds of trying."""

    initial: float = 0.25
    factor: float = 2.0
    max: float = 10.0
    jitter: float = 0.1
    max_elapsed: float = 300.0

    def delay(self, attempt: int) -> float:
        """The wait before attempt ``attempt`` (0 is the first retry)."""
        d = min(self.max, self.initial * self.factor**attempt)
        if self.jitter:
            d *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, d)


class _Req:
    __slots__ = ("done", "exc", "frame", "no_result", "plain", "req", "res", "sent")

    def __init__(self, req: int, frame: list[Any], no_result: bool, plain: bool) -> None:
        self.req = req
        self.frame = frame
        self.no_result = no_result
        self.plain = plain
        self.sent = False
        self.done = trio.Event()
        self.res: Any = None
        self.exc: BaseException | None = None


#: RELAY_ERROR frames from a relay (arpc.md C2), and the codes not worth a retry.
_RELAY_ERROR: Final = 113
_RELAY_FINAL: Final = frozenset({32, 33})


class _Lost(Exception):
    """The connection ended; reconnect (``retry``) or give up."""

    def __init__(self, why: str, retry: bool = True) -> None:
        super().__init__(why)
        self.retry = retry


class Client:
    """A connection to an aRPC server; create it with :func:`connect`.

    Attributes:
        id: the client id sent in HELLO.
        rpc: the client's own machine (``rc-<id>``, :data:`CLIENT_SCHEMA`).
        mach: the :class:`NetMachine` mirroring the source (``rnm-<id>``).
        consumer: the machine that receives payloads, or None.
        sid, epoch: the session id and the server's epoch from the last WELCOME.
        welcome: the last WELCOME map.
    """

    def __init__(
        self,
        url: str,
        *,
        id: str,
        token: str | None = None,
        consumer: Machine | None = None,
        heartbeat: float | None = 5.0,
        reconnect: Backoff | None = None,
        schema: bool = True,
        allow: Iterable[str] | None = None,
        skip: Iterable[str] | None = None,
        shallow: bool = False,
        push: float | None = None,
        muts: bool = False,
        call_timeout: float = 5.0,
        connect_timeout: float = 3.0,
        handshake_timeout: float = 5.0,
        max_pending: int = 1024,
        resend_on_new_epoch: bool = False,
        args_types: Iterable[type[Any]] = (),
        strict_args: bool = True,
        limits: _codec.Limits | None = None,
        stream: FrameStream | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        from ..args import args_key

        self.url = url
        self.id = id
        self._token = token
        self.consumer = consumer
        self.heartbeat = heartbeat
        self.backoff = reconnect if reconnect is not None else Backoff()
        self._want_schema = schema
        self._allow = None if allow is None else list(allow)
        self._skip = None if skip is None else list(skip)
        self._shallow = shallow
        self._push = push
        self._muts = muts
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self.resend_on_new_epoch = resend_on_new_epoch
        self.args_types = {args_key(t): t for t in args_types}
        self.strict_args = strict_args
        self.limits = limits or _codec.Limits()
        self._fixed_stream = stream
        self.ssl_context = ssl_context
        self.rpc = Machine(CLIENT_SCHEMA, id=f"rc-{id}", tags=("rpc-client",))
        self.mach = NetMachine(self, f"rnm-{id}", parent=self.rpc)
        self.sid: str | None = None
        self.epoch: str | None = None
        self.welcome: dict[str, Any] | None = None
        self.grant: dict[str, Any] = {}
        self._mirror = Mirror(1)
        self._tracked = 0
        self._next_req = 0
        self._ack = 0
        self._pending: OrderedDict[int, _Req] = OrderedDict()
        self._outbound: deque[bytes] = deque()
        self._wake = trio.Event()
        self._stream: FrameStream | None = None
        self._resyncing = False
        self._sync_waiters: dict[int, trio.Event] = {}
        self._values: dict[int, _Req] = {}
        self._last_sent = 0.0
        self._last_recv = 0.0
        self._closed = False
        self._linked = False  # the current connection got through the handshake
        self._nonce = 0
        self.frames_in = 0
        self.frames_out = 0
        self.bytes_in = 0
        self.bytes_out = 0

    # -------------------------------------------------------------- public API
    @property
    def connected(self) -> bool:
        """True while a handshake-complete connection is up."""
        return self.rpc.is1("HandshakeDone")

    async def sync(self) -> None:
        """Ask for a full snapshot and wait until it is applied."""
        self._check_alive()
        req = self._new_req()
        ev = trio.Event()
        self._sync_waiters[req] = ev
        self._queue_frame([Kind.SYNC, req])
        with trio.fail_after(self.call_timeout):
            await ev.wait()

    async def get(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Call getter ``name`` on the server and return its value.

        Raises:
            UnsupportedError: unknown getter. AuthError: not granted.
            ConnectionLostError: the client is closed or gave up reconnecting.
        """
        self._check_alive()
        req = self._new_req()
        frame: list[Any] = [Kind.GET, req, name] + ([params] if params is not None else [])
        r = _Req(req, frame, False, False)
        self._values[req] = r
        self._queue_frame(frame)
        try:
            with trio.fail_after(self.call_timeout):
                await r.done.wait()
        finally:
            self._values.pop(req, None)
        if r.exc is not None:
            raise r.exc
        return r.res

    # -------------------------------------------------------------- requests
    def _new_req(self) -> int:
        self._next_req += 1
        return self._next_req

    def _queue_frame(self, frame: list[Any]) -> None:
        data = _codec.encode(frame)
        if self._stream is not None and self.rpc.is1("HandshakeDone"):
            self._outbound.append(data)
            self._wake.set()

    def _build(
        self, op: int, called: Sequence[int], args: Any, flags: int, src: Any
    ) -> tuple[list[Any], bytes]:
        if args is not None:
            if not isinstance(args, dict):
                args = dict(args)
            _codec.check_args(args, self.limits)
        frame: list[Any] = [Kind.MUTATE, 0, op, list(called), args or None, flags or None, src]
        while frame and frame[-1] is None and len(frame) > 4:
            frame.pop()
        return frame, _codec.encode(frame)

    def _check_alive(self) -> None:
        """Raise at once once the client is closed or gave up reconnecting (a request
        would otherwise wait for ``call_timeout`` with no link to go on)."""
        if self._closed or self.rpc.is1("ReconnectFailed"):
            raise ConnectionLostError(
                "the client is closed or gave up reconnecting", machine_id=self.rpc.id
            )

    def _enqueue(self, frame: list[Any], no_result: bool, plain: bool) -> _Req:
        self._check_alive()
        if len(self._pending) >= self.max_pending:
            raise NotConnectedError(
                f"{len(self._pending)} requests wait already (max_pending)", machine_id=self.rpc.id
            )
        req = self._new_req()
        frame[1] = req
        r = _Req(req, frame, no_result, plain)
        self._pending[req] = r
        if self._stream is not None and self.rpc.is1("HandshakeDone"):
            r.sent = True
            self._outbound.append(_codec.encode(frame))
            self._wake.set()
        return r

    def _send(self, op: int, called: Sequence[int], args: Any, flags: int, src: Any) -> Result:
        """Fire and forget (plain and ``*_ns`` mutations)."""
        if self.mach.disposed:
            return Result.CANCELED
        frame, _ = self._build(op, called, args, flags, src)
        try:
            self._enqueue(frame, bool(flags & FLAG_NO_RESULT), True)
        except ConnectionLostError as exc:
            self.rpc.add_err_state("ErrDelivery", exc)
            return Result.CANCELED
        return Result.QUEUED

    async def _call(self, op: int, called: Sequence[int], args: Any, flags: int, src: Any) -> int:
        frame, _ = self._build(op, called, args, flags, src)
        r = self._enqueue(frame, False, False)
        with trio.fail_after(self.call_timeout):
            await r.done.wait()
        if r.exc is not None:
            raise r.exc
        return int(r.res)

    def _finish(self, r: _Req, res: Any = None, exc: BaseException | None = None) -> None:
        self._pending.pop(r.req, None)
        if r.done.is_set():
            return
        r.res = res
        r.exc = exc
        r.done.set()
        if exc is not None and r.plain:
            self.rpc.add_err_state("ErrDelivery", exc)

    def _fail_all(self, exc_type: type[RpcError], why: str, only_sent: bool = False) -> None:
        for r in list(self._pending.values()):
            if only_sent and not r.sent:
                continue
            self._finish(r, exc=exc_type(why, machine_id=self.rpc.id))
        for ev in self._sync_waiters.values():
            ev.set()
        self._sync_waiters.clear()
        for r in list(self._values.values()):
            r.exc = exc_type(why, machine_id=self.rpc.id)
            r.done.set()

    # -------------------------------------------------------------- connection loop
    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        rpc = self.rpc
        rpc.add1("Start")
        task_status.started()
        lost_at: float | None = None
        attempt = 0
        try:
            while not self._closed:
                if lost_at is not None:
                    # like Go's backoff: no attempt starts after max_elapsed
                    delay = self.backoff.delay(attempt)
                    if trio.current_time() + delay - lost_at > self.backoff.max_elapsed:
                        break
                    rpc.add1("Reconnecting")
                    await trio.sleep(delay)
                    attempt += 1
                self._linked = False
                try:
                    await self._connect_once()
                    raise _Lost("the connection ended")  # pragma: no cover
                except _Lost as lost:
                    _log.debug("aRPC client %s: %s", self.id, lost)
                    if not lost.retry:
                        break
                    if lost_at is None or self._linked:
                        # a new loss: the schedule starts again from `initial`
                        lost_at = trio.current_time()
                        attempt = 0
                    if self._fixed_stream is not None:
                        break
            if not self._closed:
                rpc.add1("ReconnectFailed")
                self._fail_all(OutcomeUnknownError, "reconnecting failed", only_sent=True)
                self._fail_all(ConnectionLostError, "reconnecting failed")
        finally:
            self._stream = None

    async def _connect_once(self) -> None:
        rpc = self.rpc
        rpc.add1("Connecting")
        if self._fixed_stream is not None:
            stream = self._fixed_stream
        else:
            try:
                stream = await connect_stream(
                    self.url,
                    max_frame=self.limits.frame,
                    hard_frame=self.limits.hard_frame,
                    timeout=self.connect_timeout,
                    ssl_context=self.ssl_context,
                )
            except (OSError, trio.TooSlowError, StreamClosed) as exc:
                rpc.add_err_state("ErrNetwork", exc)
                rpc.add1("Disconnected")
                raise _Lost(f"dial failed: {exc}") from None
            except Exception as exc:
                rpc.add_err_state("ErrNetwork", exc)
                rpc.add1("Disconnected")
                raise _Lost(f"dial failed: {exc}") from None
        try:
            rpc.add1("Connected")
            rpc.add1("Handshaking")
            await self._handshake(stream)
            self._stream = stream
            rpc.remove([*CLIENT_ERRORS, "Exception"])
            rpc.add1("HandshakeDone")
            self._linked = True
            self._resend()
            await self._run_connection(stream)
        finally:
            self._stream = None
            self._outbound.clear()
            if not stream.closed:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.aclose()
            if not self._closed:
                rpc.add1("Disconnected")

    async def _handshake(self, stream: FrameStream) -> None:
        hello: dict[str, Any] = {"proto": PROTO, "id": self.id}
        if self._token is not None:
            hello["token"] = self._token
        hello["schema"] = self._want_schema
        if self.welcome is not None and self.welcome.get("hash") is not None and self._want_schema:
            hello["hash"] = self.welcome["hash"]
        if self._allow is not None:
            hello["allow"] = self._allow
        if self._skip is not None:
            hello["skip"] = self._skip
        if self._shallow:
            hello["shallow"] = True
        if self._muts:
            hello["muts"] = True
        if self._push is not None:
            hello["push"] = self._push
        if self.sid is not None:
            hello["resume"] = {
                "sid": self.sid,
                "epoch": self.epoch,
                "seq": self._mirror.seq,
                "pending": [r.req for r in self._pending.values() if r.sent and not r.no_result],
            }
        try:
            await self._write(stream, _codec.encode([Kind.HELLO, hello]))
            with trio.fail_after(self.handshake_timeout):
                data = await stream.receive_frame()
        except trio.TooSlowError:
            self.rpc.add_err_state("ErrNetworkTimeout", ProtocolError("no WELCOME in time"))
            raise _Lost("handshake timeout") from None
        except (StreamClosed, FrameTooLarge, EmptyFrame, OSError) as exc:
            self.rpc.add_err_state("ErrNetwork", exc)
            raise _Lost(f"handshake: {exc}") from None
        self._count_in(data)
        try:
            obj = _codec.decode(data, limits=self.limits)
            self._check_relay_error(obj)
            frame = parse_server_frame(obj)
        except (_codec.DecodeError, FrameError) as exc:
            self.rpc.add_err_state("ErrRpc", ProtocolError(str(exc)))
            raise _Lost(f"bad WELCOME: {exc}") from None
        if frame.kind == Kind.ERROR:
            _req, code, msg, fatal, detail = frame.fields
            err = error_from_frame(code, msg, fatal=fatal, detail=detail, machine_id=self.rpc.id)
            if code == ErrorCode.AUTH:
                self.rpc.add_err_state("ErrAuth", err)
                raise _Lost(str(err), retry=False)
            if code == ErrorCode.VERSION:
                self.rpc.add_err_state("ErrRpc", err)
                raise _Lost(str(err), retry=False)
            self.rpc.add_err_state("ErrRpc", err)
            raise _Lost(str(err))
        if frame.kind != Kind.WELCOME or frame.data is None:
            self.rpc.add_err_state("ErrRpc", ProtocolError(f"expected WELCOME, got {frame}"))
            raise _Lost("no WELCOME")
        self._apply_welcome(frame.data)

    def _apply_welcome(self, w: dict[str, Any]) -> None:
        checked = _names_and_time(w.get("names"), w.get("time"))
        if checked is None:
            self.rpc.add_err_state("ErrRpc", ProtocolError("malformed WELCOME"))
            raise _Lost("malformed WELCOME")
        names, time = checked
        new_epoch = self.epoch is not None and (
            w.get("epoch") != self.epoch or not w.get("resumed")
        )
        if new_epoch:
            if self.resend_on_new_epoch:
                for r in self._pending.values():
                    r.sent = False
            else:
                self._fail_all(
                    OutcomeUnknownError, "the server restarted (new epoch)", only_sent=True
                )
            # ids begin at 1 again: renumber what was never sent
            unsent = [r for r in self._pending.values() if not r.sent]
            self._pending.clear()
            self._next_req = 0
            self._ack = 0
            for r in unsent:
                r.req = r.frame[1] = self._new_req()
                self._pending[r.req] = r
        self.welcome = w
        self.sid = w.get("sid")
        self.epoch = w.get("epoch")
        self.grant = w.get("grant") or {}
        mach = self.mach
        mach.remote_id = w.get("id")
        schema = w.get("schema")
        try:
            mach._install(
                names,
                schema if isinstance(schema, dict) else None,
                schema is None and self._want_schema,
            )
        except Exception as exc:
            self.rpc.add_err_state("ErrRpc", exc)
            raise _Lost(f"bad schema: {exc}", retry=False) from None
        self._tracked = self._tracked_mask(names)
        qt, mt, seq = int(w.get("qt") or 0), int(w.get("mt") or 0), int(w.get("seq") or 0)
        ack = int(w.get("ack") or 0)
        self._mirror.reset(time, qt, mt, seq)
        self._resyncing = False
        self.rpc.remove1("Resyncing")
        if new_epoch:
            reg = mach._reg
            if reg is not None and reg.queue:
                for sub in list(reg.queue):
                    sub._resolve(QueueResetError("the source restarted", machine_id=mach.id))
        self._apply_mirror()
        self._set_ack(ack)

    def _tracked_mask(self, names: list[str]) -> int:
        """The bitmask of the states this client syncs (``allow`` minus ``skip``)."""
        allow = self._allow
        skip = set(self._skip or ())
        return sum(
            1 << i for i, n in enumerate(names) if (allow is None or n in allow) and n not in skip
        )

    def _apply_mirror(self) -> None:
        m = self._mirror
        mach = self.mach
        ticks = m.ticks
        mach._inferred = inferred = mach._infer(ticks, self._tracked)
        apply_clock(mach, ticks, inferred, m.qt, m.mt)

    def _set_ack(self, ack: int) -> None:
        if ack > self._ack:
            self._ack = ack
        for r in list(self._pending.values()):
            if r.req > ack:
                break
            if r.no_result:
                self._finish(r, Result.QUEUED)

    def _resend(self) -> None:
        """After WELCOME: send every request the server has not taken yet, in order."""
        for r in self._pending.values():
            if r.req > self._ack:
                r.sent = True
                self._outbound.append(_codec.encode(r.frame))
        self._wake.set()

    async def _run_connection(self, stream: FrameStream) -> None:
        self._last_recv = self._last_sent = trio.current_time()
        lost: BaseException | None = None
        async with trio.open_nursery() as nursery:

            async def guard(fn: Any) -> None:
                nonlocal lost
                try:
                    await fn(stream)
                except (
                    _Lost,
                    StreamClosed,
                    trio.BrokenResourceError,
                    trio.ClosedResourceError,
                    trio.TooSlowError,
                ) as exc:
                    lost = exc
                nursery.cancel_scope.cancel()

            nursery.start_soon(guard, self._reader)
            nursery.start_soon(guard, self._writer)
            if self.heartbeat:
                nursery.start_soon(guard, self._heartbeat)
        if isinstance(lost, _Lost):
            raise lost
        raise _Lost(f"connection lost: {lost!r}")

    async def _write(
        self, stream: FrameStream, data: bytes, scope: trio.CancelScope | None = None
    ) -> None:
        """Send one frame within the write timeout: a ``fail_after`` of its own, or a
        deadline moved on the writer's long-lived ``scope`` (cheaper per frame)."""
        if scope is None:
            with trio.fail_after(_WRITE_TIMEOUT):
                await stream.send_frame(data)
        else:
            scope.deadline = trio.current_time() + _WRITE_TIMEOUT
            await stream.send_frame(data)
            scope.deadline = math.inf
        self._last_sent = trio.current_time()
        self.frames_out += 1
        self.bytes_out += len(data)

    async def _writer(self, stream: FrameStream) -> None:
        out = self._outbound
        with trio.CancelScope() as scope:
            while True:
                while out:
                    await self._write(stream, out[0], scope)
                    out.popleft()
                self._wake = trio.Event()
                if not out:
                    await self._wake.wait()
        raise trio.TooSlowError(f"a send took over {_WRITE_TIMEOUT}s")

    async def _heartbeat(self, stream: FrameStream) -> None:
        assert self.heartbeat
        hb = self.heartbeat
        server_hb = (self.welcome or {}).get("limits", {}).get("hb")
        if isinstance(server_hb, (int, float)) and server_hb > 0:
            hb = min(hb, float(server_hb))
        dead = 3 * hb * _DEAD_MARGIN
        while True:
            now = trio.current_time()
            if now - self._last_recv >= dead:
                self.rpc.add1(
                    "ErrNetworkTimeout",
                    {"err": ProtocolError(f"no frame from the server for {3 * hb:.3g}s")},
                )
                raise _Lost("heartbeat timeout")
            if now - self._last_sent >= hb:
                self._nonce += 1
                self._outbound.append(_codec.encode([Kind.PING, self._nonce]))
                self._wake.set()
                self._last_sent = now
            nxt = min(self._last_recv + dead, self._last_sent + hb)
            await trio.sleep(max(nxt - trio.current_time(), 0.001))

    def _check_relay_error(self, obj: object) -> None:
        """A relay between us and the server sent ``RELAY_ERROR [113, code, message]``
        (arpc.md C2): the tunnel is over. NOT_ALLOWED (32) and BAD_TARGET (33) are not
        retried; the others (e.g. the server behind the relay went away) are."""
        if type(obj) is not list or not obj or obj[0] != _RELAY_ERROR:
            return
        code = obj[1] if len(obj) > 1 and type(obj[1]) is int else 0
        msg = str(obj[2]) if len(obj) > 2 else ""
        err = ConnectionLostError(f"relay error {code}: {msg}", code=code, machine_id=self.rpc.id)
        self.rpc.add_err_state("ErrNetwork", err)
        raise _Lost(str(err), retry=code not in _RELAY_FINAL)

    def _count_in(self, data: bytes) -> None:
        self._last_recv = trio.current_time()
        self.frames_in += 1
        self.bytes_in += len(data)

    async def _reader(self, stream: FrameStream) -> None:
        while True:
            try:
                data = await stream.receive_frame()
            except (FrameTooLarge, EmptyFrame) as exc:
                self._last_recv = trio.current_time()
                _log.warning("aRPC client %s: bad frame from the server: %s", self.id, exc)
                if getattr(exc, "fatal", False):
                    raise _Lost("frame too large") from None
                continue
            self._count_in(data)
            try:
                obj = _codec.decode(
                    data,
                    limits=self.limits,
                    args_types=self.args_types,
                    strict_args=self.strict_args,
                )
                self._check_relay_error(obj)
                frame = parse_server_frame(obj)
            except (_codec.DecodeError, FrameError) as exc:
                _log.warning("aRPC client %s: bad frame from the server: %s", self.id, exc)
                self.rpc.add_err_state("ErrRpc", ProtocolError(str(exc)))
                continue
            self._handle(frame)

    # -------------------------------------------------------------- frames
    def _handle(self, frame: Frame) -> None:
        kind = frame.kind
        f = frame.fields
        if kind == Kind.RESULT:
            seq, ack, d, req, res = f
            self._clock(seq, d, ack)
            r = self._pending.get(req)
            if r is not None:
                if res == -1:
                    self._finish(
                        r,
                        exc=OutcomeUnknownError(
                            "applied, but its result is no longer cached", machine_id=self.rpc.id
                        ),
                    )
                else:
                    self._finish(r, res)
        elif kind == Kind.CLOCK:
            seq, ack, d = f
            self._clock(seq, d, ack)
        elif kind == Kind.SNAPSHOT:
            seq, ack, time, qt, mt, req = f
            if len(time) != len(self._mirror.ticks):
                self.rpc.add_err_state("ErrRpc", ProtocolError("SNAPSHOT of a wrong size"))
                return
            self._mirror.reset(time, qt, mt, seq)
            self._resyncing = False
            self.rpc.remove1("Resyncing")
            self._apply_mirror()
            self._set_ack(ack)
            if req is not None:
                ev = self._sync_waiters.pop(req, None)
                if ev is not None:
                    ev.set()
        elif kind == Kind.SCHEMA:
            self._schema(frame.data or {})
        elif kind == Kind.MUTATIONS:
            seq, ack, entries = f
            if self._resyncing:
                return
            m = self._mirror
            if seq != m.seq + 1:
                self._resync("gap in MUTATIONS")
                return
            for k, entry in enumerate(entries):
                if not (isinstance(entry, list) and len(entry) >= 3):
                    self._resync("bad MUTATIONS entry")
                    return
                m.seq = seq - 1
                if not m.apply(seq, entry[2]):
                    self._resync("bad MUTATIONS delta")
                    return
                del k
                self._apply_mirror()
            self._set_ack(ack)
        elif kind == Kind.PAYLOAD:
            self._payload(f)
        elif kind == Kind.VALUE:
            req, value = f
            r = self._values.get(req)
            if r is not None:
                r.res = value
                r.done.set()
        elif kind == Kind.PING:
            self._outbound.append(_codec.encode([Kind.PONG, f[0]]))
            self._wake.set()
        elif kind == Kind.ERROR:
            req, code, msg, fatal, detail = f
            err = error_from_frame(code, msg, fatal=fatal, detail=detail, machine_id=self.rpc.id)
            if req is not None:
                r = self._pending.get(req)
                if r is not None:
                    self._finish(r, exc=err)
                    self._set_ack(req)
                    return
                v = self._values.get(req)
                if v is not None:
                    v.exc = err
                    v.done.set()
                    return
            if fatal:
                if code == ErrorCode.AUTH:
                    self.rpc.add_err_state("ErrAuth", err)
                    raise _Lost(str(err), retry=False)
                if code == ErrorCode.TIMEOUT:
                    self.rpc.add_err_state("ErrNetworkTimeout", err)
                else:
                    self.rpc.add_err_state("ErrRpc", err)
                raise _Lost(str(err), retry=code != ErrorCode.SOURCE_GONE)
            _log.warning("aRPC client %s: server error %s", self.id, err)
        elif kind == Kind.BYE:
            raise _Lost(f"server said bye: {f}")

    def _schema(self, data: dict[str, Any]) -> None:
        """States were added to the source: take the new names, schema and clock."""
        checked = _names_and_time(data.get("names"), data.get("time"))
        if checked is None:
            self.rpc.add_err_state("ErrRpc", ProtocolError("malformed SCHEMA"))
            return
        names, time = checked
        schema = data.get("schema") if self._want_schema else None
        try:
            self.mach._install(names, schema if isinstance(schema, dict) else None, False)
        except Exception as exc:
            self.rpc.add_err_state("ErrRpc", exc)
            return
        if self.welcome is not None:
            self.welcome["names"] = names
            self.welcome["hash"] = data.get("hash")
        self._tracked = self._tracked_mask(names)
        self._mirror.reset(
            time, int(data.get("qt") or 0), int(data.get("mt") or 0), int(data.get("seq") or 0)
        )
        self._resyncing = False
        self._apply_mirror()

    def _clock(self, seq: int, d: Any, ack: int) -> None:
        m = self._mirror
        if not self._resyncing:
            if d is None:
                if seq != m.seq:
                    self._resync(f"seq {seq} without a delta after {m.seq}")
            elif m.apply(seq, d):
                self._apply_mirror()
            else:
                self._resync(f"gap or bad checksum at seq {seq} (had {m.seq})")
        self._set_ack(ack)

    def _resync(self, why: str) -> None:
        _log.info("aRPC client %s: resync: %s", self.id, why)
        self._resyncing = True
        self.rpc.add(["Resyncing", "MetricSync"])
        self._queue_frame([Kind.SYNC, self._new_req()])

    def _payload(self, f: list[Any]) -> None:
        token, name, data, source, source_tx, dest = f
        p = Payload(name, data, source, source_tx, dest, token)
        self.rpc.add1("ServerPayload", {"payload": p})
        consumer = self.consumer
        ok = False
        if consumer is not None and not consumer.disposed:
            try:
                ok = consumer.add1("ServerPayload", {"payload": p}) != Result.CANCELED
            except Exception as exc:
                _log.warning("aRPC client %s: consumer refused a payload: %s", self.id, exc)
        if not ok:
            self.rpc.add_err_state("ErrDelivery", RpcError(f"payload {name!r} not consumed"))
        ack: list[Any] = [Kind.PAYLOAD_ACK, token, ok] + ([] if ok else [int(ErrorCode.PAYLOAD)])
        self._outbound.append(_codec.encode(ack))
        self._wake.set()

    # -------------------------------------------------------------- closing
    async def _bye(self) -> None:
        self._closed = True
        stream = self._stream
        if stream is not None and not stream.closed:
            with trio.move_on_after(1.0):
                try:
                    await stream.send_frame(_codec.encode([Kind.BYE, 1000, "client closing"]))
                except Exception:
                    pass
                await stream.aclose(1000, "bye")
        self._fail_all(ConnectionLostError, "the client was closed")


def _names_and_time(names: object, time: object) -> tuple[list[str], list[int]] | None:
    """``(names, time)`` for a list of state names and a list of as many non-negative
    ticks, else None."""
    if (
        isinstance(names, list)
        and isinstance(time, list)
        and len(names) == len(time)
        and all(isinstance(n, str) for n in names)
        and all(isinstance(t, int) and t >= 0 for t in time)
    ):
        return names, time
    return None


@asynccontextmanager
async def connect(url: str, *, id: str, **kwargs: Any) -> AsyncIterator[Client]:
    """Connect to an aRPC server and keep the connection (with reconnects) for the
    block. Returns at once: ``await client.rpc.when1("Ready")`` waits for the first
    handshake; mutations made before it wait (up to ``max_pending``).

    Args:
        url: ``ws://host:port`` or ``tcp://host:port``.
        id: this client's id (``[A-Za-z0-9._-]{1,128}``); the mirror is ``rnm-<id>``.
        token: sent in HELLO for the server's ``auth``.
        consumer: a machine with ``ServerPayload`` (multi) that receives payloads.
        heartbeat: PING after this many idle seconds; 3 silent heartbeats drop the link.
        reconnect: a :class:`Backoff`.
        schema, allow, skip, shallow, push, muts: what to sync (arpc.md B5, B6).
        call_timeout: seconds ``*_remote`` calls wait (``trio.TooSlowError``).
        max_pending: requests that may wait for the link.
        resend_on_new_epoch: resend sent requests after a server restart instead of
            failing them with ``OutcomeUnknownError``.
        args_types: typed-args classes that may arrive in payloads.
        ssl_context: the client TLS context for ``wss://`` (default: the system's) and
            for TLS over ``tcp://`` (only with a context).

    Yields:
        The :class:`Client`; ``client.mach`` is the :class:`NetMachine`.
    """
    client = Client(url, id=id, **kwargs)
    async with client.rpc, client.mach, trio.open_nursery() as nursery:
        await nursery.start(client._run)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client._bye()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def attach(stream: FrameStream, *, id: str, **kwargs: Any) -> AsyncIterator[Client]:
    """Like :func:`connect`, over one already open :class:`FrameStream` (no reconnects):
    the process becomes the client of the machine on the other end."""
    async with connect("stream://", id=id, stream=stream, **kwargs) as client:
        yield client
