"""Helpers of the am.js tests: the node executable and a runner for node:test files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JS = REPO / "js"


def node_or_skip() -> str:
    """The ``node`` executable (installed by .ci/run as Debian's ``nodejs``)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (.ci/run installs Debian's nodejs package)")
    return node


def run_node_test(test_file: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run one ``node --test`` file in js/; fail with node's output unless it passes."""
    node = node_or_skip()
    proc = subprocess.run(
        [node, "--experimental-websocket", "--test", "--test-reporter=tap", test_file],
        cwd=JS,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "# fail 0" in out and "# pass 0" not in out, out[-3000:]
    return out
