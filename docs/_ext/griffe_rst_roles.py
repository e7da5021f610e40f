"""Griffe extension for the API reference: read trio_am's reST-flavoured docstrings as
Markdown.

trio_am's docstrings follow the Google style (``Args:``, ``Raises:``, ``Attributes:``) but
use two pieces of reStructuredText that Markdown does not know:

* roles such as ``:class:`~trio_am.Machine``` or ``:func:`serve```: they become inline code
  (`` `Machine` ``, `` `serve` ``), with the ``~`` shortening kept;
* literal blocks introduced by a trailing ``::`` and indented below it: they become fenced
  Python blocks; a line that is only ``Example::`` becomes a bold "Example:" label (a bare
  ``Example:`` line would be taken for a Google section).

mkdocs.yml loads this file through the mkdocstrings ``extensions`` option. It changes the
text handed to the renderer only, never the package.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const|ref|term|envvar|program):"
    r"`(?P<tilde>[~!]?)(?P<target>[^`]+)`"
)


def _role(match: re.Match[str]) -> str:
    target = match.group("target").strip()
    if "<" in target and target.endswith(">"):  # :ref:`title <target>`
        target = target[: target.index("<")].strip()
    if match.group("tilde") == "~":
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _literal_blocks(text: str) -> str:
    """Turn reST literal blocks (``para::`` + indented lines) into fenced blocks."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        if not stripped.endswith("::"):
            out.append(line)
            i += 1
            continue
        # find the indented block after one or more blank lines
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        base = _indent(line)
        if j == i + 1 or j >= len(lines) or _indent(lines[j]) <= base:
            out.append(line)  # not a literal block after all
            i += 1
            continue
        head = stripped[:-2].rstrip()
        pad = " " * base
        if not head.strip():
            pass  # a lone "::" introduces the block and prints nothing
        elif re.fullmatch(r"\s*Examples?", head):
            out.append(f"{pad}**{head.strip()}:**")
        else:
            out.append(f"{head}:")
        out.append("")
        block_indent = _indent(lines[j])
        k = j
        body: list[str] = []
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) >= block_indent):
            body.append(lines[k])
            k += 1
        while body and not body[-1].strip():
            body.pop()
        out.append(f"{pad}```{_language(body, block_indent)}")
        out.extend(pad + b[block_indent:] if b.strip() else "" for b in body)
        out.append(f"{pad}```")
        if k < len(lines):
            out.append("")
        i = k
    return "\n".join(out)


def _language(body: list[str], indent: int) -> str:
    """``python`` when the block compiles as Python (top-level ``await`` allowed)."""
    code = "\n".join(b[indent:] for b in body)
    try:
        compile(code, "<docstring>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return "text"
    return "python"


def convert(text: str) -> str:
    """The Markdown text for one docstring."""
    return _literal_blocks(_ROLE.sub(_role, text))


class RstRoles(griffe.Extension):
    """Rewrite each docstring once, as its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Convert the docstring of ``obj``, if it has one."""
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
