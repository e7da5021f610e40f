"""The browser example (arpc.md F6) in headless Chromium.

``examples/browser/server.py --port 0`` runs in a subprocess with ``BORED_AFTER=1`` and
``HELLO_EVERY=0.5``; a reader thread collects its stdout lines. The page is the one the
server prints (``open http://127.0.0.1:PORT/``). Nothing sleeps: every check waits on a
page selector or a stdout line, with a timeout.

Checks (F6 and the brief):

* ``[server-foo] hello`` appears in the page within 3 s (and on the server's stdout);
* typing ``hi`` + Enter shows ``[bar] hi`` in the page and ``[browser-bar-xxx] hi`` on
  the server's stdout within 2 s;
* ``foo is bored...`` appears after an idle second: the page first raises bar's ``Msg``
  tick to 20 (by typing), which stops foo's hellos, so foo goes quiet;
* a click in the page changes foo (the server prints it, the page's mirror shows it) and
  bar (the server's mirror of bar prints it), both ways;
* SIGINT stops the server cleanly (``bye``, exit 0).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "examples" / "browser" / "server.py"
ENV = {"BORED_AFTER": "1", "HELLO_EVERY": "0.5", "PYTHONUNBUFFERED": "1"}
#: process start-up, page load and the first connections
START_LIMIT = 15.0


class Server:
    """The example's process and the lines it printed so far."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._threads = [
            threading.Thread(target=self._read, args=(proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self.stderr), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, pipe: Any, into: list[str]) -> None:
        for line in pipe:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()
        if into is self.lines:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def mark(self) -> int:
        """The number of stdout lines so far (``expect(..., since=mark)``)."""
        with self._cond:
            return len(self.lines)

    def expect(self, want: str | re.Pattern[str], timeout: float, since: int = 0) -> str:
        """Wait for a stdout line (from index ``since``) equal to ``want`` or matching it."""

        def ok(line: str) -> bool:
            return line == want if isinstance(want, str) else want.fullmatch(line) is not None

        deadline = time.monotonic() + timeout
        with self._cond:
            i = since
            while True:
                for line in self.lines[i:]:
                    if ok(line):
                        return line
                i = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(left)
        why = "ended" if self._eof else f"within {timeout} s"
        raise AssertionError(f"no server line {want!r} {why}\n{self.report()}")

    def report(self) -> str:
        with self._cond:
            return (
                "--- server stdout ---\n"
                + "\n".join(self.lines)
                + "\n--- server stderr ---\n"
                + "\n".join(self.stderr)
            )


@pytest.fixture
def server(browser_artifacts: Any) -> Iterator[Server]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", "0"],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    srv = Server(proc)
    browser_artifacts.add_log("server", srv.report)
    try:
        yield srv
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def open_page(page: Any, server: Server) -> str:
    """Load the page the server prints; returns bar's id once both links are up."""
    line = server.expect(re.compile(r"open http://127\.0\.0\.1:\d+/"), START_LIMIT)
    page.goto(line.split(" ", 1)[1])
    bar_id = wait_bar_id(page)
    server.expect(f"bar connected: {bar_id}", START_LIMIT)
    page.get_by_test_id("foo-status").filter(has_text=re.compile(r"^ready$")).wait_for(
        timeout=START_LIMIT * 1000
    )
    return bar_id


def wait_bar_id(page: Any) -> str:
    loc = page.get_by_test_id("bar-id").filter(has_text=re.compile(r"^browser-bar-"))
    loc.wait_for(timeout=START_LIMIT * 1000)
    return str(loc.inner_text())


def message(page: Any, text: str) -> Any:
    """The list items of the page showing exactly ``text``."""
    return (
        page.get_by_test_id("messages")
        .locator("li")
        .filter(has_text=re.compile(f"^{re.escape(text)}$"))
    )


def state(page: Any, machine: str, name: str, active: bool) -> Any:
    value = "true" if active else "false"
    return page.locator(
        f'[data-testid="{machine}-states"] [data-state="{name}"][data-active="{value}"]'
    )


