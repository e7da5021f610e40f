"""Sequence diagrams of one recorded transition (tools.md §3.4).

Each step of the transition becomes a message between the states it touched: ``called``,
``activate``, ``deactivate``, ``deactivate-passive`` and ``cancel`` from a state to
itself, relations (``require``, ``add``, ``remove``, ``after``) from one state to
another, handlers by their name (a handler for no particular state is drawn on ``Any``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from ._text import IdMap, VisError, d2_key

if TYPE_CHECKING:
    from ..dbg.model import Client, Model, Step, Tx

__all__ = ["find_tx", "state_trace", "tx_d2", "tx_mermaid", "tx_messages"]

_KINDS: Final = {
    1: "relation",
    2: "handler",
    4: "activate",
    8: "deactivate",
    16: "deactivate-passive",
    32: "called",
    64: "cancel",
}
_RELS: Final = {0: "after", 1: "add", 2: "require", 3: "remove"}
_TYPES: Final = {0: "add", 1: "remove", 2: "set"}
ANY: Final = "Any"


def find_tx(model: Model, url: str) -> tuple[Client, Tx, int]:
    """The client, transition and its 1-based number that ``url`` names:
    ``mach://ID/TX_ID``, or ``mach://ID?i=N`` (and the other queries of
    :meth:`~trio_am.dbg.model.Model.open_url`).

    Raises:
        VisError: a bad address (code 2), an unknown machine or transition, or an
            address naming no transition.
    """
    mid = url_machine(url)
    if mid not in model.clients:
        raise VisError(f"no machine {mid!r} in the recording ({_known(model)})")
    u = urlsplit(url.strip())
    if not u.path.strip("/") and not any(k in parse_qs(u.query) for k in ("i", "t", "q", "ht")):
        raise VisError(f"{url} names no transition (add /TX_ID or ?i=N)")
    try:
        model.open_url(url)
    except ValueError as exc:
        raise VisError(str(exc), code=2) from exc
    if model.pending_url is not None:
        model.pending_url = None
        raise VisError(f"no such transition: {url}")
    cl = model.clients[mid]
    no = cl.c
    if no <= 0 or no > len(cl.txs):
        raise VisError(f"{url} names no transition (add /TX_ID or ?i=N)")
    tx = cl.txs[no - 1]
    if tx.queued:
        raise VisError(f"{url} is a queued mutation, which has no steps")
    return cl, tx, no


def url_machine(url: str) -> str:
    """The machine id of a ``mach://ID[/...]`` address.

    Raises:
        VisError: not a ``mach://`` address (code 2).
    """
    u = urlsplit(url.strip())
    if u.scheme != "mach" or not u.netloc:
        raise VisError(f"not a mach:// address: {url!r} (e.g. mach://my-id/TX_ID)", code=2)
    return unquote(u.netloc)


def _known(model: Model) -> str:
    ids = list(model.clients)
    shown = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
    return f"it has {shown}" if ids else "it has no machines"


def _handler_state(cl: Client, st: Step) -> str:
    if st.to >= 0:
        return cl.name(st.to)
    if st.from_ >= 0:
        return cl.name(st.from_)
    return ANY


def tx_messages(cl: Client, tx: Tx) -> list[tuple[str, str, str]]:
    """``(from, to, text)`` for each step of ``tx``."""
    out: list[tuple[str, str, str]] = []
    last_handler: str | None = None
    for st in tx.steps:
        kind = _KINDS.get(st.kind, f"step{st.kind}")
        if st.kind == 1:
            a = cl.name(st.from_) if st.from_ >= 0 else ANY
            b = cl.name(st.to) if st.to >= 0 else ANY
            out.append((a, b, _RELS.get(st.rel, "relation")))
        elif st.kind == 2:
            s = _handler_state(cl, st)
            last_handler = s
            out.append((s, s, st.name or "handler"))
        elif st.kind == 64 and st.to < 0 and st.from_ < 0:
            s = last_handler or (cl.name(tx.called[0]) if tx.called else ANY)
            out.append((s, s, kind))
        else:
            s = cl.name(st.to) if st.to >= 0 else (cl.name(st.from_) if st.from_ >= 0 else ANY)
            out.append((s, s, kind))
    return out


def _participants(cl: Client, tx: Tx, msgs: list[tuple[str, str, str]]) -> list[str]:
    """Touched states: the called ones first, then in schema order, ``Any`` last."""
    touched = {a for a, _b, _t in msgs} | {b for _a, b, _t in msgs}
    called = [cl.name(i) for i in tx.called]
    order = [n for n in dict.fromkeys(called) if n in touched]
    order += [n for n in cl.names if n in touched and n not in order]
    order += sorted(n for n in touched if n not in cl.names and n != ANY)
    if ANY in touched:
        order.append(ANY)
    return order


def _summary(cl: Client, tx: Tx, no: int) -> dict[str, Any]:
    called = " ".join(cl.name(i) for i in tx.called)
    if tx.accepted:
        result = "accepted"
    elif tx.queued:
        result = "queued"
    else:
        result = "canceled"
    t = tx.t
    when = datetime.fromtimestamp(t / 1e9, tz=UTC).isoformat() if t else ""
    return {
        "title": f"[{_TYPES.get(tx.type, str(tx.type))}] {called}".rstrip(),
        "url": f"mach://{cl.id}/{tx.id}",
        "no": no,
        "result": result,
        "auto": tx.auto,
        "added": [cl.name(i) for i in tx.added],
        "removed": [cl.name(i) for i in tx.removed],
        "touched": [cl.name(i) for i in tx.touched],
        "time": f"t{tx.time_before} -> t{tx.time_after}",
        "when": when,
    }


def state_trace(model: Model | None, tx: Tx, limit: int = 20) -> list[str]:
    """Where ``tx`` came from, across machines: ``mach://ID/TX tN [type] States`` per
    hop, following each transition's source (nearest first)."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    src = tx.src
    while src is not None and len(out) < limit:
        mid, tid, mtime = src
        if (mid, tid) in seen:
            break
        seen.add((mid, tid))
        cl = None
        if model is not None:
            cl = model.clients.get(mid) or model.clients.get(f"rc-{mid}")
        shown = cl.id if cl is not None else mid
        line = f"mach://{shown}/{tid} t{mtime}" if tid else f"mach://{shown} t{mtime}"
        if cl is not None and cl.id != mid:
            line += " (aRPC)"
        nxt = None
        if cl is not None and tid:
            k = cl.find_tx(tid)
            if k:
                stx = cl.txs[k - 1]
                called = " ".join(cl.name(i) for i in stx.called)
                line += f" [{_TYPES.get(stx.type, str(stx.type))}] {called}"
                nxt = stx.src
        out.append(line)
        src = nxt
    return out


