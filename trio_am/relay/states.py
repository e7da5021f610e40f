"""The relay machine's schema (``relay-<name>``, tagged ``relay``).

Multi states are events, ticked once per occurrence, so a test or a dashboard can wait
on their clocks: ``relay.mach.tick("TargetRefused")`` counts refused targets.
"""

from __future__ import annotations

from typing import Final

from .._core._schema import State
from .._core._states import BASIC_SCHEMA, BasicStates

__all__ = ["RELAY_SCHEMA", "RelayStates"]


class RelayStates(BasicStates):
    """States of the relay machine."""

    Starting: str
    Listening: str
    HasTunnels: str
    TunnelOpened: str
    TunnelClosed: str
    Bridged: str
    TargetRefused: str
    OriginRefused: str
    TargetFailed: str
    ListenerOpened: str
    ListenerClosed: str
    PeerError: str


#: ``Ready`` follows ``Listening``. ``TargetFailed`` (a target unreachable or gone) and
#: ``PeerError`` (a bad or oversized frame) are events, not exceptions: nothing a peer
#: does can put the relay into ``Exception``.
RELAY_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    "Start": State(add=["Starting"]),
    "Starting": State(require=["Start"]),
    "Listening": State(require=["Start"], remove=["Starting"]),
    "Ready": State(auto=True, require=["Listening"]),
    "HasTunnels": State(),
    "TunnelOpened": State(multi=True),
    "TunnelClosed": State(multi=True),
    "Bridged": State(multi=True),
    "TargetRefused": State(multi=True),
    "OriginRefused": State(multi=True),
    "TargetFailed": State(multi=True),
    "ListenerOpened": State(multi=True),
    "ListenerClosed": State(multi=True),
    "PeerError": State(multi=True),
}
