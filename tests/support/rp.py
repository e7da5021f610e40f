"""RP: the REPL fixture server of scenarios-tools.md, section C.

Run from the repository root::

    AM_REPL_ADDR=1 AM_REPL_DIR=$TMP python -m tests.support.rp [--ids rp-1,rp-2]
        [--parent ID]

Machines ``rp-1`` and ``rp-2`` (schema ``Start {}``, ``Foo {}``, ``Bar {require Foo}``),
each adds ``Start`` at boot and is bound through :func:`trio_am.telemetry.bind_env` and
:func:`trio_am.repl.bind_env_repl` (the same binding once ``bind_env`` serves
``AM_REPL_*`` itself). Once every endpoint listens (and its ``<id>-repl.addr`` is
written), it prints ``ready`` and each URL, then waits for SIGTERM or SIGINT.

The helpers below run it and the REPL as processes for the tests; every process is
killed in ``finally`` blocks (or by ``subprocess.run``'s timeout), so a failing test
leaves none behind.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

import trio_am as am
from trio_am.repl import bind_env_repl
from trio_am.telemetry import bind_env

#: The RP schema.
SCHEMA: dict[str, dict[str, Any]] = {
    "Start": {},
    "Foo": {},
    "Bar": {"require": ["Foo"]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trio_am REPL fixture machines")
    p.add_argument("--ids", default="rp-1,rp-2", help="comma-separated machine ids")
    p.add_argument("--parent", default=None, help="parent id of every machine")
    return p.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ids = [i for i in args.ids.split(",") if i]
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            machines: list[am.Machine] = []
            bindings = []
            for mid in ids:
                mach = am.Machine(SCHEMA, id=mid, parent=args.parent)
                await nursery.start(_bind, mach)
                machines.append(mach)
                bind_env(mach)
                binding = bind_env_repl(mach)
                if binding is None:
                    print("AM_REPL_ADDR is not set", file=sys.stderr, flush=True)
                    return 2
                bindings.append(binding)
                mach.add1("Start")
            urls = [await b.wait_ready() for b in bindings]
            print("ready", *urls, flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()
    return 0


async def _bind(mach: am.Machine, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with mach:
        task_status.started()
        await trio.sleep_forever()


# ---------------------------------------------------------------------------- for tests
ROOT = Path(__file__).resolve().parents[2]
#: Generous bounds for one process step; only a hang reaches them.
WAIT = 30.0


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without AM_* / OTEL_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AM_", "OTEL_"))}
    env.update(extra)
    return env


def read_line_until(proc: subprocess.Popen[str], stream: str, needle: str) -> str:
    """Read ``proc.stdout`` / ``proc.stderr`` until a line contains ``needle``; return
    it. Reads the pipe's file descriptor directly (a text wrapper's buffer would hide
    lines from ``select``); what follows that line is dropped."""
    pipe = getattr(proc, stream)
    assert pipe is not None
    fd = pipe.fileno()
    deadline = time.monotonic() + WAIT
    buf = b""
    seen: list[str] = []
    while True:
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode(errors="replace")
            seen.append(line)
            if needle in line:
                return line
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line with {needle!r} in {stream}: {seen}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"{stream} ended without {needle!r}: {seen}")
        buf += chunk


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM, then SIGKILL; return what is left of stdout and stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out or "", err or ""


@contextmanager
def rp_server(addr_dir: Path, *args: str) -> Iterator[list[str]]:
    """Run the RP server (``AM_REPL_ADDR=1``, ``AM_REPL_DIR=addr_dir``); yield its URLs
    once its address files are written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.rp", *args],
        cwd=ROOT,
        env=clean_env(AM_REPL_ADDR="1", AM_REPL_DIR=str(addr_dir)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line_until(proc, "stdout", "ready")
        yield line.split()[1:]
    finally:
        stop(proc)


def repl_cmd(*args: str) -> list[str]:
    """The command line of ``trio-am repl ARGS`` (until the dispatcher exists:
    ``python -m trio_am.cli.repl``)."""
    return [sys.executable, "-m", "trio_am.cli.repl", *args]


def run_repl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``trio-am repl ARGS`` to its end (killed if it hangs)."""
    return subprocess.run(
        repl_cmd(*args),
        cwd=ROOT,
        env=clean_env(),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


@contextmanager
def repl_process(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``trio-am repl ARGS`` in the background (killed at the end)."""
    proc = subprocess.Popen(
        repl_cmd(*args),
        cwd=ROOT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(trio.run(main))
