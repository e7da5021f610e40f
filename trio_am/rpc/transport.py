"""Frames over WebSocket, TCP or memory (arpc.md B2, B10).

A :class:`FrameStream` is one connection that carries whole frames (``bytes``):

- ``ws://`` and ``wss://``: one binary WebSocket message is one frame; the subprotocol
  is ``am-rpc.1`` (offered by clients; a client that offers none is accepted too). A text
  message makes the stream send a Close with code 1003 and raise ``StreamClosed(code=1003)``.
- ``tcp://`` (TLS when an ``ssl_context`` is given): a ``u32`` big-endian length, then
  the frame. A length of 0 is invalid (:class:`EmptyFrame`).
- ``memory``: :func:`memory_pair` links two streams in one process, for tests on
  ``trio.testing.MockClock``.

Limits (B10), for a frame of ``n`` bytes:

- ``n <= max_frame``: delivered.
- ``max_frame < n <= hard_frame``: skipped; :meth:`~FrameStream.receive_frame` raises
  :class:`FrameTooLarge` with ``fatal=False`` and the stream stays usable. TCP discards
  the body in chunks as it arrives and never holds it whole; WS drops the message's
  fragments as they arrive.
- ``n > hard_frame``: :class:`FrameTooLarge` with ``fatal=True``. TCP raises it as soon as
  the 4-byte prefix is in (it never waits for the body) and the stream can no longer
  receive; the caller may still send (an ERROR frame) and should then close. WS sends
  a Close with code 1009 at once (what trio-websocket's ``max_message_size`` does) and
  then raises it; the owner's :meth:`~FrameStream.aclose` completes the closing handshake.

Every failure of the link (a close by the peer, a reset, a local close) surfaces as
:class:`StreamClosed`.

The WebSocket side is written on ``wsproto`` (the protocol engine under trio-websocket)
rather than on trio-websocket itself: trio-websocket needs a background reader task in a
nursery for each connection, which a plain ``await connect_stream(url)`` cannot own
without leaking a task. Reading is done by :meth:`~FrameStream.receive_frame` itself;
pings are answered while reading. trio-websocket peers interoperate.
"""

from __future__ import annotations

import abc
import logging
import socket
import ssl
import struct
import urllib.parse
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError as _WsProtocolError
from wsproto.utilities import RemoteProtocolError as _WsRemoteProtocolError

__all__ = [
    "CLOSE_TIMEOUT",
    "DEFAULT_HARD_FRAME",
    "DEFAULT_MAX_FRAME",
    "SUBPROTOCOL",
    "EmptyFrame",
    "FrameStream",
    "FrameTooLarge",
    "MemoryFrameStream",
    "StreamClosed",
    "TcpFrameStream",
    "WsFrameStream",
    "connect_stream",
    "memory_pair",
    "parse_url",
    "serve_streams",
]

_log = logging.getLogger("trio_am.rpc")

#: Default ``max_frame``: larger frames are skipped with ``TOO_LARGE`` (B10).
DEFAULT_MAX_FRAME: Final = 1 << 20
#: Default ``hard_frame``: larger frames are fatal (B10).
DEFAULT_HARD_FRAME: Final = 4 << 20
#: The WebSocket subprotocol of aRPC version 1 (B2).
SUBPROTOCOL: Final = "am-rpc.1"
#: Seconds :meth:`FrameStream.aclose` waits for a WebSocket closing handshake (or for a
#: blocked sender) before it drops the connection.
CLOSE_TIMEOUT: Final = 1.0
#: Seconds a server waits for a WebSocket opening handshake.
WS_HANDSHAKE_TIMEOUT: Final = 10.0

_CHUNK = 1 << 16
_MAX_READ = 1 << 20
_U32_MAX = 0xFFFFFFFF
_LOST = (trio.BrokenResourceError, trio.ClosedResourceError)


# ------------------------------------------------------------------------------ errors
class StreamClosed(Exception):
    """The connection is over: the peer closed it, the link broke, or it was closed
    locally.

    Attributes:
        code: the WebSocket close code (or the code a memory peer closed with); ``None``
            on TCP and when no code is known.
        reason: the close reason, or a description of what happened.
    """

    def __init__(
        self, message: str = "stream closed", *, code: int | None = None, reason: str = ""
    ) -> None:
        self.code = code
        self.reason = reason or message
        super().__init__(message if code is None else f"{message} (code {code})")