def tx_mermaid(cl: Client, tx: Tx, no: int = 0, model: Model | None = None) -> str:
    """A mermaid ``sequenceDiagram`` of a recorded transition: a ``participant`` per
    touched state, ``A ->> B: op`` per step; a few ``%%`` comment lines describe it."""
    msgs = tx_messages(cl, tx)
    info = _summary(cl, tx, no)
    ids = IdMap("p")
    out = [
        "sequenceDiagram",
        f"    %% {info['title']} ({info['url']})",
        f"    %% {info['result']}{' auto' if info['auto'] else ''}: "
        f"+{len(info['added'])} -{len(info['removed'])} *{len(info['touched'])}, "
        f"{info['time']}",
    ]
    out += [f"    %% from {line}" for line in state_trace(model, tx)]
    for p in _participants(cl, tx, msgs):
        pid = ids(p)
        out.append(f"    participant {pid}" if pid == p else f"    participant {pid} as {p}")
    for a, b, text in msgs:
        out.append(f"    {ids(a)} ->> {ids(b)}: {text}")
    return "\n".join(out) + "\n"


def tx_d2(cl: Client, tx: Tx, no: int = 0, model: Model | None = None) -> str:
    """A D2 ``sequence_diagram`` of a recorded transition, with a markdown header: the
    type and called states, the result and counts, machine time before and after, and
    the state trace."""
    msgs = tx_messages(cl, tx)
    info = _summary(cl, tx, no)

    def md(text: str) -> str:
        return text.replace("|", "/")

    head = [f"**{md(info['title'])}**", "", f"- {info['url']}"]
    head.append(
        f"- {info['result']}{' (auto)' if info['auto'] else ''}: added "
        f"{len(info['added'])}, removed {len(info['removed'])}, touched "
        f"{len(info['touched'])}"
    )
    head.append(f"- {info['time']}")
    if info["when"]:
        head.append(f"- {info['when']}")
    trace = state_trace(model, tx)
    if trace:
        head.append("- state trace:")
        head += [f"  - {md(line)}" for line in trace]
    out = ["shape: sequence_diagram", "trio_am_header: |md"]
    out += [f"  {line}" if line else "" for line in head]
    out += ["| {", "  near: top-center", "}", ""]
    out += [d2_key(p) for p in _participants(cl, tx, msgs)]
    out.append("")
    out += [f"{d2_key(a)} -> {d2_key(b)}: {text}" for a, b, text in msgs]
    return "\n".join(out) + "\n"
