"""Telemetry for trio_am machines: the debugger reporter, OpenTelemetry traces and logs,
Prometheus metrics, and the ``AM_*`` environment switches.

Everything here is built on tracers (``mach.bind_tracer``) and is imported lazily, so
``import trio_am.telemetry`` pulls in neither OpenTelemetry nor prometheus_client until a
binder that needs it is called::

    from trio_am import telemetry

    telemetry.bind_env(mach)                       # whatever AM_* asks for
    telemetry.bind_debugger(mach, "localhost:6831")  # report to trio-am-dbg
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dbg import DbgReporter, bind_debugger
    from .env import bind_env
    from .otel import bind_otel, bind_otel_logger
    from .prometheus import bind_metrics, serve_metrics

__all__ = [
    "DbgReporter",
    "bind_debugger",
    "bind_env",
    "bind_metrics",
    "bind_otel",
    "bind_otel_logger",
    "serve_metrics",
]

_LAZY = {
    "DbgReporter": "dbg",
    "bind_debugger": "dbg",
    "bind_env": "env",
    "bind_otel": "otel",
    "bind_otel_logger": "otel",
    "bind_metrics": "prometheus",
    "serve_metrics": "prometheus",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
