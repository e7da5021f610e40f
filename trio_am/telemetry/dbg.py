"""The debugger reporter (tools.md §1.8): machines report to ``trio-am-dbg``.

:func:`bind_debugger` binds a :class:`DbgReporter` tracer to a machine. Its hooks only
append a tuple of references (the transition, the mutation, the machine) to a bounded
buffer; one sender thread per process and debugger address builds the wire messages
(:mod:`trio_am.telemetry._wire`), encodes them and writes them to the socket. The machine
never waits for the debugger and nothing it does raises into the machine:

* before the first connection, and while the debugger is gone, records wait in the
  buffer (``AM_DBG_BUFFER``, 10,000 records); when it is full the oldest ``tx``,
  ``queued`` and ``log`` records are dropped (schemas never are) and the loss is reported
  to the debugger with a ``drop`` message;
* the sender reconnects with a backoff from 0.1 s to 5 s, and on every (re)connection
  sends ``hello`` and a fresh ``schema`` of every bound machine before anything else;
* at process exit the buffer is flushed (at most 1 s) and ``bye`` sent.

Why a thread and not a Trio task: the reporter must work for machines used without Trio,
across several ``trio.run`` calls in one process (tests, notebooks) and keep flushing
after the Trio run that created it has ended; a blocking socket in its own thread never
stalls the machine's event loop, and the thread holds no Trio state.

``addr`` may also be ``file:PATH``: the records are then written straight into a
recording (``.amdbg``) that ``trio-am-dbg -i PATH`` opens.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._core._logargs import default_log_args
from .._core._tracer import TracerBase
from . import _wire

if TYPE_CHECKING:
    from .._core._engine import Engine
    from .._core._types import Mutation, Transition

__all__ = [
    "DEFAULT_ADDR",
    "DEFAULT_BUFFER",
    "DbgReporter",
    "bind_debugger",
    "parse_dbg_addr",
]

#: The debugger's default address.
DEFAULT_ADDR: Final = "localhost:6831"
#: Records kept while the debugger is slow or gone.
DEFAULT_BUFFER: Final = 10_000
#: Backoff between connection attempts, seconds.
BACKOFF_MIN: Final = 0.1
BACKOFF_MAX: Final = 5.0
#: Bytes encoded before a socket write.
_BATCH_BYTES: Final = 256 * 1024
#: Frames of the caller's stack kept for a queued mutation.
_TRACE_DEPTH: Final = 8

# record kinds in the buffer (first item of each tuple)
_TX: Final = 0
_QUEUED: Final = 1
_LOG: Final = 2
_SCHEMA: Final = 3
_DISPOSE: Final = 4


def parse_dbg_addr(addr: str) -> str:
    """Normalise a debugger address: ``1`` means :data:`DEFAULT_ADDR`; ``host:port`` and
    ``file:PATH`` are checked. Raises ValueError for anything else."""
    addr = addr.strip()
    if addr == "1":
        return DEFAULT_ADDR
    if addr.startswith("file:"):
        if not addr[5:]:
            raise ValueError("debugger address 'file:' needs a path")
        return addr
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad debugger address {addr!r}: expected HOST:PORT, 1 or file:PATH")
    return addr


def _now() -> int:
    return time.time_ns()


def _caller_trace() -> list[str]:
    """The queuing caller's stack, innermost first, outside trio_am's own frames."""
    out: list[str] = []
    f = sys._getframe(3)
    pkg = os.path.dirname(os.path.dirname(__file__))
    while f is not None and len(out) < _TRACE_DEPTH:
        code = f.f_code
        if not code.co_filename.startswith(pkg):
            out.append(f"{code.co_filename}:{f.f_lineno} {code.co_name}")
        f = f.f_back  # type: ignore[assignment]
    return out


def _schema_msg(mach: Engine) -> list[Any]:
    names = list(mach.state_names)
    states: dict[str, dict[str, Any]] = {}
    for name, st in mach.schema.items():
        d: dict[str, Any] = {}
        if st.auto:
            d["auto"] = True
        if st.multi:
            d["multi"] = True
        for rel in ("require", "add", "remove", "after"):
            targets = getattr(st, rel, ())
            if targets:
                d[rel] = list(targets)
        tags = getattr(st, "tags", ())
        if tags:
            d["tags"] = list(tags)
        states[name] = d
    index = {n: i for i, n in enumerate(names)}
    groups_src = mach.groups
    groups = {g: [index[s] for s in members if s in index] for g, members in groups_src.items()}
    return [
        "schema",
        mach.id,
        mach.parent_id,
        list(mach.tags),
        names,
        states,
        groups,
        list(groups_src),
        list(mach.time()),
        mach.queue_tick,
        _now(),
    ]


def _args_map(mach: Engine, args: Mapping[str, Any]) -> dict[str, str]:
    if not args:
        return {}
    mapper = mach._log_args or default_log_args
    try:
        return {str(k): str(v) for k, v in mapper(args).items()}
    except Exception:
        return {}


def _entries(lines: list[tuple[int, str]] | None, skip_tail: int = 0) -> list[list[Any]]:
    if not lines:
        return []
    if skip_tail:
        lines = lines[: max(0, len(lines) - skip_tail)]
    return [[lvl, text, None] for lvl, text in lines]


def _tx_msg(rec: tuple[Any, ...]) -> list[Any]:
    _, mach, tx, qtick, pre_skip = rec
    mut = tx.mutation
    flags = 0
    if mut.is_auto:
        flags |= _wire.TX_FLAG_AUTO
    if mut.is_check:
        flags |= _wire.TX_FLAG_CHECK
    if tx.is_accepted:
        flags |= _wire.TX_FLAG_ACCEPTED
    args = mut.args
    err = None
    if args and "err" in args and mach._c.exception >= 0 and (mut._mask >> mach._c.exception) & 1:
        err = str(args["err"])
    src = mut.source
    before = tx._before
    after = tx._after if tx._after is not None else before
    return [
        "tx",
        mach.id,
        tx.id,
        int(mut.type),
        list(mut._called),
        _args_map(mach, args),
        flags,
        list(tx._target),
        before,
        after,
        tx.steps or [],
        _entries(tx.log),
        _entries(tx.pre_log, pre_skip),
        tx.queue_len,
        qtick,
        mut.queue_tick,
        None,
        [src.mach_id, src.tx_id, src.mach_time] if src is not None else None,
        tx.t0,
        tx.t1,
        err,
        None,
    ]


def _queued_msg(rec: tuple[Any, ...]) -> list[Any]:
    _, mach, mut, qid, qlen, qtick, t, trace = rec
    src = mut.source
    return [
        "queued",
        mach.id,
        qid,
        int(mut.type),
        list(mut._called),
        _args_map(mach, mut.args),
        (_wire.TX_FLAG_AUTO if mut.is_auto else 0) | (_wire.TX_FLAG_CHECK if mut.is_check else 0),
        qlen,
        qtick,
        mut.queue_tick,
        None,
        None,
        [src.mach_id, src.tx_id, src.mach_time] if src is not None else None,
        t,
        trace,
    ]


class _Link:
    """One process's connection to one debugger address (or recording file)."""

    def __init__(self, addr: str, buffer: int) -> None:
        self.addr = addr
        self.cap = buffer
        self.buf: deque[tuple[Any, ...]] = deque()
        self.machines: weakref.WeakValueDictionary[str, Engine] = weakref.WeakValueDictionary()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.idle = threading.Condition(self.lock)
        self.pending = 0  # records taken from buf, not yet written
        self.dropped = 0  # since the last `drop` message
        self.dropped_total = 0
        self.sent = 0
        self.connected = False
        self.connects = 0
        self.closing = False
        self.encoder = _wire.Encoder()
        self.thread = threading.Thread(target=self._run, name="trio-am-dbg-sender", daemon=True)
        self.thread.start()

    # -- machine side (hooks; keep cheap) -----------------------------------------------
    def push(self, rec: tuple[Any, ...]) -> None:
        buf = self.buf
        buf.append(rec)
        if len(buf) > self.cap:
            self._drop_oldest()
        if len(buf) == 1:
            self.wake.set()

    def _drop_oldest(self) -> None:
        buf = self.buf
        keep: list[tuple[Any, ...]] = []
        while buf:
            try:
                rec = buf.popleft()
            except IndexError:  # the sender took it
                break
            if rec[0] == _SCHEMA or rec[0] == _DISPOSE:
                keep.append(rec)
                continue
            self.dropped += 1
            self.dropped_total += 1
            break
        for rec in reversed(keep):
            buf.appendleft(rec)

    # -- sender thread -------------------------------------------------------------------
    def _run(self) -> None:
        if self.addr.startswith("file:"):
            self._run_file(self.addr[5:])
            return
        host, _, port = self.addr.rpartition(":")
        delay = BACKOFF_MIN
        carry = b""
        while True:
            if self.closing and not self.buf and not carry:
                return
            try:
                sock = socket.create_connection((host, int(port)), timeout=2.0)
            except OSError:
                if self.closing:
                    return
                self.wake.wait(delay)
                self.wake.clear()
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            delay = BACKOFF_MIN
            try:
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connected = True
                self.connects += 1
                sock.sendall(self._greeting())
                if carry:
                    sock.sendall(carry)
                    carry = b""
                while True:
                    out, n = self._take()
                    if not out:
                        if self.closing:
                            with contextlib.suppress(OSError):
                                sock.sendall(_wire.encode(["bye", _now()]))
                            return
                        # idle: notice a debugger that went away before the next
                        # write (which the kernel could still accept, then lose)
                        readable, _, _ = select.select([sock], [], [], 0.05)
                        if readable and not sock.recv(65536):
                            raise ConnectionResetError("debugger closed the connection")
                        continue
                    carry = out
                    sock.sendall(out)
                    carry = b""
                    self._done(n)
            except OSError:
                pass
            finally:
                self.connected = False
                with contextlib.suppress(OSError):
                    sock.close()
            # records encoded into `carry` are sent again after the next greeting
            if self.closing:
                return

    def _run_file(self, path: str) -> None:
        from ..dbg.recording import RecordingWriter

        writer = RecordingWriter.open(path, meta={"app": "trio_am reporter"})
        try:
            self.connected = True
            for msg in self._greeting_msgs():
                writer.write(_now(), 0, msg)
            last_flush = time.monotonic()
            while True:
                msgs, n = self._take_msgs()
                for msg in msgs:
                    writer.write(_now(), 0, msg)
                self._done(n)
                if time.monotonic() - last_flush >= 1.0:
                    writer.flush()
                    last_flush = time.monotonic()
                if not msgs:
                    if self.closing:
                        writer.write(_now(), 0, ["bye", _now()])
                        return
                    self.wake.wait(0.05)
                    self.wake.clear()
        finally:
            self.connected = False
            writer.close()

    def _greeting_msgs(self) -> list[list[Any]]:
        msgs: list[list[Any]] = [
            [
                "hello",
                _wire.PROTOCOL_VERSION,
                "trio_am",
                _lib_version(),
                os.getpid(),
                socket.gethostname(),
                sys.argv[0] if sys.argv else "",
                _now(),
            ]
        ]
        for mach in list(self.machines.values()):
            try:
                msgs.append(_schema_msg(mach))
            except Exception:  # a machine mid-dispose
                continue
        return msgs

    def _greeting(self) -> bytes:
        return b"".join(_wire.encode(m) for m in self._greeting_msgs())

    def _take_msgs(self) -> tuple[list[list[Any]], int]:
        buf = self.buf
        msgs: list[list[Any]] = []
        n = 0
        size = 0
        if self.dropped:
            msgs.append(["drop", None, self.dropped, _now()])
            self.dropped = 0
        while buf and size < 2000:
            try:
                rec = buf.popleft()
            except IndexError:
                break
            n += 1
            size += 1
            self.pending += 1
            try:
                msg = self._build(rec)
            except Exception:  # never let one odd record stop the sender
                continue
            if msg is not None:
                msgs.append(msg)
        return msgs, n

    def _take(self) -> tuple[bytes, int]:
        msgs, n = self._take_msgs()
        if not msgs:
            return b"", n
        out = bytearray()
        encode = self.encoder.encode
        for msg in msgs:
            try:
                out += encode(msg)
            except (ValueError, TypeError):  # too large or unpackable: skip it
                continue
            if len(out) > _BATCH_BYTES:
                break
        return bytes(out), n

    def _done(self, n: int) -> None:
        with self.lock:
            self.pending -= n
            self.sent += n
            self.idle.notify_all()

    def _build(self, rec: tuple[Any, ...]) -> list[Any] | None:
        kind = rec[0]
        if kind == _TX:
            return _tx_msg(rec)
        if kind == _QUEUED:
            return _queued_msg(rec)
        if kind == _LOG:
            _, mach_id, entries = rec
            return ["log", mach_id, [[lvl, text, None] for lvl, text in entries]]
        if kind == _SCHEMA:
            return _schema_msg(rec[1])
        if kind == _DISPOSE:
            return ["dispose", rec[1], rec[2]]
        return None

    # -- control -------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Wait until the buffer is written (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        self.wake.set()
        with self.lock:
            while self.buf or self.pending or not self.connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(min(left, 0.05))
                self.wake.set()
        return True

    def close(self, timeout: float = 1.0) -> None:
        self.flush(timeout)
        self.closing = True
        self.wake.set()
        self.thread.join(timeout)


