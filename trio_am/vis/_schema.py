"""Schema diagrams: a node per state, an edge per relation (tools.md §3.4).

Mermaid: ``flowchart LR`` with edges ``A -- require --> B`` (``add``, ``remove``,
``after``); D2: ``A -> B: require``. Active states get the ``active`` class; auto and
multi states say so in their label.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._core._schema import State
from ._text import (
    IdMap,
    VisError,
    d2_key,
    d2_str,
    library_states,
    mermaid_label,
    relations,
    state_of,
)

__all__ = ["load_schema_ref", "schema_d2", "schema_mermaid", "schema_parts"]

ACTIVE_FILL = "#ffd54f"


def schema_parts(source: Any) -> tuple[dict[str, State], list[str]]:
    """``(schema, active states)`` of a schema mapping, a machine (its schema and active
    states) or a debugger client (its schema and the states active after its last
    record).

    Raises:
        VisError: ``source`` is none of these.
    """
    if isinstance(source, Mapping):
        try:
            return {str(k): state_of(v) for k, v in source.items()}, []
        except (TypeError, ValueError) as exc:
            raise VisError(f"not a schema: {exc}") from exc
    schema = getattr(source, "schema", None)
    if isinstance(schema, Mapping) and hasattr(source, "active_states"):
        return {k: state_of(v) for k, v in schema.items()}, list(source.active_states())
    states = getattr(source, "states", None)
    names = getattr(source, "names", None)
    if isinstance(states, Mapping) and isinstance(names, list):
        ticks = source.time_at(len(source.txs)) if hasattr(source, "time_at") else []
        active = [n for i, n in enumerate(names) if i < len(ticks) and ticks[i] & 1]
        return {n: state_of(states.get(n)) for n in names}, active
    raise VisError(
        f"cannot draw a schema from {type(source).__name__}: expected a schema mapping, "
        "a machine or a recorded client"
    )


def _filter(
    schema: Mapping[str, State], inherited: bool, only: Iterable[str] | None
) -> dict[str, State]:
    keep = set(only) if only is not None else None
    lib = library_states() if not inherited else frozenset()
    return {n: st for n, st in schema.items() if n not in lib and (keep is None or n in keep)}


def _label(name: str, st: State) -> str | None:
    flags = [f for f in ("auto", "multi") if getattr(st, f)]
    return f"{name} ({', '.join(flags)})" if flags else None


def schema_mermaid(
    source: Any,
    *,
    active: Iterable[str] | None = None,
    inherited: bool = True,
    only: Iterable[str] | None = None,
    direction: str = "LR",
) -> str:
    """A mermaid ``flowchart`` of a schema (see :func:`schema_parts` for ``source``).

    ``active`` overrides the active states; ``inherited=False`` leaves out the states of
    trio_am's reusable schemas (``Start``, ``Exception``...); ``only`` keeps just these
    states.
    """
    schema, act = schema_parts(source)
    if active is not None:
        act = list(active)
    shown = _filter(schema, inherited, only)
    ids = IdMap("s")
    out = [f"flowchart {direction}"]
    lines: list[str] = []
    for name, st in shown.items():
        sid = ids(name)
        label = _label(name, st)
        if label is not None or sid != name:
            lines.append(f"    {sid}[{mermaid_label(label or name)}]")
        else:
            lines.append(f"    {sid}")
    for name, st in shown.items():
        for rel, target in relations(name, st):
            if target in shown:
                lines.append(f"    {ids(name)} -- {rel} --> {ids(target)}")
    on = [ids(n) for n in act if n in shown]
    if on:
        out.append(f"    classDef active fill:{ACTIVE_FILL},stroke:#333,color:#000")
    out += lines
    if on:
        out.append(f"    class {','.join(on)} active")
    return "\n".join(out) + "\n"


def schema_d2(
    source: Any,
    *,
    active: Iterable[str] | None = None,
    inherited: bool = True,
    only: Iterable[str] | None = None,
    direction: str = "right",
) -> str:
    """A D2 diagram of a schema: a shape per state, ``A -> B: require`` per relation
    (arguments as for :func:`schema_mermaid`)."""
    schema, act = schema_parts(source)
    if active is not None:
        act = list(active)
    shown = _filter(schema, inherited, only)
    on = [n for n in act if n in shown]
    out = [f"direction: {direction}"]
    if on:
        out += ["classes: {", f'  active: {{style.fill: "{ACTIVE_FILL}"}}', "}"]
    for name, st in shown.items():
        label = _label(name, st)
        out.append(f"{d2_key(name)}: {d2_str(label)}" if label else d2_key(name))
    for name, st in shown.items():
        for rel, target in relations(name, st):
            if target in shown:
                out.append(f"{d2_key(name)} -> {d2_key(target)}: {rel}")
    out += [f"{d2_key(n)}.class: active" for n in on]
    return "\n".join(out) + "\n"


def load_schema_ref(ref: str) -> Any:
    """Import ``MODULE:ATTR`` or ``path/file.py:ATTR`` (dots in ATTR walk attributes)
    and return the object; the current directory is importable, as with ``python -m``.

    Raises:
        VisError: a bad reference, a module that cannot be imported, a missing attribute.
    """
    mod_ref, sep, attr = ref.rpartition(":")
    if not sep or not mod_ref or not attr:
        raise VisError(f"bad schema reference {ref!r}: expected MODULE:ATTR", code=2)
    try:
        if mod_ref.endswith(".py") or os.sep in mod_ref or "/" in mod_ref:
            path = Path(mod_ref)
            if not path.is_file():
                raise VisError(f"{path}: no such file")
            name = f"_trio_am_vis_{uuid.uuid4().hex}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise VisError(f"{path}: not a Python module")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
            finally:
                sys.modules.pop(name, None)
        else:
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)
            mod = importlib.import_module(mod_ref)
    except VisError:
        raise
    except Exception as exc:
        raise VisError(f"cannot import {mod_ref}: {type(exc).__name__}: {exc}") from exc
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise VisError(f"{mod_ref} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
