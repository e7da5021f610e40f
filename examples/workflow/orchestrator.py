"""The workflow example (arpc.md F7, "wasm_workflow" as processes): an orchestrator and
four workers, each a trio_am machine in its own process, linked by aRPC.

Run it with ``python examples/workflow/orchestrator.py`` (``python3 -m nox -s demo``
runs it with ``EXIT_ON_COMPLETED=1``). It starts the workers ``browser1`` and
``browser2``; ``browser2`` is the dispatcher and starts ``browser3`` and ``browser4``
itself. The workflow is a DAG of hashing steps::

    seed-1 -> browser1 -> browser3 -> result 3
    seed-2 -> browser2 -> browser4 -> result 4

Each step hashes its input with its worker's id (SHA-512), after burning
``HASH_ITERATIONS`` rounds of SHA-512 as load. Workers fail at random: with
``SUCCESS_RATE`` n, a seeded draw of ``randrange(n)`` gives 0 (a corrupted result), 1
(a plain failure) or success. The orchestrator

* **retries** a node that failed (``retry <id>``): the worker hashes its stored input
  again;
* **restarts** the whole workflow when the final results are wrong (``restart <n>``),
  since a corrupted result cannot be told from a good one before the end;
* prints ``completed`` once results 3 and 4 equal the known hashes, and with
  ``EXIT_ON_COMPLETED=1`` exits 0.

Settings (environment variables, or the flags of ``--help``): ``HASH_ITERATIONS``
(10000), ``SUCCESS_RATE`` (5), ``SEED`` (6), ``FAULT_PLAN`` (scripted outcomes such as
``browser1:fail,browser3:corrupt``, applied before the draw; without an explicit
``SUCCESS_RATE`` it is the only source of faults) and ``EXIT_ON_COMPLETED``.

Every machine binds the ``AM_*`` telemetry switches (``bind_env``): with ``trio-am-dbg``
running, ``AM_DBG_ADDR=1`` (or ``--dbg``) makes all five processes report to it;
``AM_OTEL_TRACE=1`` exports OpenTelemetry traces, all five processes in one trace.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import AsyncExitStack

import trio

import trio_am as am
from trio_am import pipes, rpc
from trio_am.telemetry.env import bind_env

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (
    EXPECTED,
    ORCHESTRATOR_SCHEMA,
    PIPED,
    SEEDS,
    WORKERS,
    ChildError,
    Config,
    ConfigError,
    child_urls,
    leaves,
    name_service,
    payload_hex,
    prefixed,
    run_child,
    say,
)


class Orchestrator:
    """Handlers of the orchestrator machine: the workflow DAG's side effects."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workers: dict[str, rpc.NetMachine] = {}  # browser1 and browser2's mirrors
        self.results: dict[str, bytes] = {}
        self.rounds = 0
        self.retries = 0
        self.restarts = 0
        #: set when the workflow completed (and, with EXIT_ON_COMPLETED, on a signal)
        self.stop = trio.Event()

    # links -------------------------------------------------------------------
    def Browser1Conn_state(self, e: am.Event) -> None:
        self.workers["browser1"].add1("Start")  # the worker becomes Ready

    def Browser2Conn_state(self, e: am.Event) -> None:
        self.workers["browser2"].add1("Start")  # and starts browser3 and browser4

    def WorkersReady_state(self, e: am.Event) -> None:
        say(f"workers ready: {' '.join(WORKERS)}")

    # the DAG -----------------------------------------------------------------
    def StartWork_state(self, e: am.Event) -> None:
        self.rounds += 1
        say(f"round {self.rounds}")
        self.results.clear()
        e.machine.remove1("StartWork")
        e.machine.add(["Browser1Work", "Browser2Work"])

    def Browser1Work_state(self, e: am.Event) -> None:
        if e.args.get("retry"):
            self.workers["browser1"].add1("Retrying")
        else:
            self.workers["browser1"].add1("Working", {"payload": SEEDS["browser1"]})

    def Browser2Work_state(self, e: am.Event) -> None:
        if e.args.get("retry"):
            self.workers["browser2"].add1("Retrying")
        else:
            self.workers["browser2"].add1("Working", {"payload": SEEDS["browser2"]})

    def Browser3Work_state(self, e: am.Event) -> None:
        # browser3 is reached through the dispatcher; its input is browser1's result
        if e.args.get("retry"):
            self.workers["browser2"].add1("Browser3Retry")
        else:
            self.workers["browser2"].add1("Browser3Work", {"payload": self.results["browser1"]})

    def Browser4Work_state(self, e: am.Event) -> None:
        if e.args.get("retry"):
            self.workers["browser2"].add1("Browser4Retry")
        else:
            self.workers["browser2"].add1("Browser4Work", {"payload": self.results["browser2"]})

    def ServerPayload_enter(self, e: am.Event) -> bool:
        p = e.args.get("payload")
        return (
            isinstance(p, rpc.Payload)
            and p.name == "result"
            and p.source in WORKERS
            and isinstance(p.data, bytes)
        )

    def ServerPayload_state(self, e: am.Event) -> None:
        p: rpc.Payload = e.args["payload"]
        node = p.source[-1]
        if not p.data:
            # a plain failure: run the node again on the input it already has
            self.retries += 1
            say(f"retry {p.source}")
            e.machine.add1(f"Browser{node}Work", {"retry": True})
            return
        self.results[p.source] = p.data
        say(f"{p.source} delivered {p.data.hex()[:16]}...")
        e.machine.add1(f"Browser{node}Delivered")

    def WorkDelivered_state(self, e: am.Event) -> None:
        got = {w: payload_hex(self.results.get(w)) for w in ("browser3", "browser4")}
        if got != EXPECTED:
            # a corrupted step somewhere: only a fresh run can be trusted
            self.restarts += 1
            say(f"restart {self.restarts}")
            e.machine.add1("StartWork")
            return
        say("completed")
        say(
            f"rounds: {self.rounds}, retries: {self.retries}, restarts: {self.restarts}, "
            f"machine time: {e.machine.time().sum()}"
        )
        for w in ("browser3", "browser4"):
            say(f"payload {w[-1]}: {got[w]}")
        if self.cfg.exit_on_completed:
            self.stop.set()
        else:
            say("serving the finished workflow until Ctrl+C")