class FrameTooLarge(Exception):
    """A received frame was over a limit (B10).

    Attributes:
        size: the frame's size in bytes, when known.
        limit: the limit it broke (``max_frame``, or ``hard_frame`` when fatal).
        fatal: False: the frame was skipped and the stream is still usable. True: the
            frame is over ``hard_frame`` and the connection must end (on WS the Close
            with 1009 is already sent).
    """

    def __init__(self, size: int | None, limit: int, *, fatal: bool) -> None:
        self.size = size
        self.limit = limit
        self.fatal = fatal
        what = "unknown size" if size is None else f"{size} bytes"
        kind = "hard_frame" if fatal else "max_frame"
        super().__init__(f"frame of {what} is over {kind}={limit}" + (" (fatal)" if fatal else ""))


class EmptyFrame(Exception):
    """An empty frame was received (a TCP length prefix of 0, or an empty WebSocket or
    memory message). Not fatal: the stream stays usable; a server answers MALFORMED."""

    def __init__(self, message: str = "empty frame") -> None:
        super().__init__(message)


# ------------------------------------------------------------------------------ base
class FrameStream(abc.ABC):
    """One connection carrying whole frames.

    Sending is safe from several tasks at once (frames never interleave); receiving is
    for one task at a time (a second concurrent receiver gets ``trio.BusyResourceError``).
    Always :meth:`aclose` a stream, also after :class:`StreamClosed`: that releases the
    socket. A stream is also an async context manager that closes it on exit.

    Attributes:
        kind: ``"ws"``, ``"tcp"`` or ``"memory"``.
        peer: the remote address, ``"host:port"``, or ``"memory"``.
        max_frame: frames above this are skipped with :class:`FrameTooLarge`.
        hard_frame: frames above this are fatal.
        bytes_in, bytes_out: bytes of frames received and sent, including the TCP
            4-byte prefix; on WS and memory the payload bytes. Skipped frames count in
            ``bytes_in`` (on TCP only the prefix of a fatal one).
        frames_in, frames_out: frames delivered by :meth:`receive_frame` and sent.
        close_code, close_reason: how the connection ended (the peer's code if it closed
            first, else ours); ``None`` and ``""`` while open and on TCP.
    """

    kind: str = ""

    def __init__(self, *, peer: str, max_frame: int, hard_frame: int) -> None:
        if max_frame <= 0 or hard_frame < max_frame:
            raise ValueError(
                f"need 0 < max_frame <= hard_frame, got max_frame={max_frame}, "
                f"hard_frame={hard_frame}"
            )
        self.peer = peer
        self.max_frame = max_frame
        self.hard_frame = hard_frame
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        self.close_code: int | None = None
        self.close_reason = ""
        #: Seconds :meth:`aclose` may spend on a graceful close before dropping the link.
        self.close_timeout = CLOSE_TIMEOUT
        self._closed = False
        self._receiving = False
        self._read_exc: StreamClosed | None = None

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` or :meth:`abort` was called on this side. A close by
        the peer does not set it: the owner still has to :meth:`aclose`."""
        return self._closed

    @abc.abstractmethod
    async def send_frame(self, data: bytes) -> None:
        """Send one frame. Raises :class:`StreamClosed` if the connection is gone. If a
        send is cancelled half-way, the stream can no longer send (the frame may be cut)."""

    @abc.abstractmethod
    async def receive_frame(self) -> bytes:
        """Wait for the next frame and return it.

        Raises:
            StreamClosed: the peer closed, the link broke, or the stream was closed.
            FrameTooLarge: see the module docstring (B10).
            EmptyFrame: an empty frame; the stream stays usable.
        """

    @abc.abstractmethod
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection; idempotent. ``code`` and ``reason`` are sent as the
        WebSocket close code (and passed to a memory peer); TCP ignores them."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop the connection at once, with no closing handshake (a TCP RST where
        possible); idempotent. For tests of abrupt disconnects."""

    async def __aenter__(self) -> FrameStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.kind} {self.peer} {state}>"

    # helpers for subclasses
    def _local_closed(self) -> StreamClosed:
        return StreamClosed(
            "the stream was closed locally", code=self.close_code, reason=self.close_reason
        )

    def _begin_receive(self) -> None:
        if self._closed:
            raise self._local_closed()
        if self._read_exc is not None:
            raise self._read_exc
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True

    def _record_close(self, code: int | None, reason: str) -> None:
        if self.close_code is None and not self.close_reason:
            self.close_code = code
            self.close_reason = reason


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    while True:
        sock = getattr(stream, "socket", None)
        if sock is not None:
            return sock  # type: ignore[no-any-return]
        inner = getattr(stream, "transport_stream", None)
        if inner is None:
            return None
        stream = inner


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _peer_of(stream: trio.abc.Stream) -> str:
    sock = _socket_of(stream)
    if sock is None:
        return "?"
    try:
        addr = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{_format_host(str(addr[0]))}:{addr[1]}"
    return str(addr) or "?"


async def _drop(stream: trio.abc.Stream) -> None:
    """Close ``stream`` at once; a TCP RST where the socket is reachable."""
    sock = _socket_of(stream)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    await trio.aclose_forcefully(stream)


async def _close_transport(stream: trio.abc.Stream, timeout: float) -> None:
    with trio.move_on_after(timeout) as cs:
        try:
            await stream.aclose()
        except _LOST:
            pass
    if cs.cancelled_caught:
        await trio.aclose_forcefully(stream)


# ------------------------------------------------------------------------------ TCP
class TcpFrameStream(FrameStream):
    """Frames over any byte stream (TCP, TLS, a socketpair): a ``u32`` big-endian length,
    then the frame.

    Receiving is cancel-safe: a :meth:`receive_frame` cancelled half-way through a frame
    keeps what it read, and the next call goes on from there. On a frame over
    ``hard_frame`` only the prefix (and whatever arrived in the same read) is consumed;
    the body is never awaited.
    """

    kind = "tcp"

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        peer: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        hard_frame: int = DEFAULT_HARD_FRAME,
    ) -> None:
        super().__init__(
            peer=_peer_of(stream) if peer is None else peer,
            max_frame=max_frame,
            hard_frame=hard_frame,
        )
        self.stream = stream
        self._buf = bytearray()
        self._skip = 0
        self._skip_size = 0
        self._send_lock = trio.Lock()
        self._send_dead: str | None = None

    async def send_frame(self, data: bytes) -> None:
        """Send one frame: prefix and body in one ``send_all``. An empty ``data`` sends a
        length of 0 (which the peer rejects), for tests."""
        n = len(data)
        if n > _U32_MAX:
            raise ValueError(f"a TCP frame holds at most {_U32_MAX} bytes, not {n}")
        wire = n.to_bytes(4, "big") + data
        async with self._send_lock:
            if self._closed:
                raise self._local_closed()
            if self._send_dead is not None:
                raise StreamClosed(self._send_dead)
            # a cancel before the first byte leaves the stream usable (no yield from
            # here to send_all's own first check)
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                await self.stream.send_all(wire)
            except _LOST as exc:
                self._send_dead = f"connection lost while sending: {exc!r}"
                raise StreamClosed(self._send_dead) from None
            except BaseException:
                self._send_dead = "a send was interrupted; the stream can no longer send"
                raise
        self.bytes_out += 4 + n
        self.frames_out += 1

    async def _read(self, max_bytes: int) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except _LOST as exc:
            if self._closed:
                raise self._local_closed() from None
            self._read_exc = StreamClosed(f"connection lost: {exc!r}")
            raise self._read_exc from None
        if not data:
            mid = bool(self._buf) or self._skip > 0
            self._read_exc = StreamClosed(
                "connection closed by the peer" + (" in the middle of a frame" if mid else "")
            )
            raise self._read_exc
        return data

    async def receive_frame(self) -> bytes:
        """Return the next frame (see :meth:`FrameStream.receive_frame`)."""
        self._begin_receive()
        try:
            return await self._receive()
        finally:
            self._receiving = False

    async def _receive(self) -> bytes:
        buf = self._buf
        while True:
            if self._skip:
                if buf:
                    k = min(len(buf), self._skip)
                    del buf[:k]
                    self._skip -= k
                while self._skip:
                    data = await self._read(min(self._skip, _CHUNK))
                    self._skip -= len(data)
                size, self._skip_size = self._skip_size, 0
                raise FrameTooLarge(size, self.max_frame, fatal=False)
            if len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if n == 0:
                    del buf[:4]
                    self.bytes_in += 4
                    raise EmptyFrame("a TCP length prefix of 0")
                if n > self.hard_frame:
                    del buf[:4]
                    self.bytes_in += 4
                    buf.clear()
                    self._read_exc = StreamClosed(
                        f"cannot receive after a frame of {n} bytes (over hard_frame)"
                    )
                    raise FrameTooLarge(n, self.hard_frame, fatal=True)
                if n > self.max_frame:
                    del buf[:4]
                    self.bytes_in += 4 + n
                    self._skip = self._skip_size = n
                    continue
                if len(buf) >= 4 + n:
                    frame = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    self.bytes_in += 4 + n
                    self.frames_in += 1
                    return frame
                need = 4 + n - len(buf)
            else:
                need = 4 - len(buf)
            buf += await self._read(min(max(need, _CHUNK), _MAX_READ))

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection (a FIN; ``code`` is ignored). Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await _close_transport(self.stream, self.close_timeout)

    async def abort(self) -> None:
        """Reset the connection (an RST). Idempotent."""
        self._closed = True
        await _drop(self.stream)


# ------------------------------------------------------------------------------ WebSocket
_BAD_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


class WsFrameStream(FrameStream):
    """Frames over a WebSocket whose opening handshake is done (see :func:`connect_stream`
    and :func:`serve_streams`). One binary message is one frame.

    Attributes:
        subprotocol: the negotiated subprotocol (``"am-rpc.1"`` or ``None``).
        path: the request path.
    """

    kind = "ws"

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WSConnection,
        *,
        peer: str | None = None,
        subprotocol: str | None = None,
        path: str = "/",
        max_frame: int = DEFAULT_MAX_FRAME,
        hard_frame: int = DEFAULT_HARD_FRAME,
    ) -> None:
        super().__init__(
            peer=_peer_of(stream) if peer is None else peer,
            max_frame=max_frame,
            hard_frame=hard_frame,
        )
        self.stream = stream
        self.subprotocol = subprotocol
        self.path = path
        self._ws = ws
        self._send_lock = trio.Lock()
        self._send_dead: str | None = None
        self._ctrl = bytearray()  # control frames waiting to be sent (pongs, close replies)
        self._parts: list[bytes | bytearray] = []
        self._size = 0
        self._skipping = False
        self._close_done = trio.Event()  # the closing handshake ended, or the link is gone
        self._closing = False  # our Close frame is out (or being sent)
        self._parser_dead = False

    # sending
    async def _send_locked(self, wire: bytes) -> None:
        if self._send_dead is not None:
            raise StreamClosed(self._send_dead, code=self.close_code, reason=self.close_reason)
        try:
            await self.stream.send_all(wire)
        except _LOST as exc:
            self._send_dead = f"connection lost while sending: {exc!r}"
            self._close_done.set()
            raise StreamClosed(self._send_dead, code=self.close_code) from None
        except BaseException:
            self._send_dead = "a send was interrupted; the stream can no longer send"
            raise

    def _take_ctrl(self) -> bytes:
        out = bytes(self._ctrl)
        self._ctrl.clear()
        return out

    async def send_frame(self, data: bytes) -> None:
        """Send one frame as one binary message."""
        async with self._send_lock:
            if self._closing:
                raise self._local_closed()
            if self._ws.state is not ConnectionState.OPEN:
                raise StreamClosed(
                    "the peer closed the WebSocket", code=self.close_code, reason=self.close_reason
                )
            await trio.lowlevel.checkpoint_if_cancelled()  # nothing sent yet: stays usable
            wire = self._take_ctrl() + self._ws.send(BytesMessage(data=data))
            await self._send_locked(wire)
        self.bytes_out += len(data)
        self.frames_out += 1

    async def _flush_ctrl(self) -> None:
        # Never wait for a busy sender here: the sender may be blocked on a peer that is
        # itself waiting for us to read. Whoever sends next takes the control frames.
        if self._ctrl and not self._send_lock.locked() and self._send_dead is None:
            async with self._send_lock:
                if self._ctrl:
                    try:
                        await self._send_locked(self._take_ctrl())
                    except StreamClosed:
                        pass
        if self._ws.state is ConnectionState.CLOSED and not self._ctrl:
            self._close_done.set()

    # receiving
    def _events(self) -> bytes | BaseException | tuple[int, str] | None:
        """Handle what wsproto parsed: a frame, an exception to raise, ``(code, reason)``
        for a close this side must start, or None when more data is needed."""
        for ev in self._ws.events():
            if isinstance(ev, (BytesMessage, TextMessage)):
                if self._closing:
                    continue
                if isinstance(ev, TextMessage):
                    self._parts.clear()
                    self._size = 0
                    self._skipping = False
                    return (1003, "text messages are not accepted")
                self._size += len(ev.data)
                if self._size > self.hard_frame:
                    self._parts.clear()
                    self._size = 0
                    self._skipping = False
                    return (1009, f"message over {self.hard_frame} bytes")
                if self._size > self.max_frame:
                    self._skipping = True
                    self._parts.clear()
                elif ev.data:
                    self._parts.append(ev.data)
                if ev.message_finished:
                    size, self._size = self._size, 0
                    self.bytes_in += size
                    if self._skipping:
                        self._skipping = False
                        return FrameTooLarge(size, self.max_frame, fatal=False)
                    frame = b"".join(self._parts)
                    self._parts.clear()
                    if not frame:
                        return EmptyFrame("an empty WebSocket message")
                    self.frames_in += 1
                    return frame
            elif isinstance(ev, Ping):
                if self._ws.state is ConnectionState.OPEN:
                    self._ctrl += self._ws.send(ev.response())
            elif isinstance(ev, Pong):
                pass
            elif isinstance(ev, CloseConnection):
                state = self._ws.state
                reason = ev.reason or ""
                if state is ConnectionState.OPEN:
                    # wsproto reports a protocol error by the peer this way
                    return (ev.code, reason or "WebSocket protocol error")
                if state is ConnectionState.REMOTE_CLOSING:
                    self._ctrl += self._ws.send(ev.response())
                self._record_close(ev.code, reason)
                if state is ConnectionState.CLOSED and not self._ctrl:
                    self._close_done.set()
                if self._closing:
                    exc = self._local_closed()
                else:
                    exc = StreamClosed("the peer closed the WebSocket", code=ev.code, reason=reason)
                self._read_exc = exc
                return exc
        return None

    async def _feed(self) -> None:
        try:
            data = await self.stream.receive_some(_CHUNK)
        except _LOST as exc:
            self._close_done.set()
            if self._closing:
                raise self._local_closed() from None
            self._record_close(1006, f"connection lost: {exc!r}")
            self._read_exc = StreamClosed("connection lost", code=1006, reason=f"{exc!r}")
            raise self._read_exc from None
        if self._ws.state is ConnectionState.CLOSED:
            if not data:
                self._close_done.set()
                raise self._read_exc or self._local_closed()
            return  # after the closing handshake: ignore
        if self._ws.state is ConnectionState.REMOTE_CLOSING and data:
            return
        try:
            self._ws.receive_data(bytes(data) if data else None)
        except _WsProtocolError as exc:  # pragma: no cover - only in a closed state
            self._close_done.set()
            self._read_exc = StreamClosed(f"WebSocket error: {exc}", code=1006)
            raise self._read_exc from None

    async def receive_frame(self) -> bytes:
        """Return the next frame (see :meth:`FrameStream.receive_frame`). A text message
        sends a Close with 1003 and raises :class:`StreamClosed` (``code=1003``); a message
        over ``hard_frame`` sends a Close with 1009 and raises a fatal
        :class:`FrameTooLarge`. Either way the stream can no longer send or receive, and
        :meth:`aclose` completes the closing handshake. Pings are answered here."""
        self._begin_receive()
        try:
            while True:
                got = self._events()
                if isinstance(got, bytes):
                    return got
                if isinstance(got, (FrameTooLarge, EmptyFrame)):
                    raise got
                if isinstance(got, tuple):
                    # Start the closing handshake; the owner's aclose() completes it.
                    code, reason = got
                    if code not in (1003, 1009):
                        self._parser_dead = True  # wsproto gave up on the peer's bytes
                    with trio.move_on_after(self.close_timeout):
                        await self._send_close(code, reason)
                    self._read_exc = StreamClosed(reason, code=code, reason=reason)
                    if code == 1009:
                        raise FrameTooLarge(None, self.hard_frame, fatal=True)
                    raise self._read_exc
                await self._flush_ctrl()
                if got is not None:
                    raise got
                await self._feed()
        finally:
            self._receiving = False

    # closing
    async def _send_close(self, code: int, reason: str) -> None:
        """Send our Close frame (or the reply to the peer's), once; no waiting for the
        peer. Safe to call again."""
        self._closing = True
        self._parts.clear()
        if code in _BAD_CLOSE_CODES or not 1000 <= code <= 4999:
            code = 1000
        try:
            async with self._send_lock:
                if self._ws.state is ConnectionState.OPEN:
                    self._record_close(code, reason)
                    self._ctrl += self._ws.send(CloseConnection(code=code, reason=reason or None))
                if self._ctrl:
                    await self._send_locked(self._take_ctrl())
        except StreamClosed:
            self._close_done.set()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with a WebSocket closing handshake: send Close(``code``, ``reason``) (unless
        a Close went out already), wait up to ``close_timeout`` for the peer's Close, then
        close the socket. Idempotent."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            with trio.move_on_after(self.close_timeout):
                await self._send_close(code, reason)
                if self._parser_dead:
                    pass  # the peer's Close could not be parsed anyway
                elif self._receiving:
                    await self._close_done.wait()
                else:
                    while (
                        not self._close_done.is_set()
                        and self._ws.state is not ConnectionState.CLOSED
                    ):
                        if self._events() is None:
                            await self._feed()
        except StreamClosed:
            pass
        finally:
            self._close_done.set()
            await _close_transport(self.stream, self.close_timeout)

    async def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (the peer sees 1006)."""
        self._closed = self._closing = True
        self._record_close(1006, "aborted")
        self._close_done.set()
        await _drop(self.stream)


async def _ws_client_handshake(
    stream: trio.abc.Stream, host: str, port: int, path: str, *, default_port: int
) -> tuple[WSConnection, str | None]:
    ws = WSConnection(ConnectionType.CLIENT)
    host_header = _format_host(host) if port == default_port else f"{_format_host(host)}:{port}"
    await stream.send_all(
        ws.send(Request(host=host_header, target=path, subprotocols=[SUBPROTOCOL]))
    )
    while True:
        data = await stream.receive_some(_CHUNK)
        if not data:
            raise StreamClosed("the server closed the connection during the WebSocket handshake")
        try:
            ws.receive_data(bytes(data))
        except _WsRemoteProtocolError as exc:
            raise StreamClosed(f"bad WebSocket handshake response: {exc}") from None
        for ev in ws.events():
            if isinstance(ev, AcceptConnection):
                if ev.subprotocol not in (None, SUBPROTOCOL):
                    raise StreamClosed(f"the server chose the subprotocol {ev.subprotocol!r}")
                return ws, ev.subprotocol
            if isinstance(ev, RejectConnection):
                raise StreamClosed(f"the server refused the WebSocket: HTTP {ev.status_code}")


async def _ws_server_handshake(stream: trio.abc.Stream) -> tuple[WSConnection, str | None, str]:
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        data = await stream.receive_some(_CHUNK)
        if not data:
            raise StreamClosed("the client closed the connection during the WebSocket handshake")
        try:
            ws.receive_data(bytes(data))
        except _WsRemoteProtocolError as exc:
            if exc.event_hint is not None:
                try:
                    await stream.send_all(ws.send(exc.event_hint))
                except (*_LOST, _WsProtocolError):
                    pass
            raise StreamClosed(f"bad WebSocket handshake request: {exc}") from None
        for ev in ws.events():
            if isinstance(ev, Request):
                sub = SUBPROTOCOL if SUBPROTOCOL in ev.subprotocols else None
                await stream.send_all(ws.send(AcceptConnection(subprotocol=sub)))
                return ws, sub, ev.target


# ------------------------------------------------------------------------------ memory
class MemoryFrameStream(FrameStream):
    """One end of :func:`memory_pair`. Frames travel as ``bytes`` objects through Trio
    memory channels, so everything runs on the Trio clock (``MockClock`` works).

    Limits apply on receive as on TCP: over ``max_frame`` is skipped (non-fatal), over
    ``hard_frame`` is fatal and the stream can no longer receive. :meth:`aclose` passes
    its ``code`` and ``reason`` to the peer's :class:`StreamClosed`; :meth:`abort` gives
    the peer code 1006.
    """

    kind = "memory"

    def __init__(
        self,
        send_channel: trio.MemorySendChannel[bytes],
        receive_channel: trio.MemoryReceiveChannel[bytes],
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        hard_frame: int = DEFAULT_HARD_FRAME,
    ) -> None:
        super().__init__(peer="memory", max_frame=max_frame, hard_frame=hard_frame)
        self._send = send_channel
        self._recv = receive_channel
        self._other: MemoryFrameStream | None = None
        self._remote: tuple[int | None, str] | None = None

    def _peer_closed(self) -> StreamClosed:
        code, reason = self._remote or (None, "")
        self._record_close(code, reason)
        return StreamClosed("the peer closed the stream", code=code, reason=reason)

    async def send_frame(self, data: bytes) -> None:
        """Send one frame (waits while the peer's buffer is full)."""
        if self._closed:
            raise self._local_closed()
        try:
            await self._send.send(bytes(data))
        except trio.ClosedResourceError:
            raise self._local_closed() from None
        except trio.BrokenResourceError:
            raise self._peer_closed() from None
        self.bytes_out += len(data)
        self.frames_out += 1

    async def receive_frame(self) -> bytes:
        """Return the next frame (see :meth:`FrameStream.receive_frame`)."""
        self._begin_receive()
        try:
            try:
                data = await self._recv.receive()
            except trio.EndOfChannel:
                self._read_exc = self._peer_closed()
                raise self._read_exc from None
            except trio.ClosedResourceError:
                raise self._local_closed() from None
        finally:
            self._receiving = False
        n = len(data)
        if n > self.hard_frame:
            self._read_exc = StreamClosed(
                f"cannot receive after a frame of {n} bytes (over hard_frame)"
            )
            raise FrameTooLarge(n, self.hard_frame, fatal=True)
        self.bytes_in += n
        if n == 0:
            raise EmptyFrame("an empty memory frame")
        if n > self.max_frame:
            raise FrameTooLarge(n, self.max_frame, fatal=False)
        self.frames_in += 1
        return data

    def _shut(self, code: int | None, reason: str) -> None:
        self._closed = True
        self._record_close(code, reason)
        other = self._other
        if other is not None and other._remote is None:
            other._remote = (code, reason)
        self._send.close()
        self._recv.close()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close both directions; the peer's reads end (after the frames already sent)
        with ``StreamClosed(code=code)``. Idempotent."""
        if not self._closed:
            self._shut(code, reason)
        await trio.lowlevel.checkpoint()

    async def abort(self) -> None:
        """Like :meth:`aclose` with code 1006 ("connection reset")."""
        if not self._closed:
            self._shut(1006, "connection reset")
        await trio.lowlevel.checkpoint()


def memory_pair(
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    hard_frame: int = DEFAULT_HARD_FRAME,
    buffer: float = 64,
) -> tuple[MemoryFrameStream, MemoryFrameStream]:
    """Two linked in-memory :class:`FrameStream` s: what one sends, the other receives.

    Args:
        max_frame, hard_frame: the receive limits of both ends.
        buffer: frames each direction holds before ``send_frame`` waits (backpressure,
            like a socket buffer); ``math.inf`` for none.

    Closing one end makes the other's ``receive_frame`` raise :class:`StreamClosed` once
    it has read what was sent before, and its ``send_frame`` raise at once.
    """
    a_send, b_recv = trio.open_memory_channel[bytes](buffer)
    b_send, a_recv = trio.open_memory_channel[bytes](buffer)
    a = MemoryFrameStream(a_send, a_recv, max_frame=max_frame, hard_frame=hard_frame)
    b = MemoryFrameStream(b_send, b_recv, max_frame=max_frame, hard_frame=hard_frame)
    a._other, b._other = b, a
    return a, b


# ------------------------------------------------------------------------------ URLs
def parse_url(url: str) -> tuple[str, str, int, str]:
    """Split an aRPC URL into ``(scheme, host, port, path)``.

    ``scheme`` is ``ws``, ``wss`` or ``tcp``; ``tcp`` needs a port and has no path (the
    path is ``""``); WebSocket ports default to 80 and 443 and the path to ``"/"`` (a query
    is kept). Port 0 is allowed (a server then picks one). Raises ``ValueError`` otherwise.
    """
    if not isinstance(url, str):
        raise ValueError(f"an aRPC URL must be a string, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss", "tcp"):
        raise ValueError(f"unsupported URL {url!r}: the scheme must be ws://, wss:// or tcp://")
    host = parts.hostname
    if not host:
        raise ValueError(f"URL {url!r} has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"URL {url!r} has an invalid port") from None
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"URL {url!r} must not contain credentials")
    if parts.fragment:
        raise ValueError(f"URL {url!r} must not have a fragment")
    if scheme == "tcp":
        if port is None:
            raise ValueError(f"URL {url!r} needs a port")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"a tcp:// URL has no path: {url!r}")
        return scheme, host, port, ""
    if port is None:
        port = 443 if scheme == "wss" else 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port, path


def _make_url(scheme: str, host: str, port: int, path: str) -> str:
    tail = path if path not in ("", "/") else ""
    return f"{scheme}://{_format_host(host)}:{port}{tail}"


# ------------------------------------------------------------------------------ dial
async def connect_stream(
    url: str,
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    hard_frame: int = DEFAULT_HARD_FRAME,
    timeout: float = 3.0,
    ssl_context: ssl.SSLContext | None = None,
) -> FrameStream:
    """Dial ``url`` and return an open :class:`FrameStream`.

    ``wss://`` uses ``ssl_context`` (default: ``ssl.create_default_context()``);
    ``tcp://`` uses TLS only when ``ssl_context`` is given. WebSocket clients offer the
    ``am-rpc.1`` subprotocol.

    Raises:
        ValueError: a bad URL.
        OSError: the connection was refused or failed.
        trio.TooSlowError: connecting (TCP, TLS and the WebSocket handshake) took longer
            than ``timeout`` seconds.
        StreamClosed: the server refused or broke the WebSocket handshake.
    """
    scheme, host, port, path = parse_url(url)
    if scheme == "wss" and ssl_context is None:
        ssl_context = ssl.create_default_context()
    if scheme == "ws" and ssl_context is not None:
        raise ValueError("a ws:// URL takes no ssl_context; use wss://")
    with trio.fail_after(timeout):
        stream: trio.abc.Stream
        if ssl_context is not None:
            stream = await trio.open_ssl_over_tcp_stream(
                host, port, ssl_context=ssl_context, https_compatible=scheme == "wss"
            )
        else:
            stream = await trio.open_tcp_stream(host, port)
        try:
            if scheme == "tcp":
                return TcpFrameStream(stream, max_frame=max_frame, hard_frame=hard_frame)
            try:
                ws, sub = await _ws_client_handshake(
                    stream, host, port, path, default_port=443 if scheme == "wss" else 80
                )
            except _LOST as exc:
                raise StreamClosed(
                    f"connection lost during the WebSocket handshake: {exc!r}"
                ) from None
            return WsFrameStream(
                stream, ws, subprotocol=sub, path=path, max_frame=max_frame, hard_frame=hard_frame
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


# ------------------------------------------------------------------------------ serve
def _listener_port(listener: trio.abc.Listener[Any]) -> int:
    sock = getattr(listener, "socket", None)
    if sock is None:
        sock = getattr(getattr(listener, "transport_listener", None), "socket", None)
    if sock is None:  # pragma: no cover
        raise RuntimeError(f"cannot tell the port of {listener!r}")
    return int(sock.getsockname()[1])


async def serve_streams(
    url: str,
    handler: Callable[[FrameStream], Awaitable[None]],
    *,
    max_frame: int = DEFAULT_MAX_FRAME,
    hard_frame: int = DEFAULT_HARD_FRAME,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    handler_nursery: trio.Nursery | None = None,
) -> None:
    """Listen on ``url`` forever and run ``handler(stream)`` for each connection.

    Use with ``nursery.start``: it reports the bound URL, with the real port when the URL
    asked for port 0 (e.g. ``"tcp://127.0.0.1:54321"``). Each connection runs in its own
    task (in ``handler_nursery`` if given); the WebSocket handshake happens there, so a
    slow client does not hold up others. The stream is closed when ``handler`` returns or
    raises; an exception from ``handler`` is logged on the ``trio_am.rpc`` logger and does
    not stop the listener.

    ``wss://`` needs ``ssl_context``; with ``tcp://`` it turns TLS on.
    """
    scheme, host, port, path = parse_url(url)
    if scheme == "wss" and ssl_context is None:
        raise ValueError("serving wss:// needs an ssl_context")
    if scheme == "ws" and ssl_context is not None:
        raise ValueError("a ws:// URL takes no ssl_context; use wss://")
    if max_frame <= 0 or hard_frame < max_frame:
        raise ValueError(f"need 0 < max_frame <= hard_frame, got {max_frame}, {hard_frame}")
    sockets = await trio.open_tcp_listeners(port, host=host)
    if port == 0 and len(sockets) > 1:
        # each address family got its own random port; keep one so the URL is exact
        for extra in sockets[1:]:
            await extra.aclose()
        sockets = sockets[:1]
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(sockets)
    bound = _make_url(scheme, host, _listener_port(sockets[0]), path)
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(s, ssl_context, https_compatible=scheme == "wss") for s in sockets
        ]
    is_ws = scheme in ("ws", "wss")

    async def on_connection(raw: trio.abc.Stream) -> None:
        peer = _peer_of(raw)
        fs: FrameStream
        try:
            if is_ws:
                with trio.fail_after(WS_HANDSHAKE_TIMEOUT):
                    ws, sub, target = await _ws_server_handshake(raw)
                fs = WsFrameStream(
                    raw,
                    ws,
                    peer=peer,
                    subprotocol=sub,
                    path=target,
                    max_frame=max_frame,
                    hard_frame=hard_frame,
                )
            else:
                fs = TcpFrameStream(raw, peer=peer, max_frame=max_frame, hard_frame=hard_frame)
        except (StreamClosed, trio.TooSlowError, *_LOST) as exc:
            _log.debug("connection from %s dropped before it started: %r", peer, exc)
            await trio.aclose_forcefully(raw)
            return
        except BaseException:
            await trio.aclose_forcefully(raw)
            raise
        try:
            await handler(fs)
        except Exception:
            _log.exception("frame stream handler for %s (%s) failed", peer, bound)
        finally:
            await fs.aclose()

    task_status.started(bound)
    await trio.serve_listeners(on_connection, listeners, handler_nursery=handler_nursery)
