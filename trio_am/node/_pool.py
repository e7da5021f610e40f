"""Pool sizing and the names shared by the three roles (no I/O).

The pool target (arpc.md D2) is ``min(max, max(min, busy + warm))``: always ``min``
workers, plus ``warm`` idle ones on top of those serving clients, never more than
``max``. asyncmachine-go keeps ``min + warm`` instead.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

__all__ = [
    "ENV_FD",
    "ENV_ID",
    "ENV_KIND",
    "ENV_SECRET",
    "ENV_TRANSPORT",
    "ENV_URL",
    "GETTER_ADDR",
    "GETTER_KIND",
    "KIND_RE",
    "NO_WORKER",
    "READY_LINE",
    "WORKER",
    "WORKER_GONE",
    "Pool",
    "check_kind",
]

#: The inherited socket's file descriptor (socketpair transport).
ENV_FD: Final = "AM_NODE_FD"
#: The worker kind the supervisor expects.
ENV_KIND: Final = "AM_NODE_KIND"
#: The worker's id, given by the supervisor.
ENV_ID: Final = "AM_NODE_ID"
#: Where the worker's public server listens (``tcp://host:0`` or ``ws://host:0``).
ENV_URL: Final = "AM_NODE_URL"
#: ``tcp`` for the fallback transport (no socketpair; a ``READY_LINE`` on stdout).
ENV_TRANSPORT: Final = "AM_NODE_TRANSPORT"
#: The token of the supervisor on the worker's local TCP server (``tcp`` transport).
ENV_SECRET: Final = "AM_NODE_SECRET"
#: The stdout line a worker prints with the ``tcp`` transport, followed by JSON.
READY_LINE: Final = "AM-NODE-READY"

#: The getter of a worker's local server: ``{"addr", "id", "kind", "pid"}``.
GETTER_ADDR: Final = "node.addr"
#: The getter of a supervisor's public server: ``{"kind", "id"}``.
GETTER_KIND: Final = "node.kind"

#: Payload: a worker for the client, ``{"req", "worker_id", "addr", "token", "kind"}``.
WORKER: Final = "node.worker"
#: Payload: no worker this time, ``{"req", "reason"}``.
NO_WORKER: Final = "node.no_worker"
#: Payload: the client's worker is gone, ``{"worker_id", "exit_code", "reason"}``.
WORKER_GONE: Final = "node.worker_gone"

#: Valid worker kinds (they become parts of client and machine ids).
KIND_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_kind(kind: object) -> str:
    """Return ``kind`` if it is a valid worker kind, else raise ``ValueError``."""
    if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
        raise ValueError(f"a worker kind must match [A-Za-z0-9._-]{{1,64}}, not {kind!r}")
    return kind


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"Pool.{attr.name} must be an int >= 0, not {value!r}")


def _per_client(_inst: object, _attr: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Pool.max_per_client must be None or an int >= 1, not {value!r}")


@attrs.frozen
class Pool:
    """How many workers a supervisor keeps.

    Attributes:
        min: workers that must be ready for ``PoolReady`` (and that are always kept).
        max: the most worker processes at once (at least 1).
        warm: idle workers kept on top of the busy ones.
        max_per_client: how many workers one client id may hold; None: no limit.
        recycle: replace a worker (kill it, start a fresh one) when its client leaves,
            instead of giving it to the next client.

    Raises:
        ValueError: a negative or non-int size, ``max < 1`` or ``min > max``.
    """

    min: int = attrs.field(default=2, validator=_non_negative)
    max: int = attrs.field(default=10, validator=_non_negative)
    warm: int = attrs.field(default=2, validator=_non_negative)
    max_per_client: int | None = attrs.field(default=None, validator=_per_client)
    recycle: bool = False

    def __attrs_post_init__(self) -> None:
        if self.max < 1:
            raise ValueError(f"Pool.max must be at least 1, not {self.max}")
        if self.min > self.max:
            raise ValueError(f"Pool.min ({self.min}) is above Pool.max ({self.max})")

    def target(self, busy: int) -> int:
        """How many workers to keep while ``busy`` of them serve clients:
        ``min(max, max(min, busy + warm))``."""
        return min(self.max, max(self.min, busy + self.warm))