async def link(
    stack: AsyncExitStack, mach: am.Machine, handlers: Orchestrator, name: str, url: str
) -> None:
    """Mirror a first-level worker and pipe its states (and its children's) in."""
    client = await stack.enter_async_context(rpc.connect(url, id=f"orch-{name}", consumer=mach))
    with trio.fail_after(10):
        await client.rpc.when1("Ready")  # the mirror knows the worker's schema from here
    handlers.workers[name] = client.mach
    piped = [name] + (["browser3", "browser4"] if name == "browser2" else [])
    for w in piped:
        src = PIPED if w == name else prefixed(w, PIPED)
        pipes.sync(client.mach, mach, src, prefixed(w, PIPED))
    # the link's own readiness, last: its handler starts the worker
    pipes.sync(client.rpc, mach, ["Ready"], [f"{name.capitalize()}Conn"])


async def main(cfg: Config) -> int:
    handlers = Orchestrator(cfg)
    name_service("orchestrator")
    say(
        f"orchestrator: starting 4 workers (hash iterations {cfg.hash_iterations}, "
        f"success rate {cfg.success_rate or 'no random faults'}, seed {cfg.seed}"
        + (f", fault plan {cfg.to_env()['FAULT_PLAN']}" if cfg.fault_plan else "")
        + ")"
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            am.open_machine(ORCHESTRATOR_SCHEMA, id="orchestrator", handlers=handlers) as mach,
            trio.open_nursery() as children,
        ):
            bind_env(mach)  # before the children start: they join its trace

            async def on_signal() -> None:
                async for _ in signals:
                    say("stopping")
                    handlers.stop.set()

            children.start_soon(on_signal)
            url1 = await children.start(run_child, "browser1", [], cfg)
            spawn = {"browser3": "spawn", "browser4": "spawn"}
            url2 = await children.start(run_child, "browser2", child_urls(spawn), cfg)
            async with AsyncExitStack() as stack:
                await link(stack, mach, handlers, "browser1", url1)
                await link(stack, mach, handlers, "browser2", url2)
                mach.add(["Start", "Ready"])
                await handlers.stop.wait()
            # links closed (goodbye sent); now stop the workers
            children.cancel_scope.cancel()
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(
        description="An orchestrator and 4 workers hashing along a DAG over aRPC.",
        epilog="Flags override the environment variables of the same names.",
    )
    parser.add_argument("--hash-iterations", type=int, metavar="N")
    parser.add_argument("--success-rate", type=int, metavar="N")
    parser.add_argument("--seed", type=int, metavar="N")
    parser.add_argument("--fault-plan", metavar="PLAN", help="e.g. browser1:fail,browser3:corrupt")
    parser.add_argument("--exit-on-completed", action="store_true", default=None)
    parser.add_argument("--dbg", metavar="ADDR", help="report to trio-am-dbg (AM_DBG_ADDR)")
    ns = parser.parse_args()
    for flag, var in (
        ("hash_iterations", "HASH_ITERATIONS"),
        ("success_rate", "SUCCESS_RATE"),
        ("seed", "SEED"),
        ("fault_plan", "FAULT_PLAN"),
        ("dbg", "AM_DBG_ADDR"),
    ):
        value = getattr(ns, flag)
        if value is not None:
            os.environ[var] = str(value)
    if ns.exit_on_completed:
        os.environ["EXIT_ON_COMPLETED"] = "1"
    try:
        cfg = Config.from_env()
    except ConfigError as exc:
        print(f"orchestrator: bad setting: {exc}", file=sys.stderr)
        return 2
    code = 1
    try:
        code = trio.run(main, cfg)
    except* ChildError as group:
        for exc in leaves(group):
            print(f"orchestrator: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(cli())
