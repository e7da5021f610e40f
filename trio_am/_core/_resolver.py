"""Relations -> target states (machine.md §5.2, with the trio_am decisions of §16).

Pure functions over :class:`~._schema.Compiled` tables and bitsets; no machine state.

From the base list (§5.1):

1. *Pass 1*: append the ``add`` lists of the base states that are being activated (a
   state already active and not re-activated does not apply its ``add`` list again; a
   Remove never re-implies the states it removes); drop states whose requirements are
   missing, until stable; then the *remove walk*: from the end of the list to its start,
   a state is dropped when a state of the list that was not itself dropped earlier in
   the walk removes it (so in a mutual conflict the state nearer the front wins, and a
   sole remover always wins).
2. *Pass 2*: add the ``add`` lists of the survivors (newly implied states go to the
   front, in reverse order, as in Go), drop every state named in the ``remove`` list of
   a survivor, and the require filter again (Go stops here).
3. trio_am (§16): run the remove walk and the require filter once more, so no state of
   the result removes another one, and repeat pass 2 until the list stops changing, so
   ``add`` is followed to its full closure.
4. Sort: required states first, then ``after`` ordering; states that no relation orders
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


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


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
                    steps.append((_RELATION, s, _lowest(missing), REL_REQUIRE, 0, None, 0))
        if not drop:
            return lst, lmask
        lmask &= ~drop
        lst = [s for s in lst if not (drop >> s) & 1]


def _remove_walk(
    c: Compiled, lst: list[int], lmask: int, steps: list[Step] | None
) -> tuple[list[int], int]:
    rm = 0
    for s in lst:
        rm |= c.remove_mask[s]
    if not rm & lmask:
        return lst, lmask
    rm_of = c.remove_of
    dropped = 0
    for k in range(len(lst) - 1, -1, -1):
        x = lst[k]
        removers = rm_of[x] & lmask & ~dropped
        if removers:
            dropped |= 1 << x
            if steps is not None:
                steps.append((_RELATION, _lowest(removers), x, REL_REMOVE, 0, None, 0))
    if not dropped:
        return lst, lmask
    lmask &= ~dropped
    return [s for s in lst if not (dropped >> s) & 1], lmask


def _add_hop(
    c: Compiled,
    scan: list[int],
    lst: list[int],
    lmask: int,
    applies: int,
    exclude: int,
    steps: list[Step] | None,
) -> tuple[list[int], int]:
    adds = c.add
    out = lst
    for s in scan:
        if not (applies >> s) & 1:
            continue
        for a in adds[s]:
            bit = 1 << a
            if not (lmask & bit) and not (exclude & bit):
                if out is lst:
                    out = list(lst)
                out.append(a)
                lmask |= bit
                if steps is not None:
                    steps.append((_RELATION, s, a, REL_ADD, 0, None, 0))
    return out, lmask


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
    lmask = 0
    for s in base:
        lmask |= 1 << s
    applies = ~active_mask | reactivate_mask

    # pass 1
    lst, lmask = _add_hop(c, base, base, lmask, applies, exclude_mask, steps)
    lst, lmask = _require_filter(c, lst, lmask, steps)
    lst, lmask = _remove_walk(c, lst, lmask, steps)

    # pass 2 (Go), repeated to the full closure with the remove walk re-applied (§16)
    for _ in range(c.n + 2):
        survivors_rm = 0
        for s in lst:
            survivors_rm |= c.remove_mask[s]
        new, nmask = _add_hop(c, lst, lst, lmask, applies, exclude_mask, steps)
        if new is lst:
            # nothing implied: only the require filter of pass 2 remains
            lst, lmask = _require_filter(c, lst, lmask, steps)
            break
        # like Go (which walks a reversed list), states implied in this pass go first
        n_old = len(lst)
        new = new[n_old:][::-1] + new[:n_old]
        if survivors_rm & nmask:
            new = [s for s in new if not (survivors_rm >> s) & 1]
            nmask &= ~survivors_rm
        new, nmask = _require_filter(c, new, nmask, steps)
        new, nmask = _remove_walk(c, new, nmask, steps)
        new, nmask = _require_filter(c, new, nmask, steps)
        if new == lst:
            break
        lst, lmask = new, nmask
    return sort_states(c, lst)


def sort_states(c: Compiled, lst: list[int]) -> list[int]:
    """Order states for handlers (machine.md §5.4).

    First, as in Go, the states that take part in no require relation (in list order),
    then the others with required states before the states requiring them; then
    Go's stable sort by ``after``: an insertion sort comparing neighbours, so the order
    matches asyncmachine-go. Where that leaves an ``after`` relation unmet (another
    state stood between the two), the full ordering of both relations is used instead.
    """
    if len(lst) < 2:
        return lst
    key = tuple(lst)
    cached = c.sort_cache.get(key)
    if cached is not None:
        return list(cached)
    out = _sort(c, lst)
    if len(c.sort_cache) >= _SORT_CACHE_MAX:
        c.sort_cache.clear()
    c.sort_cache[key] = tuple(out)
    return out


_SORT_CACHE_MAX: Final = 4096


def _sort(c: Compiled, lst: list[int]) -> list[int]:
    lmask = 0
    for s in lst:
        lmask |= 1 << s
    req = c.req_pred_mask
    after = c.after_mask
    edge = c.req_edge_mask & lmask
    if edge and not c.require_cycle:
        # Go's require sort: states in no require relation first (Go gives them position
        # -1), then the others with required states before the states requiring them
        free = [s for s in lst if not (edge >> s) & 1]
        bound = [s for s in lst if (edge >> s) & 1]
        if any(req[s] & lmask for s in bound):
            bound = _topo(bound, req, lmask)
        lst = free + bound
    if not any(after[s] & lmask for s in lst):
        return lst
    out = list(lst)
    for i in range(1, len(out)):
        j = i
        # less(out[j], out[j-1]): out[j-1] lists out[j] in its after
        while j > 0 and (after[out[j - 1]] >> out[j]) & 1:
            out[j], out[j - 1] = out[j - 1], out[j]
            j -= 1
    pos = {s: k for k, s in enumerate(out)}
    for s in out:
        m = after[s] & lmask
        while m:
            low = m & -m
            if pos[low.bit_length() - 1] > pos[s]:
                return _topo(lst, c.pred_mask, lmask)
            m ^= low
    return out


def _topo(lst: list[int], pred: list[int], lmask: int) -> list[int]:
    """Stable topological order: repeatedly take the first state whose predecessors
    (within the list) were all taken; on a cycle, take the first remaining."""
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
