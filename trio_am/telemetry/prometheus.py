"""Prometheus metrics for trio_am machines (tools.md §2.3).

:func:`bind_metrics` binds a :class:`MetricsTracer` to a machine (and, inherited, to its
non-RPC submachines); :func:`serve_metrics` serves ``/metrics`` over HTTP;
:func:`start_push` pushes to a Pushgateway every 15 s (``AM_PROM_PUSH_URL``).

The hooks only add to plain integers and bucket lists; the Prometheus metric families
are built when the registry is collected (a scrape or a push), by one collector per
registry that every bound machine shares. So binding many machines to one registry
never raises a duplicate-registration error, and a transition costs a few integer
operations, not a dozen locked ``Counter.inc`` calls.

Metrics (label ``machine_id`` = the raw machine id):

=================================================  =========  ==============================
name                                               type       what
=================================================  =========  ==============================
``am_transitions_total{machine_id,accepted}``      counter    every transition, by outcome
``am_exceptions_total``                            counter    accepted txs activating
                                                              ``Exception``
``am_states_added_total``                          counter    states made active
``am_states_removed_total``                        counter    states made inactive
``am_states_touched_total``                        counter    called, changed or stepped
                                                              states (per tx, distinct)
``am_state_activations_total{machine_id,state}``   counter    activations (a multi state's
                                                              re-activation counts)
``am_transition_duration_seconds``                 histogram  tx wall time
``am_handler_duration_seconds``                    histogram  one handler call
``am_transition_ticks``                            histogram  ticks a tx added (accepted)
``am_transition_steps``                            histogram  recorded steps (accepted)
``am_transition_handlers``                         histogram  handlers called (accepted)
``am_queue_length``                                gauge      queue length at the last
                                                              tx start
``am_states``, ``am_relations``, ``am_ref_states``  gauge      schema size; relation count;
                                                              states named by a relation
``am_states_active``, ``am_states_inactive``       gauge      at collection time
=================================================  =========  ==============================

The added/removed/touched/activation counters, ticks, steps and handlers count accepted
transitions only (like asyncmachine-go); ``am_transitions_total`` counts both outcomes.
Canceled dry runs (``can_add``) are not transitions and are not counted.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, push_to_gateway
from prometheus_client.exposition import MetricsHandler
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._core._tracer import TracerBase
from .env import normalize_id, parse_addr

if TYPE_CHECKING:
    from .._core._engine import Engine
    from .._core._types import Transition

__all__ = [
    "COUNT_BUCKETS",
    "DURATION_BUCKETS",
    "RPC_TAGS",
    "MetricsServer",
    "MetricsTracer",
    "Pusher",
    "bind_metrics",
    "normalize_id",
    "parse_addr",
    "serve_metrics",
    "start_push",
]

_logger: Final = logging.getLogger("trio_am.telemetry.prometheus")

#: Upper bounds (seconds) of the duration histograms.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Upper bounds of the per-transition count histograms (ticks, steps, handlers).
COUNT_BUCKETS: Final[tuple[float, ...]] = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)

#: Tags of RPC helper machines: such submachines do not inherit the metrics tracer.
RPC_TAGS: Final = frozenset({"rpc-client", "rpc-server", "rpc-mux", "relay"})

_DUR_BOUNDS: Final = list(DURATION_BUCKETS)
_CNT_BOUNDS: Final = list(COUNT_BUCKETS)


class _Hist:
    """A histogram as plain numbers: one count per bucket (not cumulative) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        counts = list(self.counts)  # a copy first: the machine thread may be observing
        total = self.sum
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(self.bounds, counts, strict=False):
            acc += n
            out.append((_fmt_bound(bound), acc))
        out.append(("+Inf", acc + counts[-1]))
        return out, total


def _fmt_bound(bound: float) -> str:
    return repr(float(bound))


