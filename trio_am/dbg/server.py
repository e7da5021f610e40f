"""The debugger's TCP listener: reporters' frames → :meth:`Model.ingest` (tools.md §1.7).

One task per connection reads bytes into a sans-I/O :class:`~trio_am.telemetry._wire.Decoder`,
stamps each decoded message with its receive time (``time.time_ns()``), hands it to the
optional ``on_message`` callback (the headless recorder) and to the model. A bad frame
(too large, not msgpack, not an array with a kind) closes that connection only; its clients
turn disconnected, the server keeps serving. A busy port raises :class:`AddressInUseError`.

    async with trio.open_nursery() as nursery:
        server = DbgServer(model)
        host, port = await nursery.start(server.serve, "127.0.0.1", 6831)
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

import trio

from trio_am.dbg.model import Model
from trio_am.telemetry import _wire

__all__ = ["DEFAULT_ADDR", "AddressInUseError", "DbgServer", "parse_addr", "serve_dbg"]

DEFAULT_ADDR = ("localhost", 6831)
_RECV = 256 * 1024

OnMessage = Callable[[int, int, list[Any]], None]


class AddressInUseError(OSError):
    """The listen address is taken; ``str()`` is ``address in use: HOST:PORT``."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"address in use: {host}:{port}")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return f"address in use: {self.host}:{self.port}"


def parse_addr(addr: str, default_port: int = DEFAULT_ADDR[1]) -> tuple[str, int]:
    """``HOST:PORT`` / ``:PORT`` / ``HOST`` / ``[::1]:PORT`` → ``(host, port)``; raises
    ValueError on a bad port."""
    addr = addr.strip()
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, _, port_s = addr.partition(":")
    else:
        host, port_s = addr, ""
    host = host or DEFAULT_ADDR[0]
    if not port_s:
        return host, default_port
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"bad port in address {addr!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad port in address {addr!r}")
    return host, port


class DbgServer:
    """Serves reporters on TCP and feeds ``model``.

    ``on_message(rt, conn_id, msg)`` runs for every decoded message before the model gets
    it; ``on_change()`` after each received chunk was applied (UI redraw). Counters:
    ``connections`` (open now), ``accepted`` (ever), ``messages``, ``bad_frames``; the last
    rejected frame's error is ``last_error``.
    """

    def __init__(
        self,
        model: Model,
        *,
        on_message: OnMessage | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.on_message = on_message
        self.on_change = on_change
        self.connections = 0
        self.accepted = 0
        self.messages = 0
        self.bad_frames = 0
        self.last_error: str | None = None
        self.address: tuple[str, int] | None = None
        self._listeners: list[trio.SocketListener] = []

    async def bind(
        self, host: str = DEFAULT_ADDR[0], port: int = DEFAULT_ADDR[1]
    ) -> tuple[str, int]:
        """Open the listening sockets (port 0 = any free one) and return the bound
        ``(host, port)``; :meth:`run` then serves them. Raises :class:`AddressInUseError`
        when the address is taken."""
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise AddressInUseError(host, port) from e
            raise
        self._listeners = listeners
        bound = int(listeners[0].socket.getsockname()[1]) if listeners else port
        self.address = (host, bound)
        self.model.listen_addr = f"{host}:{bound}"
        self.model.version += 1
        return self.address

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the sockets :meth:`bind` opened until cancelled."""
        listeners, self._listeners = self._listeners, []
        if self.address is None or not listeners:
            raise RuntimeError("bind() first")
        async with trio.open_nursery() as nursery:
            for ln in listeners:
                nursery.start_soon(self._accept_loop, ln, nursery)
            task_status.started(self.address)

    async def aclose(self) -> None:
        """Close sockets :meth:`bind` opened that :meth:`run` did not take over."""
        listeners, self._listeners = self._listeners, []
        for ln in listeners:
            await ln.aclose()

    async def serve(
        self,
        host: str = DEFAULT_ADDR[0],
        port: int = DEFAULT_ADDR[1],
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """:meth:`bind` then :meth:`run`: listen on ``host:port`` until cancelled;
        ``task_status`` gets the bound ``(host, port)``."""
        await self.bind(host, port)
        await self.run(task_status=task_status)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError:  # EMFILE & co: back off, keep serving
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(self.handle, stream)

    async def handle(self, stream: trio.abc.ReceiveStream) -> None:
        """Read one reporter connection until EOF or a bad frame."""
        model = self.model
        conn_id = model.new_conn_id()
        dec = _wire.Decoder()
        on_message = self.on_message
        self.connections += 1
        self.accepted += 1
        try:
            while True:
                try:
                    data = await stream.receive_some(_RECV)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                if not data:
                    break
                dec.feed(data)
                try:
                    for msg in dec.events():
                        rt = time.time_ns()
                        self.messages += 1
                        if on_message is not None:
                            on_message(rt, conn_id, msg)
                        model.ingest(conn_id, msg, rt)
                except _wire.WireError as e:
                    self.bad_frames += 1
                    self.last_error = str(e)
                    break
                finally:
                    if self.on_change is not None:
                        self.on_change()
        finally:
            self.connections -= 1
            model.conn_closed(conn_id)
            if self.on_change is not None:
                self.on_change()
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def serve_dbg(
    model: Model,
    host: str = DEFAULT_ADDR[0],
    port: int = DEFAULT_ADDR[1],
    *,
    on_message: OnMessage | None = None,
    on_change: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve reporters on ``host:port`` into ``model`` until cancelled (see
    :class:`DbgServer`); ``task_status`` gets the bound address."""
    server = DbgServer(model, on_message=on_message, on_change=on_change)
    await server.serve(host, port, task_status=task_status)
