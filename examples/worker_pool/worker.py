"""A node worker that hashes text (the worker side of the worker pool example).

The supervisor starts it (``supervisor.py`` or ``run.py``); on its own it exits 2 with
a message, since there is no supervisor to serve. A client adds
``WorkRequested {"text": str, "rounds": int}``; the worker moves to ``Working``, hashes
``text`` with ``rounds`` rounds of SHA-256 in a thread, sends the payload ``digest``
(``{"text", "rounds", "hex", "worker"}``) to its client and ends in ``WorkReady``.
Bad args are refused (the client's ``add1_remote`` gets ``CANCELED``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Final

import trio

import trio_am as am
from trio_am import node

#: The worker kind the supervisor and the clients agree on.
KIND: Final = "hasher"
#: The workers' schema: the node worker states are all it needs.
SCHEMA: Final = node.WORKER_SCHEMA
MAX_ROUNDS: Final = 1_000_000


def digest(text: str, rounds: int) -> str:
    """``rounds`` rounds of SHA-256 over ``text``, as hex."""
    data = text.encode()
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()


class Hasher:
    """Handlers of the worker's machine."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def WorkRequested_enter(self, e: am.Event) -> bool:
        text, rounds = e.args.get("text"), e.args.get("rounds", 1)
        return (
            isinstance(text, str)
            and isinstance(rounds, int)
            and not isinstance(rounds, bool)
            and 1 <= rounds <= MAX_ROUNDS
        )

    def WorkRequested_state(self, e: am.Event) -> None:
        e.machine.add1("Working", {"text": e.args["text"], "rounds": e.args.get("rounds", 1)})

    def Working_state(self, e: am.Event) -> None:
        mach = e.machine
        text, rounds = str(e.args["text"]), int(e.args["rounds"])

        async def work() -> None:
            hexdigest = await trio.to_thread.run_sync(digest, text, rounds)
            result = {"text": text, "rounds": rounds, "hex": hexdigest, "worker": self.worker_id}
            mach.add1("ClientSendPayload", {"name": "digest", "data": result})
            mach.add1("WorkReady")

        # bound to this Working: a new request (or the end of the worker) cancels it
        assert isinstance(mach, am.Machine)
        mach.fork(work, state="Working")


async def main() -> None:
    worker_id = os.environ.get("AM_NODE_ID", KIND)
    async with am.open_machine(
        SCHEMA, id=f"w-{worker_id}", handlers=Hasher(worker_id), states=node.WorkerStates
    ) as mach:
        await node.worker(mach, KIND)  # until the supervisor goes


if __name__ == "__main__":
    try:
        trio.run(main)
    except* node.WorkerEnvError as group:
        err: BaseException = group
        while isinstance(err, BaseExceptionGroup):
            err = err.exceptions[0]
        print(f"worker.py: {err}", file=sys.stderr)
        print("start it through supervisor.py (or run.py)", file=sys.stderr)
        sys.exit(2)
