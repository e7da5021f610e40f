"""examples/worker_pool: the launcher, and the supervisor and client as separate
processes. Time limits only guard against hangs."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys

import trio

from .conftest import ROOT, children_of

EXAMPLE = ROOT / "examples" / "worker_pool"


def digest(text: str, rounds: int) -> str:
    data = text.encode()
    for _ in range(rounds):
        data = hashlib.sha256(data).digest()
    return data.hex()


async def run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [sys.executable, *args], capture_stdout=True, capture_stderr=True, check=False
        )


async def test_run_py() -> None:
    proc = await run(str(EXAMPLE / "run.py"))
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    lines = out.splitlines()
    assert lines[0].startswith("supervisor listening on tcp://127.0.0.1:")
    assert lines[1] == "pool ready: 2 hasher workers"
    assert lines[2].startswith("got worker hasher-")
    worker = lines[2].split()[-1]
    assert lines[3] == f"'hello' -> {digest('hello', 1000)[:16]}... (1000 rounds, by {worker})"
    assert lines[4].startswith(f"'worker pool' -> {digest('worker pool', 1000)[:16]}")
    assert lines[-1] == "done"


async def test_supervisor_and_client_processes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    sup = await trio.lowlevel.open_process(
        [sys.executable, str(EXAMPLE / "supervisor.py"), "--url", url, "--min", "1", "--warm", "0"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert sup.stdout is not None
        buf = b""
        with trio.fail_after(30):
            while b"pool ready" not in buf:
                chunk = await sup.stdout.receive_some(4096)
                assert chunk, buf.decode()
                buf += chunk
        assert b"pool ready: 1 hasher workers" in buf
        client = await run(str(EXAMPLE / "client.py"), "--url", url, "--rounds", "3", "abc")
        assert client.returncode == 0, client.stderr.decode()
        assert f"'abc' -> {digest('abc', 3)[:16]}... (3 rounds" in client.stdout.decode()
        # a bad option is refused before anything is sent
        bad = await run(str(EXAMPLE / "client.py"), "--url", url, "--rounds", "0", "abc")
        assert bad.returncode == 2 and b"--rounds" in bad.stderr
        workers = children_of(sup.pid)
        sup.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await sup.wait() == 0
        assert not any(p in children_of(sup.pid) for p in workers)
    finally:
        if sup.returncode is None:
            sup.kill()
        await sup.wait()
        if sup.stdout is not None:
            await sup.stdout.aclose()


async def test_bad_use_of_the_example() -> None:
    worker = await run(str(EXAMPLE / "worker.py"))
    assert worker.returncode == 2
    assert b"not started by a supervisor" in worker.stderr
    assert b"Traceback" not in worker.stderr
    client = await run(str(EXAMPLE / "client.py"), "--url", "bogus://x", "abc")
    assert client.returncode == 2 and b"unsupported URL" in client.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    client = await run(str(EXAMPLE / "client.py"), "--url", dead, "--timeout", "0.5", "abc")
    assert client.returncode == 1 and b"no worker" in client.stderr
    assert b"Traceback" not in client.stderr
    pool = await run(str(EXAMPLE / "supervisor.py"), "--min", "3", "--max", "1")
    assert pool.returncode == 2 and b"Pool.min" in pool.stderr
