"""Errors of worker pools (``am.node``).

The tree::

    am.Error
     +-- NodeError               base of every node error
          +-- WorkerEnvError     ``worker()`` was not started by a supervisor, or with a
          |                      bad environment (``AM_NODE_*``)
          +-- SpawnError         the worker command could not be started
          +-- WorkerExitError    a worker process ended on its own (``exit_code``,
          |                      ``stderr``: the tail of its stderr)
          +-- WorkerHealthError  a worker failed its 3 health checks of one heartbeat
          +-- PoolError          normalising the pool failed after its last round
          +-- NoWorkerError      no worker could be had (``reason``)
          +-- WorkerLostError    the assigned worker died, or its link did not resume

Wrong arguments (a bad pool size, an empty command, a bad URL) raise ``ValueError``; a
worker schema without the node's states raises ``am.SchemaError``. Refused tokens
surface as ``am.rpc.AuthError``; calls pending on a lost worker fail with
``am.rpc.OutcomeUnknownError``.
"""

from __future__ import annotations

from .._errors import Error

__all__ = [
    "NoWorkerError",
    "NodeError",
    "PoolError",
    "SpawnError",
    "WorkerEnvError",
    "WorkerExitError",
    "WorkerHealthError",
    "WorkerLostError",
]


class NodeError(Error):
    """Base of every error of ``am.node``."""


class WorkerEnvError(NodeError):
    """``am.node.worker()`` found no supervisor to serve: the ``AM_NODE_*`` environment
    is missing or invalid, or names another worker kind. Start the program through a
    :class:`~trio_am.node.Supervisor`."""


class SpawnError(NodeError):
    """The worker command could not be started (e.g. the executable does not exist).

    Attributes:
        worker_id: the id the worker would have had.
    """

    def __init__(self, message: str, *, worker_id: str, machine_id: str | None = None) -> None:
        self.worker_id = worker_id
        super().__init__(message, machine_id=machine_id)


class WorkerExitError(NodeError):
    """A worker process ended although nobody asked it to.

    Attributes:
        worker_id: the worker's id.
        exit_code: its exit status (negative: killed by that signal).
        stderr: the last bytes of its stderr, decoded.
    """

    def __init__(
        self,
        message: str,
        *,
        worker_id: str,
        exit_code: int | None,
        stderr: str = "",
        machine_id: str | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.exit_code = exit_code
        self.stderr = stderr
        super().__init__(message, machine_id=machine_id)


class WorkerHealthError(NodeError):
    """A worker did not answer any of the health checks of one heartbeat.

    Attributes:
        worker_id: the worker's id.
    """

    def __init__(self, message: str, *, worker_id: str, machine_id: str | None = None) -> None:
        self.worker_id = worker_id
        super().__init__(message, machine_id=machine_id)


class PoolError(NodeError):
    """Normalising the pool failed: fewer than ``min`` workers were ready after the last
    round (``ErrPool`` on the supervisor)."""


class NoWorkerError(NodeError):
    """No worker could be had.

    Attributes:
        reason: ``"none_free"`` (no idle, healthy worker), ``"max_per_client"`` (this
            client holds its maximum), ``"no_supervisor"`` (no supervisor of the kind
            could be reached), ``"refused"`` (the supervisor refused the request) or
            ``"timeout"`` (the answer or the worker did not come in time).
    """

    def __init__(self, message: str, *, reason: str, machine_id: str | None = None) -> None:
        self.reason = reason
        super().__init__(message, machine_id=machine_id)


class WorkerLostError(NodeError):
    """The assigned worker is gone: its process ended, or its link did not resume in
    time.

    Attributes:
        worker_id: the worker's id.
    """

    def __init__(self, message: str, *, worker_id: str, machine_id: str | None = None) -> None:
        self.worker_id = worker_id
        super().__init__(message, machine_id=machine_id)
