"""Headless debugger (trio_am.dbg.headless): record without a UI, summary on a signal."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import trio

import trio_am.dbg
from tests.dbg.conftest import frame, free_port, fx_messages
from trio_am.dbg.headless import run_headless, summary_lines
from trio_am.dbg.model import Model
from trio_am.dbg.recording import RecordingError

ROOT = Path(__file__).resolve().parents[2]


def headless_cmd() -> list[str]:
    """The console entry when helper D's CLI exists, else the module's own entry."""
    if (ROOT / "trio_am" / "dbg" / "__main__.py").exists() and (
        ROOT / "trio_am" / "dbg" / "cli.py"
    ).exists():
        return [sys.executable, "-m", "trio_am.dbg", "--headless"]
    return [sys.executable, "-m", "trio_am.dbg.headless"]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AM_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Lines:
    """Collects a pipe's lines in a thread so tests can wait on them."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._t.start()

    def _read(self, pipe: IO[str]) -> None:
        with pipe:
            for line in pipe:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self) -> None:
        self._t.join(5)


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        time.sleep(0.05)


def send_fx(port: int, *, close: bool = True) -> socket.socket:
    """FX's records: the real reporter of trio_am.telemetry.dbg when it exists (a
    subprocess), else the same messages as raw frames."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"".join(frame(m) for m in fx_messages()) + frame(["dispose", "fx-a", 0]))
    if close:
        s.sendall(frame(["bye", 0]))
        s.close()
    return s


def run_fx_reporter(port: int) -> bool:
    """Run the FX program of tests/support/fx.py with ``--exit`` if it exists."""
    if not (ROOT / "tests" / "support" / "fx.py").exists():
        return False
    env = clean_env()
    env["AM_DBG_ADDR"] = f"127.0.0.1:{port}"
    env["AM_LOG"] = "2"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.fx", "--exit"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return True


def loadable_txs(path: Path) -> int:
    """How many fx-a txs a (possibly still growing) recording holds now."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a live recording reads as truncated
            m = trio_am.dbg.load(path)
    except (RecordingError, OSError):
        return 0
    cl = m.clients.get("fx-a")
    return len(cl.txs) if cl else 0


# ------------------------------------------------------------------------------ in process
async def test_run_headless_in_process(tmp_path: Path) -> None:
    out = io.StringIO()
    rec = tmp_path / "r.amdbg"
    model = Model()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(
            lambda task_status: run_headless(
                ("127.0.0.1", 0), rec, model=model, out=out, signals=False,
                task_status=task_status,
            )
        )  # fmt: skip
        assert port > 0
        for _round in range(2):  # outlives its clients
            s = await trio.open_tcp_stream(host, port)
            await s.send_all(b"".join(frame(m) for m in fx_messages()))
            await s.aclose()
            with trio.fail_after(5):
                while not ("fx-a" in model.clients and not model.clients["fx-a"].connected):
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    text = out.getvalue()
    assert f"Listening on 127.0.0.1:{port}\nRecording to {rec}\n" in text
    assert "Clients: 1\nTransitions: 8\nMemory: " in text
    back = trio_am.dbg.load(rec)
    # both sessions were recorded; the replay cleans on the reconnect like the live one
    assert len(back.clients["fx-a"].txs) == 8
    assert back.warnings == []


def test_summary_lines(fx_model: Model) -> None:
    lines = summary_lines(fx_model)
    assert lines[:2] == ["Clients: 1", "Transitions: 8"]
    assert lines[2].startswith("Memory: ") and lines[2].endswith("mb")
    assert int(lines[2][8:-2]) > 0


# ------------------------------------------------------------------------------ subprocess
def test_scenario_29_headless_record(tmp_path: Path) -> None:
    port = free_port()
    rec = tmp_path / "r.amdbg"
    proc = subprocess.Popen(
        [*headless_cmd(), "--record", str(rec), "-l", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        wait_for(lambda: "Recording to" in out.text(), what="startup lines")
        assert f"Listening on 127.0.0.1:{port}" in out.lines
        assert any(line.startswith("Recording to") and "r.amdbg" in line for line in out.lines)
        if not run_fx_reporter(port):
            send_fx(port)
        # appended on arrival, flushed within a second: readable while it runs
        wait_for(lambda: loadable_txs(rec) == 8, what="8 txs in the live recording")
        assert proc.poll() is None  # outlives its clients
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, err.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.join()
    err.join()
    assert "Transitions: 8" in out.lines, out.text()
    assert "Clients: 1" in out.lines
    assert any(line.startswith("Memory: ") for line in out.lines)
    assert "Traceback" not in err.text()
    model = trio_am.dbg.load(rec)
    assert model.warnings == []  # the stream was finished
    cl = model.clients["fx-a"]
    assert len(cl.txs) == 8
    assert "Foo" in cl.names
    assert cl.txs[1].auto


def test_headless_sigterm_and_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*headless_cmd(), "--record", str(tmp_path / "x.amdbg"), "-l", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=clean_env(),
            timeout=30, check=False,
        )  # fmt: skip
    assert busy.returncode == 1
    assert f"address in use: 127.0.0.1:{port}" in busy.stderr
    assert "Traceback" not in busy.stderr
    assert not (tmp_path / "x.amdbg").exists()

    port = free_port()
    rec = tmp_path / "t.amdbg"
    proc = subprocess.Popen(
        [*headless_cmd(), "--record", str(rec), "-l", f"127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=clean_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        wait_for(lambda: "Recording to" in out.text(), what="startup lines")
        live = send_fx(port, close=False)  # still connected at the signal
        wait_for(lambda: loadable_txs(rec) == 8, what="8 txs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, err.text()
        live.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.join()
    err.join()
    assert "Transitions: 8" in out.lines
    assert len(trio_am.dbg.load(rec).clients["fx-a"].txs) == 8
