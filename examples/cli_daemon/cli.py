"""The CLI of the daemon (arpc.md F2): start an op over aRPC, wait for its payload.

Start ``python examples/cli_daemon/daemon.py`` first, then run, for example::

    python examples/cli_daemon/cli.py --foo-1 --duration=0.5s

It connects to the daemon, adds ``OpFoo1`` (``--foo-1``) or ``OpBar2`` (``--bar-2``) on
the daemon's machine with the typed args ``OpArgs(duration)``, then waits for the
daemon's payload ``opdone``, prints ``Payload: done for ['OpFoo1']`` and exits 0.
Without ``--foo-1`` or ``--bar-2`` it exits 2 (a usage error); when the op or the
connection fails it exits 1. Killing it while the op runs ends the op in the daemon
(``ctx done``).
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys

import trio
from common import DEFAULT_ADDR, OpArgs, parse_duration

import trio_am as am
from trio_am import rpc


class Consumer:
    """Handlers of the payload consumer."""

    def __init__(self) -> None:
        self.op_done = trio.Event()

    def ServerPayload_state(self, e: am.Event) -> None:
        payload: rpc.Payload = e.args["payload"]
        if payload.name == "opdone":
            print(f"Payload: {payload.data}", flush=True)
            self.op_done.set()


async def run_op(url: str, op: str, duration: float) -> int:
    """Connect, start the op and wait for its payload; returns the exit code."""
    async with am.open_machine(rpc.CONSUMER_SCHEMA, id="cli-consumer") as consumer:
        handlers = Consumer()
        consumer.bind_handlers(handlers)
        # a unique id per run: the daemon answers to this client only
        cid = f"cli-{secrets.token_hex(4)}"
        async with rpc.connect(url, id=cid, consumer=consumer, args_types=[OpArgs]) as client:
            with trio.move_on_after(3):
                await client.rpc.when1("Ready")
            if not client.rpc.is1("Ready"):
                print(f"cannot connect to {url}", file=sys.stderr)
                return 1
            print(f"Connected to aRPC {url}", flush=True)
            res = await client.mach.add1_remote(op, am.pass_args(OpArgs(duration)))
            if res == am.Result.CANCELED:
                print(f"the daemon refused {op}", file=sys.stderr)
                return 1
            # the op takes `duration`; give the payload 5 s more
            with trio.move_on_after(duration + 5):
                await handlers.op_done.wait()
                return 0
            print("no payload from the daemon", file=sys.stderr)
            return 1


async def main(addr: str, op: str, duration: float) -> int:
    url = addr if "://" in addr else f"ws://{addr}"
    code = 130  # stopped by a signal
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            code = await run_op(url, op, duration)
            nursery.cancel_scope.cancel()
    return code


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run an op on the cli_daemon daemon.")
    ops = parser.add_mutually_exclusive_group(required=True)
    ops.add_argument("--foo-1", action="store_const", dest="op", const="OpFoo1", help="run OpFoo1")
    ops.add_argument("--bar-2", action="store_const", dest="op", const="OpBar2", help="run OpBar2")
    parser.add_argument("--addr", default=DEFAULT_ADDR, help="host:port of the daemon")
    parser.add_argument(
        "-d", "--duration", default="3s", type=duration_arg, help="how long the op runs (3s)"
    )
    args = parser.parse_args(argv)
    sys.exit(trio.run(main, args.addr, args.op, args.duration))


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    cli()
