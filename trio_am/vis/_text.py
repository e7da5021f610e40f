"""Identifiers, labels and small helpers shared by the diagram writers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .._core._schema import State

__all__ = [
    "FORMATS",
    "IdMap",
    "VisError",
    "d2_key",
    "d2_str",
    "library_states",
    "mermaid_label",
    "mermaid_safe",
    "natural_key",
    "relations",
    "state_of",
]

#: Output formats of every diagram.
FORMATS: Final = ("mermaid", "d2")

_SAFE_ID: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# words mermaid's flowchart and sequence lexers treat as keywords (any case, to be safe)
_MERMAID_WORDS: Final = frozenset(
    {
        "end",
        "graph",
        "flowchart",
        "subgraph",
        "style",
        "class",
        "classdef",
        "click",
        "linkstyle",
        "direction",
        "participant",
        "actor",
        "note",
        "loop",
        "alt",
        "else",
        "opt",
        "par",
        "and",
        "rect",
        "critical",
        "break",
        "activate",
        "deactivate",
        "title",
        "autonumber",
        "box",
        "create",
        "destroy",
        "links",
        "link",
        "default",
    }
)
# D2 reserved keywords (matched case-insensitively)
_D2_WORDS: Final = frozenset(
    {
        "label",
        "shape",
        "icon",
        "width",
        "height",
        "style",
        "class",
        "classes",
        "direction",
        "near",
        "tooltip",
        "link",
        "constraint",
        "top",
        "left",
        "grid-rows",
        "grid-columns",
        "grid-gap",
        "vertical-gap",
        "horizontal-gap",
        "vars",
        "source-arrowhead",
        "target-arrowhead",
        "layers",
        "scenarios",
        "steps",
        "null",
        "true",
        "false",
        "filled",
    }
)


class VisError(ValueError):
    """A diagram cannot be made: a bad address, an unknown machine or transition, a
    schema that cannot be loaded. ``code`` is the CLI's exit status (1, or 2 for bad
    input on the command line)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def natural_key(s: str) -> list[tuple[int, int, str]]:
    """Sort key: digit runs compare as numbers (``w2`` before ``w10``)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s) if p]


def mermaid_safe(name: str) -> bool:
    """Whether ``name`` can be a mermaid node id as it is."""
    return bool(_SAFE_ID.match(name)) and name.lower() not in _MERMAID_WORDS


def mermaid_label(text: str) -> str:
    """``text`` as a quoted mermaid label (quotes and brackets escaped as entities)."""
    esc = (
        text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    )
    return f'"{esc}"'


class IdMap:
    """Stable, unique mermaid ids: safe names stay as they are, others get ``prefix``
    and a number."""

    def __init__(self, prefix: str = "n") -> None:
        self.prefix = prefix
        self.ids: dict[str, str] = {}
        self.used: set[str] = set()

    def __call__(self, name: str) -> str:
        got = self.ids.get(name)
        if got is not None:
            return got
        cand = name if mermaid_safe(name) else f"{self.prefix}{len(self.ids) + 1}"
        while cand in self.used:
            cand = f"{self.prefix}{len(self.ids) + 1}_{len(self.used)}"
        self.ids[name] = cand
        self.used.add(cand)
        return cand

    def safe(self, name: str) -> bool:
        """Whether ``name`` is its own id."""
        return self(name) == name


def d2_str(text: str) -> str:
    """``text`` as a double-quoted D2 string."""
    esc = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{esc}"'


def d2_key(name: str) -> str:
    """``name`` as a D2 key: bare when safe, else quoted."""
    if _SAFE_ID.match(name) and name.lower() not in _D2_WORDS:
        return name
    return d2_str(name)


def state_of(value: Any) -> State:
    """A :class:`~trio_am.State` from a State, a dict or a debugger ``StateInfo``."""
    if isinstance(value, State):
        return value
    if value is None:
        return State()
    if isinstance(value, Mapping):
        return State(**{k: v for k, v in value.items() if k in _STATE_FIELDS})
    return State(**{k: getattr(value, k) for k in _STATE_FIELDS if hasattr(value, k)})


_STATE_FIELDS: Final = ("auto", "multi", "require", "add", "remove", "after", "tags")
_LIBRARY: set[str] | None = None


def library_states() -> frozenset[str]:
    """Names of the states of trio_am's reusable schemas (basic, connected, disposed,
    aRPC state source): what diagrams call *inherited*."""
    global _LIBRARY
    if _LIBRARY is None:
        names: set[str] = {"Exception"}
        from ..schemas import BasicStates, ConnectedStates, DisposedStates

        for cls in (BasicStates, ConnectedStates, DisposedStates):
            names.update(cls.names())
        try:
            from ..rpc.states import SourceStates

            names.update(SourceStates.names())
        except ImportError:  # pragma: no cover - the rpc extra is part of trio_am
            pass
        _LIBRARY = names
    return frozenset(_LIBRARY)


def relations(name: str, st: State) -> Iterable[tuple[str, str]]:
    """``(relation, target)`` pairs of a state, self-removal (a group) left out."""
    for rel in ("require", "add", "remove", "after"):
        for target in getattr(st, rel):
            if rel == "remove" and target == name:
                continue
            yield rel, target
