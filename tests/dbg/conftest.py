"""Shared fixtures of the debugger tests: the FX records of scenarios-tools.md as wire
messages (tools.md §1.7), and a model fed with them.

``fx_messages()`` returns the messages the reporter of the FX program sends: ``hello``,
``schema`` of ``fx-a`` and its 8 ``tx`` records (1 add Start; 2 auto add Ready; 3 add Bar;
4 add Baz; 5 add Foo, canceled; 6 add Healthcheck; 7 remove Baz; 8 add Foo).
"""

from __future__ import annotations

from typing import Any

import pytest

from trio_am.dbg.model import Model

#: FX state names, in schema index order.
FX_NAMES = ["Start", "Ready", "Foo", "Bar", "Baz", "Healthcheck", "Exception"]
FX_STATES: dict[str, dict[str, Any]] = {
    "Ready": {"auto": True, "require": ["Start"]},
    "Foo": {"require": ["Start"]},
    "Bar": {"add": ["Foo"]},
    "Baz": {"remove": ["Foo"]},
    "Healthcheck": {"multi": True},
    "Exception": {"multi": True},
}
#: Display time of FX tx k is ``FX_T0 + k * FX_DT`` (t1); ``rt`` is 1 µs later.
FX_T0 = 1_700_000_000_000_000_000
FX_DT = 1_000_000
AUTO, CHECK, ACCEPTED = 1, 2, 4

# (type, called, flags, before, after, steps, log)
_FX_TXS: list[tuple[int, list[int], int, list[int], list[int] | None, list[list[Any]], list[str]]] = [
    (0, [0], ACCEPTED, [0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0],
     [[32, -1, 0, -1, 0, None, 0], [4, -1, 0, -1, 0, None, 0]], ["[state] +Start"]),
    (0, [1], ACCEPTED | AUTO, [1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0],
     [[32, -1, 1, -1, 0, None, 0], [4, -1, 1, -1, 0, None, 0]], ["[auto_] +Ready"]),
    (0, [3], ACCEPTED, [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0],
     [[32, -1, 3, -1, 0, None, 0], [1, 3, 2, 1, 0, None, 0],
      [2, 2, 2, -1, 0, "Foo_enter", 6830], [4, -1, 3, -1, 0, None, 0],
      [4, -1, 2, -1, 0, None, 0]], ["[state] +Bar +Foo"]),
    (0, [4], ACCEPTED, [1, 1, 1, 1, 0, 0, 0], [1, 1, 2, 1, 1, 0, 0],
     [[32, -1, 4, -1, 0, None, 0], [1, 4, 2, 3, 0, None, 0], [8, -1, 2, -1, 0, None, 0],
      [4, -1, 4, -1, 0, None, 0]], ["[state] +Baz -Foo"]),
    (0, [2], 0, [1, 1, 2, 1, 1, 0, 0], None,
     [[32, -1, 2, -1, 0, None, 0], [1, 4, 2, 3, 0, None, 0], [64, -1, -1, -1, 0, None, 0]], []),
    (0, [5], ACCEPTED, [1, 1, 2, 1, 1, 0, 0], [1, 1, 2, 1, 1, 1, 0],
     [[32, -1, 5, -1, 0, None, 0], [4, -1, 5, -1, 0, None, 0]], ["[state] +Healthcheck"]),
    (1, [4], ACCEPTED, [1, 1, 2, 1, 1, 1, 0], [1, 1, 2, 1, 2, 1, 0],
     [[32, -1, 4, -1, 0, None, 0], [8, -1, 4, -1, 0, None, 0]], ["[state] -Baz"]),
    (0, [2], ACCEPTED, [1, 1, 2, 1, 2, 1, 0], [1, 1, 3, 1, 2, 1, 0],
     [[32, -1, 2, -1, 0, None, 0], [2, 2, 2, -1, 0, "Foo_enter", 3755],
      [4, -1, 2, -1, 0, None, 0]], ["[state] +Foo"]),
]  # fmt: skip


def fx_schema(mid: str = "fx-a", *, parent: str | None = None, t: int = FX_T0) -> list[Any]:
    """The ``schema`` message of an FX machine (initial ticks all 0)."""
    tags = ["child"] if parent else ["fixture", "env:test"]
    return ["schema", mid, parent, tags, list(FX_NAMES), dict(FX_STATES), {}, [],
            [0] * len(FX_NAMES), 1, t]  # fmt: skip


def fx_tx(k: int, mid: str = "fx-a", *, t0: int = FX_T0) -> list[Any]:
    """The ``tx`` message of FX tx ``k`` (1-based)."""
    typ, called, flags, before, after, steps, log = _FX_TXS[k - 1]
    t1 = t0 + k * FX_DT
    ticks = after if after is not None else before
    target = [i for i, tk in enumerate(ticks) if tk & 1]
    qtick = 0 if flags & AUTO else k
    return ["tx", mid, f"{mid}:{k}", typ, list(called), {}, flags, target, list(before),
            list(after) if after is not None else None,
            [list(s) for s in steps], [[2, line, None] for line in log], None, 0, qtick, qtick,
            0, None, t1 - 1000, t1, None, None]  # fmt: skip


def fx_messages(mid: str = "fx-a", *, t0: int = FX_T0, hello: bool = True) -> list[list[Any]]:
    """hello + schema + the 8 FX tx records, as the reporter sends them."""
    out: list[list[Any]] = []
    if hello:
        out.append(["hello", 1, "trio_am", "0.1.0", 4242, "host", "fx.py", t0])
    out.append(fx_schema(mid, t=t0))
    out.extend(fx_tx(k, mid, t0=t0) for k in range(1, 9))
    return out


def feed(model: Model, msgs: list[list[Any]], conn: int = 1, rt0: int = FX_T0) -> Model:
    """Ingest ``msgs`` on connection ``conn``; rt = the message's t1 (+1 µs) or ascending."""
    for i, m in enumerate(msgs):
        rt = (m[19] + 1000) if m[0] == "tx" else rt0 + i
        model.ingest(conn, m, rt)
    return model


@pytest.fixture
def fx_model() -> Model:
    """A model fed with the FX messages on connection 1 (client ``fx-a``, connected)."""
    return feed(Model(), fx_messages())


def frame(msg: list[Any]) -> bytes:
    """One wire frame (tools.md §1.7): u32 big-endian length + a msgpack array."""
    import msgpack

    body = msgpack.packb(msg, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
