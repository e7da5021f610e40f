"""Execute the notebooks from clean kernels and fail on any error.

Usage::

    python notebooks/run.py [--output DIR] [--timeout SECONDS] [NOTEBOOK ...]

Without NOTEBOOK arguments every ``notebooks/*.ipynb`` runs, in name order. Each one runs
top to bottom in a fresh kernel started with this interpreter (so it sees the trio_am it
imports), in a temporary working directory of its own: files a notebook writes never land
in the repository, and the stored notebooks stay free of outputs. ``--output DIR`` saves
the executed copies there, to look at the outputs.

Prints one line per notebook (``ok``/``FAILED`` and the time taken) and, for a failure, the
cell and the error. Exit status: 0 all passed, 1 a notebook failed, 2 bad arguments or
missing packages (``pip install trio_am[notebooks]``).

``tests/test_notebooks.py`` and ``nox -s notebooks`` use this module.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: Seconds a single cell may run.
CELL_TIMEOUT = 120.0
#: The packages executing the notebooks needs (the ``notebooks`` extra).
REQUIRED = ("nbclient", "nbformat", "ipykernel", "matplotlib", "pandas")


class NotebookError(Exception):
    """A notebook failed: a cell raised, timed out, or the kernel died."""

    def __init__(self, path: Path, cell: int | None, message: str, source: str = "") -> None:
        self.path = path
        self.cell = cell
        self.source = source
        where = f"{path.name}, cell {cell}" if cell is not None else path.name
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Result:
    """One executed notebook."""

    path: Path
    seconds: float
    cells: int


def notebooks(folder: Path = HERE) -> list[Path]:
    """The notebooks of ``folder``, in name order."""
    return sorted(folder.glob("*.ipynb"))


def missing_packages() -> list[str]:
    """The packages of :data:`REQUIRED` that cannot be imported."""
    import importlib.util

    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def _kernel_manager(spec_dir: Path) -> Any:
    """A kernel manager whose only kernel is ipykernel on this interpreter (a kernel spec
    installed elsewhere, for another Python, is never picked)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    kdir = spec_dir / "trio_am_notebooks"
    kdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor}",
        "language": "python",
    }
    (kdir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    # local IPC sockets (in the temporary folder) rather than TCP on localhost
    return AsyncKernelManager(
        kernel_name="trio_am_notebooks",
        kernel_spec_manager=ksm,
        transport="ipc",
        ip=str(spec_dir / "kernel-ipc"),
    )


def execute(path: Path, *, output: Path | None = None, timeout: float = CELL_TIMEOUT) -> Result:
    """Run ``path`` top to bottom in a fresh kernel, in a temporary working directory.

    Raises:
        NotebookError: a cell raised or timed out, or the kernel died.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory(prefix=f"nb-{path.stem}-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        client = NotebookClient(
            nb,
            km=_kernel_manager(Path(tmp) / "kernels"),
            timeout=timeout,
            resources={"metadata": {"path": str(work)}},
        )
        started = time.monotonic()
        try:
            client.execute(cleanup_kc=True)  # shut our kernel down, even on errors
        except CellExecutionError as exc:
            index, source = _failed_cell(nb)
            raise NotebookError(path, index, _error_text(nb, index) or str(exc), source) from None
        except CellTimeoutError:
            index, source = _running_cell(nb)
            raise NotebookError(path, index, f"timed out after {timeout:g} s", source) from None
        except DeadKernelError as exc:
            raise NotebookError(path, None, f"the kernel died: {exc}") from None
        finally:
            if output is not None:
                output.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, output / path.name)  # type: ignore[no-untyped-call]
        seconds = time.monotonic() - started
    return Result(path, seconds, sum(c.cell_type == "code" for c in nb.cells))


def _code_cells(nb: Any) -> list[tuple[int, Any]]:
    return [(n, c) for n, c in enumerate(nb.cells, 1) if c.cell_type == "code"]


def _failed_cell(nb: Any) -> tuple[int | None, str]:
    for n, cell in _code_cells(nb):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return n, cell.source
    return None, ""


def _running_cell(nb: Any) -> tuple[int | None, str]:
    """The cell that was running when time ran out: the last one the kernel started."""
    cells = _code_cells(nb)
    started = [(n, c) for n, c in cells if c.get("execution_count") is not None]
    n, cell = started[-1] if started else (cells[0] if cells else (None, None))
    return n, cell.source if cell is not None else ""


def _error_text(nb: Any, index: int | None) -> str:
    if index is None:
        return ""
    for out in nb.cells[index - 1].get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {out.get('evalue')}"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="notebooks/run.py", description="Execute notebooks from clean kernels."
    )
    parser.add_argument("notebook", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--output", type=Path, help="save the executed notebooks here")
    parser.add_argument(
        "--timeout", type=float, default=CELL_TIMEOUT, help="seconds per cell (default 120)"
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    missing = missing_packages()
    if missing:
        print(
            f"missing packages: {', '.join(missing)} (pip install 'trio_am[notebooks]')",
            file=sys.stderr,
        )
        return 2
    paths = args.notebook or notebooks()
    for p in paths:
        if p.suffix != ".ipynb" or not p.is_file():
            parser.error(f"not a notebook file: {p}")
    if not paths:
        parser.error(f"no notebooks in {HERE}")
    failed = 0
    for p in paths:
        try:
            res = execute(p, output=args.output, timeout=args.timeout)
        except NotebookError as err:
            failed += 1
            print(f"FAILED {p.name}: {err}", flush=True)
            if err.source:
                print("  in:\n    " + err.source.replace("\n", "\n    "), flush=True)
        else:
            print(f"ok     {p.name}: {res.cells} code cells in {res.seconds:.1f} s", flush=True)
    print(f"{len(paths) - failed} of {len(paths)} notebooks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
