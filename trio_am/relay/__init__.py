"""The relay and the browser side of aRPC (arpc.md Part C).

- :class:`Relay` / :func:`serve_relay`: TCP over WebSocket, both ways, on one port, with
  ``/healthz``, ``/am.js`` and static files; the command ``trio-am-relay``.
- ``am.js`` (:func:`am_js_path`): the browser library, an ES module with a client role
  (``connect``: a mirror of a remote machine) and a host role (``host``: a machine in the
  page that Python peers reach through the relay). Built from ``js/`` in the repository.
- :mod:`trio_am.relay._rules`: paths, ids, allow-lists and control frames, without I/O.
"""

from __future__ import annotations

from ._relay import Handler, Relay, RelayError, am_js_path, serve_relay
from ._rules import (
    DEFAULT_ALLOW_LISTEN,
    RELAY_BRIDGED,
    RELAY_ERROR,
    OriginPolicy,
    RelayCode,
    Route,
    RouteError,
    TargetRules,
    parse_route,
    parse_target,
)
from .states import RELAY_SCHEMA, RelayStates

__all__ = [
    "DEFAULT_ALLOW_LISTEN",
    "RELAY_BRIDGED",
    "RELAY_ERROR",
    "RELAY_SCHEMA",
    "Handler",
    "OriginPolicy",
    "Relay",
    "RelayCode",
    "RelayError",
    "RelayStates",
    "Route",
    "RouteError",
    "TargetRules",
    "am_js_path",
    "parse_route",
    "parse_target",
    "serve_relay",
]
