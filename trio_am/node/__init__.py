"""Worker pools: a supervisor keeps worker processes and hands them to clients
(arpc.md Part D).

- :class:`Supervisor` (with a :class:`Pool`): spawns workers of one kind with Trio's
  process API, each in its own process group, talks to each over an inherited
  socketpair (aRPC), keeps the pool at its target, health-checks the workers, replaces
  dead ones, and serves its machine to clients, who may add only ``ProvideWorker`` and
  ``WorkerIssues``.
- :func:`worker`: the worker program's side; serves the application's machine to the
  supervisor and to the one client it was assigned to (one-time token).
- :func:`connect` / :class:`NodeClient`: the client's side; ``request_worker()`` gets
  a worker, then the client talks to it directly; a lost worker is replaced
  (``WorkerReassigned``).

The three machines' schemas are in :mod:`trio_am.node.states`; the errors in
:mod:`trio_am.node.errors`.

Example (the worker program calls ``am.node.worker(mach, "squarer")``)::

    sup = am.node.Supervisor("squarer", [sys.executable, "worker.py"], WORKER_SCHEMA)
    async with sup.run("tcp://127.0.0.1:0"):
        await sup.wait_ready(timeout=30)
        async with am.node.connect(sup.url, "squarer", WORKER_SCHEMA, consumer=inbox) as nc:
            w = await nc.request_worker()
            await w.add1_remote("WorkRequested", {"input": 3})
"""

from __future__ import annotations

from ._pool import Pool
from .client import NodeClient, WorkerOffer, connect, open_worker
from .errors import (
    NodeError,
    NoWorkerError,
    PoolError,
    SpawnError,
    WorkerEnvError,
    WorkerExitError,
    WorkerHealthError,
    WorkerLostError,
)
from .states import (
    CLIENT_SCHEMA,
    SUPERVISOR_SCHEMA,
    WORK_STATUS,
    WORKER_SCHEMA,
    ClientStates,
    SupervisorStates,
    WorkerStates,
)
from .supervisor import Supervisor, WorkerInfo
from .worker import Worker, worker

__all__ = [
    "CLIENT_SCHEMA",
    "SUPERVISOR_SCHEMA",
    "WORKER_SCHEMA",
    "WORK_STATUS",
    "ClientStates",
    "NoWorkerError",
    "NodeClient",
    "NodeError",
    "Pool",
    "PoolError",
    "SpawnError",
    "Supervisor",
    "SupervisorStates",
    "Worker",
    "WorkerEnvError",
    "WorkerExitError",
    "WorkerHealthError",
    "WorkerInfo",
    "WorkerLostError",
    "WorkerOffer",
    "WorkerStates",
    "connect",
    "open_worker",
    "worker",
]
