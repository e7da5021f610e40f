"""One node of the tree state source example: the root, or a replica of its parent.

* The **root** (no parent address) runs the flights machine (``flights.py``) and adds 3
  random states every ``MUTATION_EVERY`` seconds (a pick that includes ``Exception`` is
  skipped; an error a pick causes is printed and removed).
* A **replica** mirrors its parent over aRPC (``am.rpc.connect``) and serves that mirror
  in turn (docs/rpc.md, "Serving a NetMachine: replica trees"): its clients see the root's
  states and clock, and their mutations go up to the root.

Every node serves its machine over aRPC at ``TST_ADDR`` and, with ``TST_HTTP_ADDR``, HTTP/1.1
(keep-alive) with ``GET /``: the active states as a JSON list; ``GET /time``: the sum of
the clock; ``GET /clock``: every state's tick, as a JSON object. Every ``TST_TIME_EVERY``
seconds (15) it prints ``Time: <sum>``.

Settings come from the environment, and flags override them (``--help``):

=====================  ===================  =================================================
variable               flag                 meaning
=====================  ===================  =================================================
``TST_NAME``           ``--name``           machine id; ``root`` without a parent (required
                                            for a replica)
``TST_ADDR``           ``--addr``           aRPC address to serve on (required):
                                            ``host:port``, ``:port`` (127.0.0.1) or a
                                            ``tcp://`` / ``ws://`` URL; port 0 picks one
``TST_PARENT_ADDR``    ``--parent-addr``    the parent's aRPC address (makes a replica)
``TST_HTTP_ADDR``      ``--http-addr``      HTTP address (``host:port``); none: no HTTP
``MUTATION_EVERY``     ``--mutation-every`` seconds between the root's mutations (1; 0: none)
``TST_MUTATIONS``      ``--mutations``      stop mutating after this many rounds (0: never)
``TST_SEED``           ``--seed``           seed of the root's picks (random by default)
``TST_TIME_EVERY``     ``--time-every``     seconds between ``Time:`` lines (15; 0: none)
``TST_FLIGHTS``        ``--flights``        flights in the root's schema (10)
``TST_GATES``          ``--gates``          gates per flight (5)
``TST_PUSH_INTERVAL``  ``--push-interval``  aRPC push interval to this node's clients (0.005)
=====================  ===================  =================================================

Telemetry: ``bind_env`` is called for the node's machine, so ``AM_DBG_ADDR``,
``AM_LOG``, ``AM_PROM_ADDR``, ``AM_OTEL_TRACE``... work as everywhere.

Output: ``ready: aRPC <url> HTTP <url> pid <pid>`` once serving (``run.py`` waits for it),
then ``synced with <parent> (...)`` / ``lost <parent>`` for a replica's link, ``Time:``
lines and ``bye``. Exit codes: 0 after SIGINT / SIGTERM (or the end of stdin with
``--stdin-watch``), 1 on a runtime failure (a port in use, the parent gone for good),
2 on a bad setting.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sys
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any, Final

import attrs
import h11
import trio

import trio_am as am
from trio_am import rpc
from trio_am.telemetry import bind_env

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # imported as a library (run as a script, it is there)
    sys.path.append(str(HERE))
from flights import FLIGHTS, GATES, flights_schema  # noqa: E402

#: Client ids (and so node names) the aRPC handshake accepts.
NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: The reconnect schedule of a replica: quick, so a restarted parent is found at once.
RECONNECT: Final = rpc.Backoff(initial=0.1, factor=2.0, max=2.0, max_elapsed=300.0)
#: HTTP: bytes of one request head, body bytes of a GET, idle seconds of a keep-alive
#: connection, and the size of one read.
MAX_HEAD: Final = 8192
MAX_BODY: Final = 65536
KEEPALIVE_IDLE: Final = 60.0
READ_SIZE: Final = 65536
SERVER_HEADER: Final = b"trio-am-tree"


class ConfigError(ValueError):
    """A bad setting (environment variable or flag); the message names it."""


def say(line: str) -> None:
    """Print one line at once (stdout is usually a pipe to run.py)."""
    print(line, flush=True)


# --------------------------------------------------------------------------- config
def parse_hostport(text: str, what: str) -> tuple[str, int]:
    """``"host:port"``, ``":port"`` (host 127.0.0.1) or ``"[::1]:port"`` to a pair.

    Raises:
        ConfigError: not an address, or the port is not 0..65535.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{what}={text!r}: expected host:port (port 0-65535)")
    host = host.strip("[]") or "127.0.0.1"
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ConfigError(f"{what}={text!r}: bad host {host!r}")
    return host, int(port_text)


