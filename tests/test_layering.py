"""The import arrows of the package stay pointed one way.

``trio_am._core`` is the sans-I/O machine: it must not import Trio or any I/O, wire or UI
library. Importing ``trio_am`` itself must not pull in optional heavy dependencies.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "trio_am"
CORE_DIR = PACKAGE_DIR / "_core"

CORE_FORBIDDEN = frozenset({"trio", "msgpack", "urwid", "opentelemetry"})
IMPORT_FORBIDDEN = ("urwid", "opentelemetry")


def _core_files() -> list[Path]:
    return sorted(CORE_DIR.rglob("*.py"))


def _imported_top_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module) for every absolute import in the tree, anywhere in it."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_core_has_modules() -> None:
    # Guards the parametrised test below against passing vacuously.
    assert _core_files(), f"no Python files under {CORE_DIR}"


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_core_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{path.relative_to(PACKAGE_DIR.parent)}:{line}: imports {mod}"
        for line, mod in _imported_top_modules(tree)
        if mod in CORE_FORBIDDEN
    ]
    assert not bad, "trio_am._core must stay sans-I/O:\n" + "\n".join(bad)


def test_import_trio_am_loads_no_optional_deps() -> None:
    code = "import json, sys\nimport trio_am\nprint(json.dumps(sorted(sys.modules)))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=PACKAGE_DIR.parent,
    )
    assert proc.returncode == 0, proc.stderr
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    loaded = [m for m in modules if any(m == f or m.startswith(f + ".") for f in IMPORT_FORBIDDEN)]
    assert not loaded, f"`import trio_am` loaded {loaded}"


SANS_IO_RPC = ("protocol.py", "_codec.py", "errors.py", "auth.py", "states.py")


@pytest.mark.parametrize("name", SANS_IO_RPC)
def test_rpc_protocol_is_sans_io(name: str) -> None:
    """The aRPC protocol core moves no bytes itself (arpc.md §0.2): no Trio, no sockets."""
    path = PACKAGE_DIR / "rpc" / name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{name}:{line}: imports {mod}"
        for line, mod in _imported_top_modules(tree)
        if mod in {"trio", "trio_websocket", "wsproto", "socket", "ssl"}
    ]
    assert not bad, "\n".join(bad)


#: Modules of the telemetry and debugger layers that hold logic only: they must import no
#: I/O (``_wire``: the codec machines and the debugger share) or no UI (the debugger's
#: model, text renderers and recording format, which notebooks and tests use without urwid).
NO_IO = {"trio", "socket", "ssl", "urwid", "threading", "selectors"}
NO_UI = {"urwid"}
LOGIC_MODULES = [
    ("telemetry/_wire.py", NO_IO),
    ("relay/_rules.py", NO_IO),
    ("gen/_spec.py", NO_IO),
    ("gen/_module.py", NO_IO),
    ("vis/_text.py", NO_IO),
    ("vis/_schema.py", NO_IO),
    ("vis/_tx.py", NO_IO),
    ("vis/_graph.py", NO_IO),
    ("node/states.py", NO_IO),
    ("node/_pool.py", NO_IO),
    ("node/errors.py", NO_IO),
    ("history/_records.py", NO_IO | {"sqlite3"}),
    ("history/_query.py", NO_IO | {"sqlite3"}),
    ("history/_base.py", NO_IO | {"sqlite3"}),
    ("history/_memory.py", NO_IO | {"sqlite3"}),
    ("dbg/model.py", NO_UI),
    ("dbg/view.py", NO_UI),
    ("dbg/recording.py", NO_UI),
]


@pytest.mark.parametrize(("rel", "forbidden"), LOGIC_MODULES, ids=[r for r, _ in LOGIC_MODULES])
def test_logic_modules_import_no_io_or_ui(rel: str, forbidden: set[str]) -> None:
    path = PACKAGE_DIR / rel
    assert path.is_file(), f"{rel} is missing"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{rel}:{line}: imports {mod}"
        for line, mod in _imported_top_modules(tree)
        if mod in forbidden
    ]
    assert not bad, "\n".join(bad)


def test_debugger_model_loads_without_urwid() -> None:
    """``trio_am.dbg.load`` (notebooks, tests) works where urwid cannot be imported."""
    code = (
        "import sys\n"
        "sys.modules['urwid'] = None  # any import of it now fails\n"
        "import trio_am.dbg, trio_am.dbg.model, trio_am.dbg.view, trio_am.dbg.recording\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=PACKAGE_DIR.parent,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
