"""aRPC client (arpc.md F1): mirror a remote machine, mutate it and receive payloads.

Start ``python examples/arpc_server.py`` first, then run
``python examples/arpc_client.py``. Ctrl+C (SIGINT) or SIGTERM stops it cleanly.

``rpc.connect`` returns a client whose ``client.mach`` is a :class:`trio_am.rpc.NetMachine`:
a local mirror of the server's ``netSrc1`` with the usual machine API. Reading it
(``is1``, ``tick``, ``when1``...) is local; mutating it sends the mutation to the server.
Every second the client adds a random one of ``Foo``, ``Bar`` and ``Baz`` (the server
prints ``FooState`` etc.). Payloads from the server arrive at the *consumer*, a local
machine with the multi state ``ServerPayload``; its handler prints them.

Environment:

* ``ARPC_ADDR``: the server, ``host:port`` (WebSocket) or a ``ws://`` / ``tcp://`` URL;
  default ``localhost:8090``.
* ``ARPC_ADD_EVERY``: seconds between mutations (default 1).
* ``ARPC_RUN_FOR``: if set, exit after this many seconds.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import signal
import sys

import trio

import trio_am as am
from trio_am import rpc


def url_of(addr: str) -> str:
    """``host:port`` → ``ws://host:port``; a URL stays as it is."""
    return addr if "://" in addr else f"ws://{addr}"


class ConsumerHandlers:
    """Handlers of the payload consumer."""

    def ServerPayload_state(self, e: am.Event) -> None:
        payload: rpc.Payload = e.args["payload"]
        print(f"Payload: {payload.data}", flush=True)


async def main() -> None:
    url = url_of(os.environ.get("ARPC_ADDR", "localhost:8090"))
    every = float(os.environ.get("ARPC_ADD_EVERY", "1"))
    run_for = float(os.environ.get("ARPC_RUN_FOR") or math.inf)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            am.open_machine(rpc.CONSUMER_SCHEMA, id="consumer") as consumer,
            trio.open_nursery() as nursery,
        ):
            consumer.bind_handlers(ConsumerHandlers())

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            # a unique id: a second client with the same id would share its payloads
            cid = f"client-{secrets.token_hex(4)}"
            async with rpc.connect(url, id=cid, consumer=consumer) as client:
                with trio.move_on_after(10):
                    await client.rpc.when1("Ready")  # the first handshake
                if not client.rpc.is1("Ready"):
                    print(f"cannot connect to {url}", file=sys.stderr)
                    raise SystemExit(1)
                print(f"Connected to aRPC {url}", flush=True)
                with trio.move_on_after(run_for):
                    while True:
                        await trio.sleep(every)
                        # QUEUED locally and sent; the mirror follows the server's answer
                        client.mach.add1(random.choice(["Foo", "Bar", "Baz"]))
            nursery.cancel_scope.cancel()
    print("bye", flush=True)


if __name__ == "__main__":
    trio.run(main)
