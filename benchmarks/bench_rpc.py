"""aRPC cases: remote round trips, clock pushes, and arpc.md F3 (benchmark_grpc).

Server and clients run in one process and one Trio run, over loopback sockets, so every
figure includes both ends' CPU time. ``trio_am`` is imported lazily, like in
``bench_core``, so the other cases still run without it.
"""

from __future__ import annotations

import random
import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

try:
    from . import timing
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import timing  # type: ignore[no-redef]


def _am() -> Any:
    import trio_am

    return trio_am


def _rpc() -> Any:
    from trio_am import rpc

    return rpc


def _loopback(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:0"


async def _ready(client: Any) -> None:
    with trio.fail_after(10):
        await client.rpc.when1("Ready")


# --- case 6: remote mutation round trip ------------------------------------------------------


@dataclass(frozen=True)
class RoundTrip:
    """Latency of one awaited remote mutation, in microseconds."""

    scheme: str
    p50_us: float
    p99_us: float
    mean_us: float
    min_us: float
    max_us: float
    rounds: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def roundtrip_samples(n: int, scheme: str, warmup: int = 100) -> list[float]:
    """Seconds taken by each of ``n`` awaited ``add1_remote("Foo")`` /
    ``remove1_remote("Foo")`` calls (alternating), after ``warmup`` untimed ones."""
    am, rpc = _am(), _rpc()
    schema = am.schema_merge(am.BASIC_SCHEMA, rpc.STATE_SOURCE, {"Foo": {}})
    async with (
        am.open_machine(schema, id="rt") as src,
        rpc.serve(src, _loopback(scheme)) as server,
        rpc.connect(server.urls[0], id="bench") as client,
    ):
        await _ready(client)
        return await timed_roundtrips(client.mach, src, n, warmup)


async def timed_roundtrips(mach: Any, src: Any, n: int, warmup: int) -> list[float]:
    """Seconds taken by each of ``n`` awaited ``add1_remote("Foo")`` /
    ``remove1_remote("Foo")`` calls on the mirror ``mach`` (alternating), after
    ``warmup`` untimed ones; checks every result and, at the end, that the mirror
    equals the source ``src``."""
    executed = _am().Result.EXECUTED
    add, remove = mach.add1_remote, mach.remove1_remote
    perf = time.perf_counter
    samples = []
    for i in range(warmup + n):
        t0 = perf()
        res = await (add("Foo") if i % 2 == 0 else remove("Foo"))
        dt = perf() - t0
        if res != executed:
            raise RuntimeError(f"round trip {i}: {res!r}")
        if i >= warmup:
            samples.append(dt)
    if mach.time() != src.time():
        raise RuntimeError("the mirror differs from the source after the loop")
    return samples


def roundtrip(n: int, scheme: str) -> RoundTrip:
    samples = trio.run(roundtrip_samples, n, scheme)
    lat = timing.percentiles(samples)
    return RoundTrip(
        scheme=scheme,
        p50_us=lat.p50_us,
        p99_us=lat.p99_us,
        mean_us=statistics.fmean(samples) * 1e6,
        min_us=lat.min_us,
        max_us=lat.max_us,
        rounds=lat.rounds,
    )


# --- case 7: clock pushes to many clients ----------------------------------------------------


@dataclass(frozen=True)
class PushRate:
    """Clock pushes from one toggling source to ``clients`` mirrors (TCP loopback)."""

    clients: int
    push_interval: float
    duration_s: float
    toggles_per_s: float
    deltas_per_s: float  # applied clock changes, summed over clients
    frames_per_s: float  # frames received, summed over clients
    changes_per_s: float  # state changes seen (tick increments of the toggled state)
    coverage: float  # changes seen / (toggles x clients), within the window
    caught_up: bool  # every mirror reached the source's clock after the window

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def push_run(clients: int, push_interval: float, duration: float, batch: int = 1) -> PushRate:
    """The source toggles ``Foo`` for ``duration`` seconds, with a Trio checkpoint after
    every ``batch`` toggles; each client counts the clock changes applied to its mirror
    (``on_change``), the frames it received and how far ``Foo``'s tick moved."""
    am, rpc = _am(), _rpc()
    schema = am.schema_merge(am.BASIC_SCHEMA, rpc.STATE_SOURCE, {"Foo": {}})
    async with (
        am.open_machine(schema, id="pushsrc") as src,
        rpc.serve(src, _loopback("tcp"), push_interval=push_interval) as server,
        AsyncExitStack() as stack,
    ):
        conns = [
            await stack.enter_async_context(rpc.connect(server.urls[0], id=f"c{i}"))
            for i in range(clients)
        ]
        for c in conns:
            await _ready(c)
        deltas = [0] * clients
        for k, c in enumerate(conns):

            def count(m: Any, before: Any, after: Any, k: int = k) -> None:
                deltas[k] += 1

            c.mach.on_change(count)
        frames0 = [c.frames_in for c in conns]
        ticks0 = [c.mach.tick("Foo") for c in conns]
        toggle1 = src.toggle1
        checkpoint = trio.lowlevel.checkpoint
        perf = time.perf_counter
        toggles = 0
        t0 = perf()
        end = t0 + duration
        while perf() < end:
            for _ in range(batch):
                toggle1("Foo")
            toggles += batch
            await checkpoint()
        elapsed = perf() - t0
        got_deltas = sum(deltas)
        got_frames = sum(c.frames_in - f for c, f in zip(conns, frames0, strict=True))
        changes = sum(c.mach.tick("Foo") - t for c, t in zip(conns, ticks0, strict=True))
        target = src.tick("Foo")
        caught_up = True
        with trio.move_on_after(5) as cs:
            for c in conns:
                await c.mach.when_time1("Foo", target)
        if cs.cancelled_caught:
            caught_up = False
    return PushRate(
        clients=clients,
        push_interval=push_interval,
        duration_s=elapsed,
        toggles_per_s=toggles / elapsed,
        deltas_per_s=got_deltas / elapsed,
        frames_per_s=got_frames / elapsed,
        changes_per_s=changes / elapsed,
        coverage=changes / max(1, toggles * clients),
        caught_up=caught_up,
    )


def push_rate(clients: int, push_interval: float, duration: float, batch: int = 1) -> PushRate:
    return trio.run(push_run, clients, push_interval, duration, batch)


# --- case 8: arpc.md F3, benchmark_grpc (subscribe, get, process) ---------------------------

VALUES = ["Value1", "Value2", "Value3"]


def worker_schema() -> dict[str, Any]:
    """The ``worker``: basic and source states, ``CallOp`` (multi, requires ``Start``),
    ``Event`` (multi) and ``Value1..3`` (exclusive)."""
    am, rpc = _am(), _rpc()
    return am.schema_merge(
        am.BASIC_SCHEMA,
        rpc.STATE_SOURCE,
        {
            "CallOp": {"multi": True, "require": ["Start"]},
            "Event": {"multi": True},
            **{v: {"remove": VALUES} for v in VALUES},
        },
    )


class Worker:
    """The worker of Go's benchmark, bound to the ``worker`` machine as its handlers.

    ``CallOp(op)`` counts an error when ``op`` differs from the current value (and a
    success either way, as in Go), draws a new value and signals ``Event``; ``Event``'s
    handler activates the matching ``ValueN``.
    """

    def __init__(self, mach: Any, seed: int | None = None) -> None:
        self.mach = mach
        self.value = 0
        self.errors = 0
        self.successes = 0
        self.rng = random.Random(seed)

    def call_op(self, op: int) -> None:
        if self.value:
            if op != self.value:
                self.errors += 1
            self.successes += 1
        self.value = self.rng.randint(1, 3)
        self.mach.add1("Event")

    # handlers
    def Start_state(self, e: Any) -> None:
        self.call_op(self.rng.randint(1, 3))

    def CallOp_enter(self, e: Any) -> bool:
        return isinstance(e.args.get("op"), int)

    def CallOp_state(self, e: Any) -> None:
        self.mach.remove1("CallOp")
        self.call_op(e.args["op"])

    def Event_state(self, e: Any) -> None:
        self.mach.remove1("Event")
        self.mach.add1(VALUES[self.value - 1])


@dataclass
class Traffic:
    bytes_up: int = 0
    bytes_down: int = 0
    frames_up: dict[str, int] = field(default_factory=dict)
    frames_down: dict[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.bytes_up + self.bytes_down

    @property
    def frames(self) -> int:
        return sum(self.frames_up.values()) + sum(self.frames_down.values())


def _traffic(proxy: Any) -> Traffic:
    from trio_am.rpc.protocol import Kind

    def names(counter: Any) -> dict[str, int]:
        out = {}
        for kind, n in sorted(counter.items()):
            try:
                name = Kind(kind).name
            except ValueError:
                name = str(kind)
            out[name] = n
        return out

    return Traffic(
        proxy.bytes_up, proxy.bytes_down, names(proxy.frames_up), names(proxy.frames_down)
    )


@dataclass
class F3Result:
    """One run of the F3 loop."""

    n: int
    scheme: str
    proxied: bool
    push_interval: float | None
    errors: int
    successes: int
    elapsed_s: float
    us_per_iter: float
    p50_us: float
    p99_us: float
    handshake: Traffic | None = None
    setup: Traffic | None = None
    loop: Traffic | None = None

    @property
    def bytes_per_iter(self) -> float | None:
        return None if self.loop is None else self.loop.bytes / self.n

    @property
    def frames_per_iter(self) -> float | None:
        return None if self.loop is None else self.loop.frames / self.n

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes_per_iter"] = self.bytes_per_iter
        d["frames_per_iter"] = self.frames_per_iter
        return d


async def f3_client_loop(mach: Any, n: int, ticks: int) -> tuple[list[float], float]:
    """The F3 client loop on ``mach`` (a NetMachine), ``ticks`` being ``Event``'s tick
    the first iteration waits for. Returns the seconds of each iteration and in all."""
    executed = _am().Result.EXECUTED
    add1_remote, when_time1, is1 = mach.add1_remote, mach.when_time1, mach.is1
    perf = time.perf_counter
    samples = []
    t_start = perf()
    for i in range(n):
        t0 = perf()
        await when_time1("Event", ticks)  # 1. the subscription
        ticks += 2
        value = next((k for k, v in enumerate(VALUES, 1) if is1(v)), 0)  # 2. the getter
        if not value:
            raise RuntimeError(f"iteration {i}: no ValueN active on the mirror")
        res = await add1_remote("CallOp", {"op": value})  # 3. the processing
        if res != executed:
            raise RuntimeError(f"iteration {i}: CallOp returned {res!r}")
        samples.append(perf() - t0)
    return samples, perf() - t_start


async def f3_run(
    n: int,
    *,
    scheme: str = "tcp",
    proxied: bool = True,
    push_interval: float | None = 0.005,
    seed: int | None = None,
) -> F3Result:
    """Serve the ``worker`` and run the client loop ``n`` times:

    1. wait until ``Event``'s tick has grown by 2 (the subscription);
    2. read the value from the mirror (the getter);
    3. ``await add1_remote("CallOp", {"op": n})``, which must return EXECUTED.

    With ``proxied`` the bytes go through a :class:`~trio_am.rpc.testing.FaultyProxy`,
    which counts them: the handshake (HELLO, WELCOME) and the setup (adding ``Start``
    and its first ``Event``) apart from the loop.
    """
    am, rpc = _am(), _rpc()
    from trio_am.rpc.testing import FaultyProxy

    executed = am.Result.EXECUTED
    async with (
        am.open_machine(worker_schema(), id="worker") as src,
        rpc.serve(src, _loopback(scheme), push_interval=push_interval) as server,
        AsyncExitStack() as stack,
    ):
        worker = Worker(src, seed)
        src.bind_handlers(worker)
        proxy = None
        url = server.urls[0]
        if proxied:
            proxy = await stack.enter_async_context(FaultyProxy(url))
            url = proxy.url
        client = await stack.enter_async_context(rpc.connect(url, id="worker-client"))
        await _ready(client)
        mach = client.mach
        handshake = setup = loop = None
        if proxy is not None:
            with trio.fail_after(5):  # the proxy counts a frame before passing it on
                await proxy.wait_for(lambda: proxy.frames_down[2] >= 1)
            handshake = _traffic(proxy)
            proxy.reset_counters()
        # setup: Start draws the first value and signals Event
        ticks = mach.tick("Event")
        if await mach.add1_remote("Start") != executed:
            raise RuntimeError("Start was not executed")
        ticks += 2
        with trio.fail_after(5):
            await mach.when_time1("Event", ticks)
        if proxy is not None:
            setup = _traffic(proxy)
            proxy.reset_counters()
        # one deadline for the whole loop: a scope per iteration would be timed too
        with trio.fail_after(30 + n * 0.01):
            samples, elapsed = await f3_client_loop(mach, n, ticks)
        if proxy is not None:
            loop = _traffic(proxy)
    lat = timing.percentiles(samples)
    return F3Result(
        n=n,
        scheme=scheme,
        proxied=proxied,
        push_interval=push_interval,
        errors=worker.errors,
        successes=worker.successes,
        elapsed_s=elapsed,
        us_per_iter=elapsed / n * 1e6,
        p50_us=lat.p50_us,
        p99_us=lat.p99_us,
        handshake=handshake,
        setup=setup,
        loop=loop,
    )


def f3(n: int, **kw: Any) -> F3Result:
    async def main() -> F3Result:
        return await f3_run(n, **kw)

    return trio.run(main)


@dataclass(frozen=True)
class F3Local:
    """The F3 loop on the worker machine itself, without aRPC (Go's "local" row)."""

    n: int
    errors: int
    successes: int
    us_per_iter: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def f3_local(n: int, seed: int | None = None) -> F3Local:
    am = _am()
    mach = am.Machine(worker_schema(), id="worker")
    worker = Worker(mach, seed)
    mach.bind_handlers(worker)
    executed = am.Result.EXECUTED
    ticks = mach.tick("Event")
    mach.add1("Start")
    ticks += 2
    tick, is1, add1 = mach.tick, mach.is1, mach.add1
    t0 = time.perf_counter()
    for i in range(n):
        if tick("Event") < ticks:
            raise RuntimeError(f"iteration {i}: Event did not happen")
        ticks += 2
        value = next((k for k, v in enumerate(VALUES, 1) if is1(v)), 0)
        if add1("CallOp", {"op": value}) != executed:
            raise RuntimeError(f"iteration {i}: CallOp was not executed")
    elapsed = time.perf_counter() - t0
    return F3Local(n, worker.errors, worker.successes, elapsed / n * 1e6)
