"""trio_am.history keeps its record and query logic sans-I/O: those modules import no
Trio, no sqlite3, no threads or sockets; only ``_sqlite`` does I/O, and importing the
package does not load it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "trio_am" / "history"
PURE = ["__init__.py", "_errors.py", "_records.py", "_query.py", "_base.py", "_memory.py"]
FORBIDDEN = {"trio", "sqlite3", "_sqlite3", "socket", "ssl", "threading", "selectors"}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top module) of every import anywhere in the file, lazy ones included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_all_modules_are_classified() -> None:
    on_disk = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert on_disk == sorted([*PURE, "_sqlite.py"])


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io(name: str) -> None:
    bad = [f"{name}:{line}: {mod}" for line, mod in _imports(PACKAGE / name) if mod in FORBIDDEN]
    assert not bad, "\n".join(bad)


def test_sqlite_module_is_the_io_one() -> None:
    mods = {mod for _, mod in _imports(PACKAGE / "_sqlite.py")}
    assert {"sqlite3", "trio", "threading"} <= mods


def test_import_loads_no_sqlite() -> None:
    code = (
        "import json, sys\n"
        "from trio_am import history\n"
        "assert history.Memory and history.Query\n"
        "before = 'sqlite3' in sys.modules\n"
        "history.SQLiteMemory\n"
        "print(json.dumps([before, 'sqlite3' in sys.modules, history.SQLiteMemory.__module__]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [False, True, "trio_am.history"]
