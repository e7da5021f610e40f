"""The relay: TCP over WebSocket, both ways, on one port (arpc.md C2).

A browser page can only speak WebSocket. The relay turns its WebSockets into TCP
connections (``/dial``) and TCP listeners (``/listen``), frame by frame, so that:

- a page reaches an aRPC server that only listens on ``tcp://`` (``/dial``), and
- a Python client reaches a machine hosted by a page (``/listen``): the page offers
  idle tunnels, and each TCP connection to the listen address takes one.

One TCP frame (a ``u32`` length and msgpack bytes) is one WebSocket binary message, in
both directions. Each direction carries one frame at a time, so a slow reader slows the
writer on the other side (backpressure goes through). ``max_frame`` is checked on both
sides: a larger frame is dropped and its sender gets an error with code 4, and nothing
is forwarded.

The same port serves plain HTTP: ``/healthz`` (JSON counts), ``/am.js`` (the browser
library) and, optionally, static files.

In-process handlers let a page reach a machine of this process without TCP:
``dial_handlers`` map an id regex to ``async fn(id, frame_stream)`` (e.g.
``am.rpc.serve_stream(mach, fs)``); ``listen_handlers`` run ``fn(id, frame_stream)`` on
the first tunnel a page offers under a matching id, with this process as the client
(e.g. ``am.rpc.attach(fs, id=...)``). :meth:`Relay.connect_listener` takes a further
tunnel of a page at any time.
"""

from __future__ import annotations

import collections
import importlib.resources
import json
import logging
import math
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError

from .._runtime._machine import Machine
from ..rpc.transport import (
    DEFAULT_HARD_FRAME,
    DEFAULT_MAX_FRAME,
    EmptyFrame,
    FrameStream,
    FrameTooLarge,
    StreamClosed,
    TcpFrameStream,
    WsFrameStream,
    _peer_of,
    memory_pair,
)
from ._rules import (
    DEFAULT_ALLOW_LISTEN,
    OriginPolicy,
    RelayCode,
    Route,
    RouteError,
    TargetRules,
    bridged_frame,
    error_frame,
    format_target,
    parse_route,
    parse_target,
    tcp_error_frame,
)
from .states import RELAY_SCHEMA

__all__ = ["Handler", "Relay", "RelayError", "am_js_path", "serve_relay"]

_log = logging.getLogger("trio_am.relay")

#: ``async fn(tunnel_id, frame_stream)``: an in-process end of a tunnel.
Handler = Callable[[str, FrameStream], Awaitable[None]]

_HEAD_LIMIT: Final = 16 * 1024
_HEAD_TIMEOUT: Final = 5.0
_SUBPROTOCOL: Final = "am-rpc.1"
_LOST: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_CLEAN_CLOSE: Final = frozenset({1000, 1001})