def rpc_url(text: str, what: str) -> str:
    """An aRPC URL from ``tcp://h:p``, ``ws://h:p`` or a bare address (TCP)."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in ("tcp", "ws"):
        raise ConfigError(f"{what}={text!r}: expected a tcp:// or ws:// URL, or host:port")
    host, port = parse_hostport(rest.rstrip("/"), what)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _number(raw: str, what: str, cast: Callable[[str], Any], low: float, high: float) -> Any:
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{what}={raw!r}: not a number") from None
    if not low <= value <= high:  # also refuses nan
        raise ConfigError(f"{what}={raw!r}: must be from {low:g} to {high:g}")
    return value


@attrs.frozen
class Config:
    """The settings of one node (see the module docstring)."""

    name: str
    addr: str
    parent_addr: str | None = None
    http_addr: tuple[str, int] | None = None
    mutation_every: float = 1.0
    mutations: int = 0
    seed: int | None = None
    time_every: float = 15.0
    flights: int = FLIGHTS
    gates: int = GATES
    push_interval: float = 0.005

    @property
    def is_root(self) -> bool:
        """True for the root (the node without a parent)."""
        return self.parent_addr is None


#: (env variable, flag dest, help) of every setting, in the docstring's order.
SETTINGS: Final = (
    ("TST_NAME", "name", "machine id (root without a parent)"),
    ("TST_ADDR", "addr", "aRPC address to serve on: host:port, :port or tcp:// / ws:// URL"),
    ("TST_PARENT_ADDR", "parent_addr", "the parent's aRPC address (makes this a replica)"),
    ("TST_HTTP_ADDR", "http_addr", "HTTP address host:port (empty: no HTTP)"),
    ("MUTATION_EVERY", "mutation_every", "seconds between the root's mutations (0: none)"),
    ("TST_MUTATIONS", "mutations", "stop mutating after this many rounds (0: never)"),
    ("TST_SEED", "seed", "seed of the root's random picks"),
    ("TST_TIME_EVERY", "time_every", "seconds between 'Time:' lines (0: none)"),
    ("TST_FLIGHTS", "flights", "flights in the root's schema"),
    ("TST_GATES", "gates", "gates per flight"),
    ("TST_PUSH_INTERVAL", "push_interval", "aRPC push interval to this node's clients"),
)


def make_config(raw: Mapping[str, str | None]) -> Config:
    """Build a :class:`Config` from raw strings keyed by flag dest (unset: None or "").

    Raises:
        ConfigError: a value is bad; the message names its variable.
    """
    env = {dest: var for var, dest, _ in SETTINGS}

    def get(dest: str) -> str:
        return (raw.get(dest) or "").strip()

    def what(dest: str) -> str:
        return f"{env[dest]} (--{dest.replace('_', '-')})"

    parent = get("parent_addr")
    name = get("name") or ("" if parent else "root")
    if not NAME_RE.fullmatch(name):
        raise ConfigError(
            f"{what('name')}={name!r}: a replica needs a name of 1-64 letters, digits, . _ -"
        )
    if not get("addr"):
        raise ConfigError(f"{what('addr')} is required (e.g. 127.0.0.1:19700)")
    kw: dict[str, Any] = {
        "name": name,
        "addr": rpc_url(get("addr"), what("addr")),
        "parent_addr": rpc_url(parent, what("parent_addr")) if parent else None,
    }
    if get("http_addr"):
        kw["http_addr"] = parse_hostport(get("http_addr"), what("http_addr"))
    numbers = {
        "mutation_every": (float, 0, 3600),
        "mutations": (int, 0, 10**9),
        "seed": (int, 0, 2**63),
        "time_every": (float, 0, 86400),
        "flights": (int, 1, 1000),
        "gates": (int, 1, 100),
        "push_interval": (float, 0.0005, 60),
    }
    for dest, (cast, low, high) in numbers.items():
        if get(dest):
            kw[dest] = _number(get(dest), what(dest), cast, low, high)
    return Config(**kw)


def parse_args(argv: list[str] | None, environ: Mapping[str, str]) -> tuple[Config, bool]:
    """Read the environment, then the flags; returns the config and ``--stdin-watch``.

    Raises:
        ConfigError: a bad value.
        SystemExit: ``--help``, or an unknown flag (argparse, status 2).
    """
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Each flag overrides its environment variable (see the module docstring).",
    )
    for var, dest, help_text in SETTINGS:
        parser.add_argument(
            f"--{dest.replace('_', '-')}", dest=dest, metavar=var, help=f"{help_text} [{var}]"
        )
    parser.add_argument(
        "--stdin-watch", action="store_true", help="exit when stdin closes (used by run.py)"
    )
    ns = parser.parse_args(argv)
    raw = {dest: environ.get(var) for var, dest, _ in SETTINGS}
    raw.update({dest: v for _, dest, _ in SETTINGS if (v := getattr(ns, dest)) is not None})
    return make_config(raw), bool(ns.stdin_watch)


# --------------------------------------------------------------------------- HTTP
class Views:
    """The JSON bodies served over HTTP, recomputed only when the clock changed."""

    def __init__(self, mach: am.Machine) -> None:
        self.mach = mach
        self._time: am.Time | None = None
        self._bodies: dict[str, bytes] = {}

    def body(self, path: str) -> bytes | None:
        """The body for ``path`` (``/``, ``/time``, ``/clock``), None for other paths."""
        if path not in ("/", "/time", "/clock"):
            return None
        now = self.mach.time()
        if now != self._time:
            self._time = now
            self._bodies.clear()
        body = self._bodies.get(path)
        if body is None:
            if path == "/":
                data: object = self.mach.active_states()
            elif path == "/time":
                data = now.sum()
            else:
                data = self.mach.clock()
            body = self._bodies[path] = json.dumps(data).encode() + b"\n"
        return body


def _response(
    conn: h11.Connection, status: int, body: bytes, *, close: bool = False, head: bool = False
) -> bytes:
    headers = [
        (b"Server", SERVER_HEADER),
        (b"Content-Type", b"application/json" if status == 200 else b"text/plain"),
        (b"Content-Length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"Connection", b"close"))
    if status == 405:
        headers.append((b"Allow", b"GET, HEAD"))
    out = conn.send(h11.Response(status_code=status, headers=headers, reason=_PHRASES[status]))
    if not head:
        out += conn.send(h11.Data(data=body))
    return out + conn.send(h11.EndOfMessage())


_PHRASES: Final = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
}
_REASONS: Final = {
    400: b"bad request\n",
    404: b"not found: try /, /time or /clock\n",
    405: b"method not allowed: GET or HEAD\n",
    413: b"request body too large\n",
    431: b"request header fields too large\n",
}


async def serve_http_connection(stream: trio.abc.Stream, views: Views) -> None:
    """Answer the requests of one HTTP/1.1 connection (keep-alive) until it closes.

    Errors of the peer (bad requests, resets, idle past ``KEEPALIVE_IDLE``) close the
    connection; they never reach the caller.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        async with stream:
            await _http_loop(stream, conn, views)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass


