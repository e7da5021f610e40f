"""The REPL client: connections to many REPL endpoints, and commands run against them.

:func:`open_repl` reads the targets (addresses, ``.addr`` files, directories), connects
to each with :func:`trio_am.rpc.connect` (each gives a :class:`~trio_am.rpc.NetMachine`)
and, when watching, re-reads the files and directories to follow machines that come and
go. :meth:`Repl.execute` runs one command line and prints ``=> …`` lines (errors
``err> …``); it returns False on an error or a canceled mutation. The REPL's own state
(connected, fully connected, watching…) is a machine, ``repl.mach`` (:data:`REPL_SCHEMA`).
"""

from __future__ import annotations

import math
import os
import secrets
import shlex
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import IO, Any, Final

import trio

from .._core._types import LogLevel
from .._runtime._machine import Machine
from ..rpc.client import Backoff, Client, connect
from ..rpc.errors import RpcError
from ._addrs import AddrSource, normalize_url, unique
from ._errors import ReplError
from ._filters import ListFilters, MachSnapshot
from ._states import REPL_SCHEMA

__all__ = ["Conn", "Repl", "Status", "open_repl"]

#: Seconds between two reads of watched address files and directories.
WATCH_INTERVAL: Final = 0.5
#: Nested ``script`` commands allowed.
MAX_SCRIPT_DEPTH: Final = 8

_GRAY: Final = "\x1b[90m"
_RED: Final = "\x1b[31m"
_RESET: Final = "\x1b[0m"


class Conn:
    """One address the REPL dials, and the mirror it keeps of the machine there.

    Attributes:
        url: the aRPC URL.
        client: the :class:`~trio_am.rpc.Client` once its task started, else None.
        arg_names: the typed-args keys the server accepts (for completion).
        error: why the connection task ended, if it did on its own.
        closed: the connection was dropped (address gone, or the REPL closing).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Client | None = None
        self.arg_names: tuple[str, ...] = ()
        self.error: BaseException | None = None
        self.closed = False
        self._scope: trio.CancelScope | None = None

    @property
    def ready(self) -> bool:
        """The handshake is done and the link is up."""
        c = self.client
        return c is not None and not self.closed and c.rpc.is1("Ready")

    @property
    def machine_id(self) -> str | None:
        """The remote machine's id, once a handshake told it."""
        c = self.client
        return None if c is None else c.mach.remote_id

    @property
    def parent_id(self) -> str | None:
        """The remote machine's parent id (from the handshake), or None."""
        c = self.client
        if c is None or c.welcome is None:
            return None
        p = c.welcome.get("parent")
        return p if isinstance(p, str) and p else None

    @property
    def settled(self) -> bool:
        """Connected, or tried at least once and failed (or gave up, or closed)."""
        c = self.client
        if self.closed or self.error is not None:
            return True
        if c is None:
            return False
        return c.rpc.is1("Ready") or c.rpc.tick("Exception") > 0 or c.rpc.is1("ReconnectFailed")

    @property
    def phase(self) -> str:
        """``"connected"``, ``"connecting"`` (a dial or handshake in progress, or not
        tried yet) or ``"disconnected"``."""
        c = self.client
        if self.ready:
            return "connected"
        if self.closed or self.error is not None:
            return "disconnected"
        if c is None or c.rpc.any1("Connecting", "Connected") or c.rpc.tick("Exception") == 0:
            return "connecting"
        return "disconnected"

    def why(self) -> str:
        """The last connection error, as text ("" when none)."""
        err = self.error
        if err is None and self.client is not None:
            err = self.client.rpc.err
        if err is None:
            return ""
        text = str(err) or type(err).__name__
        mid = getattr(err, "machine_id", None)
        if mid and text.startswith(f"[{mid}] "):
            text = text[len(mid) + 3 :]
        return text

    def snapshot(self) -> MachSnapshot | None:
        """What the filters see, or None before the first handshake."""
        c = self.client
        if c is None or c.mach.remote_id is None:
            return None
        return MachSnapshot(c.mach.remote_id, self.parent_id, self.ready, c.mach.clock())

    def __repr__(self) -> str:
        return f"<Conn {self.url} {self.machine_id or '?'} {self.phase}>"


class Status:
    """Connection counts (the ``status`` command).

    Attributes:
        connected, connecting, disconnected, total: numbers of addresses.
    """

    __slots__ = ("connected", "connecting", "disconnected", "total")

    def __init__(self, conns: Sequence[Conn]) -> None:
        phases = [c.phase for c in conns]
        self.connected = phases.count("connected")
        self.connecting = phases.count("connecting")
        self.disconnected = phases.count("disconnected")
        self.total = len(conns)

    def __repr__(self) -> str:
        return (
            f"Status(connected={self.connected}, connecting={self.connecting}, "
            f"disconnected={self.disconnected}, total={self.total})"
        )


