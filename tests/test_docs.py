"""Every ```python block of the manual (docs/*.md) runs, and prints what it says it prints.

Conventions (the manual explains the first one to readers in docs/index.md):

* **Runnable blocks.** Each ```python block runs on its own, as a script, in a fresh
  subprocess (``sys.executable -c``, working directory = the repository root, 30 s timeout).
  It must exit with status 0. Blocks do not share state: each one has its own imports and
  setup.
* **Skipped blocks.** A block whose fence is directly preceded by the line
  ``<!-- no-run -->`` is not run (it is a fragment that cannot run alone); it must still be
  valid Python (top-level ``await`` allowed).
* **Expected output.** A comment ``# -> text`` marks one line of expected standard output:
  either at the end of a line of code (usually a ``print``) or on a line of its own (for
  output printed by handlers, loops, and so on). When a block has such comments, its whole
  standard output must be exactly those lines, in the order they appear in the block
  (trailing whitespace ignored; ``# ->`` alone stands for an empty line). A block without
  them may print anything. Standard error is never compared.

Blocks are numbered from 1 in the order they appear in their page; failures name the page
and the block number. All blocks run concurrently in a thread pool to keep this file fast.
The last test checks that docs/api.md names every public name of trio_am.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"
TIMEOUT = 30.0

_FENCE_OPEN = re.compile(r"^```python\s*$")
_FENCE_ANY = re.compile(r"^\s*```")
_EXPECT = re.compile(r"#\s->(?: (.*))?$")


@dataclass(frozen=True)
class Block:
    page: str  # file name, e.g. "concepts.md"
    number: int  # 1-based position among the page's python blocks
    line: int  # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def label(self) -> str:
        return f"{self.page} block {self.number} (line {self.line})"

    def expected(self) -> list[str]:
        out = []
        for line in self.code.splitlines():
            m = _EXPECT.search(line)
            if m:
                out.append((m.group(1) or "").rstrip())
        return out


def _blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _FENCE_OPEN.match(line):
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and not _FENCE_ANY.match(lines[i]):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise AssertionError(f"{path.name}: unclosed ```python fence at line {start + 1}")
            run = not (start > 0 and lines[start - 1].strip() == NO_RUN)
            blocks.append(Block(path.name, len(blocks) + 1, start + 1, "\n".join(body) + "\n", run))
        i += 1
    return blocks


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


ALL_BLOCKS: list[Block] = [b for page in _pages() for b in _blocks(page)]
RUNNABLE: list[Block] = [b for b in ALL_BLOCKS if b.run]
SKIPPED: list[Block] = [b for b in ALL_BLOCKS if not b.run]


#: Bytecode cache shared by the subprocesses, outside the repository (see _run).
PYCACHE = Path(tempfile.gettempdir()) / "trio_am-test-docs-pycache"


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("AM_BREAKPOINTS", None)  # a breakpoint() in a snippet must never stop the run
    # This file starts dozens of interpreters that all import trio_am: let them share
    # compiled bytecode, even where the environment turns bytecode writing off, in a cache
    # of their own (nothing is written next to the sources). It halves each run's time.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    try:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(
            exc.cmd, -1, str(exc.stdout or ""), f"timed out after {TIMEOUT} s"
        )


@pytest.fixture(scope="module")
def results() -> dict[Block, subprocess.CompletedProcess[str]]:
    _run("import trio_am, attrs")  # fill the bytecode cache once, before the parallel runs
    workers = max(4, 2 * (os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        procs = pool.map(_run, [b.code for b in RUNNABLE])
        return dict(zip(RUNNABLE, procs, strict=True))


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.label for b in RUNNABLE])
def test_block_runs(block: Block, results: dict[Block, subprocess.CompletedProcess[str]]) -> None:
    proc = results[block]
    if proc.returncode != 0:
        pytest.fail(
            f"{block.label} failed with status {proc.returncode}\n"
            f"--- stderr ---\n{proc.stderr}\n--- stdout ---\n{proc.stdout}",
            pytrace=False,
        )
    expected = block.expected()
    if expected:
        got = [line.rstrip() for line in proc.stdout.splitlines()]
        if got != expected:
            pytest.fail(
                f"{block.label}: the output differs from its `# ->` comments\n"
                f"--- expected ---\n" + "\n".join(expected) + "\n--- got ---\n" + "\n".join(got),
                pytrace=False,
            )


def test_skipped_blocks_are_valid_python() -> None:
    for block in SKIPPED:
        try:
            compile(block.code, block.label, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{block.label} (no-run) is not valid Python: {exc}", pytrace=False)
        assert not block.expected(), f"{block.label} is no-run but has `# ->` output comments"


def test_no_run_marks_only_python_blocks() -> None:
    """A stray marker (not directly above a ```python fence) is a mistake."""
    for page in _pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() == NO_RUN:
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                assert _FENCE_OPEN.match(nxt), f"{page.name}:{i + 1}: {NO_RUN} not above ```python"


def test_python_fences_are_not_indented() -> None:
    """Indented ```python fences would be missed by the extractor above."""
    for page in _pages():
        for i, line in enumerate(page.read_text(encoding="utf-8").splitlines()):
            if re.match(r"^\s+```python", line):
                pytest.fail(f"{page.name}:{i + 1}: indented ```python fence")


def test_most_blocks_run() -> None:
    assert len(RUNNABLE) >= 30
    assert len(SKIPPED) <= len(RUNNABLE) // 4, "use <!-- no-run --> sparingly"


def test_api_page_lists_every_public_name() -> None:
    """docs/api.md names everything in trio_am.__all__ and every public Machine member."""
    import trio_am

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [name for name in trio_am.__all__ if f"`{name}`" not in text]
    assert not missing, f"docs/api.md lacks {missing}"
    members = [n for n in dir(trio_am.Machine) if not n.startswith("_")]
    missing = [n for n in members if f"`{n}`" not in text and f"`{n}()`" not in text]
    assert not missing, f"docs/api.md lacks Machine members {missing}"
