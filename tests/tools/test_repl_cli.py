"""``trio-am repl`` flags, CLI mode and exit codes, calling ``main(argv)`` in process
(against the RP server, one process for the module)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.rp import rp_server
from trio_am.cli.repl import main

# exit codes of CLI mode
OK, ERROR, USAGE = 0, 1, 2


@pytest.fixture(scope="module")
def rp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    d = tmp_path_factory.mktemp("rp")
    with rp_server(d, "--ids", "cli-1,cli-2", "--parent", "boss") as urls:
        yield d, urls


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out.splitlines(), cap.err.splitlines()


def test_one_command_after_the_double_dash(rp: tuple[Path, list[str]], capsys) -> None:
    d, urls = rp
    assert run(capsys, "-d", str(d), "--", "set", "cli-1", "Start") == (OK, [], [])
    assert run(capsys, "-d", str(d), "--", "mach", "cli-1") == (OK, ["=> (Start:1)"], [])
    # an address, an address file, a directory: the same machine
    assert run(capsys, urls[0], "--", "mach", ".")[1] == ["=> (Start:1)"]
    assert run(capsys, "-f", str(d / "cli-1-repl.addr"), "--", "mach")[1] == ["=> (Start:1)"]
    code, out, _ = run(capsys, "-d", str(d), "--", "list", "-P", "boss", "--no-states")
    assert (code, out) == (OK, ["=> 1. cli-1 t1", "=>    CS:", "=> 2. cli-2 t1", "=>    CS:"])


def test_c_runs_commands_in_order_and_stops_at_a_failure(rp, capsys) -> None:
    d, urls = rp
    # the form: one machine, no MACH needed
    code, out, err = run(capsys, urls[1], "-c", "set Start", "-c", "add Foo", "-c", "mach")
    assert (code, out, err) == (OK, ["=> (Start:1 Foo:1)"], [])
    code, out, err = run(
        capsys, "-d", str(d), "-c", "remove cli-2 Foo", "-c", "add cli-2 Bar", "-c", "mach cli-2"
    )
    assert (code, out, err) == (ERROR, ["=> Canceled"], [])  # mach never ran
    code, out, _ = run(capsys, "-d", str(d), "-c", "exit", "-c", "add cli-2 Nope")
    assert (code, out) == (OK, [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "err> unrecognized arguments: --bogus"),
        (["--timeout", "-1", "h:1", "--", "list"], "err> argument --timeout: must be a positive"),
        (
            ["--log-level", "9", "h:1", "--", "list"],
            "err> argument --log-level: a log level is 0-5",
        ),
        (["--", "list"], "err> no machines to connect to: give ADDR, -f FILE or -d DIR"),
        ([], "err> no machines to connect to"),
        (["h:1", "--"], "err> nothing after -- (give a command, e.g. -- list)"),
        (["h:1", "-c", ""], "err> -c needs a command"),
        (["h:1", "-c", "add 'x"], 'err> -c "add \'x": No closing quotation'),
    ],
)
def test_bad_flags_exit_2(capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == USAGE
    assert out == []
    assert err[0].startswith(message)
    assert not any("Traceback" in line for line in err)


def test_help_needs_no_connection(capsys) -> None:
    code, out, err = run(capsys, "--", "help")
    assert code == OK and err == []
    assert out[0].startswith("Commands")
    code, out, _ = run(capsys, "-c", "help list", "-c", "cheatsheet")
    assert code == OK and out[0].startswith("usage: list")
    assert main(["-h"]) == OK
    assert "exit codes:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["nonsense", "--", "list"],
            "err> bad address 'nonsense': URL 'tcp://nonsense' needs a port",
        ),
        (["ftp://h:1", "--", "list"], "err> bad address 'ftp://h:1'"),
        (["-d", "/no/such/dir", "--", "list"], "err> no such directory: '/no/such/dir'"),
        (["-f", "/no/such.addr", "--", "list"], "err> no such file: '/no/such.addr'"),
        (["--am-dbg-addr", "nowhere", "h:1", "--", "list"], "err> bad debugger address"),
    ],
)
def test_bad_targets_exit_1(capsys, argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (ERROR, [])
    assert err[0].startswith(message), err


def test_empty_directory_and_server_gone(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "-d", str(tmp_path), "--", "list")
    assert code == ERROR and err == [f"err> no addresses found in {tmp_path}"]
    code, out, err = run(capsys, "127.0.0.1:1", "--", "list")
    assert (code, out) == (ERROR, [])
    assert err[0].startswith("err> tcp://127.0.0.1:1: ")
    assert err[-1] == "err> not connected"


def test_partial_connection(rp, capsys) -> None:
    d, urls = rp
    code, out, err = run(capsys, urls[0], "127.0.0.1:1", "--", "mach", "cli-1")
    assert code == OK and out and out[0].startswith("=> (Start:1")
    assert err == ["=> partial connection (1 of 2), executing"]
    code, out, err = run(capsys, "-a", urls[0], "127.0.0.1:1", "--", "mach", "cli-1")
    assert (code, out) == (ERROR, [])
    assert err[-1] == "err> partial connection (1 of 2) and --req-all"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["frob"], "err> unknown command 'frob' (help lists the commands)"),
        (["add", "cli-3", "Foo"], "err> unknown machine 'cli-3' (known: cli-1, cli-2)"),
        (["add", "cli-1", "Nope"], "err> unknown state Nope in cli-1"),
        (["add", "cli-1", "Foo", "--arg", "a"], "err> 1 --arg but 0 --val"),
        (["when", "cli-1", "Bar", "--timeout", "0.05"], "err> timed out after 0.05s"),
        (["when-time", "cli-1", "-s", "Foo", "-t", "x"], "err> when-time: argument -t/--time"),
        (["list", "-r", "("], "err> bad filter"),
        (["group-add", "-p", "zz", "Foo"], "err> no connected machine matches"),
        (["script", "/no/such.repl"], "err> no such file"),
    ],
)
def test_command_errors_exit_1(rp, capsys, words: list[str], message: str) -> None:
    d, _ = rp
    code, out, err = run(capsys, "-d", str(d), "--", *words)
    assert code == ERROR
    assert err[0].startswith(message), err
    assert not any("Traceback" in line for line in out + err)


def test_repl_mode_reads_commands_from_stdin(rp, capsys, monkeypatch) -> None:
    d, _ = rp
    lines = "set cli-2 Start Foo\n\nmach cli-2\n# a comment\nmach cli-9\ntime cli-2 --sum\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    code, out, err = run(capsys, "-d", str(d), "--history", "")
    assert code == ERROR  # one command failed
    assert len(out) == 2
    m = re.fullmatch(r"=> \(Start:(\d+) Foo:(\d+)\)", out[0])
    assert m is not None, out
    assert out[1] == f"=> {int(m.group(1)) + int(m.group(2))}"
    assert err == ["err> unknown machine 'cli-9' (known: cli-1, cli-2)"]
    monkeypatch.setattr("sys.stdin", io.StringIO("mach cli-2\nexit\nmach cli-9\n"))
    code, out2, err = run(capsys, "-d", str(d))
    assert (code, out2, err) == (OK, out[:1], [])


def test_repl_mode_errors(rp, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(capsys, "nonsense")
    assert (code, out) == (ERROR, [])
    assert err == [
        "err> bad address 'nonsense': URL 'tcp://nonsense' needs a port "
        "(expected host:port or a URL)"
    ]
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr("sys.stdin", closed)
    code, out, err = run(capsys, "-d", str(rp[0]))
    assert code == ERROR
    assert err == ["err> cannot read the input: I/O operation on closed file"]
