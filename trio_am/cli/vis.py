"""``trio-am vis``: diagrams as mermaid or D2 text (tools.md §3.4).

    trio-am vis schema MODULE:ATTR|FILE.amdbg [mach://ID[/TX]]   relations of a schema
    trio-am vis render FILE.amdbg [mach://ID] [--preset single|bird|map] [-d N] [--depth N]
                       [--render-states | --no-render-states ...]   machines and links
    trio-am vis tx FILE.amdbg mach://ID/TX_ID|mach://ID?i=N       one transition's steps
    trio-am vis inspect FILE.amdbg [--xml]                        markdown / XML dump

Common flags: ``--format mermaid|d2`` (mermaid), ``-o NAME`` (write ``NAME.mermaid`` /
``NAME.d2``; inspect writes ``NAME.md`` and ``NAME.xml``), ``--svg`` (with ``-o``, also
render ``NAME.svg`` with ``mmdc`` or ``d2`` when installed).

Exit codes: 0 done, 1 an error (no such file, machine or transition; unreadable
recording; a missing SVG renderer), 2 bad usage.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import vis
from ..vis import VisError

__all__ = ["build_parser", "main"]

_RENDER_FLAGS = (
    ("states", "states of each machine"),
    ("relations", "relations between states"),
    ("inherited", "states of trio_am's reusable schemas (Start, Exception...)"),
    ("active", "mark active states"),
    ("parents", "parent links"),
    ("rpc", "aRPC links"),
    ("pipes", "pipes"),
    ("detailed-pipes", "pipes state to state (else machine to machine)"),
    ("nest", "submachines inside their parents"),
    ("tags", "machine tags"),
    ("half", "linked machines outside the selection, as plain nodes"),
)
_EXT = {"mermaid": ".mermaid", "d2": ".d2"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _common(p: argparse.ArgumentParser, formats: bool = True) -> None:
    if formats:
        p.add_argument(
            "-F", "--format", choices=vis.FORMATS, default="mermaid", help="output format"
        )
    p.add_argument("-o", "--output", metavar="NAME", help="write to NAME.<ext> instead of stdout")
    if formats:
        p.add_argument(
            "--svg", action="store_true", help="with -o, also render NAME.svg (needs mmdc or d2)"
        )


def build_parser() -> argparse.ArgumentParser:
    """The ``trio-am vis`` argument parser."""
    ap = _Parser(prog="trio-am vis", description="Diagrams of schemas, machines and transitions.")
    sub = ap.add_subparsers(dest="kind", metavar="{schema,render,tx,inspect}", parser_class=_Parser)
    sc = sub.add_parser(
        "schema",
        help="a schema's states and relations",
        description="Draw a schema: a node per state, an edge per relation. SOURCE is "
        "MODULE:ATTR (a schema mapping or a machine) or a FILE.amdbg recording (then the "
        "states active after the last record, or at mach://ID/TX, are marked).",
    )
    sc.add_argument("source", help="MODULE:ATTR, path/file.py:ATTR or FILE.amdbg")
    sc.add_argument("url", nargs="?", help="mach://ID[/TX_ID|?i=N] (recordings)")
    sc.add_argument(
        "--no-inherited",
        action="store_true",
        help="leave out the states of trio_am's reusable schemas",
    )
    _common(sc)
    rd = sub.add_parser(
        "render",
        help="machines of a recording with their states, parent links, aRPC links, pipes",
        description="Draw the machines of a recording: all of them, or those around "
        "mach://ID as the preset says (single: that machine; bird: 3 links around it "
        "without inherited states; map: every machine, nested, no states).",
    )
    rd.add_argument("file", help="FILE.amdbg")
    rd.add_argument("url", nargs="?", help="mach://ID: the machine to start from")
    rd.add_argument("--preset", choices=list(vis.PRESETS), default="single")
    rd.add_argument("-d", "--distance", type=int, metavar="N", help="links to follow (-1: all)")
    rd.add_argument("--depth", type=int, metavar="N", help="submachine levels (-1: all)")
    for flag, text in _RENDER_FLAGS:
        rd.add_argument(
            f"--render-{flag}",
            dest=f"render_{flag.replace('-', '_')}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{text} (default: the preset's)",
        )
    _common(rd)
    tx = sub.add_parser(
        "tx",
        help="a sequence diagram of one recorded transition",
        description="Draw the steps of one transition of a recording.",
    )
    tx.add_argument("file", help="FILE.amdbg")
    tx.add_argument("url", help="mach://ID/TX_ID or mach://ID?i=N (1-based)")
    _common(tx)
    ins = sub.add_parser(
        "inspect",
        help="markdown (or XML) dump of a recording's machines and links",
        description="Dump the machines of a recording: states and ticks, aRPC links, "
        "pipes; markdown, or XML with --xml. With -o NAME both NAME.md and NAME.xml.",
    )
    ins.add_argument("file", help="FILE.amdbg")
    ins.add_argument("--xml", action="store_true", help="print XML instead of markdown")
    _common(ins, formats=False)
    return ap


def _pick_client(model: Any, url: str | None) -> tuple[Any, int]:
    """The client (and its cursor) a ``vis schema`` of a recording draws."""
    if url:
        mid = vis.url_machine(url)
        cl = model.clients.get(mid)
        if cl is None:
            raise VisError(f"no machine {mid!r} in the recording")
        u = urlsplit(url.strip())
        q = parse_qs(u.query)
        if u.path.strip("/") or any(k in q for k in ("i", "t", "q", "ht")):
            _cl, _tx, no = vis.find_tx(model, url)
            return cl, no
        return cl, len(cl.txs)
    ids = list(model.clients)
    if len(ids) == 1:
        cl = model.clients[ids[0]]
        return cl, len(cl.txs)
    if not ids:
        raise VisError("the recording has no machines")
    raise VisError(
        "the recording has several machines, pick one with mach://ID: "
        + ", ".join(f"mach://{i}" for i in ids[:10])
        + (" ..." if len(ids) > 10 else ""),
        code=2,
    )


def _schema(ns: argparse.Namespace) -> str:
    src: str = ns.source
    path = Path(src)
    if path.is_file() and not src.endswith(".py"):
        model = vis.load(path)
        cl, c = _pick_client(model, ns.url)
        schema = {n: cl.states.get(n) for n in cl.names}
        ticks = cl.time_at(c)
        active = [n for i, n in enumerate(cl.names) if i < len(ticks) and ticks[i] & 1]
        return vis.schema_diagram(schema, ns.format, active=active, inherited=not ns.no_inherited)
    if ":" not in src:
        if src.endswith(".amdbg"):
            raise VisError(f"{src}: no such file")
        raise VisError(f"bad source {src!r}: expected MODULE:ATTR or a FILE.amdbg", code=2)
    if ns.url:
        raise VisError("mach:// addresses go with recordings, not MODULE:ATTR", code=2)
    obj = vis.load_schema_ref(src)
    return vis.schema_diagram(obj, ns.format, inherited=not ns.no_inherited)


def _render(ns: argparse.Namespace) -> str:
    opts: dict[str, Any] = {"distance": ns.distance, "depth": ns.depth}
    for flag, _text in _RENDER_FLAGS:
        key = flag.replace("-", "_")
        opts[key] = getattr(ns, f"render_{key}")
    return vis.graph_diagram(ns.file, ns.url, preset=ns.preset, fmt=ns.format, **opts)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise VisError(f"cannot write {path}: {exc.strerror or exc}") from exc
    print(f"wrote {path}")


def _svg(src: Path, fmt: str) -> None:
    tool = "mmdc" if fmt == "mermaid" else "d2"
    exe = shutil.which(tool)
    if exe is None:
        hint = "npm i -g @mermaid-js/mermaid-cli" if tool == "mmdc" else "https://d2lang.com"
        raise VisError(f"--svg needs {tool} on PATH ({hint})")
    out = src.with_suffix(".svg")
    cmd = [exe, "-i", str(src), "-o", str(out)] if tool == "mmdc" else [exe, str(src), str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VisError(f"{tool} failed: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise VisError(f"{tool} failed (exit {proc.returncode}): {' '.join(tail)}")
    print(f"wrote {out}")


def _output(ns: argparse.Namespace, text: str) -> None:
    fmt = getattr(ns, "format", "mermaid")
    if not ns.output:
        if getattr(ns, "svg", False):
            raise VisError("--svg needs -o NAME", code=2)
        sys.stdout.write(text)
        return
    ext = _EXT[fmt]
    path = Path(ns.output)
    if path.suffix != ext:
        path = path.with_name(path.name + ext)
    _write(path, text)
    if ns.svg:
        _svg(path, fmt)


def main(argv: list[str] | None = None) -> int:
    """Run ``trio-am vis`` with ``argv`` (the arguments after ``vis``); return the exit
    code."""
    args = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    try:
        ns = ap.parse_args(args)
    except SystemExit as exc:  # -h (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if ns.kind is None:
        ap.print_usage(sys.stderr)
        print(
            "trio-am vis: error: a subcommand is needed: schema, render, tx or inspect",
            file=sys.stderr,
        )
        return 2
    try:
        if ns.kind == "schema":
            _output(ns, _schema(ns))
        elif ns.kind == "render":
            _output(ns, _render(ns))
        elif ns.kind == "tx":
            _output(ns, vis.tx_diagram(ns.file, ns.url, ns.format))
        else:
            g = vis.build_graph(vis.load(ns.file))
            if ns.output:
                base = Path(ns.output)
                if base.suffix in (".md", ".xml"):
                    base = base.with_suffix("")
                _write(base.with_name(base.name + ".md"), vis.inspect(g, "md"))
                _write(base.with_name(base.name + ".xml"), vis.inspect(g, "xml"))
            else:
                sys.stdout.write(vis.inspect(g, "xml" if ns.xml else "md"))
    except VisError as exc:
        print(f"trio-am vis: error: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