class _Stats:
    """The numbers of one machine id (shared by machines re-created with that id)."""

    __slots__ = (
        "accepted",
        "activations",
        "added",
        "canceled",
        "exceptions",
        "handler_dur",
        "handlers",
        "machine",
        "machine_id",
        "queue_len",
        "removed",
        "schema_key",
        "schema_stats",
        "snapshot",
        "steps",
        "ticks",
        "touched",
        "tx_dur",
    )

    def __init__(self, machine_id: str) -> None:
        self.machine_id = machine_id
        self.machine: weakref.ref[Engine] | None = None
        self.accepted = 0
        self.canceled = 0
        self.exceptions = 0
        self.added = 0
        self.removed = 0
        self.touched = 0
        self.activations: dict[str, int] = {}
        self.tx_dur = _Hist(_DUR_BOUNDS)
        self.handler_dur = _Hist(_DUR_BOUNDS)
        self.ticks = _Hist(_CNT_BOUNDS)
        self.steps = _Hist(_CNT_BOUNDS)
        self.handlers = _Hist(_CNT_BOUNDS)
        self.queue_len = 0
        self.schema_key: object = None
        self.schema_stats = (0, 0, 0)
        # (states, relations, ref_states, active) from the last collection
        self.snapshot = (0, 0, 0, 0)

    def gauges(self) -> tuple[int, int, int, int]:
        """``(states, relations, ref_states, active)``, read from the machine if alive."""
        ref = self.machine
        mach = ref() if ref is not None else None
        if mach is None:
            return self.snapshot
        compiled = mach._c
        if compiled is not self.schema_key:
            self.schema_stats = _schema_stats(mach)
            self.schema_key = compiled
        n, rels, refs = self.schema_stats
        active = mach._active.bit_count()
        self.snapshot = (n, rels, refs, active)
        return self.snapshot


def _schema_stats(mach: Engine) -> tuple[int, int, int]:
    schema = mach.schema
    relations = 0
    referenced: set[str] = set()
    for state in schema.values():
        for rel in (state.add, state.require, state.remove, state.after):
            if rel:
                relations += len(rel)
                referenced.update(rel)
    return len(schema), relations, len(referenced)


class _Collector:
    """The one collector of a registry: builds the metric families from every
    :class:`_Stats` bound to it."""

    def __init__(self) -> None:
        self._stats: dict[str, _Stats] = {}
        self._lock = threading.Lock()

    def stats_for(self, machine_id: str) -> _Stats:
        with self._lock:
            st = self._stats.get(machine_id)
            if st is None:
                st = self._stats[machine_id] = _Stats(machine_id)
            return st

    def describe(self) -> list[Metric]:
        """Empty families with the names and types this collector exposes."""
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        """Build the families from the current numbers (called on every scrape)."""
        fams = _families()
        (
            txs,
            exc,
            added,
            removed,
            touched,
            acts,
            tx_dur,
            h_dur,
            ticks,
            steps,
            handlers,
            qlen,
            states,
            rels,
            refs,
            active,
            inactive,
        ) = fams
        with self._lock:
            all_stats = list(self._stats.values())
        for st in all_stats:
            mid = st.machine_id
            lbl = [mid]
            txs.add_metric([mid, "true"], st.accepted)
            txs.add_metric([mid, "false"], st.canceled)
            exc.add_metric(lbl, st.exceptions)
            added.add_metric(lbl, st.added)
            removed.add_metric(lbl, st.removed)
            touched.add_metric(lbl, st.touched)
            for state, n in list(st.activations.items()):
                acts.add_metric([mid, state], n)
            for fam, hist in (
                (tx_dur, st.tx_dur),
                (h_dur, st.handler_dur),
                (ticks, st.ticks),
                (steps, st.steps),
                (handlers, st.handlers),
            ):
                buckets, total = hist.snapshot()
                fam.add_metric(lbl, buckets, total)
            qlen.add_metric(lbl, st.queue_len)
            n, r, rf, act = st.gauges()
            states.add_metric(lbl, n)
            rels.add_metric(lbl, r)
            refs.add_metric(lbl, rf)
            active.add_metric(lbl, act)
            inactive.add_metric(lbl, n - act)
        return iter(fams)


