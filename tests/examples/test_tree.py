"""examples/tree_state_source (arpc.md F4) and benchmarks/bench_tree.py (F5).

* the generated flights schema: ``F * (9 + G) + 8`` states (148 for 10 x 5), its
  relations, the JSON / Python outputs and the generator's CLI;
* node.py's settings (environment, flags, errors) and its HTTP server, in process:
  keep-alive, HEAD, pipelining, 400 / 404 / 405 / 413 / 431, and random bytes;
* the whole tree as processes (run.py, ports 0): random mutations at the root reach every
  leaf's ``GET /``; once they stop, all 7 nodes have the same clock; a mutation made at
  the root reaches every leaf; ``rep-1`` killed with SIGKILL is restarted by run.py, its
  leaves resync (new epoch) and match the root again; SIGINT stops everything;
* the launcher's failures (a port in use) and the benchmark's ``--quick`` output shape.

Processes are always killed on the way out, and the time limits only guard against hangs.
HTTP state is polled with a short sleep between tries: that is how a client sees it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_am as am
from tests.support.proc_lines import ProcLines
from trio_am import rpc

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE = ROOT / "examples" / "tree_state_source"
BENCH = ROOT / "benchmarks" / "bench_tree.py"
LIMIT = 30.0

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, /proc")


def load(name: str, path: Path) -> ModuleType:
    key = f"_test_tree_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


node = load("node", EXAMPLE / "node.py")
flights = load("flights", EXAMPLE / "flights.py")
run_mod = load("run", EXAMPLE / "run.py")
bench = load("bench", BENCH)


# =========================================================================== schema
def test_schema_has_148_states_for_10_flights_and_5_gates() -> None:
    schema = flights.flights_schema()
    assert len(schema) == 148 == flights.state_count(10, 5)
    mach = am.Machine(schema)
    assert len(mach.state_names) == 148
    assert mach.state_names[:8] == [
        "Exception",
        "ErrNetwork",
        "ErrHandlerTimeout",
        "Start",
        "Ready",
        "Healthcheck",
        "Heartbeat",
        "ErrOnClient",
    ]
    assert mach.state_names[-1] == "Flight10Gate5"


@given(st.integers(1, 30), st.integers(1, 12))
@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
def test_schema_size_formula(f: int, g: int) -> None:
    schema = flights.flights_schema(f, g)
    assert len(schema) == f * (9 + g) + 8 == flights.state_count(f, g)
    am.Machine(schema)  # a valid schema


def test_schema_relations() -> None:
    mach = am.Machine(flights.flights_schema(2, 3))
    mach.add(["Start", "Ready"])
    # the auto states come up by themselves
    assert mach.is_all(["Flight1Scheduled", "Flight1GateUnknown", "Flight2Scheduled"])
    # a status excludes the others (the auto Scheduled too)
    mach.add1("Flight1Delayed")
    assert mach.is1("Flight1Delayed") and mach.not1("Flight1Scheduled")
    mach.add1("Flight1OnTime")
    assert mach.is1("Flight1OnTime") and mach.not1("Flight1Delayed")
    # GoToGate requires Outbound
    assert mach.add1("Flight1GoToGate") == am.Result.CANCELED
    mach.add(["Flight1Outbound", "Flight1GoToGate"])
    assert mach.is_all(["Flight1Outbound", "Flight1GoToGate"])
    # Inbound and Outbound exclude each other, so GoToGate goes too
    mach.add1("Flight1Inbound")
    assert mach.not_any(["Flight1Outbound", "Flight1GoToGate"])
    # Departed also removes GoToGate
    mach.add(["Flight1Outbound", "Flight1GoToGate"])
    mach.add1("Flight1Departed")
    assert mach.is1("Flight1Departed") and mach.not1("Flight1GoToGate")
    # gates exclude each other, per flight
    mach.add(["Flight1Gate1", "Flight2Gate1"])
    mach.add1("Flight1Gate3")
    assert mach.is_all(["Flight1Gate3", "Flight2Gate1"]) and mach.not1("Flight1Gate1")


def test_schema_bad_sizes() -> None:
    for f, g in ((0, 5), (10, 0), (1001, 1), (1, 101), (True, 2)):
        with pytest.raises(ValueError, match="must be an integer"):
            flights.flights_schema(f, g)


def test_schema_python_output_round_trips() -> None:
    source = flights.schema_to_python(3, 2)
    ns: dict[str, Any] = {}
    exec(compile(source, "ss_flights.py", "exec"), ns)
    assert ns["FLIGHTS_SCHEMA"] == flights.flights_schema(3, 2)
    assert list(ns["FlightsStates"].names()) == list(flights.flights_schema(3, 2))
    data = flights.schema_to_json(flights.flights_schema(3, 2))
    assert data["Flight2Departed"]["remove"][-1] == "Flight2GoToGate"
    assert data["Flight3GateUnknown"] == {"auto": True}


def test_schema_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert flights.main([]) == 0
    out = capsys.readouterr().out
    assert "states: 148 = 10 x (9 + 5) + 8" in out
    assert flights.main(["--flights", "2", "--gates", "1", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2 * 10 + 8
    with pytest.raises(SystemExit) as exc:
        flights.main(["--gates", "500"])
    assert exc.value.code == 2
    assert "gates must be an integer from 1 to 100" in capsys.readouterr().err


# =========================================================================== node settings
def test_node_config_from_env_and_flags() -> None:
    env = {"TST_ADDR": ":19700", "TST_HTTP_ADDR": "0.0.0.0:18700", "MUTATION_EVERY": "0.5"}
    cfg, watch = node.parse_args([], env)
    assert (cfg.name, cfg.addr, cfg.http_addr, cfg.is_root) == (
        "root",
        "tcp://127.0.0.1:19700",
        ("0.0.0.0", 18700),
        True,
    )
    assert cfg.mutation_every == 0.5 and not watch
    env["TST_PARENT_ADDR"] = "ws://127.0.0.1:19700"
    env["TST_NAME"] = "rep-1"
    cfg, watch = node.parse_args(["--addr", "[::1]:0", "--mutations", "5", "--stdin-watch"], env)
    assert (cfg.name, cfg.addr, cfg.parent_addr, cfg.mutations, watch) == (
        "rep-1",
        "tcp://[::1]:0",
        "ws://127.0.0.1:19700",
        5,
        True,
    )
    assert not cfg.is_root


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TST_ADDR (--addr) is required"),
        ({"TST_ADDR": "nowhere"}, "expected host:port"),
        ({"TST_ADDR": ":70000"}, "expected host:port"),
        ({"TST_ADDR": "http://x:1"}, "expected a tcp:// or ws:// URL"),
        ({"TST_ADDR": ":0", "TST_PARENT_ADDR": ":1"}, "a replica needs a name"),
        ({"TST_ADDR": ":0", "TST_NAME": "bad name!"}, "TST_NAME"),
        ({"TST_ADDR": ":0", "MUTATION_EVERY": "soon"}, "MUTATION_EVERY (--mutation-every)='soon'"),
        ({"TST_ADDR": ":0", "MUTATION_EVERY": "nan"}, "must be from 0 to 3600"),
        ({"TST_ADDR": ":0", "TST_GATES": "0"}, "TST_GATES"),
        ({"TST_ADDR": ":0", "TST_HTTP_ADDR": "a b:1"}, "bad host"),
    ],
)
def test_node_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(node.ConfigError) as exc:
        node.parse_args([], env)
    assert message in str(exc.value)


def test_node_main_exits_2_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in run_mod.NODE_ENV:
        monkeypatch.delenv(var, raising=False)
    assert node.main(["--addr", ":0", "--flights", "0"]) == 2
    assert "bad setting: TST_FLIGHTS (--flights)='0'" in capsys.readouterr().err


# =========================================================================== HTTP
@asynccontextmanager
async def http_node(mach: am.Machine) -> AsyncIterator[tuple[str, int]]:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(node.serve_http, mach, "127.0.0.1", 0)
            yield addr
            nursery.cancel_scope.cancel()


class Raw:
    """A raw HTTP/1.1 client connection for the tests."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-case names) and body (Content-Length;
        none for a ``head`` request)."""
        while b"\r\n\r\n" not in self.buf:
            chunk = await self.stream.receive_some(65536)
            assert chunk, f"closed before a response; got {self.buf!r}"
            self.buf += chunk
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = top.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        n = 0 if head else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self.buf += await self.stream.receive_some(65536)
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body

    async def closed(self) -> bool:
        """True when the server closed the connection (after what it sent)."""
        while True:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return True
            self.buf += chunk


@asynccontextmanager
async def raw(addr: tuple[str, int]) -> AsyncIterator[Raw]:
    stream = await trio.open_tcp_stream(*addr)
    async with stream:
        yield Raw(stream)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def test_http_views_and_keep_alive() -> None:
    async with am.open_machine(flights.flights_schema(2, 2), id="root") as mach:
        mach.add(["Start", "Ready"])
        async with http_node(mach) as addr, raw(addr) as c:
            await c.stream.send_all(get("/"))
            status, headers, body = await c.response()
            assert status == 200 and headers["content-type"] == "application/json"
            assert json.loads(body) == mach.active_states()
            # the same connection, after a change: a fresh body
            mach.add1("Flight2Gate2")
            await c.stream.send_all(get("/?fresh=1"))
            assert "Flight2Gate2" in json.loads((await c.response())[2])
            await c.stream.send_all(get("/time") + get("/clock"))  # pipelined
            _, _, t = await c.response()
            _, _, clock = await c.response()
            assert json.loads(t) == mach.time().sum()
            assert json.loads(clock) == mach.clock()
            await c.stream.send_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, body = await c.response(head=True)
            assert status == 200 and body == b""
            assert int(headers["content-length"]) == len(json.dumps(mach.active_states())) + 1
            await c.stream.send_all(get("/nope"))
            status, _, body = await c.response()
            assert status == 404 and b"try /" in body
            await c.stream.send_all(get("/", "Connection: close\r\n"))
            status, headers, _ = await c.response()
            assert status == 200 and headers["connection"] == "close"
            assert await c.closed()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405),
        (b"DELETE /time HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"HELLO\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 needs Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" + b"a" * 70000, 413),
    ],
)
async def test_http_bad_requests(request_bytes: bytes, status: int) -> None:
    async with am.open_machine(flights.flights_schema(1, 1)) as mach:
        async with http_node(mach) as addr:
            async with raw(addr) as c:
                await c.stream.send_all(request_bytes)
                got, headers, _ = await c.response()
                assert got == status
                assert headers["connection"] == "close"
                if status == 405:
                    assert headers["allow"] == "GET, HEAD"
                assert await c.closed()
            async with raw(addr) as c:  # the server is fine
                await c.stream.send_all(get("/"))
                assert (await c.response())[0] == 200


@given(st.binary(max_size=300))
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_http_random_bytes_never_break_the_server(data: bytes) -> None:
    async def main() -> None:
        async with am.open_machine(flights.flights_schema(1, 1)) as mach:
            async with http_node(mach) as addr:
                with trio.fail_after(10):
                    async with raw(addr) as c:
                        try:
                            await c.stream.send_all(data)
                            await c.stream.send_eof()
                            await c.closed()  # answered or not, it ends
                        except trio.BrokenResourceError:
                            pass
                    async with raw(addr) as c:
                        await c.stream.send_all(get("/"))
                        assert (await c.response())[0] == 200

    trio.run(main)


async def test_http_peer_vanishing_mid_request() -> None:
    async with am.open_machine(flights.flights_schema(1, 1)) as mach:
        async with http_node(mach) as addr:
            async with raw(addr) as c:
                await c.stream.send_all(b"GET / HTTP/1.1\r\nHo")
            for _ in range(3):
                async with raw(addr) as c:
                    await c.stream.send_all(get("/"))
                    assert (await c.response())[0] == 200


# =========================================================================== the tree
class Tree(ProcLines):
    """run.py as a process: its output lines as they come, and HTTP helpers."""

    def ready(self) -> dict[str, tuple[str, str, int]]:
        """name -> (aRPC URL, HTTP URL, pid), the latest ready line of each node."""
        out = {}
        for line in self.lines:
            if m := re.fullmatch(r"\[([\w-]+)\] ready: aRPC (\S+) HTTP (\S+) pid (\d+)", line):
                out[m[1]] = (m[2], m[3], int(m[4]))
        return out


#: What the command line of every process these tests start contains: a pid whose
#: command line lacks it was reused by another process, which must not be touched.
MARKERS = (b"tree_state_source", b"bench_tree.py")


def _ours(pid: int) -> bool:
    """``pid`` is alive (not a zombie) and one of the processes of these tests."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if stat.rsplit(") ", 1)[1].startswith("Z"):
        return False
    return any(m in cmdline for m in MARKERS)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, grandchildren ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(") ", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if not _ours(pid):
            continue
        try:
            os.kill(pid, signal.SIGKILL)  # also ends a stopped process
        except (ProcessLookupError, PermissionError):
            pass


async def assert_gone(pids: list[int]) -> None:
    with trio.fail_after(10):
        for pid in pids:
            while _ours(pid):
                await trio.sleep(0.05)


@asynccontextmanager
async def tree(*args: str) -> AsyncIterator[Tree]:
    env = {k: v for k, v in os.environ.items() if k not in run_mod.NODE_ENV}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-u", str(EXAMPLE / "run.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    t = Tree(proc)
    pids: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(t.pump)
            nursery.start_soon(t.drain_stderr)
            try:
                yield t
            finally:
                pids = [pid for line in t.lines for pid in _pids(line)]
                pids += descendants(proc.pid)
                if proc.returncode is None:
                    proc.kill()  # the nodes exit when their stdin closes
                with trio.CancelScope(shield=True):
                    await proc.wait()
    finally:
        if proc.returncode is None:
            pids += descendants(proc.pid)
            proc.kill()
            await proc.wait()
        kill_all(pids)  # in case a node did not notice
        await assert_gone(pids)


def _pids(line: str) -> list[int]:
    m = re.search(r"\] ready: .* pid (\d+)$", line)
    return [int(m[1])] if m else []


async def http_get(url: str, path: str = "") -> Any:
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    async with raw((host, int(port))) as c:
        await c.stream.send_all(get("/" + path))
        status, _, body = await c.response()
        assert status == 200, body
        return json.loads(body)


async def poll(fn: Any, what: str, limit: float = 15.0) -> Any:
    """Call async ``fn`` until it returns a true value; short sleeps between tries."""
    with trio.move_on_after(limit):
        while True:
            value = await fn()
            if value:
                return value
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


LEAVES = ["rep-1-1", "rep-1-2", "rep-2-1", "rep-2-2"]
NAMES = ["root", "rep-1", "rep-2", *LEAVES]


async def test_tree_end_to_end() -> None:
    args = ["--rpc-port", "0", "--http-port", "0", "--mutation-every", "0.02"]
    args += ["--mutations", "60", "--seed", "5", "--restart-delay", "0.1", "--time-every", "0.3"]
    async with tree(*args) as t:
        with trio.fail_after(LIMIT):
            await t.wait_line(r"^\[run\] tree ready: 7 nodes")
            nodes = t.ready()
            assert sorted(nodes) == sorted(NAMES)
            # distinct real ports, picked by the nodes
            assert len({u for a, h, _ in nodes.values() for u in (a, h)}) == 14
            http = {name: nodes[name][1] for name in NAMES}
            root_rpc = nodes["root"][0]

            # 1. the random mutations stop; then every node has the root's clock
            m = await t.wait_line(r"^\[root\] mutations stopped after 60 rounds \(time (\d+)\)")
            final = int(m[1])
            assert final > 20

            async def same_clock() -> bool:
                clocks = [await http_get(http[n], "clock") for n in NAMES]
                return all(c == clocks[0] for c in clocks)

            await poll(same_clock, "equal clocks on all 7 nodes")
            assert {await http_get(http[n], "time") for n in NAMES} == {final}
            mark = len(t.lines)
            for n in NAMES:  # and each prints it
                await t.wait_line(rf"^\[{n}\] Time: {final}$", mark)
            assert len({json.dumps(await http_get(http[n])) for n in NAMES}) == 1

            # 2. a mutation made at the root (by an aRPC client of it) reaches every leaf
            async with rpc.connect(root_rpc, id="test") as client:
                with trio.fail_after(10):
                    await client.rpc.when1("Ready")
                active = await http_get(http["root"])
                state = next(
                    f"Flight{f}Gate{g}"
                    for f in range(1, 11)
                    for g in range(1, 6)
                    if f"Flight{f}Gate{g}" not in active
                )
                assert await client.mach.add1_remote(state) == am.Result.EXECUTED

                async def everywhere(state: str = state) -> bool:
                    return all([state in await http_get(http[n]) for n in LEAVES])

                await poll(everywhere, f"{state} at every leaf")

                # 3. rep-1 dies; run.py restarts it; its leaves resync and match the root
                mark = len(t.lines)
                os.kill(nodes["rep-1"][2], signal.SIGKILL)
                await t.wait_line(r"^\[run\] rep-1 exited with status -9; restarting", mark)
                await t.wait_line(r"^\[rep-1\] ready: ", mark)
                assert t.ready()["rep-1"][:2] == nodes["rep-1"][:2]  # the same ports
                for leaf in ("rep-1-1", "rep-1-2"):
                    await t.wait_line(rf"^\[{leaf}\] lost tcp://\S+; reconnecting", mark)
                    await t.wait_line(
                        rf"^\[{leaf}\] synced with \S+ \(new epoch, full resync", mark
                    )
                # rep-2's side never noticed
                assert not [x for x in t.lines[mark:] if re.match(r"\[rep-2.*(lost|synced)", x)]
                state2 = next(s for s in (f"Flight1Gate{g}" for g in range(1, 6)) if s != state)
                assert await client.mach.add1_remote(state2) == am.Result.EXECUTED
                await poll(same_clock, "equal clocks after the restart")
                assert state2 in await http_get(http["rep-1-1"])

            # 4. a leaf answers a bad request and keeps serving
            host, port = http["rep-2-2"].split("//")[1].rstrip("/").rsplit(":", 1)
            async with raw((host, int(port))) as c:
                await c.stream.send_all(b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await c.response())[0] == 405
            assert await http_get(http["rep-2-2"])

            # 5. SIGINT stops everything, leaves first
            pids = [nodes[n][2] for n in NAMES if n != "rep-1"] + [t.ready()["rep-1"][2]]
            mark = len(t.lines)
            t.proc.send_signal(signal.SIGINT)
            assert await t.proc.wait() == 0
            await t.wait_line(r"^\[run\] stopped$", mark)
            byes = [x.split("]")[0][1:] for x in t.lines[mark:] if x.endswith("] bye")]
            assert sorted(byes) == sorted(NAMES)
            assert byes.index("root") == 6
            await assert_gone(pids)
    assert "Traceback" not in t.stderr.decode(), t.text()


async def test_tree_port_in_use_stops_the_launch() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with tree("--rpc-port", "0", "--http-port", str(port)) as t:
            with trio.fail_after(LIMIT):
                assert await t.proc.wait() == 1
                await t.wait_line(r"^\[run\] stopped$")
        err = t.stderr.decode()
        assert "[run] error: root exited with status 1 before it was ready" in err, t.text()
        assert "Address already in use" in t.text()
        assert "Traceback" not in err


def test_run_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--leaves", "0"], "--leaves: must be from 1 to 9"),
        (["--rpc-port", "99999"], "not a port"),
        (["--mutation-every", "often"], "MUTATION_EVERY (--mutation-every)='often'"),
        (["--rpc-port", "65530"], "do not fit below 65536"),
    ):
        with pytest.raises(SystemExit) as exc:
            run_mod.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_tree_layout() -> None:
    specs = run_mod.tree()
    assert [(s.name, s.parent, s.rpc_port, s.http_port) for s in specs] == [
        ("root", None, 19700, 18700),
        ("rep-1", "root", 19701, 18701),
        ("rep-2", "root", 19702, 18702),
        ("rep-1-1", "rep-1", 19703, 18703),
        ("rep-1-2", "rep-1", 19704, 18704),
        ("rep-2-1", "rep-2", 19705, 18705),
        ("rep-2-2", "rep-2", 19706, 18706),
    ]
    wide = run_mod.tree(2, 3, 0, 0)
    assert [s.name for s in wide if s.parent == "rep-2"] == ["rep-2-1", "rep-2-2", "rep-2-3"]
    assert {s.rpc_port for s in wide} == {0}


