"""RAW: a test-side aRPC frame client (scenarios-arpc.md "Helpers").

Plain msgpack over the B2 framing, through :func:`trio_am.rpc.transport.connect_stream`
(``tcp://`` and ``ws://``) or over any :class:`FrameStream` (e.g. one end of a
``memory_pair``)::

    async with open_raw(server.urls[1]) as raw:
        welcome = await raw.hello(id="r1")
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
        frame = await raw.recv_kind(Kind.RESULT)

``recv`` answers server PINGs with PONG and skips PONGs by default, so that a raw
session can live longer than ``3 × heartbeat``; ``open_raw(keepalive=...)`` also sends a
PING every ``keepalive`` seconds (the server drops a silent peer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgpack
import trio

from trio_am.rpc.protocol import Kind, Op
from trio_am.rpc.transport import FrameStream, StreamClosed, connect_stream

__all__ = ["Kind", "Op", "Raw", "RawError", "open_raw", "pack", "unpack"]


def pack(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (bin type for bytes, like the real peers)."""
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def unpack(data: bytes) -> Any:
    """Decode a frame; ext types stay ``msgpack.ExtType``, maps may have any keys."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class RawError(AssertionError):
    """The server answered the HELLO with something other than WELCOME."""

    def __init__(self, frame: list[Any]) -> None:
        super().__init__(f"expected WELCOME, got {frame!r}")
        self.frame = frame


class Raw:
    """A frame client over one :class:`FrameStream`.

    Attributes:
        stream: the underlying stream (its ``close_code`` is ``WS_CLOSE`` on WS).
        welcome: the WELCOME map once :meth:`hello` succeeded.
        received: every frame received so far, in order (PINGs and PONGs included).
        req: the last request id used by :meth:`mutate`, :meth:`sync` and :meth:`get`.
    """

    def __init__(self, stream: FrameStream) -> None:
        self.stream = stream
        self.welcome: dict[str, Any] | None = None
        self.received: list[list[Any]] = []
        self.req = 0
        self._nonce = 0

    # -- sending
    async def send(self, frame: Any) -> None:
        """Encode ``frame`` (normally a list ``[kind, ...]``) and send it."""
        await self.stream.send_frame(pack(frame))

    async def send_bytes(self, data: bytes) -> None:
        """Send ``data`` as one frame, as is (for garbage and oversized frames)."""
        await self.stream.send_frame(data)

    async def hello_reply(self, **fields: Any) -> list[Any]:
        """Send HELLO (``proto=1`` and ``id="raw"`` unless given) and return the first
        frame received after it, whatever it is."""
        body: dict[str, Any] = {"proto": 1, "id": "raw"}
        body.update(fields)
        await self.send([Kind.HELLO, body])
        return await self.recv()

    async def hello(self, **fields: Any) -> dict[str, Any]:
        """Send HELLO and return the WELCOME map; raises :class:`RawError` otherwise."""
        frame = await self.hello_reply(**fields)
        if frame[0] != Kind.WELCOME or not isinstance(frame[1], dict):
            raise RawError(frame)
        self.welcome = frame[1]
        return frame[1]

    def idx(self, state: str) -> int:
        """The session index of ``state`` (its position in WELCOME ``names``)."""
        assert self.welcome is not None, "hello() first"
        names: list[str] = self.welcome["names"]
        return names.index(state)

    def next_req(self) -> int:
        self.req += 1
        return self.req

    async def mutate(
        self,
        op: int,
        idxs: Iterable[int],
        args: dict[str, Any] | None = None,
        flags: int | None = None,
        src: list[Any] | None = None,
        req: int | None = None,
    ) -> int:
        """Send MUTATE and return its request id (the next one unless ``req`` given)."""
        if req is None:
            req = self.next_req()
        frame: list[Any] = [Kind.MUTATE, req, int(op), list(idxs)]
        tail: list[Any] = [args, flags, src]
        while tail and tail[-1] is None:
            tail.pop()
        await self.send(frame + tail)
        return req

    async def sync(self) -> int:
        req = self.next_req()
        await self.send([Kind.SYNC, req])
        return req

    async def get(self, name: str, params: dict[str, Any] | None = None) -> int:
        req = self.next_req()
        frame: list[Any] = [Kind.GET, req, name]
        if params is not None:
            frame.append(params)
        await self.send(frame)
        return req

    async def ping(self) -> None:
        self._nonce += 1
        await self.send([Kind.PING, self._nonce])

    # -- receiving
    async def recv(self, timeout: float = 2.0, *, skip: Iterable[int] = (Kind.PONG,)) -> list[Any]:
        """The next frame as a decoded list, within ``timeout`` seconds. Server PINGs are
        answered and skipped; kinds in ``skip`` are skipped too. Raises
        :class:`~trio_am.rpc.transport.StreamClosed` when the connection ends."""
        skipped = set(skip)
        with trio.fail_after(timeout):
            while True:
                data = await self.stream.receive_frame()
                frame = unpack(data)
                self.received.append(frame)
                if isinstance(frame, list) and frame:
                    if frame[0] == Kind.PING:
                        try:
                            await self.send([Kind.PONG, frame[1] if len(frame) > 1 else 0])
                        except StreamClosed:
                            pass
                        if Kind.PING not in skipped:
                            return frame
                        continue
                    if frame[0] in skipped:
                        continue
                return frame  # type: ignore[no-any-return]

    async def recv_kind(self, kind: int, timeout: float = 2.0) -> list[Any]:
        """The next frame of ``kind``, skipping others (CLOCK pushes, ...)."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout=timeout)
                if frame[0] == kind:
                    return frame

    async def recv_closed(self, timeout: float = 2.0) -> list[list[Any]]:
        """Read until the server closes the connection; return the frames read."""
        frames: list[list[Any]] = []
        with trio.fail_after(timeout):
            while True:
                try:
                    frames.append(await self.recv(timeout=timeout))
                except StreamClosed:
                    return frames

    async def aclose(self, code: int = 1000) -> None:
        await self.stream.aclose(code)


@asynccontextmanager
async def open_raw(
    url_or_stream: str | FrameStream,
    *,
    keepalive: float | None = None,
    **connect_kw: Any,
) -> AsyncIterator[Raw]:
    """A :class:`Raw` client on ``url`` (dialed with ``connect_stream(url, **connect_kw)``)
    or on an open stream. With ``keepalive``, a task sends a PING every ``keepalive``
    seconds until exit. The stream is closed on exit."""
    if isinstance(url_or_stream, str):
        stream = await connect_stream(url_or_stream, **connect_kw)
    else:
        stream = url_or_stream
    raw = Raw(stream)
    try:
        async with trio.open_nursery() as nursery:
            if keepalive is not None:

                async def pinger() -> None:
                    while True:
                        await trio.sleep(keepalive)
                        try:
                            await raw.ping()
                        except (StreamClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                            return

                nursery.start_soon(pinger)
            try:
                yield raw
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()
