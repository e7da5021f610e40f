"""Drive terminal programs in tmux, as a person would (scenarios-tools.md "Conventions").

``Tmux`` starts a detached session running one command, sends keys by tmux name and
polls the screen text. Waits poll every 100 ms against a deadline; they never sleep a
fixed time except the spacing between arrow presses the debugger's throttle needs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Screen waits: the scenarios say 5 s; CI machines are slower, so give more.
WAIT = 10.0
#: Spacing between arrow presses (the debugger moves at most once per 200 ms).
KEY_GAP = 0.25


def have_tmux() -> bool:
    """Whether tmux is installed."""
    return shutil.which("tmux") is not None


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any AM_* / OTEL_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AM_", "OTEL_"))}
    env.update(extra)
    return env


class Tmux:
    """One detached tmux session (its own server socket) running ``cmd``."""

    def __init__(self, cmd: list[str], *, width: int = 120, height: int = 40) -> None:
        self.name = "t" + uuid.uuid4().hex[:8]
        self.socket = f"am-test-{self.name}"
        env_cmd = ["env", "-u", "TMUX"]
        for k in list(os.environ):
            if k.startswith(("AM_", "OTEL_")):
                env_cmd += ["-u", k]
        shell = f"cd {shlex.quote(str(ROOT))} && exec {' '.join(map(shlex.quote, cmd))}"
        self._tmux("-f", "/dev/null", "new-session", "-d", "-s", self.name, "-x", str(width),
                   "-y", str(height), " ".join(env_cmd) + " sh -c " + shlex.quote(shell))  # fmt: skip
        self._tmux("set", "-g", "escape-time", "0")
        self._tmux("set", "-g", "remain-on-exit", "on")

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if proc.returncode != 0 and args[0] not in ("kill-server", "capture-pane"):
            raise RuntimeError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def keys(self, *keys: str, gap: float = 0.0) -> None:
        """Send keys by tmux name (``Left``, ``M-k``, ``C-q``, ``Escape``, ``BTab`` ...)."""
        for i, k in enumerate(keys):
            if i and gap:
                time.sleep(gap)
            self._tmux("send-keys", "-t", self.name, k)

    def burst(self, *keys: str) -> None:
        """Send all ``keys`` in one ``send-keys`` call (they arrive together)."""
        self._tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        """Type ``text`` literally."""
        self._tmux("send-keys", "-t", self.name, "-l", text)

    def pid(self) -> int:
        """The pid of the pane's process."""
        return int(self._tmux("list-panes", "-t", self.name, "-F", "#{pane_pid}").split()[0])

    def line(self, text: str, timeout: float = WAIT) -> str:
        """The first screen line containing ``text`` (waits for it)."""
        scr = self.wait_for(text, timeout=timeout)
        return next(x for x in scr.splitlines() if text in x)

    def arrows(self, key: str, n: int = 1) -> None:
        """Press an arrow ``n`` times, spaced for the debugger's move throttle."""
        for _ in range(n):
            self._tmux("send-keys", "-t", self.name, key)
            time.sleep(KEY_GAP)

    def screen(self) -> str:
        """The pane's text now."""
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def wait_for(self, *texts: str, timeout: float = WAIT) -> str:
        """Poll until every text is on screen; return the screen or fail with it."""
        deadline = time.monotonic() + timeout
        while True:
            scr = self.screen()
            if all(t in scr for t in texts):
                return scr
            if time.monotonic() > deadline:
                missing = [t for t in texts if t not in scr]
                raise AssertionError(f"screen lacks {missing!r}:\n{scr}")
            time.sleep(0.1)

    def wait_gone(self, text: str, timeout: float = WAIT) -> str:
        """Poll until ``text`` is off screen."""
        deadline = time.monotonic() + timeout
        while True:
            scr = self.screen()
            if text not in scr:
                return scr
            if time.monotonic() > deadline:
                raise AssertionError(f"screen still has {text!r}:\n{scr}")
            time.sleep(0.1)

    def lacks(self, text: str, settle: float = 1.0) -> bool:
        """True when ``text`` stays off screen for ``settle`` seconds (a "screen lacks")."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            if text in self.screen():
                return False
            time.sleep(0.1)
        return True

    def resize(self, width: int, height: int) -> None:
        """Resize the window."""
        self._tmux("resize-window", "-t", self.name, "-x", str(width), "-y", str(height))

    def close(self) -> None:
        """Kill the session and its server."""
        self._tmux("kill-server")


class Fx:
    """The FX fixture program (tests/support/fx.py) reporting to a debugger."""

    def __init__(self, port: int, *args: str, env: dict[str, str] | None = None) -> None:
        e = clean_env(AM_DBG_ADDR=f"127.0.0.1:{port}", AM_LOG="2")
        if env:
            e.update(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fx", *args],
            cwd=ROOT,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr = ""

    def wait_done(self, timeout: float = 20.0) -> None:
        """Wait for the ``done`` line."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        while line.strip() != "done":
            if not line or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"FX did not print done: {err}")
            line = self.proc.stdout.readline()

    def stop(self) -> int:
        """SIGTERM, then wait for the exit code; ``self.stderr`` keeps what it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _out, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        self.stderr += err or ""
        return self.proc.returncode