class RelayError(Exception):
    """A relay operation failed (e.g. :meth:`Relay.connect_listener` found no tunnel).

    Attributes:
        code: the :class:`~trio_am.relay.RelayCode`.
    """

    def __init__(self, code: RelayCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def am_js_path() -> Path:
    """The path of the bundled browser library ``am.js`` inside the installed package."""
    return Path(str(importlib.resources.files("trio_am.relay") / "static" / "am.js"))


class _Tunnel:
    """An idle listen tunnel; a taker sets ``peer`` and cancels ``scope``."""

    __slots__ = ("done", "fs", "peer", "peer_name", "scope")

    def __init__(self, fs: WsFrameStream) -> None:
        self.fs = fs
        self.done = trio.Event()  # the tunnel's task ended (the peer stream is closed)
        self.scope: trio.CancelScope | None = None
        self.peer: FrameStream | None = None
        self.peer_name = ""


class _Pool:
    """The idle tunnels a page offers under one id (and the TCP listener, if any)."""

    def __init__(self, tid: str, target: tuple[str, int] | None) -> None:
        self.id = tid
        self.target = target
        self.idle: collections.deque[_Tunnel] = collections.deque()
        self.waiters: list[trio.Event] = []
        self.members = 0  # idle + bridged tunnels
        self.scope: trio.CancelScope | None = None  # the TCP listener's task
        self.port = 0
        self.handler_started = False

    def notify(self) -> None:
        waiters, self.waiters = self.waiters, []
        for ev in waiters:
            ev.set()


def _compile(handlers: Mapping[str, Handler] | None) -> list[tuple[re.Pattern[str], Handler]]:
    return [(re.compile(p), fn) for p, fn in (handlers or {}).items()]


def _match(handlers: list[tuple[re.Pattern[str], Handler]], tid: str) -> Handler | None:
    for pat, fn in handlers:
        if pat.search(tid):
            return fn
    return None


def _ip_of(peer: str) -> str:
    host, _, _ = peer.rpartition(":")
    return host.strip("[]") or peer


class Relay:
    """TCP over WebSocket, both ways, with its own machine; see the module docstring.

    Create it with :func:`serve_relay` (or call :meth:`serve` in a nursery).

    Args:
        allow_dial: targets ``/dial`` may reach (``"host:port"``, ``"host:lo-hi"``,
            ``"host:*"``, host ``*`` or ``loopback``). Empty (the default): none, so the
            relay is never an open proxy.
        allow_listen: addresses ``/listen`` may open (default: loopback, ports
            1024-65535).
        allow_origin: origins of pages (besides the relay's own) that may open tunnels;
            ``"*"`` allows any. A refused page gets HTTP 403.
        static_dir: a folder served over plain GET (``/`` is ``index.html``).
        dial_handlers, listen_handlers: id regex -> ``async fn(id, frame_stream)``.
        max_frame, hard_frame: frame limits on both sides (B10).
        max_per_ip: open tunnels per client IP.
        idle_timeout: a bridged tunnel with no frame either way for this long is closed
            (aRPC heartbeats keep a live one busy).
        overload_wait: how long a TCP client waits for an idle tunnel before
            ``ERROR OVERLOAD``.
        connect_timeout: for dialling a TCP target.
        listen_grace: a listener with no tunnels left is closed after this long.
        write_timeout: a send blocked this long ends the tunnel.
        name: the machine's id is ``relay-<name>``. With ``AM_RELAY_DBG`` set, the
            machine gets the ``AM_*`` telemetry (``trio_am.telemetry.env.bind_env``).

    Attributes:
        mach: the relay's machine (:data:`~trio_am.relay.RELAY_SCHEMA`, tagged ``relay``).
        addr: ``"host:port"`` once serving.
    """

    def __init__(
        self,
        *,
        allow_dial: Iterable[str] = (),
        allow_listen: Iterable[str] = DEFAULT_ALLOW_LISTEN,
        allow_origin: Iterable[str] = (),
        static_dir: str | Path | None = None,
        dial_handlers: Mapping[str, Handler] | None = None,
        listen_handlers: Mapping[str, Handler] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        hard_frame: int = DEFAULT_HARD_FRAME,
        max_per_ip: int = 32,
        idle_timeout: float = 120.0,
        overload_wait: float = 5.0,
        connect_timeout: float = 3.0,
        listen_grace: float = 5.0,
        write_timeout: float = 10.0,
        name: str = "relay",
    ) -> None:
        if max_frame <= 0 or hard_frame < max_frame:
            raise ValueError(f"need 0 < max_frame <= hard_frame, got {max_frame}, {hard_frame}")
        self.allow_dial = TargetRules(allow_dial)
        self.allow_listen = TargetRules(allow_listen)
        self.origins = OriginPolicy(allow_origin)
        self.static_dir = None if static_dir is None else Path(static_dir).resolve()
        self.max_frame = max_frame
        self.hard_frame = hard_frame
        self.max_per_ip = max_per_ip
        self.idle_timeout = idle_timeout
        self.overload_wait = overload_wait
        self.connect_timeout = connect_timeout
        self.listen_grace = listen_grace
        self.write_timeout = write_timeout
        self.mach = Machine(RELAY_SCHEMA, id=f"relay-{name}", tags=("relay",))
        self.addr = ""
        self._dial_handlers = _compile(dial_handlers)
        self._listen_handlers = _compile(listen_handlers)
        self._pools: dict[str, _Pool] = {}
        self._by_target: dict[tuple[str, int], _Pool] = {}
        self._pool_added = trio.Event()
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._counts = collections.Counter[str]()
        self._tunnels = 0
        self._bridged = 0

    # ---------------------------------------------------------------- public API
    @property
    def url(self) -> str:
        """``http://host:port`` of the relay (pages, ``/am.js``, ``/healthz``)."""
        return f"http://{self.addr}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port``: prefix of ``/dial/…`` and ``/listen/…`` tunnels."""
        return f"ws://{self.addr}"

    def add_dial_handler(self, pattern: str, fn: Handler) -> None:
        """Hand WebSockets ``/dial/<id>`` with ``<id>`` matching ``pattern`` to ``fn``."""
        self._dial_handlers.append((re.compile(pattern), fn))

    def add_listen_handler(self, pattern: str, fn: Handler) -> None:
        """Run ``fn(id, fs)`` on the first tunnel a page offers under a matching id."""
        self._listen_handlers.append((re.compile(pattern), fn))

    def stats(self) -> dict[str, int]:
        """Counts, as served on ``/healthz``: open tunnels (WebSockets), idle listen
        tunnels, bridged tunnels, listeners, and totals since the start."""
        return {
            "tunnels": self._tunnels,
            "idle": sum(len(p.idle) for p in self._pools.values()),
            "bridged": self._bridged,
            "pools": len(self._pools),
            "listeners": sum(1 for p in self._pools.values() if p.scope is not None),
            "opened": self._counts["opened"],
            "refused": self._counts["refused"],
            "failed": self._counts["failed"],
            "overload": self._counts["overload"],
            "peer_errors": self._counts["peer_errors"],
        }

    def listen_port(self, tid: str) -> int | None:
        """The TCP port of the listener opened for page ``tid`` (None if there is none)."""
        pool = self._pools.get(tid)
        return pool.port if pool is not None and pool.scope is not None else None

    async def connect_listener(self, tid: str, timeout: float = 5.0) -> FrameStream:
        """Take an idle tunnel of page ``tid`` and return this process's end of it, as a
        TCP client of the listen address would (the page gets ``RELAY_BRIDGED "local"``).
        Waits up to ``timeout`` for the page to offer one.

        Raises:
            RelayError: OVERLOAD when no tunnel came in time.
        """
        with trio.move_on_after(timeout):
            while (pool := self._pools.get(tid)) is None:
                await self._pool_added.wait()
            mine, theirs = memory_pair(max_frame=self.max_frame, hard_frame=self.hard_frame)
            tunnel = await self._take(pool, timeout)
            if tunnel is not None:
                self._hand_over(tunnel, theirs, "local")
                return mine
        raise RelayError(RelayCode.OVERLOAD, f"no idle tunnel of {tid!r} within {timeout} s")

    async def serve(
        self,
        addr: str = "127.0.0.1:12733",
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``addr`` (``host:port``; port 0 picks one) until cancelled. With
        ``nursery.start`` it reports the bound ``host:port``."""
        host, port = _split_addr(addr)
        sockets = await trio.open_tcp_listeners(port, host=host)
        if port == 0 and len(sockets) > 1:
            for extra in sockets[1:]:
                await extra.aclose()
            sockets = sockets[:1]
        self.addr = format_target(host, sockets[0].socket.getsockname()[1])
        if os.environ.get("AM_RELAY_DBG"):
            from ..telemetry.env import bind_env

            bind_env(self.mach)
        self.mach.add1("Start")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.mach.add1("Listening", {"addr": self.addr})
                task_status.started(self.addr)
                await trio.serve_listeners(self._on_connection, sockets, handler_nursery=nursery)
        finally:
            self._stopping = True
            self._nursery = None
            self.mach.remove1("Start")

    # ---------------------------------------------------------------- connections
    async def _on_connection(self, raw: trio.SocketStream) -> None:
        peer = _peer_of(raw)
        try:
            with trio.fail_after(_HEAD_TIMEOUT):
                head = await _read_head(raw)
            if head is None:
                await trio.aclose_forcefully(raw)
                return
            conn = h11.Connection(h11.SERVER)
            conn.receive_data(head)
            req = conn.next_event()
            if not isinstance(req, h11.Request):
                await _plain(raw, 400, b"bad request\n")
                return
            headers = {k.lower(): v for k, v in req.headers}
            if headers.get(b"upgrade", b"").lower() == b"websocket":
                await self._on_websocket(raw, head, headers, peer)
            else:
                await self._on_http(raw, conn, req)
        except (trio.TooSlowError, h11.RemoteProtocolError, *_LOST) as exc:
            _log.debug("relay: connection from %s dropped: %r", peer, exc)
            await trio.aclose_forcefully(raw)

    async def _on_http(
        self, raw: trio.SocketStream, conn: h11.Connection, req: h11.Request
    ) -> None:
        method = req.method.decode("ascii", "replace")
        path = req.target.decode("utf-8", "replace").split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await _respond(raw, conn, 405, b"method not allowed\n", "text/plain", method)
            return
        if path == "/healthz":
            body = json.dumps(self.stats()).encode()
            await _respond(raw, conn, 200, body, "application/json", method)
            return
        if path == "/am.js":
            body = am_js_path().read_bytes()
            await _respond(raw, conn, 200, body, "text/javascript; charset=utf-8", method)
            return
        file = self._static_file(path)
        if file is None:
            await _respond(raw, conn, 404, b"not found\n", "text/plain", method)
            return
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.suffix in (".js", ".mjs"):
            ctype = "text/javascript"
        if ctype.startswith("text/") or ctype == "application/json":
            ctype += "; charset=utf-8"
        body = await trio.Path(file).read_bytes()
        await _respond(raw, conn, 200, body, ctype, method)

    def _static_file(self, path: str) -> Path | None:
        if self.static_dir is None:
            return None
        rel = path.lstrip("/") or "index.html"
        try:
            file = (self.static_dir / rel).resolve()
        except (OSError, ValueError):
            return None
        if not file.is_relative_to(self.static_dir):
            return None
        if file.is_dir():
            file = file / "index.html"
        return file if file.is_file() else None

    async def _on_websocket(
        self, raw: trio.SocketStream, head: bytes, headers: dict[bytes, bytes], peer: str
    ) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        try:
            ws.receive_data(head)
        except RemoteProtocolError as exc:
            if exc.event_hint is not None:
                await raw.send_all(ws.send(exc.event_hint))
            await raw.aclose()
            return
        req = next((ev for ev in ws.events() if isinstance(ev, Request)), None)
        if req is None:
            await _plain(raw, 400, b"bad WebSocket request\n")
            return
        origin = headers.get(b"origin")
        host = headers.get(b"host")
        if not self.origins.allows(
            None if origin is None else origin.decode("latin-1"),
            None if host is None else host.decode("latin-1"),
        ):
            self._counts["refused"] += 1
            self.mach.add1("OriginRefused", {"origin": origin, "peer": peer})
            await _reject(raw, ws, 403, b"origin not allowed\n")
            return
        ip = _ip_of(peer)
        if self._per_ip[ip] >= self.max_per_ip:
            self._counts["overload"] += 1
            await _reject(raw, ws, 429, b"too many tunnels from this address\n")
            return
        sub = _SUBPROTOCOL if _SUBPROTOCOL in req.subprotocols else None
        await raw.send_all(ws.send(AcceptConnection(subprotocol=sub)))
        fs = WsFrameStream(
            raw,
            ws,
            peer=peer,
            subprotocol=sub,
            path=req.target,
            max_frame=self.max_frame,
            hard_frame=self.hard_frame,
        )
        self._per_ip[ip] += 1
        self._tunnels += 1
        self._counts["opened"] += 1
        self.mach.add(["TunnelOpened", "HasTunnels"], {"peer": peer, "path": req.target})
        try:
            try:
                route = parse_route(req.target)
            except RouteError as exc:
                await self._fail(fs, exc.code, str(exc))
                return
            if route.mode == "dial":
                await self._dial(fs, route)
            else:
                await self._listen(fs, route)
        finally:
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]
            self._tunnels -= 1
            self.mach.add1("TunnelClosed", {"peer": peer, "path": req.target})
            if not self._tunnels:
                self.mach.remove1("HasTunnels")
            with trio.CancelScope(shield=True):
                if self._stopping and not fs.closed:
                    with trio.move_on_after(0.5):
                        await _send_quietly(
                            fs, error_frame(RelayCode.SHUTDOWN, "the relay stopped")
                        )
                await fs.aclose(1001 if self._stopping else 1000)

    async def _fail(self, fs: FrameStream, code: RelayCode, message: str) -> None:
        """Send ``RELAY_ERROR`` and let the caller close the tunnel."""
        if code in (RelayCode.NOT_ALLOWED, RelayCode.BAD_TARGET):
            self._counts["refused"] += 1
            self.mach.add1("TargetRefused", {"code": int(code), "msg": message})
        else:
            self._counts["failed"] += 1
            self.mach.add1("TargetFailed", {"code": int(code), "msg": message})
        with trio.move_on_after(self.write_timeout):
            await _send_quietly(fs, error_frame(code, message))

    # ---------------------------------------------------------------- dial
    async def _dial(self, fs: WsFrameStream, route: Route) -> None:
        handler = _match(self._dial_handlers, route.id)
        if handler is not None:
            await self._run_handler(handler, route.id, fs)
            return
        if route.target is None:
            await self._fail(
                fs, RelayCode.BAD_TARGET, f"no host:port and no dial handler for {route.id!r}"
            )
            return
        host, port = route.target
        target = format_target(host, port)
        if not self.allow_dial.allows(host, port):
            await self._fail(fs, RelayCode.NOT_ALLOWED, f"dialling {target} is not allowed")
            return
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            await self._fail(fs, RelayCode.UNREACHABLE, f"cannot reach {target}: {exc}")
            return
        if route.raw:
            await self._bridge_raw(fs, stream, target)
            return
        tcp = TcpFrameStream(
            stream, peer=target, max_frame=self.max_frame, hard_frame=self.hard_frame
        )
        try:
            await self._bridge(fs, tcp, target, dial=True)
        finally:
            with trio.CancelScope(shield=True):
                await tcp.aclose()

    async def _run_handler(self, handler: Handler, tid: str, fs: FrameStream) -> None:
        self._bridged += 1
        self.mach.add1("Bridged", {"id": tid, "peer": "local"})
        try:
            await handler(tid, fs)
        except Exception as exc:
            _log.exception("relay: handler for tunnel %r failed", tid)
            if not fs.closed:
                with trio.move_on_after(1.0):
                    await _send_quietly(
                        fs, error_frame(RelayCode.INTERNAL, f"handler failed: {exc!r}")
                    )
        finally:
            self._bridged -= 1

    # ---------------------------------------------------------------- listen
    async def _listen(self, fs: WsFrameStream, route: Route) -> None:
        handler = _match(self._listen_handlers, route.id)
        pool = self._pools.get(route.id)
        if route.target is None and handler is None:
            await self._fail(
                fs, RelayCode.BAD_TARGET, f"no host:port and no listen handler for {route.id!r}"
            )
            return
        if pool is not None and route.target is not None and pool.target != route.target:
            await self._fail(fs, RelayCode.BAD_TARGET, f"tunnel id {route.id!r} listens elsewhere")
            return
        if pool is None:
            if route.target is not None:
                host, port = route.target
                other = self._by_target.get(route.target)
                if not self.allow_listen.allows(host, port):
                    await self._fail(
                        fs,
                        RelayCode.NOT_ALLOWED,
                        f"listening on {format_target(host, port)} is not allowed",
                    )
                    return
                if other is not None:
                    await self._fail(
                        fs,
                        RelayCode.NOT_ALLOWED,
                        f"{format_target(host, port)} is taken by {other.id!r}",
                    )
                    return
            pool = _Pool(route.id, route.target)
            if route.target is not None:
                try:
                    await self._open_listener(pool)
                except OSError as exc:
                    await self._fail(fs, RelayCode.UNREACHABLE, f"cannot listen: {exc}")
                    return
            self._pools[route.id] = pool
            if route.target is not None:
                self._by_target[route.target] = pool
            self._pool_added.set()
            self._pool_added = trio.Event()
        tunnel = _Tunnel(fs)
        pool.members += 1
        try:
            pool.idle.append(tunnel)
            pool.notify()
            if handler is not None and not pool.handler_started and self._nursery is not None:
                pool.handler_started = True
                self._nursery.start_soon(self._run_listen_handler, handler, route.id)
            with trio.CancelScope() as scope:
                tunnel.scope = scope
                await self._watch_idle(fs)
            if tunnel.peer is None:
                return
            with trio.move_on_after(self.write_timeout):
                await fs.send_frame(bridged_frame(tunnel.peer_name))
            await self._bridge(fs, tunnel.peer, tunnel.peer_name, dial=False)
        except StreamClosed:
            pass
        finally:
            if tunnel in pool.idle:
                pool.idle.remove(tunnel)
            if tunnel.peer is not None:
                with trio.CancelScope(shield=True):
                    await tunnel.peer.aclose()
            tunnel.done.set()
            pool.members -= 1
            if not pool.members and self._nursery is not None:
                self._nursery.start_soon(self._reap, pool)

    async def _watch_idle(self, fs: WsFrameStream) -> None:
        """Read an idle tunnel until it closes (or is taken: the scope is cancelled). A
        page must not send on an idle tunnel; such frames are dropped and counted."""
        while True:
            try:
                await fs.receive_frame()
            except (FrameTooLarge, EmptyFrame) as exc:
                if getattr(exc, "fatal", False):
                    return
            except StreamClosed:
                return
            self._counts["peer_errors"] += 1
            self.mach.add1("PeerError", {"msg": "a frame on an idle listen tunnel"})

    async def _open_listener(self, pool: _Pool) -> None:
        assert pool.target is not None and self._nursery is not None
        host, port = pool.target
        sockets = await trio.open_tcp_listeners(port, host=host)
        pool.port = sockets[0].socket.getsockname()[1]
        scope = trio.CancelScope()
        pool.scope = scope

        async def on_accept(stream: trio.SocketStream) -> None:
            await self._on_listen_accept(pool, stream)

        async def accept_loop() -> None:
            try:
                with scope:
                    await trio.serve_listeners(
                        on_accept,
                        sockets,
                        handler_nursery=self._nursery,
                    )
            finally:
                for s in sockets:
                    await trio.aclose_forcefully(s)

        self._nursery.start_soon(accept_loop)
        self.mach.add1("ListenerOpened", {"id": pool.id, "addr": format_target(host, pool.port)})

    async def _on_listen_accept(self, pool: _Pool, stream: trio.abc.Stream) -> None:
        peer = _peer_of(stream)
        tcp = TcpFrameStream(
            stream, peer=peer, max_frame=self.max_frame, hard_frame=self.hard_frame
        )
        tunnel = await self._take(pool, self.overload_wait)
        if tunnel is None:
            self._counts["overload"] += 1
            self.mach.add1("TargetFailed", {"code": int(RelayCode.OVERLOAD), "id": pool.id})
            with trio.move_on_after(1.0):
                await _send_quietly(
                    tcp, tcp_error_frame(RelayCode.OVERLOAD, f"no idle tunnel of {pool.id!r}", True)
                )
            await tcp.aclose()
            return
        self._hand_over(tunnel, tcp, peer)
        # serve_listeners closes the stream when this returns: wait for the bridge
        await tunnel.done.wait()

    async def _take(self, pool: _Pool, timeout: float) -> _Tunnel | None:
        with trio.move_on_after(timeout):
            while True:
                while pool.idle:
                    tunnel = pool.idle.popleft()
                    if tunnel.scope is not None and tunnel.peer is None and not tunnel.fs.closed:
                        return tunnel
                ev = trio.Event()
                pool.waiters.append(ev)
                await ev.wait()
        return None

    def _hand_over(self, tunnel: _Tunnel, peer: FrameStream, name: str) -> None:
        tunnel.peer = peer
        tunnel.peer_name = name
        assert tunnel.scope is not None
        tunnel.scope.cancel()
        self.mach.add1("Bridged", {"peer": name})

    async def _run_listen_handler(self, handler: Handler, tid: str) -> None:
        try:
            fs = await self.connect_listener(tid, self.overload_wait)
        except RelayError as exc:
            _log.warning("relay: listen handler for %r got no tunnel: %s", tid, exc)
            return
        try:
            await handler(tid, fs)
        except Exception:
            _log.exception("relay: listen handler for %r failed", tid)
        finally:
            with trio.CancelScope(shield=True):
                await fs.aclose()

    async def _reap(self, pool: _Pool) -> None:
        """Close a pool (and its listener) that stays without tunnels for a while."""
        await trio.sleep(self.listen_grace)
        if pool.members or self._pools.get(pool.id) is not pool:
            return
        del self._pools[pool.id]
        if pool.target is not None:
            self._by_target.pop(pool.target, None)
        if pool.scope is not None:
            pool.scope.cancel()
            pool.scope = None
            self.mach.add1("ListenerClosed", {"id": pool.id})

    # ---------------------------------------------------------------- bridging
    async def _bridge(self, ws: FrameStream, other: FrameStream, label: str, *, dial: bool) -> None:
        """Move frames both ways until one side ends; see the module docstring.
        ``dial``: ``other`` is the dialled target (its end is a failure to report)."""
        last = [trio.current_time()]

        async def pump(src: FrameStream, dst: FrameStream, from_ws: bool) -> None:
            # One cancel scope per direction; its deadline is armed only while a frame
            # is being sent (cheaper than a fail_after per frame on this hot path).
            with trio.CancelScope() as write:
                while True:
                    try:
                        frame = await src.receive_frame()
                    except (FrameTooLarge, EmptyFrame) as exc:
                        if await self._bad_frame(src, exc, from_ws):
                            nursery.cancel_scope.cancel()
                            return
                        continue
                    except StreamClosed as exc:
                        await self._side_closed(ws, other, from_ws, exc, label, dial)
                        nursery.cancel_scope.cancel()
                        return
                    now = last[0] = trio.current_time()
                    write.deadline = now + self.write_timeout
                    try:
                        await dst.send_frame(frame)
                    except StreamClosed as exc:
                        await self._side_closed(ws, other, not from_ws, exc, label, dial)
                        nursery.cancel_scope.cancel()
                        return
                    write.deadline = math.inf
            # only a blocked send gets here
            lost = StreamClosed(f"a send was blocked for {self.write_timeout} s")
            await self._side_closed(ws, other, not from_ws, lost, label, dial)
            nursery.cancel_scope.cancel()

        async def watchdog() -> None:
            while True:
                deadline = last[0] + self.idle_timeout
                if trio.current_time() >= deadline:
                    msg = f"no frame either way for {self.idle_timeout} s"
                    with trio.move_on_after(1.0):
                        await _send_quietly(ws, error_frame(RelayCode.TIMEOUT, msg))
                        await _send_quietly(other, tcp_error_frame(RelayCode.TIMEOUT, msg, True))
                    nursery.cancel_scope.cancel()
                    return
                await trio.sleep_until(deadline)

        self._bridged += 1
        if dial:
            self.mach.add1("Bridged", {"peer": label})
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, ws, other, True)
                nursery.start_soon(pump, other, ws, False)
                nursery.start_soon(watchdog)
        finally:
            self._bridged -= 1

    async def _bad_frame(self, src: FrameStream, exc: Exception, from_ws: bool) -> bool:
        """A frame over ``max_frame`` (or empty) was dropped: tell its sender (code 4 or
        1). Returns True when the tunnel must end (over ``hard_frame``)."""
        fatal = bool(getattr(exc, "fatal", False))
        code = RelayCode.TOO_LARGE if isinstance(exc, FrameTooLarge) else RelayCode.MALFORMED
        self._counts["peer_errors"] += 1
        self.mach.add1("PeerError", {"code": int(code), "msg": str(exc), "peer": src.peer})
        msg = f"frame dropped by the relay: {exc}"
        with trio.move_on_after(self.write_timeout):
            if from_ws:
                await _send_quietly(src, error_frame(code, msg))
            else:
                await _send_quietly(src, tcp_error_frame(code, msg, fatal))
        return fatal

    async def _side_closed(
        self,
        ws: FrameStream,
        other: FrameStream,
        ws_side: bool,
        exc: StreamClosed,
        label: str,
        dial: bool,
    ) -> None:
        """One side ended: tell the other one (RELAY_ERROR on WS, ERROR on TCP), unless
        it was a clean close by the page or a client leaving a page's listen tunnel."""
        with trio.move_on_after(1.0):
            if ws_side:
                if exc.code not in _CLEAN_CLOSE and other.kind == "tcp":
                    msg = f"the WebSocket side closed ({exc.code}: {exc.reason})"
                    await _send_quietly(other, tcp_error_frame(RelayCode.TARGET_CLOSED, msg, True))
            elif dial or (other.kind != "tcp" and exc.code not in _CLEAN_CLOSE):
                self._counts["failed"] += 1
                self.mach.add1(
                    "TargetFailed", {"code": int(RelayCode.TARGET_CLOSED), "peer": label}
                )
                await _send_quietly(
                    ws, error_frame(RelayCode.TARGET_CLOSED, f"{label} closed: {exc.reason}")
                )

    async def _bridge_raw(self, ws: FrameStream, stream: trio.SocketStream, label: str) -> None:
        """``?raw=1``: WebSocket messages become TCP bytes unchanged, and TCP bytes become
        messages (as they arrive)."""

        async def up() -> None:
            while True:
                try:
                    data = await ws.receive_frame()
                except (FrameTooLarge, EmptyFrame):
                    continue
                except StreamClosed:
                    break
                try:
                    await stream.send_all(data)
                except _LOST:
                    break
            nursery.cancel_scope.cancel()

        async def down() -> None:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except _LOST:
                    data = b""
                if not data:
                    with trio.move_on_after(1.0):
                        await _send_quietly(
                            ws, error_frame(RelayCode.TARGET_CLOSED, f"{label} closed")
                        )
                    break
                try:
                    await ws.send_frame(bytes(data))
                except StreamClosed:
                    break
            nursery.cancel_scope.cancel()

        self._bridged += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(up)
                nursery.start_soon(down)
        finally:
            self._bridged -= 1
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


# ------------------------------------------------------------------------ helpers
def _split_addr(addr: str) -> tuple[str, int]:
    if "://" in addr:
        addr = addr.split("://", 1)[1].rstrip("/")
    host, port = parse_target(addr) if not addr.endswith(":0") else (addr[:-2].strip("[]"), 0)
    return host, port


async def _read_head(raw: trio.SocketStream) -> bytes | None:
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        if len(buf) > _HEAD_LIMIT:
            await _plain(raw, 431, b"request head too large\n")
            return None
        data = await raw.receive_some(4096)
        if not data:
            return None
        buf += data
    return bytes(buf)


async def _respond(
    raw: trio.SocketStream, conn: h11.Connection, status: int, body: bytes, ctype: str, method: str
) -> None:
    headers = [
        ("content-type", ctype),
        ("content-length", str(len(body))),
        ("cache-control", "no-cache"),
        ("connection", "close"),
    ]
    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if method != "HEAD" and body:
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await raw.send_all(out)
    await raw.aclose()


async def _plain(raw: trio.SocketStream, status: int, body: bytes) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 431: "Too Large"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    await raw.send_all(head + body)
    await raw.aclose()


async def _reject(raw: trio.SocketStream, ws: WSConnection, status: int, body: bytes) -> None:
    out = ws.send(
        RejectConnection(
            status_code=status,
            headers=[
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
            has_body=True,
        )
    )
    out += ws.send(RejectData(data=body, body_finished=True))
    await raw.send_all(out)
    await raw.aclose()


async def _send_quietly(fs: FrameStream, data: bytes) -> None:
    try:
        await fs.send_frame(data)
    except StreamClosed:
        pass


@asynccontextmanager
async def serve_relay(addr: str = "127.0.0.1:0", **kwargs: Any) -> AsyncIterator[Relay]:
    """Run a :class:`Relay` on ``addr`` for the body of the ``async with``; takes the
    keyword arguments of :class:`Relay`. Yields it serving (``relay.url`` is set)."""
    relay = Relay(**kwargs)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve, addr)
            try:
                yield relay
            finally:
                relay._stopping = True
                nursery.cancel_scope.cancel()
    finally:
        relay.mach.dispose()
