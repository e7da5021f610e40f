"""The trio_am debugger: model, recordings, server and UI (tools.md §1).

`trio_am.dbg.load(path)` reads a `.amdbg` recording into a :class:`Model`
(notebooks: ``rec.clients["fx-a"].txs[7].steps``). Nothing here imports urwid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trio_am.dbg.model import Client, Filters, Model, Tx

if TYPE_CHECKING:
    from os import PathLike

__all__ = ["Client", "Filters", "Model", "Tx", "load"]


def load(path: str | PathLike[str], **model_kw: Any) -> Model:
    """Load a `.amdbg` recording into a new :class:`Model` (tools.md §1.9)."""
    from trio_am.dbg.recording import load as _load

    return _load(path, **model_kw)
