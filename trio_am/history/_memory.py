"""The in-process history store: a bounded deque of entries (sans-I/O)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ._base import BaseMemory, Clock, ErrorHandler
from ._query import Compiled, Entry, match
from ._records import Config, MachineRecord, MemoryRecord

if TYPE_CHECKING:
    from .._core._engine import Engine

__all__ = ["Memory"]


class Memory(BaseMemory):
    """A history kept in this process's memory, newest ``config.max_records`` records.

    Binds a tracer to ``mach`` at once; every accepted transition the config selects
    becomes a record. Recording costs a few microseconds per transition and never blocks.

    Args:
        mach: the machine to track (a ``Machine``, an ``Engine`` or a ``NetMachine``).
        config: a :class:`Config`, or just the list of states to track.
        machine_record: a machine record to go on from (e.g. one saved elsewhere): its
            ``next_id`` and ``first_tracking`` are kept, and :meth:`restore` restores it.
        clock: where human times come from (default: the system clock, UTC); for tests.

    Raises:
        ConfigError: no state to track, a state not in the schema, a bad
            ``max_records``, or a record of another machine.
        HistoryError: the machine is disposed.

    Example::

        hist = Memory(mach, Config(tracked_states=["Start", "Ready"]))
        mach.add1("Start")
        hist.find_latest(Query(activated=["Start"]), limit=1)
    """

    def __init__(
        self,
        mach: Engine,
        config: Config | str | Iterable[str],
        *,
        machine_record: MachineRecord | None = None,
        clock: Clock | None = None,
        on_error: ErrorHandler | None = None,
    ) -> None:
        super().__init__(mach, config, clock=clock, on_error=on_error)
        self._entries: deque[Entry] = deque(maxlen=self._config.max_records)
        self._open(machine_record)

    def _store(self, entry: Entry) -> None:
        self._entries.append(entry)
        self._last_sync = entry.htime_us

    def _find(self, q: Compiled, limit: int, with_tx: bool) -> list[MemoryRecord]:
        return [self._record_of(e, with_tx) for e in match(reversed(self._entries), q, limit)]

    def _at(self, column: str, value: int, with_tx: bool) -> MemoryRecord | None:
        for e in reversed(self._entries):
            if getattr(e, column) <= value:
                return self._record_of(e, with_tx)
        return None

    def _export(self, with_tx: bool) -> list[MemoryRecord]:
        return [self._record_of(e, with_tx) for e in self._entries]

    def _count(self) -> int:
        return len(self._entries)

    def _sync(self) -> None:
        self._last_sync = self._now_us()

    def _close(self) -> None:
        self._entries.clear()
