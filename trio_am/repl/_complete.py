"""Completion of REPL lines: commands, flags, machine ids, state names, arg names.

Pure: :func:`complete` works on a :class:`CompletionContext` snapshot, so readline's
completer (which runs outside Trio) never touches live objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING

import attrs

from ._commands import COMMANDS, build_parser

if TYPE_CHECKING:
    from ._repl import Repl

__all__ = ["CompletionContext", "complete"]

#: Flags whose value is a state name (of the machine, or of any for group commands).
_STATE_FLAGS = frozenset({"-a", "--active", "-i", "--inactive", "-m", "--mtime-states"})
#: The same for ``when-time``, whose ``-s`` is a state (for filters ``-s`` is a suffix).
_WHEN_TIME_STATE_FLAGS = frozenset({"-s", "--state"})


@attrs.frozen
class CompletionContext:
    """What completion knows about the connected machines.

    Attributes:
        ids: machine ids, connected first.
        states: state names per machine id.
        active: active states per machine id.
        multi: multi states per machine id.
        args: typed-args keys per machine id.
    """

    ids: tuple[str, ...] = ()
    states: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    active: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    multi: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    args: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    @classmethod
    def from_repl(cls, repl: Repl) -> CompletionContext:
        """A snapshot of ``repl``'s machines."""
        ids = tuple(repl.known_ids())
        states: dict[str, tuple[str, ...]] = {}
        active: dict[str, frozenset[str]] = {}
        multi: dict[str, frozenset[str]] = {}
        args: dict[str, tuple[str, ...]] = {}
        for c in [*repl.ready_conns(), *repl.conns]:
            mid = c.machine_id
            if mid is None or mid in states or c.client is None:
                continue
            m = c.client.mach
            states[mid] = tuple(m.state_names)
            active[mid] = frozenset(m.active_states())
            schema = m.schema or {}
            multi[mid] = frozenset(n for n, s in schema.items() if s.multi)
            args[mid] = c.arg_names
        return cls(ids, states, active, multi, args)

    def machine(self, ref: str) -> str | None:
        """The id ``ref`` means (``.`` = the first), or None."""
        if ref == ".":
            return self.ids[0] if self.ids else None
        return ref if ref in self.states else None

    def all_states(self) -> list[str]:
        """Every state name of every machine, without repeats."""
        seen: dict[str, None] = {}
        for names in self.states.values():
            for n in names:
                seen.setdefault(n, None)
        return list(seen)


@cache
def _flags(name: str) -> tuple[dict[str, bool], tuple[str, ...]]:
    """``({flag: takes_a_value}, flags in order)`` of a command."""
    parser = build_parser(COMMANDS[name])
    takes: dict[str, bool] = {}
    order: list[str] = []
    for action in parser._actions:
        for opt in action.option_strings:
            takes[opt] = action.nargs != 0
            order.append(opt)
    return takes, tuple(order)


def _split(line: str) -> tuple[list[str], str]:
    """Words before the cursor, and the word being typed ("" after a space)."""
    words = line.split()
    if not line or line[-1].isspace():
        return words, ""
    return words[:-1], words[-1]


def _files(prefix: str) -> list[str]:
    d, base = os.path.split(prefix)
    try:
        names = sorted(os.listdir(os.path.expanduser(d) or "."))
    except OSError:
        return []
    out = []
    for n in names:
        if n.startswith(base) and (base.startswith(".") or not n.startswith(".")):
            full = os.path.join(d, n)
            out.append(full + "/" if os.path.isdir(os.path.expanduser(full)) else full)
    return out


def _state_cands(ctx: CompletionContext, cmd: str, mid: str, typed: Sequence[str]) -> list[str]:
    """States of ``mid`` worth offering to ``cmd``: ``add`` those it can still add,
    ``remove`` / ``when-not`` the active ones, ``when`` the inactive ones."""
    names: list[str] = list(ctx.states.get(mid, ()))
    act = ctx.active.get(mid, frozenset())
    if cmd == "add":
        multi = ctx.multi.get(mid, frozenset())
        names = [n for n in names if n not in act or n in multi]
    elif cmd in ("remove", "when-not"):
        names = [n for n in names if n in act]
    elif cmd == "when":
        names = [n for n in names if n not in act] or names
    return [n for n in names if n not in typed]


def complete(line: str, ctx: CompletionContext) -> list[str]:
    """Candidates for the word being typed at the end of ``line``, sorted where the
    order carries no meaning.

    Example::

        complete("mach rp-", ctx)        # ['rp-1', 'rp-2']
        complete("add rp-1 F", ctx)      # ['Foo'] (only inactive or multi states)
    """
    done, word = _split(line)
    if not done:
        return sorted(n for n in COMMANDS if n.startswith(word))
    name = done[0]
    cmd = COMMANDS.get(name)
    if cmd is None:
        return []
    takes, order = _flags(name)
    args = done[1:]
    # the flag whose value is being typed, and the positional words so far
    pending: str | None = None
    positional: list[str] = []
    for w in args:
        if pending is not None:
            pending = None
            continue
        if w.startswith("-") and w in takes:
            if takes[w]:
                pending = w
            continue
        positional.append(w)
    kind = cmd.complete

    def mach_id() -> str | None:
        if kind not in ("mach-states", "mach") or not positional:
            return ctx.ids[0] if len(ctx.ids) == 1 else None
        mid = ctx.machine(positional[0])
        if mid is None and len(ctx.ids) == 1:
            return ctx.ids[0]  # MACH left out
        return mid

    def pick(cands: Sequence[str]) -> list[str]:
        return [c for c in cands if c.startswith(word)]

    if pending is not None:
        if pending == "--arg":
            mid = mach_id()
            if mid:
                return pick(ctx.args.get(mid, ()))
            return pick(sorted({a for v in ctx.args.values() for a in v}))
        if pending in _STATE_FLAGS or (name == "when-time" and pending in _WHEN_TIME_STATE_FLAGS):
            mid = mach_id() if kind != "states" else None
            return pick(ctx.states.get(mid, ()) if mid else ctx.all_states())
        return []
    if word.startswith("-"):
        return [f for f in order if f.startswith(word)]
    if kind == "commands":
        return sorted(n for n in COMMANDS if n.startswith(word)) if not positional else []
    if kind == "file":
        return _files(word) if not positional else []
    if kind == "states":
        return pick([s for s in ctx.all_states() if s not in positional])
    if kind in ("mach", "mach-states"):
        ids_first = not positional
        if positional and ctx.machine(positional[0]) is None and len(ctx.ids) == 1:
            ids_first = False  # MACH left out: these are states already
        if ids_first:
            cands = list(ctx.ids) + (["."] if ctx.ids else [])
            if len(ctx.ids) == 1 and kind == "mach-states":
                cands += _state_cands(ctx, name, ctx.ids[0], positional)
            return pick(cands)
        if kind == "mach":
            return []
        mid = mach_id()
        return pick(_state_cands(ctx, name, mid, positional)) if mid is not None else []
    return []
