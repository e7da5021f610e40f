"""``trio-am repl``: a REPL and a CLI for running machines (tools.md §3.1).

    trio-am repl [ADDR...] [-f FILE]... [-d DIR]... [flags]             the REPL
    trio-am repl [ADDR...] [-f FILE]... [-d DIR]... [flags] -- CMD ...  one command
    trio-am repl [ADDR...] [-f FILE]... [-d DIR]... -c "CMD ..." [-c ...]

Targets: addresses (``host:port`` or ``tcp://`` / ``ws://`` URLs), address files (``-f``,
one address a line) and directories (``-d``, every ``*.addr`` file: what ``serve_repl``
and ``AM_REPL_DIR`` write). Machines serve themselves with
:func:`trio_am.repl.serve_repl` or ``AM_REPL_ADDR=1``.

CLI mode runs the command(s) and exits: 0 when they succeeded, 1 on an error or a
canceled mutation (or no connection; with ``-a`` also a partial one), 2 on bad flags, 130
when interrupted. Output lines start with ``=> ``, errors (on stderr) with ``err> ``.

REPL mode reads commands at a prompt: history (``--history``), Tab completion of
commands, machine ids, states and arg names (with the ``readline`` module when there is
one), Ctrl+C cancels a running command (a ``when`` …), Ctrl+D or ``exit`` leaves.
Address files and directories are watched and lost connections retried (``-w``, on by
default). With stdin not a terminal, commands are read from it without a prompt, and the
exit code is 1 if any failed.

The REPL runs on Trio. In REPL mode Trio runs in a second thread and the main thread
reads lines, so that Ctrl+C at the prompt clears the line (as in a shell) and during a
command cancels it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import trio

from ..repl import COMMANDS, AddrSource, Repl, ReplError, open_repl

__all__ = ["DEFAULT_HISTORY", "build_parser", "main"]

T = TypeVar("T")

#: The history file of REPL mode (``--history`` changes it, ``--history ''`` turns it off).
DEFAULT_HISTORY = "~/.trio_am_repl_history"
#: Commands that need no connection.
_OFFLINE = frozenset({"help", "cheatsheet", "exit"})
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Usage(Exception):
    """Bad command-line flags (exit code 2)."""


class _Help(Exception):
    """``-h`` was given and printed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise _Help()


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return x


def _level(text: str) -> int:
    if text.isdigit() and 0 <= int(text) <= 5:
        return int(text)
    raise argparse.ArgumentTypeError(f"a log level is 0-5, not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``trio-am repl``'s own flags (what comes before ``--``)."""
    groups: dict[str, list[str]] = {}
    for c in COMMANDS.values():
        groups.setdefault(c.group, []).append(c.name)
    cmds = "\n".join(f"  {g}: {', '.join(names)}" for g, names in groups.items())
    p = _Parser(
        prog="trio-am repl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        description="A REPL and CLI for trio_am machines served over aRPC "
        "(serve_repl / AM_REPL_ADDR).",
        epilog=f"""commands (after --, in -c, or at the prompt; 'help CMD' tells more):
{cmds}

examples:
  trio-am repl localhost:7001                    the REPL, one machine
  trio-am repl -d tmp                            every tmp/*.addr
  trio-am repl -d tmp -- list -a Ready           one command, then exit
  trio-am repl -f w.addr -c "add . Foo --arg n --val 1"
  trio-am repl -d tmp -- group-add -p worker- Foo
  trio-am repl -d tmp -- when w1 Ready --timeout 10

exit codes: 0 ok; 1 an error, a canceled mutation or no connection; 2 bad flags;
130 interrupted.""",
    )
    p.add_argument("addrs", nargs="*", metavar="ADDR", help="host:port or an aRPC URL")
    p.add_argument(
        "-f",
        "--file",
        action="append",
        default=[],
        metavar="FILE",
        help="read addresses from FILE (one a line; repeatable)",
    )
    p.add_argument(
        "-d",
        "--dir",
        action="append",
        default=[],
        metavar="DIR",
        help="read every DIR/*.addr (repeatable)",
    )
    p.add_argument(
        "-w",
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="REPL mode: follow changes of -f / -d and retry lost connections "
        "for ever (default: on)",
    )
    p.add_argument(
        "-c",
        "--command",
        action="append",
        default=[],
        metavar="CMD",
        help="run CMD (a quoted command line) and exit; repeatable",
    )
    p.add_argument(
        "-a", "--req-all", action="store_true", help="CLI mode: fail unless every address connects"
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for the connections first (5)",
    )
    p.add_argument(
        "--call-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long a mutation waits for its answer (10)",
    )
    p.add_argument(
        "--am-dbg-addr", metavar="HOST:PORT", help="report the REPL's machines to trio-am-dbg"
    )
    p.add_argument(
        "--log-level",
        type=_level,
        default=0,
        metavar="0-5",
        help="log the REPL's machine to stderr (0 = nothing, 5 = everything)",
    )
    p.add_argument(
        "--history",
        default=DEFAULT_HISTORY,
        metavar="FILE",
        help=f"REPL mode: history file ({DEFAULT_HISTORY}; '' for none)",
    )
    p.add_argument(
        "--no-readline",
        action="store_true",
        help="REPL mode: plain input, no line editing or completion",
    )
    p.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="colour the => / err> marks (default: when stdout is a terminal)",
    )
    return p


