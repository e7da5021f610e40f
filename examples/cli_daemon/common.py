"""What the daemon and its CLI share (arpc.md F2): the daemon's schema and typed args."""

from __future__ import annotations

import re
from typing import Any

import attrs

import trio_am as am
from trio_am import rpc
from trio_am.schemas import DISPOSED_SCHEMA

#: ``OpFoo1`` and ``OpBar2`` need ``Start`` and exclude each other (one op at a time);
#: ``Cmd`` is a placeholder for commands sent to the daemon.
DAEMON_SCHEMA: dict[str, Any] = am.schema_merge(
    am.BASIC_SCHEMA,
    DISPOSED_SCHEMA,
    rpc.STATE_SOURCE,
    {
        "OpFoo1": {"require": ["Start"], "remove": ["OpBar2"]},
        "OpBar2": {"require": ["Start"], "remove": ["OpFoo1"]},
        "Cmd": {},
    },
)

DEFAULT_ADDR = "localhost:8090"


@am.typed_args(prefix="daemon")
@attrs.define
class OpArgs:
    """The args of an op: how long it runs, in seconds. Over the wire they travel as
    the typed args ``daemon__Any``; the daemon must list :class:`OpArgs` in
    ``args_types`` to accept them."""

    duration: float = attrs.field(metadata={"log": "duration"})


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """``"0.5s"``, ``"500ms"``, ``"2m"`` or a bare number of seconds → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", text)
    if m is None:
        raise ValueError(f"not a duration: {text!r} (e.g. 3s, 0.5s, 500ms)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """``0.5`` → ``"0.5s"``, ``3.0`` → ``"3s"``."""
    return f"{seconds:g}s"
