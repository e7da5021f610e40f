"""Transition history of a machine: record, query, travel back in machine time.

A history binds a tracer to a machine and turns the transitions its config selects into
records: the machine time after each (sums, diffs, the ticks of the tracked states), the
human time, and optionally the transition's details. Two stores answer the same queries
the same way:

* :class:`Memory`: in this process, the newest ``max_records`` records;
* :class:`SQLiteMemory`: an SQLite file (standard library ``sqlite3``) that survives
  restarts; writes are batched off the machine's path.

::

    from trio_am import history

    hist = history.Memory(mach, history.Config(tracked_states=["Start", "Ready"]))
    mach.add1("Start")
    hist.find_latest(history.Query(activated=["Start"]), limit=1)

``SQLiteMemory``, ``open_sqlite`` and ``list_machines`` are imported on first use, so
``import trio_am.history`` does not load ``sqlite3``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._base import BaseMemory as BaseMemory
from ._errors import ConfigError as ConfigError
from ._errors import HistoryDisposedError as HistoryDisposedError
from ._errors import HistoryError as HistoryError
from ._errors import QueryError as QueryError
from ._errors import StoreError as StoreError
from ._memory import Memory as Memory
from ._records import ConditionTime as ConditionTime
from ._records import Config as Config
from ._records import MachineRecord as MachineRecord
from ._records import MemoryRecord as MemoryRecord
from ._records import Query as Query
from ._records import TimeRecord as TimeRecord
from ._records import TransitionRecord as TransitionRecord

if TYPE_CHECKING:
    from ._sqlite import SQLiteMemory as SQLiteMemory
    from ._sqlite import list_machines as list_machines
    from ._sqlite import open_sqlite as open_sqlite

__all__ = [
    "BaseMemory",
    "ConditionTime",
    "Config",
    "ConfigError",
    "HistoryDisposedError",
    "HistoryError",
    "MachineRecord",
    "Memory",
    "MemoryRecord",
    "Query",
    "QueryError",
    "SQLiteMemory",
    "StoreError",
    "TimeRecord",
    "TransitionRecord",
    "list_machines",
    "open_sqlite",
]

_LAZY = {"SQLiteMemory": "_sqlite", "list_machines": "_sqlite", "open_sqlite": "_sqlite"}


def _fix_module(obj: Any) -> Any:
    mod = getattr(obj, "__module__", "")
    if isinstance(mod, str) and mod.startswith(__name__ + "."):
        try:
            obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover
            pass
    return obj


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _fix_module(getattr(importlib.import_module(f".{mod}", __name__), name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


for _name in __all__:
    if _name not in _LAZY:
        _fix_module(globals()[_name])
del _name
