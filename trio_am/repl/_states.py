"""The REPL's own machine: its schema and typed states (it dogfoods trio_am)."""

from __future__ import annotations

from typing import Final

from .._core._schema import State
from .._core._states import BASIC_SCHEMA, BasicStates

__all__ = ["REPL_SCHEMA", "ReplStates"]


class ReplStates(BasicStates):
    """States of the REPL machine ``repl-<hash>``.

    ``Connected``: at least one machine is connected; ``ConnectedFully``: all are.
    ``RpcConn`` / ``RpcDisconn`` tick when a connection becomes ready / stops being
    ready; ``AddrChanged`` ticks when a watched address file or directory changed.
    ``ReplMode``: the interactive prompt runs. ``Watching``: address files are watched.
    ``CmdRunning``: a command is running.
    """

    Connected: str
    ConnectedFully: str
    RpcConn: str
    RpcDisconn: str
    AddrChanged: str
    ReplMode: str
    Watching: str
    CmdRunning: str


#: The REPL machine's schema.
REPL_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    "Connected": State(require=["Start"]),
    "ConnectedFully": State(require=["Connected"]),
    "RpcConn": State(multi=True),
    "RpcDisconn": State(multi=True),
    "AddrChanged": State(multi=True),
    "ReplMode": State(require=["Start"]),
    "Watching": State(require=["Start"]),
    "CmdRunning": State(require=["Start"]),
}
