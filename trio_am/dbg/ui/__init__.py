"""The urwid UI of ``trio-am-dbg`` (imported only by the CLI: urwid stays out of
``trio_am.dbg.load`` and the model)."""

from __future__ import annotations

from .app import PALETTE, DbgApp, run_ui

__all__ = ["PALETTE", "DbgApp", "run_ui"]
