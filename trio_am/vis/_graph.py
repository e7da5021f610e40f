"""The graph of connected machines in a debugger recording, its diagrams and dumps.

Machines are the recording's clients. Links between them:

* **parent**: a submachine to its parent (the schema's ``parent``);
* **rpc**: a mutation that came over aRPC: a transition whose source (``src``) names
  another machine that is not in the same process (another debugger connection), a
  source without a transition id (what a server records for its clients), or the id of
  an aRPC client (``rc-<id>``); and a server's ``ClientConnected`` whose (logged) args
  name the client (``client`` or ``id``);
* **pipe**: a mutation another machine of the same process made with ``event=e``, which
  is what :mod:`trio_am.pipes` do: the source machine's state to the target's called
  state. The source state is one the source transition activated (deactivated, for a
  ``remove``): the one named like the target state, else the only one, else the only
  one it was called for. When it cannot be told, the pipe is *grouped* (``*``).

Reporters do not send pipe bindings or aRPC sessions themselves (tools.md §1.7: those
log events are not reported yet), so links are inferred from what mutations did: a pipe
or aRPC link that never carried a mutation in the recording does not show.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from .._core._schema import State
from ._text import (
    VisError,
    d2_key,
    d2_str,
    library_states,
    mermaid_label,
    natural_key,
    relations,
    state_of,
)

if TYPE_CHECKING:
    from ..dbg.model import Client, Model

__all__ = [
    "PRESETS",
    "Graph",
    "Link",
    "MachNode",
    "RenderOptions",
    "build_graph",
    "graph_d2",
    "graph_mermaid",
    "inspect_markdown",
    "inspect_xml",
    "preset",
]

_TYPES: Final = {0: "add", 1: "remove", 2: "set"}
_RPC_TAGS: Final = frozenset({"rpc-client", "rpc-server", "rpc-mux", "rpc-mirror", "relay"})


@dataclass
class MachNode:
    """One machine: its schema and ticks after the last record (``external``: known only
    from other machines' links, not in the recording)."""

    id: str
    parent: str | None = None
    tags: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    schema: dict[str, State] = field(default_factory=dict)
    ticks: tuple[int, ...] = ()
    conn: int = 0
    external: bool = False

    @property
    def active(self) -> list[str]:
        """States active after the last record."""
        return [n for i, n in enumerate(self.names) if i < len(self.ticks) and self.ticks[i] & 1]

    @property
    def time(self) -> int:
        """Machine time (sum of ticks) after the last record."""
        return sum(self.ticks)

    def tick(self, name: str) -> int:
        """The tick of a state (0 when unknown)."""
        try:
            i = self.names.index(name)
        except ValueError:
            return 0
        return self.ticks[i] if i < len(self.ticks) else 0


@dataclass(frozen=True)
class Link:
    """A link between machines: ``parent`` (child → parent), ``rpc`` (client → served
    machine) or ``pipe`` (source → target, ``op`` add/remove; states None when grouped)."""

    kind: str
    source: str
    target: str
    op: str = ""
    source_state: str | None = None
    target_state: str | None = None


@dataclass
class Graph:
    """Machines and the links between them; ``counts`` says how many mutations made
    each (non-parent) link."""

    machines: dict[str, MachNode] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    counts: dict[Link, int] = field(default_factory=dict)

    def add_link(self, link: Link) -> None:
        """Add ``link`` (or count it once more)."""
        if link in self.counts:
            self.counts[link] += 1
            return
        self.counts[link] = 1
        self.links.append(link)

    def children(self, mid: str) -> list[str]:
        """Submachines of ``mid`` in the recording, naturally sorted."""
        kids = [
            m.id
            for m in self.machines.values()
            if m.parent == mid and m.id != mid and not m.external
        ]
        return sorted(kids, key=natural_key)

    def neighbours(self, mid: str, kinds: Iterable[str] = ("parent", "rpc", "pipe")) -> set[str]:
        """Machines one link (of ``kinds``) away from ``mid``, either direction."""
        out: set[str] = set()
        want = set(kinds)
        for ln in self.links:
            if ln.kind not in want:
                continue
            if ln.source == mid:
                out.add(ln.target)
            elif ln.target == mid:
                out.add(ln.source)
        return out

    def ids(self) -> list[str]:
        """Ids of the recorded machines, naturally sorted."""
        return sorted((m for m, n in self.machines.items() if not n.external), key=natural_key)


def _node(cl: Client) -> MachNode:
    ticks = cl.time_at(len(cl.txs))
    return MachNode(
        id=cl.id,
        parent=cl.parent_id,
        tags=tuple(cl.tags),
        names=tuple(cl.names),
        schema={n: state_of(cl.states.get(n)) for n in cl.names},
        ticks=tuple(ticks),
        conn=cl.conn_id,
    )


def build_graph(model: Model) -> Graph:
    """The graph of every machine in ``model`` (a loaded recording, see the module
    docstring for how links are found)."""
    g = Graph()
    for cl in model.clients.values():
        g.machines[cl.id] = _node(cl)

    def ext(mid: str) -> None:
        if mid not in g.machines:
            g.machines[mid] = MachNode(mid, external=True)

    for cl in model.clients.values():
        if cl.parent_id and cl.parent_id != cl.id:
            ext(cl.parent_id)
            g.add_link(Link("parent", cl.id, cl.parent_id))
    for cl in model.clients.values():
        node = g.machines[cl.id]
        is_server = "rpc-server" in cl.tags
        for tx in cl.txs:
            if tx.queued:
                continue
            if is_server and "ClientConnected" in (cl.name(i) for i in tx.called):
                for key in ("client", "id"):
                    who = tx.args.get(key)
                    if who:
                        src_id = who if who in model.clients else f"rc-{who}"
                        src_id = src_id if src_id in model.clients else who
                        ext(src_id)
                        g.add_link(Link("rpc", src_id, cl.id))
                        break
            src = tx.src
            if src is None or not src[0] or src[0] == cl.id:
                continue
            mid, tid, _mt = src
            via_client = mid not in model.clients and f"rc-{mid}" in model.clients
            sid = f"rc-{mid}" if via_client else mid
            source = model.clients.get(sid)
            rpc = (
                via_client
                or not tid
                or source is None
                or source.conn_id != node.conn
                or bool(_RPC_TAGS & set(source.tags))
                or bool(_RPC_TAGS & set(cl.tags))
            )
            if rpc:
                ext(sid)
                g.add_link(Link("rpc", sid, cl.id))
                continue
            assert source is not None
            op = "remove" if tx.type == 1 else "add"
            target_states: list[str | None] = [cl.name(i) for i in tx.called] or [None]
            k = source.find_tx(tid)
            cands: list[str] = []
            called: list[str] = []
            if k:
                stx = source.txs[k - 1]
                idxs = stx.removed if op == "remove" else stx.added
                cands = [source.name(i) for i in idxs]
                called = [c for c in (source.name(i) for i in stx.called) if c in cands]
            for ts in target_states:
                ss: str | None = None
                if ts is not None and ts in cands:
                    ss = ts
                elif len(cands) == 1:
                    ss = cands[0]
                elif len(called) == 1:
                    ss = called[0]
                g.add_link(Link("pipe", sid, cl.id, op, ss, ts))
    return g


# ---------------------------------------------------------------------------- options
@dataclass(frozen=True)
class RenderOptions:
    """What a machine-graph diagram shows.

    ``distance``: links to follow from the starting machines (-1: all); ``depth``:
    levels of submachines below them (-1: all). ``states``, ``relations``,
    ``inherited`` (states of trio_am's reusable schemas), ``active`` (class active
    states), ``parents``, ``rpc``, ``pipes`` (``detailed_pipes``: state to state, else
    machine to machine), ``nest`` (submachines drawn inside their parents), ``tags``,
    ``half`` (linked machines outside the selection drawn as plain nodes).
    """

    distance: int = 0
    depth: int = 0
    states: bool = True
    relations: bool = True
    inherited: bool = True
    active: bool = True
    parents: bool = True
    rpc: bool = True
    pipes: bool = True
    detailed_pipes: bool = True
    nest: bool = False
    tags: bool = True
    half: bool = True


#: The presets of ``vis render --preset``: one machine with everything; a bird's eye
#: view 3 links around it without inherited states; a map of nested machines only.
PRESETS: Final[dict[str, RenderOptions]] = {
    "single": RenderOptions(),
    "bird": RenderOptions(distance=3, inherited=False),
    "map": RenderOptions(
        distance=-1,
        depth=-1,
        states=False,
        relations=False,
        detailed_pipes=False,
        nest=True,
        tags=False,
    ),
}


def preset(name: str, **changes: Any) -> RenderOptions:
    """A preset's options with some changed (``preset("bird", distance=1)``).

    Raises:
        VisError: an unknown preset or option (code 2).
    """
    if name not in PRESETS:
        raise VisError(f"unknown preset {name!r}: expected {', '.join(PRESETS)}", code=2)
    try:
        return replace(PRESETS[name], **{k: v for k, v in changes.items() if v is not None})
    except TypeError as exc:
        raise VisError(str(exc), code=2) from exc


def select(g: Graph, roots: Iterable[str] | None, opts: RenderOptions) -> list[str]:
    """The machines a diagram shows: all recorded ones without ``roots``, else the roots,
    those within ``distance`` links (of the kinds drawn) and submachines within ``depth``
    levels."""
    recorded = g.ids()
    if roots is None:
        return recorded
    roots = list(roots)
    for r in roots:
        if r not in g.machines or g.machines[r].external:
            raise VisError(f"no machine {r!r} in the recording")
    chosen: dict[str, None] = dict.fromkeys(roots)
    kinds = [
        k for k, on in (("parent", opts.parents), ("rpc", opts.rpc), ("pipe", opts.pipes)) if on
    ]
    frontier = list(roots)
    hops = 0
    while frontier and (opts.distance < 0 or hops < opts.distance):
        nxt = []
        for m in frontier:
            for n in sorted(g.neighbours(m, kinds), key=natural_key):
                if n not in chosen and not g.machines[n].external:
                    chosen[n] = None
                    nxt.append(n)
        frontier = nxt
        hops += 1
    level = list(roots)
    d = 0
    while level and (opts.depth < 0 or d < opts.depth):
        nxt = []
        for m in level:
            for c in g.children(m):
                if c not in chosen:
                    chosen[c] = None
                nxt.append(c)
        level = nxt
        d += 1
    return sorted(chosen, key=natural_key)


def _shown_states(node: MachNode, opts: RenderOptions, pinned: set[str]) -> list[str]:
    if not opts.states:
        return []
    lib = library_states() if not opts.inherited else frozenset()
    return [n for n in node.names if n not in lib or n in pinned]


# ---------------------------------------------------------------------------- mermaid
def graph_mermaid(
    g: Graph, roots: Iterable[str] | None = None, opts: RenderOptions | None = None
) -> str:
    """A mermaid ``flowchart`` of machines: each a subgraph with its states and
    relations (or a node), then parent links (``==>``), aRPC links (``-.->``) and pipes
    (``-- add -->``, ``-- remove --x``)."""
    opts = opts or RenderOptions()
    sel = select(g, roots, opts)
    selset = set(sel)
    # ids are positional, so the text does not depend on names mermaid dislikes
    mach_ids = {m: f"m{i}" for i, m in enumerate(sorted(g.machines, key=natural_key), 1)}
    state_ids: dict[tuple[str, str], str] = {}
    links = _visible_links(g, selset, opts)
    pinned: dict[str, set[str]] = {m: set() for m in g.machines}
    if opts.detailed_pipes:
        for ln in links:
            if ln.kind == "pipe" and ln.source_state and ln.target_state:
                pinned[ln.source].add(ln.source_state)
                pinned[ln.target].add(ln.target_state)
    shown = {m: _shown_states(g.machines[m], opts, pinned[m]) for m in sel}
    for m in sel:
        for i, n in enumerate(g.machines[m].names):
            if n in shown[m]:
                state_ids[(m, n)] = f"{mach_ids[m]}s{i}"
    out = ["flowchart LR"]
    body: list[str] = []
    active: list[str] = []
    top, kids = _nesting(g, sel, opts.nest)

    def title(m: str) -> str:
        node = g.machines[m]
        if opts.tags and node.tags:
            return f"{m} #{' #'.join(node.tags)}"
        return m

    def emit(m: str, pad: str) -> None:
        node = g.machines[m]
        mid = mach_ids[m]
        names = shown[m]
        children = kids.get(m, [])
        if not names and not children:
            body.append(f"{pad}{mid}[{mermaid_label(title(m))}]")
            return
        body.append(f"{pad}subgraph {mid}[{mermaid_label(title(m))}]")
        body.append(f"{pad}    direction TB")
        for n in names:
            st = node.schema.get(n, State())
            flags = [f for f in ("auto", "multi") if getattr(st, f)]
            label = f"{n} ({', '.join(flags)})" if flags else n
            body.append(f"{pad}    {state_ids[(m, n)]}[{mermaid_label(label)}]")
        if opts.relations:
            for n in names:
                for rel, target in relations(n, node.schema.get(n, State())):
                    if (m, target) in state_ids:
                        body.append(
                            f"{pad}    {state_ids[(m, n)]} -- {rel} --> {state_ids[(m, target)]}"
                        )
        if opts.active:
            active.extend(state_ids[(m, n)] for n in node.active if (m, n) in state_ids)
        for c in children:
            emit(c, pad + "    ")
        body.append(f"{pad}end")

    for m in top:
        emit(m, "    ")
    drawn = set(sel)
    for ln in links:
        for end in (ln.source, ln.target):
            if end not in drawn:
                drawn.add(end)
                body.append(f"    {mach_ids[end]}([{mermaid_label(end)}]):::half")
    edges: list[str] = []
    seen: set[str] = set()
    for ln in links:
        a, b = mach_ids[ln.source], mach_ids[ln.target]
        if ln.kind == "parent":
            line = f"    {a} == parent ==> {b}"
        elif ln.kind == "rpc":
            line = f"    {a} -. rpc .-> {b}"
        else:
            arrow = "--x" if ln.op == "remove" else "-->"
            if opts.detailed_pipes:
                sa = state_ids.get((ln.source, ln.source_state or ""), a)
                sb = state_ids.get((ln.target, ln.target_state or ""), b)
                line = f"    {sa} -- {ln.op} {arrow} {sb}"
            else:
                line = f"    {a} -- pipe {arrow} {b}"
        if line not in seen:
            seen.add(line)
            edges.append(line)
    if active:
        out.append("    classDef active fill:#ffd54f,stroke:#333,color:#000")
    if any(":::half" in ln for ln in body):
        out.append("    classDef half stroke-dasharray: 4 4")
    out += body + edges
    if active:
        out.append(f"    class {','.join(active)} active")
    return "\n".join(out) + "\n"


def _nesting(g: Graph, sel: list[str], nest: bool) -> tuple[list[str], dict[str, list[str]]]:
    """Top-level machines and, with ``nest``, each machine's nested children (a parent
    cycle puts its members at the top)."""
    if not nest:
        return list(sel), {}
    selset = set(sel)
    top: list[str] = []
    kids: dict[str, list[str]] = {}
    for m in sel:
        p = g.machines[m].parent
        cur, steps = p, 0
        while cur in selset and cur != m and steps <= len(sel):
            cur = g.machines[cur].parent
            steps += 1
        if p in selset and p != m and cur != m:
            kids.setdefault(str(p), []).append(m)
        else:
            top.append(m)
    return top, kids


def _visible_links(g: Graph, sel: set[str], opts: RenderOptions) -> list[Link]:
    out = []
    for ln in g.links:
        if ln.kind == "parent" and (
            not opts.parents or (opts.nest and ln.source in sel and ln.target in sel)
        ):
            continue
        if ln.kind == "rpc" and not opts.rpc:
            continue
        if ln.kind == "pipe" and not opts.pipes:
            continue
        inside = (ln.source in sel) + (ln.target in sel)
        if inside == 2 or (inside == 1 and opts.half):
            out.append(ln)
    return out


# ---------------------------------------------------------------------------- d2
def graph_d2(
    g: Graph, roots: Iterable[str] | None = None, opts: RenderOptions | None = None
) -> str:
    """A D2 diagram of machines: containers with states and relations, parent links,
    aRPC links (dashed) and pipes (as in :func:`graph_mermaid`)."""
    opts = opts or RenderOptions()
    sel = select(g, roots, opts)
    selset = set(sel)
    links = _visible_links(g, selset, opts)
    pinned: dict[str, set[str]] = {m: set() for m in g.machines}
    if opts.detailed_pipes:
        for ln in links:
            if ln.kind == "pipe" and ln.source_state and ln.target_state:
                pinned[ln.source].add(ln.source_state)
                pinned[ln.target].add(ln.target_state)
    shown = {m: _shown_states(g.machines[m], opts, pinned[m]) for m in sel}
    path: dict[str, str] = {}
    top, kids = _nesting(g, sel, opts.nest)

    def set_paths(m: str, prefix: str) -> None:
        path[m] = prefix + d2_str(m)
        for c in kids.get(m, []):
            set_paths(c, path[m] + ".")

    for m in top:
        set_paths(m, "")
    out = ["direction: right"]
    cls = []
    if opts.active:
        cls.append('  active: {style.fill: "#ffd54f"}')
    cls.append("  half: {style.stroke-dash: 3}")
    out += ["classes: {", *cls, "}"]
    active: list[str] = []

    def emit(m: str, pad: str) -> None:
        node = g.machines[m]
        label = m
        if opts.tags and node.tags:
            label += " #" + " #".join(node.tags)
        names = shown[m]
        children = kids.get(m, [])
        if not names and not children:
            out.append(f"{pad}{d2_str(m)}: {d2_str(label)}")
            return
        out.append(f"{pad}{d2_str(m)}: {{")
        out.append(f"{pad}  label: {d2_str(label)}")
        for n in names:
            st = node.schema.get(n, State())
            flags = [f for f in ("auto", "multi") if getattr(st, f)]
            out.append(
                f"{pad}  {d2_key(n)}: {d2_str(n + ' (' + ', '.join(flags) + ')')}"
                if flags
                else f"{pad}  {d2_key(n)}"
            )
        if opts.relations:
            for n in names:
                for rel, target in relations(n, node.schema.get(n, State())):
                    if target in names:
                        out.append(f"{pad}  {d2_key(n)} -> {d2_key(target)}: {rel}")
        if opts.active:
            active.extend(f"{path[m]}.{d2_key(n)}" for n in node.active if n in names)
        for c in children:
            emit(c, pad + "  ")
        out.append(f"{pad}}}")

    for m in top:
        emit(m, "")
    for ln in links:
        for end in (ln.source, ln.target):
            if end not in path:
                path[end] = d2_str(end)
                out.append(f"{path[end]}.class: half")
    seen: set[str] = set()
    for ln in links:
        a, b = path[ln.source], path[ln.target]
        if ln.kind == "parent":
            line = f"{a} -> {b}: parent {{style.stroke-width: 3}}"
        elif ln.kind == "rpc":
            line = f"{a} -> {b}: rpc {{style.stroke-dash: 3}}"
        else:
            sa = ln.source_state if ln.source_state in shown.get(ln.source, ()) else None
            sb = ln.target_state if ln.target_state in shown.get(ln.target, ()) else None
            if opts.detailed_pipes:
                pa = f"{a}.{d2_key(sa)}" if sa else a
                pb = f"{b}.{d2_key(sb)}" if sb else b
                line = f"{pa} -> {pb}: {ln.op}"
            else:
                line = f"{a} -> {b}: pipe"
        if line not in seen:
            seen.add(line)
            out.append(line)
    out += [f"{p}.class: active" for p in active]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- inspect
def _pipe_text(ln: Link) -> str:
    return f"[{ln.op}] {ln.source_state or '*'} -> {ln.target_state or '*'}"


def inspect_markdown(g: Graph) -> str:
    """Markdown: per machine ``## ID``, ``Time:``, ``Parent:``, ``Tags:``, then
    ``### States`` (``- Name (tN, active)``), ``### RPC`` (``- to ID`` / ``- from
    ID``) and ``### Pipes`` (per target ``#### ID`` and ``- [add] A -> B``)."""
    out = ["# trio-am vis inspect", ""]
    for m in g.ids():
        node = g.machines[m]
        out.append(f"## {m}")
        out.append(f"Time: t{node.time}")
        if node.parent:
            out.append(f"Parent: {node.parent}")
        if node.tags:
            out.append("Tags: " + " ".join(f"#{t}" for t in node.tags))
        out.append("")
        if node.names:
            out.append("### States")
            act = set(node.active)
            for n in node.names:
                mark = ", active" if n in act else ""
                out.append(f"- {n} (t{node.tick(n)}{mark})")
            out.append("")
        rpc = [f"- to {ln.target}" for ln in g.links if ln.kind == "rpc" and ln.source == m]
        rpc += [f"- from {ln.source}" for ln in g.links if ln.kind == "rpc" and ln.target == m]
        if rpc:
            out += ["### RPC", *rpc, ""]
        pipes: dict[str, list[str]] = {}
        for ln in g.links:
            if ln.kind == "pipe" and ln.source == m:
                pipes.setdefault(ln.target, []).append(f"- {_pipe_text(ln)}")
        if pipes:
            out += ["### Pipes", ""]
            for target in sorted(pipes, key=natural_key):
                out += [f"#### {target}", *pipes[target], ""]
        out += ["-----", ""]
    return "\n".join(out)


def inspect_xml(g: Graph) -> str:
    """XML: ``<graph>`` with nested ``<machine id time>`` elements (children inside
    their parents) holding ``<state>`` (tick, active, auto, multi and relation
    children), ``<rpc to|from>``, ``<pipe to op from-state to-state count>`` and
    ``<tag>``; for CSS / XPath queries."""
    root = ET.Element("graph")
    ids = g.ids()
    idset = set(ids)

    def machine(parent: ET.Element, m: str) -> None:
        node = g.machines[m]
        el = ET.SubElement(parent, "machine", id=m, time=str(node.time))
        if node.parent:
            el.set("parent", node.parent)
        act = set(node.active)
        for n in node.names:
            st = node.schema.get(n, State())
            s = ET.SubElement(el, "state", name=n, tick=str(node.tick(n)))
            if n in act:
                s.set("active", "1")
            if st.auto:
                s.set("auto", "1")
            if st.multi:
                s.set("multi", "1")
            for rel, target in relations(n, st):
                ET.SubElement(s, rel).text = target
        for ln in g.links:
            if ln.kind == "rpc" and ln.source == m:
                ET.SubElement(el, "rpc", to=ln.target, count=str(g.counts[ln]))
            elif ln.kind == "rpc" and ln.target == m:
                ET.SubElement(el, "rpc", attrib={"from": ln.source, "count": str(g.counts[ln])})
            elif ln.kind == "pipe" and ln.source == m:
                p = ET.SubElement(el, "pipe", to=ln.target, op=ln.op, count=str(g.counts[ln]))
                if ln.source_state:
                    p.set("from-state", ln.source_state)
                if ln.target_state:
                    p.set("to-state", ln.target_state)
        for t in node.tags:
            ET.SubElement(el, "tag").text = t
        for c in g.children(m):
            machine_once(el, c)

    done: set[str] = set()

    def machine_once(parent: ET.Element, m: str) -> None:
        if m not in done:
            done.add(m)
            machine(parent, m)

    for m in ids:
        p = g.machines[m].parent
        if not p or p not in idset or p == m:
            machine_once(root, m)
    for m in ids:  # parent cycles
        machine_once(root, m)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
