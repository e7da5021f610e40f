"""The client of the worker pool example: get a worker, hash some text on it.

    python examples/worker_pool/client.py --url tcp://127.0.0.1:7600 hello world

It asks the supervisor for a hasher worker, sends it each text (``WorkRequested``),
and prints each ``digest`` payload as it arrives::

    got worker hasher-1-3f2a
    'hello' -> 2c0c0a5d1d0bd1f9... (1000 rounds, by hasher-1-3f2a)

If the worker is lost mid-way, the call fails with ``OutcomeUnknownError``; the client
waits for its new worker (``WorkerReassigned``) and sends that text again. Exit codes:
0 done, 1 no worker or a refused request, 2 bad options.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio
from worker import KIND, MAX_ROUNDS, SCHEMA

import trio_am as am
from trio_am import node
from trio_am.rpc.transport import parse_url


class Inbox:
    """Collects the ``digest`` payloads."""

    def __init__(self) -> None:
        self.digests: list[dict[str, Any]] = []

    def ServerPayload_state(self, e: am.Event) -> None:
        payload: am.rpc.Payload = e.args["payload"]
        if payload.name == "digest":
            self.digests.append(payload.data)


async def hash_one(
    nc: node.NodeClient, inbox: am.Machine, got: Inbox, text: str, rounds: int
) -> dict[str, Any] | None:
    """Send one text to the worker, re-sending it to a new worker if the first is
    lost; the digest, or None when the worker refused it."""
    while True:
        worker = nc.worker
        if worker is None:  # being reassigned: wait for the new worker
            with trio.fail_after(30):
                await nc.mach.when1("Ready")
            continue
        seen = len(got.digests)
        try:
            res = await worker.add1_remote("WorkRequested", {"text": text, "rounds": rounds})
        except am.rpc.ConnectionLostError as exc:  # incl. OutcomeUnknownError
            print(f"worker lost ({type(exc).__name__}), sending {text!r} again", flush=True)
            with trio.fail_after(30):
                await nc.mach.when1("Ready")
            continue
        if res != am.Result.EXECUTED:
            return None
        with trio.fail_after(30):
            while not any(d["text"] == text for d in got.digests[seen:]):
                await inbox.when_next_active("ServerPayload")
        return next(d for d in got.digests[seen:] if d["text"] == text)


async def run_client(
    urls: list[str], texts: list[str], rounds: int = 1000, timeout: float = 15.0
) -> int:
    """Get a worker from the supervisors at ``urls`` and hash ``texts``; an exit code."""
    got = Inbox()
    async with (
        am.open_machine(am.rpc.CONSUMER_SCHEMA, id="inbox", handlers=got) as inbox,
        node.connect(urls, KIND, SCHEMA, consumer=inbox, request_timeout=timeout) as nc,
    ):
        try:
            await nc.request_worker()
        except node.NoWorkerError as exc:
            print(f"client.py: no worker: {exc}", file=sys.stderr)
            return 1
        print(f"got worker {nc.worker_id}", flush=True)
        for text in texts:
            result = await hash_one(nc, inbox, got, text, rounds)
            if result is None:
                print(f"client.py: the worker refused {text!r}", file=sys.stderr)
                return 1
            print(
                f"{text!r} -> {result['hex'][:16]}... ({result['rounds']} rounds, "
                f"by {result['worker']})",
                flush=True,
            )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("texts", nargs="+", help="texts to hash")
    parser.add_argument(
        "--url", action="append", help="a supervisor (repeat for more; tried in order)"
    )
    parser.add_argument("--rounds", type=int, default=1000, help=f"1 to {MAX_ROUNDS}")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to get a worker")
    ns = parser.parse_args(argv)
    ns.url = ns.url or ["tcp://127.0.0.1:7600"]
    try:
        for url in ns.url:
            parse_url(url)
    except ValueError as exc:
        parser.error(str(exc))
    if not ns.timeout > 0:
        parser.error("--timeout must be > 0")
    if not 1 <= ns.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1 to {MAX_ROUNDS}")
    return ns


if __name__ == "__main__":
    args = parse_args()
    try:
        sys.exit(trio.run(run_client, args.url, args.texts, args.rounds, args.timeout))
    except KeyboardInterrupt:
        sys.exit(130)
