"""The REPL's commands (tools.md §3.1): their parsers and what they do.

Every command parses its words with its own :class:`argparse.ArgumentParser` (errors
become :class:`ReplError`, help goes to the REPL's output) and returns True on success,
False on an error or a canceled mutation. ``MACH`` is a machine id or ``.`` (the first
connected machine); it may be left out when only one machine is known.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import attrs
import trio

from .._core._types import Result
from .._errors import Error
from ..rpc.errors import ConnectionLostError, RpcError
from ._addrs import AddrSource, normalize_url, unique
from ._errors import ReplError
from ._filters import ListFilters

if TYPE_CHECKING:
    from ..rpc.netmachine import NetMachine
    from ._repl import Conn, Repl

__all__ = ["CHEATSHEET", "COMMANDS", "GROUPS", "Command", "build_parser", "run_command"]

#: Command groups, in the order ``help`` lists them.
GROUPS: Final = ("Mutations", "Waiting", "Checking", "REPL")

CHEATSHEET: Final = """\
Cheatsheet (MACH is a machine id, or . for the first connected one)

  list                          machines: N. ID tTIME, then C/D (dis)connected, R/S Ready/Start
  list -p worker- -a Ready      ... whose id starts with worker- and with Ready active
  mach MACH --all               active (and inactive) states with ticks
  add MACH Foo Bar              add states (prints Canceled / Queued unless executed)
  add . Foo --arg id --val 42   ... with args (string values)
  remove MACH Foo               remove states
  group-add -r '^w-.*' Foo      add Foo to every connected machine matching the filters
  when MACH Foo                 wait until Foo is active, print its tick (Ctrl+C cancels)
  when-not MACH Foo             wait until Foo is inactive
  when-time MACH -s Foo -t 5    wait until Foo's tick is >= 5
  watch MACH Foo -n 3           print the states on each of the next 3 changes of Foo
  time MACH --sum               machine time
  inspect MACH                  states with relations
  status                        connection counts
  connect [ADDR]                reconnect, or connect to one more address
  script FILE                   run commands from a file
  help [CMD]                    commands, or one command's usage
  exit (or Ctrl+D)              leave"""


class _Exit(Exception):
    """argparse wanted to exit (``-h`` was given)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises :class:`ReplError` and writes help to the REPL."""

    def __init__(self, write: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(allow_abbrev=False, exit_on_error=False, **kwargs)
        self._write = write

    def error(self, message: str) -> NoReturn:
        raise ReplError(f"{self.prog}: {message}", usage=True)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._write(message)
        raise _Exit(status)

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            self._write(message)


Runner = Callable[["Repl", argparse.Namespace], Awaitable[bool]]


@attrs.frozen
class Command:
    """One REPL command.

    Attributes:
        name: what is typed.
        group: one of :data:`GROUPS`.
        summary: one line for ``help``.
        usage: the usage line.
        build: adds the arguments to a parser.
        run: does the work; returns False on an error or a canceled mutation.
        complete: how positional words complete: ``"mach-states"``, ``"mach"``,
            ``"states"`` (of every machine), ``"commands"``, ``"file"`` or ``""``.
        example: an example line, or "".
    """

    name: str
    group: str
    summary: str
    usage: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Runner
    complete: str = ""
    example: str = ""


def build_parser(
    cmd: Command, write: Callable[[str], None] | None = None
) -> argparse.ArgumentParser:
    """A fresh parser of ``cmd`` whose messages go to ``write``."""
    p = _Parser(
        write or (lambda s: None),
        prog=cmd.name,
        usage=cmd.usage,
        description=cmd.summary,
        epilog=f"example: {cmd.example}" if cmd.example else None,
    )
    cmd.build(p)
    return p


# ---------------------------------------------------------------------------- arg types
def _nonneg_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _pos_int(text: str) -> int:
    n = _nonneg_int(text)
    if n == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return n


def _pos_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return x


# ---------------------------------------------------------------------------- helpers
def _msg(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    mid = getattr(exc, "machine_id", None)
    if mid and text.startswith(f"[{mid}] "):
        text = text[len(mid) + 3 :]
    return text


def _mirror(conn: Conn) -> NetMachine:
    assert conn.client is not None
    return conn.client.mach


def _mid(conn: Conn) -> str:
    return conn.machine_id or conn.url


def _resolve(repl: Repl, words: Sequence[str], *, ready: bool = True) -> tuple[Conn, list[str]]:
    """``[MACH] STATES…``: the machine and the rest. MACH may be left out when only one
    machine is known."""
    if not words:
        ids = repl.known_ids()
        if len(ids) == 1:
            return repl.find(ids[0], ready=ready), []
        if not ids:
            repl.find(".", ready=ready)  # raises the right "not connected" error
        raise ReplError(f"which machine? (known: {', '.join(ids)})", usage=True)
    first = words[0]
    ids = repl.known_ids()
    if first == "." or first in ids:
        return repl.find(first, ready=ready), list(words[1:])
    if len(ids) == 1:
        return repl.find(ids[0], ready=ready), list(words)
    repl.find(first, ready=ready)  # raises: unknown machine
    raise AssertionError("unreachable")  # pragma: no cover


def _states(conn: Conn, states: Sequence[str], *, allow_empty: bool = False) -> list[str]:
    names = _mirror(conn).state_names
    want = unique(states)
    if not want and not allow_empty:
        raise ReplError("no states given", usage=True)
    bad = [s for s in want if s not in names]
    if bad:
        s = "s" if len(bad) > 1 else ""
        raise ReplError(
            f"unknown state{s} {', '.join(bad)} in {_mid(conn)} (has: {', '.join(names)})"
        )
    return want


def _mut_args(ns: argparse.Namespace) -> dict[str, Any] | None:
    names: list[str] = ns.arg or []
    vals: list[str] = ns.val or []
    if len(names) != len(vals):
        raise ReplError(f"{len(names)} --arg but {len(vals)} --val: give them in pairs", usage=True)
    if not names:
        return None
    out: dict[str, Any] = {}
    for k, v in zip(names, vals, strict=True):
        if not k:
            raise ReplError("an empty --arg name", usage=True)
        if k in out:
            raise ReplError(f"--arg {k} given twice", usage=True)
        out[k] = v
    return out


def _filters(ns: argparse.Namespace, **extra: Any) -> ListFilters:
    try:
        return ListFilters(
            active=tuple(ns.active),
            inactive=tuple(ns.inactive),
            mtime_states=tuple(ns.mtime_states),
            mtime_min=ns.mtime_min,
            mtime_max=ns.mtime_max,
            parent=ns.parent,
            id_regexp=ns.id_regexp,
            id_partial=ns.id_partial,
            id_prefix=ns.id_prefix,
            id_suffix=ns.id_suffix,
            limit=ns.limit,
            start=ns.start,
            **extra,
        )
    except Exception as exc:  # re.error, ValueError
        raise ReplError(f"bad filter: {exc}", usage=True) from None


async def _call(conn: Conn, repl: Repl, fn: Callable[[], Awaitable[Result]]) -> Result:
    mid = _mid(conn)
    try:
        return await fn()
    except ConnectionLostError as exc:
        raise ReplError(f"{mid}: connection lost: {_msg(exc)}") from None
    except RpcError as exc:
        raise ReplError(f"{mid}: {_msg(exc)}") from None
    except trio.TooSlowError:
        raise ReplError(f"{mid}: no answer within {repl.call_timeout:g}s") from None
    except Error as exc:  # a state unknown to the mirror, a disposed mirror
        raise ReplError(f"{mid}: {_msg(exc)}") from None


def _result_name(res: Result) -> str:
    return ("Executed", "Canceled", "Queued")[int(res)]


async def _wait_on(
    repl: Repl,
    conn: Conn,
    what: str,
    fn: Callable[[], Awaitable[Any]],
    timeout: float | None,
    pending: bool = True,
) -> None:
    """Run ``fn`` (a wait on the mirror) until it returns; fail if the link goes down
    or ``timeout`` passes first. ``pending``: it will really wait (worth a hint)."""
    client = conn.client
    assert client is not None
    if pending and repl.hints:
        repl.print(f"waiting for {what} (Ctrl+C cancels)")
    outcome: dict[str, Any] = {}
    with trio.move_on_after(timeout if timeout is not None else float("inf")) as timer:
        async with trio.open_nursery() as nursery:

            async def main() -> None:
                try:
                    await fn()
                    outcome["done"] = True
                except Error as exc:  # the mirror was disposed: the connection closed
                    outcome["lost"] = _msg(exc)
                nursery.cancel_scope.cancel()

            async def link() -> None:
                try:
                    await client.rpc.when_not1("Ready")
                except Error:
                    pass
                outcome.setdefault("lost", "disconnected")
                nursery.cancel_scope.cancel()

            nursery.start_soon(main)
            nursery.start_soon(link)
    if outcome.get("done"):
        return
    if "lost" in outcome:
        raise ReplError(f"{_mid(conn)}: {outcome['lost']} while waiting for {what}")
    assert timer.cancelled_caught
    raise ReplError(f"timed out after {timeout:g}s waiting for {what}")


# ---------------------------------------------------------------------------- builders
def _b_mutation(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH STATES")
    _b_args(p)


def _b_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arg", action="append", metavar="NAME", help="argument name (repeatable)")
    p.add_argument("--val", action="append", metavar="VALUE", help="argument value (repeatable)")


def _b_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters")
    A = "append"
    g.add_argument(
        "-a", "--active", action=A, default=[], metavar="STATE", help="state active (repeatable)"
    )
    g.add_argument(
        "-i",
        "--inactive",
        action=A,
        default=[],
        metavar="STATE",
        help="state inactive (repeatable)",
    )
    g.add_argument(
        "-m",
        "--mtime-states",
        action=A,
        default=[],
        metavar="STATE",
        help="machine time only from these states (repeatable)",
    )
    g.add_argument("-t", "--mtime-min", type=_nonneg_int, metavar="N", help="min machine time")
    g.add_argument("-T", "--mtime-max", type=_nonneg_int, metavar="N", help="max machine time")
    g.add_argument("-P", "--parent", metavar="ID", help="parent machine id")
    g.add_argument("-r", "--id-regexp", metavar="RE", help="regexp searched in the id")
    g.add_argument("-I", "--id-partial", metavar="TEXT", help="substring of the id")
    g.add_argument("-p", "--id-prefix", metavar="TEXT", help="prefix of the id")
    g.add_argument("-s", "--id-suffix", metavar="TEXT", help="suffix of the id")
    g.add_argument("-l", "--limit", type=_pos_int, metavar="N", help="at most N machines")
    g.add_argument(
        "-f", "--from", dest="start", type=_nonneg_int, default=0, metavar="N", help="skip N"
    )


def _b_group(p: argparse.ArgumentParser) -> None:
    p.add_argument("states", nargs="*", metavar="STATES")
    _b_filters(p)
    _b_args(p)


def _b_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH STATES")
    _b_timeout(p)


def _b_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=_pos_float, metavar="SECONDS", help="give up after this long")


def _b_when_time(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH")
    p.add_argument("-s", "--state", action="append", default=[], metavar="STATE", help="state")
    p.add_argument(
        "-t", "--time", action="append", default=[], type=_nonneg_int, metavar="TICK", help="tick"
    )
    _b_timeout(p)


def _b_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH STATES")
    p.add_argument("-n", "--count", type=_pos_int, metavar="N", help="stop after N changes")
    _b_timeout(p)


def _b_mach(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH")
    p.add_argument("--all", action="store_true", help="also the inactive states")


def _b_time(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH STATES")
    p.add_argument("--sum", action="store_true", help="the sum of the ticks")


def _b_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("words", nargs="*", metavar="MACH STATES")


def _b_list(p: argparse.ArgumentParser) -> None:
    _b_filters(p)
    B = argparse.BooleanOptionalAction
    p.add_argument("-z", "--states", action=B, default=True, help="print states (default)")
    p.add_argument("-Z", "--states-all", action="store_true", help="also inactive states")
    p.add_argument("-d", "--disconn", action=B, default=True, help="show disconnected (default)")


def _b_none(p: argparse.ArgumentParser) -> None:
    pass


def _b_script(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")


def _b_connect(p: argparse.ArgumentParser) -> None:
    p.add_argument("addrs", nargs="*", metavar="ADDR")


def _b_help(p: argparse.ArgumentParser) -> None:
    p.add_argument("command", nargs="?", metavar="CMD")


# ---------------------------------------------------------------------------- runners
def _mutation(op: str) -> Runner:
    async def run(repl: Repl, ns: argparse.Namespace) -> bool:
        conn, words = _resolve(repl, ns.words)
        states = _states(conn, words)
        args = _mut_args(ns)
        mach = _mirror(conn)
        if op == "add":
            res = await _call(conn, repl, lambda: mach.add_remote(states, args))
        elif op == "remove":
            res = await _call(conn, repl, lambda: mach.remove_remote(states, args))
        else:
            res = await _call(conn, repl, lambda: mach.set_remote(states, args))
        if res != Result.EXECUTED:
            repl.print(_result_name(res))
        return res != Result.CANCELED

    return run


def _group_mutation(op: str) -> Runner:
    async def run(repl: Repl, ns: argparse.Namespace) -> bool:
        states = unique(ns.states)
        if not states:
            raise ReplError("no states given", usage=True)
        args = _mut_args(ns)
        conns = repl.select(_filters(ns, skip_disconnected=True))
        targets = [c for c in conns if all(_mirror(c).has1(s) for s in states)]
        if not targets:
            if conns:
                raise ReplError(
                    f"none of the {len(conns)} matching machines has all of {', '.join(states)}"
                )
            raise ReplError("no connected machine matches")
        counts = {"Executed": 0, "Queued": 0, "Canceled": 0}
        errors: list[str] = []

        async def one(c: Conn) -> None:
            mach = _mirror(c)
            fn = mach.add_remote if op == "add" else mach.remove_remote
            try:
                res = await _call(c, repl, lambda: fn(states, args))
            except ReplError as exc:
                errors.append(str(exc))
                return
            counts[_result_name(res)] += 1

        async with trio.open_nursery() as nursery:
            for c in targets:
                nursery.start_soon(one, c)
        lines = [f"{k + ':':<10} {v}" for k, v in counts.items()]
        if errors:
            lines.append(f"{'Failed:':<10} {len(errors)}")
        repl.print("\n".join(lines))
        for e in errors:
            repl.print_err(e)
        return not errors and counts["Canceled"] == 0

    return run


def _when(active: bool) -> Runner:
    async def run(repl: Repl, ns: argparse.Namespace) -> bool:
        conn, words = _resolve(repl, ns.words)
        states = _states(conn, words)
        mach = _mirror(conn)
        waiter = mach.when(states) if active else mach.when_not(states)
        what = f"{_mid(conn)} {'' if active else 'not '}{' '.join(states)}"

        async def wait() -> None:
            await waiter

        try:
            await _wait_on(repl, conn, what, wait, ns.timeout, not waiter.done)
        finally:
            waiter.close()
        repl.print(" ".join(str(mach.tick(s)) for s in states))
        return True

    return run


async def _run_when_time(repl: Repl, ns: argparse.Namespace) -> bool:
    conn, words = _resolve(repl, ns.words)
    if words:
        raise ReplError(f"unexpected {' '.join(words)} (states go with -s)", usage=True)
    if not ns.state:
        raise ReplError("no states (-s STATE -t TICK)", usage=True)
    if len(ns.state) != len(ns.time):
        raise ReplError(
            f"{len(ns.state)} states (-s) but {len(ns.time)} ticks (-t): give them in pairs",
            usage=True,
        )
    states = _states(conn, ns.state)
    if len(states) != len(ns.state):
        raise ReplError("a state is given twice", usage=True)
    mach = _mirror(conn)
    waiter = mach.when_time(states, ns.time)
    what = f"{_mid(conn)} " + " ".join(f"{s}>={t}" for s, t in zip(states, ns.time, strict=True))

    async def wait() -> None:
        await waiter

    try:
        await _wait_on(repl, conn, what, wait, ns.timeout, not waiter.done)
    finally:
        waiter.close()
    repl.print(_ticks(mach.time(states)))
    return True


def _ticks(time: Sequence[int]) -> str:
    return "[" + " ".join(str(t) for t in time) + "]"


async def _run_watch(repl: Repl, ns: argparse.Namespace) -> bool:
    conn, words = _resolve(repl, ns.words)
    mach = _mirror(conn)
    states = _states(conn, words, allow_empty=True) or list(mach.state_names)
    last = tuple(mach.time(states))
    repl.print(mach.string())
    seen = 0

    async def changes() -> None:
        nonlocal last, seen
        while ns.count is None or seen < ns.count:

            def differs(clock: dict[str, int], ref: tuple[int, ...] = last) -> bool:
                return tuple(clock.get(s, 0) for s in states) != ref

            await mach.when_query(differs)
            last = tuple(mach.time(states))
            seen += 1
            repl.print(mach.string())

    what = f"changes of {_mid(conn)}"
    try:
        await _wait_on(repl, conn, what, changes, ns.timeout)
    except ReplError:
        if ns.timeout is not None and ns.count is None and conn.ready:
            return True  # watching until the timeout is the plan
        raise
    return True


async def _run_mach(repl: Repl, ns: argparse.Namespace) -> bool:
    conn, words = _resolve(repl, ns.words, ready=False)
    if words:
        raise ReplError(f"mach takes one machine, not {' '.join(words)}", usage=True)
    mach = _mirror(conn)
    repl.print(mach.string_all() if ns.all else mach.string())
    return True


async def _run_time(repl: Repl, ns: argparse.Namespace) -> bool:
    conn, words = _resolve(repl, ns.words, ready=False)
    states = _states(conn, words, allow_empty=True)
    t = _mirror(conn).time(states or None)
    repl.print(str(sum(t)) if ns.sum else _ticks(t))
    return True


async def _run_inspect(repl: Repl, ns: argparse.Namespace) -> bool:
    conn, words = _resolve(repl, ns.words, ready=False)
    states = _states(conn, words, allow_empty=True)
    mach = _mirror(conn)
    repl.print(f"mach://{_mid(conn)}\n\n" + mach.inspect(states or None).rstrip("\n"))
    return True


async def _run_list(repl: Repl, ns: argparse.Namespace) -> bool:
    filters = _filters(ns, skip_disconnected=not ns.disconn)
    conns = repl.select(filters)
    if not conns:
        repl.print("no machines" + (" match" if repl.conns else ""))
        return True
    for i, c in enumerate(conns, 1):
        mach = _mirror(c)
        text = ""
        if ns.states:
            text = mach.string_all() if ns.states_all else mach.string()
        flag = "C" if c.ready else "D"
        if mach.has1("Ready") and mach.is1("Ready"):
            flag += "R"
        elif mach.has1("Start") and mach.is1("Start"):
            flag += "S"
        snap = c.snapshot()
        t = snap.mtime(filters.mtime_states) if snap is not None else 0
        repl.print(f"{i}. {_mid(c)} t{t}\n   {flag}: {text}".rstrip())
    return True


async def _run_status(repl: Repl, ns: argparse.Namespace) -> bool:
    st = repl.status()
    repl.print(
        "\n".join(
            f"{k:<15} {v}"
            for k, v in (
                ("Connected:", st.connected),
                ("Connecting:", st.connecting),
                ("Disconnected:", st.disconnected),
                ("Total:", st.total),
            )
        )
    )
    return True


async def _run_script(repl: Repl, ns: argparse.Namespace) -> bool:
    from ._repl import MAX_SCRIPT_DEPTH

    if repl.script_depth >= MAX_SCRIPT_DEPTH:
        raise ReplError(f"scripts nested deeper than {MAX_SCRIPT_DEPTH}")
    path = Path(ns.file).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReplError(f"no such file: {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplError(f"cannot read {str(path)!r}: {exc}") from None
    repl.script_depth += 1
    try:
        for n, line in enumerate(lines, 1):
            if not await repl.execute(line):
                repl.print_err(f"script stopped at {path}:{n}: {line.strip()}")
                return False
            if repl.exit_requested:
                break
    finally:
        repl.script_depth -= 1
    return True


async def _run_connect(repl: Repl, ns: argparse.Namespace) -> bool:
    if ns.addrs:
        urls = [normalize_url(a) for a in ns.addrs]
        known = {s.value for s in repl.sources if s.kind == "addr"}
        for a, u in zip(ns.addrs, urls, strict=True):
            if a not in known and u not in known:
                repl.sources.append(AddrSource("addr", u))
        try:
            current = repl.read_sources()
        except ReplError:
            current = [c.url for c in repl.conns]
        added, _ = repl.set_addresses(unique([*current, *urls]))
        repl.print(f"added {added} address{'es' if added != 1 else ''}")
    else:
        n = repl.reconnect_all()
        repl.print(f"reconnecting {n} address{'es' if n != 1 else ''}")
    st = await repl.wait_settled(repl.connect_timeout + 1)
    await _run_status(repl, ns)
    for c in repl.conns:
        if not c.ready and c.why():
            repl.print_err(f"{c.url}: {c.why()}")
    return st.connected > 0


async def _run_cheatsheet(repl: Repl, ns: argparse.Namespace) -> bool:
    repl.print_plain(CHEATSHEET)
    return True


async def _run_help(repl: Repl, ns: argparse.Namespace) -> bool:
    if ns.command:
        cmd = COMMANDS.get(ns.command)
        if cmd is None:
            raise ReplError(_unknown(ns.command))
        repl.print_plain(build_parser(cmd).format_help())
        return True
    lines = ["Commands (help CMD for one; MACH is an id or . for the first machine):"]
    for g in GROUPS:
        lines.append(f"\n{g}")
        for c in COMMANDS.values():
            if c.group == g:
                lines.append(f"  {c.name:<13} {c.summary}")
    repl.print_plain("\n".join(lines))
    return True


async def _run_exit(repl: Repl, ns: argparse.Namespace) -> bool:
    repl.exit_requested = True
    return True


_MUT_USAGE = "{} MACH STATES... [--arg NAME --val VALUE]..."
_FILTERS = (
    "[-a STATE]... [-i STATE]... [-p PREFIX] [-s SUFFIX] [-I TEXT] [-r RE] [-P PARENT] "
    "[-t MIN] [-T MAX] [-m STATE]... [-l N] [-f N]"
)

#: Every command by name, in ``help`` order.
COMMANDS: Final[dict[str, Command]] = {
    c.name: c
    for c in (
        Command(
            name="add",
            group="Mutations",
            summary="Add states to a machine",
            usage=_MUT_USAGE.format("add"),
            build=_b_mutation,
            run=_mutation("add"),
            complete="mach-states",
            example="add mach1 Foo Bar --arg id --val 1",
        ),
        Command(
            name="remove",
            group="Mutations",
            summary="Remove states from a machine",
            usage=_MUT_USAGE.format("remove"),
            build=_b_mutation,
            run=_mutation("remove"),
            complete="mach-states",
            example="remove mach1 Foo",
        ),
        Command(
            name="set",
            group="Mutations",
            summary="Set the active states of a machine (the others are removed)",
            usage=_MUT_USAGE.format("set"),
            build=_b_mutation,
            run=_mutation("set"),
            complete="mach-states",
            example="set mach1 Start Foo",
        ),
        Command(
            name="group-add",
            group="Mutations",
            summary="Add states to every matching connected machine",
            usage=f"group-add STATES... {_FILTERS} [--arg NAME --val VALUE]...",
            build=_b_group,
            run=_group_mutation("add"),
            complete="states",
            example="group-add -p worker- Foo",
        ),
        Command(
            name="group-remove",
            group="Mutations",
            summary="Remove states from every matching connected machine",
            usage=f"group-remove STATES... {_FILTERS} [--arg NAME --val VALUE]...",
            build=_b_group,
            run=_group_mutation("remove"),
            complete="states",
            example="group-remove -r '^w-[0-9]+$' Foo",
        ),
        Command(
            name="when",
            group="Waiting",
            summary="Wait until states are active; print their ticks",
            usage="when MACH STATES... [--timeout SECONDS]",
            build=_b_wait,
            run=_when(True),
            complete="mach-states",
            example="when mach1 Ready",
        ),
        Command(
            name="when-not",
            group="Waiting",
            summary="Wait until states are inactive; print their ticks",
            usage="when-not MACH STATES... [--timeout SECONDS]",
            build=_b_wait,
            run=_when(False),
            complete="mach-states",
            example="when-not mach1 Foo",
        ),
        Command(
            name="when-time",
            group="Waiting",
            summary="Wait until ticks reach the given ones; print them",
            usage="when-time MACH -s STATE -t TICK [-s STATE -t TICK]... [--timeout SECONDS]",
            build=_b_when_time,
            run=_run_when_time,
            complete="mach",
            example="when-time mach1 -s Foo -t 3 -s Bar -t 1",
        ),
        Command(
            name="watch",
            group="Waiting",
            summary="Print the states on every change (of STATES, or of any)",
            usage="watch MACH [STATES...] [-n COUNT] [--timeout SECONDS]",
            build=_b_watch,
            run=_run_watch,
            complete="mach-states",
            example="watch mach1 Foo -n 5",
        ),
        Command(
            name="mach",
            group="Checking",
            summary="Show a machine's active states: (Foo:1 Bar:3)",
            usage="mach MACH [--all]",
            build=_b_mach,
            run=_run_mach,
            complete="mach",
            example="mach mach1 --all",
        ),
        Command(
            name="time",
            group="Checking",
            summary="Show a machine's ticks, or their sum",
            usage="time MACH [STATES...] [--sum]",
            build=_b_time,
            run=_run_time,
            complete="mach-states",
            example="time mach1 --sum",
        ),
        Command(
            name="inspect",
            group="Checking",
            summary="Show a machine's states with their relations",
            usage="inspect MACH [STATES...]",
            build=_b_inspect,
            run=_run_inspect,
            complete="mach-states",
            example="inspect mach1",
        ),
        Command(
            name="list",
            group="REPL",
            summary="List machines: N. ID tTIME, then C/D connected, R/S Ready/Start, states",
            usage=f"list {_FILTERS} [-z|--no-states] [-Z] [-d|--no-disconn]",
            build=_b_list,
            run=_run_list,
            example="list -a Foo -t 10",
        ),
        Command(
            name="status",
            group="REPL",
            summary="Show the connection counts",
            usage="status",
            build=_b_none,
            run=_run_status,
        ),
        Command(
            name="script",
            group="REPL",
            summary="Run the commands of a file; stop at the first failure",
            usage="script FILE",
            build=_b_script,
            run=_run_script,
            complete="file",
            example="script setup.repl",
        ),
        Command(
            name="connect",
            group="REPL",
            summary="Reconnect what is down, or connect to more addresses",
            usage="connect [ADDR...]",
            build=_b_connect,
            run=_run_connect,
            example="connect localhost:7001",
        ),
        Command(
            name="cheatsheet",
            group="REPL",
            summary="Show examples of common commands",
            usage="cheatsheet",
            build=_b_none,
            run=_run_cheatsheet,
        ),
        Command(
            name="help",
            group="REPL",
            summary="List the commands, or show the usage of one",
            usage="help [CMD]",
            build=_b_help,
            run=_run_help,
            complete="commands",
        ),
        Command(
            name="exit",
            group="REPL",
            summary="Leave the REPL (Ctrl+D too)",
            usage="exit",
            build=_b_none,
            run=_run_exit,
        ),
    )
}


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else " (help lists the commands)"
    return f"unknown command {name!r}{hint}"


async def run_command(repl: Repl, argv: list[str]) -> bool:
    """Run ``argv`` (command name first) on ``repl``; print errors as ``err> …``."""
    name, words = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    try:
        if cmd is None:
            raise ReplError(_unknown(name))
        parser = build_parser(cmd, repl.print_plain)
        try:
            ns = parser.parse_intermixed_args(words)
        except _Exit as exc:
            return exc.args[0] == 0 if exc.args else True
        except argparse.ArgumentError as exc:
            raise ReplError(f"{name}: {exc}", usage=True) from None
        return await cmd.run(repl, ns)
    except ReplError as exc:
        repl.print_err(_msg(exc))
        if exc.usage and cmd is not None:
            repl.print_err(f"usage: {cmd.usage}")
        return False
    except Exception as exc:  # a bug: report it, never a traceback
        repl.mach.log("command %r failed: %r", argv, exc)
        repl.print_err(f"{name}: internal error: {type(exc).__name__}: {exc}")
        return False
