"""Writing (and reading back) a generated states module ``ss_<name>.py``.

The module holds, for machine ``MyMach``: ``MyMachStates`` (an ``am.States`` class built
on the inherited state classes), ``ss`` (an instance, for short references),
``MyMachGroups`` (named groups as tuples), ``MY_MACH_SCHEMA`` (the inherited schemas
merged with the machine's own) and ``new_my_mach(**kw)``.

The text is laid out the way ``ruff format`` lays it out (lines of at most 88 columns,
exploded brackets with a trailing comma), so that it passes ``ruff format --check``,
``ruff check`` and ``mypy --strict`` as written.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import textwrap
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from .._core._schema import BUILTIN_EXCEPTION, NAME_RE, State, normalize_schema, schema_merge
from .._core._states import States
from .._errors import SchemaError
from ._spec import INHERITS, RELATIONS, GenError, GroupSpec, MachSpec, StateSpec

__all__ = ["Resolved", "read_module", "render_module", "resolve"]

#: Line length of generated code (ruff's default, so the file needs no configuration).
LINE: Final = 88


@attrs.frozen
class Resolved:
    """A :class:`MachSpec` checked against the inherited schemas.

    ``bases`` are the inherit keys whose classes the states class extends (keys covered
    by another one, e.g. ``basic`` under ``node/worker``, are dropped); ``names`` are
    every state name of the states class; ``schema`` the merged, checked schema;
    ``inherited_groups`` maps group names to ``(module constant, states)``.
    """

    spec: MachSpec
    bases: tuple[str, ...]
    inherited: tuple[str, ...]
    names: tuple[str, ...]
    schema: dict[str, State]
    inherited_groups: dict[str, tuple[str, str, tuple[str, ...]]]

    @property
    def own(self) -> tuple[str, ...]:
        """Names the states class declares itself."""
        return tuple(s.name for s in self.spec.states if s.name not in self.inherited)


def resolve(spec: MachSpec) -> Resolved:
    """Check ``spec``: inherits, names, group members, relation targets and the merged
    schema (as a machine would check it).

    Raises:
        GenError: anything a machine would refuse, or an unknown inherit (exit 2).
    """
    loaded = {k: INHERITS[k].load() for k in spec.inherit}
    classes = {k: v[0] for k, v in loaded.items()}
    bases = [
        k
        for k in spec.inherit
        if not any(o != k and issubclass(classes[o], classes[k]) for o in spec.inherit)
    ]
    # drop duplicates of the same class
    uniq: list[str] = []
    for k in bases:
        if all(classes[k] is not classes[u] for u in uniq):
            uniq.append(k)
    bases = uniq
    try:
        type("_Check", tuple(classes[k] for k in bases), {})
    except TypeError as exc:
        raise GenError(f"these inherits cannot be combined: {exc}") from exc
    inherited: list[str] = []
    for k in bases:
        for n in classes[k].names():
            if n not in inherited:
                inherited.append(n)
    igroups: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    for k in bases:
        consts = dict(INHERITS[k].groups)
        for g, members in loaded[k][2].items():
            igroups[g] = (INHERITS[k].module, consts[g], members)
    names = list(inherited)
    for s in spec.states:
        if s.name not in names:
            names.append(s.name)
    known = set(names) | {BUILTIN_EXCEPTION}
    groups: dict[str, tuple[str, ...]] = {g: m for g, (_mod, _c, m) in igroups.items()}
    for grp in spec.groups:
        if grp.name in groups:
            raise GenError(f"group {grp.name} is also an inherited group")
        for member in grp.states:
            if member not in known:
                raise GenError(f"group {grp.name}: {member} is not a state of this machine")
        groups[grp.name] = grp.states
    for s in spec.states:
        for t in s.targets():
            if t.startswith("_"):
                if t[1:] not in groups:
                    raise GenError(f"state {s.name}: no group {t[1:]} (add it with --groups)")
            elif t not in known:
                raise GenError(f"state {s.name}: relation to {t}, which is not a state")
    own = {s.name: _concrete(s, groups) for s in spec.states}
    merged = schema_merge(*(loaded[k][1] for k in bases), own)
    try:
        normalize_schema(merged)
    except SchemaError as exc:
        hint = ""
        if "not a state of the schema" in str(exc) and "basic" not in bases:
            hint = " (inherit basic too?)"
        raise GenError(f"the schema would not work: {exc}{hint}") from exc
    return Resolved(spec, tuple(bases), tuple(inherited), tuple(names), merged, igroups)


def _concrete(s: StateSpec, groups: Mapping[str, Sequence[str]]) -> State:
    def expand(targets: Sequence[str]) -> list[str]:
        out: list[str] = []
        for t in targets:
            for n in groups[t[1:]] if t.startswith("_") else (t,):
                if n not in out:
                    out.append(n)
        return out

    return State(
        auto=s.auto,
        multi=s.multi,
        require=expand(s.require),
        add=expand(s.add),
        remove=expand(s.remove),
        after=expand(s.after),
        tags=s.tags,
    )


# ---------------------------------------------------------------------------- layout
@attrs.frozen
class _Seq:
    """A bracketed list of items: ``head`` (ends with the opening bracket), items, close."""

    head: str
    items: tuple[_Node, ...]
    close: str
    explode: bool = False
    tuple_: bool = False  # a one-item tuple keeps its comma


_Node = str | _Seq


def _flat(node: _Node) -> str:
    if isinstance(node, str):
        return node
    comma = "," if node.tuple_ and len(node.items) == 1 else ""
    return node.head + ", ".join(_flat(i) for i in node.items) + comma + node.close


def _comment(text: str) -> list[str]:
    """A ``#:`` comment, wrapped."""
    return textwrap.wrap(
        text, LINE, initial_indent="#: ", subsequent_indent="#: ", break_long_words=False
    )


