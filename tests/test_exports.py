"""The public namespace: ``trio_am.__all__`` against api.md.

Every name api.md uses as ``am.X`` must be exported; every export must exist and be
documented; public classes present themselves as ``trio_am.X``.
"""

from __future__ import annotations

import inspect
import types

import pytest

import trio_am as am

#: Every top-level name api.md uses as ``am.X`` (or lists as re-exported at top level),
#: except the aRPC ones, checked below once ``trio_am.rpc`` exists.
API_NAMES = [
    # schemas and states
    "State",
    "Schema",
    "SchemaError",
    "schema_merge",
    "States",
    "BasicStates",
    "BASIC_SCHEMA",
    # machines
    "Machine",
    "open_machine",
    "LogLevel",
    "Result",
    "StateUnknownError",
    "StateError",
    "Time",
    # handlers
    "Event",
    "Transition",
    "Mutation",
    "HandlerBindError",
    "Error",
    # structured concurrency and subscriptions
    "StateCtx",
    "Waiter",
    "MachineDisposedError",
    "SubscriptionClosed",
    # helpers
    "wait_for_all",
    "wait_for_any",
    "wait_for_err_all",
    "wait_for_err_any",
    "ExceptionActiveError",
    "TimeoutError",
    "add1_sync",
    "MutRequest",
    # typed args
    "typed_args",
    "pass_args",
    "parse_args",
    "merge_args",
    "args_converter",
    # machine.md §17.6 / brief
    "NestedEvalError",
    "TracerBase",
    "log_args_mapper",
    "log_field",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_api_name_is_exported(name):
    assert name in am.__all__
    assert hasattr(am, name)


def test_all_has_no_duplicates():
    assert len(am.__all__) == len(set(am.__all__))


@pytest.mark.parametrize("name", am.__all__)
def test_exported_name_exists(name):
    assert hasattr(am, name), name


@pytest.mark.parametrize("name", am.__all__)
def test_exported_callables_and_modules_have_docstrings(name):
    obj = getattr(am, name)
    if inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, types.ModuleType):
        doc = inspect.getdoc(obj)
        assert doc and doc.strip(), f"am.{name} has no docstring"


@pytest.mark.parametrize("name", [n for n in am.__all__ if inspect.isclass(getattr(am, n))])
def test_exported_classes_live_in_trio_am(name):
    obj = getattr(am, name)
    assert obj.__module__ == "trio_am", f"am.{name}.__module__ == {obj.__module__!r}"


def test_public_methods_of_machine_have_docstrings():
    missing = [
        n
        for n, v in inspect.getmembers(am.Machine)
        if not n.startswith("_")
        and (inspect.isfunction(v) or isinstance(v, property))
        and not inspect.getdoc(v)
    ]
    assert missing == []


def test_error_hierarchy():
    for name in (
        "SchemaError",
        "StateError",
        "StateUnknownError",
        "HandlerBindError",
        "MachineDisposedError",
        "SubscriptionClosed",
        "ExceptionActiveError",
        "TimeoutError",
        "NestedEvalError",
    ):
        assert issubclass(getattr(am, name), am.Error), name
    assert issubclass(am.StateUnknownError, am.StateError)
    assert issubclass(am.HandlerBindError, TypeError)
    assert issubclass(am.SchemaError, ValueError)
    import trio

    assert issubclass(am.TimeoutError, trio.TooSlowError)
