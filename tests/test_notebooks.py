"""Every notebook in notebooks/ runs top to bottom from a clean kernel, without errors.

The notebooks are executed with nbclient through ``notebooks/run.py`` (the runner
``nox -s notebooks`` uses): each in a fresh ipykernel on this interpreter, in a temporary
working directory. The stored notebooks must carry no outputs (small diffs). Executing
needs nbclient and ipykernel (the ``test`` and ``notebooks`` extras); without them those
tests are skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "notebooks" / "run.py"
EXPECTED = {"01_basics.ipynb", "02_structured_concurrency.ipynb", "03_debugger_recording.ipynb"}


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trio_am_notebooks_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _load_runner()
NOTEBOOKS: list[Path] = run.notebooks()
_MISSING = [m for m in ("nbclient", "nbformat", "ipykernel") if importlib.util.find_spec(m) is None]
needs_jupyter = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"executing notebooks needs {', '.join(_MISSING)} (pip install -e '.[test]')",
)


def test_the_notebooks_are_there() -> None:
    assert EXPECTED <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, c in enumerate(code, 1) if c["outputs"] or c["execution_count"] is not None]
    assert not dirty, f"{path.name}: clear the outputs of code cells {dirty}"


@needs_jupyter
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_from_a_clean_kernel(path: Path) -> None:
    try:
        result = run.execute(path)
    except run.NotebookError as err:
        pytest.fail(f"{err}\n--- cell source ---\n{err.source}", pytrace=False)
    assert result.cells >= 5


@needs_jupyter
def test_runner_reports_the_failing_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        nbformat.v4.new_markdown_cell("# broken"),
        nbformat.v4.new_code_cell("print('first')"),
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
        nbformat.v4.new_code_cell("print('never')"),
    ]
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)

    assert run.main([str(bad), "--output", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "FAILED bad.ipynb: bad.ipynb, cell 3: ValueError: broken on purpose" in out
    assert "raise ValueError('broken on purpose')" in out
    assert "0 of 1 notebooks passed" in out
    executed = nbformat.read(tmp_path / "out" / "bad.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "first\n"
    assert not executed.cells[3].outputs  # execution stopped at the error


def test_runner_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_nb = tmp_path / "notes.txt"
    not_nb.write_text("hi", encoding="utf-8")
    for argv in ([str(not_nb)], [str(tmp_path / "missing.ipynb")], ["--timeout", "0"]):
        with pytest.raises(SystemExit) as info:
            run.main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not a notebook file" in err and "--timeout must be positive" in err
