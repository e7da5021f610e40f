"""aRPC server (arpc.md F1): serve a machine over the network and push payloads.

Run it with ``python examples/arpc_server.py``, then ``python examples/arpc_client.py``
in another terminal. Ctrl+C (SIGINT) or SIGTERM stops it cleanly.

The served machine (the *state source*) is ``netSrc1``: the basic states, the source
states of :data:`trio_am.rpc.STATE_SOURCE` and ``Foo``, ``Bar`` and ``Baz``, which remove
each other, so at most one of them is active. Its handlers print ``FooState`` etc. when a
client activates one. Every few seconds the server sends the payload ``mypayload``
(``"Hello aRPC"``) to every connected client's consumer.

Environment:

* ``ARPC_ADDR``: where to listen, ``host:port`` (served over WebSocket) or a full
  ``ws://`` / ``tcp://`` URL; default ``localhost:8090``.
* ``ARPC_PAYLOAD_EVERY``: seconds between payloads (default 3).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import trio

import trio_am as am
from trio_am import rpc

#: Foo, Bar and Baz: each removes the other two (a mutually exclusive group).
NET_SRC_SCHEMA: dict[str, Any] = am.schema_merge(
    am.BASIC_SCHEMA,
    rpc.STATE_SOURCE,
    {
        "Foo": {"remove": ["Bar", "Baz"]},
        "Bar": {"remove": ["Foo", "Baz"]},
        "Baz": {"remove": ["Foo", "Bar"]},
    },
)


def url_of(addr: str) -> str:
    """``host:port`` → ``ws://host:port``; a URL stays as it is."""
    return addr if "://" in addr else f"ws://{addr}"


class SourceHandlers:
    """Handlers of ``netSrc1``: they run on the server, whoever mutated the machine."""

    def Foo_state(self, e: am.Event) -> None:
        print("FooState", flush=True)

    def Bar_state(self, e: am.Event) -> None:
        print("BarState", flush=True)

    def Baz_state(self, e: am.Event) -> None:
        print("BazState", flush=True)


class ServerHandlers:
    """Handlers of the server's own machine (``server.rpc``, ``rs-netSrc1``)."""

    def ClientConnected_state(self, e: am.Event) -> None:
        # a multi state: it runs once per connection (args: client id and session id)
        print("Client connected", flush=True)


async def main() -> None:
    url = url_of(os.environ.get("ARPC_ADDR", "localhost:8090"))
    every = float(os.environ.get("ARPC_PAYLOAD_EVERY", "3"))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            am.open_machine(NET_SRC_SCHEMA, id="netSrc1") as src,
            rpc.serve(src, url) as server,
            trio.open_nursery() as nursery,
        ):
            src.bind_handlers(SourceHandlers())
            server.rpc.bind_handlers(ServerHandlers())
            src.add1("Start")
            print(f"Started aRPC server on {server.urls[0]}", flush=True)

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            while True:
                await trio.sleep(every)
                # to every client allowed payloads; its consumer gets
                # Payload(name="mypayload", data="Hello aRPC", source="netSrc1")
                server.send_payload_nowait("mypayload", "Hello aRPC")
    print("bye", flush=True)


if __name__ == "__main__":
    trio.run(main)
