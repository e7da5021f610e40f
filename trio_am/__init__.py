"""trio_am: structured-concurrency state machines for Trio.

A clock-based multi-state machine (relations, negotiation, a queue, logical clocks) in
Trio's idiom: state contexts are cancel scopes, work forked from a handler is cancelled
when its state ends, and a machine lives inside ``async with`` like a nursery.

    import trio_am as am

    mach = am.Machine({"Start": {}, "Ready": {"require": ["Start"]}})
    mach.add(["Start", "Ready"])
"""

from __future__ import annotations

from . import helpers as helpers
from . import pipes as pipes
from ._core._engine import Engine as Engine
from ._core._handlers import ExceptionHandler as ExceptionHandler
from ._core._logargs import log_args_mapper as log_args_mapper
from ._core._schema import Schema as Schema
from ._core._schema import SchemaLike as SchemaLike
from ._core._schema import State as State
from ._core._schema import schema_merge as schema_merge
from ._core._schema import states_by_tag as states_by_tag
from ._core._states import BASIC_SCHEMA as BASIC_SCHEMA
from ._core._states import BasicStates as BasicStates
from ._core._states import States as States
from ._core._tracer import TracerBase as TracerBase
from ._core._types import Clock as Clock
from ._core._types import Event as Event
from ._core._types import LogLevel as LogLevel
from ._core._types import Mutation as Mutation
from ._core._types import MutationType as MutationType
from ._core._types import MutSource as MutSource
from ._core._types import Result as Result
from ._core._types import Time as Time
from ._core._types import Transition as Transition
from ._core._types import is_active_tick as is_active_tick
from ._errors import Error as Error
from ._errors import ExceptionActiveError as ExceptionActiveError
from ._errors import HandlerBindError as HandlerBindError
from ._errors import HandlerTimeoutError as HandlerTimeoutError
from ._errors import MachineDisposedError as MachineDisposedError
from ._errors import NestedEvalError as NestedEvalError
from ._errors import SchemaError as SchemaError
from ._errors import StateError as StateError
from ._errors import StateUnknownError as StateUnknownError
from ._errors import SubscriptionClosed as SubscriptionClosed
from ._runtime._machine import Machine as Machine
from ._runtime._machine import open_machine as open_machine
from ._runtime._scopes import StateCtx as StateCtx
from ._runtime._waiters import TimeoutError as TimeoutError
from ._runtime._waiters import Waiter as Waiter
from .args import args_converter as args_converter
from .args import log_field as log_field
from .args import merge_args as merge_args
from .args import parse_args as parse_args
from .args import pass_args as pass_args
from .args import typed_args as typed_args
from .helpers import MutationCanceledError as MutationCanceledError
from .helpers import MutRequest as MutRequest
from .helpers import add1_async as add1_async
from .helpers import add1_sync as add1_sync
from .helpers import add_sync as add_sync
from .helpers import group_when1 as group_when1
from .helpers import remove1_sync as remove1_sync
from .helpers import wait_for_all as wait_for_all
from .helpers import wait_for_any as wait_for_any
from .helpers import wait_for_err_all as wait_for_err_all
from .helpers import wait_for_err_any as wait_for_err_any

__version__ = "0.1.0"

#: Alias of :class:`TracerBase` (the tracer protocol: define any of its hooks).
Tracer = TracerBase

__all__ = [
    "BASIC_SCHEMA",
    "BasicStates",
    "Clock",
    "Engine",
    "Error",
    "Event",
    "ExceptionActiveError",
    "ExceptionHandler",
    "HandlerBindError",
    "HandlerTimeoutError",
    "LogLevel",
    "Machine",
    "MachineDisposedError",
    "MutRequest",
    "MutSource",
    "Mutation",
    "MutationCanceledError",
    "MutationType",
    "NestedEvalError",
    "Result",
    "Schema",
    "SchemaError",
    "SchemaLike",
    "State",
    "StateCtx",
    "StateError",
    "StateUnknownError",
    "States",
    "SubscriptionClosed",
    "Time",
    "TimeoutError",
    "Tracer",
    "TracerBase",
    "Transition",
    "Waiter",
    "add1_async",
    "add1_sync",
    "add_sync",
    "args_converter",
    "group_when1",
    "helpers",
    "is_active_tick",
    "log_args_mapper",
    "log_field",
    "merge_args",
    "open_machine",
    "parse_args",
    "pass_args",
    "pipes",
    "remove1_sync",
    "schema_merge",
    "states_by_tag",
    "typed_args",
    "wait_for_all",
    "wait_for_any",
    "wait_for_err_all",
    "wait_for_err_any",
]


def _fix_module() -> None:
    # tracebacks and reprs say trio_am.Machine, not trio_am._runtime._machine.Machine
    for name in __all__:
        obj = globals()[name]
        mod = getattr(obj, "__module__", "")
        if isinstance(mod, str) and mod.startswith("trio_am.") and callable(obj):
            try:
                obj.__module__ = "trio_am"
            except (AttributeError, TypeError):  # pragma: no cover
                pass


_fix_module()


def __getattr__(name: str) -> object:
    # aRPC loads on first use (``am.rpc``, ``am.NetMachine``): it pulls in the network
    # stack, which a purely local program does not need
    if name == "node":
        import importlib

        return importlib.import_module("trio_am.node")
    if name == "rpc":
        import importlib

        return importlib.import_module("trio_am.rpc")
    if name == "NetMachine":
        from .rpc import NetMachine

        return NetMachine
    raise AttributeError(f"module 'trio_am' has no attribute {name!r}")
