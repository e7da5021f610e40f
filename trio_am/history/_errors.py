"""Errors of :mod:`trio_am.history`.

The tree (what the caller can do about each is in its docstring)::

    trio_am.Error
     +-- HistoryError                    base of everything trio_am.history raises
          +-- ConfigError (ValueError)   the tracking config does not fit the machine
          +-- QueryError (ValueError)    a query (or a time lookup) is malformed
          +-- StoreError                 the storage failed or holds incompatible data
          +-- HistoryDisposedError       the history was disposed; it answers no more
"""

from __future__ import annotations

from .._errors import Error

__all__ = ["ConfigError", "HistoryDisposedError", "HistoryError", "QueryError", "StoreError"]


class HistoryError(Error):
    """Base class of the errors raised by :mod:`trio_am.history`."""


class ConfigError(HistoryError, ValueError):
    """The tracking config cannot be used: no state to track, a state the machine does
    not have, a bad ``max_records``, or a store opened with other tracked states than the
    ones it was recorded with. Nothing was bound; fix the config and try again."""


class QueryError(HistoryError, ValueError):
    """The query is malformed: a state that is not tracked (``state`` names it), a range
    with only one end, a naive ``datetime``, ticks that do not match their states, or a
    negative limit. Nothing was searched."""


class StoreError(HistoryError):
    """The storage failed (disk full, locked or corrupt database) or holds data of an
    incompatible format. Records that could not be written stay buffered and are written
    by the next successful flush."""


class HistoryDisposedError(HistoryError):
    """The history was disposed (``dispose()``): it records nothing and answers no query.
    Create a new one to track the machine again."""