def _families() -> tuple[Any, ...]:
    mid = ["machine_id"]
    return (
        CounterMetricFamily(
            "am_transitions", "Transitions by outcome.", labels=["machine_id", "accepted"]
        ),
        CounterMetricFamily(
            "am_exceptions", "Accepted transitions activating Exception.", labels=mid
        ),
        CounterMetricFamily("am_states_added", "States activated (accepted txs).", labels=mid),
        CounterMetricFamily("am_states_removed", "States deactivated (accepted txs).", labels=mid),
        CounterMetricFamily(
            "am_states_touched", "States called, changed or stepped (accepted txs).", labels=mid
        ),
        CounterMetricFamily(
            "am_state_activations",
            "Activations per state, multi re-activations included.",
            labels=["machine_id", "state"],
        ),
        HistogramMetricFamily(
            "am_transition_duration_seconds", "Transition wall time.", labels=mid
        ),
        HistogramMetricFamily("am_handler_duration_seconds", "Handler call time.", labels=mid),
        HistogramMetricFamily(
            "am_transition_ticks", "Ticks added per accepted transition.", labels=mid
        ),
        HistogramMetricFamily(
            "am_transition_steps", "Steps recorded per accepted transition.", labels=mid
        ),
        HistogramMetricFamily(
            "am_transition_handlers", "Handlers called per accepted transition.", labels=mid
        ),
        GaugeMetricFamily("am_queue_length", "Queue length at the last tx start.", labels=mid),
        GaugeMetricFamily("am_states", "States in the schema.", labels=mid),
        GaugeMetricFamily("am_relations", "Relations in the schema.", labels=mid),
        GaugeMetricFamily("am_ref_states", "States referenced by relations.", labels=mid),
        GaugeMetricFamily("am_states_active", "Active states.", labels=mid),
        GaugeMetricFamily("am_states_inactive", "Inactive states.", labels=mid),
    )


_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, _Collector] = weakref.WeakKeyDictionary()
_COLLECTORS_LOCK: Final = threading.Lock()


def _collector(registry: CollectorRegistry) -> _Collector:
    with _COLLECTORS_LOCK:
        col = _COLLECTORS.get(registry)
        if col is None:
            col = _Collector()
            registry.register(col)
            _COLLECTORS[registry] = col
        return col


class MetricsTracer(TracerBase):
    """The tracer :func:`bind_metrics` binds: one per machine, sharing the registry's
    collector. Submachines without an RPC tag get their own, bound automatically.

    Attributes:
        machine_id: the id of the machine it observes.
        registry: the registry its numbers are collected into.
    """

    wants_steps = True

    def __init__(self, mach: Engine, registry: CollectorRegistry, collector: _Collector) -> None:
        self.machine_id = mach.id
        self.registry = registry
        self._collector = collector
        self._st = st = collector.stats_for(mach.id)
        st.machine = weakref.ref(mach)
        self._names = mach._c.names
        self._h_t0 = 0
        self._h_n = 0

    def new_submachine(self, parent: Engine, child: Engine) -> None:
        """Bind a tracer of the same registry to ``child`` (unless it is an RPC helper)."""
        if RPC_TAGS.intersection(child.tags):
            return
        _bind(child, self.registry, self._collector)

    def schema_change(self, mach: Engine, old_schema: Any) -> None:
        """Pick up the new state names."""
        self._names = mach._c.names

    def verify_states(self, mach: Engine) -> None:
        """Pick up the new state order."""
        self._names = mach._c.names

    def handler_start(self, tx: Transition, binding_id: str, name: str) -> None:
        """Start timing a handler."""
        self._h_t0 = time.perf_counter_ns()

    def handler_end(self, tx: Transition, binding_id: str, name: str) -> None:
        """Record a handler's duration."""
        self._st.handler_dur.observe((time.perf_counter_ns() - self._h_t0) / 1e9)
        self._h_n += 1

    def transition_end(self, tx: Transition) -> None:
        """Count the transition."""
        if tx.mutation.is_check:
            self._h_n = 0
            return
        st = self._st
        handlers = self._h_n
        self._h_n = 0
        st.queue_len = tx.queue_len
        if tx.t1:
            st.tx_dur.observe((tx.t1 - tx.t0) / 1e9)
        if not tx.is_accepted:
            st.canceled += 1
            return
        st.accepted += 1
        before = tx._before
        after = tx._after
        steps = tx.steps
        st.handlers.observe(handlers)
        st.steps.observe(len(steps) if steps is not None else 0)
        called = tx.mutation._called
        if after is None or after is before:
            st.ticks.observe(0)
            st.touched += len(called)
            return
        ticks = sum(after) - sum(before)
        st.ticks.observe(ticks)
        changed: list[int] = [*tx._exits, *tx._enters]
        if ticks != sum(after[s] - before[s] for s in changed):
            # a rollback changed states outside the enter/exit lists: compare them all
            changed = [i for i, (b, a) in enumerate(zip(before, after, strict=False)) if a != b]
        touched = set(called)
        touched.update(changed)
        if steps:
            for step in steps:
                if step[1] >= 0:
                    touched.add(step[1])
                if step[2] >= 0:
                    touched.add(step[2])
        st.touched += len(touched)
        if not ticks:
            return
        names = self._names
        acts = st.activations
        exc = tx.machine._c.exception
        for s in set(changed):
            b = before[s]
            a = after[s]
            if a == b:
                continue
            if a & 1:
                # newly active, or a multi state's re-activation (odd to odd)
                name = names[s]
                acts[name] = acts.get(name, 0) + 1
                if s == exc:
                    st.exceptions += 1
                if not b & 1:
                    st.added += 1
            elif b & 1:
                st.removed += 1


