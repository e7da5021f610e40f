"""The debugger reporter (tools.md §1.8): machines report to ``trio-am-dbg``.

:func:`bind_debugger` binds a :class:`DbgReporter` tracer to a machine. Its hooks copy the
few fields a record needs into one flat tuple and append it to a bounded buffer; one
sender thread per process and debugger address builds the wire messages
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

Why a flat tuple and not the transition itself: a record waits in the buffer for a few
milliseconds, long enough for Python's cyclic GC to promote whatever it holds to the
oldest generation, and every full collection then walks it. A transition holds a dozen
GC-tracked objects; the record keeps only the ones the message needs (the copy-on-write
tick lists, the target and step lists, which the core never changes once the transition
ended) and lets the transition go.

Log lines logged outside transitions wait for the machine's next transition, which
carries them as ``pre_log``; if none comes within 1 s, or the next is a health check,
or the machine is disposed, they go out as a ``log`` record instead.

``addr`` may also be ``file:PATH``: the records are then written straight into a
recording (``.amdbg``) that ``trio-am-dbg -i PATH`` opens.

Not reported (the core does not log them yet): subscription and state-context events
(``ev`` of log entries: ``when:new``, ``ctx:match``, pipes ...) and prepend tokens
(``token`` is always nil).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import socket
import struct
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import msgpack

from .._core._logargs import default_log_args
from .._core._tracer import TracerBase
from .._core._types import EMPTY_ARGS
from . import _wire

if TYPE_CHECKING:
    from .._core._engine import Engine
    from .._core._types import Mutation, Transition

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_MIN",
    "DEFAULT_ADDR",
    "DEFAULT_BUFFER",
    "LOG_IDLE",
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
#: Seconds a log line logged outside transitions waits for a transition to carry it.
LOG_IDLE: Final = 1.0
#: Bytes encoded before a socket write.
_BATCH_BYTES: Final = 256 * 1024
#: Seconds the idle sender sleeps between looks at the buffer.
_IDLE_POLL: Final = 0.02
#: Frames of the caller's stack kept for a queued mutation.
_TRACE_DEPTH: Final = 8
#: Mutations whose queuing stack waits for their transition, at most.
_TRACES_MAX: Final = 1000
#: Calls of only these states are health checks (their log lines go out as `log`).
_HEALTH: Final = frozenset({"Healthcheck", "Heartbeat"})

# record kinds in the buffer (first item of each tuple); kinds >= _SCHEMA are never dropped
_TX: Final = 0
_QUEUED: Final = 1
_LOG: Final = 2
_SCHEMA: Final = 3
_DISPOSE: Final = 4

_PKG_DIR: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HDR_PACK: Final = struct.Struct(">I").pack  # the frame's length prefix


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


_now = time.time_ns


def _caller_trace() -> tuple[tuple[str, int, str], ...]:
    """The queuing caller's stack, innermost first, outside trio_am's own frames."""
    out: list[tuple[str, int, str]] = []
    f: Any = sys._getframe(2)
    while f is not None and len(out) < _TRACE_DEPTH:
        code = f.f_code
        if not code.co_filename.startswith(_PKG_DIR):
            out.append((code.co_filename, f.f_lineno, code.co_name))
        f = f.f_back
    return tuple(out)


# ------------------------------------------------------------------------ message builders
# (sender thread: records -> wire message lists)


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


_NO_ARGS: Final[dict[str, str]] = {}  # packed for "no args" (never changed)


def _args_map(args: Mapping[str, Any] | None, mapper: Any) -> dict[str, str]:
    if not args:
        return {}
    try:
        return {str(k): str(v) for k, v in (mapper or default_log_args)(args).items()}
    except Exception:
        return {}


def _entries(lines: Any) -> list[tuple[int, str, None]]:
    if not lines:
        return []
    return [(lvl, text, None) for lvl, text in lines]


def _trace_lines(trace: Any) -> list[str] | None:
    if not trace:
        return None
    return [f"{file}:{line} {name}" for file, line, name in trace]


def _err_str(err: Any) -> str | None:
    if err is None:
        return None
    try:
        return str(err) or type(err).__name__
    except Exception:
        return type(err).__name__


def _tx_msg(rec: tuple[Any, ...]) -> tuple[Any, ...]:
    (_, mid, seq, mtype, called, args, mapper, flags, target, before, after, steps, log,
     pre_log, qlen, qtick, mut_qtick, src, t0, t1, err, trace) = rec  # fmt: skip
    return (
        "tx",
        mid,
        f"{mid}:{seq}",
        mtype,
        called,
        _NO_ARGS if args is None else _args_map(args, mapper),
        flags,
        target,
        before,
        after,
        steps,
        () if log is None else _entries(log),
        () if pre_log is None else _entries(pre_log),
        qlen,
        qtick,
        mut_qtick,
        None,
        src,
        t0,
        t1,
        None if err is None else _err_str(err),
        None if trace is None else _trace_lines(trace),
    )


def _queued_msg(rec: tuple[Any, ...]) -> list[Any]:
    _, mid, qid, mtype, called, args, mapper, flags, qlen, qtick, mut_qtick, src, t, trace = rec
    return [
        "queued",
        mid,
        qid,
        mtype,
        called,
        _args_map(args, mapper),
        flags,
        qlen,
        qtick,
        mut_qtick,
        None,
        None,
        src,
        t,
        _trace_lines(trace),
    ]


def _src(mut: Mutation) -> tuple[str, str, int] | None:
    src = mut.source
    if src is None:
        return None
    return (src.mach_id, src.tx_id, src.mach_time)


# ----------------------------------------------------------------------------------- link
class _Link:
    """One process's connection to one debugger address (or recording file): the shared
    buffer and its sender thread."""

    def __init__(self, addr: str, buffer: int) -> None:
        self.addr = addr
        self.cap = buffer
        self.buf: deque[tuple[Any, ...]] = deque()
        # bound machines, and the last schema message sent of each (what reconnections
        # greet with: it matches the records still waiting in the buffer)
        self.machines: weakref.WeakValueDictionary[str, Engine] = weakref.WeakValueDictionary()
        self.schemas: dict[str, list[Any]] = {}
        self.reporters: weakref.WeakSet[DbgReporter] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.wake = threading.Event()
        self.busy = False  # the sender holds records taken from buf, not yet written
        self.dropped = 0  # records dropped, in all (the machine's threads count them)
        self.reported = 0  # of those, reported in `drop` messages
        self.sent = 0
        self.connected = False
        self.connects = 0
        self.closing = False
        self.stopped = False
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._last_logs = 0.0
        self.thread = threading.Thread(target=self._run, name="trio-am-dbg-sender", daemon=True)
        self.thread.start()

    # -- machine side --------------------------------------------------------------------
    def drop_oldest(self) -> None:
        """Drop the oldest droppable record (the buffer is over its cap)."""
        buf = self.buf
        keep: list[tuple[Any, ...]] = []
        while buf:
            try:
                rec = buf.popleft()
            except IndexError:  # the sender took it
                break
            if rec[0] >= _SCHEMA:
                keep.append(rec)
                continue
            self.dropped += 1
            break
        if keep:
            buf.extendleft(reversed(keep))

    # -- sender thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.addr.startswith("file:"):
                self._run_file(self.addr[5:])
            else:
                self._run_tcp()
        except Exception:  # the sender must never take the process down
            pass
        finally:
            self.connected = False
            self.busy = False
            self.stopped = True
            with self.lock:
                self.idle.notify_all()

    def _run_tcp(self) -> None:
        host, _, port = self.addr.rpartition(":")
        delay = BACKOFF_MIN
        carry = b""
        while True:
            try:
                sock = socket.create_connection((host, int(port)), timeout=2.0)
            except OSError:
                if self.closing:
                    return
                self._tick_logs()
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
                sock.sendall(self._greeting() + carry)
                carry = b""
                while True:
                    data, n = self._take()
                    if data:
                        carry = data
                        sock.sendall(data)
                        carry = b""
                    if n:
                        self._done(n)
                        self._tick_logs()
                        continue
                    self._done(0)
                    self._tick_logs()
                    if self.buf:
                        continue
                    if self.closing:
                        with contextlib.suppress(OSError):
                            sock.sendall(_wire.encode(["bye", _now()]))
                        return
                    # idle: notice a debugger that went away before the next write
                    # (which the kernel could still accept, then lose); a `hello` it
                    # may send is read and ignored
                    readable, _, _ = select.select([sock], [], [], _IDLE_POLL)
                    if readable and not sock.recv(65536):
                        raise ConnectionResetError("debugger closed the connection")
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
            self.connects += 1
            for msg in self._greeting_msgs():
                writer.write(_now(), 0, msg)
            while True:
                n = 0
                self.busy = True
                for out in self._take_msgs():
                    if out is None:
                        n += 1
                    else:
                        writer.write(_now(), 0, out)
                self._done(n)
                self._tick_logs()
                writer.maybe_flush()
                if not n and not self.buf:
                    if self.closing:
                        writer.write(_now(), 0, ["bye", _now()])
                        return
                    self.wake.wait(_IDLE_POLL)
                    self.wake.clear()
        finally:
            self.connected = False
            writer.close()

    def _tick_logs(self) -> None:
        """Send log lines that waited :data:`LOG_IDLE` for a transition (checked at
        most every 0.1 s)."""
        now = time.monotonic()
        if now - self._last_logs < 0.1:
            return
        self._last_logs = now
        for rep in list(self.reporters):
            if rep._pend:
                rep._flush_logs(now - LOG_IDLE)

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
        for mid, sent in list(self.schemas.items()):
            mach = self.machines.get(mid)
            if mach is not None and not (mach._closing or mach._disposed):
                try:
                    fresh = _schema_msg(mach)
                    if fresh[4] == sent[4]:  # no schema change waits in the buffer
                        sent = fresh
                except Exception:  # odd state: the last schema will do
                    pass
            msgs.append(sent)
        return msgs

    def _greeting(self) -> bytes:
        return b"".join(_wire.encode(m) for m in self._greeting_msgs())

    def _take_msgs(self) -> Iterator[list[Any] | tuple[Any, ...] | None]:
        """Yield the messages of buffered records; None for each record taken (the
        caller counts them)."""
        if self.dropped > self.reported:
            n = self.dropped - self.reported
            self.reported += n
            yield ["drop", None, n, _now()]
        buf = self.buf
        build = self._build
        for _ in range(2000):
            try:
                rec = buf.popleft()
            except IndexError:
                return
            yield None
            try:
                msg = build(rec)
            except Exception:  # never let one odd record stop the sender
                continue
            if msg is not None:
                yield msg

    def _take(self) -> tuple[bytes, int]:
        """Encode buffered records (up to :data:`_BATCH_BYTES`): the frames, and how many
        records were taken. Each message is built, packed and appended at once, so no
        message outlives its record."""
        self.busy = True
        out = bytearray()
        n = 0
        pack = self._pack
        hdr = _HDR_PACK
        buf = self.buf
        build = self._build
        if self.dropped > self.reported:
            d = self.dropped - self.reported
            self.reported += d
            body = pack(["drop", None, d, _now()])
            out += hdr(len(body))
            out += body
        while len(out) < _BATCH_BYTES:
            try:
                rec = buf.popleft()
            except IndexError:
                break
            n += 1
            try:
                msg = build(rec)
                if msg is None:
                    continue
                body = pack(msg)
            except Exception:  # an odd record (unpackable args...): skip it
                continue
            if len(body) > _wire.MAX_FRAME:
                continue
            out += hdr(len(body))
            out += body
        return bytes(out), n

    def _done(self, n: int) -> None:
        with self.lock:
            self.sent += n
            self.busy = False
            self.idle.notify_all()

    def _build(self, rec: tuple[Any, ...]) -> list[Any] | tuple[Any, ...] | None:
        kind = rec[0]
        if kind == _TX:
            return _tx_msg(rec)
        if kind == _QUEUED:
            return _queued_msg(rec)
        if kind == _LOG:
            return ["log", rec[1], _entries(rec[2])]
        if kind == _SCHEMA:
            msg: list[Any] = rec[1]
            self.schemas[msg[1]] = msg
            return msg
        if kind == _DISPOSE:
            # a reconnection no longer greets it
            mach = self.machines.get(rec[1])
            if mach is None or mach._closing or mach._disposed:
                self.machines.pop(rec[1], None)
                self.schemas.pop(rec[1], None)
            return ["dispose", rec[1], rec[2]]
        return None

    # -- control -------------------------------------------------------------------------
    def flush(self, timeout: float) -> bool:
        """Wait until the buffer is written (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        self.wake.set()
        with self.lock:
            while self.buf or self.busy or not self.connected:
                left = deadline - time.monotonic()
                if left <= 0 or self.stopped:
                    return False
                self.idle.wait(min(left, 0.02))
        return True

    def close(self, timeout: float = 1.0) -> None:
        """Flush (at most ``timeout`` seconds), then say ``bye`` and stop the sender."""
        deadline = time.monotonic() + timeout
        for rep in list(self.reporters):
            rep._flush_logs(None)
        self.flush(timeout)
        self.closing = True
        self.wake.set()
        self.thread.join(max(0.05, deadline - time.monotonic()))


_LINKS: dict[str, _Link] = {}
_LINKS_LOCK = threading.Lock()


def _link(addr: str, buffer: int) -> _Link:
    with _LINKS_LOCK:
        link = _LINKS.get(addr)
        if link is None or link.stopped or link.closing:
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


# -------------------------------------------------------------------------------- tracer
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
        self._buf = link.buf
        self._cap = link.cap
        self._machines: weakref.WeakSet[Engine] = weakref.WeakSet()
        # log lines logged outside transitions, per machine id: [first at, lines]
        self._pend: dict[str, list[Any]] = {}
        self._lock = threading.Lock()
        # last error reported per machine id; queuing stacks per queued mutation;
        # (tx seq, n) of the last queued record per machine id
        self._errs: dict[str, Any] = {}
        self._traces: dict[Mutation, tuple[tuple[str, int, str], ...]] = {}
        self._qn: dict[str, tuple[int, int]] = {}
        link.reporters.add(self)

    # -- binding -------------------------------------------------------------------------
    def _attach(self, mach: Engine) -> None:
        if mach in self._machines:
            return
        self._machines.add(mach)
        mid = mach._id
        self._errs[mid] = mach._err
        if mach._pre_log:
            # lines logged before binding: the next transition's pre_log
            self._pend[mid] = [time.monotonic(), list(mach._pre_log)]
        self._link.machines[mid] = mach
        self._buf.append((_SCHEMA, _schema_msg(mach)))
        mach.bind_tracer(self)

    # -- hooks -----------------------------------------------------------------------------
    def new_submachine(self, parent: Engine, child: Engine) -> None:
        """Children report to the same debugger."""
        self._attach(child)

    def schema_change(self, mach: Engine, old_schema: Any) -> None:
        """A grown schema is sent again (same connection: a schema change)."""
        self._schema(mach)

    def verify_states(self, mach: Engine) -> None:
        """A new state order is sent as a schema."""
        self._schema(mach)

    def _schema(self, mach: Engine) -> None:
        self._buf.append((_SCHEMA, _schema_msg(mach)))

    def transition_end(self, tx: Transition) -> None:
        """Queue the finished transition (a flat tuple; the sender builds the message)."""
        mut = tx.mutation
        flags = 4 if tx.is_accepted else 0
        if mut.is_check:
            if not self.log_checks:
                return
            flags |= 2
        if mut.is_auto:
            flags |= 1
        m = tx.machine
        if m._closing:
            # disposal's own transitions (removing Start, then auto attempts): the
            # `dispose` record ends the client's history instead
            return
        mid = m._id
        pre_log = self._claim_logs(mid, mut) if self._pend else None
        err = m._err
        if err is not None:
            if err is self._errs.get(mid):
                err = None
            else:
                self._errs[mid] = err
        args: Any = mut.args
        mapper = None
        if args is EMPTY_ARGS:
            args = None
        else:
            mapper = m._log_args
        src = mut.source
        after = tx._after
        before = tx._before
        rec = (
            _TX,
            mid,
            tx._seq,
            mut.type._value_,
            mut._called,
            args,
            mapper,
            flags,
            tx._target,
            before,
            before if after is None else after,
            tx.steps or (),
            tx.log,
            pre_log,
            tx.queue_len,
            m._queue_tick,
            mut.queue_tick,
            None if src is None else (src.mach_id, src.tx_id, src.mach_time),
            tx.t0,
            tx.t1,
            err,
            self._traces.pop(mut, None) if self._traces else None,
        )
        buf = self._buf
        buf.append(rec)
        if len(buf) > self._cap:
            self._link.drop_oldest()

    def mutation_queued(self, mach: Engine, mutation: Mutation) -> None:
        """Queue a ``queued`` record (with the caller's stack unless disabled)."""
        if mutation.is_check and not self.log_checks:
            return
        mid = mach._id
        seq = mach._seq
        last = self._qn.get(mid)
        n = last[1] + 1 if last is not None and last[0] == seq else 1
        self._qn[mid] = (seq, n)
        trace = None
        if self.trace:
            trace = _caller_trace()
            traces = self._traces
            traces[mutation] = trace
            if len(traces) > _TRACES_MAX:  # mutations that never ran (skipped, disposed)
                del traces[next(iter(traces))]
        args: Any = mutation.args
        rec = (
            _QUEUED,
            mid,
            f"{mid}:{seq}-{n}",
            mutation.type._value_,
            mutation._called,
            None if args is EMPTY_ARGS else args,
            mach._log_args,
            (1 if mutation.is_auto else 0) | (2 if mutation.is_check else 0),
            len(mach._queue),
            mach._queue_tick,
            mutation.queue_tick,
            _src(mutation),
            _now(),
            trace,
        )
        buf = self._buf
        buf.append(rec)
        if len(buf) > self._cap:
            self._link.drop_oldest()

    def machine_log(self, mach: Engine, level: int, text: str) -> None:
        """Lines logged outside transitions wait for the next one (its ``pre_log``) or
        go out as a ``log`` record after :data:`LOG_IDLE` seconds."""
        if mach._tx is not None:
            return  # the transition's own log
        mid = mach._id
        with self._lock:
            p = self._pend.get(mid)
            if p is None:
                self._pend[mid] = [time.monotonic(), [(level, text)]]
            else:
                p[1].append((level, text))
                if len(p[1]) > 1000:  # like the core's pre_log: keep the newest
                    del p[1][:500]

    def machine_dispose(self, mach: Engine) -> None:
        """Pending log lines go out, then ``dispose`` (the debugger marks the client
        disconnected)."""
        mid = mach._id
        with self._lock:
            p = self._pend.pop(mid, None)
            if p is not None:
                self._buf.append((_LOG, mid, tuple(p[1])))
            self._buf.append((_DISPOSE, mid, _now()))
        self._machines.discard(mach)

    # -- log lines -------------------------------------------------------------------------
    def _claim_logs(self, mid: str, mut: Mutation) -> tuple[tuple[int, str], ...] | None:
        """The pending lines of ``mid`` for a transition's ``pre_log`` (a health check's
        go out as a ``log`` record instead)."""
        with self._lock:
            p = self._pend.pop(mid, None)
            if p is None:
                return None
            lines = tuple(p[1])
            names = mut._names
            if all(names[i] in _HEALTH for i in mut._called):
                self._buf.append((_LOG, mid, lines))
                return None
            return lines

    def _flush_logs(self, older_than: float | None) -> None:
        """Send pending lines as ``log`` records: those waiting since before
        ``older_than`` (a monotonic time), or all when None."""
        with self._lock:
            pend = self._pend
            for mid in list(pend):
                p = pend[mid]
                if older_than is None or p[0] <= older_than:
                    del pend[mid]
                    self._buf.append((_LOG, mid, tuple(p[1])))

    # -- control -------------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> bool:
        """Send pending log lines, then block until everything buffered was written to
        a connected debugger (True) or ``timeout`` seconds passed (False). For tests and
        short-lived scripts; never call it from a handler."""
        self._flush_logs(None)
        return self._link.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Counters of this reporter's link (shared by every reporter of the address):
        ``sent`` (records written), ``dropped`` (in all), ``queued`` (waiting in the
        buffer), ``connected``, ``connects``."""
        link = self._link
        return {
            "sent": link.sent,
            "dropped": link.dropped,
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
            The first binding to an address sets it for the process.
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
