"""The manual's structure, and the Getting started programs that need several processes.

* docs/getting-started.md holds programs saved as files (``server.py``, ``client.py``,
  ``read_session.py``): blocks marked ``<!-- file: NAME -->`` above ``<!-- no-run -->``.
  tests/test_docs.py cannot run them alone, so these tests write them to a temporary
  directory and run them the way the page says: the server in one process (recording to
  ``session.amdbg`` through ``AM_DBG_ADDR``), the client in another, Ctrl+C (SIGINT) to
  stop the server, then the recording read back. Bad input (a bad URL, a port in use, no
  server) must end with a one-line message and exit status 1, never a traceback. Every
  child is killed on the way out.
* mkdocs.yml lists every page under docs/ (mkdocs --strict checks that too, but the test
  suite runs without mkdocs), and docs/reference/ has a page for every public module.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "trio_am"

#: Generous bounds for a child's start-up and run (they take well under a second).
LIMIT = 20.0

_FILE_MARK = re.compile(r"^<!-- file: (?P<name>[\w.-]+) -->$")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def file_blocks(page: Path) -> dict[str, str]:
    """The ``<!-- file: NAME -->`` blocks of a page: name -> code."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = _FILE_MARK.match(line.strip())
        if not m:
            continue
        assert lines[i + 1].strip() == "<!-- no-run -->", f"{page.name}:{i + 1}"
        assert lines[i + 2].strip() == "```python", f"{page.name}:{i + 1}"
        end = lines.index("```", i + 3)
        out[m.group("name")] = "\n".join(lines[i + 3 : end]) + "\n"
    return out


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    blocks = file_blocks(DOCS / "getting-started.md")
    assert sorted(blocks) == ["client.py", "read_session.py", "server.py"]
    for name, code in blocks.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AM_")}
    env["PYTHONPATH"] = str(ROOT)  # the checkout, also when trio_am is not installed
    env.update(extra)
    return env


def _default_sigint() -> None:
    # A child started from a shell job without job control inherits SIGINT as ignored,
    # and Python then installs no KeyboardInterrupt handler: restore the default so the
    # child behaves as it does in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def started(*args: str, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def read_line(proc: subprocess.Popen[str], timeout: float = LIMIT) -> str:
    """The child's next stdout line, failing after ``timeout`` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output within {timeout} s")
    return proc.stdout.readline().rstrip("\n")


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
        preexec_fn=_default_sigint,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_server_client_and_recording(programs: Path) -> None:
    env = _env(AM_DBG_ADDR="file:session.amdbg")
    with started("server.py", "tcp://127.0.0.1:0", cwd=programs, env=env) as server:
        first = read_line(server)
        m = re.fullmatch(r"serving on (tcp://127\.0\.0\.1:\d+)", first)
        assert m, first
        url = m.group(1)

        client = run("client.py", url, cwd=programs, env=_env())
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == [
            "mirroring downloader (Start:1)",
            "add Downloading: executed",
            "mirror: (Start:1 Downloaded:1)",
        ]
        # a second run starts from the server's state: the mirror only follows it
        again = run("client.py", url, cwd=programs, env=_env())
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[0] == "mirroring downloader (Start:1 Downloaded:1)"
        assert again.stdout.splitlines()[2] == "mirror: (Start:1 Downloaded:3)"

        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=LIMIT)
        assert server.returncode == 0, err
        assert "Traceback" not in err
        assert out.splitlines() == [
            "downloading https://example.invalid/a.iso",
            "downloaded 3 chunks",
            "downloading https://example.invalid/a.iso",
            "downloaded 3 chunks",
            "stopped",
        ]

    assert (programs / "session.amdbg").exists()
    read = run("read_session.py", cwd=programs, env=_env())
    assert read.returncode == 0, read.stderr
    lines = read.stdout.splitlines()
    one_download = [
        "['Downloading'] accepted",
        "['Progress'] accepted",
        "['Progress'] accepted",
        "['Progress'] accepted",
        "['Downloaded'] accepted",
    ]
    assert lines == ["['Start'] accepted", *one_download, *one_download]


def test_client_without_server(programs: Path) -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = run("client.py", url, cwd=programs, env=_env())
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"no server at {url}: all attempts to connect to 127.0.0.1:{url.rsplit(':', 1)[1]} failed"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unsupported URL 'foo://x'"),
        ("tcp://127.0.0.1:99999", "invalid port"),
    ],
)
def test_server_bad_url(programs: Path, url: str, message: str) -> None:
    proc = run("server.py", url, cwd=programs, env=_env())
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cannot serve on {url}: "), proc.stderr
    assert message in lines[0]


def test_server_port_in_use(programs: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        proc = run("server.py", url, cwd=programs, env=_env())
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cannot serve on {url}: "), proc.stderr
    assert "in use" in lines[0]


# -- the manual's structure ---------------------------------------------------------------


def _nav_pages() -> list[str]:
    pages = []
    for line in (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines():
        code = line.split("#", 1)[0]
        m = re.match(r"^\s*-\s*(?:[^:]+:\s*)?([\w./-]+\.md)\s*$", code)
        if m:
            pages.append(m.group(1))
    return pages


def test_nav_lists_every_page() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is listed twice"
    on_disk = sorted(
        p.relative_to(DOCS).as_posix()
        for p in DOCS.rglob("*.md")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(DOCS).parts)
    )
    assert sorted(nav) == on_disk


#: Public modules documented elsewhere than in the API reference.
NOT_IN_REFERENCE = {
    "cli": "command-line entry points: the tool pages document their commands",
}


def _public_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.iterdir()):
        name = path.stem if path.suffix == ".py" else path.name
        if name.startswith("_") or name in NOT_IN_REFERENCE:
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            names.append(name)
    return names


def test_reference_covers_every_public_module() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "reference").glob("*.md"))
    documented = set(re.findall(r"^::: (trio_am(?:\.\w+)*)$", text, re.M))
    assert "trio_am" in documented
    missing = [m for m in _public_modules() if f"trio_am.{m}" not in documented]
    assert not missing, f"docs/reference/ has no page for {missing}"
