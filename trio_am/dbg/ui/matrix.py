"""The matrix view (D36), rendered as markup without urwid.

Columns are the client's states (by index). Rows: ``called`` (1/0), ``ticks`` (tick
deltas of the tx), then a row per state with the sums of the step kind codes from that
state (row) to each state (column). The tx is the one being stepped (its first s steps)
or, at step 0, the current one.
"""

from __future__ import annotations

from typing import Any

from ..model import Client, Model, Tx

__all__ = ["matrix_rows", "matrix_title", "matrix_tx"]


def matrix_tx(model: Model, cl: Client) -> tuple[Tx | None, int]:
    """The tx the matrix shows and how many of its steps count."""
    nxt = model.next_no(cl)
    if cl.s > 0 and nxt:
        return cl.txs[nxt - 1], cl.s
    if 0 < cl.c <= len(cl.txs):
        tx = cl.txs[cl.c - 1]
        return tx, len(tx.steps)
    return None, 0


def _cells(cl: Client, tx: Tx | None, upto: int) -> list[list[int]]:
    n = len(cl.names)
    cells = [[0] * n for _ in range(n)]
    if tx is None:
        return cells
    for st in tx.steps[:upto]:
        src = st.from_ if st.from_ >= 0 else st.to
        dst = st.to if st.to >= 0 else st.from_
        if 0 <= src < n and 0 <= dst < n:
            cells[src][dst] += st.kind
    return cells


def matrix_title(model: Model, cl: Client) -> str:
    """`` Matrix:SUM Time:tT `` (SUM of every cell, T the machine time at the cursor)."""
    tx, upto = matrix_tx(model, cl)
    total = sum(map(sum, _cells(cl, tx, upto)))
    return f" Matrix:{total} Time:t{cl.mtime_at(cl.c)} "


def matrix_rows(model: Model, cl: Client) -> list[Any]:
    """The matrix as markup rows (header, ``called``, ``ticks``, one row per state)."""
    tx, upto = matrix_tx(model, cl)
    n = len(cl.names)
    cells = _cells(cl, tx, upto)
    called = set(tx.called) if tx is not None else set()
    deltas = [0] * n
    if tx is not None and not tx.queued:
        for i in range(n):
            a = tx.after[i] if i < len(tx.after) else 0
            b = tx.before[i] if i < len(tx.before) else 0
            deltas[i] = a - b
    biggest = max([*(max(r, default=0) for r in cells), *deltas, n - 1, 0])
    w = max(2, len(str(biggest))) + 1
    label = max([len("called"), *(len(x) for x in cl.names)]) + 1
    sel = cl.selected_state
    sel_i = cl.names.index(sel) if sel in cl.names else -1

    def row(name: str, vals: list[int], attr: str = "body") -> list[Any]:
        out: list[Any] = [(attr, f"{name:<{label}}")]
        for i, v in enumerate(vals):
            a = "selected" if i == sel_i else ("grey" if v == 0 else attr)
            out.append((a, f"{v:>{w}}"))
        return out

    header: list[Any] = [("grey", " " * label)]
    header += [("selected" if i == sel_i else "grey", f"{i:>{w}}") for i in range(n)]
    rows: list[Any] = [header]
    rows.append(row("called", [1 if i in called else 0 for i in range(n)], "called"))
    rows.append(row("ticks", deltas))
    for i, name in enumerate(cl.names):
        rows.append(row(name, cells[i], "selected" if i == sel_i else "body"))
    return rows
