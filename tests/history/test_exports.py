"""The public face of trio_am.history: every exported name exists, is documented, and
presents itself as ``trio_am.history.X``; every error is a ``trio_am.Error``."""

from __future__ import annotations

import inspect

import pytest

import trio_am as am
from trio_am import history


@pytest.mark.parametrize("name", history.__all__)
def test_export(name: str) -> None:
    obj = getattr(history, name)
    assert inspect.getdoc(obj), f"{name} has no docstring"
    assert getattr(obj, "__module__", None) == "trio_am.history"
    assert name in dir(history)


def test_errors() -> None:
    assert issubclass(history.HistoryError, am.Error)
    for err in (history.ConfigError, history.QueryError):
        assert issubclass(err, history.HistoryError) and issubclass(err, ValueError)
    for err in (history.StoreError, history.HistoryDisposedError):
        assert issubclass(err, history.HistoryError)


def test_public_methods_are_documented() -> None:
    for cls in (history.BaseMemory, history.Memory, history.SQLiteMemory):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            assert inspect.getdoc(member), f"{cls.__name__}.{name} has no docstring"


def test_unknown_attribute() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        history.Nope  # noqa: B018