_LINKS: dict[str, _Link] = {}
_LINKS_LOCK = threading.Lock()


def _link(addr: str, buffer: int) -> _Link:
    with _LINKS_LOCK:
        link = _LINKS.get(addr)
        if link is None or not link.thread.is_alive():
            link = _LINKS[addr] = _Link(addr, buffer)
        return link


@atexit.register
def _close_all() -> None:
    deadline = time.monotonic() + 1.0
    for link in list(_LINKS.values()):
        link.close(max(0.05, deadline - time.monotonic()))


def _lib_version() -> str:
    try:
        from importlib.metadata import version

        return version("trio_am")
    except Exception:
        return "0"


class DbgReporter(TracerBase):
    """The tracer :func:`bind_debugger` binds; one per machine tree and address.

    Attributes:
        addr: the debugger address (or ``file:PATH``).
        log_checks: report dry runs (``can_add``) too.
        trace: attach the caller's stack to queued mutations.
    """

    wants_steps = True

    def __init__(self, addr: str, link: _Link, *, log_checks: bool, trace: bool) -> None:
        self.addr = addr
        self.log_checks = log_checks
        self.trace = trace
        self._link = link
        self._push = link.push
        # out-of-transition log lines already reported, per machine (kept out of pre_log)
        self._logged: dict[str, int] = {}
        self._queued_n: dict[str, int] = {}
        self._machines: weakref.WeakSet[Engine] = weakref.WeakSet()

    # -- binding -------------------------------------------------------------------------
    def _attach(self, mach: Engine) -> None:
        if mach in self._machines:
            return
        self._machines.add(mach)
        self._link.machines[mach.id] = mach
        mach.bind_tracer(self)
        if self._link.connected:
            # otherwise the (re)connection greeting sends it
            self._push((_SCHEMA, mach))

    # -- hooks -----------------------------------------------------------------------------
    def new_submachine(self, parent: Engine, child: Engine) -> None:
        """Children report to the same debugger."""
        self._attach(child)

    def schema_change(self, mach: Engine, old_schema: Any) -> None:
        """A grown schema is sent again (same connection: a schema change)."""
        self._push((_SCHEMA, mach))

    def verify_states(self, mach: Engine) -> None:
        """A new state order is sent as a schema."""
        self._push((_SCHEMA, mach))

    def transition_end(self, tx: Transition) -> None:
        """Queue the finished transition."""
        mut = tx.mutation
        if mut.is_check and not self.log_checks:
            return
        mach = tx.machine
        if mach._closing:
            # disposal's own transitions (removing Start, then auto attempts): the
            # `dispose` record ends the client's history instead
            return
        pre_skip = 0
        if tx.pre_log:
            pre_skip = self._logged.pop(mach._id, 0)
        self._push((_TX, mach, tx, mach._queue_tick, pre_skip))

    def mutation_queued(self, mach: Engine, mutation: Mutation) -> None:
        """Queue a ``queued`` record (with the caller's stack unless disabled)."""
        if mutation.is_check and not self.log_checks:
            return
        mid = mach._id
        n = self._queued_n.get(mid, 0) + 1
        self._queued_n[mid] = n
        qid = f"{mid}:{mach._seq}-{n}"
        self._push(
            (
                _QUEUED,
                mach,
                mutation,
                qid,
                len(mach._queue),
                mach._queue_tick,
                _now(),
                _caller_trace() if self.trace else None,
            )
        )

    def machine_log(self, mach: Engine, level: int, text: str) -> None:
        """Lines logged outside transitions go out as ``log`` records."""
        if mach._tx is not None:
            return
        mid = mach._id
        self._logged[mid] = self._logged.get(mid, 0) + 1
        self._push((_LOG, mid, [(level, text)]))

    def machine_dispose(self, mach: Engine) -> None:
        """The debugger marks the client disconnected."""
        self._push((_DISPOSE, mach._id, _now()))
        self._machines.discard(mach)

    # -- control -------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Block until everything buffered was written to a connected debugger (True) or
        ``timeout`` seconds passed (False). For tests and short-lived scripts; never call
        it from a handler."""
        return self._link.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters of this reporter's link: ``sent``, ``dropped`` (in all), ``queued``
        (waiting in the buffer), ``connected``, ``connects``."""
        link = self._link
        return {
            "sent": link.sent,
            "dropped": link.dropped_total,
            "queued": len(link.buf),
            "connected": link.connected,
            "connects": link.connects,
        }

    def __repr__(self) -> str:
        return f"<DbgReporter {self.addr} machines={len(self._machines)}>"


