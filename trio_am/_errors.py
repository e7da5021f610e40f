"""Exceptions raised by trio_am.

The tree (what the caller can do about each is in its docstring)::

    Error                           base of everything trio_am raises on purpose
     +-- SchemaError (ValueError)   the schema or the state order is invalid
     +-- StateError (ValueError)    a state name is not usable here
     |    +-- StateUnknownError     a name that is not in the machine's schema
     +-- HandlerBindError (TypeError)  a handler object cannot be bound
     +-- MachineDisposedError       the machine was disposed while you waited on it
     +-- SubscriptionClosed         you closed the waiter you are awaiting
     +-- ExceptionActiveError       the Exception state activated while you waited
     +-- TimeoutError (trio.TooSlowError)  a helper's timeout ran out
     +-- NestedEvalError            `eval` called from inside a handler
     +-- HandlerTimeoutError        a handler ran longer than `handler_timeout`

``trio_am.helpers.MutationCanceledError`` (a ``MutRequest`` ran out of retries) is also
an ``Error``.

Every error carries ``machine_id`` and, where one is involved, ``state`` as attributes,
and names both in its message.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Error",
    "ExceptionActiveError",
    "HandlerBindError",
    "HandlerTimeoutError",
    "MachineDisposedError",
    "NestedEvalError",
    "SchemaError",
    "StateError",
    "StateUnknownError",
    "SubscriptionClosed",
]


class Error(Exception):
    """Base class of every error trio_am raises on purpose.

    Attributes:
        machine_id: id of the machine concerned, or None.
        state: name of the state concerned, or None.
    """

    machine_id: str | None
    state: str | None

    def __init__(
        self, message: str = "", *, machine_id: str | None = None, state: str | None = None
    ) -> None:
        self.machine_id = machine_id
        self.state = state
        prefix = f"[{machine_id}] " if machine_id else ""
        super().__init__(prefix + message)

    def __reduce__(self) -> tuple[Any, ...]:  # keep pickling (and trio's MultiError copies) working
        return (_rebuild, (type(self), str(self), self.machine_id, self.state))


def _rebuild(cls: type[Error], msg: str, machine_id: str | None, state: str | None) -> Error:
    err = cls.__new__(cls)
    Exception.__init__(err, msg)
    err.machine_id = machine_id
    err.state = state
    return err


class SchemaError(Error, ValueError):
    """The schema is invalid: a bad state name, an unknown relation target, a
    require-remove conflict, or a state order that does not match the schema.

    Raised when a machine is created (or its schema changed); the machine is not built.
    """


class StateError(Error, ValueError):
    """A state name cannot be used for this call."""


class StateUnknownError(StateError):
    """A mutation, check or subscription named a state the schema lacks.

    Raised before anything changes: the machine is untouched.
    """


class HandlerBindError(Error, TypeError):
    """A handler object cannot be bound: a handler named for an unknown state, an
    ``async def`` handler, or a non-callable attribute with a handler name.

    Nothing from the object is bound when this is raised.
    """


class MachineDisposedError(Error):
    """The machine was disposed: raised in waiters that were pending (or created)
    while it was disposed. There is nothing more to wait for."""


class SubscriptionClosed(Error):
    """The waiter was closed with ``Waiter.close()`` before its condition held."""


class ExceptionActiveError(Error):
    """The ``Exception`` state activated while ``wait_for_err_*`` was waiting.

    Attributes:
        err: the machine's last error (``mach.err``) at that moment.
    """

    err: BaseException | None

    def __init__(
        self,
        message: str = "",
        *,
        machine_id: str | None = None,
        state: str | None = "Exception",
        err: BaseException | None = None,
    ) -> None:
        super().__init__(message, machine_id=machine_id, state=state)
        self.err = err


class NestedEvalError(Error):
    """``Machine.eval`` was called from inside a handler, where it would never run."""


class HandlerTimeoutError(Error):
    """A handler ran longer than the machine's ``handler_timeout``.

    A synchronous handler cannot be interrupted: this is reported after it returned, to
    ``mach.internal_errors`` (and logged). A negotiation handler that overran counts as
    a veto; a final handler that overran is reported only. With
    ``timeouts_to_exception=True`` the ``Exception`` state is added too.

    Attributes:
        handler: the handler name.
        duration: how long it ran, in seconds.
    """

    handler: str
    duration: float

    def __init__(
        self,
        message: str = "",
        *,
        machine_id: str | None = None,
        state: str | None = None,
        handler: str = "",
        duration: float = 0.0,
    ) -> None:
        super().__init__(message, machine_id=machine_id, state=state)
        self.handler = handler
        self.duration = duration
