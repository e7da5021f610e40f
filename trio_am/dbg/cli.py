"""``trio-am-dbg``: the debugger's command line (tools.md §1.6).

    trio-am-dbg [-l HOST:PORT|-1] [-i FILE] [-d DIR] [flags] [mach://ID[/TX[/STEP]]]
    trio-am-dbg --headless --record FILE [-l HOST:PORT]

Exit codes: 0 after quitting (ctrl+q, SIGINT, SIGTERM), 1 when the listen address is
taken (``address in use: HOST:PORT``) or a file cannot be read, 2 on bad flags. On exit it
prints ``Clients: N``, ``Transitions: M`` and ``Memory: Xmb``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import trio

from .model import Filters, Model

__all__ = ["build_parser", "main"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("trio_am")
    except Exception:
        return "0"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags of tools.md §1.3-1.6)."""
    ap = argparse.ArgumentParser(
        prog="trio-am-dbg",
        description="A TUI debugger for trio_am machines: many machines report to it over "
        "TCP (AM_DBG_ADDR); step through their transitions, record and replay sessions.",
    )
    B = argparse.BooleanOptionalAction
    ap.add_argument("url", nargs="?", help="mach://ID[/TX_ID[/STEP]][?i=N&state=S...] to open")
    ap.add_argument(
        "-l",
        "--listen",
        default="localhost:6831",
        help="HOST:PORT to listen on; -1 = no listener (default localhost:6831)",
    )
    ap.add_argument("-i", "--import-data", metavar="FILE", help="load a .amdbg recording first")
    ap.add_argument("-d", "--dir", default=".", help="directory for exports (default .)")
    ap.add_argument("--record", metavar="FILE", help="append every received message to FILE")
    ap.add_argument("--headless", action="store_true", help="no UI: only record (--record)")
    ap.add_argument(
        "-c",
        "--select-connected",
        action="store_true",
        help="select a newly connected client when it is the only connected one",
    )
    ap.add_argument(
        "--clean-on-connect",
        action=B,
        default=True,
        help="drop all clients when all are disconnected and a new one connects",
    )
    ap.add_argument("--max-clients", type=int, default=5000)
    ap.add_argument("--max-mem", type=int, default=1000, help="MB before old data is trimmed")
    # filters (True = hide)
    ap.add_argument("--filter-canceled", action=B, default=False)
    ap.add_argument("--filter-queued", action=B, default=False)
    ap.add_argument("--filter-auto", action=B, default=False, help="hide all auto txs")
    ap.add_argument(
        "--filter-auto-canceled", action=B, default=True, help="hide canceled auto txs (default on)"
    )
    ap.add_argument("--filter-empty", action=B, default=False)
    ap.add_argument("--filter-health", action=B, default=True)
    ap.add_argument("--filter-group", action=B, default=True)
    ap.add_argument("--filter-checks", action=B, default=True)
    ap.add_argument("--filter-disconn", action=B, default=False)
    ap.add_argument("--filter-rpc-machs", action=B, default=False)
    ap.add_argument("--filter-log-level", type=int, choices=range(6), default=2)
    # view
    ap.add_argument(
        "-v", "--view", choices=("tree-log", "tree-matrix", "matrix"), default="tree-log"
    )
    ap.add_argument("--view-rain", action="store_true")
    ap.add_argument("-r", "--view-reader", action="store_true")
    ap.add_argument("--view-tail", action=B, default=True)
    ap.add_argument("--view-narrow", action="store_true")
    ap.add_argument("--view-timelines", type=int, choices=range(3), default=2)
    ap.add_argument("--view-log-wrap", action="store_true")
    ap.add_argument("--enable-mouse", action="store_true")
    ap.add_argument("--version", action="version", version=f"trio-am-dbg {_version()}")
    return ap  # fmt: skip


def _filters(a: argparse.Namespace) -> Filters:
    return Filters(
        canceled=a.filter_canceled,
        queued=a.filter_queued,
        auto=2 if a.filter_auto else (1 if a.filter_auto_canceled else 0),
        empty=a.filter_empty,
        health=a.filter_health,
        group=a.filter_group,
        checks=a.filter_checks,
        disconn=a.filter_disconn,
        rpc=a.filter_rpc_machs,
        log_level=a.filter_log_level,
    )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the debugger; returns the exit code."""
    ap = build_parser()
    args = ap.parse_args(argv)
    from .server import AddressInUseError, parse_addr

    listen: tuple[str, int] | None = None
    if args.listen != "-1":
        try:
            listen = parse_addr(args.listen)
        except ValueError as exc:
            ap.error(str(exc))
    if args.headless:
        if not args.record or listen is None:
            ap.error("--headless needs --record FILE and a listen address")
        from .headless import run_headless

        try:
            trio.run(run_headless, listen, args.record)
        except AddressInUseError as exc:
            _err(f"address in use: {exc.host}:{exc.port}")
            return 1
        return 0
    model = Model(
        filters=_filters(args),
        max_clients=args.max_clients,
        clean_on_connect=args.clean_on_connect,
        select_connected=args.select_connected,
        tail=args.view_tail,
    )
    if args.import_data:
        from .recording import RecordingError, replay

        try:
            replay(args.import_data, model, warn=False)
        except (OSError, RecordingError) as exc:
            _err(f"cannot import {args.import_data}: {exc}")
            return 1
    if args.url:
        model.open_url(args.url)
    elif args.import_data and args.view_tail:
        model.set_tail(True)
    try:
        code = trio.run(_run, model, listen, args)
    except AddressInUseError as exc:
        _err(f"address in use: {exc.host}:{exc.port}")
        return 1
    from .headless import summary_lines

    # one write, after a blank line: the terminal may still be leaving urwid's screen
    _say("\n" + "\n".join(summary_lines(model)))
    return code


async def _run(model: Model, listen: tuple[str, int] | None, args: argparse.Namespace) -> int:
    from .server import DbgServer
    from .ui import DbgApp, run_ui

    server = None
    writer: Any = None
    if listen is not None:
        server = DbgServer(model)
        await server.bind(*listen)
    else:
        model.listen_addr = None
    if args.record:
        from .recording import RecordingWriter

        writer = RecordingWriter.open(Path(args.record), meta={"app": "trio-am-dbg"})
        if server is not None:
            server.on_message = writer.write
    app = DbgApp(
        model,
        out_dir=Path(args.dir),
        reader=args.view_reader,
        rain=args.view_rain,
        narrow=args.view_narrow,
        timelines=args.view_timelines,
        wrap=args.view_log_wrap,
    )
    app.version = _version()
    try:
        await run_ui(app, server, mouse=args.enable_mouse)
    finally:
        if writer is not None:
            writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
