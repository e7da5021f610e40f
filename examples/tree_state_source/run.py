"""Start the tree state source example: 7 node processes (arpc.md F4).

::

    root ──aRPC── rep-1 ──aRPC── rep-1-1, rep-1-2
      └────aRPC── rep-2 ──aRPC── rep-2-1, rep-2-2

Each node is ``node.py`` in its own process, started level by level (a child starts once
its parent serves). By default the ports are arpc.md's: aRPC 19700-19706 and HTTP
18700-18706, in the order root, rep-1, rep-2, rep-1-1, rep-1-2, rep-2-1, rep-2-2;
``--rpc-port`` / ``--http-port`` move the bases, and 0 lets every node pick a free port.

Every line a node prints is passed on with a ``[name]`` prefix. A node that dies after it
was ready is restarted on the same ports (``--restart-delay``; ``--no-restart`` makes it
fatal); one that dies before it was ready stops the tree with status 1. Ctrl+C or SIGTERM
stops the leaves, then the replicas, then the root (SIGTERM, SIGKILL after 5 s); a second
Ctrl+C kills them at once. The nodes also exit by themselves when this process dies
(their stdin is a pipe from it).

The module is also a library: ``benchmarks/bench_tree.py`` starts its trees with
:class:`Launcher`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

import attrs
import trio

HERE = Path(__file__).resolve().parent
NODE: Final = HERE / "node.py"
#: arpc.md F4's base ports.
RPC_PORT: Final = 19700
HTTP_PORT: Final = 18700
READY_RE: Final = re.compile(r"ready: aRPC (\S+) HTTP (\S+) pid (\d+)")
#: Seconds a node gets to exit after SIGTERM, and to print its ready line.
STOP_GRACE: Final = 5.0
START_LIMIT: Final = 30.0
#: A restarted node that dies this many times in a row before it is ready stops the tree.
MAX_FAILED_RESTARTS: Final = 5
#: Environment variables of node.py that the launcher sets by flags instead (the user's
#: own values must not turn the root into a replica).
NODE_ENV: Final = (
    "TST_NAME",
    "TST_ADDR",
    "TST_PARENT_ADDR",
    "TST_HTTP_ADDR",
    "MUTATION_EVERY",
    "TST_MUTATIONS",
    "TST_SEED",
    "TST_TIME_EVERY",
    "TST_FLIGHTS",
    "TST_GATES",
    "TST_PUSH_INTERVAL",
)

Printer = Callable[[str], None]


class LaunchError(Exception):
    """A node could not be started, or died and may not be restarted."""


@attrs.frozen
class NodeSpec:
    """One node of a tree: its name, its parent's name and the ports it asks for."""

    name: str
    parent: str | None
    rpc_port: int
    http_port: int

    @property
    def level(self) -> int:
        """0 for the root, 1 for its replicas, 2 for theirs."""
        return self.name.count("-")


def tree(
    replicas: int = 2, leaves: int = 2, rpc_port: int = RPC_PORT, http_port: int = HTTP_PORT
) -> list[NodeSpec]:
    """The nodes of a tree with ``replicas`` first-level replicas of ``root`` and
    ``leaves`` second-level replicas of each, ports numbered from the bases in the
    order root, ``rep-1`` .. ``rep-R``, ``rep-1-1`` .. ``rep-R-L`` (base 0: all 0)."""
    names: list[tuple[str, str | None]] = [("root", None)]
    names += [(f"rep-{r}", "root") for r in range(1, replicas + 1)]
    names += [
        (f"rep-{r}-{i}", f"rep-{r}") for r in range(1, replicas + 1) for i in range(1, leaves + 1)
    ]
    return [
        NodeSpec(name, parent, rpc_port and rpc_port + i, http_port and http_port + i)
        for i, (name, parent) in enumerate(names)
    ]


