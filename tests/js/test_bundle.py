"""The committed bundle ``trio_am/relay/static/am.js`` is what ``js/build.mjs`` makes
from ``js/src`` with the locked packages (so Python users get a current am.js without
Node), and the wheel's relay serves it."""

from __future__ import annotations

import subprocess

import pytest

from tests.js.conftest import JS, node_or_skip
from trio_am.relay import am_js_path


def test_bundle_is_built_from_current_sources() -> None:
    node = node_or_skip()
    if not (JS / "node_modules" / "esbuild").exists():
        pytest.skip("js/node_modules is missing: run `npm ci` in js/ (.ci/run does)")
    proc = subprocess.run(
        [node, "build.mjs", "--check"], cwd=JS, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bundle_has_both_roles_and_no_imports() -> None:
    text = am_js_path().read_text()
    # a self-contained ES module: msgpack is bundled in, nothing is imported at run time
    assert not any(line.startswith("import ") for line in text.splitlines())
    exports = text[text.rindex("export {") :]
    for name in ("connect", "host", "typedArgs", "argsOf", "Machine", "Result"):
        assert name in exports, name