def _docstring(text: str, indent: int) -> list[str]:
    """A docstring: one line when it fits, else wrapped with the quotes on their own
    line at the end."""
    pad = " " * indent
    if indent + len(text) + 6 <= LINE:
        return [f'{pad}"""{text}"""']
    lines = textwrap.wrap(text, LINE - indent - 3, break_long_words=False, break_on_hyphens=False)
    return [f'{pad}"""{lines[0]}', *(pad + ln for ln in lines[1:]), f'{pad}"""']


def _lines(node: _Node, indent: int, trail: str = "") -> list[str]:
    pad = " " * indent
    if isinstance(node, str):
        return [pad + node + trail]
    flat = _flat(node)
    if not node.explode and (not node.items or indent + len(flat) + len(trail) <= LINE):
        return [pad + flat + trail]
    out = [pad + node.head]
    for item in node.items:
        out.extend(_lines(item, indent + 4, ","))
    out.append(pad + node.close + trail)
    return out


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's isort "order-by-type": CONSTANTS, then Classes, then the rest
    if name.isupper() and len(name) > 1:
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return kind, name.lower()


# ---------------------------------------------------------------------------- render
def render_module(res: Resolved, *, command: str | None = None) -> str:
    """The text of the module for a resolved spec. ``command`` (the generating command
    line) goes into the module docstring."""
    spec = res.spec
    S, G = spec.states_class, spec.groups_class
    names = set(res.names)
    own_groups = {g.name: g.states for g in spec.groups}

    def ref(t: str) -> str:
        if t.startswith("_"):
            return f"*{G}.{t[1:]}"
        return f"ss.{t}" if t in names else repr(t).replace("'", '"')

    # imports
    from_imports: dict[str, set[str]] = {}

    def imp(module: str, name: str) -> str:
        if module == "trio_am":
            return f"am.{name}"
        from_imports.setdefault(module, set()).add(name)
        return name

    base_refs: list[str] = []
    schema_refs: list[str] = []
    for k in res.bases:
        inh = INHERITS[k]
        base_refs.append(imp(inh.module, inh.states))
        schema_refs.append(imp(inh.module, inh.schema))
    igroup_refs = {g: imp(mod, const) for g, (mod, const, _m) in res.inherited_groups.items()}

    doc_cmd = command or f"trio-am gen states --name {spec.name} --states ..."
    title = f"States of the {spec.name} machine: typed names, groups and schema."
    out: list[str] = [
        *(_docstring(title, 0)[:-1] if len(title) + 3 > LINE else [f'"""{title}']),
        "",
        *_wrap_command(doc_cmd),
        "Add states with ``trio-am gen states --add THIS_FILE --states SPEC``.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any, Final",
        "",
        "import trio_am as am",
    ]
    for module in sorted(from_imports):
        members = sorted(from_imports[module], key=_isort_key)
        out.extend(_lines(_Seq(f"from {module} import (", tuple(members), ")"), 0))
    # fix "from x import (a, b)" on one line: ruff writes it without parentheses
    out = [_unparen_import(ln) for ln in out]
    exports = sorted([spec.schema_const, G, S, spec.factory, "ss"], key=_isort_key)
    out += [""]
    out.extend(_lines(_Seq("__all__ = [", tuple(f'"{e}"' for e in exports), "]"), 0))
    out += ["", ""]
    # states class
    out.extend(_lines(_Seq(f"class {S}(", tuple(base_refs or ["am.States"]), "):"), 0))
    out.extend(_docstring(f"The states of {spec.name}: the inherited ones, then its own.", 4))
    own = res.own
    if own:
        out.append("")
        out.extend(f"    {n}: str" for n in own)
    out += ["", ""]
    out.extend(_comment(f"An instance of :class:`{S}`, for short references (``ss.Foo``)."))
    out.append(f"ss: Final = {S}()")
    out += ["", ""]
    # groups
    out.append(f"class {G}:")
    out.extend(_docstring(f"Named groups of {spec.name} states.", 4))
    if res.inherited_groups or own_groups:
        out.append("")
    for g in res.inherited_groups:
        out.append(f"    {g}: Final = {igroup_refs[g]}")
    for g, gmembers in own_groups.items():
        if not gmembers:
            out.append(f"    {g}: Final[tuple[str, ...]] = ()")
        else:
            group = _Seq(f"{g}: Final = (", tuple(ref(m) for m in gmembers), ")", tuple_=True)
            out.extend(_lines(group, 4))
    out += ["", ""]
    # schema
    entries: list[_Node] = []
    for s in spec.states:
        args: list[_Node] = []
        if s.auto:
            args.append("auto=True")
        if s.multi:
            args.append("multi=True")
        for rel in RELATIONS:
            targets = getattr(s, rel)
            if targets:
                args.append(_Seq(f"{rel}=[", tuple(ref(t) for t in targets), "]"))
        if s.tags:
            args.append(_Seq("tags=[", tuple(f'"{t}"' for t in s.tags), "]"))
        key = ref(s.name) if s.name in names else f'"{s.name}"'
        entries.append(_Seq(f"{key}: am.State(", tuple(args), ")"))
    own_dict = _Seq("{", tuple(entries), "}", explode=True)
    out.extend(
        _comment(f"The schema of {spec.name}: the inherited schemas merged with its own states.")
    )
    if schema_refs:
        call = _Seq(f"{spec.schema_const}: Final = am.schema_merge(", (*schema_refs, own_dict), ")")
        out.extend(_lines(call, 0))
    else:
        head = f"{spec.schema_const}: Final[dict[str, am.State]] = {{"
        out.extend(_lines(_Seq(head, tuple(entries), "}", explode=True), 0))
    out += ["", ""]
    out.append(f"def {spec.factory}(**kw: Any) -> am.Machine:")
    doc = (
        f"A new {spec.name} machine: :data:`{spec.schema_const}` in the state order of "
        f":class:`{S}`; ``kw`` go to ``am.Machine`` (``id``, ``handlers``, ``parent``...)."
    )
    out.extend(_docstring(doc, 4))
    ret = _Seq("return am.Machine(", (spec.schema_const, f"states={S}", "**kw"), ")")
    out.extend(_lines(ret, 4))
    return "\n".join(out) + "\n"