class Node:
    """A running node: its process and what its ready line said."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.rpc_port = spec.rpc_port
        self.http_port = spec.http_port
        self.proc: trio.Process | None = None
        self.rpc_url = ""
        self.http_url = ""
        self.pid = 0
        self.starts = 0
        self.ready = trio.Event()

    @property
    def name(self) -> str:
        """The node's name (its machine id)."""
        return self.spec.name


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


async def _lines(stream: trio.abc.ReceiveStream, out: Callable[[str], None]) -> None:
    buf = b""
    while chunk := await stream.receive_some(65536):
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            out(line.decode(errors="replace").rstrip("\r"))
    if buf:
        out(buf.decode(errors="replace"))


class Launcher:
    """Start, watch and stop the node processes of one tree.

    ``async with trio.open_nursery() as n: launcher = await n.start(Launcher(...).run)``
    returns once every node printed its ready line; ``await launcher.stop()`` ends them
    (leaves first) and makes ``run`` return.
    """

    def __init__(
        self,
        specs: Sequence[NodeSpec],
        *,
        host: str = "127.0.0.1",
        node_args: Sequence[str] = (),
        root_args: Sequence[str] = (),
        restart_delay: float | None = 1.0,
        out: Printer = print,
        python: Sequence[str] = (sys.executable, "-u"),
    ) -> None:
        self.nodes = {spec.name: Node(spec) for spec in specs}
        self.host = host
        self.node_args = list(node_args)
        self.root_args = list(root_args)
        self.restart_delay = restart_delay
        self.out = out
        self.python = list(python)
        self.stopping = False
        #: Set once every node printed its ready line.
        self.all_ready = trio.Event()
        self._scope: trio.CancelScope | None = None

    def _cmd(self, node: Node) -> list[str]:
        spec = node.spec
        cmd = [*self.python, str(NODE), "--stdin-watch", "--name", spec.name]
        cmd += ["--addr", f"{self.host}:{node.rpc_port}"]
        cmd += ["--http-addr", f"{self.host}:{node.http_port}"]
        if spec.parent is not None:
            cmd += ["--parent-addr", self.nodes[spec.parent].rpc_url]
        else:
            cmd += self.root_args
        return cmd + self.node_args

    async def run(
        self, *, task_status: trio.TaskStatus[Launcher] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the nodes level by level, report ready, then keep them running until
        :meth:`stop` (which makes it return, also before every node was ready).

        Raises:
            LaunchError: a node died before it was ready (or later, without restarts).
        """
        levels = sorted({n.spec.level for n in self.nodes.values()})
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            for level in levels:
                batch = [n for n in self.nodes.values() if n.spec.level == level]
                for node in batch:
                    nursery.start_soon(self._keep, node)
                with trio.move_on_after(START_LIMIT) as timer:
                    for node in batch:
                        await node.ready.wait()
                if timer.cancelled_caught:
                    late = ", ".join(n.name for n in batch if not n.ready.is_set())
                    raise LaunchError(f"not ready after {START_LIMIT:g} s: {late}")
            self.all_ready.set()
            task_status.started(self)
            await trio.sleep_forever()

    async def _keep(self, node: Node) -> None:
        """Run ``node``, restarting it when it dies after it was ready."""
        failures = 0
        while True:
            code, was_ready = await self._run_once(node)
            if self.stopping:
                return
            if not node.ready.is_set():
                raise LaunchError(f"{node.name} exited with status {code} before it was ready")
            if self.restart_delay is None:
                raise LaunchError(f"{node.name} exited with status {code}")
            failures = 0 if was_ready else failures + 1
            if failures >= MAX_FAILED_RESTARTS:
                raise LaunchError(f"{node.name} failed to restart {failures} times in a row")
            self.out(
                f"[run] {node.name} exited with status {code}; "
                f"restarting in {self.restart_delay:g} s"
            )
            await trio.sleep(self.restart_delay)
            if self.stopping:
                return

    async def _run_once(self, node: Node) -> tuple[int, bool]:
        env = {k: v for k, v in os.environ.items() if k not in NODE_ENV}
        node.starts += 1
        first = node.starts == 1
        proc = await trio.lowlevel.open_process(
            self._cmd(node),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl+C reaches the launcher only; it stops the nodes
        )
        node.proc = proc
        node_ready = trio.Event()

        def on_line(line: str) -> None:
            m = READY_RE.fullmatch(line)
            if m and not node_ready.is_set():
                node.rpc_url, node.http_url, node.pid = m[1], m[2], int(m[3])
                # a restart keeps the ports (its clients reconnect to them)
                node.rpc_port, node.http_port = _port(m[1]), _port(m[2])
                node_ready.set()
                if first:
                    node.ready.set()
            self.out(f"[{node.name}] {line}")

        try:
            assert proc.stdout is not None and proc.stderr is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_lines, proc.stdout, on_line)
                nursery.start_soon(
                    _lines, proc.stderr, lambda line: self.out(f"[{node.name}] {line}")
                )
                await proc.wait()
        finally:
            with trio.CancelScope(shield=True):
                await _end(proc)
        code = proc.returncode if proc.returncode is not None else -1
        return code, node_ready.is_set()

    async def stop(self) -> None:
        """Stop every node, leaves first (SIGTERM, then SIGKILL after ``STOP_GRACE``)."""
        self.stopping = True
        levels = sorted({n.spec.level for n in self.nodes.values()}, reverse=True)
        for level in levels:
            procs = [
                n.proc
                for n in self.nodes.values()
                if n.spec.level == level and n.proc is not None and n.proc.returncode is None
            ]
            for proc in procs:
                _signal(proc, signal.SIGCONT)  # a CPU-limited node may be stopped
                _signal(proc, signal.SIGTERM)
            with trio.move_on_after(STOP_GRACE):
                for proc in procs:
                    await proc.wait()
        if self._scope is not None:
            self._scope.cancel()  # run() ends; leftovers are killed on the way out

    def kill_all(self) -> None:
        """Kill every node at once (SIGKILL)."""
        self.stopping = True
        for node in self.nodes.values():
            if node.proc is not None and node.proc.returncode is None:
                _signal(node.proc, signal.SIGCONT)
                _signal(node.proc, signal.SIGKILL)
        if self._scope is not None:
            self._scope.cancel()


def _signal(proc: trio.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


async def _end(proc: trio.Process) -> None:
    """Make sure ``proc`` is gone: SIGTERM, then SIGKILL."""
    if proc.returncode is None:
        _signal(proc, signal.SIGCONT)
        _signal(proc, signal.SIGTERM)
        with trio.move_on_after(STOP_GRACE):
            await proc.wait()
    if proc.returncode is None:
        _signal(proc, signal.SIGKILL)
        await proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            await stream.aclose()


# --------------------------------------------------------------------------- CLI
def _node_module() -> ModuleType:
    """node.py, imported under a private name (its checks are reused here)."""
    key = "_tree_state_source_node"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, NODE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 0 to 3600: {text!r}")
    return value


def _port_arg(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a port (0-65535): {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 9:
        raise argparse.ArgumentTypeError(f"must be from 1 to 9: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The launcher's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address every node listens on")
    p.add_argument("--rpc-port", type=_port_arg, default=RPC_PORT, help="first aRPC port (0: any)")
    p.add_argument(
        "--http-port", type=_port_arg, default=HTTP_PORT, help="first HTTP port (0: any)"
    )
    p.add_argument("--replicas", type=_count, default=2, help="first-level replicas (2)")
    p.add_argument("--leaves", type=_count, default=2, help="second-level replicas of each (2)")
    root = p.add_argument_group("passed to the nodes (see node.py --help)")
    default_every = os.environ.get("MUTATION_EVERY", "1")
    root.add_argument(
        "--mutation-every",
        default=default_every,
        help="root: seconds between mutations [MUTATION_EVERY]",
    )
    root.add_argument("--mutations", help="root: stop after this many rounds")
    root.add_argument("--seed", help="root: seed of the random picks")
    root.add_argument("--flights", help="root: flights in the schema (10)")
    root.add_argument("--gates", help="root: gates per flight (5)")
    root.add_argument("--time-every", help="all: seconds between 'Time:' lines (15)")
    root.add_argument("--push-interval", help="all: aRPC push interval (0.005)")
    p.add_argument(
        "--restart-delay",
        type=_nonneg_float,
        default=1.0,
        help="seconds before a dead node restarts",
    )
    p.add_argument("--no-restart", action="store_true", help="a node that dies stops the tree")
    return p


def node_arguments(ns: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The flags for every node and those for the root only, checked by node.py's rules.

    Raises:
        ValueError: a bad value (node.ConfigError), naming its flag.
    """
    make_config = _node_module().make_config  # the node's checks: a typo fails here

    every = {"time_every": ns.time_every, "push_interval": ns.push_interval}
    root = {
        "mutation_every": ns.mutation_every,
        "mutations": ns.mutations,
        "seed": ns.seed,
        "flights": ns.flights,
        "gates": ns.gates,
    }
    make_config({"addr": ":0", **every, **root})

    def flags(values: dict[str, str | None]) -> list[str]:
        out: list[str] = []
        for dest, value in values.items():
            if value is not None and value.strip():
                out += [f"--{dest.replace('_', '-')}", value.strip()]
        return out

    return flags(every), flags(root)


async def run_tree(launcher: Launcher, out: Printer) -> None:
    """Run ``launcher`` until SIGINT / SIGTERM (twice: kill), printing what happens.

    Raises:
        LaunchError: a node could not be started (or died, with restarts off).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop() -> None:
                await launcher.stop()
                nursery.cancel_scope.cancel()

            async def on_signals() -> None:
                count = 0
                async for _ in signals:
                    count += 1
                    if count == 1:
                        out("[run] stopping: leaves, replicas, then the root (again: kill)")
                        nursery.start_soon(stop)
                    else:
                        out("[run] killing every node")
                        launcher.kill_all()

            async def report() -> None:
                await launcher.all_ready.wait()
                leaves = [n for n in launcher.nodes.values() if n.spec.level == 2]
                out(f"[run] tree ready: {len(launcher.nodes)} nodes; Ctrl+C stops them")
                for n in leaves or launcher.nodes.values():
                    out(f"[run]   curl {n.http_url}   ({n.name})")

            nursery.start_soon(on_signals)
            nursery.start_soon(report)
            await launcher.run()
            nursery.cancel_scope.cancel()


def say(line: str) -> None:
    """Print one line at once."""
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: start the tree, run until Ctrl+C; 0 when stopped, 1 on a node
    failure, 2 on bad flags."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        every, root = node_arguments(ns)
    except ValueError as exc:
        parser.error(str(exc))
    specs = tree(ns.replicas, ns.leaves, ns.rpc_port, ns.http_port)
    if ns.rpc_port + len(specs) > 65536 or ns.http_port + len(specs) > 65536:
        parser.error("the ports of the tree do not fit below 65536")
    for spec in specs:
        parent = f" <- {spec.parent}" if spec.parent else ""
        rpc_p = spec.rpc_port or "any"
        http_p = spec.http_port or "any"
        say(f"[run] {spec.name}{parent}: aRPC port {rpc_p}, HTTP port {http_p}")
    launcher = Launcher(
        specs,
        host=ns.host,
        node_args=every,
        root_args=root,
        restart_delay=None if ns.no_restart else ns.restart_delay,
        out=say,
    )
    code = 0
    try:
        trio.run(run_tree, launcher, say)
    except* LaunchError as group:
        for err in _leaves(group):
            print(f"[run] error: {err}", file=sys.stderr, flush=True)
        code = 1
    say("[run] stopped")
    return code


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


if __name__ == "__main__":
    sys.exit(main())
