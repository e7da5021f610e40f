"""Diagrams of schemas, machine graphs and transitions, as mermaid or D2 text
(tools.md §3.4; the library behind ``trio-am vis``).

Every function returns a string; in a notebook, :func:`show` renders mermaid text
(JupyterLab ≥ 4.1 and GitHub render fenced ``mermaid`` blocks)::

    import trio_am.vis as vis

    vis.show(vis.schema_diagram(MY_SCHEMA))            # relations of a schema
    rec = vis.load("session.amdbg")                    # a debugger recording
    vis.show(vis.tx_diagram(rec, "mach://fx-a?i=3"))   # one transition's steps
    vis.show(vis.graph_diagram(rec, preset="map"))     # machines and their links
    print(vis.inspect(rec))                            # markdown dump (or fmt="xml")

Sources: a schema mapping, a machine, or a recorded client (``rec.clients["fx-a"]``) for
schemas; a :class:`~trio_am.dbg.Model` or a ``.amdbg`` path for the rest.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ._graph import PRESETS as PRESETS
from ._graph import Graph as Graph
from ._graph import Link as Link
from ._graph import MachNode as MachNode
from ._graph import RenderOptions as RenderOptions
from ._graph import build_graph as build_graph
from ._graph import graph_d2 as graph_d2
from ._graph import graph_mermaid as graph_mermaid
from ._graph import inspect_markdown as inspect_markdown
from ._graph import inspect_xml as inspect_xml
from ._graph import preset as preset
from ._schema import load_schema_ref as load_schema_ref
from ._schema import schema_d2 as schema_d2
from ._schema import schema_mermaid as schema_mermaid
from ._text import FORMATS as FORMATS
from ._text import VisError as VisError
from ._tx import find_tx as find_tx
from ._tx import state_trace as state_trace
from ._tx import tx_d2 as tx_d2
from ._tx import tx_mermaid as tx_mermaid
from ._tx import url_machine as url_machine

if TYPE_CHECKING:
    from ..dbg.model import Model

__all__ = [
    "FORMATS",
    "PRESETS",
    "Graph",
    "Link",
    "MachNode",
    "RenderOptions",
    "VisError",
    "build_graph",
    "find_tx",
    "graph_d2",
    "graph_diagram",
    "graph_mermaid",
    "inspect",
    "inspect_markdown",
    "inspect_xml",
    "load",
    "load_schema_ref",
    "markdown",
    "preset",
    "schema_d2",
    "schema_diagram",
    "schema_mermaid",
    "show",
    "state_trace",
    "tx_d2",
    "tx_diagram",
    "tx_mermaid",
    "url_machine",
]


def _fmt(fmt: str) -> str:
    if fmt not in FORMATS:
        raise VisError(f"unknown format {fmt!r}: expected {' or '.join(FORMATS)}", code=2)
    return fmt


def load(source: Model | str | os.PathLike[str]) -> Model:
    """A debugger model: ``source`` itself, or the ``.amdbg`` recording it names.

    Raises:
        VisError: the file is missing or not a readable recording.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    import warnings

    from ..dbg.recording import RecordingError
    from ..dbg.recording import load as load_rec

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a truncated file: its readable part
            return load_rec(source)
    except FileNotFoundError as exc:
        raise VisError(f"{source}: no such file") from exc
    except IsADirectoryError as exc:
        raise VisError(f"{source}: is a directory") from exc
    except (RecordingError, OSError) as exc:
        raise VisError(str(exc)) from exc


def schema_diagram(source: Any, fmt: str = "mermaid", **kw: Any) -> str:
    """Mermaid or D2 text of a schema, a machine's schema or a recorded client's
    (``active=``, ``inherited=``, ``only=`` as in :func:`schema_mermaid`)."""
    return schema_mermaid(source, **kw) if _fmt(fmt) == "mermaid" else schema_d2(source, **kw)


def tx_diagram(source: Model | str | os.PathLike[str], url: str, fmt: str = "mermaid") -> str:
    """The sequence diagram of the transition ``url`` names (``mach://ID/TX_ID`` or
    ``mach://ID?i=N``) in a recording."""
    _fmt(fmt)
    model = load(source)
    cl, tx, no = find_tx(model, url)
    fn = tx_mermaid if fmt == "mermaid" else tx_d2
    return fn(cl, tx, no, model)


def graph_diagram(
    source: Model | str | os.PathLike[str] | Graph,
    mach: str | None = None,
    *,
    preset: str = "single",
    fmt: str = "mermaid",
    **options: Any,
) -> str:
    """Machines of a recording, their states and links: all of them, or those around
    ``mach`` (an id or ``mach://ID``) as the preset and ``options``
    (:class:`RenderOptions` fields) say."""
    from ._graph import preset as _preset

    _fmt(fmt)
    opts = _preset(preset, **options)
    g = source if isinstance(source, Graph) else build_graph(load(source))
    roots = None
    if mach:
        roots = [url_machine(mach) if "://" in mach else mach]
    return graph_mermaid(g, roots, opts) if fmt == "mermaid" else graph_d2(g, roots, opts)


def inspect(source: Model | str | os.PathLike[str] | Graph, fmt: str = "md") -> str:
    """Markdown (``fmt="md"``) or XML (``"xml"``) dump of a recording's machines, their
    states, aRPC links and pipes."""
    if fmt not in ("md", "xml"):
        raise VisError(f"unknown inspect format {fmt!r}: expected md or xml", code=2)
    g = source if isinstance(source, Graph) else build_graph(load(source))
    return inspect_markdown(g) if fmt == "md" else inspect_xml(g)


def markdown(text: str) -> str:
    """``text`` in a fenced block: ```` ```mermaid ```` for mermaid, ```` ```d2 ```` for D2."""
    words = text.split(None, 1)
    first = words[0] if words else ""
    kind = "mermaid" if first.startswith("%%") or first in _MERMAID_KINDS else "d2"
    return f"```{kind}\n{text.rstrip()}\n```\n"


_MERMAID_KINDS = frozenset(
    {"flowchart", "graph", "sequenceDiagram", "stateDiagram", "stateDiagram-v2", "classDiagram"}
)


def show(text: str) -> Any:
    """An ``IPython.display.Markdown`` of :func:`markdown` (the notebook renders the
    diagram), or the fenced text itself when IPython is not installed."""
    md = markdown(text)
    try:
        from IPython.display import Markdown
    except ImportError:
        return md
    return Markdown(md)  # type: ignore[no-untyped-call]