# =========================================================================== benchmark
def test_signal_limiter_duty_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process running flat out at budget 0.1 is stopped, then continued once its
    credit is back: 1 tick running, 9 stopped (fake CPU clock and signals)."""
    cpu = {"t": 0.0}
    sent: list[int] = []
    monkeypatch.setattr(bench, "cpu_seconds", lambda pid: cpu["t"])
    monkeypatch.setattr(bench.os, "kill", lambda pid, sig: sent.append(sig))
    lim = bench.SignalLimiter(0.1)
    lim.add(42)
    running = True
    pattern = []
    for _ in range(40):
        if running:
            cpu["t"] += 0.01  # a full tick of CPU
        lim.step(0.01)
        if sent:
            running = sent.pop() == signal.SIGCONT
        pattern.append(running)
    # after the first tick: 9 ticks stopped, 1 running, over and over
    assert pattern[0] is False
    runs = "".join("r" if r else "s" for r in pattern[:40])
    assert runs.count("r") == 4 and runs.startswith("sssssssss"), runs
    lim.release()


def test_signal_limiter_idle_process_keeps_running(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    monkeypatch.setattr(bench, "cpu_seconds", lambda pid: 1.0)
    monkeypatch.setattr(bench.os, "kill", lambda pid, sig: sent.append(sig))
    lim = bench.SignalLimiter(0.1)
    lim.add(42)
    for _ in range(100):
        lim.step(0.01)
    assert sent == []


@contextmanager
def fake_cgroupfs(tmp: Path, version: int) -> Iterator[Path]:
    (tmp / "proc/self").mkdir(parents=True)
    if version == 2:
        home = tmp / "sys/fs/cgroup/user.slice"
        home.mkdir(parents=True)
        (home / "cgroup.subtree_control").write_text("cpu memory\n")
        (tmp / "proc/self/cgroup").write_text("0::/user.slice\n")
        mounts = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    else:
        home = tmp / "sys/fs/cgroup/cpu/docker/abc"
        home.mkdir(parents=True)
        (tmp / "proc/self/cgroup").write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
        mounts = (
            "31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
            "32 25 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
        )
    (tmp / "proc/self/mountinfo").write_text(mounts)
    yield home


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_limiter_writes_quota(
    tmp_path: Path, version: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with fake_cgroupfs(tmp_path, version) as home:
        lim = bench.CgroupLimiter(0.25, fs=tmp_path, tag="bench")
        assert lim.version == version and lim.home == home
        lim.add(1234, "root")
        group = home / "bench"
        if version == 2:
            assert (group / "cgroup.subtree_control").read_text() == "+cpu"
            assert (group / "root/cpu.max").read_text() == "25000 100000"
        else:
            assert (group / "root/cpu.cfs_quota_us").read_text() == "25000"
            assert (group / "root/cpu.cfs_period_us").read_text() == "100000"
        assert (group / "root/cgroup.procs").read_text() == "1234"
        assert "25000" in lim.describe()
        # close(): the process goes home, the groups go (real cgroupfs removes the
        # control files with the directory; here they are plain files)
        import shutil

        monkeypatch.setattr(Path, "rmdir", lambda self: shutil.rmtree(self))
        lim.close()
        assert (home / "cgroup.procs").read_text() == "1234"
        assert not group.exists()


def test_cgroup_limiter_without_a_usable_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/\n")
    (tmp_path / "proc/self/mountinfo").write_text("")
    with pytest.raises(bench.CgroupError):
        bench.CgroupLimiter(0.1, fs=tmp_path)


def test_percentile() -> None:
    values = [float(i) for i in range(1, 101)]
    assert bench.percentile(values, 0.5) == 50
    assert bench.percentile(values, 0.99) == 99
    assert bench.percentile(values, 0.0) == 1
    assert bench.percentile(values, 1.0) == 100
    assert str(bench.percentile([], 0.5)) == "nan"


def test_bench_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--topologies", "root,7l2"], "--topologies: expected a subset"),
        (["--cpu", "-1"], "--cpu must be from 0 to 64"),
        (["--duration", "0"], "--duration must be"),
        (["--limit", "magic"], "invalid choice"),
    ):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


async def test_bench_quick_output_shape(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(BENCH), "--quick", "--limit", "signals", "--json", str(out_json)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    out = err = b""
    seen: set[int] = set()  # every process the benchmark started (nodes, load generators)
    try:
        with trio.fail_after(60):

            async def read(stream: Any, into: str) -> None:
                nonlocal out, err
                while chunk := await stream.receive_some(65536):
                    if into == "out":
                        out += chunk
                    else:
                        err += chunk

            async def watch() -> None:
                while True:
                    seen.update(descendants(proc.pid))
                    await trio.sleep(0.1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                async with trio.open_nursery() as readers:
                    readers.start_soon(read, proc.stdout, "out")
                    readers.start_soon(read, proc.stderr, "err")
                nursery.cancel_scope.cancel()
            await proc.wait()
            assert len(seen) >= 10  # 9 nodes and at least one load generator
            await assert_gone(sorted(seen))  # all ended by the benchmark itself
    finally:
        if proc.returncode is None:
            seen.update(descendants(proc.pid))
            proc.kill()
            await proc.wait()
        kill_all(sorted(seen))
    text = out.decode()
    lines = text.splitlines()
    report = text + "\n--- stderr:\n" + err.decode()
    assert proc.returncode in (0, 1), report
    assert "Traceback" not in err.decode(), report
    assert re.search(r"^CPU budget: 0\.1 CPU per node: SIGSTOP/SIGCONT duty cycling", text, re.M)
    header = "| topology | req/s | overall req/s | errors | timeouts | p50 | p90 | p99 | node CPU |"
    i = lines.index(header)
    num = r"[\d ]+\.\d\d"
    lat = r"(\d+ µs|[\d.]+ ms|[\d ]+ ms|-)"
    for j, name in enumerate(["root only", "2 L1", "4 L2", "6 L2"]):
        row = rf"\| {name} \| {num} \| {num} \| \d+ \| \d+ \| {lat} \| {lat} \| {lat} \| (\d\.\d\d max|-) \|"
        assert re.fullmatch(row, lines[i + 2 + j]), lines[i + 2 + j]
    assert "| 6 L2 | 7 351.38 | 6 914.62 | 0 | 601 µs | 810 µs |" in lines
    m = re.search(r"^check: 6 L2 .* overall req/s = [\d.]+x root only .*: (PASS|FAIL)$", text, re.M)
    assert m, report
    assert (m[1] == "PASS") == (proc.returncode == 0)
    data = json.loads(out_json.read_text())
    assert [r["topology"] for r in data["rows"]] == ["root only", "2 L1", "4 L2", "6 L2"]
    assert data["check"]["pass"] == (m[1] == "PASS")
    assert all(r["ok"] > 0 for r in data["rows"])
