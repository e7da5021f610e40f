"""Schemas and typed state sets of the aRPC machines (arpc.md B13).

* :class:`ServerStates` / :data:`SERVER_SCHEMA`: the server's own machine ``rs-<id>``.
* :class:`ClientStates` / :data:`CLIENT_SCHEMA`: the client's machine ``rc-<id>``.
* :class:`ConsumerStates` / :data:`CONSUMER_SCHEMA`: a machine receiving payloads.
* :class:`SourceStates` / :data:`STATE_SOURCE` (alias ``StateSource``): states a served
  machine adds to its schema to receive client errors.
"""

from __future__ import annotations

from typing import Final

from .._core._schema import State
from .._core._states import BASIC_SCHEMA, BasicStates, States
from ..schemas import CONNECTED_SCHEMA, ConnectedStates

__all__ = [
    "CLIENT_ERRORS",
    "CLIENT_SCHEMA",
    "CONSUMER_SCHEMA",
    "SERVER_SCHEMA",
    "STATE_SOURCE",
    "ClientStates",
    "ConsumerStates",
    "ServerStates",
    "SourceStates",
    "StateSource",
]

_ERR = State(require=["Exception"])


class SourceStates(States):
    """States of a machine served over aRPC (a *state source*)."""

    ErrOnClient: str


#: ``ErrOnClient`` marks an error a client reported with an error mutation.
STATE_SOURCE: Final[dict[str, State]] = {"ErrOnClient": _ERR}
#: Alias of :data:`STATE_SOURCE`, the name the scenarios use.
StateSource: Final = STATE_SOURCE


class ServerStates(BasicStates):
    """States of the server machine ``rs-<id>``."""

    Starting: str
    Listening: str
    Tunnel: str
    HasClients: str
    ClientConnected: str
    ClientDisconnected: str
    ClientRejected: str
    PeerError: str
    PayloadDelivered: str
    MetricSync: str
    ErrRpc: str
    ErrDelivery: str


#: The server machine's schema: ``Ready`` follows ``Listening``; the multi states are
#: events, ticked once per occurrence.
SERVER_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    "Start": State(add=["Starting"]),
    "Starting": State(require=["Start"]),
    "Listening": State(require=["Start"], remove=["Starting"]),
    "Ready": State(auto=True, require=["Listening"]),
    "Tunnel": State(require=["Start"]),
    "HasClients": State(),
    "ClientConnected": State(multi=True),
    "ClientDisconnected": State(multi=True),
    "ClientRejected": State(multi=True),
    "PeerError": State(multi=True),
    "PayloadDelivered": State(multi=True),
    "MetricSync": State(multi=True),
    "ErrRpc": State(multi=True, require=["Exception"], add=["Exception"]),
    "ErrDelivery": State(multi=True, require=["Exception"], add=["Exception"]),
}

#: The client error states that a successful handshake clears.
CLIENT_ERRORS: Final = ("ErrNetwork", "ErrNetworkTimeout", "ErrRpc", "ErrDelivery", "ErrAuth")


class ClientStates(ConnectedStates, BasicStates):
    """States of the client machine ``rc-<id>``."""

    Handshaking: str
    HandshakeDone: str
    Reconnecting: str
    ReconnectFailed: str
    Resyncing: str
    ServerPayload: str
    MetricSync: str
    ErrNetworkTimeout: str
    ErrRpc: str
    ErrDelivery: str
    ErrAuth: str


#: The client machine's schema. Error states stay active until the next
#: ``HandshakeDone``; the client then removes them (and ``Exception``).
CLIENT_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    **CONNECTED_SCHEMA,
    "Handshaking": State(require=["Connected"], remove=["HandshakeDone"]),
    "HandshakeDone": State(require=["Connected"], remove=["Handshaking", "Reconnecting"]),
    "Ready": State(auto=True, require=["HandshakeDone"]),
    "Reconnecting": State(require=["Start"], remove=["ReconnectFailed"]),
    "ReconnectFailed": State(remove=["Reconnecting", "Start"]),
    "Resyncing": State(require=["HandshakeDone"]),
    "ServerPayload": State(multi=True),
    "MetricSync": State(multi=True),
    "ErrNetwork": State(require=["Exception"], add=["Exception"]),
    "ErrNetworkTimeout": State(require=["Exception"], add=["Exception"]),
    "ErrRpc": State(require=["Exception"], add=["Exception"]),
    "ErrDelivery": State(require=["Exception"], add=["Exception"]),
    "ErrAuth": State(require=["Exception"], add=["Exception"]),
}


class ConsumerStates(States):
    """States of a payload consumer."""

    ServerPayload: str


#: A consumer's schema: ``ServerPayload`` (multi) carries ``args["payload"]``.
CONSUMER_SCHEMA: Final[dict[str, State]] = {"ServerPayload": State(multi=True)}
