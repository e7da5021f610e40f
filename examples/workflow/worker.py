"""A worker of the workflow example: one machine, served over aRPC (TCP).

The orchestrator starts it (``python worker.py --id browser1``); it can also be run by
hand. It prints ``READY <url>`` once its server listens, then a line per attempt.

* ``Working`` (args ``{"payload": bytes}``) hashes the payload after a simulated load;
  ``Retrying`` hashes the stored payload again. Each attempt ends in ``Completed`` (args
  ``{"payload": result}``, possibly ``b"corrupted"``) or ``Failed``, as the fault plan
  and the seeded generator decide (see common.Faults).
* ``Completed`` sends the result as the payload ``result`` to the worker's clients;
  ``Failed`` sends an empty one, which asks for a retry.
* With ``--peer browser3=URL --peer browser4=URL`` it is the **dispatcher**: it starts
  those two workers itself (or connects to the given URLs), mirrors them, turns its
  ``Browser3Work`` / ``Browser3Retry`` states into ``Working`` / ``Retrying`` on worker 3
  (and the same for 4), pipes their states back with a ``Browser3`` prefix, and forwards
  their payloads to its own clients with the source unchanged.

SIGINT or SIGTERM stops it cleanly; so does the end of its stdin with ``--stdin-watch``
(the orchestrator's pipe closes when the orchestrator dies).
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
    DISPATCHER_SCHEMA,
    PIPED,
    WORKER_SCHEMA,
    ChildError,
    Config,
    ConfigError,
    Faults,
    hash_work,
    leaves,
    name_service,
    prefixed,
    run_child,
    say,
)

#: Seconds between attempts to deliver a result while no client takes it.
REDELIVER_EVERY = 0.5


class Worker:
    """Handlers of a worker machine."""

    mach: am.Machine
    server: rpc.Server

    def __init__(self, worker_id: str, cfg: Config) -> None:
        self.id = worker_id
        self.cfg = cfg
        self.faults = Faults(worker_id, cfg)
        self.payload: bytes | None = None

    def Start_state(self, e: am.Event) -> None:
        e.machine.add1("Ready")

    def Working_enter(self, e: am.Event) -> bool:
        payload = e.args.get("payload")
        return isinstance(payload, bytes) and len(payload) > 0

    def Working_state(self, e: am.Event) -> None:
        self.payload = e.args["payload"]
        # the attempt lives in Working's scope: removing Working cancels it
        e.fork(self.attempt, self.payload)

    def Retrying_enter(self, e: am.Event) -> bool:
        return self.payload is not None

    def Retrying_state(self, e: am.Event) -> None:
        assert self.payload is not None
        e.fork(self.attempt, self.payload)

    async def attempt(self, payload: bytes) -> None:
        started = trio.current_time()
        result = await hash_work(self.cfg.hash_iterations, payload, self.id)
        outcome = self.faults.next()
        ms = (trio.current_time() - started) * 1000
        if outcome == "fail":
            say(f"attempt failed after {ms:.0f} ms")
            self.mach.add1("Failed")
            return
        if outcome == "corrupt":
            result = b"corrupted"
        say(f"attempt done in {ms:.0f} ms: {result.hex()[:16]}... ({outcome})")
        self.mach.add1("Completed", {"payload": result})

    def Completed_enter(self, e: am.Event) -> bool:
        return isinstance(e.args.get("payload"), bytes)

    def Completed_state(self, e: am.Event) -> None:
        e.fork(self.deliver, e.args["payload"])

    def Failed_state(self, e: am.Event) -> None:
        e.fork(self.deliver, b"")

    async def deliver(self, data: bytes) -> None:
        """Send the result to every client, until one has acknowledged it."""
        while True:
            try:
                if await self.server.send_payload("result", data) > 0:
                    return
            except rpc.DeliveryError as exc:
                say(f"delivery failed, trying again: {exc}")
            await trio.sleep(REDELIVER_EVERY)


class Dispatcher(Worker):
    """Handlers of the dispatcher (browser2): a worker that also drives workers 3 and 4."""

    def ServerPayload_state(self, e: am.Event) -> None:
        # a result of worker 3 or 4: pass it on, keeping its source
        p: rpc.Payload = e.args["payload"]
        self.server.send_payload_nowait(p.name, p.data, source=p.source)

    def Browser3Work_state(self, e: am.Event) -> None:
        say(f"dispatching work to browser3 ({len(e.args.get('payload', b''))} bytes)")

    def Browser4Work_state(self, e: am.Event) -> None:
        say(f"dispatching work to browser4 ({len(e.args.get('payload', b''))} bytes)")

    def Browser3Retry_state(self, e: am.Event) -> None:
        say("dispatching a retry to browser3")

    def Browser4Retry_state(self, e: am.Event) -> None:
        say("dispatching a retry to browser4")


async def connect_peer(
    stack: AsyncExitStack, mach: am.Machine, name: str, url: str
) -> rpc.NetMachine:
    """Mirror worker ``name`` and wire it to the dispatcher ``mach``."""
    client = await stack.enter_async_context(
        rpc.connect(url, id=f"{mach.id}-{name}", consumer=mach)
    )
    with trio.fail_after(10):
        await client.rpc.when1("Ready")
    peer = client.mach
    n = name[-1]
    # its states come back with a prefix; Start goes out to it
    pipes.sync(peer, mach, PIPED, prefixed(name, PIPED))
    pipes.sync(mach, peer, ["Start"])
    # work and retries go out with their args
    pipes.pipe_add(mach, peer, f"Browser{n}Work", "Working")
    pipes.pipe_add(mach, peer, f"Browser{n}Retry", "Retrying")
    return peer


async def main(worker_id: str, addr: str, peers: dict[str, str], stdin_watch: bool) -> int:
    cfg = Config.from_env()
    dispatcher = bool(peers)
    handlers = Dispatcher(worker_id, cfg) if dispatcher else Worker(worker_id, cfg)
    schema = DISPATCHER_SCHEMA if dispatcher else WORKER_SCHEMA
    name_service(worker_id)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            am.open_machine(schema, id=worker_id, handlers=handlers) as mach,
            trio.open_nursery() as nursery,
            AsyncExitStack() as stack,
        ):
            handlers.mach = mach
            bind_env(mach)  # AM_DBG_ADDR, AM_OTEL_TRACE, ... (before starting children)
            stop = trio.Event()

            async def on_signal() -> None:
                async for _ in signals:
                    stop.set()

            async def on_stdin_eof() -> None:
                stream = trio.lowlevel.FdStream(os.dup(0))
                async with stream:
                    while await stream.receive_some(4096):
                        pass
                stop.set()

            nursery.start_soon(on_signal)
            if stdin_watch:
                nursery.start_soon(on_stdin_eof)
            for name, url in peers.items():
                if url == "spawn":
                    url = await nursery.start(run_child, name, [], cfg)
                await connect_peer(stack, mach, name, url)
            server = await stack.enter_async_context(rpc.serve(mach, addr))
            handlers.server = server
            say(f"READY {server.urls[0]}")
            say(f"ready on {server.urls[0]} (pid {os.getpid()})")
            await stop.wait()
            await stack.aclose()  # close the server and the links (goodbyes sent)
            nursery.cancel_scope.cancel()  # then stop browser3 and browser4, if ours
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True, help="machine id (browser1..browser4)")
    parser.add_argument("--addr", default="tcp://127.0.0.1:0", help="aRPC URL to serve on")
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="make this worker the dispatcher of NAME (URL 'spawn': start it as a child)",
    )
    parser.add_argument("--stdin-watch", action="store_true", help="exit when stdin closes")
    ns = parser.parse_args()
    peers: dict[str, str] = {}
    for item in ns.peer:
        name, sep, url = item.partition("=")
        if not sep or name not in ("browser3", "browser4"):
            parser.error(f"--peer {item!r}: expected browser3=URL or browser4=URL")
        peers[name] = url
    code = 1
    try:
        code = trio.run(main, ns.id, ns.addr, peers, ns.stdin_watch)
    except* ConfigError as group:
        print(f"{ns.id}: bad setting: {leaves(group)[0]}", file=sys.stderr)
        code = 2
    except* ChildError as group:
        for exc in leaves(group):
            print(f"{ns.id}: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(cli())
