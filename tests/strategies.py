"""Hypothesis strategies for trio_am property tests (tests/test_properties.py).

* :func:`state_names` — 2 to 8 distinct PascalCase names (never ``Any`` nor the names
  with special treatment, machine.md §2.3), from a fixed pool.
* :func:`schemas` — random *valid* schemas over such names: ``auto``/``multi`` flags and
  ``require``/``add``/``remove``/``after`` relations among the states (optionally also
  naming the built-in ``Exception``), never a require-remove conflict on the same state
  (that is a ``SchemaError``, machine.md §2.2 rule 4). Each state comes either as an
  ``am.State`` or as a plain dict.
* :func:`ops` — random mutation sequences: add/remove/set/toggle (and the ``*1``
  variants, ``add_err``, dry runs) of random subsets, with optional args.

A drawn schema is a plain ``dict[str, am.State | dict]``; pass it to ``am.Machine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

import trio_am as am

__all__ = [
    "RELATIONS",
    "RESERVED",
    "Op",
    "apply_op",
    "idle_ops",
    "mutation_names",
    "op",
    "ops",
    "schemas",
    "state_names",
]

#: Names a generated schema never uses: reserved, built-in, or with special behaviour
#: (Healthcheck/Heartbeat skip the auto round, Start/Disposing matter to disposal).
RESERVED = frozenset(
    {"Any", "Exception", "Healthcheck", "Heartbeat", "Start", "Disposing", "MachineRestored"}
)

#: PascalCase names: mostly short ones so shrunk examples read well, plus a few of other
#: shapes (digits, long, two capitals). Drawing from a pool is ~10x faster than
#: ``from_regex``, and name validation is tested elsewhere (tests/test_schema.py).
_POOL = (
    *"ABCDEFGH",
    "Foo",
    "Bar",
    "Baz",
    "Ready",
    "Err2",
    "X9",
    "Zz",
    "LongStateName7",
    "IOBound",
    "Q",
)
assert not RESERVED & set(_POOL)


def state_names(min_size: int = 2, max_size: int = 8) -> st.SearchStrategy[list[str]]:
    """Distinct PascalCase state names."""
    return st.lists(st.sampled_from(_POOL), min_size=min_size, max_size=max_size, unique=True)


#: The relation kinds of a state.
RELATIONS = ("require", "add", "remove", "after")


@st.composite
def schemas(
    draw: st.DrawFn,
    *,
    min_states: int = 2,
    max_states: int = 8,
    auto: bool = True,
    multi: bool = True,
    acyclic: bool | None = None,
    exception_relations: bool | None = None,
    relations: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A random valid schema.

    Relations and flags come from one ``binary`` draw (one byte per possible edge):
    generation is the bulk of these tests' time, and a draw per state and relation
    is several times slower.

    Args:
        auto: allow ``auto`` states.
        multi: allow ``multi`` states.
        acyclic: when True, ``require`` and ``after`` only point to states declared
            earlier (so the require/after order is fully specified, machine.md §2.2
            rule 6); False allows any target (self included); None draws it.
        exception_relations: let relations name the built-in ``Exception`` state
            (None draws it).
        relations: the relation kinds to generate; None draws a subset (each kind
            with probability 3/4), so interactions of two kinds are not always
            drowned by the others.
    """
    names = draw(state_names(min_states, max_states))
    if acyclic is None:
        acyclic = draw(st.booleans())
    if exception_relations is None:
        exception_relations = draw(st.integers(0, 3)) == 0
    if relations is None:
        relations = [k for k in RELATIONS if draw(st.integers(0, 3)) != 0]
    targets = names + (["Exception"] if exception_relations else [])
    n, m = len(names), len(targets)
    # one byte per possible edge and flag: uniform over states (a big random integer
    # per relation would put nearly all edges on the first states), shrinks to "none"
    nkinds = len(RELATIONS)
    width = nkinds * m + 3
    raw = draw(st.binary(min_size=n * width, max_size=n * width))
    # an edge is present when its byte >= cut: about 1 in 2, 4 or 8 per kind and pair
    cut = 256 - draw(st.sampled_from((32, 64, 128)))
    schema: dict[str, Any] = {}
    for i, name in enumerate(names):
        row = raw[i * width : (i + 1) * width]
        d: dict[str, Any] = {}
        if auto and row[-3] >= 192:
            d["auto"] = True
        if multi and row[-2] >= 192:
            d["multi"] = True
        rels: dict[str, list[str]] = {}
        for k, key in enumerate(RELATIONS):
            if key not in relations:
                continue
            rels[key] = [t for j, t in enumerate(targets) if row[k * m + j] >= cut]
        if acyclic:
            # only states declared earlier, and Exception (which has no relations)
            allowed = set(names[:i]) | {"Exception"}
            for key in ("require", "after"):
                if key in rels:
                    rels[key] = [t for t in rels[key] if t in allowed]
        if "remove" in rels and "require" in rels:
            # no require-remove conflict on the same state (a SchemaError, §2.2 rule 4)
            rels["remove"] = [t for t in rels["remove"] if t not in rels["require"]]
        for key in RELATIONS:
            if rels.get(key):
                d[key] = rels[key]
        schema[name] = am.State(**d) if row[-1] >= 128 else d
    return schema


