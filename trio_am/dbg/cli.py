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
    ap.add_argument(
        "--max-mem", type=int, default=1000, help="MB before old data is trimmed (0 = never)"
    )
    ap.add_argument(
        "--log-ops-ttl",
        type=_duration,
        default=3600.0,
        metavar="DURATION",
        help="age of log lines above 'changes' dropped first when over --max-mem (1h)",
    )
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
    # files in --dir (D51)
    ap.add_argument("--output-tx", action=B, default=True, help="keep DIR/tx.md (default on)")
    ap.add_argument("--output-log", action=B, default=False, help="keep DIR/log.md")
    ap.add_argument("--output-clients", action=B, default=False, help="keep DIR/clients.txt")
    ap.add_argument(
        "--output-diagrams", type=int, choices=range(4), default=0, help=argparse.SUPPRESS
    )
    ap.add_argument("--dbg-id", default="am-dbg", help="the debugger's own id")
    ap.add_argument("--version", action="version", version=f"trio-am-dbg {_version()}")
    return ap  # fmt: skip


def _duration(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``30m``, ``1h``, ``1h30m``."""
    import re

    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if not t or parts is None:
        raise argparse.ArgumentTypeError(f"bad duration: {text!r} (e.g. 90s, 30m, 1h)")
    h, m, sec = (float(x) if x else 0.0 for x in parts.groups())
    return h * 3600 + m * 60 + sec


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
        from functools import partial

        from .headless import run_headless

        model = Model(
            filters=_filters(args),
            max_clients=args.max_clients,
            clean_on_connect=args.clean_on_connect,
        )
        try:
            trio.run(partial(run_headless, listen, args.record, model=model))
        except AddressInUseError as exc:
            _err(f"address in use: {exc.host}:{exc.port}")
            return 1
        except OSError as exc:
            _err(f"trio-am-dbg: {exc}")
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
        try:
            model.open_url(args.url)
        except ValueError as exc:
            ap.error(f"bad address {args.url!r}: {exc}")
    elif args.import_data and args.view_tail:
        model.set_tail(True)
    try:
        code = trio.run(_run, model, listen, args)
    except AddressInUseError as exc:
        _err(f"address in use: {exc.host}:{exc.port}")
        return 1
    except OSError as exc:
        _err(f"trio-am-dbg: {exc}")
        return 1
    if code == 0:
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
        # bind before the UI starts: a busy port exits 1 with the terminal untouched
        server = DbgServer(model)
        await server.bind(*listen)
    else:
        model.listen_addr = None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        if server is not None:
            await server.aclose()
        _err("trio-am-dbg: the UI needs a terminal (without one: --headless --record FILE)")
        return 1
    background: list[Any] = []
    if args.record:
        from .recording import RecordingWriter

        writer = RecordingWriter.open(Path(args.record), meta={"app": "trio-am-dbg"})
        if server is not None:
            server.on_message = writer.write

        async def flusher() -> None:
            # D44: the recording stays readable (flushed at least once a second)
            while True:
                await trio.sleep(0.25)
                writer.maybe_flush()

        background.append(flusher)
    if args.max_mem > 0:
        ttl_ns = int(args.log_ops_ttl * 1e9)

        async def memory_cap() -> None:
            # D50: once a minute, shed old data while above --max-mem
            while True:
                await trio.sleep(60)
                if model.check_memory(args.max_mem, log_ttl_ns=ttl_ns):
                    app.changed(busy=False)

        background.append(memory_cap)
    out_dir = Path(args.dir)
    app = DbgApp(
        model,
        out_dir=out_dir,
        reader=args.view_reader,
        rain=args.view_rain,
        view=args.view,
        narrow=args.view_narrow,
        timelines=args.view_timelines,
        wrap=args.view_log_wrap,
        output_tx=args.output_tx and out_dir.is_dir(),
        output_log=args.output_log and out_dir.is_dir(),
        output_clients=args.output_clients and out_dir.is_dir(),
    )
    app.version = _version()
    try:
        await run_ui(app, server, mouse=args.enable_mouse, background=background)
    finally:
        if writer is not None:
            writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
