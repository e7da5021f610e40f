"""A running subprocess's output as lines, read as they come, with waits on them."""

from __future__ import annotations

import re

import trio


class ProcLines:
    """Collects a :class:`trio.Process`'s stdout lines and stderr bytes.

    Run :meth:`pump` and :meth:`drain_stderr` in a nursery; :meth:`wait_line` then waits
    for a line without sleeping, and fails with the output so far when stdout ends first.
    """

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.stderr = b""
        self._new = trio.Event()
        self.eof = False

    async def pump(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while chunk := await self.proc.stdout.receive_some(65536):
            buf += chunk
            *done, buf = buf.split(b"\n")
            self.lines += [line.decode() for line in done]
            self._new.set()
            self._new = trio.Event()
        self.eof = True
        self._new.set()

    async def drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.receive_some(65536):
            self.stderr += chunk

    async def wait_line(self, pattern: str, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` on that ``pattern`` matches (``search``)."""
        regex = re.compile(pattern)
        while True:
            for line in self.lines[start:]:
                if m := regex.search(line):
                    return m
            if self.eof:
                raise AssertionError(f"no line like {pattern!r} in:\n{self.text()}")
            await self._new.wait()

    def text(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr:\n" + self.stderr.decode(errors="replace")
