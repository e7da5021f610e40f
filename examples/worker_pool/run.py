"""The worker pool example in one command: a supervisor and a client.

    python examples/worker_pool/run.py

It starts the supervisor (2 hasher worker processes) on a free port, runs the client
against it (a worker is handed over, two texts are hashed on it, the digests come back
as payloads and are printed), then stops everything and exits 0.
"""

from __future__ import annotations

import sys

import trio
from client import run_client
from supervisor import first_leaf, make_supervisor

from trio_am import node

TEXTS = ["hello", "worker pool"]


async def main() -> int:
    sup = make_supervisor(node.Pool(min=2, max=4, warm=1))
    async with sup.run("tcp://127.0.0.1:0"):
        print(f"supervisor listening on {sup.url}", flush=True)
        await sup.wait_ready(timeout=60)
        print(f"pool ready: {len(sup.workers)} {sup.kind} workers", flush=True)
        code = await run_client([sup.url], TEXTS)
        print("done" if code == 0 else f"client failed ({code})", flush=True)
    return code


if __name__ == "__main__":
    try:
        sys.exit(trio.run(main))
    except* node.PoolError as group:
        print(f"run.py: {first_leaf(group)}", file=sys.stderr)
        sys.exit(1)