async def _http_loop(stream: trio.abc.Stream, conn: h11.Connection, views: Views) -> None:
    request: h11.Request | None = None
    body_size = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await stream.send_all(_response(conn, status, _REASONS[status], close=True))
            return
        if event is h11.NEED_DATA:
            data: bytes | bytearray = b""
            with trio.move_on_after(KEEPALIVE_IDLE):
                data = await stream.receive_some(READ_SIZE)
            if not data:  # EOF or idle: close
                return
            conn.receive_data(bytes(data))
            continue
        if event is h11.PAUSED:
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                continue
            return
        if isinstance(event, h11.Request):
            method = event.method.upper()
            if method not in (b"GET", b"HEAD"):
                await stream.send_all(_response(conn, 405, _REASONS[405], close=True))
                return
            size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
            if size > MAX_HEAD:  # h11 bounds only heads that arrive in pieces
                await stream.send_all(_response(conn, 431, _REASONS[431], close=True))
                return
            request, body_size = event, 0
        elif isinstance(event, h11.Data):
            body_size += len(event.data)
            if body_size > MAX_BODY:
                await stream.send_all(_response(conn, 413, _REASONS[413], close=True))
                return
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
            body = views.body(path)
            head = request.method.upper() == b"HEAD"
            if body is None:
                out = _response(conn, 404, _REASONS[404], head=head)
            else:
                out = _response(conn, 200, body, head=head)
            request = None
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE:
                return
        elif isinstance(event, h11.ConnectionClosed):
            return


