"""Generators behind ``trio-am gen`` (tools.md §3.3): typed states modules and Grafana
dashboards.

States modules::

    spec = MachSpec("MyMach", tuple(parse_states("Foo:auto,Bar:require(Foo)")),
                    inherit=("basic",))
    text = generate(spec)                      # the text of ss_my_mach.py
    write_states(spec, "states/")              # or write it (exists -> GenError, code 1)
    old = read_module("states/ss_my_mach.py")  # read a generated module back ...
    write_states(old.extend(parse_states("Baz")), "states/", force=True)  # ... and extend it

Grafana: :func:`trio_am.gen.grafana.dashboard` and :func:`trio_am.gen.grafana.upsert`.
"""

from __future__ import annotations

from pathlib import Path

from . import grafana as grafana
from ._module import Resolved as Resolved
from ._module import read_module as read_module
from ._module import render_module as render_module
from ._module import resolve as resolve
from ._spec import INHERITS as INHERITS
from ._spec import RELATIONS as RELATIONS
from ._spec import GenError as GenError
from ._spec import GroupSpec as GroupSpec
from ._spec import Inherit as Inherit
from ._spec import MachSpec as MachSpec
from ._spec import StateSpec as StateSpec
from ._spec import mach_name as mach_name
from ._spec import parse_groups as parse_groups
from ._spec import parse_inherit as parse_inherit
from ._spec import parse_states as parse_states
from ._spec import snake_case as snake_case

__all__ = [
    "INHERITS",
    "RELATIONS",
    "GenError",
    "GroupSpec",
    "Inherit",
    "MachSpec",
    "Resolved",
    "StateSpec",
    "generate",
    "grafana",
    "mach_name",
    "parse_groups",
    "parse_inherit",
    "parse_states",
    "read_module",
    "render_module",
    "resolve",
    "snake_case",
    "write_states",
]


def generate(spec: MachSpec, *, command: str | None = None) -> str:
    """Check ``spec`` and return the text of its states module.

    Raises:
        GenError: bad spec or unknown inherit (exit 2).
    """
    return render_module(resolve(spec), command=command)


def write_states(
    spec: MachSpec,
    out_dir: str | Path = ".",
    *,
    force: bool = False,
    command: str | None = None,
    replace: Path | None = None,
) -> Path:
    """Write ``ss_<name>.py`` into ``out_dir`` and return its path.

    ``replace``: a file that may be overwritten without ``force`` (the module being
    extended).

    Raises:
        GenError: the file exists and ``force`` is off (exit 1, "exists"), it cannot be
            written (exit 1), or the spec is bad (exit 2).
    """
    text = generate(spec, command=command)
    d = Path(out_dir)
    path = d / f"{spec.module_name}.py"
    same = replace is not None and path.resolve() == replace.resolve()
    if path.exists() and not force and not same:
        raise GenError(f"{path} exists (use --force to overwrite it)", code=1)
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise GenError(f"cannot write {path}: {exc.strerror or exc}", code=1) from exc
    return path