def _wrap_command(cmd: str) -> list[str]:
    """The command as an indented literal block, continued with backslashes (escaped
    for a docstring)."""
    cmd = cmd.replace("\\", "\\\\").replace('"""', "'''")
    parts = textwrap.wrap(cmd, LINE - 10, break_long_words=False, break_on_hyphens=False)
    if not parts or any(len(p) > LINE - 10 for p in parts):
        return ["Generated by ``trio-am gen states``.", ""]
    lines = [f"    {p} \\\\" for p in parts[:-1]] + [f"    {parts[-1]}"]
    return ["Generated by::", "", *lines, ""]


def _unparen_import(line: str) -> str:
    if line.startswith("from ") and " import (" in line and line.endswith(")"):
        return line.replace(" import (", " import ", 1)[:-1]
    return line


# ---------------------------------------------------------------------------- read
def read_module(path: str | Path) -> MachSpec:
    """Read a generated module back into a :class:`MachSpec` (to add states to it).

    The module is imported: its states class (the one ``am.States`` subclass it
    defines), the ``*_SCHEMA`` constant and the groups class give the name, the inherits,
    the own states (and redefinitions of inherited ones) and the groups.

    Raises:
        GenError: the file is missing (exit 1), cannot be imported, or is not a
            generated states module (exit 2).
    """
    p = Path(path)
    if not p.is_file():
        raise GenError(f"{p}: no such file", code=1)
    modname = f"_trio_am_gen_{uuid.uuid4().hex}"
    spec_ = importlib.util.spec_from_file_location(modname, p)
    if spec_ is None or spec_.loader is None:
        raise GenError(f"{p}: not a Python module")
    mod = importlib.util.module_from_spec(spec_)
    sys.modules[modname] = mod
    try:
        spec_.loader.exec_module(mod)
    except Exception as exc:
        raise GenError(f"{p}: cannot import it: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.modules.pop(modname, None)
    classes = [
        v
        for k, v in vars(mod).items()
        if isinstance(v, type)
        and issubclass(v, States)
        and v.__module__ == modname
        and k.endswith("States")
        and k == v.__name__
    ]
    if len(classes) != 1:
        raise GenError(f"{p}: expected one am.States class named *States, found {len(classes)}")
    cls = classes[0]
    name = cls.__name__[: -len("States")]
    if not name or not NAME_RE.match(name):
        raise GenError(f"{p}: bad states class name {cls.__name__}")
    m = MachSpec(name, ())
    schema = getattr(mod, m.schema_const, None)
    if not isinstance(schema, Mapping):
        raise GenError(f"{p}: no schema constant {m.schema_const}")
    inherit: list[str] = []
    by_cls = {}
    for key in INHERITS:
        try:
            by_cls[key] = INHERITS[key].load()
        except GenError:
            continue
    for base in cls.__bases__:
        if base is States:
            continue
        found = next((k for k, v in by_cls.items() if v[0] is base), None)
        if found is None:
            raise GenError(
                f"{p}: {cls.__name__} extends {base.__name__}, which is not one of the "
                f"inherits ({', '.join(INHERITS)})"
            )
        inherit.append(found)
    base_schema = schema_merge(*(by_cls[k][1] for k in inherit))
    own_names = [
        n for n in inspect.get_annotations(cls) if not n.startswith("_") and NAME_RE.match(n)
    ]
    try:
        merged = schema_merge(schema)
    except SchemaError as exc:
        raise GenError(f"{p}: bad schema {m.schema_const}: {exc}") from exc
    missing = [n for n in own_names if n not in merged]
    if missing:
        raise GenError(f"{p}: states without a schema entry: {', '.join(missing)}")
    groups: list[GroupSpec] = []
    gmap: dict[str, tuple[str, ...]] = {}
    for k in inherit:
        gmap.update(by_cls[k][2])
    gcls = getattr(mod, m.groups_class, None)
    if isinstance(gcls, type):
        for g, v in vars(gcls).items():
            if g.startswith("_") or g in gmap or not NAME_RE.match(g):
                continue
            if isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v):
                groups.append(GroupSpec(g, tuple(v)))
                gmap[g] = tuple(v)
    literal = _schema_literal(p, m.schema_const)
    order = list(literal)
    picked = [
        n
        for n, st in merged.items()
        if n in own_names or n not in base_schema or base_schema[n] != st
    ]
    picked.sort(key=lambda n: order.index(n) if n in order else len(order))
    states = [_from_state(n, merged[n], literal.get(n, {}), gmap) for n in picked]
    return MachSpec(name, tuple(states), tuple(groups), tuple(inherit))


