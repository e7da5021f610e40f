"""The supervisor of the worker pool example: keeps hasher workers and hands them out.

    python examples/worker_pool/supervisor.py --url tcp://127.0.0.1:7600 --min 2 --max 4

It prints ``supervisor listening on URL``, then ``pool ready: N hasher workers``, and
serves until Ctrl+C or SIGTERM, which stop every worker. Clients (``client.py``) ask it
for a worker. Bad options exit 2; a pool that cannot start, or a port in use, exits 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

import trio
from worker import KIND, SCHEMA

from trio_am import node
from trio_am.rpc.transport import parse_url

HERE = Path(__file__).resolve().parent
#: How the supervisor starts one worker.
WORKER_CMD = [sys.executable, str(HERE / "worker.py")]


def make_supervisor(pool: node.Pool, **options: Any) -> node.Supervisor:
    """A supervisor of hasher workers."""
    return node.Supervisor(KIND, WORKER_CMD, SCHEMA, pool=pool, **options)


async def main(url: str, pool: node.Pool) -> int:
    sup = make_supervisor(pool)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with sup.run(url):
            print(f"supervisor listening on {sup.url}", flush=True)
            try:
                await sup.wait_ready(timeout=60)
            except node.PoolError as exc:
                print(f"supervisor.py: {exc}", file=sys.stderr)
                return 1
            print(f"pool ready: {len(sup.workers)} {KIND} workers", flush=True)
            async for _ in signals:
                print("stopping", flush=True)
                break
    return 0


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def parse_args(argv: list[str] | None = None) -> tuple[str, node.Pool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="tcp://127.0.0.1:7600", help="where clients connect")
    parser.add_argument("--min", type=int, default=2, help="workers always ready")
    parser.add_argument("--max", type=int, default=4, help="the most worker processes")
    parser.add_argument("--warm", type=int, default=1, help="idle workers on top of busy ones")
    parser.add_argument("--max-per-client", type=int, default=None)
    parser.add_argument("--recycle", action="store_true", help="replace a worker after use")
    ns = parser.parse_args(argv)
    try:
        pool = node.Pool(
            min=ns.min,
            max=ns.max,
            warm=ns.warm,
            max_per_client=ns.max_per_client,
            recycle=ns.recycle,
        )
        parse_url(ns.url)
    except ValueError as exc:
        parser.error(str(exc))
    return ns.url, pool


if __name__ == "__main__":
    url, pool = parse_args()
    try:
        sys.exit(trio.run(main, url, pool))
    except* OSError as group:  # e.g. the port is in use
        print(f"supervisor.py: {first_leaf(group)}", file=sys.stderr)
        sys.exit(1)
