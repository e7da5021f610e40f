"""Errors and error codes of aRPC (arpc.md B11).

The tree::

    am.Error
     +-- RpcError                     base of every aRPC error; ``code`` is a B11 code
          +-- ProtocolError           the peer broke the protocol (codes 1-6, 11, 12-16, 19)
          +-- AuthError               authentication refused (7) or not granted (8)
          +-- StateError              (also am.StateError) an unknown or hidden state (9)
          +-- ArgsError               args too large, too deep or unknown typed args (10)
          |    +-- ArgsEncodeError    a value that cannot travel; raised before sending
          +-- UnsupportedError        an unknown getter or a mode that is off (17)
          +-- DeliveryError           a payload was refused or timed out (18)
          |    +-- PayloadTooLargeError  a payload above the frame limit; nothing sent
          +-- RemoteError             an exception that travelled over the wire
          +-- ConnectionLostError     the link is gone; the call's fate is known to fail
               +-- OutcomeUnknownError   sent, but the server restarted before answering
               +-- NotConnectedError     disconnected and the pending buffer is full

``QueueResetError`` (an ``am.Error``) ends ``when_queue`` waiters of a mirror whose
source restarted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from .._errors import Error
from .._errors import StateError as _StateError

__all__ = [
    "ArgsEncodeError",
    "ArgsError",
    "AuthError",
    "ConnectionLostError",
    "DeliveryError",
    "ErrorCode",
    "NotConnectedError",
    "OutcomeUnknownError",
    "PayloadTooLargeError",
    "ProtocolError",
    "QueueResetError",
    "RemoteError",
    "RpcError",
    "StateError",
    "UnsupportedError",
    "error_from_frame",
]


class ErrorCode(enum.IntEnum):
    """The error codes of ERROR frames (arpc.md B11)."""

    MALFORMED = 1
    UNKNOWN_KIND = 2
    BAD_FIELD = 3
    TOO_LARGE = 4
    VERSION = 5
    HANDSHAKE = 6
    AUTH = 7
    FORBIDDEN = 8
    UNKNOWN_STATE = 9
    BAD_ARGS = 10
    REQ_ORDER = 11
    OVERLOAD = 12
    SHUTDOWN = 13
    SOURCE_GONE = 14
    INTERNAL = 15
    TIMEOUT = 16
    UNSUPPORTED = 17
    PAYLOAD = 18
    ABUSE = 19


#: WebSocket close code for each fatal error code (B11).
WS_CLOSE_CODES: dict[int, int] = {
    ErrorCode.VERSION: 1002,
    ErrorCode.HANDSHAKE: 1002,
    ErrorCode.AUTH: 1008,
    ErrorCode.OVERLOAD: 1013,
    ErrorCode.SHUTDOWN: 1001,
    ErrorCode.SOURCE_GONE: 1011,
    ErrorCode.TIMEOUT: 1001,
    ErrorCode.ABUSE: 1008,
    ErrorCode.TOO_LARGE: 1009,
}


class RpcError(Error):
    """Base of every aRPC error.

    Attributes:
        code: the B11 error code (an :class:`ErrorCode` value), or 0 for local errors.
        detail: the ERROR frame's ``detail`` map, when the server sent one.
        fatal: True when the peer closed the connection after this error.
    """

    default_code: int = 0

    def __init__(
        self,
        message: str = "",
        *,
        code: int | None = None,
        detail: Mapping[str, Any] | None = None,
        fatal: bool = False,
        machine_id: str | None = None,
        state: str | None = None,
    ) -> None:
        self.code = self.default_code if code is None else int(code)
        self.detail: dict[str, Any] = dict(detail or {})
        self.fatal = fatal
        super().__init__(message, machine_id=machine_id, state=state)


class ProtocolError(RpcError):
    """The peer broke the protocol: a malformed or unexpected frame, a bad handshake,
    an unsupported version, overload, abuse, or a timeout. ``code`` says which."""

    default_code = ErrorCode.MALFORMED


class AuthError(RpcError):
    """Authentication was refused (code 7) or the request names something the grant does
    not allow (code 8). Nothing was applied."""

    default_code = ErrorCode.FORBIDDEN


class StateError(RpcError, _StateError):
    """A request named a state that is unknown, repeated or hidden (code 9)."""

    default_code = ErrorCode.UNKNOWN_STATE


class ArgsError(RpcError):
    """Args were refused: too large, too deep, or typed args of an unregistered class
    (code 10). Nothing was applied."""

    default_code = ErrorCode.BAD_ARGS


class ArgsEncodeError(ArgsError):
    """A value in args (or a payload) cannot be encoded for the wire. Raised locally,
    before a single byte is sent."""


class UnsupportedError(RpcError):
    """An unknown getter, or a feature that is off (no schema, ``when_args``) (code 17)."""

    default_code = ErrorCode.UNSUPPORTED


class DeliveryError(RpcError):
    """A payload was refused by the client or not acknowledged in time (code 18)."""

    default_code = ErrorCode.PAYLOAD


class PayloadTooLargeError(DeliveryError):
    """A payload larger than the frame limit; nothing was sent."""

    default_code = ErrorCode.TOO_LARGE


class RemoteError(RpcError):
    """An exception that travelled over the wire (msgpack ext type 2).

    Attributes:
        type_name: the remote exception's class name.
        remote_message: its message.
        remote_traceback: its formatted traceback (may be empty).
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.remote_message, self.remote_traceback))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteError) and (
            self.type_name,
            self.remote_message,
            self.remote_traceback,
        ) == (other.type_name, other.remote_message, other.remote_traceback)

    def __hash__(self) -> int:
        return hash((self.type_name, self.remote_message))


class ConnectionLostError(RpcError):
    """The connection to the server is gone and the request failed."""


class OutcomeUnknownError(ConnectionLostError):
    """The request was sent, but the server restarted (a new epoch) or the reconnect
    failed before it answered: it may or may not have been applied."""


class NotConnectedError(ConnectionLostError):
    """Disconnected, and the buffer of requests waiting for the link is full."""


class QueueResetError(Error):
    """A ``when_queue`` waiter of a mirror whose source restarted: the queue tick it
    waited for belongs to the old epoch and will never be reached."""


_BY_CODE: dict[int, type[RpcError]] = {
    ErrorCode.AUTH: AuthError,
    ErrorCode.FORBIDDEN: AuthError,
    ErrorCode.UNKNOWN_STATE: StateError,
    ErrorCode.BAD_ARGS: ArgsError,
    ErrorCode.UNSUPPORTED: UnsupportedError,
    ErrorCode.PAYLOAD: DeliveryError,
}


def error_from_frame(
    code: int,
    message: str,
    *,
    fatal: bool = False,
    detail: Mapping[str, Any] | None = None,
    machine_id: str | None = None,
) -> RpcError:
    """The exception a caller gets for an ERROR frame with ``code``."""
    cls = _BY_CODE.get(code, ProtocolError)
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = str(code)
    return cls(f"{name}: {message}", code=code, detail=detail, fatal=fatal, machine_id=machine_id)
