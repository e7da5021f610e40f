"""The debugger's data model: clients, records, filters and cursors (tools.md §1.1).

Messages of the wire protocol (tools.md §1.7) go in through :meth:`Model.ingest`, one decoded
msgpack array at a time, stamped with their receive time ``rt``; the model keeps per reporting
machine (a :class:`Client`) its schema and records (:class:`Tx`), and the view state the UI
shows: the selected client, filters, the tx cursor ``c`` and step cursor ``s``.

Sans-I/O and UI-free: no urwid, no sockets. The live server, recordings (``load``), tests and
notebooks all feed the same code, so a replay equals the live session.

Cursor model: ``c`` is 0 (the initial schema) or the 1-based number of the current tx; the
"next" tx (the one the steps timeline walks, :meth:`Model.next_no`) is the first tx after
``c`` visible under the filters, and ``s`` (0..S) counts its steps already applied.
"""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_left, bisect_right
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "HEALTH_STATES",
    "LOG_LEVEL_NAMES",
    "RPC_TAGS",
    "Client",
    "Filters",
    "LogEntry",
    "Model",
    "StateInfo",
    "Step",
    "Tx",
]

LOG_LEVEL_NAMES = ("nothing", "external", "changes", "ops", "decisions", "everything")
HEALTH_STATES = frozenset({"Healthcheck", "Heartbeat"})
RPC_TAGS = frozenset({"rpc-client", "rpc-server", "rpc-mux", "relay"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: How many visible txs a jump without a selected state moves (D27).
JUMP = 50

_TX_FLAG_AUTO, _TX_FLAG_CHECK, _TX_FLAG_ACCEPTED = 1, 2, 4

# Field order of the kinds the model reads (tools.md §1.7); mirrors ``_wire.FIELDS``.
_SCHEMA_N = 10  # m parent tags names states groups groups_order time qtick t
_TX_N = 21  # m id type called args flags target before after steps log pre_log qlen qtick
#             mut_qtick token src t0 t1 err trace
_QUEUED_N = 14  # m id type called args flags qlen qtick mut_qtick token time src t trace


class Step(NamedTuple):
    """One step of a transition, as on the wire (tools.md §1.7).

    ``kind`` is one of the Go codes (1 relation, 2 handler, 4 activate, 8 deactivate,
    16 deactivate-passive, 32 called, 64 cancel); ``from_``/``to`` are state indexes or -1.
    """

    kind: int
    from_: int
    to: int
    rel: int
    flags: int
    name: str | None
    dur: int


class LogEntry(NamedTuple):
    """One log line: level (0-5), text (no machine id prefix) and an optional event."""

    level: int
    text: str
    ev: list[Any] | None


class StateInfo:
    """One state of a client's schema: flags, relations (state names) and tags."""

    __slots__ = ("add", "after", "auto", "multi", "remove", "require", "tags")

    def __init__(self, data: Any = None) -> None:
        d = data if isinstance(data, dict) else {}
        self.auto: bool = bool(d.get("auto", False))
        self.multi: bool = bool(d.get("multi", False))
        self.require: list[str] = _strs(d.get("require"))
        self.add: list[str] = _strs(d.get("add"))
        self.remove: list[str] = _strs(d.get("remove"))
        self.after: list[str] = _strs(d.get("after"))
        self.tags: list[str] = _strs(d.get("tags"))

    def __repr__(self) -> str:
        return (
            f"StateInfo(auto={self.auto}, multi={self.multi}, require={self.require}, "
            f"add={self.add}, remove={self.remove}, after={self.after}, tags={self.tags})"
        )


# ---------------------------------------------------------------------------------- coercion
def _int(v: Any, default: int = 0) -> int:
    if type(v) is int:
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v)
    return default


def _ints(v: Any, bad: int = -1) -> list[int]:
    if type(v) is list:
        for x in v:
            if type(x) is not int:
                return [_int(y, bad) for y in v]
        return v
    if isinstance(v, tuple):
        return [_int(y, bad) for y in v]
    return []


def _str(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else str(v)


def _strs(v: Any) -> list[str]:
    if not isinstance(v, (list, tuple)):
        return []
    return [s for s in (_str(x) for x in v) if s is not None]


def _pad(msg: list[Any], n: int) -> list[Any]:
    """The ``n`` fields after the kind, missing ones None, extra ones dropped."""
    f = msg[1 : n + 1]
    if len(f) < n:
        f.extend([None] * (n - len(f)))
    return f


def _entries(v: Any) -> list[LogEntry]:
    if not isinstance(v, (list, tuple)):
        return []
    out = []
    for e in v:
        if isinstance(e, (list, tuple)) and len(e) >= 2:
            ev = e[2] if len(e) > 2 and isinstance(e[2], (list, tuple)) else None
            out.append(LogEntry(_int(e[0]), _str(e[1]) or "", list(ev) if ev else None))
        elif isinstance(e, str):
            out.append(LogEntry(2, e, None))
    return out


def _steps(v: Any) -> list[Step]:
    if not isinstance(v, (list, tuple)):
        return []
    out = []
    for st in v:
        if not isinstance(st, (list, tuple)) or not st:
            continue
        n = len(st)
        out.append(
            Step(
                _int(st[0]),
                _int(st[1], -1) if n > 1 else -1,
                _int(st[2], -1) if n > 2 else -1,
                _int(st[3], -1) if n > 3 else -1,
                _int(st[4]) if n > 4 else 0,
                _str(st[5]) if n > 5 else None,
                _int(st[6]) if n > 6 else 0,
            )
        )
    return out


def _natural_key(s: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s) if p]


# ---------------------------------------------------------------------------------- Tx
class Tx:
    """One record of a client: an executed or canceled ``tx``, or a ``queued`` mutation.

    Wire fields keep their wire names (states as indexes into the client's ``names``);
    ``steps``, ``log``, ``pre_log`` and ``touched`` are parsed on first access. Derived at
    ingest: ``accepted``, ``auto``, ``check``, ``canceled`` (not accepted and not queued),
    ``time_before``/``time_after`` (machine-time sums) and ``time_diff``, ``added`` /
    ``removed``, ``is_empty``, ``is_health``, ``is_error``. A queued record's ``before`` and
    ``after`` are the client's ticks when it arrived. Links between a queued record and the
    tx that executed it (same ``mut_qtick``): ``exec_no`` on the queued one, ``queued_no``
    on the tx (1-based numbers, 0 = none).
    """

    __slots__ = (
        "_log",
        "_pre_log",
        "_steps",
        "_touched",
        "accepted",
        "added",
        "after",
        "args",
        "auto",
        "before",
        "called",
        "canceled",
        "check",
        "err",
        "exec_no",
        "flags",
        "id",
        "is_empty",
        "is_error",
        "is_health",
        "mut_qtick",
        "qlen",
        "qtick",
        "queued",
        "queued_no",
        "raw",
        "removed",
        "rt",
        "src",
        "t0",
        "t1",
        "target",
        "time_after",
        "time_before",
        "time_diff",
        "token",
        "trace",
        "type",
    )

    id: str
    type: int
    called: list[int]
    args: dict[str, str]
    flags: int
    target: list[int]
    before: list[int]
    after: list[int]
    qlen: int
    qtick: int
    mut_qtick: int
    token: int
    src: tuple[str, str, int] | None
    t0: int
    t1: int
    err: str | None
    trace: str | list[Any] | None
    rt: int
    queued: bool
    raw: list[Any]
    accepted: bool
    auto: bool
    check: bool
    canceled: bool
    time_before: int
    time_after: int
    time_diff: int
    added: list[int]
    removed: list[int]
    is_empty: bool
    is_health: bool
    is_error: bool
    exec_no: int
    queued_no: int

    def __init__(self, msg: list[Any], rt: int, client: Client) -> None:
        self.raw = msg
        self.rt = rt
        self.exec_no = 0
        self.queued_no = 0
        self._steps: list[Step] | None = None
        self._log: list[LogEntry] | None = None
        self._pre_log: list[LogEntry] | None = None
        self._touched: list[int] | None = None
        queued = self.queued = msg[0] == "queued"
        if queued:
            (_m, tid, typ, called, args, flags, qlen, qtick, mut_qtick, token, _tm, src, t,
             trace) = _pad(msg, _QUEUED_N)  # fmt: skip
            self.before = self.after = client._ticks
            self.target = []
            self.t0 = self.t1 = _int(t)
            err = None
        else:
            (_m, tid, typ, called, args, flags, target, before, after, _st, _lg, _plg, qlen,
             qtick, mut_qtick, token, src, t0, t1, err, trace) = _pad(msg, _TX_N)  # fmt: skip
            self.target = _ints(target)
            self.t0 = _int(t0)
            self.t1 = _int(t1)
            self.before = _ints(before, 0) if before is not None else client._ticks
        self.id = _str(tid) or ""
        self.type = _int(typ)
        self.called = _ints(called)
        self.args = (
            {str(k): (v if isinstance(v, str) else str(v)) for k, v in args.items()}
            if isinstance(args, dict)
            else {}
        )
        fl = self.flags = _int(flags)
        self.qlen = _int(qlen)
        self.qtick = _int(qtick)
        self.mut_qtick = _int(mut_qtick)
        self.token = _int(token)
        self.src = (
            (_str(src[0]) or "", _str(src[1]) or "", _int(src[2]))
            if isinstance(src, (list, tuple)) and len(src) >= 3
            else None
        )
        self.err = _str(err)
        self.trace = trace if isinstance(trace, (str, list)) else None
        self.auto = bool(fl & _TX_FLAG_AUTO)
        self.check = bool(fl & _TX_FLAG_CHECK)
        acc = self.accepted = bool(fl & _TX_FLAG_ACCEPTED) and not queued
        self.canceled = not acc and not queued
        if not queued:
            self.after = _ints(after, 0) if acc and after is not None else self.before
        b, a = self.before, self.after
        tb = self.time_before = sum(b)
        ta = self.time_after = tb if a is b else sum(a)
        self.time_diff = ta - tb
        added: list[int] = []
        removed: list[int] = []
        if a is not b:
            nb = len(b)
            for i, ta_i in enumerate(a):
                tb_i = b[i] if i < nb else 0
                if ta_i != tb_i:
                    if ta_i & 1:
                        added.append(i)
                    elif tb_i & 1:
                        removed.append(i)
        self.added = added
        self.removed = removed
        self.is_empty = acc and ta == tb
        names = client.names
        nn = len(names)
        self.is_health = bool(self.called) and all(
            0 <= i < nn and names[i] in HEALTH_STATES for i in self.called
        )
        self.is_error = any(i < len(a) and a[i] & 1 for i in client._err_idx)

    @property
    def t(self) -> int:
        """Display time (ns): ``t1`` of a tx, ``t`` of a queued record, else the receive time."""
        return self.t1 or self.t0 or self.rt

    @property
    def steps(self) -> list[Step]:
        """Ordered steps of this tx (empty for queued records)."""
        st = self._steps
        if st is None:
            st = self._steps = [] if self.queued else _steps(self.raw[10:11] and self.raw[10])
        return st

    @property
    def log(self) -> list[LogEntry]:
        """Log lines of this tx."""
        lg = self._log
        if lg is None:
            lg = self._log = [] if self.queued else _entries(self.raw[11:12] and self.raw[11])
        return lg

    @property
    def pre_log(self) -> list[LogEntry]:
        """Log lines logged before this tx (outside transitions)."""
        lg = self._pre_log
        if lg is None:
            lg = self._pre_log = [] if self.queued else _entries(self.raw[12:13] and self.raw[12])
        return lg

    @property
    def touched(self) -> list[int]:
        """States any step of this tx came from or went to, in order of first touch."""
        tt = self._touched
        if tt is None:
            seen: dict[int, None] = {}
            for st in self.steps:
                if st.from_ >= 0:
                    seen[st.from_] = None
                if st.to >= 0:
                    seen[st.to] = None
            tt = self._touched = list(seen)
        return tt

    def __repr__(self) -> str:
        kind = "queued" if self.queued else ("accepted" if self.accepted else "canceled")
        return f"<Tx {self.id} type={self.type} called={self.called} {kind}>"


# ---------------------------------------------------------------------------------- Client
class Client:
    """One reporting machine: schema, records, connection and per-client view state.

    ``c`` is the tx cursor (0 = initial schema, k = tx k is current), ``s`` the step cursor
    of the next visible tx. ``log`` holds lines logged outside transitions as
    ``(n, entry)`` where ``n`` is how many records preceded the line. ``err_nos`` lists the
    numbers of txs leaving an error state active (Exception / Err*), ascending.
    """

    def __init__(self, cid: str, conn_id: int) -> None:
        self.id = cid
        self.parent_id: str | None = None
        self.tags: list[str] = []
        self.names: list[str] = []
        self.states: dict[str, StateInfo] = {}
        self.groups: dict[str, list[int]] = {}
        self.groups_order: list[str] = []
        self.schema_time: list[int] = []
        self.schema_qtick = 0
        self.schema_t = 0
        self.schema_rt = 0
        self.schema_raw: list[Any] = []
        self.conn_id = conn_id
        self.connected = True
        self.imported = False
        self.txs: list[Tx] = []
        self.dropped = 0
        self.log: list[tuple[int, LogEntry]] = []
        self.log_rt: list[int] = []
        self.last_active = 0
        self.err_nos: list[int] = []
        self.c = 0
        self.s = 0
        self.selected_state: str | None = None
        self.selected_group: str | None = None
        self._index: dict[str, int] = {}
        self._multi: list[bool] = []
        self._err_idx: list[int] = []
        self._ticks: list[int] = []
        self._tmax: list[int] = []
        self._pending_q: dict[int, int] = {}
        self._vis: list[int] = []
        self._vis_key: Any = None

    def __repr__(self) -> str:
        return f"<Client {self.id} txs={len(self.txs)} connected={self.connected}>"

    # -- schema
    def _apply_schema(self, f: list[Any], rt: int) -> None:
        (_m, parent, tags, names, states, groups, groups_order, tm, qtick, t) = f
        self.parent_id = _str(parent) or None
        self.tags = _strs(tags)
        self.names = _strs(names)
        sd = states if isinstance(states, dict) else {}
        self.states = {n: StateInfo(sd.get(n)) for n in self.names}
        self.groups = (
            {str(k): _ints(v) for k, v in groups.items()} if isinstance(groups, dict) else {}
        )
        go = _strs(groups_order)
        self.groups_order = [g for g in go if g in self.groups] + [
            g for g in self.groups if g not in go
        ]
        self.schema_time = _ints(tm, 0)
        self.schema_qtick = _int(qtick)
        self.schema_t = _int(t) or rt
        self._index = {n: i for i, n in enumerate(self.names)}
        self._multi = [self.states[n].multi for n in self.names]
        self._err_idx = [
            i for i, n in enumerate(self.names) if n == "Exception" or n.startswith("Err")
        ]
        if not self.txs or len(self.schema_time) >= len(self._ticks):
            self._ticks = self.schema_time
        self._vis_key = None

    # -- lookups
    def index(self, name: str) -> int:
        """Index of state ``name`` or -1."""
        return self._index.get(name, -1)

    def name(self, idx: int) -> str:
        """Name of state ``idx`` (``#idx`` when out of range)."""
        return self.names[idx] if 0 <= idx < len(self.names) else f"#{idx}"

    def tx(self, no: int) -> Tx | None:
        """Record number ``no`` (1-based) or None."""
        return self.txs[no - 1] if 1 <= no <= len(self.txs) else None

    def find_tx(self, tx_id: str) -> int:
        """1-based number of the last record with id ``tx_id``, 0 if none."""
        for k in range(len(self.txs) - 1, -1, -1):
            if self.txs[k].id == tx_id:
                return k + 1
        return 0

    # -- time
    def time_at(self, c: int) -> list[int]:
        """Ticks at cursor ``c`` (0 = the first record's ``before``, else the schema's),
        padded with zeros to ``len(names)``. Do not mutate the result."""
        txs = self.txs
        if c <= 0:
            ticks = txs[0].before if txs else self.schema_time
        else:
            ticks = txs[min(c, len(txs)) - 1].after
        n = len(self.names)
        return ticks if len(ticks) >= n else ticks + [0] * (n - len(ticks))

    def mtime_at(self, c: int) -> int:
        """Machine time (sum of ticks) at cursor ``c``."""
        txs = self.txs
        if c <= 0:
            return txs[0].time_before if txs else sum(self.schema_time)
        return txs[min(c, len(txs)) - 1].time_after

    @property
    def mtime(self) -> int:
        """Machine time now (after the last record)."""
        return self.mtime_at(len(self.txs))

    def active_at(self, c: int) -> list[int]:
        """Indexes of the states active at cursor ``c``."""
        return [i for i, t in enumerate(self.time_at(c)) if t & 1]

    def is_active_at(self, c: int, name: str) -> bool:
        """Whether state ``name`` is active at cursor ``c``."""
        i = self._index.get(name, -1)
        if i < 0:
            return False
        ticks = self.time_at(c)
        return i < len(ticks) and bool(ticks[i] & 1)

    def is_error_at(self, c: int) -> bool:
        """Whether Exception or an Err* state is active at cursor ``c``."""
        if c > 0 and self.txs:
            return self.txs[min(c, len(self.txs)) - 1].is_error
        ticks = self.time_at(0)
        return any(i < len(ticks) and ticks[i] & 1 for i in self._err_idx)

    def count_at(self, moment: int) -> int:
        """How many records happened at or before ``moment`` (ns; by display time, records
        after a later one count as later)."""
        return bisect_right(self._tmax, moment)

    @property
    def is_rpc(self) -> bool:
        """Tagged as an RPC machine (``rpc-client``, ``rpc-server``, ``rpc-mux``, ``relay``)."""
        return any(t in RPC_TAGS for t in self.tags)


# ---------------------------------------------------------------------------------- Filters
@dataclass
class Filters:
    """Timeline filters (tools.md §1.5); True = hide.

    ``auto``: 0 shows every auto tx, 1 hides canceled auto txs (and queued auto ones later
    canceled), 2 hides all auto txs. ``log_level`` 0-5 limits the log pane (0 hides it).
    ``group`` hides txs calling no state of the selected group (when one is selected).
    """

    canceled: bool = False
    queued: bool = False
    auto: int = 1
    empty: bool = False
    health: bool = True
    group: bool = True
    checks: bool = True
    disconn: bool = False
    rpc: bool = False
    log_level: int = 2

    def key(self) -> tuple[Any, ...]:
        """The fields that decide which txs are visible."""
        return (
            self.canceled,
            self.queued,
            self.auto,
            self.empty,
            self.health,
            self.group,
            self.checks,
        )


_FILTER_NAMES = frozenset(f.name for f in fields(Filters))


# ---------------------------------------------------------------------------------- Model
class Model:
    """Every client, the filters, the selection and navigation (tools.md §1).

    ``version`` grows on every change (redraw trigger). Navigation methods act on the
    selected client; all but :meth:`set_tail` end tail mode.
    """

    def __init__(
        self,
        *,
        filters: Filters | None = None,
        max_clients: int = 5000,
        clean_on_connect: bool = True,
        select_connected: bool = False,
        listen_addr: str | None = None,
        tail: bool = True,
    ) -> None:
        self.clients: dict[str, Client] = {}
        self.filters = filters if filters is not None else Filters()
        self.selected: str | None = None
        self.tail = tail
        self.playing = False
        self.max_clients = max_clients
        self.clean_on_connect = clean_on_connect
        self.select_connected = select_connected
        self.listen_addr = listen_addr
        self.version = 0
        #: Records of ids with no schema (dropped).
        self.orphans = 0
        #: Messages of unknown kind or too malformed to use (ignored).
        self.ignored = 0
        #: Per-connection `hello` fields.
        self.conns: dict[int, dict[str, Any]] = {}
        #: A `mach://` address waiting for its client or tx (see :meth:`open_url`).
        self.pending_url: str | None = None
        #: Notes for the user (e.g. a truncated recording was loaded in part).
        self.warnings: list[str] = []
        #: The meta record of the last recording replayed into this model.
        self.recording_meta: dict[str, Any] | None = None
        self._next_conn = 0
        self._list_cache: tuple[Any, list[tuple[int, Client]]] | None = None
        self._list_ver = 0

    # ------------------------------------------------------------------ ingest
    def new_conn_id(self) -> int:
        """A connection id not used by this model yet (servers and replays use it)."""
        self._next_conn += 1
        return self._next_conn

    def ingest(self, conn_id: int, msg: list[Any], rt: int | None = None) -> None:
        """Apply one wire message received on connection ``conn_id`` at ``rt`` (ns; now if
        None). Unknown kinds, missing or extra fields are tolerated; never raises on
        decodable input."""
        if rt is None:
            rt = time.time_ns()
        if not isinstance(msg, (list, tuple)) or not msg:
            self.ignored += 1
            return
        if not isinstance(msg, list):
            msg = list(msg)
        kind = msg[0]
        try:
            if kind == "tx" or kind == "queued":
                self._on_tx(msg, rt)
            elif kind == "schema":
                self._on_schema(conn_id, msg, rt)
            elif kind == "log":
                self._on_log(msg, rt)
            elif kind == "dispose":
                cl = self.clients.get(_str(msg[1]) or "") if len(msg) > 1 else None
                if cl is not None and cl.connected and cl.conn_id == conn_id:
                    cl.connected = False
                    self._list_ver += 1
            elif kind == "drop":
                self._on_drop(conn_id, msg)
            elif kind == "bye":
                self.conn_closed(conn_id)
            elif kind == "hello":
                keys = ("v", "lib", "lib_v", "pid", "host", "argv0", "t")
                self.conns[conn_id] = dict(zip(keys, _pad(msg, len(keys)), strict=True))
            else:
                self.ignored += 1
                return
        except (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError):
            self.ignored += 1
            return
        self.version += 1

    def _on_schema(self, conn_id: int, msg: list[Any], rt: int) -> None:
        f = _pad(msg, _SCHEMA_N)
        cid = _str(f[0])
        if not cid:
            self.ignored += 1
            return
        cl = self.clients.get(cid)
        if cl is not None and cl.conn_id == conn_id and cl.connected:
            # schema change of a live client: names grow, history stays
            cl._apply_schema(f, rt)
            cl.schema_raw = msg
            cl.schema_rt = rt
            cl.last_active = rt
            self._list_ver += 1
            return
        if self.clean_on_connect and not any(c.connected for c in self.clients.values()):
            # a new connection while every client is gone: start over (imported stay)
            for old in [k for k, c in self.clients.items() if not c.imported and k != cid]:
                self.remove_client(old)
        prev = self.clients.get(cid)
        new = Client(cid, conn_id)
        new._apply_schema(f, rt)
        new.schema_raw = msg
        new.schema_rt = new.last_active = rt
        if prev is not None:
            new.selected_state = prev.selected_state
            new.selected_group = prev.selected_group
        self.clients[cid] = new
        self._list_ver += 1
        if prev is None:
            self._evict()
        lone = self.select_connected and sum(c.connected for c in self.clients.values()) == 1
        if self.selected is None or self.selected not in self.clients or lone:
            self.selected = cid
            self.tail = True
        self._try_pending(cid)

    def _evict(self) -> None:
        extra = len(self.clients) - self.max_clients
        if extra <= 0:
            return
        gone = sorted(
            (c for c in self.clients.values() if not c.connected and c.id != self.selected),
            key=lambda c: c.last_active,
        )
        for c in gone[:extra]:
            self.remove_client(c.id)

    def _on_tx(self, msg: list[Any], rt: int) -> None:
        cl = self.clients.get(_str(msg[1]) or "") if len(msg) > 1 else None
        if cl is None:
            self.orphans += 1
            return
        tx = Tx(msg, rt, cl)
        txs = cl.txs
        txs.append(tx)
        no = len(txs)
        if not tx.queued:
            cl._ticks = tx.after
        if tx.is_error:
            cl.err_nos.append(no)
        t = tx.t
        tm = cl._tmax
        tm.append(t if not tm or t > tm[-1] else tm[-1])
        cl.last_active = rt
        mq = tx.mut_qtick
        relink = False
        if mq:
            if tx.queued:
                cl._pending_q[mq] = no
            else:
                qno = cl._pending_q.pop(mq, 0)
                if qno:
                    tx.queued_no = qno
                    txs[qno - 1].exec_no = no
                    relink = tx.canceled and tx.auto and txs[qno - 1].auto
        # incremental visible list
        key = self._vis_key(cl)
        if relink:
            cl._vis_key = None
        elif cl._vis_key == key and self._shows(cl, tx, key):
            cl._vis.append(no)
        if self.tail:
            vis = self.visible(cl)
            cl.c = vis[-1] if vis else 0
            cl.s = 0
        if self.pending_url is not None:
            self._try_pending(cl.id)

    def _on_log(self, msg: list[Any], rt: int) -> None:
        cl = self.clients.get(_str(msg[1]) or "") if len(msg) > 1 else None
        if cl is None:
            self.orphans += 1
            return
        n = len(cl.txs)
        for e in _entries(msg[2] if len(msg) > 2 else None):
            cl.log.append((n, e))
            cl.log_rt.append(rt)
        cl.last_active = rt

    def _on_drop(self, conn_id: int, msg: list[Any]) -> None:
        m = _str(msg[1]) if len(msg) > 1 else None
        n = _int(msg[2]) if len(msg) > 2 else 0
        if m:
            cl = self.clients.get(m)
            if cl is not None:
                cl.dropped += n
            return
        for cl in self.clients.values():
            if cl.conn_id == conn_id:
                cl.dropped += n

    def conn_closed(self, conn_id: int) -> None:
        """Mark every client of connection ``conn_id`` disconnected."""
        changed = False
        for cl in self.clients.values():
            if cl.conn_id == conn_id and cl.connected:
                cl.connected = False
                changed = True
        self.conns.pop(conn_id, None)
        if changed:
            self._list_ver += 1
            self.version += 1

    # ------------------------------------------------------------------ clients
    def client(self) -> Client | None:
        """The selected client, if any."""
        return self.clients.get(self.selected) if self.selected is not None else None

    def client_list(self) -> list[tuple[int, Client]]:
        """``(depth, client)`` pairs: natural-sorted by id, children right under their
        parents, without clients the ``disconn`` / ``rpc`` filters hide (their visible
        children move up to the nearest shown ancestor)."""
        f = self.filters
        key = (self._list_ver, f.disconn, f.rpc)
        if self._list_cache is not None and self._list_cache[0] == key:
            return self._list_cache[1]
        kids: dict[str | None, list[Client]] = {}
        for cl in self.clients.values():
            p = cl.parent_id if cl.parent_id in self.clients and cl.parent_id != cl.id else None
            kids.setdefault(p, []).append(cl)
        for lst in kids.values():
            lst.sort(key=lambda c: _natural_key(c.id))
        out: list[tuple[int, Client]] = []
        seen: set[str] = set()

        def walk(parent: str | None, depth: int) -> None:
            for cl in kids.get(parent, ()):
                if cl.id in seen:
                    continue
                seen.add(cl.id)
                shown = not (f.disconn and not cl.connected) and not (f.rpc and cl.is_rpc)
                if shown:
                    out.append((depth, cl))
                walk(cl.id, depth + 1 if shown else depth)

        walk(None, 0)
        # parent cycles: anything not reached yet goes at the top level
        for cl in sorted(self.clients.values(), key=lambda c: _natural_key(c.id)):
            if cl.id not in seen:
                seen.add(cl.id)
                if not (f.disconn and not cl.connected) and not (f.rpc and cl.is_rpc):
                    out.append((0, cl))
        self._list_cache = (key, out)
        return out

    def select(self, client_id: str) -> None:
        """Select a client. Not tailing, it lands on its last visible tx at or before the
        viewed moment (c = 0 if none, D31); tailing, on its last visible tx. The selected
        state carries over when the new client has it."""
        new = self.clients.get(client_id)
        if new is None:
            return
        old = self.client()
        if old is new:
            return
        vis = self.visible(new)
        if self.tail:
            new.c = vis[-1] if vis else 0
        else:
            n = new.count_at(self.moment()) if old is not None else len(new.txs)
            i = bisect_right(vis, n)
            new.c = vis[i - 1] if i else 0
        new.s = 0
        if old is not None and old.selected_state and old.selected_state in new._index:
            new.selected_state = old.selected_state
        self.selected = client_id
        self.version += 1

    def remove_client(self, client_id: str) -> None:
        """Drop a client and its history (D6); the selection moves to the first listed."""
        if self.clients.pop(client_id, None) is None:
            return
        self._list_ver += 1
        self.version += 1
        if self.selected == client_id:
            self.selected = None
            lst = self.client_list() or [(0, c) for c in self.clients.values()]
            if lst:
                self.selected = lst[0][1].id

    def clear(self) -> None:
        """Drop every client."""
        for cid in list(self.clients):
            self.remove_client(cid)

    # ------------------------------------------------------------------ filters
    def _vis_key(self, cl: Client) -> tuple[Any, ...]:
        f = self.filters
        g = cl.selected_group
        grp = tuple(cl.groups[g]) if f.group and g is not None and g in cl.groups else None
        return (f.key(), grp)

    def _shows(self, cl: Client, tx: Tx, key: tuple[Any, ...]) -> bool:
        f = self.filters
        if tx.queued:
            if f.queued:
                return False
            if tx.auto and f.auto:
                if f.auto >= 2:
                    return False
                ex = tx.exec_no
                if ex and cl.txs[ex - 1].canceled:
                    return False
        elif tx.canceled:
            if f.canceled or (tx.auto and f.auto):
                return False
        else:
            if tx.auto and f.auto >= 2:
                return False
            if f.empty and tx.is_empty:
                return False
        if f.health and tx.is_health:
            return False
        if f.checks and tx.check:
            return False
        grp = key[1]
        return not (grp is not None and not any(i in grp for i in tx.called))

    def visible(self, client: Client) -> list[int]:
        """1-based numbers of ``client``'s records visible under the filters (cached,
        extended incrementally; do not mutate)."""
        key = self._vis_key(client)
        if client._vis_key != key:
            client._vis = [k for k, tx in enumerate(client.txs, 1) if self._shows(client, tx, key)]
            client._vis_key = key
        return client._vis

    def is_visible(self, client: Client, no: int) -> bool:
        """Whether record ``no`` (1-based) of ``client`` is visible."""
        vis = self.visible(client)
        i = bisect_left(vis, no)
        return i < len(vis) and vis[i] == no

    def vis_pos(self, client: Client | None = None) -> int:
        """How many visible txs are at or before the cursor (``p`` of ``Transition p / F``)."""
        cl = client if client is not None else self.client()
        if cl is None:
            return 0
        return bisect_right(self.visible(cl), cl.c)

    def toggle_filter(self, name: str) -> None:
        """Flip a boolean filter, cycle ``auto`` (0-2) or ``log_level`` (0-5). Showing
        canceled or queued txs switches the ``empty`` filter off (tools.md §1.5)."""
        f = self.filters
        if name not in _FILTER_NAMES:
            raise ValueError(f"unknown filter: {name}")
        if name == "auto":
            f.auto = (f.auto + 1) % 3
        elif name == "log_level":
            f.log_level = (f.log_level + 1) % len(LOG_LEVEL_NAMES)
        else:
            val = not getattr(f, name)
            setattr(f, name, val)
            if name in ("canceled", "queued") and not val:
                f.empty = False
        self.filters_changed()

    def filters_changed(self) -> None:
        """Call after changing ``filters`` or a client's ``selected_group`` directly: keeps
        the cursors on visible txs in tail mode and redraws."""
        self._list_ver += 1
        self.version += 1
        if self.tail:
            for cl in self.clients.values():
                vis = self.visible(cl)
                cl.c = vis[-1] if vis else 0
                cl.s = 0

    # ------------------------------------------------------------------ navigation
    def _nav(self) -> tuple[Client, list[int]] | None:
        cl = self.client()
        if cl is None:
            return None
        self.tail = False
        self.version += 1
        return cl, self.visible(cl)

    def next_no(self, client: Client | None = None) -> int:
        """Number of the next visible tx after the cursor (the one being stepped), 0 if
        none."""
        cl = client if client is not None else self.client()
        if cl is None:
            return 0
        vis = self.visible(cl)
        i = bisect_right(vis, cl.c)
        return vis[i] if i < len(vis) else 0

    def steps_count(self, client: Client | None = None) -> int:
        """S: the step count of the next visible tx (0 if none)."""
        cl = client if client is not None else self.client()
        if cl is None:
            return 0
        n = self.next_no(cl)
        return len(cl.txs[n - 1].steps) if n else 0

    def prev_tx(self) -> None:
        """Move to the previous visible tx, or to c = 0 (D25)."""
        nv = self._nav()
        if nv is None:
            return
        cl, vis = nv
        i = bisect_left(vis, cl.c)
        cl.c = vis[i - 1] if i else 0
        cl.s = 0

    def next_tx(self) -> None:
        """Move to the next visible tx; stays at the last one (D25)."""
        nv = self._nav()
        if nv is None:
            return
        cl, vis = nv
        i = bisect_right(vis, cl.c)
        if i < len(vis):
            cl.c = vis[i]
        cl.s = 0

    def step_fwd(self) -> None:
        """s + 1; at s = S move to the next visible tx with s = 0 (D26)."""
        nv = self._nav()
        if nv is None:
            return
        cl, _vis = nv
        n = self.next_no(cl)
        if not n:
            cl.s = 0
            return
        if cl.s < len(cl.txs[n - 1].steps):
            cl.s += 1
        else:
            cl.c = n
            cl.s = 0

    def step_back(self) -> None:
        """s - 1; at s = 0 move back one visible tx with s = S of the tx left (D26)."""
        nv = self._nav()
        if nv is None:
            return
        cl, vis = nv
        if cl.s > 0:
            cl.s -= 1
            return
        if cl.c <= 0:
            return
        i = bisect_left(vis, cl.c)
        cl.c = vis[i - 1] if i else 0
        cl.s = self.steps_count(cl)

    def _touches(self, tx: Tx, idx: int) -> bool:
        return idx in tx.called or idx in tx.added or idx in tx.removed

    def jump_back(self) -> None:
        """Back 50 visible txs, or with a selected state to the previous visible tx that
        added, removed or called it (D27)."""
        nv = self._nav()
        if nv is None:
            return
        cl, vis = nv
        idx = cl.index(cl.selected_state) if cl.selected_state else -1
        i = bisect_left(vis, cl.c)
        if idx >= 0:
            for k in range(i - 1, -1, -1):
                if self._touches(cl.txs[vis[k] - 1], idx):
                    cl.c = vis[k]
                    cl.s = 0
                    return
            return
        p = bisect_right(vis, cl.c) - JUMP
        cl.c = vis[p - 1] if p >= 1 else 0
        cl.s = 0

    def jump_fwd(self) -> None:
        """Forward 50 visible txs, or with a selected state to the next visible tx that
        added, removed or called it (D27)."""
        nv = self._nav()
        if nv is None:
            return
        cl, vis = nv
        idx = cl.index(cl.selected_state) if cl.selected_state else -1
        i = bisect_right(vis, cl.c)
        if idx >= 0:
            for k in range(i, len(vis)):
                if self._touches(cl.txs[vis[k] - 1], idx):
                    cl.c = vis[k]
                    cl.s = 0
                    return
            return
        p = min(len(vis), i + JUMP)
        if p >= 1:
            cl.c = vis[p - 1]
        cl.s = 0

    def first(self) -> None:
        """c = 0; ends tail and play (D28)."""
        self.playing = False
        nv = self._nav()
        if nv is not None:
            nv[0].c = nv[0].s = 0

    def last(self) -> None:
        """c = the last visible tx; ends tail and play (D28)."""
        self.playing = False
        nv = self._nav()
        if nv is not None:
            cl, vis = nv
            cl.c = vis[-1] if vis else 0
            cl.s = 0

    def set_tail(self, on: bool) -> None:
        """Tail mode (D29): the cursor follows the newest visible tx."""
        self.tail = on
        self.version += 1
        if on:
            self.playing = False
            for cl in self.clients.values():
                vis = self.visible(cl)
                cl.c = vis[-1] if vis else 0
                cl.s = 0

    def play_tick(self, steps: bool = False) -> bool:
        """One play move (D30): the next visible tx, or the next step with ``steps``.
        Playing stops at the end. Returns whether the cursor moved."""
        cl = self.client()
        if cl is None:
            self.playing = False
            return False
        before = (cl.c, cl.s)
        if steps:
            self.step_fwd()
        else:
            self.next_tx()
        moved = (cl.c, cl.s) != before
        if not moved or not self.next_no(cl):
            self.playing = False
        return moved

    def goto(self, client_id: str, tx: int, step: int = 0) -> None:
        """Select ``client_id`` (no cross-client time) and put its cursor at tx number ``tx``
        (clamped to 0..N) and step ``step`` (clamped to 0..S); ends tail mode."""
        cl = self.clients.get(client_id)
        if cl is None:
            raise KeyError(client_id)
        self.tail = False
        old = self.client()
        if old is not None and old is not cl and old.selected_state in cl._index:
            cl.selected_state = old.selected_state
        self.selected = client_id
        cl.c = max(0, min(int(tx), len(cl.txs)))
        cl.s = 0
        cl.s = max(0, min(int(step), self.steps_count(cl)))
        self.version += 1

    # ------------------------------------------------------------------ addresses
    def open_url(self, url: str) -> None:
        """Go to ``mach://ID[/TX_ID[/STEP]][?t=MTIME&q=QTICK&ht=RFC3339&i=N&state=S&group=G]``
        (D33; ``i`` = 1-based tx; ``t`` / ``q``: the first tx reaching that machine time / queue
        tick; ``ht``: the last tx at or before that time). Until that client (or tx) exists the address waits in
        ``pending_url`` and is applied when it arrives. Raises ValueError on a bad address."""
        target = _parse_url(url)
        self.pending_url = None
        if not self._apply_url(target):
            self.pending_url = url

    def _try_pending(self, cid: str) -> None:
        url = self.pending_url
        if url is None:
            return
        target = _parse_url(url)
        if target[0] == cid and self._apply_url(target):
            self.pending_url = None

    def _apply_url(self, target: tuple[str, str | None, int, dict[str, str]]) -> bool:
        cid, tx_id, step, q = target
        cl = self.clients.get(cid)
        if cl is None:
            return False
        c: int | None = None
        if tx_id:
            c = cl.find_tx(tx_id)
            if not c:
                return False
        elif "i" in q:
            c = _int_or(q["i"], 0)
            if c > len(cl.txs):
                return False
        elif "t" in q:
            mt = _int_or(q["t"], 0)
            c = _first_where(cl, lambda tx: tx.time_after >= mt)
        elif "q" in q:
            qt = _int_or(q["q"], 0)
            c = _first_where(cl, lambda tx: not tx.queued and tx.qtick >= qt)
        elif "ht" in q:
            try:
                ht = datetime.fromisoformat(q["ht"].replace("Z", "+00:00"))
            except ValueError:
                ht = None
            if ht is not None:
                if ht.tzinfo is None:
                    ht = ht.astimezone()
                ns = (ht - _EPOCH) // timedelta(microseconds=1) * 1000
                c = _last_where(cl, lambda tx: tx.t <= ns)
        if "state" in q:
            cl.selected_state = q["state"] or None
        if "group" in q:
            g = q["group"]
            cl.selected_group = g if g in cl.groups else None
        if c is None:
            if self.selected != cid:
                self.select(cid)
            return True
        self.goto(cid, c, step)
        return True

    def url(self) -> str:
        """The current address ``mach://ID[/TX_ID[/STEP]]`` ("" with no client)."""
        cl = self.client()
        if cl is None:
            return ""
        out = "mach://" + quote(cl.id, safe=":@-_.~+")
        if cl.c > 0 and cl.c <= len(cl.txs):
            out += "/" + quote(cl.txs[cl.c - 1].id, safe=":@-_.~+")
            if cl.s > 0:
                out += f"/{cl.s}"
        return out

    # ------------------------------------------------------------------ time
    def moment(self) -> int:
        """Display time (ns) of the selected client's current tx; at c = 0 just before its
        first record (or its schema's time)."""
        cl = self.client()
        if cl is None:
            return 0
        if cl.c > 0 and cl.txs:
            return cl.txs[min(cl.c, len(cl.txs)) - 1].t
        return cl.txs[0].t - 1 if cl.txs else cl.schema_t

    def client_c_at(self, client: Client) -> int:
        """``client``'s cursor at the viewed moment: its own ``c`` when selected, else how
        many of its records happened at or before the moment."""
        if client.id == self.selected:
            return client.c
        return client.count_at(self.moment())

    def graph_time(self) -> int:
        """Sum of every client's machine time at the viewed moment (status ``Graph:tSUM``)."""
        m = self.moment()
        total = 0
        for cl in self.clients.values():
            c = cl.c if cl.id == self.selected else cl.count_at(m)
            total += cl.mtime_at(c)
        return total

    # ------------------------------------------------------------------ stats
    @property
    def total_txs(self) -> int:
        """Records (txs and queued) over all clients."""
        return sum(len(c.txs) for c in self.clients.values())

    @property
    def tx_count(self) -> int:
        """Executed and canceled transitions (no queued records) over all clients."""
        return sum(sum(1 for t in c.txs if not t.queued) for c in self.clients.values())

    def memory_mb(self) -> float:
        """Resident memory of this process in MB (0 if unknown)."""
        return _rss_mb()

    def trim(self, *, log_ttl_ns: int = 3600 * 10**9, min_txs: int = 300) -> None:
        """Shed memory (D50): drop out-of-tx log lines above CHANGES older than
        ``log_ttl_ns``, then halve every client's records (clients with fewer than
        ``min_txs`` keep theirs)."""
        now = time.time_ns()
        for cl in self.clients.values():
            keep = [
                k
                for k, ((_n, e), rt) in enumerate(zip(cl.log, cl.log_rt, strict=True))
                if e.level <= 2 or now - rt < log_ttl_ns
            ]
            cl.log = [cl.log[k] for k in keep]
            cl.log_rt = [cl.log_rt[k] for k in keep]
            n = len(cl.txs)
            if n < min_txs:
                continue
            cut = n // 2
            cl.txs = cl.txs[cut:]
            cl._tmax = cl._tmax[cut:]
            cl.log = [(k - cut, e) for k, e in cl.log if k >= cut]
            cl.log_rt = cl.log_rt[-len(cl.log) :] if cl.log else []
            cl.err_nos = [k - cut for k in cl.err_nos if k > cut]
            for tx in cl.txs:
                tx.exec_no = max(0, tx.exec_no - cut)
                tx.queued_no = max(0, tx.queued_no - cut)
            cl._pending_q = {q: k - cut for q, k in cl._pending_q.items() if k > cut}
            cl._vis_key = None
            cl.c = max(0, cl.c - cut)
            cl.s = 0
        self.version += 1
        self._list_ver += 1

    def check_memory(self, max_mb: float, *, log_ttl_ns: int = 3600 * 10**9) -> bool:
        """D50: when the process uses more than ``max_mb`` MB, :meth:`trim` once and drop
        clients left with fewer than 300 records while still above; returns whether it
        trimmed. Call it about once a minute."""
        if self.memory_mb() <= max_mb:
            return False
        self.trim(log_ttl_ns=log_ttl_ns)
        if self.memory_mb() > max_mb:
            for cid, cl in list(self.clients.items()):
                if len(cl.txs) < 300 and cid != self.selected:
                    self.remove_client(cid)
        return True

    # ------------------------------------------------------------------ export
    def export(self, path: str | os.PathLike[str], single_frame: bool = False) -> Path:
        """Write the clients as a `.amdbg` recording (D41) and return its path (``.amdbg``
        appended when missing). Skips disconnected / RPC clients while the ``disconn`` /
        ``rpc`` filters are on. ``single_frame``: per client its schema plus the viewed tx."""
        from trio_am.dbg.recording import RecordingWriter

        p = Path(path)
        if p.suffix != ".amdbg":
            p = p.with_name(p.name + ".amdbg")
        meta = {"filters": asdict(self.filters)}
        with RecordingWriter.open(p, meta=meta) as w:
            for rt, conn, msg in self.messages(single_frame=single_frame):
                w.write(rt, conn, msg)
        return p

    def messages(self, single_frame: bool = False) -> Iterator[tuple[int, int, list[Any]]]:
        """``(rt, conn_id, message)`` that rebuild the exported clients, per client in
        arrival order (see :meth:`export`)."""
        f = self.filters
        for _depth, cl in self._export_clients():
            if (f.disconn and not cl.connected) or (f.rpc and cl.is_rpc):
                continue
            yield from _client_messages(cl, single_frame)

    def _export_clients(self) -> Iterable[tuple[int, Client]]:
        seen = {c.id for _d, c in self.client_list()}
        extra = [(0, c) for c in self.clients.values() if c.id not in seen]
        # parents first so a replay nests children the same way
        return list(self.client_list()) + extra


def _client_messages(cl: Client, single_frame: bool) -> Iterator[tuple[int, int, list[Any]]]:
    conn = cl.conn_id
    yield cl.schema_rt, conn, cl.schema_raw
    if single_frame:
        if 0 < cl.c <= len(cl.txs):
            tx = cl.txs[cl.c - 1]
            yield tx.rt, conn, tx.raw
        return
    logs = cl.log
    li = 0
    for k, tx in enumerate(cl.txs):
        while li < len(logs) and logs[li][0] <= k:
            e = logs[li][1]
            yield cl.log_rt[li], conn, ["log", cl.id, [[e.level, e.text, e.ev]]]
            li += 1
        yield tx.rt, conn, tx.raw
    while li < len(logs):
        e = logs[li][1]
        yield cl.log_rt[li], conn, ["log", cl.id, [[e.level, e.text, e.ev]]]
        li += 1
    if cl.dropped:
        yield cl.last_active, conn, ["drop", cl.id, cl.dropped, cl.last_active]
    if not cl.connected:
        yield cl.last_active, conn, ["dispose", cl.id, cl.last_active]


def _parse_url(url: str) -> tuple[str, str | None, int, dict[str, str]]:
    u = urlsplit(url.strip())
    if u.scheme != "mach" or not u.netloc:
        raise ValueError(f"not a mach:// address: {url!r}")
    parts = [unquote(p) for p in u.path.split("/") if p]
    tx_id = parts[0] if parts else None
    step = _int_or(parts[1], 0) if len(parts) > 1 else 0
    q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
    return unquote(u.netloc), tx_id, max(0, step), q


def _int_or(s: str, default: int) -> int:
    try:
        return int(s)
    except ValueError:
        return default


def _first_where(cl: Client, pred: Any) -> int:
    for k, tx in enumerate(cl.txs, 1):
        if pred(tx):
            return k
    return len(cl.txs)


def _last_where(cl: Client, pred: Any) -> int:
    found = 0
    for k, tx in enumerate(cl.txs, 1):
        if pred(tx):
            found = k
    return found


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    except (ImportError, OSError):
        return 0.0