class _Handlers:
    """Final handlers of the REPL machine: connection counts follow the pipes."""

    def __init__(self, repl: Repl) -> None:
        self._repl = repl

    def RpcConn_state(self, e: Any) -> None:
        self._repl._update_connected()

    def RpcDisconn_state(self, e: Any) -> None:
        self._repl._update_connected()


class Repl:
    """The REPL client; create it with :func:`open_repl`.

    Attributes:
        mach: the REPL's own machine (``repl-<hash>``, :data:`REPL_SCHEMA`).
        conns: the connections, in address order.
        sources: where addresses come from.
        exit_requested: the ``exit`` command ran.
        hints: print a line when a command starts waiting (the prompt sets it).
    """

    def __init__(
        self,
        sources: Sequence[AddrSource],
        *,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        color: bool = False,
        watch: bool = False,
        watch_interval: float = WATCH_INTERVAL,
        connect_timeout: float = 3.0,
        call_timeout: float = 10.0,
        reconnect: Backoff | None = None,
        id: str | None = None,
        log_level: LogLevel | int = LogLevel.NOTHING,
        dbg_addr: str | None = None,
    ) -> None:
        self.sources = list(sources)
        self._out = out
        self._err = err
        self.color = color
        self.watch = watch
        self.watch_interval = watch_interval
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        if reconnect is None:
            # watching: never give up (a machine may come back); else Go's defaults
            reconnect = Backoff(max=5.0, max_elapsed=math.inf) if watch else Backoff()
        self.reconnect = reconnect
        self.id = id or f"repl-{secrets.token_hex(3)}"
        self.mach = Machine(
            REPL_SCHEMA,
            id=self.id,
            handlers=_Handlers(self),
            tags=("repl",),
            log_level=log_level,
        )
        if int(log_level) > 0:
            self.mach.set_logger(self._log_sink)
        self.dbg_addr = dbg_addr
        self.conns: list[Conn] = []
        self.exit_requested = False
        self.hints = False
        self.script_depth = 0
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._serial = 0

    # ------------------------------------------------------------------ output
    @property
    def out(self) -> IO[str]:
        """Where ``=> …`` lines go (stdout by default)."""
        return self._out if self._out is not None else sys.stdout

    @property
    def err(self) -> IO[str]:
        """Where ``err> …`` lines go (stderr by default)."""
        return self._err if self._err is not None else sys.stderr

    def print(self, text: str = "") -> None:
        """Print ``text`` as output lines, each prefixed with ``=> ``.

        Raises:
            ReplError: the output was closed (a reader like ``| head`` went away).
        """
        prefix = f"{_GRAY}=>{_RESET} " if self.color else "=> "
        lines = [prefix + x if x else prefix.rstrip() for x in text.split("\n")]
        self._write("\n".join(lines))

    def print_err(self, text: str) -> None:
        """Print ``text`` as error lines, each prefixed with ``err> ``."""
        prefix = f"{_RED}err>{_RESET} " if self.color else "err> "
        for line in text.split("\n"):
            print(prefix + line, file=self.err, flush=True)

    def print_plain(self, text: str) -> None:
        """Print ``text`` as is (help texts)."""
        self._write(text.rstrip("\n"))

    def _write(self, text: str) -> None:
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            if self.out is sys.stdout:
                # nobody reads stdout any more: point it at /dev/null, so that the
                # interpreter's last flush does not complain either
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            raise ReplError("the output was closed (broken pipe)") from None

    def _log_sink(self, level: int, text: str, m: Any) -> None:
        print(f"[{m.id}] {text}", file=self.err, flush=True)

    # ------------------------------------------------------------------ connections
    def read_sources(self, problems: list[str] | None = None) -> list[str]:
        """Every address of every source, as URLs, without repeats.

        Raises:
            ReplError: a bad address, or a file or directory that cannot be read.
        """
        urls: list[str] = []
        for src in self.sources:
            urls.extend(src.read(problems))
        return unique(urls)

    def _start_conn(self, conn: Conn) -> None:
        assert self._nursery is not None
        self._serial += 1
        self._nursery.start_soon(self._conn_task, conn, f"{self.id}-{self._serial}")

    async def _conn_task(self, conn: Conn, client_id: str) -> None:
        with trio.CancelScope() as scope:
            conn._scope = scope
            try:
                async with connect(
                    conn.url,
                    id=client_id,
                    reconnect=self.reconnect,
                    connect_timeout=self.connect_timeout,
                    call_timeout=self.call_timeout,
                ) as client:
                    conn.client = client
                    self._bind_client(conn, client)
                    self._poke()
                    await self._follow(conn, client)
            except Exception as exc:  # e.g. a URL the transport refuses
                conn.error = exc
                self.mach.log("connection to %s failed: %r", conn.url, exc)
            finally:
                conn.closed = True
                if not self.mach.disposed:
                    self._update_connected()
                self._poke()

    def _bind_client(self, conn: Conn, client: Client) -> None:
        repl = self.mach
        rpc = client.rpc

        def ready(e: Any) -> None:
            if not repl.disposed:
                repl.add1("RpcConn", {"url": conn.url}, event=e)
            self._poke()

        def not_ready(e: Any) -> None:
            if not repl.disposed:
                repl.add1("RpcDisconn", {"url": conn.url}, event=e)
            self._poke()

        def changed(e: Any) -> None:
            self._poke()

        rpc.bind_handler_maps(
            None,
            {
                "Ready_state": ready,
                "Ready_end": not_ready,
                "Exception_state": changed,
                "ReconnectFailed_state": changed,
                "Connecting_state": changed,
                "Disconnected_state": changed,
            },
            id="repl-pipes",
        )
        if self.dbg_addr is not None:
            from ..telemetry.dbg import bind_debugger

            bind_debugger(rpc, self.dbg_addr)

    async def _follow(self, conn: Conn, client: Client) -> None:
        """Keep ``conn.arg_names`` fresh: ask the server after every handshake."""
        while True:
            await client.rpc.when1("Ready")
            with trio.move_on_after(self.call_timeout):
                try:
                    names = await client.get("args")
                    if isinstance(names, list):
                        conn.arg_names = tuple(str(n) for n in names)
                except (RpcError, trio.TooSlowError):
                    pass
            await client.rpc.when_not1("Ready")

    def _poke(self) -> None:
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    def _update_connected(self) -> None:
        m = self.mach
        if m.disposed:
            return
        live = [c for c in self.conns if not c.closed]
        ready = sum(1 for c in live if c.ready)
        if ready:
            if not m.is1("Connected"):
                m.add1("Connected")
            full = ready == len(live)
            if full and not m.is1("ConnectedFully"):
                m.add1("ConnectedFully")
            elif not full and m.is1("ConnectedFully"):
                m.remove1("ConnectedFully")
        elif m.any1("Connected", "ConnectedFully"):
            m.remove(["ConnectedFully", "Connected"])

    def set_addresses(self, urls: Sequence[str]) -> tuple[int, int]:
        """Connect to exactly ``urls`` (in this order): new ones are dialed, ones no
        longer listed are closed. Returns ``(added, removed)``."""
        by_url = {c.url: c for c in self.conns}
        keep = set(urls)
        removed = 0
        for c in self.conns:
            if c.url not in keep:
                c.closed = True
                if c._scope is not None:
                    c._scope.cancel()
                removed += 1
        new: list[Conn] = []
        added = 0
        for u in urls:
            have = by_url.get(u)
            if have is None:
                have = Conn(u)
                added += 1
                self._start_conn(have)
            new.append(have)
        self.conns = new
        if added or removed:
            self._update_connected()
            self._poke()
        return added, removed

    def reconnect_all(self) -> int:
        """Dial again every address that is not connected (at once, no backoff).
        Returns how many."""
        n = 0
        for i, c in enumerate(self.conns):
            if c.ready:
                continue
            c.closed = True
            if c._scope is not None:
                c._scope.cancel()
            fresh = Conn(c.url)
            self.conns[i] = fresh
            self._start_conn(fresh)
            n += 1
        self._poke()
        return n

    async def _watch(self) -> None:
        self.mach.add1("Watching")
        try:
            while True:
                await trio.sleep(self.watch_interval)
                try:
                    urls = self.read_sources()
                except ReplError as exc:
                    self.mach.log("watch: %s", exc)
                    continue
                if urls != [c.url for c in self.conns]:
                    added, removed = self.set_addresses(urls)
                    self.mach.add1("AddrChanged", {"added": added, "removed": removed})
        finally:
            if not self.mach.disposed:
                self.mach.remove1("Watching")

    async def wait_settled(self, timeout: float | None = None) -> Status:
        """Wait until every address is connected or failed at least once (or
        ``timeout`` seconds), and return the counts."""
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while not all(c.settled for c in self.conns):
                await self._changed.wait()
        return self.status()

    def status(self) -> Status:
        """Connection counts now."""
        return Status(self.conns)

    # ------------------------------------------------------------------ machines
    def ready_conns(self) -> list[Conn]:
        """The connected ones, in order."""
        return [c for c in self.conns if c.ready]

    def known_ids(self) -> list[str]:
        """Ids of every machine seen (connected first), without repeats."""
        ids = [c.machine_id for c in self.ready_conns()]
        ids += [c.machine_id for c in self.conns]
        return unique(i for i in ids if i is not None)

    def find(self, ref: str, *, ready: bool = True) -> Conn:
        """The connection of machine ``ref`` (``.`` = the first connected one).

        Args:
            ref: a machine id or ``.``.
            ready: require a live connection (else a disconnected machine's last
                known state will do).

        Raises:
            ReplError: no address at all, nothing connected, an unknown machine, or (with
                ``ready``) a machine whose connection is down.
        """
        if not self.conns:
            raise ReplError("no machine addresses (connect ADDR, or -d DIR / -f FILE)")
        live = self.ready_conns()
        if ref == ".":
            if live:
                return live[0]
            if not ready:
                seen = [c for c in self.conns if c.machine_id is not None]
                if seen:
                    return seen[0]
            raise ReplError("not connected")
        for c in live:
            if c.machine_id == ref:
                return c
        for c in self.conns:
            if c.machine_id == ref:
                if ready:
                    raise ReplError(f"machine {ref!r} is disconnected")
                return c
        known = ", ".join(self.known_ids()) or "none"
        raise ReplError(f"unknown machine {ref!r} (known: {known})")

    def select(self, filters: ListFilters) -> list[Conn]:
        """The connections whose machines pass ``filters``."""
        return filters.select(self.conns, lambda c: c.snapshot())

    # ------------------------------------------------------------------ commands
    async def execute(self, line: str) -> bool:
        """Run one command line; print its output. Returns False on an error or a
        canceled mutation. Blank lines and ``# comments`` do nothing."""
        text = line.strip()
        if not text or text.startswith("#"):
            return True
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            self.print_err(f"cannot parse the line: {exc}")
            return False
        return await self.execute_argv(argv)

    async def execute_argv(self, argv: Sequence[str]) -> bool:
        """Run one command given as words (``["add", "mach1", "Foo"]``)."""
        from ._commands import run_command

        if not argv:
            return True
        if self.mach.is1("Start") and not self.mach.is1("CmdRunning"):
            self.mach.add1("CmdRunning")
        try:
            return await run_command(self, list(argv))
        finally:
            if self.script_depth == 0 and not self.mach.disposed:
                self.mach.remove1("CmdRunning")

    def completion_context(self) -> Any:
        """A snapshot of what completion needs (see :mod:`._complete`)."""
        from ._complete import CompletionContext

        return CompletionContext.from_repl(self)

    def complete(self, line: str) -> list[str]:
        """Candidates for the last word of ``line`` (the text before the cursor)."""
        from ._complete import complete

        return complete(line, self.completion_context())


