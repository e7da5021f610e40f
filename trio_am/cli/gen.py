"""``trio-am gen``: typed states modules and Grafana dashboards (tools.md §3.3).

    trio-am gen states --name MyMach --states SPEC [--states-file FILE] [--inherit LIST]
                       [--groups SPEC] [--force] [-o DIR] [--stdout]
    trio-am gen states --add ss_my_mach.py --states SPEC [--groups SPEC] [--inherit LIST]
    trio-am gen grafana --ids a,b --name N --source S [--grafana-url U [--folder F]]

SPEC: ``Name[:auto][:multi][:rel(A;B)]...`` separated by commas, ``rel`` one of
require, add, remove, after; a target ``_Group`` means every state of a group. Groups:
``Name`` or ``Name(A;B)``. LIST: some of basic, connected, disposed, rpc/statesrc,
node/worker.

Exit codes: 0 done, 1 the file exists (without ``--force``) or cannot be read or written,
or Grafana refused; 2 bad flags, a bad SPEC or an unknown inherit.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from ..gen import (
    INHERITS,
    GenError,
    MachSpec,
    generate,
    mach_name,
    parse_groups,
    parse_inherit,
    parse_states,
    read_module,
    write_states,
)
from ..gen import grafana as _grafana

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as ``trio-am gen: ...`` with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The ``trio-am gen`` argument parser."""
    ap = _Parser(
        prog="trio-am gen",
        description="Generate typed states modules and Grafana dashboards.",
    )
    sub = ap.add_subparsers(dest="what", metavar="{states,grafana}", parser_class=_Parser)
    st = sub.add_parser(
        "states",
        help="write ss_<name>.py: a typed states class, groups, schema and constructor",
        description="Write ss_<name>.py: <Name>States (typed states + inherited classes), "
        "<Name>Groups, <NAME>_SCHEMA (merged with the inherited schemas), new_<name>(**kw).",
        epilog="SPEC: Name[:auto][:multi][:rel(A;B)]... separated by commas; rel is "
        "require, add, remove or after; a target _Group means every state of a group. "
        "Example: --states 'Foo:auto,Bar:multi:require(Foo),Baz:remove(_Modes)' "
        "--groups 'Modes(Foo;Bar)' --inherit basic",
    )
    st.add_argument("-n", "--name", help="machine name, e.g. MyMach (default with --add: its own)")
    st.add_argument("-s", "--states", help="states SPEC, e.g. Foo:auto,Bar:require(Foo)")
    st.add_argument(
        "--states-file",
        metavar="FILE",
        help="read the states SPEC from FILE (commas or one state a line, # comments)",
    )
    st.add_argument(
        "-i",
        "--inherit",
        default="",
        help=f"build on reusable schemas, comma separated: {','.join(INHERITS)}",
    )
    st.add_argument("-g", "--groups", default="", help="groups: Name or Name(A;B), comma separated")
    st.add_argument("-f", "--force", action="store_true", help="overwrite an existing file")
    st.add_argument("-o", "--output", metavar="DIR", help="output directory (default: .)")
    st.add_argument(
        "-a",
        "--add",
        metavar="FILE",
        help="add the states (and groups, inherits) to this generated module, keeping its own",
    )
    st.add_argument("--stdout", action="store_true", help="print the module instead of writing it")
    gr = sub.add_parser(
        "grafana",
        help="print (or upload) a Grafana dashboard for machines' metrics and logs",
        description="Print a Grafana dashboard JSON for the machines' Prometheus metrics "
        "and Loki logs; with --grafana-url, create or update it there (token in "
        "AM_GRAFANA_TOKEN).",
    )
    gr.add_argument("-i", "--ids", required=True, help="machine ids, comma separated")
    gr.add_argument("-n", "--name", required=True, help="dashboard name")
    gr.add_argument("-s", "--source", required=True, help="the machines' AM_SERVICE (job)")
    gr.add_argument("-g", "--grafana-url", help="Grafana URL to upsert the dashboard to")
    gr.add_argument("-f", "--folder", help="dashboard folder (with --grafana-url)")
    return ap


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise GenError(f"cannot read {path}: {exc.strerror or exc}", code=1) from exc
    except UnicodeDecodeError as exc:
        raise GenError(f"cannot read {path}: not UTF-8 text", code=2) from exc


def _states(ns: argparse.Namespace, argv: list[str]) -> int:
    spec_text = ""
    if ns.states_file:
        spec_text += _read(ns.states_file) + "\n"
    if ns.states:
        spec_text += ns.states
    if not spec_text.strip() and not ns.add:
        raise GenError("no states: give --states SPEC (or --states-file FILE)")
    states = parse_states(spec_text) if spec_text.strip() else []
    groups = parse_groups(ns.groups)
    inherit = parse_inherit(ns.inherit)
    replace: Path | None = None
    if ns.add:
        replace = Path(ns.add)
        base = read_module(replace)
        if ns.name and mach_name(ns.name) != base.name:
            raise GenError(f"--name {ns.name} does not match the module's machine {base.name}")
        if not states and not groups and not inherit:
            raise GenError("nothing to add: give --states, --groups or --inherit")
        spec = base.extend(states, groups, inherit)
        out_dir = Path(ns.output) if ns.output else replace.parent
    else:
        if not ns.name:
            raise GenError("--name is required (e.g. --name MyMach)")
        spec = MachSpec(mach_name(ns.name), tuple(states), tuple(groups), inherit)
        out_dir = Path(ns.output or ".")
    command = "trio-am gen " + shlex.join(a for a in argv if a != "--stdout")
    if ns.stdout:
        sys.stdout.write(generate(spec, command=command))
        return 0
    path = write_states(spec, out_dir, force=ns.force, command=command, replace=replace)
    print(f"wrote {path}")
    return 0


def _grafana_cmd(ns: argparse.Namespace) -> int:
    board = _grafana.dashboard(ns.ids.split(","), ns.name, ns.source)
    if ns.folder and not ns.grafana_url:
        raise GenError("--folder needs --grafana-url")
    if not ns.grafana_url:
        print(json.dumps(board, indent=2))
        return 0
    res = _grafana.upsert(
        board, ns.grafana_url, os.environ.get("AM_GRAFANA_TOKEN", ""), folder=ns.folder
    )
    where = res.get("url") or res.get("uid") or board["uid"]
    print(f"dashboard {ns.name!r} saved: {where}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``trio-am gen`` with ``argv`` (the arguments after ``gen``); return the exit
    code."""
    args = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    try:
        ns = ap.parse_args(args)
    except SystemExit as exc:  # -h (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if ns.what is None:
        ap.print_usage(sys.stderr)
        print("trio-am gen: error: a subcommand is needed: states or grafana", file=sys.stderr)
        return 2
    try:
        if ns.what == "states":
            return _states(ns, args)
        return _grafana_cmd(ns)
    except GenError as exc:
        print(f"trio-am gen: error: {exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
