"""trio_am cases. ``trio_am`` is imported lazily so that the peers still run without it."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import trio
import trio.testing

try:
    from . import timing
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import timing  # type: ignore[no-redef]


def am() -> Any:
    """The ``trio_am`` module (raises ImportError/AttributeError while the engine is missing)."""
    import trio_am

    for name in ("Machine", "open_machine"):
        getattr(trio_am, name)
    return trio_am


# --- case 1: toggle one state with one final handler -----------------------------------------


class ToggleHandlers:
    """One final handler, called whenever A activates."""

    def __init__(self) -> None:
        self.n = 0

    def A_state(self, e: Any) -> None:
        self.n += 1


def toggle_machine() -> tuple[Any, ToggleHandlers]:
    handlers = ToggleHandlers()
    return am().Machine({"A": {}}, handlers=handlers), handlers


def toggle_run_n() -> timing.RunN:
    mach, _ = toggle_machine()
    toggle1 = mach.toggle1

    def loop(n: int) -> None:
        for _ in range(n):
            toggle1("A")

    return lambda n: timing.timed(lambda: loop(n))


def toggle_rate(*, target_s: float, repeats: int) -> timing.Rate:
    return timing.measure_rate(toggle_run_n(), target_s=target_s, repeats=repeats)


# --- case 2: a 20-state schema and a cycle of mutations --------------------------------------

CONN_GROUP = ["Disconnected", "Connecting", "Connected", "Disconnecting"]

#: A network client: start/config chain, a self-excluding connection group (each member
#: removes the whole group; self-removal is ignored), auto states that follow readiness,
#: after-ordering of handlers, multi request/response states and an error state.
SCHEMA_20: dict[str, dict[str, Any]] = {
    "Start": {"add": ["ConfigLoading"]},
    "ConfigLoading": {"require": ["Start"], "remove": ["ConfigLoaded"]},
    "ConfigLoaded": {"require": ["Start"], "remove": ["ConfigLoading"]},
    "Disconnected": {"remove": CONN_GROUP},
    "Connecting": {"require": ["Start"], "remove": CONN_GROUP},
    "Connected": {"require": ["Start"], "remove": CONN_GROUP},
    "Disconnecting": {"remove": CONN_GROUP},
    "Handshaking": {"auto": True, "require": ["Connected"], "after": ["Connected"]},
    "Authenticated": {
        "require": ["Connected"],
        "remove": ["Handshaking"],
        "after": ["Handshaking"],
    },
    "Ready": {
        "auto": True,
        "require": ["ConfigLoaded", "Authenticated"],
        "after": ["ConfigLoaded", "Authenticated"],
    },
    "Syncing": {"auto": True, "require": ["Ready"], "after": ["Ready"]},
    "Synced": {"require": ["Ready"], "remove": ["Syncing"]},
    "Idle": {"auto": True, "require": ["Ready"], "remove": ["Busy"]},
    "Busy": {"require": ["Ready"], "remove": ["Idle"]},
    "Request": {"multi": True, "require": ["Ready"]},
    "Response": {"multi": True, "require": ["Request"], "after": ["Request"]},
    "Healthcheck": {"multi": True},
    "ErrNetwork": {"multi": True, "require": ["Exception"]},
    "Retrying": {"require": ["ErrNetwork"], "add": ["Connecting"]},
    "Shutdown": {"remove": ["Start", "Ready"]},
}
STATES_20 = list(SCHEMA_20)

#: One cycle, (method, states); it starts and ends with nothing active.
CYCLE_20: list[tuple[str, list[str]]] = [
    ("add", ["Start"]),  # implies ConfigLoading
    ("add", ["ConfigLoaded"]),  # removes ConfigLoading
    ("add", ["Connecting"]),
    ("add", ["Connected"]),  # group: Connecting out; auto Handshaking
    ("add", ["Authenticated"]),  # Handshaking out; auto Ready, Syncing, Idle
    ("add", ["Request"]),
    ("add", ["Busy"]),  # Idle out
    ("add", ["Request", "Response"]),  # multi re-activation
    ("remove", ["Busy"]),  # auto Idle back
    ("add", ["Synced"]),  # Syncing out
    ("add", ["Healthcheck"]),
    ("add", ["Exception", "ErrNetwork", "Retrying"]),  # implied Connecting blocked by Connected
    ("remove", ["Exception"]),  # ErrNetwork, Retrying out (require)
    ("set", ["Start", "ConfigLoaded", "Connected", "Authenticated"]),  # auto round again
    ("toggle", ["Busy"]),
    ("remove", ["Connected"]),  # Authenticated, Ready, ... out
    ("add", ["Disconnecting"]),
    ("add", ["Disconnected"]),
    ("add", ["Shutdown"]),  # removes Start: everything requiring it goes
    ("set", []),  # back to nothing active
]


class RelationsHandlers:
    """A few handlers of each kind, so the negotiation and final phases really run."""

    def __init__(self) -> None:
        self.n = 0

    def Connected_enter(self, e: Any) -> bool:
        return True

    def Ready_exit(self, e: Any) -> None:
        return None

    def Ready_state(self, e: Any) -> None:
        self.n += 1

    def Request_state(self, e: Any) -> None:
        self.n += 1


def relations_machine(handlers: bool = True) -> Any:
    return am().Machine(SCHEMA_20, handlers=RelationsHandlers() if handlers else None)


def bound_cycle(mach: Any) -> list[tuple[Any, list[str]]]:
    return [(getattr(mach, method), states) for method, states in CYCLE_20]


def trace_cycle(mach: Any) -> list[tuple[str, list[str], str, list[str]]]:
    """Run one cycle and return (method, states, result, active states) per step (a check)."""
    out = []
    for (method, states), (fn, _) in zip(CYCLE_20, bound_cycle(mach), strict=True):
        res = fn(states)
        out.append((method, states, str(res), mach.active_states()))
    return out


def relations_run_n(handlers: bool = True) -> timing.RunN:
    """``run_n(n)`` performs about ``n`` mutations (whole cycles)."""
    mach = relations_machine(handlers)
    ops = bound_cycle(mach)

    def loop(cycles: int) -> None:
        for _ in range(cycles):
            for fn, states in ops:
                fn(states)

    def run_n(n: int) -> float:
        cycles = max(1, n // len(ops))
        return timing.timed(lambda: loop(cycles)) * n / (cycles * len(ops))

    return run_n


def relations_rate(*, target_s: float, repeats: int, handlers: bool = True) -> timing.Rate:
    return timing.measure_rate(relations_run_n(handlers), target_s=target_s, repeats=repeats)


# --- case 3: memory per machine --------------------------------------------------------------

SCHEMA_10: dict[str, dict[str, Any]] = {
    "Start": {},
    "Ready": {"require": ["Start"]},
    "Idle": {"auto": True, "require": ["Ready"], "remove": ["Busy"]},
    "Busy": {"require": ["Ready"], "remove": ["Idle"]},
    "Off": {"remove": ["Off", "Starting", "On"]},
    "Starting": {"remove": ["Off", "Starting", "On"]},
    "On": {"remove": ["Off", "Starting", "On"], "add": ["Start"]},
    "Request": {"multi": True, "require": ["Ready"]},
    "Done": {"after": ["Request"]},
    "Stop": {"remove": ["Start"]},
}


def ten_states_factory() -> Any:
    mod = am()
    return lambda: mod.Machine(SCHEMA_10)


def use_ten_states(mach: Any) -> None:
    mach.add1("Start")


def memory(count: int) -> timing.Memory:
    """Bytes per 10-state machine, fresh and after one ``add1``."""
    return timing.measure_memory(ten_states_factory(), count, use_ten_states)


# --- case 4: fork + cancel of state-bound work -----------------------------------------------


class ForkCounter:
    """Counts forked sleepers that started, and those that then ended (cancelled)."""

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0

    async def sleeper(self) -> None:
        self.started += 1
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled += 1
            raise


async def _wait_started(counter: ForkCounter, target: int, limit: int = 1000) -> None:
    for _ in range(limit):
        if counter.started >= target:
            return
        await trio.lowlevel.checkpoint()


async def fork_cancel_loop(
    n: int, *, wait_start: bool, drain_every: int = 100
) -> tuple[int, float]:
    """``n`` cycles of add1 / fork(state="A") / remove1; returns (completed cycles, seconds).

    With ``wait_start`` every task is allowed to start before A is removed, and a cycle is
    completed when its task started and was then cancelled. Otherwise the loop only drains
    (waits for all tasks to block) every ``drain_every`` cycles: A's activation has ended
    before the task's first turn, so its body never runs (trio_am skips it), and a cycle
    is completed when its task is gone from the machine's nursery.
    """
    counter = ForkCounter()
    async with am().open_machine({"A": {}}) as mach:
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            mach.add1("A")
            mach.fork(counter.sleeper, state="A")
            if wait_start:
                await _wait_started(counter, i)
            mach.remove1("A")
            if i % drain_every == 0:
                await trio.testing.wait_all_tasks_blocked()
        await trio.testing.wait_all_tasks_blocked()
        elapsed = time.perf_counter() - t0
        alive = len(mach.nursery.child_tasks)
    if wait_start:
        return min(counter.started, counter.cancelled), elapsed
    return n - alive, elapsed


class ForkCancelRunner:
    """``run_n`` for :func:`timing.measure_rate`; rate = completed cycles / seconds."""

    def __init__(self, wait_start: bool) -> None:
        self.wait_start = wait_start
        self.min_completed_ratio = 1.0

    def __call__(self, n: int) -> float:
        done, elapsed = trio.run(partial(fork_cancel_loop, n, wait_start=self.wait_start))
        self.min_completed_ratio = min(self.min_completed_ratio, done / n)
        return elapsed * n / max(done, 1)


def fork_cancel_rate(
    *, target_s: float, repeats: int, wait_start: bool
) -> tuple[timing.Rate, float]:
    """Fork+cancel cycles per second and the lowest fraction of cycles that completed."""
    runner = ForkCancelRunner(wait_start)
    rate = timing.measure_rate(runner, target_s=target_s, repeats=repeats)
    return rate, runner.min_completed_ratio


# --- case 5: when1 wake-up latency -----------------------------------------------------------


async def _one_round(register: Any, fire: Any) -> float:
    """A waiter registers with ``register()`` and awaits it; this task then calls ``fire()``.

    Returns the seconds from just before ``fire()`` until the waiter ran again.
    """
    registered = trio.Event()
    woke = [0.0]

    async def waiter() -> None:
        w = register()
        registered.set()
        await w
        woke[0] = time.perf_counter()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await registered.wait()
        t0 = time.perf_counter()
        fire()
    return woke[0] - t0


async def when1_latencies(rounds: int) -> list[float]:
    samples = []
    async with am().open_machine({"A": {}}) as mach:
        for _ in range(rounds):
            samples.append(await _one_round(lambda: mach.when1("A"), lambda: mach.add1("A")))
            mach.remove1("A")
    return samples


async def event_latencies(rounds: int) -> list[float]:
    """Baseline: the same round with a bare ``trio.Event``."""
    samples = []
    for _ in range(rounds):
        ev = trio.Event()
        samples.append(await _one_round(lambda ev=ev: ev.wait(), ev.set))
    return samples


def when1_latency(rounds: int) -> timing.Latency:
    trio.run(when1_latencies, min(100, rounds))  # warm-up
    return timing.percentiles(trio.run(when1_latencies, rounds))


def event_latency(rounds: int) -> timing.Latency:
    trio.run(event_latencies, min(100, rounds))
    return timing.percentiles(trio.run(event_latencies, rounds))