async def serve_http(
    mach: am.Machine,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``mach``'s views over HTTP on ``host:port`` until cancelled; reports the
    bound ``(host, port)`` through ``task_status`` (port 0 picks a free one).

    Raises:
        OSError: the address cannot be bound.
    """
    views = Views(mach)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await serve_http_connection(stream, views)
        except Exception as exc:  # one connection's bug must not stop the server
            say(f"HTTP connection failed: {exc!r}")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, port, host=host))
        sockname = listeners[0].socket.getsockname()
        task_status.started((host, sockname[1]))


# --------------------------------------------------------------------------- the node
class Mutator:
    """The root's random traffic: 3 random states added every ``mutation_every``."""

    def __init__(self, mach: am.Machine, seed: int | None) -> None:
        self.mach = mach
        self.rng = random.Random(seed)
        self.rounds = 0

    def step(self) -> None:
        """One round: add 3 random states, unless one of them is ``Exception``."""
        self.rounds += 1
        names = self.mach.state_names
        picks = [self.rng.choice(names) for _ in range(3)]
        if "Exception" in picks:
            return
        self.mach.add(picks)
        if self.mach.is_err():
            err = self.mach.err
            what = repr(err) if err is not None else "Exception active"
            say(f"Error: {what} (picked {', '.join(picks)}); removing Exception")
            self.mach.remove1("Exception")

    async def run(self, every: float, limit: int) -> None:
        """Mutate every ``every`` seconds; after ``limit`` rounds (0: never) say so, stop."""
        while limit == 0 or self.rounds < limit:
            await trio.sleep(every)
            self.step()
        say(f"mutations stopped after {self.rounds} rounds (time {self.mach.time().sum()})")


async def print_time(mach: am.Machine, every: float) -> None:
    """Print ``Time: <sum>`` every ``every`` seconds."""
    while True:
        await trio.sleep(every)
        say(f"Time: {mach.time().sum()}")


async def _linked(client: rpc.Client) -> None:
    """Wait until the client is ready, or gave up reconnecting."""
    await am.wait_for_any(client.rpc.when1("Ready"), client.rpc.when1("ReconnectFailed"))


async def watch_parent(client: rpc.Client, parent: str, failed: trio.Event) -> None:
    """Print the replica's link changes; set ``failed`` when reconnecting gave up."""
    epoch = client.epoch
    while True:
        await client.rpc.when_not1("Ready")
        if not client.rpc.is1("ReconnectFailed"):
            say(f"lost {parent}; reconnecting")
            await _linked(client)
        if client.rpc.is1("ReconnectFailed"):
            failed.set()
            return
        how = "new epoch, full resync" if client.epoch != epoch else "session resumed"
        epoch = client.epoch
        say(f"synced with {parent} ({how}, time {client.mach.time().sum()})")


async def run_node(cfg: Config, stdin_watch: bool) -> int:
    """Run one node until SIGINT / SIGTERM (or stdin's end); returns the exit status."""
    stop = trio.Event()
    failed = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())

            async def on_signal() -> None:
                async for _ in signals:
                    stop.set()

            nursery.start_soon(on_signal)
            if stdin_watch:
                nursery.start_soon(_watch_stdin, stop)

            mach: am.Machine
            client: rpc.Client | None = None
            if cfg.parent_addr is None:
                schema = flights_schema(cfg.flights, cfg.gates)
                mach = await stack.enter_async_context(am.open_machine(schema, id=cfg.name))
                _bind_env(mach)
                mach.add(["Start", "Ready"])
            else:
                say(f"connecting to {cfg.parent_addr}")
                client = await stack.enter_async_context(
                    rpc.connect(cfg.parent_addr, id=cfg.name, reconnect=RECONNECT)
                )
                async with trio.open_nursery() as wait:
                    wait.start_soon(_cancel_when, stop, wait.cancel_scope)
                    await _linked(client)
                    wait.cancel_scope.cancel()
                if stop.is_set():
                    return 0
                if client.rpc.is1("ReconnectFailed"):
                    say(f"gave up connecting to {cfg.parent_addr}")
                    return 1
                mach = client.mach
                _bind_env(mach)
                say(f"synced with {cfg.parent_addr} (time {mach.time().sum()})")
                nursery.start_soon(watch_parent, client, cfg.parent_addr, failed)

            server = await stack.enter_async_context(
                rpc.serve(mach, cfg.addr, push_interval=cfg.push_interval)
            )
            http = "-"
            if cfg.http_addr is not None:
                host, port = await nursery.start(serve_http, mach, *cfg.http_addr)
                http = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
            say(f"ready: aRPC {server.urls[0]} HTTP {http} pid {os.getpid()}")

            if cfg.is_root and cfg.mutation_every > 0:
                nursery.start_soon(Mutator(mach, cfg.seed).run, cfg.mutation_every, cfg.mutations)
            if cfg.time_every > 0:
                nursery.start_soon(print_time, mach, cfg.time_every)

            async with trio.open_nursery() as wait:
                wait.start_soon(_cancel_when, stop, wait.cancel_scope)
                wait.start_soon(_cancel_when, failed, wait.cancel_scope)
            nursery.cancel_scope.cancel()
    if failed.is_set():
        say(f"gave up reconnecting to {cfg.parent_addr}")
        return 1
    say("bye")
    return 0


def _bind_env(mach: am.Machine) -> None:
    """``bind_env`` (AM_DBG_ADDR, AM_LOG, ...), with a bad variable as a ConfigError."""
    try:
        bind_env(mach)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _watch_stdin(stop: trio.Event) -> None:
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        while await stream.receive_some(4096):
            pass
    stop.set()


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the settings, run the node, map failures to exit codes."""
    try:
        cfg, stdin_watch = parse_args(argv, os.environ)
    except ConfigError as exc:
        print(f"node: bad setting: {exc}", file=sys.stderr)
        return 2
    code = 1
    try:
        code = trio.run(run_node, cfg, stdin_watch)
    except* ConfigError as group:  # a bad AM_* variable
        print(f"{cfg.name}: bad setting: {_leaves(group)[0]}", file=sys.stderr)
        code = 2
    except* OSError as group:
        print(f"{cfg.name}: {_leaves(group)[0]}", file=sys.stderr)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
