"""Hypothesis strategies for trio_am property tests (tests/test_properties.py).

* :func:`state_names` — 2 to 8 distinct PascalCase names (never ``Any`` nor the names
  with special treatment, machine.md §2.3).
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

#: Short readable names, drawn most of the time so shrunk examples read well.
_POOL = ("A", "B", "C", "D", "E", "F", "G", "H", "Foo", "Bar", "Baz", "Ready", "Err2")

_pascal = st.one_of(
    st.sampled_from(_POOL),
    st.from_regex(r"[A-Z][A-Za-z0-9]{0,7}", fullmatch=True),
).filter(lambda n: n not in RESERVED)


def state_names(min_size: int = 2, max_size: int = 8) -> st.SearchStrategy[list[str]]:
    """Distinct PascalCase state names."""
    return st.lists(_pascal, min_size=min_size, max_size=max_size, unique=True)


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
) -> dict[str, Any]:
    """A random valid schema.

    Args:
        auto: allow ``auto`` states.
        multi: allow ``multi`` states.
        acyclic: when True, ``require`` and ``after`` only point to states declared
            earlier (so the require/after order is fully specified, machine.md §2.2
            rule 6); False allows any target; None draws it.
        exception_relations: let relations name the built-in ``Exception`` state
            (None draws it).
    """
    names = draw(state_names(min_states, max_states))
    if acyclic is None:
        acyclic = draw(st.booleans())
    if exception_relations is None:
        exception_relations = draw(st.integers(0, 3)) == 0
    extra = ["Exception"] if exception_relations else []
    schema: dict[str, Any] = {}
    for i, name in enumerate(names):
        everyone = names + extra
        ordered = names[:i] + extra if acyclic else everyone

        def pick(pool: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
            pool = [p for p in pool if p not in exclude]
            if not pool:
                return []
            return draw(st.lists(st.sampled_from(pool), max_size=2, unique=True))

        require = pick(ordered)
        # no require-remove conflict on the same state (a SchemaError)
        remove = pick(everyone, exclude=require)
        add = pick(everyone)
        after = pick(ordered)
        d: dict[str, Any] = {}
        if auto and draw(st.integers(0, 3)) == 0:
            d["auto"] = True
        if multi and draw(st.integers(0, 3)) == 0:
            d["multi"] = True
        for key, value in (
            ("require", require),
            ("add", add),
            ("remove", remove),
            ("after", after),
        ):
            if value:
                d[key] = value
        schema[name] = am.State(**d) if draw(st.booleans()) else d
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
