"""``trio-am-relay``: run a relay from the command line (arpc.md C2).

    trio-am-relay [--addr HOST:PORT] [--static DIR] [--allow-dial HOST:PORT ...]
                  [--allow-listen HOST:PORTS ...] [--allow-origin ORIGIN ...]

It prints ``relay listening on http://HOST:PORT`` once it serves, then runs until
SIGINT or SIGTERM (exit 0). A taken address prints ``address in use: HOST:PORT`` and
exits 1; bad flags exit 2. ``AM_RELAY_DBG=1`` (with ``AM_DBG_ADDR``) reports the relay's
machine to ``trio-am-dbg``.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys

import trio

from ._relay import Relay
from ._rules import DEFAULT_ALLOW_LISTEN, TargetRules

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``trio-am-relay``."""
    ap = argparse.ArgumentParser(
        prog="trio-am-relay",
        description="Tunnel TCP over WebSocket for trio_am aRPC, so that browser pages "
        "and Python machines reach each other. Also serves /am.js, /healthz and static files.",
    )
    ap.add_argument(
        "--addr", default="127.0.0.1:12733", help="listen address (default %(default)s)"
    )
    ap.add_argument("--static", metavar="DIR", help="serve the files of DIR (/ is index.html)")
    ap.add_argument(
        "--allow-dial",
        action="append",
        default=[],
        metavar="HOST:PORTS",
        help="a target /dial may reach: host:port, host:lo-hi or host:* (host may be * or "
        "loopback); repeat for more. Default: none.",
    )
    ap.add_argument(
        "--allow-listen",
        action="append",
        default=None,
        metavar="HOST:PORTS",
        help=f"an address /listen may open (default: {' '.join(DEFAULT_ALLOW_LISTEN)})",
    )
    ap.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a page origin (besides the relay's own) that may open tunnels; * for any",
    )
    ap.add_argument("--max-per-ip", type=int, default=32, help="open tunnels per client IP")
    ap.add_argument("--idle-timeout", type=float, default=120.0, help="seconds (bridged tunnels)")
    ap.add_argument("--name", default="relay", help="the machine id is relay-NAME")
    return ap


async def _run(args: argparse.Namespace) -> int:
    relay = Relay(
        allow_dial=args.allow_dial,
        allow_listen=args.allow_listen if args.allow_listen is not None else DEFAULT_ALLOW_LISTEN,
        allow_origin=args.allow_origin,
        static_dir=args.static,
        max_per_ip=args.max_per_ip,
        idle_timeout=args.idle_timeout,
        name=args.name,
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                addr = await nursery.start(relay.serve, args.addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    print(f"address in use: {args.addr}", file=sys.stderr)
                    return 1
                raise
            print(f"relay listening on http://{addr}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``trio-am-relay``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        TargetRules(args.allow_dial)
        TargetRules(args.allow_listen or ())
    except ValueError as exc:
        print(f"trio-am-relay: {exc}", file=sys.stderr)
        return 2
    return trio.run(_run, args)
