"""Schemas and typed state sets of the node machines (arpc.md D1, D2).

Three machines take part in a worker pool:

* the **supervisor** (:class:`SupervisorStates` / :data:`SUPERVISOR_SCHEMA`), served to
  node clients over aRPC; a client's grant lets it mutate only ``ProvideWorker`` and
  ``WorkerIssues``;
* each **worker** (:class:`WorkerStates` / :data:`WORKER_SCHEMA`): the application's
  machine, whose schema merges this one, served to the supervisor (the local link) and to
  one client at a time (the public server);
* the **node client** (:class:`ClientStates` / :data:`CLIENT_SCHEMA`): the client's own
  machine, which also receives payloads (``ServerPayload``).

Multi states of the supervisor are events, ticked once per occurrence, each with args
naming the worker (``worker_id``). This module holds data only: no I/O.
"""

from __future__ import annotations

from typing import Final

from .._core._schema import State
from .._core._states import BASIC_SCHEMA, BasicStates
from ..rpc.states import CONSUMER_SCHEMA, STATE_SOURCE, ConsumerStates, SourceStates

__all__ = [
    "CLIENT_SCHEMA",
    "SUPERVISOR_SCHEMA",
    "WORKER_SCHEMA",
    "WORK_STATUS",
    "ClientStates",
    "SupervisorStates",
    "WorkerStates",
]

_ERR_MULTI = State(multi=True, require=["Exception"], add=["Exception"])


# ------------------------------------------------------------------------------ supervisor
class SupervisorStates(BasicStates, SourceStates):
    """States of the supervisor machine (``super-<kind>-…``)."""

    ErrWorker: str
    ErrPool: str
    PublicRpcReady: str
    PoolStarting: str
    NormalizingPool: str
    PoolNormalized: str
    PoolReady: str
    WorkersAvailable: str
    ForkWorker: str
    KillWorker: str
    WorkerReady: str
    WorkerGone: str
    ProvideWorker: str
    WorkerIssues: str


#: The supervisor's schema.
#:
#: - ``Start`` adds ``PoolStarting``; ``PoolReady`` (at least ``min`` workers ready)
#:   removes it. ``Ready`` follows ``PublicRpcReady`` and ``PoolReady``.
#: - ``NormalizingPool`` and ``PoolNormalized`` take turns: one normalising pass, then
#:   its end (check ``PoolReady`` or ``ErrPool`` for the outcome).
#: - ``ForkWorker`` and ``KillWorker`` are requests; ``WorkerReady`` and ``WorkerGone``
#:   (args ``exit_code``, ``stderr``, ``reason``) report what happened.
#: - ``ErrWorker`` (args ``worker_id``) records an error of one worker; the 4th recent
#:   one kills it. ``ErrPool``: normalising failed after its last round.
#: - ``ProvideWorker`` and ``WorkerIssues`` are what node clients add.
SUPERVISOR_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    **STATE_SOURCE,
    "Start": State(add=["PoolStarting"]),
    "Ready": State(auto=True, require=["PublicRpcReady", "PoolReady"]),
    "Heartbeat": State(require=["Start"]),
    "ErrWorker": _ERR_MULTI,
    "ErrPool": State(require=["Exception"], add=["Exception"]),
    "PublicRpcReady": State(require=["Start"]),
    "PoolStarting": State(require=["Start"], remove=["PoolReady"]),
    "PoolReady": State(require=["Start"], remove=["PoolStarting"]),
    "NormalizingPool": State(require=["Start"], remove=["PoolNormalized"]),
    "PoolNormalized": State(require=["Start"], remove=["NormalizingPool"]),
    "WorkersAvailable": State(require=["Start"]),
    "ForkWorker": State(multi=True, require=["Start"]),
    "KillWorker": State(multi=True),
    "WorkerReady": State(multi=True, require=["Start"]),
    "WorkerGone": State(multi=True),
    "ProvideWorker": State(multi=True, require=["Start"]),
    "WorkerIssues": State(multi=True, require=["Start"]),
}


# ------------------------------------------------------------------------------ worker
class WorkerStates(BasicStates, SourceStates):
    """States every node worker has; merge :data:`WORKER_SCHEMA` into the worker's
    schema and add the application's own states."""

    ErrWork: str
    ErrClient: str
    ErrSupervisor: str
    LocalRpcReady: str
    PublicRpcReady: str
    SuperConnected: str
    ServeClient: str
    ClientConnected: str
    ClientSendPayload: str
    Idle: str
    WorkRequested: str
    Working: str
    WorkReady: str


