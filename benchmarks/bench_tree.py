"""arpc.md F5 (benchmark_state_source) in Python: HTTP load on a tree of replicas.

::

    python benchmarks/bench_tree.py            # 4 topologies, 1 s warm-up + 10 s each
    python benchmarks/bench_tree.py --quick    # 0.2 s + 0.5 s each (a smoke run)
    python3 -m nox -s bench-tree

One tree of ``examples/tree_state_source`` nodes runs for the whole benchmark, as in
asyncmachine-go's docker-compose file: ``root``, ``rep-1`` and ``rep-2`` mirroring it, and
``rep-1-1`` .. ``rep-1-3``, ``rep-2-1`` .. ``rep-2-3`` mirroring those (9 processes). Each
topology loads a different set of nodes' ``GET /``:

==========  ==========================================  ================================
topology    loaded nodes                                Go's load balancer (Caddy)
==========  ==========================================  ================================
root only   ``root``                                    ``root``
2 L1        ``rep-1``, ``rep-2``                        least connections over both
4 L2        ``rep-1-1``, ``rep-1-2``, ``rep-2-1``,      least connections over the four
            ``rep-2-2``
6 L2        all six second-level replicas               least connections over the six
==========  ==========================================  ================================

**Equal CPU shares.** Once every node is ready, each node process is held to the same CPU
budget (``--cpu``, 0.1 of a core by default, like Go's containers), enforced from this
process (``--limit``):

* ``cgroup``: a cgroup per node with a CPU quota (v2 ``cpu.max``, or v1
  ``cpu.cfs_quota_us``), 100 ms periods: what ``docker --cpus`` does. Used by ``auto``
  when this process may create cgroups.
* ``signals``: SIGSTOP / SIGCONT duty cycling, the technique of the ``cpulimit`` tool:
  every 10 ms this process reads each node's CPU time (``/proc/<pid>/task/*/schedstat``,
  nanoseconds) and stops a node whose usage ran ahead of its budget until the budget
  catches up (at most 10 ms of credit is kept). Used by ``auto`` otherwise.
* ``none``: no limit.

The method and the budget are printed, with the CPU each loaded node really used.

**Load.** A second process (this file with ``--loadgen``) runs a Trio HTTP/1.1 load
generator: ``--connections`` (512) concurrent requests in a loop, each sent to the
loaded node with the fewest requests in flight, over keep-alive connections (a pool per
node); a request without an answer after ``--timeout`` (1 s, go-wrk's default) counts as
a timeout and its connection is closed. After ``--warmup`` the requests that start and
end within ``--duration`` are measured.

**Output.** The table of arpc.md F5: ``req/s`` is go-wrk's "Requests/sec" (answered
requests divided by the busy time of an average connection, sum of latencies / conns),
``overall req/s`` is answered requests per second of the window; then errors (a
connection failed, or a status other than 200), timeouts, and latency percentiles of the
answered requests. The check: 6 L2 reaches at least 3x the overall req/s of root only,
with 0 errors and 0 timeouts; it prints PASS or FAIL, and FAIL exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import trio

ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE: Final = ROOT / "examples" / "tree_state_source"

#: (name, loaded nodes) of each topology, in arpc.md F5's order.
TOPOLOGIES: Final[dict[str, tuple[str, ...]]] = {
    "root only": ("root",),
    "2 L1": ("rep-1", "rep-2"),
    "4 L2": ("rep-1-1", "rep-1-2", "rep-2-1", "rep-2-2"),
    "6 L2": ("rep-1-1", "rep-1-2", "rep-1-3", "rep-2-1", "rep-2-2", "rep-2-3"),
}
#: Short names for ``--topologies``.
TOPOLOGY_KEYS: Final = {"root": "root only", "2l1": "2 L1", "4l2": "4 L2", "6l2": "6 L2"}
#: asyncmachine-go's figures (arpc.md F5): req/s, overall req/s, timeouts, p50 and p99 (µs).
GO_FIGURES: Final = {
    "root only": (1638.53, 535.39, 3471, 490, 604),
    "2 L1": (1809.40, 1128.51, 1619, 405, 493),
    "4 L2": (2733.10, 2452.13, 220, 699, 918),
    "6 L2": (7351.38, 6914.62, 0, 601, 810),
}
#: The F5 check: 6 L2 reaches this multiple of root only's overall req/s.
CHECK_FACTOR: Final = 3.0
#: Duty-cycling: seconds between two looks at the nodes' CPU time, and the largest credit
#: (in seconds of CPU) an idle node may save up.
TICK: Final = 0.01
MAX_CREDIT: Final = 0.01
#: Seconds to wait between two topologies, at least and at most, for the nodes to finish
#: the previous load (asyncmachine-go restarts its load balancer and waits too). An
#: overloaded node still has to answer the requests that timed out (their connections
#: wait in its accept queue), which takes seconds at 0.1 CPU.
SETTLE_MIN: Final = 0.5
SETTLE_MAX: Final = 30.0
#: Names of the benchmark's cgroups: the prefix and the bench process's pid.
CGROUP_PREFIX: Final = "trio-am-bench-"
#: cgroup quota period (µs), as docker's --cpus.
CFS_PERIOD_US: Final = 100_000


# =========================================================================== load generator
class _Conn:
    """One keep-alive connection of the load generator, with its read buffer."""

    __slots__ = ("buf", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buf += data

    async def request(self, req: bytes) -> tuple[int, bool]:
        """Send ``req``, read one response; return its status and whether the server
        closes the connection after it.

        Raises:
            ConnectionError: the server closed the connection or sent a bad response.
        """
        await self.stream.send_all(req)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > 65536:
                raise ConnectionError("response head too large")
            await self._fill()
        head = bytes(buf[:end]).lower()
        at = head.find(b"content-length:")
        eol = head.find(b"\r\n", at)
        try:
            status = int(head[9:12])
            length = int(head[at + 15 : eol if eol >= 0 else None]) if at >= 0 else -1
        except ValueError:
            length = -1
        if length < 0:
            raise ConnectionError("bad response head (no status or Content-Length)")
        need = end + 4 + length
        while len(buf) < need:
            await self._fill()
        del buf[:need]
        return status, b"connection: close" in head


@dataclass
class LoadResult:
    """What the load generator measured in its window."""

    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    window: float = 0.0
    latency_sum: float = 0.0
    connections: int = 0
    opened: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    per_target: dict[str, int] = field(default_factory=dict)
    percentiles_us: dict[str, float] = field(default_factory=dict)
    #: CPU the load generator itself used during the window, in CPUs.
    loadgen_cpu: float = 0.0

    @property
    def rps(self) -> float:
        """go-wrk's "Requests/sec": answered / (sum of latencies / connections)."""
        busy = self.latency_sum / self.connections if self.connections else 0.0
        return self.ok / busy if busy > 0 else 0.0

    @property
    def overall_rps(self) -> float:
        """Answered requests per second of the measured window."""
        return self.ok / self.window if self.window > 0 else 0.0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` (0..1) percentile of ascending values, nearest rank; nan when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


async def load(
    targets: Sequence[tuple[str, int]],
    *,
    connections: int,
    warmup: float,
    duration: float,
    timeout: float,
    on_mark: Callable[[str], None] | None = None,
) -> LoadResult:
    """Load ``targets`` with ``GET /`` from ``connections`` concurrent loops (least
    in-flight target, keep-alive pools) for ``warmup + duration`` seconds; measure the
    requests that start and end within the last ``duration``. ``on_mark`` is called
    with ``"start"`` and ``"end"`` as the measured window begins and ends."""
    n = len(targets)
    inflight = [0] * n
    pools: list[list[_Conn]] = [[] for _ in targets]
    reqs = [f"GET / HTTP/1.1\r\nHost: {h}:{p}\r\n\r\n".encode() for h, p in targets]
    names = [f"{h}:{p}" for h, p in targets]
    res = LoadResult(connections=connections, per_target=dict.fromkeys(names, 0))
    latencies: list[float] = []
    rotate = 0
    begin = trio.current_time()
    w_start, w_end = begin + warmup, begin + warmup + duration
    now = trio.current_time

    def fail(kind: str, started: float) -> None:
        if w_start <= started and now() <= w_end:
            res.errors += 1
            res.error_kinds[kind] = res.error_kinds.get(kind, 0) + 1

    async def worker() -> None:
        nonlocal rotate
        while True:
            # least in-flight target; ties go round-robin
            rotate = (rotate + 1) % n
            best = rotate
            for j in range(n):
                i = (rotate + j) % n
                if inflight[i] < inflight[best]:
                    best = i
            inflight[best] += 1
            started = now()
            conn: _Conn | None = None
            try:
                with trio.move_on_after(timeout) as cs:
                    try:
                        if pools[best]:
                            conn = pools[best].pop()
                        else:
                            host, port = targets[best]
                            conn = _Conn(await trio.open_tcp_stream(host, port))
                            res.opened += 1
                        status, close = await conn.request(reqs[best])
                    except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                        fail(type(exc).__name__, started)
                        if conn is not None:
                            await _close(conn)
                        await trio.sleep(0.01)  # a refused connect must not spin
                        continue
                ended = now()
                if cs.cancelled_caught:
                    if w_start <= started and ended <= w_end + 1e-3:
                        res.timeouts += 1
                    if conn is not None:
                        await _close(conn)
                    continue
                assert conn is not None
                if status != 200:
                    fail(f"HTTP {status}", started)
                elif w_start <= started and ended <= w_end:
                    res.ok += 1
                    res.per_target[names[best]] += 1
                    latencies.append(ended - started)
                if close:
                    await _close(conn)
                else:
                    pools[best].append(conn)
            finally:
                inflight[best] -= 1

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
        await trio.sleep_until(w_start)
        if on_mark is not None:
            on_mark("start")
        cpu0, t0 = time.process_time(), time.monotonic()
        await trio.sleep_until(w_end)
        res.loadgen_cpu = (time.process_time() - cpu0) / max(1e-9, time.monotonic() - t0)
        if on_mark is not None:
            on_mark("end")
        nursery.cancel_scope.cancel()
    res.window = duration
    for pool in pools:
        for conn in pool:
            await _close(conn)
    latencies.sort()
    res.latency_sum = math.fsum(latencies)
    res.percentiles_us = {
        name: percentile(latencies, q) * 1e6
        for name, q in (("min", 0.0), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    }
    return res


async def _close(conn: _Conn) -> None:
    with trio.CancelScope(shield=True):
        await conn.stream.aclose()


def loadgen_main(ns: argparse.Namespace) -> int:
    """``--loadgen``: run :func:`load` and print the result as one JSON line."""
    targets = []
    for item in ns.targets.split(","):
        host, _, port = item.rpartition(":")
        targets.append((host, int(port)))
    res = trio.run(
        lambda: load(
            targets,
            connections=ns.connections,
            warmup=ns.warmup,
            duration=ns.duration,
            timeout=ns.timeout,
            on_mark=lambda what: print(f"WINDOW {what}", flush=True),
        )
    )
    print(json.dumps(asdict(res)), flush=True)
    return 0


# =========================================================================== CPU budgets
def cpu_seconds(pid: int) -> float | None:
    """CPU time used so far by process ``pid`` (all its threads), None once it is gone.

    Reads ``/proc/<pid>/task/*/schedstat`` (nanoseconds); falls back on ``utime + stime``
    of ``/proc/<pid>/stat`` (clock ticks) where schedstat is missing.
    """
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    try:
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except FileNotFoundError:
        pass
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class SignalLimiter:
    """Hold processes to ``budget`` CPUs each by SIGSTOP / SIGCONT duty cycling.

    Every ``TICK`` seconds each process earns ``budget * elapsed`` seconds of credit and
    pays for the CPU time it used; a process in debt is stopped until its credit is back
    above zero. Credit is capped at ``MAX_CREDIT``, so an idle process cannot save up a
    burst. :meth:`release` (also on the way out of :meth:`run`) continues every process.
    """

    method = "signals"

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._procs: dict[int, list[float]] = {}  # pid -> [last cpu, credit]
        self._stopped: set[int] = set()
        self.active = True

    def describe(self) -> str:
        """The method, for the output."""
        return (
            f"SIGSTOP/SIGCONT duty cycling from the bench process, every {TICK * 1000:g} ms, "
            f"from /proc/<pid>/task/*/schedstat (at most {MAX_CREDIT * 1000:g} ms of credit)"
        )

    def add(self, pid: int, name: str | None = None) -> None:
        """Start limiting ``pid`` (``name`` is not used)."""
        cpu = cpu_seconds(pid)
        if cpu is not None:
            self._procs[pid] = [cpu, 0.0]

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self._procs.pop(pid, None)

    def step(self, elapsed: float) -> None:
        """One look at every process, ``elapsed`` seconds after the last one."""
        if not self.active:
            return
        for pid, state in list(self._procs.items()):
            cpu = cpu_seconds(pid)
            if cpu is None:
                self._procs.pop(pid, None)
                self._stopped.discard(pid)
                continue
            state[1] = min(MAX_CREDIT, state[1] + self.budget * elapsed - (cpu - state[0]))
            state[0] = cpu
            if state[1] < 0 and pid not in self._stopped:
                self._stopped.add(pid)
                self._signal(pid, signal.SIGSTOP)
            elif state[1] >= 0 and pid in self._stopped:
                self._stopped.discard(pid)
                self._signal(pid, signal.SIGCONT)

    async def run(self) -> None:
        """Limit the processes until cancelled; then continue them all."""
        try:
            last = time.monotonic()
            while True:
                await trio.sleep(TICK)
                now = time.monotonic()
                self.step(now - last)
                last = now
        finally:
            self.release()

    def release(self) -> None:
        """Continue every stopped process and stop limiting, for good."""
        self.active = False
        for pid in list(self._stopped):
            self._signal(pid, signal.SIGCONT)
        self._stopped.clear()

    def close(self) -> None:
        """Same as :meth:`release` (the limiters share this interface)."""
        self.release()


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP stopped the benchmark (after its clean-up)."""


class CgroupError(Exception):
    """No writable cgroup hierarchy with a CPU controller."""


class CgroupLimiter:
    """Hold processes to ``budget`` CPUs each with a cgroup per process and a CFS quota
    (period 100 ms). Works on cgroup v2 (``cpu.max``) and v1 (``cpu.cfs_quota_us``).

    Raises:
        CgroupError: from the constructor, when no hierarchy can be used.
    """

    method = "cgroup"

    def __init__(self, budget: float, *, fs: Path = Path("/"), tag: str | None = None) -> None:
        self.budget = budget
        self.fs = fs
        self.quota_us = max(1000, round(budget * CFS_PERIOD_US))
        self.version, self.home = self._find()
        self.group = self.home / (tag or f"{CGROUP_PREFIX}{os.getpid()}")
        self._children: list[Path] = []
        self._remove_stale()
        try:
            self.group.mkdir()
        except OSError as exc:
            raise CgroupError(f"cannot create {self.group}: {exc}") from None
        try:
            if self.version == 2:
                (self.group / "cgroup.subtree_control").write_text("+cpu")
        except OSError as exc:
            self.group.rmdir()
            raise CgroupError(f"cannot enable the cpu controller in {self.group}: {exc}") from None

    def _remove_stale(self) -> None:
        """Remove the (empty) cgroups of earlier runs whose process is gone (killed)."""
        try:
            stale = [p for p in self.home.iterdir() if p.name.startswith(CGROUP_PREFIX)]
        except OSError:
            return
        for group in stale:
            pid = group.name[len(CGROUP_PREFIX) :]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            with contextlib.suppress(OSError):
                for child in group.iterdir():
                    if child.is_dir():
                        child.rmdir()
                group.rmdir()

    def _p(self, path: str) -> Path:
        return self.fs / path.lstrip("/")

    def _find(self) -> tuple[int, Path]:
        """The cgroup this process is in, on a hierarchy with the cpu controller."""
        try:
            own = self._p("/proc/self/cgroup").read_text().splitlines()
            mounts = self._p("/proc/self/mountinfo").read_text().splitlines()
        except OSError as exc:
            raise CgroupError(f"cannot read the cgroup tables: {exc}") from None
        v1: tuple[str, str] | None = None  # (mount point, root of the mount)
        v2: tuple[str, str] | None = None
        for line in mounts:
            pre, _, post = line.partition(" - ")
            parts, post_parts = pre.split(), post.split()
            if len(parts) < 5 or len(post_parts) < 3:
                continue
            root, point, fstype, opts = parts[3], parts[4], post_parts[0], post_parts[2]
            if fstype == "cgroup2" and v2 is None:
                v2 = (point, root)
            elif fstype == "cgroup" and "cpu" in opts.split(",") and v1 is None:
                v1 = (point, root)
        found: list[tuple[int, Path]] = []
        for line in own:
            hid, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hid == "0" and v2 is not None:
                home = self._home(v2, path)
                if self._v2_ready(home):
                    found.insert(0, (2, home))
            elif v1 is not None and "cpu" in controllers.split(","):
                found.append((1, self._home(v1, path)))
        if not found:
            raise CgroupError("no cgroup hierarchy with the cpu controller is available")
        return found[0]

    def _home(self, mount: tuple[str, str], path: str) -> Path:
        point, root = mount
        rel = path
        if root != "/" and (path == root or path.startswith(root + "/")):
            rel = path[len(root) :]
        return self._p(point) / rel.lstrip("/")

    @staticmethod
    def _v2_ready(home: Path) -> bool:
        """cgroup v2: our cgroup hands the cpu controller down to its children (we do not
        change that setting: it belongs to whoever manages the cgroup)."""
        try:
            return "cpu" in (home / "cgroup.subtree_control").read_text().split()
        except OSError:
            return False

    def describe(self) -> str:
        """The method, for the output."""
        if self.version == 2:
            knob = f"cpu.max = {self.quota_us} {CFS_PERIOD_US}"
        else:
            knob = f"cpu.cfs_quota_us = {self.quota_us}, cpu.cfs_period_us = {CFS_PERIOD_US}"
        return f"cgroup v{self.version} per node under {self.group} ({knob})"

    def add(self, pid: int, name: str | None = None) -> None:
        """Move ``pid`` into a new cgroup of its own with the quota.

        Raises:
            CgroupError: the cgroup cannot be made or the process not moved.
        """
        child = self.group / (name or str(pid))
        try:
            child.mkdir()
            self._children.append(child)
            if self.version == 2:
                (child / "cpu.max").write_text(f"{self.quota_us} {CFS_PERIOD_US}")
            else:
                (child / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (child / "cpu.cfs_quota_us").write_text(str(self.quota_us))
            (child / "cgroup.procs").write_text(str(pid))
        except OSError as exc:
            raise CgroupError(f"cannot limit pid {pid} in {child}: {exc}") from None

    def close(self) -> None:
        """Move any process left back home, and remove the cgroups."""
        for child in self._children:
            with contextlib.suppress(OSError):
                for pid in (child / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.home / "cgroup.procs").write_text(pid)
            for _ in range(100):
                try:
                    child.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # an exiting process may still be listed
        self._children.clear()
        with contextlib.suppress(OSError):
            self.group.rmdir()


Limiter = SignalLimiter | CgroupLimiter


def make_limiter(method: str, budget: float) -> Limiter | None:
    """The limiter for ``--limit`` (None for ``none``); ``auto`` prefers cgroups.

    Raises:
        CgroupError: ``cgroup`` was asked for and cannot be used.
    """
    if method == "none" or budget <= 0:
        return None
    if method in ("auto", "cgroup"):
        try:
            return CgroupLimiter(budget)
        except CgroupError:
            if method == "cgroup":
                raise
    return SignalLimiter(budget)


# =========================================================================== the benchmark
def load_example(name: str) -> ModuleType:
    """Import ``examples/tree_state_source/<name>.py`` under a private module name."""
    key = f"_tree_state_source_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Row:
    """One topology's figures."""

    topology: str
    nodes: list[str]
    result: LoadResult
    #: CPU used by each loaded node during the window, in CPUs (1.0 = one core).
    node_cpu: dict[str, float]


def say(line: str) -> None:
    """Progress, to stderr (the table goes to stdout)."""
    print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _cleanup(limiter: Limiter | None) -> Iterator[None]:
    try:
        yield
    finally:
        if limiter is not None:
            limiter.close()


async def measure(topology: str, launcher: Any, ns: argparse.Namespace) -> Row:
    """Run the load generator (a second process) against one topology."""
    names = TOPOLOGIES[topology]
    nodes = [launcher.nodes[n] for n in names]
    targets = ",".join(f"{ns.host}:{n.http_port}" for n in nodes)
    cmd = [
        sys.executable,
        "-u",
        __file__,
        "--loadgen",
        "--targets",
        targets,
        "--connections",
        str(ns.connections),
        "--warmup",
        str(ns.warmup),
        "--duration",
        str(ns.duration),
        "--timeout",
        str(ns.timeout),
    ]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cpu_start: dict[str, float] = {}
    cpu_end: dict[str, float] = {}
    t_start = t_end = 0.0
    out = b""
    err = b""
    try:
        assert proc.stdout is not None and proc.stderr is not None

        async def read_err() -> None:
            nonlocal err
            assert proc.stderr is not None
            while chunk := await proc.stderr.receive_some(65536):
                err += chunk

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_err)
            buf = b""
            while chunk := await proc.stdout.receive_some(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line == b"WINDOW start":
                        t_start = time.monotonic()
                        cpu_start = _cpu_of(nodes)
                    elif line == b"WINDOW end":
                        t_end = time.monotonic()
                        cpu_end = _cpu_of(nodes)
                    else:
                        out += line + b"\n"
            await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    await stream.aclose()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(
            f"the load generator failed (status {proc.returncode}):\n{err.decode(errors='replace')}"
        )
    data = json.loads(out.strip().splitlines()[-1])
    result = LoadResult(**data)
    span = t_end - t_start
    node_cpu = {
        n: (cpu_end[n] - cpu_start[n]) / span
        if span > 0 and n in cpu_end and n in cpu_start
        else math.nan
        for n in names
    }
    return Row(topology, list(names), result, node_cpu)


async def settle(nodes: Sequence[Any], budget: float) -> float:
    """Wait until no node is still busy with the previous load (each used less than a
    quarter of its budget, or 0.02 CPU, over 0.25 s), at least ``SETTLE_MIN`` and at most
    ``SETTLE_MAX`` seconds; returns the seconds waited."""
    start = time.monotonic()
    await trio.sleep(SETTLE_MIN)
    idle = max(0.02, budget / 4) if budget > 0 else 0.02
    while time.monotonic() - start < SETTLE_MAX:
        before, t0 = _cpu_of(nodes), time.monotonic()
        await trio.sleep(0.25)
        after, span = _cpu_of(nodes), time.monotonic() - t0
        if all((after[n] - before[n]) / span < idle for n in after if n in before):
            break
    return time.monotonic() - start


def _cpu_of(nodes: Sequence[Any]) -> dict[str, float]:
    out = {}
    for node in nodes:
        if node.proc is not None and (cpu := cpu_seconds(node.proc.pid)) is not None:
            out[node.name] = cpu
    return out


def _us(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 10_000:
        return f"{value / 1000:,.0f} ms".replace(",", " ")
    if value >= 1000:
        return f"{value / 1000:.1f} ms"
    return f"{value:.0f} µs"


def _num(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}".replace(",", " ")


def table(rows: Sequence[Row]) -> list[str]:
    """The result table (arpc.md F5's columns, plus p90 and the nodes' CPU)."""
    lines = [
        "| topology | req/s | overall req/s | errors | timeouts | p50 | p90 | p99 | node CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r = row.result
        cpus = [c for c in row.node_cpu.values() if not math.isnan(c)]
        cpu = f"{max(cpus):.2f} max" if cpus else "-"
        p = r.percentiles_us
        lines.append(
            f"| {row.topology} | {_num(r.rps)} | {_num(r.overall_rps)} | {r.errors} | "
            f"{r.timeouts} | {_us(p['p50'])} | {_us(p['p90'])} | {_us(p['p99'])} | {cpu} |"
        )
    return lines


def go_table() -> list[str]:
    """asyncmachine-go's figures, for comparison."""
    lines = [
        "| topology | req/s | overall req/s | timeouts | p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name, (rps, overall, timeouts, p50, p99) in GO_FIGURES.items():
        lines.append(
            f"| {name} | {_num(rps)} | {_num(overall)} | {timeouts:,} | {p50} µs | {p99} µs |".replace(
                ",", " "
            )
        )
    return lines


def check(rows: Sequence[Row]) -> tuple[bool, str] | None:
    """arpc.md F5's check; None when root only or 6 L2 was not run."""
    by = {row.topology: row.result for row in rows}
    if "root only" not in by or "6 L2" not in by:
        return None
    root, six = by["root only"], by["6 L2"]
    factor = six.overall_rps / root.overall_rps if root.overall_rps > 0 else math.inf
    ok = factor >= CHECK_FACTOR and six.errors == 0 and six.timeouts == 0
    text = (
        f"check: 6 L2 {_num(six.overall_rps)} overall req/s = {factor:.1f}x root only "
        f"(needs >= {CHECK_FACTOR:g}x), errors {six.errors}, timeouts {six.timeouts}: "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return ok, text


async def bench(ns: argparse.Namespace) -> tuple[list[Row], str]:
    """Start the tree, limit it, load each topology; returns the rows and the limit's
    description."""
    run = load_example("run")
    specs = run.tree(replicas=2, leaves=3, rpc_port=ns.rpc_port, http_port=ns.http_port)
    tail: deque[str] = deque(maxlen=40)
    launcher = run.Launcher(
        specs,
        host=ns.host,
        node_args=["--time-every", "0"],
        root_args=["--mutation-every", str(ns.mutation_every)],
        restart_delay=None,
        out=tail.append,
    )
    limiter = make_limiter(ns.limit, ns.cpu)
    rows: list[Row] = []
    limit = "none (nodes unlimited)"
    interrupted = False
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    with _cleanup(limiter), trio.open_signal_receiver(*sigs) as signals:
        try:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    nonlocal interrupted
                    async for _ in signals:
                        interrupted = True  # stop: every node is continued and ended
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(on_signal)
                say(f"starting {len(specs)} node processes ...")
                await nursery.start(launcher.run)
                if limiter is not None:
                    for node in launcher.nodes.values():
                        limiter.add(node.proc.pid, node.name)
                    if isinstance(limiter, SignalLimiter):
                        nursery.start_soon(limiter.run)
                    limit = f"{ns.cpu:g} CPU per node: {limiter.describe()}"
                say(f"CPU budget: {limit}")
                for topology in ns.topologies:
                    waited = await settle(list(launcher.nodes.values()), ns.cpu)
                    say(f"nodes idle after {waited:.1f} s")
                    say(f"loading {topology}: {', '.join(TOPOLOGIES[topology])} ...")
                    rows.append(await measure(topology, launcher, ns))
                    r = rows[-1].result
                    say(
                        f"  {r.overall_rps:.0f} req/s, {r.errors} errors, {r.timeouts} timeouts, "
                        f"load generator {r.loadgen_cpu:.2f} CPU"
                    )
                if isinstance(limiter, SignalLimiter):
                    limiter.release()  # for good: stopped nodes could not exit
                await launcher.stop()
                nursery.cancel_scope.cancel()
        except BaseException:
            if not interrupted:
                say("node output (last lines):\n  " + "\n  ".join(tail))
            raise
    if interrupted:
        raise Interrupted("interrupted")
    return rows, limit


class Failed(Exception):
    """The benchmark could not run; ``code`` is the exit status (2: bad setup)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


def run_bench(ns: argparse.Namespace) -> tuple[list[Row], str]:
    """:func:`bench` in ``trio.run``, with its failures as :class:`Failed`.

    Raises:
        Interrupted: a signal stopped it.
        Failed: a node or the load generator failed, or the cgroup limit is unusable.
    """
    try:
        return trio.run(bench, ns)
    except Interrupted:
        raise
    except CgroupError as exc:
        raise Failed(f"--limit cgroup: {exc}", 2) from None
    except (RuntimeError, OSError) as exc:
        raise Failed(str(exc)) from None
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        if any(isinstance(e, Interrupted) for e in errors):
            raise Interrupted("interrupted") from None
        cg = [e for e in errors if isinstance(e, CgroupError)]
        if cg:
            raise Failed(f"--limit cgroup: {cg[0]}", 2) from None
        bad = [e for e in errors if not isinstance(e, Exception)]
        if bad:
            raise
        raise Failed("; ".join(f"{type(e).__name__}: {e}" for e in errors)) from None


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; bad values exit with status 2 and a message."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="0.2 s warm-up, 0.5 s per topology, 64 connections"
    )
    p.add_argument("--duration", type=float, help="measured seconds per topology (10)")
    p.add_argument("--warmup", type=float, help="warm-up seconds before measuring (1)")
    p.add_argument("--connections", type=int, help="concurrent connections (512)")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds before a request times out")
    p.add_argument("--cpu", type=float, default=0.1, help="CPU budget of each node (0: none)")
    p.add_argument(
        "--limit",
        choices=("auto", "cgroup", "signals", "none"),
        default="auto",
        help="how the budget is enforced",
    )
    p.add_argument(
        "--topologies",
        default="root,2l1,4l2,6l2",
        help="comma-separated subset of root, 2l1, 4l2, 6l2",
    )
    p.add_argument("--mutation-every", type=float, default=1.0, help="root's mutation period")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rpc-port", type=int, default=0, help="first aRPC port (0: any)")
    p.add_argument("--http-port", type=int, default=0, help="first HTTP port (0: any)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--targets", help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    quick = ns.quick
    defaults = {
        "duration": 0.5 if quick else 10.0,
        "warmup": 0.2 if quick else 1.0,
        "connections": 64 if quick else 512,
    }
    for key, value in defaults.items():
        if getattr(ns, key) is None:
            setattr(ns, key, value)
    problems = []
    if not 0.05 <= ns.duration <= 3600:
        problems.append("--duration must be from 0.05 to 3600")
    if not 0 <= ns.warmup <= 3600:
        problems.append("--warmup must be from 0 to 3600")
    if not 1 <= ns.connections <= 10000:
        problems.append("--connections must be from 1 to 10000")
    if not 0.001 <= ns.timeout <= 600:
        problems.append("--timeout must be from 0.001 to 600")
    if not 0 <= ns.cpu <= 64:
        problems.append("--cpu must be from 0 to 64")
    if not 0 <= ns.mutation_every <= 3600:
        problems.append("--mutation-every must be from 0 to 3600")
    for flag in ("rpc_port", "http_port"):
        if not 0 <= getattr(ns, flag) <= 65000:
            problems.append(f"--{flag.replace('_', '-')} must be from 0 to 65000")
    if ns.loadgen:
        if not ns.targets:
            problems.append("--loadgen needs --targets host:port,...")
    else:
        keys = [k.strip().lower() for k in ns.topologies.split(",") if k.strip()]
        bad = [k for k in keys if k not in TOPOLOGY_KEYS]
        if bad or not keys:
            problems.append(f"--topologies: expected a subset of {', '.join(TOPOLOGY_KEYS)}")
        ns.topologies = [TOPOLOGY_KEYS[k] for k in dict.fromkeys(keys) if k in TOPOLOGY_KEYS]
    if problems:
        p.error("; ".join(problems))
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark: print the table, the comparison with Go and the check."""
    ns = parse(argv)
    if ns.loadgen:
        return loadgen_main(ns)
    try:
        rows, limit = run_bench(ns)
    except Interrupted:
        print("bench-tree: interrupted; every node was stopped", file=sys.stderr)
        return 130
    except Failed as exc:
        print(f"bench-tree: {exc}", file=sys.stderr)
        return exc.code
    n_nodes = 9
    print(
        f"arpc.md F5 on one host ({os.cpu_count()} CPUs, Python "
        f"{sys.version.split()[0]}): {n_nodes} node processes, each HTTP GET / served by h11"
    )
    when = "" if limit.startswith("none") else "; applied once every node was ready"
    print(f"CPU budget: {limit}{when}")
    print(
        f"load: a second process, {ns.connections} keep-alive connections, least in-flight "
        f"target, {ns.warmup:g} s warm-up, {ns.duration:g} s measured, {ns.timeout:g} s timeout"
    )
    print()
    for line in table(rows):
        print(line)
    print()
    print("asyncmachine-go (arpc.md F5: 0.1 CPU containers, Caddy, go-wrk 512 connections, 10 s):")
    print()
    for line in go_table():
        print(line)
    print()
    verdict = check(rows)
    if verdict is not None:
        print(verdict[1])
    if ns.json:
        data = {
            "limit": limit,
            "settings": {k: v for k, v in vars(ns).items() if k not in ("loadgen", "targets")},
            "rows": [
                {
                    **asdict(row.result),
                    "topology": row.topology,
                    "nodes": row.nodes,
                    "node_cpu": row.node_cpu,
                    "rps": row.result.rps,
                    "overall_rps": row.result.overall_rps,
                }
                for row in rows
            ],
            "check": None if verdict is None else {"pass": verdict[0], "text": verdict[1]},
        }
        Path(ns.json).write_text(json.dumps(data, indent=1, default=str))
    return 0 if verdict is None or verdict[0] else 1


if __name__ == "__main__":
    sys.exit(main())
