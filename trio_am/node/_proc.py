"""Worker processes: start them in their own process group, keep the tail of their
output, and always end and reap them (arpc.md D2 "Spawn").

Every worker starts with ``start_new_session=True``, so its pid is also its process
group id: signals go to the whole group (the worker and anything it started). Stopping
is SIGTERM (with a SIGCONT, so a stopped process gets it too), then SIGKILL after a
grace period, and always an ``await proc.wait()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence

import trio

__all__ = ["OutputTail", "open_worker_process", "pump", "signal_group", "stop_process"]


class OutputTail:
    """The last ``limit`` bytes written to a stream."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        """Append ``data``, dropping what falls out of the window."""
        self._buf += data
        extra = len(self._buf) - self.limit
        if extra > 0:
            del self._buf[:extra]

    def text(self) -> str:
        """The tail, decoded as UTF-8 (bad bytes replaced)."""
        return self._buf.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self._buf)


async def pump(
    stream: trio.abc.ReceiveStream | None,
    tail: OutputTail | None = None,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Read ``stream`` until EOF into ``tail``; call ``on_line`` with each complete line
    (lines longer than 64 KiB are cut). A broken or closed stream just ends the pump."""
    if stream is None:
        return
    pending = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            if tail is not None:
                tail.feed(data)
            if on_line is not None:
                pending += data
                while (nl := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:nl])
                    del pending[: nl + 1]
                    on_line(line.decode("utf-8", errors="replace").rstrip("\r"))
                if len(pending) > 65536:
                    del pending[:-65536]
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pid``; False when no such group exists (any
    more)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def open_worker_process(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    cwd: str | None = None,
    stdin_pipe: bool = False,
) -> trio.Process:
    """Start ``cmd`` in a new session (its own process group), with stdout and stderr
    piped and stdin either a pipe (``stdin_pipe``: the worker sees EOF when we go) or
    ``/dev/null``.

    Raises:
        OSError: the command could not be started.
    """
    return await trio.lowlevel.open_process(
        list(cmd),
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )


async def stop_process(proc: trio.Process, grace: float) -> int:
    """End ``proc`` and its process group, and reap it; returns its exit status.

    A process still running gets SIGTERM (and SIGCONT), then SIGKILL after ``grace``
    seconds. Whatever is left of its group is killed once it exited. Run it shielded
    from cancellation: it always reaps the process.
    """
    pid = proc.pid
    if proc.poll() is None:
        signal_group(pid, signal.SIGTERM)
        signal_group(pid, signal.SIGCONT)
        with trio.move_on_after(grace):
            await proc.wait()
        if proc.poll() is None:
            signal_group(pid, signal.SIGKILL)
    code = await proc.wait()
    # grandchildren the worker left behind share its group: none may outlive it
    signal_group(pid, signal.SIGKILL)
    return code