def _target(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Starred) and isinstance(node.value, ast.Attribute):
        return "_" + node.value.attr
    return None


def _schema_literal(path: Path, const: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """The schema's own dict literal as written: state name -> relation -> targets
    (``ss.Foo`` and ``"Foo"`` as names, ``*Groups.G`` as ``_G``), in the order written;
    relations that are not plain lists of those are left out; {} for another shape."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return {}
    for node in tree.body:
        target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id == const):
            continue
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        dicts = [d for d in ast.walk(value) if isinstance(d, ast.Dict)] if value else []
        if not dicts:
            return {}
        out: dict[str, dict[str, tuple[str, ...]]] = {}
        for k, v in zip(dicts[-1].keys, dicts[-1].values, strict=True):
            name = _target(k) if k is not None else None
            if name is None or name.startswith("_"):
                continue
            rels: dict[str, tuple[str, ...]] = {}
            if isinstance(v, ast.Call):
                for kw in v.keywords:
                    if kw.arg in RELATIONS and isinstance(kw.value, (ast.List, ast.Tuple)):
                        items = [_target(e) for e in kw.value.elts]
                        if all(i is not None for i in items):
                            rels[kw.arg] = tuple(i for i in items if i is not None)
            out[name] = rels
        return out
    return {}


def _from_state(
    name: str,
    st: State,
    written: Mapping[str, tuple[str, ...]],
    groups: Mapping[str, Sequence[str]],
) -> StateSpec:
    """A :class:`StateSpec` of a module's state: its relations as written (keeping group
    references) when they still mean what the module holds, else as evaluated."""
    kw: dict[str, Any] = {}
    for rel in RELATIONS:
        value = tuple(getattr(st, rel))
        lit = written.get(rel)
        if lit is not None and all(t[1:] in groups for t in lit if t.startswith("_")):
            expanded: list[str] = []
            for t in lit:
                for n in groups[t[1:]] if t.startswith("_") else (t,):
                    if n not in expanded:
                        expanded.append(n)
            if tuple(expanded) == value:
                value = lit
        kw[rel] = value
    return StateSpec(name, auto=st.auto, multi=st.multi, tags=tuple(st.tags), **kw)
