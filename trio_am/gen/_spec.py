"""The model of a generated states module and the SPEC syntax of ``trio-am gen states``.

SPEC (tools.md §3.3): states separated by commas, each ``Name[:auto][:multi][:rel(A;B)]…``
with ``rel`` one of ``require``, ``add``, ``remove``, ``after`` (any case); a target
``_Group`` stands for every state of a group. Groups: ``Name`` or ``Name(A;B)``. Names are
capitalized (``foo`` becomes ``Foo``).
"""

from __future__ import annotations

import importlib
import keyword
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from .._core._schema import NAME_RE, State
from .._core._states import States

__all__ = [
    "INHERITS",
    "RELATIONS",
    "GenError",
    "GroupSpec",
    "Inherit",
    "MachSpec",
    "StateSpec",
    "capitalize",
    "mach_name",
    "parse_groups",
    "parse_states",
    "snake_case",
]

#: Relation kinds, in the order they are written.
RELATIONS: Final = ("require", "add", "remove", "after")
_RESERVED: Final = frozenset({"Any"})
_MACH_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


class GenError(ValueError):
    """Bad generator input (a SPEC, a name, an inherit, a module that cannot be read).

    ``code`` is the exit status the CLI uses: 2 for bad input, 1 for a file that exists
    or cannot be read or written.
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def capitalize(name: str) -> str:
    """``name`` with its first letter upper case (the rest kept)."""
    return name[:1].upper() + name[1:]


def snake_case(name: str) -> str:
    """``MyMach`` → ``my_mach``; ``HTTPServer`` → ``http_server``."""
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return s.lower()


def mach_name(raw: str) -> str:
    """The PascalCase machine name of ``--name``: ``my_mach``, ``my-mach`` and ``myMach``
    all give ``MyMach``.

    Raises:
        GenError: not a name (letters, digits, ``_`` and ``-``, starting with a letter).
    """
    raw = raw.strip()
    if not _MACH_NAME_RE.match(raw):
        raise GenError(
            f"bad machine name {raw!r}: use letters and digits (and _ or -), "
            "starting with a letter, e.g. MyMach"
        )
    out = "".join(capitalize(p) for p in re.split(r"[_-]+", raw) if p)
    if keyword.iskeyword(out):
        raise GenError(f"bad machine name {raw!r}: {out} is a Python keyword")
    return out


def _state_name(raw: str, what: str) -> str:
    name = capitalize(raw.strip())
    if not name:
        raise GenError(f"empty {what}")
    if not NAME_RE.match(name):
        raise GenError(
            f"bad {what} {raw.strip()!r}: names are letters and digits, starting with a "
            "letter (PascalCase, no underscore)"
        )
    if name in _RESERVED or keyword.iskeyword(name):
        raise GenError(f"bad {what} {name!r}: the name is reserved")
    return name


@attrs.frozen
class StateSpec:
    """One state to write: flags and relations.

    Relation targets are state names, or ``_Group`` for every state of group ``Group``.
    """

    name: str
    auto: bool = False
    multi: bool = False
    require: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def targets(self) -> list[str]:
        """Every relation target (state names and ``_Group`` references)."""
        return [t for rel in RELATIONS for t in getattr(self, rel)]


@attrs.frozen
class GroupSpec:
    """A named group of states (``MyMachGroups.Name``)."""

    name: str
    states: tuple[str, ...] = ()


@attrs.frozen
class Inherit:
    """A reusable schema that generated modules can build on (``--inherit KEY``).

    ``module`` holds the typed states class ``states`` and the schema ``schema``;
    ``groups`` names the module's group constants as ``(GroupName, CONSTANT)``.
    """

    key: str
    module: str
    states: str
    schema: str
    groups: tuple[tuple[str, str], ...] = ()

    def load(self) -> tuple[type[States], Mapping[str, State], dict[str, tuple[str, ...]]]:
        """The states class, the schema and the groups, imported now.

        Raises:
            GenError: the module or a name in it does not exist (exit 2, "unknown
                inherit").
        """
        try:
            mod = importlib.import_module(self.module)
            cls = getattr(mod, self.states)
            schema = getattr(mod, self.schema)
            groups = {g: tuple(getattr(mod, const)) for g, const in self.groups}
        except (ImportError, AttributeError) as exc:
            raise GenError(
                f"unknown inherit {self.key!r}: {self.module}.{self.states} is not available "
                f"in this trio_am ({exc})"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, States)):
            raise GenError(f"unknown inherit {self.key!r}: {self.states} is not am.States")
        return cls, schema, groups


#: The schemas ``--inherit`` takes (tools.md §3.3 names). ``node/worker`` needs
#: :mod:`trio_am.node`.
INHERITS: Final[dict[str, Inherit]] = {
    i.key: i
    for i in (
        Inherit("basic", "trio_am", "BasicStates", "BASIC_SCHEMA"),
        Inherit("connected", "trio_am.schemas", "ConnectedStates", "CONNECTED_SCHEMA"),
        Inherit("disposed", "trio_am.schemas", "DisposedStates", "DISPOSED_SCHEMA"),
        Inherit("rpc/statesrc", "trio_am.rpc.states", "SourceStates", "STATE_SOURCE"),
        Inherit(
            "node/worker",
            "trio_am.node.states",
            "WorkerStates",
            "WORKER_SCHEMA",
            (("WorkStatus", "WORK_STATUS"),),
        ),
    )
}


def parse_inherit(text: str | Iterable[str]) -> tuple[str, ...]:
    """Inherit keys from ``basic,connected`` (order kept, duplicates dropped).

    Raises:
        GenError: an unknown key (exit 2).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        key = raw.strip().lower()
        if not key:
            continue
        if key not in INHERITS:
            raise GenError(
                f"unknown inherit {raw.strip()!r}: expected some of {', '.join(INHERITS)}"
            )
        if key not in out:
            out.append(key)
    return tuple(out)


def _split_top(text: str, what: str) -> list[str]:
    """Split on commas and newlines outside parentheses; ``#`` starts a comment."""
    lines = [ln.split("#", 1)[0] for ln in text.splitlines()]
    out: list[str] = []
    buf: list[str] = []
    depth = 0
    for ch in "\n".join(lines):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise GenError(f"bad {what} {text.strip()!r}: ')' without '('")
        if ch in ",\n" and depth == 0:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if depth:
        raise GenError(f"bad {what} {text.strip()!r}: '(' without ')'")
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def _targets(raw: str, owner: str) -> tuple[str, ...]:
    out: list[str] = []
    for t in raw.split(";"):
        t = t.strip()
        if not t:
            raise GenError(f"state {owner}: empty relation target in {raw!r}")
        if t.startswith("_"):
            name = "_" + _state_name(t[1:], "group name")
        else:
            name = _state_name(t, "relation target")
        if name not in out:
            out.append(name)
    return tuple(out)


def parse_states(spec: str) -> list[StateSpec]:
    """Parse a states SPEC, e.g. ``Foo:auto,Bar:multi:require(Foo),Baz:remove(_Group)``.

    Items may also be separated by newlines (a SPEC file), ``#`` starts a comment.

    Raises:
        GenError: a bad name, flag or relation, or a state given twice.
    """
    out: list[StateSpec] = []
    seen: set[str] = set()
    for item in _split_top(spec, "states SPEC"):
        parts = _split_props(item)
        name = _state_name(parts[0], "state name")
        if name in seen:
            raise GenError(f"state {name} is given twice")
        seen.add(name)
        flags: dict[str, Any] = {"auto": False, "multi": False}
        rels: dict[str, list[str]] = {r: [] for r in RELATIONS}
        for prop in parts[1:]:
            p = prop.strip()
            low = p.lower()
            if low in ("auto", "multi"):
                flags[low] = True
                continue
            m = re.fullmatch(r"([A-Za-z]+)\((.*)\)", p, re.S)
            if not m or m.group(1).lower() not in RELATIONS:
                raise GenError(
                    f"state {name}: unknown property {p!r} (expected auto, multi, "
                    "require(A;B), add(…), remove(…) or after(…))"
                )
            rel = m.group(1).lower()
            for t in _targets(m.group(2), name):
                if t not in rels[rel]:
                    rels[rel].append(t)
        out.append(
            StateSpec(
                name,
                auto=flags["auto"],
                multi=flags["multi"],
                **{r: tuple(v) for r, v in rels.items()},
            )
        )
    return out


def _split_props(item: str) -> list[str]:
    """``Foo:auto:require(A;B)`` → ``["Foo", "auto", "require(A;B)"]`` (colons inside
    parentheses kept)."""
    out: list[str] = []
    buf: list[str] = []
    depth = 0
    for ch in item:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ":" and depth == 0:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    if any(not p.strip() for p in out):
        raise GenError(f"bad state {item!r}: empty name or property")
    return out


def parse_groups(spec: str) -> list[GroupSpec]:
    """Parse a groups SPEC, e.g. ``Modes(Foo;Bar),Empty``.

    Raises:
        GenError: a bad name or a group given twice.
    """
    out: list[GroupSpec] = []
    seen: set[str] = set()
    for item in _split_top(spec, "groups SPEC"):
        m = re.fullmatch(r"([^()]+?)\s*(?:\((.*)\))?", item, re.S)
        if not m:
            raise GenError(f"bad group {item!r}: expected Name or Name(A;B)")
        name = _state_name(m.group(1), "group name")
        if name in seen:
            raise GenError(f"group {name} is given twice")
        seen.add(name)
        states: list[str] = []
        if m.group(2) is not None and m.group(2).strip():
            for t in m.group(2).split(";"):
                if not t.strip():
                    raise GenError(f"group {name}: empty state name in {item!r}")
                s = _state_name(t, "state name")
                if s not in states:
                    states.append(s)
        out.append(GroupSpec(name, tuple(states)))
    return out


@attrs.frozen
class MachSpec:
    """Everything a generated module holds: the machine name, inherited schemas, own
    states (also redefinitions of inherited ones) and groups."""

    name: str
    states: tuple[StateSpec, ...]
    groups: tuple[GroupSpec, ...] = ()
    inherit: tuple[str, ...] = ()

    @property
    def snake(self) -> str:
        """``my_mach``."""
        return snake_case(self.name)

    @property
    def module_name(self) -> str:
        """``ss_my_mach``."""
        return f"ss_{self.snake}"

    @property
    def states_class(self) -> str:
        """``MyMachStates``."""
        return f"{self.name}States"

    @property
    def groups_class(self) -> str:
        """``MyMachGroups``."""
        return f"{self.name}Groups"

    @property
    def schema_const(self) -> str:
        """``MY_MACH_SCHEMA``."""
        return f"{self.snake.upper()}_SCHEMA"

    @property
    def factory(self) -> str:
        """``new_my_mach``."""
        return f"new_{self.snake}"

    def extend(
        self,
        states: Sequence[StateSpec] = (),
        groups: Sequence[GroupSpec] = (),
        inherit: Sequence[str] = (),
    ) -> MachSpec:
        """A copy with more states, groups and inherits; a state or group already here
        is an error (exit 2)."""
        have = {s.name for s in self.states}
        for s in states:
            if s.name in have:
                raise GenError(f"state {s.name} is already in the module (remove it there first)")
        have_g = {g.name for g in self.groups}
        for g in groups:
            if g.name in have_g:
                raise GenError(f"group {g.name} is already in the module")
        inh = list(self.inherit)
        inh += [k for k in inherit if k not in inh]
        return MachSpec(self.name, (*self.states, *states), (*self.groups, *groups), tuple(inh))
