"""The aRPC examples (arpc.md Part F1 and F2) run as separate processes and talk.

Each example runs in a subprocess (``sys.executable``, working directory = the
repository root) with stdout and stderr piped; a reader task collects its lines and the
tests wait for the expected ones under ``trio.fail_after``. Ports are chosen by binding
port 0 first. Children are always killed on the way out. Long timers of the examples are
shortened through their environment variables (``ARPC_PAYLOAD_EVERY``,
``ARPC_ADD_EVERY``, ``--duration``).

* F1, ``examples/arpc_server.py`` + ``examples/arpc_client.py``: both "Connected" lines,
  a payload line and a ``*State`` line appear; a test client mirroring the server with
  one delta per mutation never sees two of ``Foo``, ``Bar``, ``Baz`` active at once; both
  exit 0 on SIGINT / SIGTERM, and the client also after ``ARPC_RUN_FOR``.
* F2, ``examples/cli_daemon/daemon.py`` + ``cli.py``: ``--duration=0.5s`` prints the
  payload and exits 0 within 5 s, and ``OpFoo1`` is inactive afterwards (seen by a test
  client on the daemon's REPL endpoint); no flag exits 2; a CLI killed mid-op makes the
  daemon print ``ctx done`` and remove the op, without ``op done``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from trio_am import rpc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DAEMON_DIR = EXAMPLES / "cli_daemon"

#: A generous bound for one expected line (process start-up included).
LIMIT = 15.0
#: F2's own check: ``cli.py --duration=0.5s`` exits 0 within 5 s.
F2_CLI_LIMIT = 5.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_port_pair() -> int:
    """A free port P whose P+1 is free too (the daemon's REPL listens on port+1)."""
    for _ in range(50):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


class Child:
    """A running example: its collected stdout lines and stderr."""

    def __init__(self, name: str, proc: trio.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []
        self.stderr = b""
        self.eof = False
        self._new = trio.Event()

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        async for chunk in self.proc.stdout:
            buf += chunk
            *done, buf = buf.split(b"\n")
            if done:
                self.lines.extend(line.decode() for line in done)
                self._new.set()
                self._new = trio.Event()
        if buf:
            self.lines.append(buf.decode())
        self.eof = True
        self._new.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for chunk in self.proc.stderr:
            self.stderr += chunk

    def report(self) -> str:
        return (
            f"--- {self.name} stdout ---\n"
            + "\n".join(self.lines)
            + f"\n--- {self.name} stderr ---\n{self.stderr.decode(errors='replace')}"
        )

    async def expect(self, want: str | re.Pattern[str], timeout: float = LIMIT) -> str:
        """Wait for a line equal to ``want`` (or matching the pattern); returns it."""

        def ok(line: str) -> bool:
            return line == want if isinstance(want, str) else want.fullmatch(line) is not None

        i = 0
        try:
            with trio.fail_after(timeout):
                while True:
                    for line in self.lines[i:]:
                        if ok(line):
                            return line
                    i = len(self.lines)
                    if self.eof:
                        raise AssertionError(f"{self.name} ended before the line {want!r}")
                    await self._new.wait()
        except (AssertionError, trio.TooSlowError) as exc:
            raise AssertionError(f"{exc!r}: no line {want!r}\n{self.report()}") from None

    async def exit_code(self, timeout: float = LIMIT) -> int:
        try:
            with trio.fail_after(timeout):
                code = await self.proc.wait()
                while not self.eof:
                    await self._new.wait()
        except trio.TooSlowError:
            raise AssertionError(f"{self.name} did not exit\n{self.report()}") from None
        return code


@asynccontextmanager
async def spawn(
    name: str, script: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[Child]:
    """Run ``python script args`` from the repository root; killed on exit."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child = Child(name, proc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child._read_stdout)
            nursery.start_soon(child._read_stderr)
            try:
                yield child
            finally:
                with trio.CancelScope(shield=True):
                    if proc.returncode is None:
                        proc.kill()
                    await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def stop(child: Child, sig: signal.Signals) -> None:
    """Send ``sig`` and assert a clean exit: status 0, ``bye``, nothing on stderr."""
    child.proc.send_signal(sig)
    assert await child.exit_code() == 0, child.report()
    assert child.lines[-1:] == ["bye"], child.report()
    assert child.stderr == b"", child.report()


# ------------------------------------------------------------------------------------- F1

FOO_BAR_BAZ = ("Foo", "Bar", "Baz")


async def test_f1_arpc_server_and_client() -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    env = {"ARPC_ADDR": f"127.0.0.1:{port}", "ARPC_PAYLOAD_EVERY": "0.3", "ARPC_ADD_EVERY": "0.02"}
    async with spawn("server", EXAMPLES / "arpc_server.py", env=env) as server:
        await server.expect(f"Started aRPC server on {url}")
        async with spawn("client", EXAMPLES / "arpc_client.py", env=env) as client:
            await client.expect(f"Connected to aRPC {url}")
            await server.expect("Client connected")
            await client.expect("Payload: Hello aRPC")
            await server.expect(re.compile(r"(Foo|Bar|Baz)State"))

            # a test client: one delta per mutation (muts), so its mirror goes through
            # every state the server's machine went through
            seen: list[tuple[bool, ...]] = []

            def record(clock: dict[str, int]) -> bool:
                active = tuple(clock[s] % 2 == 1 for s in FOO_BAR_BAZ)
                if not seen or seen[-1] != active:
                    seen.append(active)
                switches = sum(1 for a in seen if any(a))
                return sum(active) > 1 or switches >= 20

            async with rpc.connect(url, id="watcher", muts=True) as watcher:
                with trio.fail_after(LIMIT):
                    await watcher.rpc.when1("Ready")
                    await watcher.mach.when_query(record)
                assert all(sum(a) <= 1 for a in seen), seen
                assert sum(1 for a in seen if any(a)) >= 20, seen
                # the example client's mutations went through the server's handlers
                assert watcher.mach.tick("Start") == 1

            await stop(client, signal.SIGINT)

        # ARPC_RUN_FOR: a client that leaves by itself
        async with spawn(
            "client2", EXAMPLES / "arpc_client.py", env={**env, "ARPC_RUN_FOR": "0.3"}
        ) as client2:
            await client2.expect(f"Connected to aRPC {url}")
            assert await client2.exit_code() == 0, client2.report()
            assert client2.lines[-1] == "bye" and client2.stderr == b"", client2.report()

        await stop(server, signal.SIGTERM)
        # one "Client connected" per connection: the example client, the watcher, client2
        assert server.lines.count("Client connected") == 3, server.report()


# ------------------------------------------------------------------------------------- F2


@asynccontextmanager
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[Child, int]]:
    """The F2 daemon on a free port, once it printed both "listening" lines."""
    port = free_port_pair()
    async with spawn(
        "daemon",
        DAEMON_DIR / "daemon.py",
        f"--addr=127.0.0.1:{port}",
        f"--repl-dir={tmp_path}",
    ) as d:
        await d.expect(f"listening on ws://127.0.0.1:{port}")
        repl = f"tcp://127.0.0.1:{port + 1}"
        await d.expect(f"REPL listening on {repl}")
        assert (tmp_path / "daemon-repl.addr").read_text().strip() == repl
        yield d, port


@asynccontextmanager
async def repl_client(port: int) -> AsyncIterator[rpc.NetMachine]:
    """A test client on the daemon's REPL endpoint (port+1, TCP): its mirror."""
    async with rpc.connect(f"tcp://127.0.0.1:{port + 1}", id="test-repl") as c:
        with trio.fail_after(LIMIT):
            await c.rpc.when1("Ready")
        yield c.mach


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, str(DAEMON_DIR / "cli.py"), *args],
        cwd=ROOT,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_f2_op_runs_and_answers_its_cli(tmp_path: Path) -> None:
    async with daemon(tmp_path) as (d, port):
        with trio.fail_after(F2_CLI_LIMIT):
            cli = await run_cli("--foo-1", "--duration=0.5s", f"--addr=127.0.0.1:{port}")
        out = cli.stdout.decode().splitlines()
        assert cli.returncode == 0, (out, cli.stderr)
        assert out == [f"Connected to aRPC ws://127.0.0.1:{port}", "Payload: done for ['OpFoo1']"]
        assert cli.stderr == b""
        await d.expect("starting op ['OpFoo1'] for 0.5s")
        await d.expect("op done")
        assert "ctx done" not in d.lines
        async with repl_client(port) as mirror:
            assert not mirror.is1("OpFoo1")
            assert mirror.tick("OpFoo1") == 2  # it ran once, and was removed
            assert mirror.is1("Start")
        await stop(d, signal.SIGTERM)


async def test_f2_cli_without_an_op_flag_exits_2() -> None:
    cli = await run_cli("--duration=0.5s", "--addr=127.0.0.1:1")
    assert cli.returncode == 2
    assert b"usage:" in cli.stderr and b"--foo-1" in cli.stderr
    assert cli.stdout == b""


async def test_f2_killed_cli_ends_its_op(tmp_path: Path) -> None:
    async with daemon(tmp_path) as (d, port), repl_client(port) as mirror:
        async with spawn(
            "cli", DAEMON_DIR / "cli.py", "--foo-1", "--duration=60s", f"--addr=127.0.0.1:{port}"
        ) as cli:
            await cli.expect(f"Connected to aRPC ws://127.0.0.1:{port}")
            await d.expect("starting op ['OpFoo1'] for 60s")
            with trio.fail_after(LIMIT):
                await mirror.when1("OpFoo1")
            cli.proc.kill()
            assert await cli.exit_code() == -signal.SIGKILL
        await d.expect("ctx done")
        with trio.fail_after(LIMIT):
            await mirror.when_not1("OpFoo1")  # removed by the daemon
        assert mirror.tick("OpFoo1") == 2
        assert "op done" not in d.lines  # nothing was sent: the payload follows "op done"
        await stop(d, signal.SIGTERM)