def _err(text: str) -> None:
    print(f"err> {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``trio-am repl`` with ``argv`` (the arguments after ``repl``); return the exit
    code. Never raises for bad input: it prints ``err> …`` and returns non-zero."""
    args = list(sys.argv[1:] if argv is None else argv)
    cli_words: list[str] | None = None
    if "--" in args:
        i = args.index("--")
        args, cli_words = args[:i], args[i + 1 :]
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except _Help:
        return EXIT_OK
    except _Usage as exc:
        _err(str(exc))
        print(parser.format_usage().rstrip(), file=sys.stderr)
        return EXIT_USAGE
    commands: list[list[str]] = []
    if cli_words is not None:
        if not cli_words:
            _err("nothing after -- (give a command, e.g. -- list)")
            return EXIT_USAGE
        commands.append(cli_words)
    for text in ns.command:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            _err(f"-c {text!r}: {exc}")
            return EXIT_USAGE
        if not words:
            _err("-c needs a command")
            return EXIT_USAGE
        commands.append(words)
    sources = [AddrSource("addr", a) for a in ns.addrs]
    sources += [AddrSource("file", f) for f in ns.file]
    sources += [AddrSource("dir", d) for d in ns.dir]
    offline = bool(commands) and all(c[0] in _OFFLINE for c in commands)
    if not sources and not offline:
        _err("no machines to connect to: give ADDR, -f FILE or -d DIR")
        print(parser.format_usage().rstrip(), file=sys.stderr)
        return EXIT_USAGE
    color = ns.color if ns.color is not None else _want_color()
    options: dict[str, Any] = {
        "color": color,
        "connect_timeout": min(ns.timeout, 3.0),
        "call_timeout": ns.call_timeout,
        "log_level": ns.log_level,
        "dbg_addr": ns.am_dbg_addr,
    }
    try:
        if commands:
            return trio.run(_cli, sources, commands, ns, options, offline)
        return _Interactive(sources, ns, options).run()
    except BaseException as exc:
        if not _only_interrupts(exc):
            raise
        _err("interrupted")
        return EXIT_INTERRUPTED


def _only_interrupts(exc: BaseException) -> bool:
    """A KeyboardInterrupt, maybe inside exception groups (and nothing else)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def _want_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# ---------------------------------------------------------------------------- CLI mode
async def _cli(
    sources: list[AddrSource],
    commands: list[list[str]],
    ns: argparse.Namespace,
    options: dict[str, Any],
    offline: bool,
) -> int:
    try:
        receiver = trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
        sigs = receiver.__enter__()
    except RuntimeError:  # not the main thread: no signal handling
        return await _cli_commands(sources, commands, ns, options, offline)
    try:
        interrupted = False
        code = EXIT_ERROR
        async with trio.open_nursery() as nursery:

            async def on_signal() -> None:
                nonlocal interrupted
                async for _ in sigs:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

            async def work() -> None:
                nonlocal code
                code = await _cli_commands(sources, commands, ns, options, offline)
                nursery.cancel_scope.cancel()

            nursery.start_soon(on_signal)
            nursery.start_soon(work)
    finally:
        receiver.__exit__(None, None, None)
    if interrupted:
        _err("interrupted")
        return EXIT_INTERRUPTED
    return code


async def _cli_commands(
    sources: list[AddrSource],
    commands: list[list[str]],
    ns: argparse.Namespace,
    options: dict[str, Any],
    offline: bool,
) -> int:
    try:
        async with open_repl(sources, watch=False, allow_empty=offline, **options) as repl:
            if not offline and not await _check_connected(repl, ns):
                return EXIT_ERROR
            for words in commands:
                if not await repl.execute_argv(words):
                    return EXIT_ERROR
                if repl.exit_requested:
                    break
    except ReplError as exc:
        _err(str(exc))
        return EXIT_ERROR
    return EXIT_OK


async def _check_connected(repl: Repl, ns: argparse.Namespace) -> bool:
    """After the first wait: False (and why, printed) when the command cannot run."""
    st = await repl.wait_settled(ns.timeout)
    down = [c for c in repl.conns if not c.ready]
    if st.connected == 0:
        for c in down:
            repl.print_err(f"{c.url}: {c.why() or 'no answer'}")
        repl.print_err("not connected")
        return False
    if down:
        if ns.req_all:
            for c in down:
                repl.print_err(f"{c.url}: {c.why() or 'no answer'}")
            repl.print_err(f"partial connection ({st.connected} of {st.total}) and --req-all")
            return False
        print(
            f"=> partial connection ({st.connected} of {st.total}), executing",
            file=repl.err,
            flush=True,
        )
    return True


# ---------------------------------------------------------------------------- REPL mode
class _Interactive:
    """REPL mode: Trio (the connections, the commands) runs in a second thread; the
    main thread reads lines, so that Ctrl+C lands where a person expects it."""

    def __init__(
        self, sources: list[AddrSource], ns: argparse.Namespace, options: dict[str, Any]
    ) -> None:
        self.sources = sources
        self.ns = ns
        self.options = options
        try:
            self.tty = sys.stdin.isatty()
        except (OSError, ValueError):  # a closed stdin: reading it will say so
            self.tty = False
        self.repl: Repl | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.failure: BaseException | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._scopes: dict[int, trio.CancelScope] = {}
        self._done: dict[int, trio.Event] = {}
        self._cancel_upto = 0
        self._seq = 0
        self._matches: list[str] = []
        self._readline: Any = None
        self._read_failed = False

    # --- the Trio side -------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as exc:
            self.failure = exc
        finally:
            self._ready.set()

    async def _trio_main(self) -> None:
        watch = self.ns.watch
        async with open_repl(self.sources, watch=watch, allow_empty=watch, **self.options) as r:
            r.mach.add1("ReplMode")
            r.hints = self.tty
            self._stop = trio.Event()
            self.repl = r
            self.token = trio.lowlevel.current_trio_token()
            await r.wait_settled(self.ns.timeout)
            self._ready.set()
            await self._stop.wait()

    async def _run_line(self, line: str, seq: int) -> bool:
        assert self.repl is not None
        ok = False
        try:
            with trio.CancelScope() as scope:
                self._scopes[seq] = scope
                if seq <= self._cancel_upto:
                    scope.cancel()
                ok = await self.repl.execute(line)
            if scope.cancelled_caught:
                self.repl.print_err("canceled")
                ok = False
        finally:
            self._scopes.pop(seq, None)
            self._done.setdefault(seq, trio.Event()).set()
        return ok

    def _cancel(self, seq: int) -> None:
        self._cancel_upto = max(self._cancel_upto, seq)
        scope = self._scopes.get(seq)
        if scope is not None:
            scope.cancel()
        self._done.setdefault(seq, trio.Event())

    async def _wait_done(self, seq: int) -> None:
        await self._done.setdefault(seq, trio.Event()).wait()
        self._done.pop(seq, None)

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return trio.from_thread.run_sync(fn, *args, trio_token=self.token)

    # --- the main thread -------------------------------------------------------------
    def run(self) -> int:
        """Start, read and run lines until Ctrl+D / ``exit``; return the exit code."""
        thread = threading.Thread(target=self._thread_main, name="trio-am-repl", daemon=True)
        thread.start()
        self._ready.wait()
        if self.repl is None or self.token is None:
            err = self.failure
            if isinstance(err, ReplError):
                _err(str(err))
            else:
                _err(f"the REPL could not start: {err!r}")
            thread.join(5)
            return EXIT_ERROR
        failed = False
        try:
            self._setup_readline()
            self._banner()
            failed = self._loop()
        finally:
            self._save_history()
            try:
                trio.from_thread.run_sync(self._stop_trio, trio_token=self.token)
            except trio.RunFinishedError:
                pass
            thread.join(10)
        if self.failure is not None and not isinstance(self.failure, KeyboardInterrupt):
            _err(f"the REPL stopped: {self.failure!r}")
            return EXIT_ERROR
        if self._read_failed:
            return EXIT_ERROR
        return EXIT_ERROR if failed and not self.tty else EXIT_OK

    def _stop_trio(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _banner(self) -> None:
        repl = self.repl
        assert repl is not None
        st = self._call(repl.status)
        down = self._call(lambda: [(c.url, c.why()) for c in repl.conns if not c.ready])
        for url, why in down:
            if why:
                repl.print_err(f"{url}: {why}")
        if self.tty:
            tab = "Tab completes, " if self._readline is not None else ""
            print(
                f"trio-am repl: {st.connected} of {st.total} connected. "
                f"{tab}'help' lists the commands, Ctrl+D exits.",
                flush=True,
            )

    def _prompt(self) -> str:
        if not self.tty:
            return ""
        assert self.repl is not None
        st = self._call(self.repl.status)
        return f"trio-am {st.connected}/{st.total}> "

    def _read(self, prompt: str) -> str:
        try:
            if self.tty:
                return input(prompt)
            line = sys.stdin.readline()
        except (OSError, ValueError) as exc:  # stdin closed or unreadable
            _err(f"cannot read the input: {exc}")
            self._read_failed = True
            raise EOFError from None
        if not line:
            raise EOFError
        return line

    def _loop(self) -> bool:
        """Read and run lines; True when a command failed."""
        failed = False
        while True:
            try:
                try:
                    line = self._read(self._prompt())
                except EOFError:
                    if self.tty:
                        print(flush=True)
                    return failed
                if not line.strip():
                    continue
                if not self.run_line(line):
                    failed = True
                if self._call(lambda: self.repl is not None and self.repl.exit_requested):
                    return failed
            except KeyboardInterrupt:
                print(flush=True)  # Ctrl+C at the prompt: a fresh line
            except trio.RunFinishedError:
                _err("the REPL stopped")
                return True

    def run_line(self, line: str) -> bool:
        """Run one line in Trio; Ctrl+C cancels it (and waits until it stopped)."""
        self._seq += 1
        seq = self._seq
        try:
            return bool(trio.from_thread.run(self._run_line, line, seq, trio_token=self.token))
        except KeyboardInterrupt:
            while True:
                try:
                    self._call(self._cancel, seq)
                    trio.from_thread.run(self._wait_done, seq, trio_token=self.token)
                    return False
                except KeyboardInterrupt:
                    continue

    # --- readline ------------------------------------------------------------------
    def _setup_readline(self) -> None:
        if not self.tty or self.ns.no_readline:
            return
        try:
            import readline
        except ImportError:  # pragma: no cover - depends on the Python build
            return
        self._readline = readline
        readline.set_completer_delims(" \t\n")
        if "libedit" in (readline.__doc__ or ""):  # pragma: no cover - macOS
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")
            readline.parse_and_bind("set show-all-if-ambiguous on")
        readline.set_completer(self._complete)
        readline.set_history_length(1000)
        path = self._history_path()
        if path is not None and path.is_file():
            try:
                readline.read_history_file(str(path))
            except OSError as exc:
                _err(f"cannot read the history {str(path)!r}: {exc}")

    def _history_path(self) -> Path | None:
        h = self.ns.history
        return Path(h).expanduser() if h else None

    def _save_history(self) -> None:
        rl = self._readline
        path = self._history_path()
        if rl is None or path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            rl.write_history_file(str(path))
        except OSError as exc:
            _err(f"cannot write the history {str(path)!r}: {exc}")

    def _complete(self, text: str, state: int) -> str | None:
        rl = self._readline
        if state == 0:
            try:
                before = rl.get_line_buffer()[: rl.get_endidx()]
                assert self.repl is not None
                found = self._call(self.repl.complete, before)
                # Python's readline appends nothing to a unique match: add the space
                self._matches = [m if m.endswith("/") else m + " " for m in found]
            except Exception:
                self._matches = []
        return self._matches[state] if state < len(self._matches) else None


def _entry(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - python -m
    sys.exit(main(None if argv is None else list(argv)))


if __name__ == "__main__":  # pragma: no cover
    _entry()
