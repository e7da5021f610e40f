"""Relations -> target states (machine.md §5.2, with the trio_am decisions of §16).

Pure functions over :class:`~._schema.Compiled` tables and bitsets; no machine state.

The algorithm, from the base list (§5.1):

1. *Add hop*: append the ``add`` lists of the states being activated (a state already
   active and not re-activated does not apply its ``add`` list again; a Remove never
   re-implies the states it removes; a state dropped by the remove filter is never
   implied back).
2. *Require filter*: drop states whose requirements are missing, until stable.
3. *Remove filter*: walk the list from its end; a state is dropped when a state of the
   list that was not itself dropped earlier in the walk removes it (so in a mutual
   conflict the state nearer the front wins, and a sole remover always wins).
4. Require filter again when anything was dropped.
5. Repeat from 1 for the states the last hop added (full closure: Go stops after two
   hops), so the result never holds a state together with one it removes.
6. Sort: required states first, then ``after`` ordering; states that no relation orders
   keep their list order.
"""

from __future__ import annotations

from typing import Final

from ._schema import Compiled
from ._types import Step

__all__ = ["REL_ADD", "REL_AFTER", "REL_REMOVE", "REL_REQUIRE", "resolve", "sort_states"]

REL_AFTER: Final = 0
REL_ADD: Final = 1
REL_REQUIRE: Final = 2
REL_REMOVE: Final = 3
_RELATION: Final = 1  # StepKind.RELATION


def _require_filter(
    c: Compiled, lst: list[int], lmask: int, steps: list[Step] | None
) -> tuple[list[int], int]:
    req = c.require_mask
    while True:
        drop = 0
        for s in lst:
            missing = req[s] & ~lmask
            if missing:
                drop |= 1 << s
                if steps is not None:
                    steps.append(
                        (
                            _RELATION,
                            s,
                            (missing & -missing).bit_length() - 1,
                            REL_REQUIRE,
                            0,
                            None,
                            0,
                        )
                    )
        if not drop:
            return lst, lmask
        lmask &= ~drop
        lst = [s for s in lst if not (drop >> s) & 1]


def _remove_filter(
    c: Compiled, lst: list[int], lmask: int, steps: list[Step] | None
) -> tuple[list[int], int, int]:
    rm_of = c.remove_of
    dropped = 0
    for k in range(len(lst) - 1, -1, -1):
        x = lst[k]
        removers = rm_of[x] & lmask & ~dropped
        if removers:
            dropped |= 1 << x
            if steps is not None:
                steps.append(
                    (_RELATION, (removers & -removers).bit_length() - 1, x, REL_REMOVE, 0, None, 0)
                )
    if dropped:
        lmask &= ~dropped
        lst = [s for s in lst if not (dropped >> s) & 1]
    return lst, lmask, dropped


def resolve(
    c: Compiled,
    base: list[int],
    active_mask: int,
    reactivate_mask: int,
    exclude_mask: int,
    steps: list[Step] | None = None,
) -> list[int]:
    """Resolve relations over ``base`` and return the sorted target list.

    Args:
        c: compiled schema tables.
        base: the base list (§5.1), without duplicates.
        active_mask: states active before the transition.
        reactivate_mask: called Multi states (re-activated, so their ``add`` applies).
        exclude_mask: states that may not be implied (the called states of a Remove).
        steps: when a list, relation steps are appended to it.
    """
    lst = list(base)
    lmask = 0
    for s in lst:
        lmask |= 1 << s
    adds = c.add
    applies = ~active_mask | reactivate_mask
    scan = [s for s in lst if (applies >> s) & 1 and adds[s]]
    blocked = exclude_mask
    first = True
    while True:
        new: list[int] = []
        for s in scan:
            for a in adds[s]:
                bit = 1 << a
                if not (lmask & bit) and not (blocked & bit):
                    lst.append(a)
                    lmask |= bit
                    new.append(a)
                    if steps is not None:
                        steps.append((_RELATION, s, a, REL_ADD, 0, None, 0))
        if not first and not new:
            break
        first = False
        lst, lmask = _require_filter(c, lst, lmask, steps)
        rm = 0
        for s in lst:
            rm |= c.remove_mask[s]
        if rm & lmask:
            lst, lmask, dropped = _remove_filter(c, lst, lmask, steps)
            if dropped:
                blocked |= dropped
                lst, lmask = _require_filter(c, lst, lmask, steps)
        scan = [s for s in new if (lmask >> s) & 1 and (applies >> s) & 1 and adds[s]]
        if not scan:
            break
    return sort_states(c, lst)


def sort_states(c: Compiled, lst: list[int]) -> list[int]:
    """Order states for handlers: required ones before the states requiring them, then
    ``after`` predecessors first; otherwise stable (list order)."""
    if len(lst) < 2:
        return lst
    pred = c.pred_mask
    lmask = 0
    for s in lst:
        lmask |= 1 << s
    for s in lst:
        if pred[s] & lmask:
            break
    else:
        return lst
    out: list[int] = []
    emitted = 0
    remaining = list(lst)
    while remaining:
        pick = 0
        for k, s in enumerate(remaining):
            if not (pred[s] & lmask & ~emitted):
                pick = k
                break
        s = remaining.pop(pick)
        out.append(s)
        emitted |= 1 << s
    return out
