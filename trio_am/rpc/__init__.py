"""aRPC: machines over the network (arpc.md).

Serve a machine with :func:`serve`; mirror it elsewhere with :func:`connect`, whose
``client.mach`` is a :class:`NetMachine` with the ``Machine`` API::

    async with am.rpc.serve(mach, "ws://127.0.0.1:7500") as server:
        async with am.rpc.connect(server.urls[0], id="c1") as client:
            await client.rpc.when1("Ready")
            assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED

Layers: :mod:`.protocol` and :mod:`._codec` are sans-I/O (frames, clock sync, checks);
:mod:`.transport` moves frames over WebSocket, TCP or memory; :mod:`.server`,
:mod:`.client` and :mod:`.netmachine` are the Trio side; :mod:`.testing` has test tools.
"""

from __future__ import annotations

from ._codec import Limits, RawArgs
from .auth import ALL, Grant, TokenAuth
from .client import Backoff, Client, attach, connect
from .errors import (
    ArgsEncodeError,
    ArgsError,
    AuthError,
    ConnectionLostError,
    DeliveryError,
    ErrorCode,
    NotConnectedError,
    OutcomeUnknownError,
    PayloadTooLargeError,
    ProtocolError,
    QueueResetError,
    RemoteError,
    RpcError,
    StateError,
    UnsupportedError,
)
from .netmachine import NetMachine, RemoteResult
from .server import Payload, Server, SessionInfo, SessionStats, serve, serve_stream
from .states import (
    CLIENT_SCHEMA,
    CONSUMER_SCHEMA,
    SERVER_SCHEMA,
    STATE_SOURCE,
    ClientStates,
    ConsumerStates,
    ServerStates,
    SourceStates,
    StateSource,
)
from .transport import FrameStream

__all__ = [
    "ALL",
    "CLIENT_SCHEMA",
    "CONSUMER_SCHEMA",
    "SERVER_SCHEMA",
    "STATE_SOURCE",
    "ArgsEncodeError",
    "ArgsError",
    "AuthError",
    "Backoff",
    "Client",
    "ClientStates",
    "ConnectionLostError",
    "ConsumerStates",
    "DeliveryError",
    "ErrorCode",
    "FrameStream",
    "Grant",
    "Limits",
    "NetMachine",
    "NotConnectedError",
    "OutcomeUnknownError",
    "Payload",
    "PayloadTooLargeError",
    "ProtocolError",
    "QueueResetError",
    "RawArgs",
    "RemoteError",
    "RemoteResult",
    "RpcError",
    "Server",
    "ServerStates",
    "SessionInfo",
    "SessionStats",
    "SourceStates",
    "StateError",
    "StateSource",
    "TokenAuth",
    "UnsupportedError",
    "attach",
    "connect",
    "serve",
    "serve_stream",
]
