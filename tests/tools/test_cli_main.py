"""The ``trio-am`` dispatcher: commands, pass-through of arguments, exit codes, no
tracebacks; the console script and ``python -m trio_am.cli``."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from trio_am.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = Path(sys.executable).parent / "trio-am"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def fake(monkeypatch: pytest.MonkeyPatch, name: str, fn: object) -> None:
    mod = types.ModuleType(name)
    mod.main = fn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, mod)


def test_help_and_version(capsys) -> None:
    code, out, err = run(capsys, "--help")
    assert (code, err) == (0, "")
    for name in ("gen", "vis", "repl", "dbg"):
        assert f"  {name} " in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("trio-am ")


def test_no_or_unknown_command(capsys) -> None:
    code, out, err = run(capsys)
    assert (code, out) == (2, "") and "a command is needed" in err
    code, out, err = run(capsys, "frobnicate", "x")
    assert (code, out) == (2, "") and "unknown command 'frobnicate'" in err and "usage:" in err


def test_repl_gets_its_arguments_untouched(capsys, monkeypatch) -> None:
    seen: list[list[str]] = []

    def repl_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake(monkeypatch, COMMANDS["repl"][0], repl_main)
    argv = ["-d", "/tmp/x", "--", "add", "m", "Foo", "--arg", "k", "--val", "v", "-h"]
    assert run(capsys, "repl", *argv)[0] == 7
    assert seen == [argv]


def test_missing_repl_is_a_clear_error(capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "trio_am.cli.repl", None)  # as if the file were absent
    code, out, err = run(capsys, "repl", "localhost:1")
    assert (code, out) == (2, "")
    assert (
        err.strip()
        == "trio-am: 'repl' is not available in this installation (trio_am.cli.repl is missing)"
    )


def test_subcommand_failures_become_exit_codes(capsys, monkeypatch) -> None:
    def boom(argv: list[str]) -> int:
        raise RuntimeError("kaput")

    def interrupted(argv: list[str]) -> int:
        raise KeyboardInterrupt

    def exits(argv: list[str]) -> int:
        raise SystemExit(3)

    def no_main(argv: list[str]) -> int:
        return 0

    name = COMMANDS["repl"][0]
    fake(monkeypatch, name, boom)
    code, _o, err = run(capsys, "repl")
    assert code == 1 and err == "trio-am: internal error: RuntimeError: kaput\n"
    fake(monkeypatch, name, interrupted)
    assert run(capsys, "repl")[0] == 130
    fake(monkeypatch, name, exits)
    assert run(capsys, "repl")[0] == 3
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))  # no main()
    code, _o, err = run(capsys, "repl")
    assert code == 2 and "main is missing" in err


def test_gen_and_vis_dispatch(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "gen", "states", "-n", "X", "-s", "Foo", "--stdout")
    assert code == 0 and "class XStates(am.States):" in out
    code, _o, err = run(capsys, "gen", "states", "-n", "X")
    assert code == 2 and "no states" in err
    code, _o, err = run(capsys, "vis", "inspect", str(tmp_path / "none.amdbg"))
    assert code == 1 and "no such file" in err
    code, _o, err = run(capsys, "vis", "render")
    assert code == 2 and "required" in err


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AM_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.mark.parametrize("how", ["script", "module"])
def test_entry_points(how: str, tmp_path: Path) -> None:
    if how == "script":
        if not SCRIPT.exists():
            pytest.skip("trio-am console script not installed in this environment")
        cmd = [str(SCRIPT)]
    else:
        cmd = [sys.executable, "-m", "trio_am.cli"]
    for args, code, where, words in [
        (["--help"], 0, "out", "commands:"),
        (["gen", "states", "--name", "X"], 2, "err", "no states"),
        (["gen", "states", "--bogus"], 2, "err", "unrecognized arguments"),
        (["vis", "tx", "nope.amdbg", "mach://a?i=1"], 1, "err", "no such file"),
        (["nope"], 2, "err", "unknown command"),
    ]:
        proc = subprocess.run(
            [*cmd, *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == code, (args, proc.stderr)
        assert words in (proc.stdout if where == "out" else proc.stderr), (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_dbg_dispatch(capsys) -> None:
    code, out, _ = run(capsys, "dbg", "--help")
    assert code == 0 and "trio-am-dbg" in out


def test_closed_stdout_is_quiet(tmp_path: Path) -> None:
    """``trio-am ... | head -1``: the writer meets a closed pipe; no traceback."""
    ids = ",".join(f"m{i}" for i in range(40))  # far more than a pipe buffer holds
    cmd = [sys.executable, "-m", "trio_am.cli", "gen", "grafana", "-i", ids, "-n", "N", "-s", "S"]
    with subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.stdout.readline().strip() == b"{"
            proc.stdout.close()  # like head: read a line, go away
            err = proc.stderr.read().decode()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 1
    assert err == ""  # no traceback, no "Exception ignored", no error line
