"""``SUBPROC(port)`` of scenarios-arpc.md: the scenario server in its own process.

Run from the repository root::

    python -m tests.support.src_server --port P

It serves the scenario source ``src`` (``SRC_SCHEMA`` of ``tests/rpc/conftest.py``) on
``tcp://127.0.0.1:P`` with the scenario server options, prints ``READY <epoch>``
(flushed) once it listens, and runs until it is killed. ``Crash_enter`` sends SIGKILL to
the process itself, so that a remote ``add1_remote("Crash")`` kills the server in the
middle of a mutation.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import trio

import trio_am as am
from trio_am import rpc

from ..rpc.conftest import SERVER_KW, SRC_SCHEMA, SrcHandlers


class CrashingHandlers(SrcHandlers):
    """The scenario handlers, with ``Crash_enter`` bound to SIGKILL."""

    def Crash_enter(self, e: am.Event) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


async def main(port: int, host: str) -> None:
    async with am.open_machine(SRC_SCHEMA, id="src") as src:
        handlers = CrashingHandlers()
        src.bind_handlers(handlers)
        async with rpc.serve(src, f"tcp://{host}:{port}", **SERVER_KW) as server:
            handlers.server = server
            print(f"READY {server.epoch}", flush=True)
            await trio.sleep_forever()


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the TCP port to serve on")
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind")
    args = parser.parse_args(argv)
    try:
        trio.run(main, args.port, args.host)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
