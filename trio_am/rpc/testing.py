"""Test tools for aRPC (arpc.md B1, scenarios-arpc.md "PROXY").

- :func:`memory_pair`: two linked in-memory :class:`~trio_am.rpc.transport.FrameStream` s,
  for tests on ``trio.testing.MockClock``.
- :class:`FaultyProxy`: a frame-level man in the middle between a client and a server.
  It counts bytes and frames per kind, and can black-hole, throttle, reset, drop or
  rewrite frames.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Final

import msgpack
import trio

from .transport import (
    EmptyFrame,
    FrameStream,
    FrameTooLarge,
    StreamClosed,
    connect_stream,
    memory_pair,
    parse_url,
    serve_streams,
)

__all__ = ["DIRECTIONS", "FaultyProxy", "frame_kind", "memory_pair"]

_log = logging.getLogger("trio_am.rpc")

#: The directions a fault applies to: ``"up"`` is client to server, ``"down"`` server to
#: client, ``"both"`` is both.
DIRECTIONS: Final = ("up", "down", "both")

#: Frame limit of the proxy's own streams: large, so that the proxy forwards what the
#: real endpoints must judge.
PROXY_FRAME_LIMIT: Final = 64 << 20


def _decode(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def frame_kind(data: bytes) -> int:
    """The kind of a frame: the int first element of its msgpack array, or -1 when the
    frame does not decode as an array starting with an int."""
    try:
        obj = _decode(data)
    except Exception:
        return -1
    return _kind_of(obj)


def _kind_of(obj: Any) -> int:
    if isinstance(obj, list) and obj and type(obj[0]) is int:
        return obj[0]
    return -1


def _dirs(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return ("up", "down")
    if direction in ("up", "down"):
        return (direction,)
    raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")


class _Conn:
    """One proxied connection: the client-facing and the server-facing stream."""

    def __init__(self, client_side: FrameStream, server_side: FrameStream) -> None:
        self.client_side = client_side
        self.server_side = server_side
        self.scope = trio.CancelScope()
        self.reset = False
        self.closed_by: str | None = None  # the direction whose source closed first
        self.close_code: int | None = None
        self.close_reason = ""


class FaultyProxy:
    """A frame-level man in the middle for tests.

    ::

        async with FaultyProxy(server.urls[0]) as proxy:
            async with am.rpc.connect(proxy.url, id="c1") as client:
                proxy.blackhole("up")
                ...

    Clients dial :attr:`url`; for each accepted connection the proxy dials the target
    and pumps frames both ways. The two hops may use different schemes. Frames are
    msgpack arrays whose first element is an int kind; a frame that does not decode is
    counted under kind -1 and forwarded unchanged.

    Faults (``direction`` is ``"up"`` = client to server, ``"down"`` or ``"both"``):

    - :meth:`blackhole`: frames are silently swallowed; the connections stay open (no
      RST) and a close by one side is not passed on while its direction is black-holed
      (a silent cut). :meth:`restore` ends it.
    - :meth:`throttle`: forwarding waits so that the rate holds (``trio.sleep``, so it
      runs on virtual time under ``MockClock``). Waiting stops the pump from reading, so
      the sender meets backpressure as on a slow link.
    - :meth:`reset`: abruptly closes every current connection, both sides.
    - :meth:`drop_next`, :meth:`rewrite_next`: act on the next frame of a kind.

    Counters, of frames forwarded (counted as each is handed to the outgoing stream, so a
    peer that got a frame always finds it counted): :attr:`bytes_up`, :attr:`bytes_down` (payload bytes,
    plus the 4-byte prefix when the outgoing hop is TCP: what goes on the wire),
    :attr:`frames_up`, :attr:`frames_down` (``Counter`` by kind) and :attr:`log`
    (``(direction, kind, size)`` tuples). Frames swallowed or dropped are counted in
    :attr:`dropped_up` and :attr:`dropped_down` instead. :meth:`wait_for` waits for a
    condition on these without sleeping.

    :meth:`pump` runs the same logic over two given streams, e.g. two
    :func:`memory_pair` s under ``MockClock``.

    Args:
        target_url: where the server listens.
        listen_url: where the proxy listens; by default the target's scheme (``ws``
            for a ``wss`` target) on ``127.0.0.1`` with a free port.
    """

    def __init__(self, target_url: str, listen_url: str | None = None) -> None:
        scheme = parse_url(target_url)[0]
        if listen_url is None:
            # a wss:// listener would need a certificate: clients dial ws:// instead
            listen_url = f"{'ws' if scheme == 'wss' else scheme}://127.0.0.1:0"
        parse_url(listen_url)
        self.target_url = target_url
        self.listen_url = listen_url
        #: The bound URL clients dial (set once the proxy is entered).
        self.url = ""
        #: Connections accepted so far (by the listener or passed to :meth:`pump`).
        self.connections = 0
        #: Exceptions raised by :meth:`rewrite_next` functions.
        self.errors: list[BaseException] = []
        self.bytes_up = 0
        self.bytes_down = 0
        self.frames_up: collections.Counter[int] = collections.Counter()
        self.frames_down: collections.Counter[int] = collections.Counter()
        self.dropped_up: collections.Counter[int] = collections.Counter()
        self.dropped_down: collections.Counter[int] = collections.Counter()
        self.log: list[tuple[str, int, int]] = []
        self._blackholed: set[str] = set()
        self._rate: dict[str, float] = {}
        self._free_at: dict[str, float] = {}
        self._drops: dict[str, list[int]] = {"up": [], "down": []}
        self._rewrites: dict[str, list[tuple[int, Callable[[list[Any]], list[Any]]]]] = {
            "up": [],
            "down": [],
        }
        self._conns: set[_Conn] = set()
        self._changed = trio.Event()
        self._cm: AbstractAsyncContextManager[FaultyProxy] | None = None

    # ------------------------------------------------------------------ faults
    def blackhole(self, direction: str = "both") -> None:
        """Swallow frames in ``direction`` (``"up"``, ``"down"`` or ``"both"``) until
        :meth:`restore`; connections stay open."""
        self._blackholed.update(_dirs(direction))
        self._notify()

    def restore(self) -> None:
        """Undo :meth:`blackhole` and :meth:`throttle` in both directions."""
        self._blackholed.clear()
        self._rate.clear()
        self._free_at.clear()
        self._notify()

    def reset(self) -> None:
        """Abruptly close all current connections, on both sides (a TCP RST; WebSocket
        peers see 1006). The proxy keeps listening."""
        for conn in list(self._conns):
            conn.reset = True
            conn.scope.cancel()

    def throttle(self, bytes_per_s: float, direction: str = "down") -> None:
        """Forward at most ``bytes_per_s`` (counted as in :attr:`bytes_up`) in
        ``direction``; a frame of ``n`` bytes takes ``n / bytes_per_s`` seconds. The rate
        is per direction, shared by all connections."""
        if not bytes_per_s > 0:
            raise ValueError(f"bytes_per_s must be positive, not {bytes_per_s!r}")
        for d in _dirs(direction):
            self._rate[d] = float(bytes_per_s)
            self._free_at.pop(d, None)

    def drop_next(self, kind: int, direction: str = "down") -> None:
        """Drop the next frame of ``kind`` in ``direction`` (with ``"both"``: the next one
        in each direction)."""
        for d in _dirs(direction):
            self._drops[d].append(kind)

    def rewrite_next(
        self, kind: int, fn: Callable[[list[Any]], list[Any]], direction: str = "down"
    ) -> None:
        """Replace the next frame of ``kind`` in ``direction`` with ``fn(decoded)``,
        re-encoded (with ``"both"``: the next one in each direction)."""
        for d in _dirs(direction):
            self._rewrites[d].append((kind, fn))

    def reset_counters(self) -> None:
        """Zero the byte and frame counters, the dropped counters and :attr:`log`
        (:attr:`connections` is kept)."""
        self.bytes_up = self.bytes_down = 0
        self.frames_up.clear()
        self.frames_down.clear()
        self.dropped_up.clear()
        self.dropped_down.clear()
        self.log.clear()
        self._notify()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` is true; it is checked now and after every frame
        the proxy forwards or drops and every connection that starts or ends. Put it
        under ``trio.fail_after``."""
        while not predicate():
            await self._changed.wait()

    @property
    def active(self) -> int:
        """Connections being pumped right now."""
        return len(self._conns)

    def _notify(self) -> None:
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    # ------------------------------------------------------------------ lifetime
    async def __aenter__(self) -> FaultyProxy:
        if self._cm is not None:
            raise RuntimeError("this FaultyProxy is already running")
        self._cm = self._run()
        return await self._cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm, self._cm = self._cm, None
        assert cm is not None
        return await cm.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[FaultyProxy]:
        async with trio.open_nursery() as nursery:
            self.url = await nursery.start(
                lambda task_status: serve_streams(
                    self.listen_url,
                    self._on_client,
                    max_frame=PROXY_FRAME_LIMIT,
                    hard_frame=PROXY_FRAME_LIMIT,
                    task_status=task_status,
                )
            )
            try:
                yield self
            finally:
                self.reset()
                nursery.cancel_scope.cancel()

    async def _on_client(self, client_side: FrameStream) -> None:
        try:
            server_side = await connect_stream(
                self.target_url, max_frame=PROXY_FRAME_LIMIT, hard_frame=PROXY_FRAME_LIMIT
            )
        except (OSError, trio.TooSlowError, StreamClosed) as exc:
            _log.info("FaultyProxy: cannot reach %s: %r", self.target_url, exc)
            self.connections += 1
            self._notify()
            await client_side.abort()
            return
        await self.pump(client_side, server_side)

    # ------------------------------------------------------------------ the pump
    async def pump(self, client_side: FrameStream, server_side: FrameStream) -> None:
        """Pump frames between ``client_side`` and ``server_side`` until one side closes
        (the close is passed on, with its code) or :meth:`reset`. Both streams are closed
        on return."""
        conn = _Conn(client_side, server_side)
        self._conns.add(conn)
        self.connections += 1
        self._notify()
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._forward, conn, "up", client_side, server_side, nursery)
                    nursery.start_soon(
                        self._forward, conn, "down", server_side, client_side, nursery
                    )
        except BaseException:
            conn.reset = True
            raise
        finally:
            self._conns.discard(conn)
            with trio.CancelScope(shield=True):
                if conn.reset:
                    await client_side.abort()
                    await server_side.abort()
                else:
                    code = conn.close_code if conn.close_code is not None else 1000
                    first, second = (
                        (server_side, client_side)
                        if conn.closed_by == "up"
                        else (client_side, server_side)
                    )
                    for fs in (first, second):
                        with trio.move_on_after(fs.close_timeout + 0.5):
                            await fs.aclose(code, conn.close_reason)
                        if not fs.closed:  # pragma: no cover
                            await fs.abort()
            self._notify()

    async def _forward(
        self,
        conn: _Conn,
        direction: str,
        src: FrameStream,
        dst: FrameStream,
        nursery: trio.Nursery,
    ) -> None:
        try:
            while True:
                try:
                    data = await src.receive_frame()
                except EmptyFrame:
                    data = b""
                except FrameTooLarge as exc:
                    if exc.fatal:
                        conn.reset = True
                        break
                    continue  # the body is gone: nothing to forward
                try:
                    await self._handle(direction, data, dst)
                except StreamClosed:
                    # dst is gone: the forwarder reading from dst passes that close on
                    await trio.sleep_forever()
        except StreamClosed as exc:
            if conn.closed_by is None:
                conn.closed_by = direction
                conn.close_code = exc.code
                conn.close_reason = exc.reason
            # a silent cut hides the close too, until restore() or reset()
            while direction in self._blackholed:
                await self._changed.wait()
        nursery.cancel_scope.cancel()

    def _drop(self, direction: str, kind: int) -> None:
        (self.dropped_up if direction == "up" else self.dropped_down)[kind] += 1
        self._notify()

    async def _handle(self, direction: str, data: bytes, dst: FrameStream) -> None:
        if direction in self._blackholed:
            self._drop(direction, frame_kind(data))
            return
        try:
            obj: Any = _decode(data)
            kind = _kind_of(obj)
        except Exception:
            obj, kind = None, -1
        drops = self._drops[direction]
        if kind in drops:
            drops.remove(kind)
            self._drop(direction, kind)
            return
        rewrites = self._rewrites[direction]
        for i, (k, fn) in enumerate(rewrites):
            if k == kind:
                del rewrites[i]
                try:
                    data = msgpack.packb(fn(obj), use_bin_type=True)
                except BaseException as exc:
                    self.errors.append(exc)
                    raise
                kind = frame_kind(data)
                break
        size = len(data) + (4 if dst.kind == "tcp" else 0)
        rate = self._rate.get(direction)
        if rate is not None:
            now = trio.current_time()
            done = max(now, self._free_at.get(direction, now)) + size / rate
            self._free_at[direction] = done
            await trio.sleep_until(done)
            if direction in self._blackholed:
                self._drop(direction, kind)
                return
        # counted before the send, so a peer that has the frame always sees it counted
        if direction == "up":
            self.bytes_up += size
            self.frames_up[kind] += 1
        else:
            self.bytes_down += size
            self.frames_down[kind] += 1
        self.log.append((direction, kind, size))
        self._notify()
        await dst.send_frame(data)
