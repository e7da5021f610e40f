"""The README's example runs as written and prints what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs_and_prints_its_comments() -> None:
    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "README.md has no python example"
    code = blocks[0]
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    # every `print(...)  # expected` comment in the example is what it prints, in order
    expected = [m.group(1).strip() for m in re.finditer(r"print\(.*\)\s+#\s*(.+)", code)]
    assert expected, "the example has no print with an expected-output comment"
    assert proc.stdout.splitlines() == expected


def test_readme_commands_match_ci() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_cmd = "python3 -m pip install nox && python3 -m nox -s tests"
    assert test_cmd in readme
    last = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last.strip() == test_cmd
    assert "python3 -m pip install nox && python3 -m nox -s demo" in readme
