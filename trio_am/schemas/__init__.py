"""Reusable schemas and typed state sets (machine.md §15.2).

* :data:`CONNECTED_SCHEMA` / :class:`ConnectedStates`: a self-excluding connection
  group (``Connecting``, ``Connected``, ``Disconnecting``, ``Disconnected``).
* :data:`DISPOSED_SCHEMA` / :class:`DisposedStates`: graceful shutdown
  (``RegisterDisposal``, ``Disposing``, ``Disposed``).
"""

from __future__ import annotations

from typing import Final

from .._core._schema import State
from .._core._states import BASIC_SCHEMA, BasicStates, States

__all__ = [
    "BASIC_SCHEMA",
    "CONNECTED_SCHEMA",
    "DISPOSED_SCHEMA",
    "BasicStates",
    "ConnectedStates",
    "DisposedStates",
]

_GROUP: Final = ("Connecting", "Connected", "Disconnecting", "Disconnected")


class ConnectedStates(States):
    """States of a connection; their schema is :data:`CONNECTED_SCHEMA` (needs ``Start``
    and ``Exception``, e.g. merged with ``BASIC_SCHEMA``)."""

    Connecting: str
    Connected: str
    Disconnecting: str
    Disconnected: str
    ErrConnecting: str


#: Connection states: each member removes the whole group, so one is active at a time.
CONNECTED_SCHEMA: Final[dict[str, State]] = {
    "Connecting": State(require=["Start"], remove=_GROUP),
    "Connected": State(require=["Start"], remove=_GROUP),
    "Disconnecting": State(remove=_GROUP),
    "Disconnected": State(auto=True, remove=_GROUP),
    "ErrConnecting": State(require=["Exception"]),
}


class DisposedStates(States):
    """States of graceful disposal; their schema is :data:`DISPOSED_SCHEMA`."""

    RegisterDisposal: str
    Disposing: str
    Disposed: str


#: Graceful disposal: ``Disposing`` removes ``Start`` and ``Exception``; ``Disposed``
#: also removes ``Disposing``.
DISPOSED_SCHEMA: Final[dict[str, State]] = {
    "RegisterDisposal": State(multi=True),
    "Disposing": State(remove=["Start", "Exception"]),
    "Disposed": State(remove=["Disposing", "Start", "Exception"]),
}
