"""``trio-am``: the command-line tools of trio_am (tools.md §3).

    trio-am gen states --name MyMach --states SPEC [...]   a typed states module
    trio-am gen grafana --ids a,b --name N --source S      a Grafana dashboard
    trio-am vis schema|render|tx|inspect ...               diagrams (mermaid, D2)
    trio-am repl ...                                       REPL / CLI for running machines
    trio-am dbg ...                                        the debugger (``trio-am-dbg``)

Exit codes: 0 success, 1 an error (a file that exists, a recording that cannot be read,
a machine that is not there...), 2 bad usage (unknown command or flag, bad SPEC).
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "main"]

#: Subcommands: name -> (module with ``main(argv) -> int``, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "gen": ("trio_am.cli.gen", "generate typed states modules and Grafana dashboards"),
    "vis": ("trio_am.cli.vis", "diagrams of schemas, machine graphs and transitions"),
    "repl": ("trio_am.cli.repl", "a REPL and CLI for machines served over aRPC"),
    "dbg": ("trio_am.dbg.cli", "the debugger (same as trio-am-dbg)"),
}

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _usage() -> str:
    lines = ["usage: trio-am [-h] [--version] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<6} {text}" for name, (_mod, text) in COMMANDS.items()]
    lines += ["", "Run 'trio-am COMMAND -h' for a command's flags."]
    return "\n".join(lines)


def _err(msg: str) -> None:
    print(f"trio-am: {msg}", file=sys.stderr)


def _version() -> str:
    from trio_am import __version__

    return str(__version__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-am`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit
    code. The arguments after the command go to it untouched."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        _err("a command is needed")
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    cmd, rest = args[0], args[1:]
    if cmd in ("-h", "--help", "help"):
        print(_usage())
        return EXIT_OK
    if cmd in ("-V", "--version"):
        print(f"trio-am {_version()}")
        return EXIT_OK
    if cmd not in COMMANDS:
        _err(f"unknown command {cmd!r} (expected {', '.join(COMMANDS)})")
        print(_usage(), file=sys.stderr)
        return EXIT_USAGE
    module = COMMANDS[cmd][0]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if missing == module:
            _err(f"'{cmd}' is not available in this installation ({module} is missing)")
        else:
            _err(f"'{cmd}' cannot start: {exc}")
        return EXIT_USAGE
    entry: Callable[[list[str]], int] | None = getattr(mod, "main", None)
    if entry is None:
        _err(f"'{cmd}' is not available in this installation ({module}.main is missing)")
        return EXIT_USAGE
    return run(entry, rest)


def run(entry: Callable[[list[str]], int], argv: list[str]) -> int:
    """Call a subcommand's ``main``: its return value, argparse's exit code, 130 on
    Ctrl+C; an unexpected exception becomes a one-line error (exit 1)."""
    try:
        code = entry(argv)
    except SystemExit as exc:
        c = exc.code
        if c is None:
            return EXIT_OK
        if isinstance(c, int):
            return c
        _err(str(c))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``| head``): no second error when Python flushes stdout
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except Exception as exc:  # never a traceback for the user
        _err(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    return int(code or 0)
