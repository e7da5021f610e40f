"""A node worker for the tests: ``WorkRequested {"input": n}`` sends the payload
``result`` with ``n * n`` to its client.

Run by a supervisor (``[sys.executable, "-m", "tests.node.squarer_worker"]``). Options:
``--kind K`` claims another kind (the worker then refuses to start), ``--bad-schema``
serves a machine without the node states' ``WorkReady`` (a real schema mismatch is
impossible: ``worker()`` checks it), ``--crash`` exits with status 3 after writing to
stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

import trio_am as am
from trio_am import node


class Squarer:
    def WorkRequested_state(self, e: am.Event) -> None:
        x = e.args.get("input")
        mach = e.machine
        mach.add1("Working")
        if not isinstance(x, int):
            mach.add_err_state("ErrWork", ValueError(f"input must be an int, not {x!r}"))
            return
        mach.add1("ClientSendPayload", {"name": "result", "data": x * x})
        mach.add1("WorkReady")


async def main(kind: str) -> None:
    async with am.open_machine(
        node.WORKER_SCHEMA, id="squarer", handlers=Squarer(), states=node.WorkerStates
    ) as mach:
        await node.worker(mach, kind)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", default="squarer")
    parser.add_argument("--crash", action="store_true")
    ns = parser.parse_args()
    if os.environ.get("SQUARER_LOG"):
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
    if ns.crash:
        sys.stderr.write("squarer: crashing on purpose\n")
        sys.exit(3)
    try:
        trio.run(main, ns.kind)
    except* node.WorkerEnvError as group:  # not started by a supervisor of our kind
        sys.stderr.write(f"squarer: {group.exceptions[0]}\n")
        sys.exit(2)