def bind_debugger(
    mach: Engine,
    addr: str = DEFAULT_ADDR,
    *,
    buffer: int | None = None,
    log_checks: bool = False,
    trace: bool = True,
) -> DbgReporter:
    """Report ``mach`` (and its future submachines) to the debugger at ``addr``.

    Args:
        mach: the machine.
        addr: ``host:port``, ``1`` (``localhost:6831``) or ``file:PATH`` (a recording).
        buffer: records kept while the debugger is slow or absent (default 10,000, or
            ``AM_DBG_BUFFER``); the oldest are dropped past it, and the loss reported.
        log_checks: also report dry runs (``can_add`` / ``can_remove``).
        trace: attach the caller's stack to queued mutations.

    Binding a machine twice to one address returns the first reporter.

    Example::

        from trio_am.telemetry import bind_debugger

        bind_debugger(mach, "localhost:6831")   # then run: trio-am-dbg
    """
    addr = parse_dbg_addr(addr)
    for tracer in mach.tracers:
        if isinstance(tracer, DbgReporter) and tracer.addr == addr:
            return tracer
    if buffer is None:
        env = os.environ.get("AM_DBG_BUFFER", "")
        buffer = int(env) if env.isdigit() and int(env) > 0 else DEFAULT_BUFFER
    if buffer <= 0:
        raise ValueError(f"buffer must be positive, got {buffer}")
    reporter = DbgReporter(addr, _link(addr, buffer), log_checks=log_checks, trace=trace)
    reporter._attach(mach)
    return reporter
