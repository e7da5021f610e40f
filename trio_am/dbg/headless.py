"""Headless debugger: listen, record every message, print a summary on a signal (D43, D49).

``trio-am-dbg --headless --record out.amdbg -l HOST:PORT`` (also
``python -m trio_am.dbg.headless --record out.amdbg -l HOST:PORT``) needs no TTY: it prints
``Listening on HOST:PORT`` and ``Recording to PATH``, appends each message to the recording
as it arrives (the compressor is flushed at least once a second), outlives its clients, and
on SIGINT / SIGTERM finishes the stream, prints ``Clients: N``, ``Transitions: M``,
``Memory: Xmb`` and exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import IO

import trio

from trio_am.dbg.model import Model
from trio_am.dbg.recording import RecordingWriter
from trio_am.dbg.server import AddressInUseError, DbgServer, parse_addr

__all__ = ["main", "run_headless", "summary_lines"]

#: How often the recording is checked for unflushed data (it flushes every half second).
_FLUSH_TICK = 0.25


def summary_lines(model: Model) -> list[str]:
    """The D49 exit summary: ``Clients: N``, ``Transitions: M``, ``Memory: Xmb``."""
    return [
        f"Clients: {len(model.clients)}",
        f"Transitions: {model.tx_count}",
        f"Memory: {round(model.memory_mb())}mb",
    ]


def _say(out: IO[str], line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def run_headless(
    listen: tuple[str, int],
    record: str | Path,
    *,
    model: Model | None = None,
    out: IO[str] | None = None,
    signals: bool = True,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> Model:
    """Serve on ``listen`` and record into ``record`` until SIGINT / SIGTERM (with
    ``signals``) or cancellation; then close the recording, print the summary to ``out``
    (stdout, also when cancelled) and return the model. ``task_status`` gets the bound address.

    Raises:
        AddressInUseError: the listen address is taken (nothing is recorded).
    """
    out = out if out is not None else sys.stdout
    model = model if model is not None else Model()
    path = Path(record)
    server = DbgServer(model)
    # bind first: a busy port must not truncate an existing recording
    host, port = await server.bind(listen[0], listen[1])
    try:
        writer = RecordingWriter.open(path, meta={"app": "trio-am-dbg"}, flush_interval=0.5)
    except BaseException:
        await server.aclose()
        raise
    server.on_message = writer.write
    try:
        with ExitStack() as stack:
            # catch the signals before telling anyone we are up
            sigs = (
                stack.enter_context(trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
                if signals
                else None
            )
            _say(out, f"Listening on {host}:{port}")
            _say(out, f"Recording to {path}")
            await _serve(server, writer, sigs, task_status)
    finally:
        writer.close()
        for line in summary_lines(model):
            _say(out, line)
    return model


async def _serve(
    server: DbgServer,
    writer: RecordingWriter,
    sigs: AsyncIterator[int] | None,
    task_status: trio.TaskStatus[tuple[str, int]],
) -> None:
    assert server.address is not None
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        if sigs is not None:
            nursery.start_soon(_on_signals, sigs, stop)
        await nursery.start(server.run)
        nursery.start_soon(_flusher, writer)
        task_status.started(server.address)
        await stop.wait()
        nursery.cancel_scope.cancel()


async def _on_signals(sigs: AsyncIterator[int], stop: trio.Event) -> None:
    async for _sig in sigs:
        stop.set()
        return


async def _flusher(writer: RecordingWriter) -> None:
    while True:
        await trio.sleep(_FLUSH_TICK)
        writer.maybe_flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m trio_am.dbg.headless --record FILE [-l HOST:PORT]``; returns the exit
    code (0 after a signal, 1 on a busy port, 2 on bad flags)."""
    ap = argparse.ArgumentParser(
        prog="trio-am-dbg --headless", description="Record debugger messages without a UI."
    )
    ap.add_argument("--record", required=True, help="recording file (.amdbg) to write")
    ap.add_argument("-l", "--listen", default="localhost:6831", help="HOST:PORT to listen on")
    ap.add_argument("--max-clients", type=int, default=5000)
    ap.add_argument("--no-clean-on-connect", action="store_true")
    ap.add_argument("--headless", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        listen = parse_addr(args.listen)
    except ValueError as e:
        ap.error(str(e))
    model = Model(max_clients=args.max_clients, clean_on_connect=not args.no_clean_on_connect)
    try:
        trio.run(partial(run_headless, listen, args.record, model=model))
    except AddressInUseError as e:
        print(e, file=sys.stderr, flush=True)
        return 1
    except OSError as e:
        print(f"trio-am-dbg: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
