"""Developer tasks for trio_am.

Run ``python3 -m nox -l`` to list the sessions and ``python3 -m nox -s NAME`` to run one.
Every session uses the interpreter that runs nox (Python 3.11+) and a plain ``venv``, so
nothing but Python and pip is needed. Virtualenvs in ``.nox/`` are reused between runs;
pass ``-N`` (or ``--reuse-venv=no``) to rebuild them.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"  # reuse_venv
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = ["tests", "lint", "types"]

ROOT = Path(__file__).parent
LINT_PATHS = ("trio_am", "tests", "examples", "benchmarks", "notebooks", "noxfile.py")


def _existing(paths: tuple[str, ...]) -> list[str]:
    # Empty folders are not kept by git, so a fresh clone may lack some of them.
    return [p for p in paths if (ROOT / p).exists()]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest; extra arguments go to pytest)."""
    session.install("-e", ".[test]")
    # No success_codes: pytest's exit code 5 (no tests collected) fails the session.
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check lint and formatting with ruff (no files are changed)."""
    session.install("ruff")
    paths = _existing(LINT_PATHS)
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def types(session: nox.Session) -> None:
    """Type-check the package with mypy --strict (config: [tool.mypy] in pyproject.toml)."""
    session.install("-e", ".", "mypy")
    session.run("mypy", "--strict", *(session.posargs or ["trio_am"]))


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks against transitions and python-statemachine."""
    session.install(".", "transitions", "python-statemachine")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(name="bench-tree")
def bench_tree(session: nox.Session) -> None:
    """arpc.md F5: HTTP load on a tree of aRPC replicas, each node held to 0.1 CPU
    (benchmarks/bench_tree.py; extra arguments go to it, e.g. ``-- --quick``)."""
    session.install(".")
    session.run("python", "benchmarks/bench_tree.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the workflow demo: an orchestrator and 4 worker processes over aRPC
    (examples/workflow; extra arguments go to orchestrator.py, e.g. ``-- --help``)."""
    session.install(".")
    session.run(
        "python",
        "examples/workflow/orchestrator.py",
        *session.posargs,
        env={"EXIT_ON_COMPLETED": "1"},
    )


@nox.session
def notebooks(session: nox.Session) -> None:
    """Execute every notebook in notebooks/ from a clean kernel; fail on any error
    (extra arguments go to notebooks/run.py, e.g. ``-- --output executed``)."""
    session.install("-e", ".[notebooks]")
    session.run("python", "notebooks/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the manual with mkdocs (strict: warnings fail the build)."""
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)
