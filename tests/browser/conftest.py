"""Real-browser tests (arpc.md C3): headless Chromium driven by Playwright.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``; the ``CHROMIUM`` environment
variable names another executable), launched by Playwright for Python with
``executable_path``. These tests are plain (non-Trio) functions using Playwright's sync
API, which runs its own asyncio loop; Python peers run in a subprocess or in a Trio thread.

Fixtures:

* ``page``: a fresh page in a fresh browser profile (``launch_persistent_context`` on a
  new user-data-dir), headless, with the flags below. Its console messages and page
  errors are collected.
* ``browser_artifacts``: where a failing test leaves its files; tests may add more logs
  with :meth:`Artifacts.add_log`.

When a test fails, the hook below saves ``<test>.png`` (a full-page screenshot),
``<test>.console.log`` and the added logs into the artifacts directory (``BROWSER_ARTIFACTS``,
default ``<pytest basetemp>/browser-artifacts``) and names them in the report.

The tests are skipped (with the reason) only when Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str:
    """The Chromium executable: ``$CHROMIUM`` or ``/usr/bin/chromium``; skips the test
    when it is missing."""
    wanted = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    found = shutil.which(wanted)
    if found is None:
        pytest.skip(f"no Chromium at {wanted!r} (install Debian's chromium or set CHROMIUM)")
    return found


class Artifacts:
    """What a failing test leaves behind (see the module docstring)."""

    def __init__(self, root: Path, test_name: str) -> None:
        self.root = root
        self.name = re.sub(r"[^A-Za-z0-9._-]+", "_", test_name)[:120]
        self.page: Any = None
        self.console: list[str] = []
        self.logs: dict[str, Callable[[], str]] = {}

    def add_log(self, name: str, text: Callable[[], str]) -> None:
        """Save ``text()`` as ``<test>.<name>.log`` when the test fails."""
        self.logs[name] = text

    def save(self) -> list[Path]:
        """Write the screenshot and the logs; returns the paths written."""
        self.root.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        if self.page is not None and not self.page.is_closed():
            shot = self.root / f"{self.name}.png"
            try:
                self.page.screenshot(path=str(shot), full_page=True, timeout=5000)
                written.append(shot)
            except Exception as exc:  # the browser may be gone
                self.console.append(f"[artifacts] screenshot failed: {exc!r}")
        logs: dict[str, Callable[[], str]] = {"console": lambda: "\n".join(self.console)}
        logs.update(self.logs)
        for name, text in logs.items():
            path = self.root / f"{self.name}.{name}.log"
            try:
                path.write_text(text() + "\n")
            except Exception as exc:
                path.write_text(f"cannot write this log: {exc!r}\n")
            written.append(path)
        return written


_ARTIFACTS = pytest.StashKey[Artifacts]()


@pytest.fixture(scope="session")
def artifacts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("BROWSER_ARTIFACTS")
    return Path(env) if env else tmp_path_factory.getbasetemp() / "browser-artifacts"


@pytest.fixture
def browser_artifacts(request: pytest.FixtureRequest, artifacts_root: Path) -> Artifacts:
    art = Artifacts(artifacts_root, request.node.name)
    request.node.stash[_ARTIFACTS] = art
    return art


# Module scope: while Playwright's sync API runs, its asyncio loop stays registered as the
# thread's running loop, which would leak into later tests (e.g. tests/test_jupyter.py).
@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright for Python is not installed (pip install playwright)",
    )
    pw = sync_api.sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture
def browser_context(playwright: Any, tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile (user-data-dir)."""
    executable = chromium_path()
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=executable,
        headless=True,
        args=list(CHROMIUM_FLAGS),
    )
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(browser_context: Any, browser_artifacts: Artifacts) -> Any:
    """A page of ``browser_context`` whose console goes to the artifacts."""
    page = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    console = browser_artifacts.console
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    page.on("requestfailed", lambda r: console.append(f"requestfailed: {r.url} {r.failure}"))
    browser_artifacts.page = page
    return page


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed test (or setup), save the artifacts while the page still lives and
    name them in the report."""
    report = yield
    art = item.stash.get(_ARTIFACTS, None)
    if art is not None and report.failed and call.when in ("setup", "call"):
        paths = art.save()
        report.sections.append(
            ("browser artifacts", "\n".join(str(p) for p in paths) or "(none written)")
        )
    return report
