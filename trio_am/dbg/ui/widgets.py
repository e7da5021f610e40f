"""Small urwid building blocks of the debugger screen: bars, boxed panes, timelines,
toolbars and a row window that renders only the rows that fit (tools.md §1.2, §5)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import urwid

from ..view import plain

__all__ = [
    "Pane",
    "bar",
    "box",
    "lines",
    "pack_toolbar",
    "timeline",
    "window",
]

#: Box-drawing characters of a focused pane (D45: double border).
_DOUBLE = {
    "tlcorner": "╔",
    "tline": "═",
    "lline": "║",
    "trcorner": "╗",
    "blcorner": "╚",
    "rline": "║",
    "bline": "═",
    "brcorner": "╝",
}


def box(widget: urwid.Widget, title: str, focused: bool) -> urwid.Widget:
    """A titled border; double lines when ``focused``."""
    if focused:
        return urwid.LineBox(widget, title=title, title_align="left", **_DOUBLE)
    return urwid.LineBox(widget, title=title, title_align="left")


def bar(markup: Any, right: Any = "", attr: str = "bar", width: int = 0) -> urwid.Widget:
    """A one-row bar: ``markup`` on the left, ``right`` flush right. Given the ``width``,
    the left side wins: the right one is cut from its end to what is left."""
    left = urwid.Text(markup or "", wrap="clip")
    if right and width:
        room = width - len(plain(markup)) - 1
        text = plain(right)
        if room < len(text):
            # drop whole " | " segments from the end (the clock first)
            segs = text.split(" | ")
            while segs and len(" | ".join(segs)) > room:
                segs.pop()
            right = " | ".join(segs)
    if not right:
        return urwid.AttrMap(left, attr)
    cols = urwid.Columns([left, ("pack", urwid.Text(right, wrap="clip"))], dividechars=1)
    return urwid.AttrMap(cols, attr)


def window(n: int, cursor: int, height: int, offset: int) -> int:
    """The first row to show of ``n`` rows in ``height`` lines so that ``cursor`` stays
    visible, moving the previous ``offset`` as little as possible."""
    if n <= height or height <= 0:
        return 0
    cursor = max(0, min(cursor, n - 1))
    if cursor < offset:
        offset = cursor
    elif cursor >= offset + height:
        offset = cursor - height + 1
    return max(0, min(offset, n - height))


def lines(items: list[Any], offset: int, height: int, wrap: bool = False) -> urwid.Widget:
    """A box widget showing ``items`` (markup) from ``offset``; only the rows that can
    fit are turned into widgets."""
    chunk = items[offset : offset + max(1, height)]
    if not chunk:
        return urwid.SolidFill(" ")
    texts = [urwid.Text(mk, wrap="space" if wrap else "clip") for mk in chunk]
    return urwid.ListBox(urwid.SimpleListWalker(texts))


class _Bar(urwid.ProgressBar):
    def get_text(self) -> str:
        return ""


def timeline(
    title: str,
    frac: float,
    *,
    fill: str = "progress",
    focused: bool = False,
    compact: bool = False,
    width: int = 80,
) -> urwid.Widget:
    """A timeline (D23, D24): a progress bar titled ``title``, filled ``frac`` with the
    ``fill`` attribute. ``compact`` draws it in one row (the title over the bar) for short
    terminals, else a bordered bar of three rows."""
    frac = max(0.0, min(1.0, frac))
    if compact:
        # one row, like the top edge of a box: "─ Transition c / N ─────"
        text = (("▶" if focused else "─") + title).ljust(width, "─")[:width]
        k = round(frac * width)
        mk: list[Any] = []
        if k:
            mk.append((fill, text[:k]))
        if k < width:
            mk.append(("timeline", text[k:]))
        return urwid.Text(mk, wrap="clip")
    pb = _Bar("body", fill, current=frac * 100, done=100)
    return box(pb, title, focused)


def pack_toolbar(items: list[tuple[str, bool]], width: int) -> list[list[tuple[str, bool]]]:
    """Split toolbar items ``(text, focused)`` into lines of at most ``width`` columns
    (never splitting an item), so every button stays visible on narrow screens."""
    out: list[list[tuple[str, bool]]] = [[]]
    used = 0
    for text, focused in items:
        need = len(text) + (1 if out[-1] else 0)
        if out[-1] and used + need > width:
            out.append([])
            used = 0
            need = len(text)
        out[-1].append((text, focused))
        used += need
    return out


class Pane(urwid.WidgetWrap[urwid.Widget]):
    """A pane of the screen that reports mouse events to ``on_mouse(name, size, event,
    button, col, row)`` instead of passing them on (D48)."""

    def __init__(
        self, name: str, widget: urwid.Widget, on_mouse: Callable[..., Any] | None
    ) -> None:
        self.name = name
        self._on_mouse = on_mouse
        super().__init__(widget)

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Any, key: str) -> str | None:
        return key

    def mouse_event(
        self, size: Any, event: str, button: int, col: int, row: int, focus: bool
    ) -> bool:
        if self._on_mouse is not None:
            self._on_mouse(self.name, size, event, button, col, row)
        return True