def submit(page: Any, text: str) -> None:
    box = page.get_by_test_id("input")
    box.fill(text)
    box.press("Enter")


def test_hello_reaches_the_page_within_3s(page: Any, server: Server) -> None:
    line = server.expect(re.compile(r"open http://127\.0\.0\.1:\d+/"), START_LIMIT)
    page.goto(line.split(" ", 1)[1])
    loaded = time.monotonic()
    message(page, "[server-foo] hello").first.wait_for(timeout=3000)
    assert time.monotonic() - loaded < 3.0
    server.expect("[server-foo] hello", 1.0)


def test_typed_message_shows_in_the_page_and_on_the_server(page: Any, server: Server) -> None:
    bar_id = open_page(page, server)
    mark = server.mark()
    submit(page, "hi")
    message(page, "[bar] hi").wait_for(timeout=2000)
    server.expect(f"[{bar_id}] hi", 2.0, since=mark)
    # an empty message is refused on both sides
    mark = server.mark()
    submit(page, "")
    submit(page, "after-empty")
    message(page, "[bar] after-empty").wait_for(timeout=2000)
    server.expect(f"[{bar_id}] after-empty", 2.0, since=mark)
    shown = [t.strip() for t in page.get_by_test_id("messages").locator("li").all_inner_texts()]
    assert "[bar]" not in shown
    assert f"[{bar_id}]" not in [line.strip() for line in server.lines[mark:]]


def test_foo_gets_bored_after_an_idle_second(page: Any, server: Server) -> None:
    open_page(page, server)
    message(page, "[server-foo] hello").first.wait_for(timeout=3000)
    # foo says hello while bar's Msg tick is below 20: raise it, then foo goes quiet
    n = 0
    while page.evaluate("window.example.bar.tick('Msg')") < 20:
        n += 1
        submit(page, f"m{n}")
        message(page, f"[bar] m{n}").wait_for(timeout=2000)
        assert n < 30
    bored = message(page, "foo is bored...")
    before = bored.count()
    mark = server.mark()
    # BORED_AFTER=1 and foo checks every second: bored within about 2 s of the last message
    bored.nth(before).wait_for(timeout=4000)
    server.expect("foo is bored...", 2.0, since=mark)
    state(page, "foo", "Bored", True).wait_for(timeout=2000)
    # a message removes Bored (seen through the page's mirror of foo)
    submit(page, "wake up")
    state(page, "foo", "Bored", False).wait_for(timeout=2000)


def test_clicks_change_states_both_ways(page: Any, server: Server) -> None:
    open_page(page, server)
    # page -> foo (on the server): the server prints it, the page's mirror shows it
    state(page, "foo", "Ready", False).wait_for()
    mark = server.mark()
    page.get_by_test_id("toggle-foo-ready").click()
    server.expect("foo is Ready", 2.0, since=mark)
    state(page, "foo", "Ready", True).wait_for(timeout=2000)
    mark = server.mark()
    page.get_by_test_id("toggle-foo-ready").click()
    server.expect("foo is not Ready", 2.0, since=mark)
    state(page, "foo", "Ready", False).wait_for(timeout=2000)
    # page -> bar (in the page): the server's mirror of bar sees it
    mark = server.mark()
    page.get_by_test_id("toggle-bar-ready").click()
    state(page, "bar", "Ready", True).wait_for(timeout=2000)
    server.expect("bar is Ready", 2.0, since=mark)
    mark = server.mark()
    page.get_by_test_id("toggle-bar-ready").click()
    state(page, "bar", "Ready", False).wait_for(timeout=2000)
    server.expect("bar is not Ready", 2.0, since=mark)
    # server -> page: foo's hello lands on bar
    message(page, "[server-foo] hello").first.wait_for(timeout=3000)
    assert page.get_by_test_id("error").inner_text() == ""


def test_sigint_stops_the_server_cleanly(page: Any, server: Server) -> None:
    open_page(page, server)
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=10) == 0, server.report()
    server.expect("bye", 2.0)
    assert server.lines[-1] == "bye", server.report()