#: The work status group: one of them is active at a time once the worker is ``Ready``.
WORK_STATUS: Final = ("Idle", "WorkRequested", "Working", "WorkReady")

#: The worker's schema.
#:
#: - ``Ready`` needs both servers: ``LocalRpcReady`` (the supervisor's link) and
#:   ``PublicRpcReady`` (where the client connects).
#: - ``ServeClient`` (args ``client_id``, ``token``) is active while the worker is
#:   assigned to a client; ``ClientConnected`` while that client's connection is up.
#: - ``ClientSendPayload`` (args ``name``, ``data``) sends a payload to the client.
#: - ``Idle`` (auto), ``WorkRequested``, ``Working`` and ``WorkReady`` exclude each other.
WORKER_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    **STATE_SOURCE,
    "Ready": State(require=["Start", "LocalRpcReady", "PublicRpcReady"]),
    "ErrWork": _ERR_MULTI,
    "ErrClient": _ERR_MULTI,
    "ErrSupervisor": _ERR_MULTI,
    "LocalRpcReady": State(require=["Start"]),
    "PublicRpcReady": State(require=["Start"]),
    "SuperConnected": State(require=["Start"]),
    "ServeClient": State(require=["PublicRpcReady"]),
    "ClientConnected": State(require=["ServeClient"]),
    "ClientSendPayload": State(multi=True, require=["ClientConnected"]),
    "Idle": State(auto=True, require=["Ready"], remove=WORK_STATUS),
    "WorkRequested": State(require=["Ready"], remove=WORK_STATUS),
    "Working": State(require=["Ready"], remove=WORK_STATUS),
    "WorkReady": State(require=["Ready"], remove=WORK_STATUS),
}


# ------------------------------------------------------------------------------ client
class ClientStates(BasicStates, ConsumerStates):
    """States of the node client's machine (``nc-<id>``)."""

    ErrWorker: str
    ErrSupervisor: str
    SuperConnecting: str
    SuperConnected: str
    SuperDisconnected: str
    SuperReady: str
    WorkerRequested: str
    WorkerConnecting: str
    WorkerConnected: str
    WorkerDisconnected: str
    WorkerReady: str
    WorkerReassigned: str


_SUPER_GROUP: Final = ("SuperConnecting", "SuperConnected", "SuperDisconnected")
_WORKER_GROUP: Final = ("WorkerConnecting", "WorkerConnected", "WorkerDisconnected")

#: The node client's schema.
#:
#: - ``SuperConnecting`` / ``SuperConnected`` / ``SuperDisconnected`` exclude each other;
#:   ``SuperReady``: the supervisor link completed its handshake and is of the right kind.
#: - ``WorkerRequested`` until a worker is assigned; then the worker link goes
#:   ``WorkerConnecting`` → ``WorkerConnected`` → ``WorkerReady`` (the worker is
#:   ``Ready``), and ``Ready`` follows.
#: - ``ErrWorker``: the worker died or its link did not resume; ``WorkerReassigned``
#:   (args ``old``, ``new``) ticks when a new worker took its place.
CLIENT_SCHEMA: Final[dict[str, State]] = {
    **BASIC_SCHEMA,
    **CONSUMER_SCHEMA,
    "Ready": State(auto=True, require=["Start", "WorkerReady"]),
    "ErrWorker": _ERR_MULTI,
    "ErrSupervisor": _ERR_MULTI,
    "SuperConnecting": State(require=["Start"], remove=_SUPER_GROUP),
    "SuperConnected": State(require=["Start"], remove=_SUPER_GROUP),
    "SuperDisconnected": State(remove=_SUPER_GROUP),
    "SuperReady": State(require=["SuperConnected"]),
    "WorkerRequested": State(require=["Start"]),
    "WorkerConnecting": State(require=["Start"], remove=_WORKER_GROUP),
    "WorkerConnected": State(require=["Start"], remove=_WORKER_GROUP),
    "WorkerDisconnected": State(remove=_WORKER_GROUP),
    "WorkerReady": State(require=["WorkerConnected"], remove=["WorkerRequested"]),
    "WorkerReassigned": State(multi=True),
}