def _bind(mach: Engine, registry: CollectorRegistry, collector: _Collector) -> MetricsTracer:
    for t in mach.tracers:
        if isinstance(t, MetricsTracer) and t.registry is registry:
            return t
    tracer = MetricsTracer(mach, registry, collector)
    mach.bind_tracer(tracer)
    return tracer


def bind_metrics(mach: Engine, registry: CollectorRegistry | None = None) -> MetricsTracer:
    """Collect Prometheus metrics of ``mach`` (and of its future non-RPC submachines)
    into ``registry`` (default: ``prometheus_client.REGISTRY``).

    Binding again to the same registry returns the tracer already bound; many machines
    may share one registry. A machine re-created with the same id continues its series.

    Example::

        reg = CollectorRegistry()
        bind_metrics(mach, reg)
        with serve_metrics("127.0.0.1:9464", reg):
            ...
    """
    reg = REGISTRY if registry is None else registry
    return _bind(mach, reg, _collector(reg))


# ---------------------------------------------------------------------------- HTTP
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        if ":" in host:
            import socket

            self.address_family = socket.AF_INET6
        self.registry = registry
        super().__init__((host, port), _Handler)


class _Handler(MetricsHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in ("/metrics", "/"):
            self.send_error(404, "only /metrics is served here")
            return
        self.registry = self.server.registry
        super().do_GET()


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint (see :func:`serve_metrics`).

    Attributes:
        host: the bound host.
        port: the bound port (the real one when 0 was asked for).
    """

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._httpd = _Server(host, port, registry)
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="trio-am-metrics",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}{' closed' if self._closed else ''}>"


def serve_metrics(
    addr: str = "127.0.0.1:0", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``registry`` (default ``prometheus_client.REGISTRY``) at
    ``http://ADDR/metrics`` from a daemon thread; port 0 picks a free port
    (``server.port``). Close it with ``server.close()`` or a ``with`` block.

    Raises:
        ValueError: ``addr`` is not ``host:port``.
        OSError: the address cannot be bound.
    """
    host, port = parse_addr(addr, what="metrics address")
    return MetricsServer(host, port, REGISTRY if registry is None else registry)


# ---------------------------------------------------------------------------- push
class Pusher:
    """Pushes a registry to a Pushgateway every ``interval`` seconds from a daemon
    thread (see :func:`start_push`). Errors are logged, never raised."""

    def __init__(
        self,
        url: str,
        job: str,
        registry: CollectorRegistry,
        interval: float = 15.0,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.job = job
        self.registry = registry
        self.interval = interval
        self.timeout = timeout
        self.pushes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trio-am-metrics-push", daemon=True)
        self._thread.start()

    def push(self) -> bool:
        """Push once now; False (and a log line) on failure."""
        try:
            push_to_gateway(self.url, job=self.job, registry=self.registry, timeout=self.timeout)
        except Exception as exc:
            self.errors += 1
            _logger.warning("pushing metrics to %s failed: %s", self.url, exc)
            return False
        self.pushes += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def close(self, final_push: bool = False) -> None:
        """Stop pushing (optionally after one last push)."""
        self._stop.set()
        self._thread.join(self.timeout + 1)
        if final_push:
            self.push()


def start_push(
    url: str,
    job: str,
    registry: CollectorRegistry | None = None,
    *,
    interval: float = 15.0,
) -> Pusher:
    """Push ``registry`` (default ``prometheus_client.REGISTRY``) to the Pushgateway at
    ``url`` as ``job`` every ``interval`` seconds, until ``pusher.close()``."""
    if interval <= 0:
        raise ValueError(f"push interval must be positive, got {interval!r}")
    return Pusher(url, job, REGISTRY if registry is None else registry, interval)