@asynccontextmanager
async def open_repl(
    targets: Sequence[AddrSource | str] = (),
    *,
    allow_empty: bool = False,
    **options: Any,
) -> AsyncIterator[Repl]:
    """Open a REPL client connected to ``targets`` for the block.

    Args:
        targets: :class:`AddrSource` s, or strings (each an address).
        allow_empty: start even when the targets hold no address yet (a watched
            directory may get some later).
        options: keyword arguments of :class:`Repl` (``out``, ``err``, ``watch``,
            ``connect_timeout``, ``call_timeout``, ``log_level``, ``dbg_addr``…).

    Raises:
        ReplError: a bad address or target, or no address at all (unless ``allow_empty``).

    Example::

        async with open_repl(["127.0.0.1:7001"]) as repl:
            await repl.wait_settled(5)
            await repl.execute("add . Foo")
    """
    sources = [t if isinstance(t, AddrSource) else AddrSource("addr", t) for t in targets]
    for s in sources:
        if s.kind == "addr":
            normalize_url(s.value)
    repl = Repl(sources, **options)
    problems: list[str] = []
    urls = repl.read_sources(problems)
    for p in problems:
        repl.print_err(p)
    if not urls and not allow_empty:
        where = ", ".join(s.value for s in sources if s.kind != "addr")
        raise ReplError(f"no addresses found in {where}" if where else "no addresses given")
    reporter: Any = None
    if repl.dbg_addr is not None:
        from ..telemetry.dbg import bind_debugger

        try:
            reporter = bind_debugger(repl.mach, repl.dbg_addr)
        except ValueError as exc:
            raise ReplError(f"bad debugger address: {exc}") from None
    async with repl.mach, trio.open_nursery() as nursery:
        repl._nursery = nursery
        repl.mach.add1("Start")
        repl.set_addresses(urls)
        if repl.watch and any(s.watchable for s in sources):
            nursery.start_soon(repl._watch)
        try:
            yield repl
        finally:
            for c in repl.conns:
                c.closed = True
            nursery.cancel_scope.cancel()
    if reporter is not None:
        # a short CLI run: let what it did reach the debugger before the process ends
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(reporter.flush, 1.0)