def mutation_names(schema: dict[str, Any]) -> list[str]:
    """The names a mutation may call: the schema's states plus ``Exception``."""
    return [*schema, "Exception"]


@dataclass(frozen=True)
class Op:
    """One top-level call on a machine: ``kind`` is a method name (or ``add_err_none``)."""

    kind: str
    states: tuple[str, ...] = ()
    args: dict[str, Any] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        a = f", {self.args!r}" if self.args else ""
        return f"{self.kind}({list(self.states)!r}{a})"


#: Kinds that take a list of states.
MULTI_KINDS = ("add", "remove", "set", "toggle")
#: Kinds that take exactly one state.
SINGLE_KINDS = ("add1", "remove1", "toggle1")
#: Dry runs.
CHECK_KINDS = ("can_add", "can_remove")
#: Error kinds: ``add_err`` (with an exception) and ``add_err_none`` (``add_err(None)``).
ERR_KINDS = ("add_err", "add_err_none")

_args = st.one_of(st.none(), st.fixed_dictionaries({"n": st.integers(0, 3)}))


@st.composite
def op(
    draw: st.DrawFn,
    names: Sequence[str],
    *,
    checks: bool = False,
    errors: bool = True,
) -> Op:
    """One operation over ``names`` (duplicates within a call are allowed: they collapse)."""
    kinds: list[str] = [*MULTI_KINDS, *SINGLE_KINDS]
    if checks:
        kinds += CHECK_KINDS
    if errors:
        kinds += ERR_KINDS
    kind = draw(st.sampled_from(kinds))
    args = draw(_args)
    if kind in SINGLE_KINDS:
        states: tuple[str, ...] = (draw(st.sampled_from(names)),)
    elif kind in ERR_KINDS:
        states = ()
    else:
        states = tuple(draw(st.lists(st.sampled_from(names), min_size=0, max_size=4)))
    return Op(kind, states, args)


def ops(
    names: Sequence[str],
    *,
    min_size: int = 1,
    max_size: int = 12,
    checks: bool = False,
    errors: bool = True,
) -> st.SearchStrategy[list[Op]]:
    """A random mutation sequence over ``names``."""
    return st.lists(op(names, checks=checks, errors=errors), min_size=min_size, max_size=max_size)


def idle_ops(names: Sequence[str], **kw: Any) -> st.SearchStrategy[list[Op]]:
    """Plain add/remove/set/toggle sequences (no errors, no dry runs)."""
    return ops(names, errors=False, **kw)


class _Err(Exception):
    """The error passed to ``add_err``."""


def apply_op(mach: Any, o: Op) -> am.Result:
    """Run ``o`` on ``mach`` (a machine, or ``e.machine`` inside a handler)."""
    k = o.kind
    if k == "add_err":
        return mach.add_err(_Err("boom"), o.args)
    if k == "add_err_none":
        return mach.add_err(None, o.args)
    if k in SINGLE_KINDS:
        return getattr(mach, k)(o.states[0], o.args)
    return getattr(mach, k)(list(o.states), o.args)
