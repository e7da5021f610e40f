"""States, schemas, name rules, and the compiled per-schema tables.

A schema maps state names to :class:`State` values. Plain dicts are accepted wherever a
schema is (``{"Foo": {"require": ["Bar"]}, "Bar": {}}``); :func:`normalize_schema` turns
either form into a ``dict[str, State]`` and checks it (machine.md §2.2, with the trio_am
decisions of §16: unknown relation targets and require-remove conflicts are errors).

:class:`Compiled` holds what the transition path needs, precomputed once per machine and
state order: indices, relation bitsets, and sort predecessors. Nothing here is looked up
by name on the hot path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from .._errors import SchemaError

__all__ = [
    "BUILTIN_EXCEPTION",
    "NAME_RE",
    "Compiled",
    "Schema",
    "SchemaLike",
    "State",
    "normalize_schema",
    "schema_merge",
    "states_by_tag",
]

#: The name of the built-in error state.
BUILTIN_EXCEPTION: Final = "Exception"
#: The grammar of state names bound by convention.
NAME_RE: Final = re.compile(r"[A-Z][A-Za-z0-9]*\Z")
_RESERVED: Final = frozenset({"Any"})
_RELATIONS: Final = ("require", "add", "remove", "after")
_FIELDS: Final = frozenset({"auto", "multi", *_RELATIONS, "tags"})


def _names(value: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    out: list[str] = []
    for name in value:
        if not isinstance(name, str):
            raise SchemaError(f"relation entries must be state names, got {name!r}")
        if name not in out:
            out.append(name)
    return tuple(out)


@attrs.frozen(slots=True)
class State:
    """The definition of one state: flags and relations (machine.md §2.1).

    Args:
        auto: activate it automatically after any transition that changed a tick,
            when nothing blocks it.
        multi: may be activated again while active (each called activation adds 2
            to its tick and re-runs its enter/state handlers).
        require: states that must be in the target set together with it.
        add: states implied (best effort) when it activates.
        remove: states that may not be active while it is.
        after: states whose handlers run before its own in each phase.
        tags: free strings; no effect on resolution.

    Relation fields accept any iterable of names and are stored as tuples.

    Example::

        Ready = am.State(require=["Start"], remove=["Stopped"])
    """

    auto: bool = attrs.field(default=False, kw_only=True, converter=bool)
    multi: bool = attrs.field(default=False, kw_only=True, converter=bool)
    require: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_names)
    add: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_names)
    remove: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_names)
    after: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_names)
    tags: tuple[str, ...] = attrs.field(default=(), kw_only=True, converter=_names)

    def extend(self, overlay: State) -> State:
        """Return a copy with the overlay's relations appended and its flags switched on
        (flags can only be switched on; Go's ``State.Extend``)."""
        return State(
            auto=self.auto or overlay.auto,
            multi=self.multi or overlay.multi,
            require=self.require + overlay.require,
            add=self.add + overlay.add,
            remove=self.remove + overlay.remove,
            after=self.after + overlay.after,
            tags=self.tags + overlay.tags,
        )

    def replace(self, **changes: Any) -> State:
        """Return a copy with the given fields replaced whole (Go's ``State.Set``)."""
        return attrs.evolve(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The state as a plain dict, empty fields omitted (for wire formats and docs)."""
        out: dict[str, Any] = {}
        if self.auto:
            out["auto"] = True
        if self.multi:
            out["multi"] = True
        for field in (*_RELATIONS, "tags"):
            value = getattr(self, field)
            if value:
                out[field] = list(value)
        return out


#: A schema: state name -> definition.
Schema = Mapping[str, State]
#: What the API accepts as a schema: state name -> ``State``, a plain dict of its
#: fields, or None for a state without properties (checked at machine creation).
SchemaLike = Mapping[str, Any]


def _to_state(name: str, value: object) -> State:
    if isinstance(value, State):
        return value
    if value is None:
        return State()
    if isinstance(value, Mapping):
        unknown = set(value) - _FIELDS
        if unknown:
            raise SchemaError(
                f"state {name!r} has unknown field(s) {sorted(unknown)}; "
                f"expected some of {sorted(_FIELDS)}",
                state=name,
            )
        try:
            return State(**value)
        except SchemaError as exc:
            raise SchemaError(f"state {name!r}: {exc}", state=name) from exc
    raise SchemaError(
        f"state {name!r} must be an am.State or a dict, got {type(value).__name__}", state=name
    )


def normalize_schema(
    schema: SchemaLike | Schema,
    *,
    machine_id: str | None = None,
    allow_any_names: bool = False,
) -> dict[str, State]:
    """Check a schema and return its normalised copy (machine.md §2.2).

    * self-references in ``remove`` and ``after`` are dropped;
    * a name in both ``add`` and ``remove`` of one state stays in ``add`` only;
    * the built-in ``Exception`` state (multi) is appended when missing.

    Raises:
        SchemaError: a name breaks the name rule (unless ``allow_any_names``), is
            reserved, a relation names an unknown state, or a state both requires and
            removes the same state.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(
            f"a schema must be a mapping of names to states, got {type(schema).__name__}",
            machine_id=machine_id,
        )
    states: dict[str, State] = {}
    for name, value in schema.items():
        if not isinstance(name, str):
            raise SchemaError(f"state names must be strings, got {name!r}", machine_id=machine_id)
        if name in _RESERVED:
            raise SchemaError(
                f"{name!r} is reserved and cannot be a state", machine_id=machine_id, state=name
            )
        if not allow_any_names and not NAME_RE.match(name):
            raise SchemaError(
                f"invalid state name {name!r}: names match [A-Z][A-Za-z0-9]* "
                "(PascalCase, no underscore)",
                machine_id=machine_id,
                state=name,
            )
        if not name:
            raise SchemaError("empty state name", machine_id=machine_id)
        try:
            states[name] = _to_state(name, value)
        except SchemaError as exc:
            raise SchemaError(str(exc), machine_id=machine_id, state=name) from exc
    if BUILTIN_EXCEPTION not in states:
        states[BUILTIN_EXCEPTION] = State(multi=True)

    out: dict[str, State] = {}
    for name, st in states.items():
        for rel in _RELATIONS:
            for target in getattr(st, rel):
                if target not in states:
                    raise SchemaError(
                        f"state {name!r} has {rel}={target!r}, which is not a state of the schema",
                        machine_id=machine_id,
                        state=name,
                    )
        conflict = set(st.require) & set(st.remove)
        if conflict:
            raise SchemaError(
                f"state {name!r} both requires and removes {sorted(conflict)} "
                "(require-remove conflict)",
                machine_id=machine_id,
                state=name,
            )
        remove = tuple(r for r in st.remove if r != name and r not in st.add)
        after = tuple(a for a in st.after if a != name)
        if remove != st.remove or after != st.after:
            st = attrs.evolve(st, remove=remove, after=after)
        out[name] = st
    return out


def schema_merge(*schemas: SchemaLike | Schema) -> dict[str, State]:
    """Merge schemas; for a state defined more than once the later definition wins whole.

    Returns a ``dict[str, State]`` (not yet checked: machines check it when built).
    """
    out: dict[str, State] = {}
    for schema in schemas:
        for name, value in schema.items():
            out[name] = _to_state(name, value)
    return out


def states_by_tag(schema: SchemaLike | Schema, tag: str) -> list[str]:
    """Names of the states carrying ``tag``, in schema order."""
    return [name for name, value in schema.items() if tag in _to_state(name, value).tags]


class Compiled:
    """Per-machine tables derived from a normalised schema and a state order.

    Bit ``1 << i`` stands for the state at index ``i``.
    """

    __slots__ = (
        "add",
        "after_mask",
        "auto_mask",
        "exception",
        "index",
        "multi_mask",
        "n",
        "names",
        "plain",
        "pred_mask",
        "remove_mask",
        "remove_of",
        "req_edge_mask",
        "req_pred_mask",
        "require",
        "require_cycle",
        "require_mask",
        "schema",
        "sort_cache",
    )

    def __init__(self, schema: dict[str, State], names: list[str]) -> None:
        self.schema = schema
        #: handler orders already computed (list -> sorted), see resolver.sort_states
        self.sort_cache: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.names: tuple[str, ...] = tuple(names)
        self.index: dict[str, int] = {name: i for i, name in enumerate(names)}
        self.n = len(names)
        idx = self.index
        defs = [schema[name] for name in names]
        self.require: list[tuple[int, ...]] = [tuple(idx[r] for r in d.require) for d in defs]
        self.require_mask: list[int] = [_mask(r) for r in self.require]
        self.add: list[tuple[int, ...]] = [tuple(idx[a] for a in d.add) for d in defs]
        self.remove_mask: list[int] = [_mask(idx[r] for r in d.remove) for d in defs]
        self.after_mask: list[int] = [_mask(idx[a] for a in d.after) for d in defs]
        self.auto_mask = _mask(i for i, d in enumerate(defs) if d.auto)
        self.multi_mask = _mask(i for i, d in enumerate(defs) if d.multi)
        self.exception = idx.get(BUILTIN_EXCEPTION, -1)
        # remove_of[i]: mask of the states whose remove list names i
        remove_of = [0] * self.n
        for i, m in enumerate(self.remove_mask):
            for j in _bits(m):
                remove_of[j] |= 1 << i
        self.remove_of = remove_of
        # sort predecessors: transitive requirements, then direct `after` entries
        closure = list(self.require_mask)
        changed = True
        while changed:
            changed = False
            for i in range(self.n):
                m = closure[i]
                for j in _bits(m):
                    m |= closure[j]
                if m != closure[i]:
                    closure[i] = m
                    changed = True
        #: a require cycle: like Go, handler order then ignores require (machine.md §2.2)
        self.require_cycle = any((closure[i] >> i) & 1 for i in range(self.n))
        closure = [m & ~(1 << i) for i, m in enumerate(closure)]
        #: transitive requirements of each state (they are entered first)
        self.req_pred_mask: list[int] = closure
        #: states taking part in a require relation (either side)
        self.req_edge_mask = _mask(i for i in range(self.n) if self.require_mask[i])
        for m in self.require_mask:
            self.req_edge_mask |= m
        self.pred_mask: list[int] = [closure[i] | self.after_mask[i] for i in range(self.n)]
        #: True when no state has any relation: targets need no resolution
        self.plain = (
            not any(self.require_mask)
            and not any(self.add)
            and not any(self.remove_mask)
            and not any(self.after_mask)
        )

    def mask_of(self, idxs: Iterable[int]) -> int:
        """The bitset of the given indices."""
        return _mask(idxs)


def _mask(idxs: Iterable[int]) -> int:
    m = 0
    for i in idxs:
        m |= 1 << i
    return m


def _bits(mask: int) -> list[int]:
    out = []
    i = 0
    while mask:
        if mask & 1:
            out.append(i)
        mask >>= 1
        i += 1
    return out
