"""OpenTelemetry traces and logs for machines (tools.md §2.1, §2.2).

:func:`bind_otel` binds an :class:`OtelTracer`: a machine tracer that turns a machine tree
into one trace. The span tree (names are binding)::

    root                                   only when AM_OTEL_TRACE_ID/_SPAN_ID are unset
    └─ mach:0:<id>                         ended at once (nesting only)
       ├─ 0:states
       │  └─ 0:Foo                         state name group, ended at once
       │     └─ 0:Foo                      one per activation; ends on deactivation
       ├─ 0:transitions                    transitions=True only
       │  └─ 0: [add] Foo                  one per transition ("!" prefix: Exception)
       └─ 0:submachines
          └─ mach:1:<child id>             inherited by submachines

:func:`env_tracer_provider` builds the SDK provider of ``AM_OTEL_TRACE`` (OTLP over gRPC
or HTTP, batched) and :func:`bind_otel_logger` exports the machine's log lines as OTel
log records.

Everything here runs in the machine's hooks, synchronously; exporting happens in the
span processor (``BatchSpanProcessor`` exports from its own thread).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode, TraceFlags

from .._core._logargs import default_log_args
from .._core._tracer import TracerBase

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.trace import TracerProvider

    from .._core._engine import Engine
    from .._core._types import Transition

__all__ = [
    "MAX_TX_HISTORY",
    "OtelLogger",
    "OtelTracer",
    "bind_otel",
    "bind_otel_logger",
    "env_tracer_provider",
]

#: Transitions per machine remembered for links from mutations they caused.
MAX_TX_HISTORY: Final = 300
#: Txs calling only these states are not traced.
HEALTH_STATES: Final = frozenset({"Healthcheck", "Heartbeat"})
#: Env vars carrying the parent span (hex ids), set by the first tracer that makes ``root``.
ENV_TRACE_ID: Final = "AM_OTEL_TRACE_ID"
ENV_SPAN_ID: Final = "AM_OTEL_SPAN_ID"

_TYPE_NAMES: Final = ("add", "remove", "set", "eval")
_OTLP_HINT: Final = "install the OTLP exporters with: pip install 'trio_am[otlp]'"


class _Mach:
    """What the tracer keeps per machine."""

    __slots__ = (
        "allowed",
        "groups",
        "id",
        "index",
        "mach",
        "mach_ctx",
        "open",
        "states_ctx",
        "subs_ctx",
        "tx",
        "tx_hist",
        "tx_span",
        "txs_ctx",
    )

    def __init__(self, mach: Engine, index: int) -> None:
        self.mach = mach
        self.id = mach.id
        self.index = index
        self.mach_ctx: Context | None = None
        self.states_ctx: Context | None = None
        self.txs_ctx: Context | None = None
        self.subs_ctx: Context | None = None
        #: state name -> context of its (ended) name-group span
        self.groups: dict[str, Context] = {}
        #: state name -> its open instance span
        self.open: dict[str, Span] = {}
        #: state name -> traced or not (allow / skip lists)
        self.allowed: dict[str, bool] = {}
        #: the transition being traced and its span
        self.tx: Transition | None = None
        self.tx_span: Span | None = None
        #: tx id -> span context, the last MAX_TX_HISTORY ones (insertion ordered)
        self.tx_hist: dict[str, SpanContext] = {}


def _compile_re(value: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    if value is None or isinstance(value, re.Pattern):
        return value
    return re.compile(value) if value else None


def _env_parent() -> SpanContext | None:
    """The remote parent span of ``AM_OTEL_TRACE_ID`` / ``AM_OTEL_SPAN_ID``, if both are
    valid hex ids."""
    tid, sid = os.environ.get(ENV_TRACE_ID, ""), os.environ.get(ENV_SPAN_ID, "")
    if not tid or not sid:
        return None
    try:
        trace_id, span_id = int(tid, 16), int(sid, 16)
    except ValueError:
        return None
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    return ctx if ctx.is_valid else None


class OtelTracer(TracerBase):
    """A machine tracer exporting the span tree of tools.md §2.1 (see :func:`bind_otel`).

    One tracer serves a root machine and its submachines (bound to them through the
    ``new_submachine`` hook); machine ``i`` is the i-th machine bound, from 0.

    Attributes:
        tracer: the OpenTelemetry tracer spans are made with.
        provider: the tracer provider (force-flushed when the root machine is disposed).
        transitions: one span per transition.
    """

    def __init__(
        self,
        tracer_provider: Any,
        *,
        transitions: bool = False,
        args: bool = False,
        skip_auto: bool = False,
        allow_states: Iterable[str] = (),
        skip_states: Iterable[str] = (),
        allow_re: str | re.Pattern[str] | None = None,
        skip_re: str | re.Pattern[str] | None = None,
        rpc_dbg: bool = False,
    ) -> None:
        self.provider = tracer_provider
        self.tracer: trace.Tracer = tracer_provider.get_tracer("trio_am")
        self.transitions = transitions
        # steps are only needed for the `steps_count` of transition spans
        self.wants_steps = transitions
        self.args = args
        self.skip_auto = skip_auto
        self.allow_states = frozenset(s for s in allow_states if s)
        self.skip_states = frozenset(s for s in skip_states if s)
        self.allow_re = _compile_re(allow_re)
        self.skip_re = _compile_re(skip_re)
        self.rpc_dbg = rpc_dbg
        self.closed = False
        self._next = 0
        self._root: Engine | None = None
        #: id(machine) -> data; machine id -> data (for source links)
        self._machs: dict[int, _Mach] = {}
        self._by_id: dict[str, _Mach] = {}
        self._root_ctx = self._make_root()

    # ------------------------------------------------------------------ setup
    def _make_root(self) -> Context:
        """Join the env parent span, else start (and end) ``root`` and export its ids."""
        remote = _env_parent()
        if remote is not None:
            return trace.set_span_in_context(trace.NonRecordingSpan(remote))
        span = self.tracer.start_span("root", context=Context())
        span.end()
        sc = span.get_span_context()
        if sc.is_valid:
            os.environ[ENV_TRACE_ID] = trace.format_trace_id(sc.trace_id)
            os.environ[ENV_SPAN_ID] = trace.format_span_id(sc.span_id)
        return trace.set_span_in_context(span)

    def _group(self, ctx: Context | None, name: str, mach_id: str) -> Context:
        span = self.tracer.start_span(name, context=ctx, attributes={"mach_id": mach_id})
        span.end()
        return trace.set_span_in_context(span)

    def bind(self, mach: Engine, parent: Engine | None = None) -> None:
        """Trace ``mach`` (as a submachine of ``parent`` when that one is traced here).

        Idempotent. Binds this tracer to the machine.
        """
        if self.closed or id(mach) in self._machs:
            return
        d = _Mach(mach, self._next)
        self._next += 1
        pd = None
        if parent is not None:
            pd = self._machs.get(id(parent))
        elif mach.parent_id is not None:
            pd = self._by_id.get(mach.parent_id)
        if pd is not None:
            if pd.subs_ctx is None:
                pd.subs_ctx = self._group(pd.mach_ctx, f"{pd.index}:submachines", pd.id)
            ctx = pd.subs_ctx
        else:
            ctx = self._root_ctx
            if self._root is None:
                self._root = mach
        i = d.index
        span = self.tracer.start_span(f"mach:{i}:{d.id}", context=ctx, attributes={"id": d.id})
        span.end()
        d.mach_ctx = trace.set_span_in_context(span)
        d.states_ctx = self._group(d.mach_ctx, f"{i}:states", d.id)
        if self.transitions:
            d.txs_ctx = self._group(d.mach_ctx, f"{i}:transitions", d.id)
        self._machs[id(mach)] = d
        self._by_id[d.id] = d
        mach.bind_tracer(self)
        # states already active when bound get their instance spans now
        ticks = mach._ticks
        names = mach._c.names
        multi = mach._c.multi_mask
        for k, t in enumerate(ticks):
            if t & 1 and self._allowed(d, names[k]):
                self._open_state(d, names[k], (multi >> k) & 1, "[bind]", None, None)

    # ------------------------------------------------------------------ rules
    def _allowed(self, d: _Mach, name: str) -> bool:
        ok = d.allowed.get(name)
        if ok is None:
            ok = d.allowed[name] = self._check_state(d.id, name)
        return ok

    def _check_state(self, mach_id: str, name: str) -> bool:
        key = f"{mach_id}:{name}"
        skip = self.skip_states
        if name in skip or key in skip:
            return False
        if self.skip_re is not None and self.skip_re.search(key):
            return False
        allow = self.allow_states
        if not allow and self.allow_re is None:
            return True
        if name in allow or key in allow:
            return True
        return self.allow_re is not None and self.allow_re.search(key) is not None

    def _skip_child(self, child: Engine) -> bool:
        if self.rpc_dbg or os.environ.get("AM_RPC_DBG"):
            return False
        return any(t.startswith("rpc-") or t == "relay" for t in child.tags)

    # ------------------------------------------------------------------ state spans
    def _open_state(
        self, d: _Mach, name: str, multi: int, event: str, tx_id: str | None, t: int | None
    ) -> Span:
        label = f"{d.index}:{name} [M]" if multi else f"{d.index}:{name}"
        ctx = d.groups.get(name)
        if ctx is None:
            group = self.tracer.start_span(label, context=d.states_ctx)
            group.end()
            ctx = d.groups[name] = trace.set_span_in_context(group)
        span = self.tracer.start_span(
            label,
            context=ctx,
            attributes={"tx_id": tx_id} if tx_id is not None else None,
            start_time=t,
        )
        span.add_event(event, timestamp=t)
        d.open[name] = span
        return span

    # ------------------------------------------------------------------ hooks
    def machine_init(self, mach: Engine) -> None:
        """Trace a machine created with this tracer in ``tracers=``."""
        self.bind(mach)

    def new_submachine(self, parent: Engine, child: Engine) -> None:
        """Inherit: trace the child (not RPC / relay helpers unless ``rpc_dbg``)."""
        if not self._skip_child(child):
            self.bind(child, parent)

    def transition_init(self, tx: Transition) -> None:
        """Start the transition span."""
        if not self.transitions:
            return
        d = self._machs.get(id(tx.machine))
        if d is None:
            return
        mut = tx.mutation
        if mut.is_check or (self.skip_auto and mut.is_auto):
            return
        m = tx.machine
        names = m._c.names
        called = [names[i] for i in mut._called]
        if HEALTH_STATES.issuperset(called):
            return
        label = f"{d.index}: [{_TYPE_NAMES[mut.type]}] {' '.join(called)}"
        tx_id = tx.id
        attrs: dict[str, Any] = {
            "tx_id": tx_id,
            "time_before": sum(tx._before),
            "mutation": label,
        }
        exc = m._c.exception
        err = None
        if exc >= 0 and exc in tx._target:
            name = "!" + label
            err = mut.args.get("err")
            if err is not None:
                attrs["error"] = str(err) or type(err).__name__
        else:
            name = label
        if self.args and mut.args:
            mapper = m._log_args or default_log_args
            for k, v in mapper(mut.args).items():
                attrs["args." + k] = v
        links = None
        src = mut.source
        if src is not None:
            sd = self._by_id.get(src.mach_id)
            if sd is not None:
                sc = sd.tx_hist.get(src.tx_id)
                if sc is not None:
                    links = [Link(sc)]
        span = self.tracer.start_span(
            name,
            context=d.txs_ctx,
            attributes=attrs,
            links=links,
            start_time=tx.t0 or None,
        )
        if err is not None:
            span.set_status(Status(StatusCode.ERROR, attrs["error"]))
        d.tx = tx
        d.tx_span = span
        hist = d.tx_hist
        hist[tx_id] = span.get_span_context()
        if len(hist) > MAX_TX_HISTORY:
            del hist[next(iter(hist))]

    def handler_end(self, tx: Transition, binding_id: str, name: str) -> None:
        """An event on the transition span per handler run."""
        d = self._machs.get(id(tx.machine))
        if d is not None and d.tx is tx and d.tx_span is not None:
            d.tx_span.add_event(name, {"emitter": binding_id})

    def transition_end(self, tx: Transition) -> None:
        """Follow state changes with state spans; finish the transition span."""
        d = self._machs.get(id(tx.machine))
        if d is None:
            return
        span = d.tx_span if d.tx is tx else None
        if span is None and tx.mutation.is_check:
            return
        after = tx._after
        before = tx._before
        diff = ""
        if after is not None and after is not before and not self._health(tx):
            diff = self._states(d, tx, before, after, span)
        if span is None:
            return
        d.tx = d.tx_span = None
        span.set_attributes(
            {
                "states_diff": diff,
                "time_after": sum(after if after is not None else before),
                "accepted": tx.is_accepted,
                "auto": tx.mutation.is_auto,
                "steps_count": len(tx.steps) if tx.steps is not None else 0,
            }
        )
        span.end(tx.t1 or None)

    def _health(self, tx: Transition) -> bool:
        names = tx.machine._c.names
        called = tx.mutation._called
        return bool(called) and all(names[i] in HEALTH_STATES for i in called)

    def _states(
        self, d: _Mach, tx: Transition, before: list[int], after: list[int], span: Span | None
    ) -> str:
        """Open / end / mark instance spans for the changed states; the ``states_diff``."""
        m = tx.machine
        names = m._c.names
        multi = m._c.multi_mask
        added: list[str] = []
        removed: list[str] = []
        event = None
        t1 = tx.t1 or None
        n = len(before)
        for k, t in enumerate(after):
            b = before[k] if k < n else 0
            if t == b:
                continue
            name = names[k]
            if t & 1:
                if b & 1 and t - b < 2:
                    continue
                added.append(name)
                if not self._allowed(d, name):
                    continue
                if event is None:
                    event = (
                        f"[{_TYPE_NAMES[tx.mutation.type]}] "
                        f"{' '.join(names[i] for i in tx.mutation._called)}"
                    )
                inst = d.open.get(name)
                if inst is not None:
                    inst.add_event(event, timestamp=t1)
                else:
                    inst = self._open_state(d, name, (multi >> k) & 1, event, tx.id, t1)
                if span is not None:
                    span.add_link(inst.get_span_context())
            elif b & 1:
                removed.append(name)
                inst = d.open.pop(name, None)
                if inst is not None:
                    if span is not None:
                        span.add_link(inst.get_span_context())
                    inst.end(t1)
        if span is None:
            return ""
        parts = [f"+{s}" for s in added]
        parts += [f"-{s}" for s in removed]
        return " ".join(parts)

    def machine_dispose(self, mach: Engine) -> None:
        """End the machine's open spans; the root machine ends and flushes everything."""
        if mach is self._root:
            self.close()
            return
        d = self._machs.pop(id(mach), None)
        if d is not None:
            self._end(d)
            mach.detach_tracer(self)
            if not self._machs:
                self.flush()

    # ------------------------------------------------------------------ lifecycle
    def _end(self, d: _Mach) -> None:
        if self._by_id.get(d.id) is d:
            del self._by_id[d.id]
        if d.tx_span is not None:
            d.tx_span.set_attribute("accepted", False)
            d.tx_span.end()
            d.tx = d.tx_span = None
        for inst in d.open.values():
            inst.end()
        d.open.clear()

    def close(self) -> None:
        """End every open span (latest machine first), detach from all machines and
        force-flush the provider. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for d in reversed(list(self._machs.values())):
            self._end(d)
            d.mach.detach_tracer(self)
        self._machs.clear()
        self.flush()

    def flush(self, timeout_millis: int = 5000) -> bool:
        """Force-flush the provider's span processors (when it has ``force_flush``)."""
        fn = getattr(self.provider, "force_flush", None)
        if fn is None:
            return True
        return bool(fn(timeout_millis))


def bind_otel(
    mach: Engine,
    tracer_provider: TracerProvider | None = None,
    *,
    transitions: bool = False,
    args: bool = False,
    skip_auto: bool = False,
    allow_states: Iterable[str] = (),
    skip_states: Iterable[str] = (),
    allow_re: str | re.Pattern[str] | None = None,
    skip_re: str | re.Pattern[str] | None = None,
    rpc_dbg: bool = False,
    service: str | None = None,
) -> OtelTracer:
    """Trace ``mach`` and its future submachines with OpenTelemetry (tools.md §2.1).

    Args:
        mach: the root machine.
        tracer_provider: where spans go; None = :func:`env_tracer_provider` when
            ``service`` is given, else OpenTelemetry's global provider.
        transitions: also one span per transition (``AM_OTEL_TRACE_TXS``).
        args: put the logged mutation args on transition spans as ``args.<k>``
            (``AM_OTEL_TRACE_ARGS``; the machine's args mapper decides which).
        skip_auto: no spans for auto transitions (``AM_OTEL_TRACE_NOAUTO``).
        allow_states: trace only these states (``State`` or ``machId:State``).
        skip_states: never trace these states; skipping wins over allowing.
        allow_re: a regexp searched in ``machId:State``; allows.
        skip_re: a regexp searched in ``machId:State``; skips.
        rpc_dbg: also trace submachines tagged ``rpc-*`` or ``relay`` (or set
            ``AM_RPC_DBG``).
        service: the ``service.name`` of the env provider (when no provider is given).

    Returns:
        The bound :class:`OtelTracer`; disposing the machine (or ``tracer.close()``) ends
        its spans and force-flushes the provider.

    Example::

        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        bind_otel(mach, tp, transitions=True)
    """
    provider: Any = tracer_provider
    if provider is None:
        provider = env_tracer_provider(service) if service else trace.get_tracer_provider()
    tracer = OtelTracer(
        provider,
        transitions=transitions,
        args=args,
        skip_auto=skip_auto,
        allow_states=allow_states,
        skip_states=skip_states,
        allow_re=allow_re,
        skip_re=skip_re,
        rpc_dbg=rpc_dbg,
    )
    tracer.bind(mach)
    return tracer


def _otlp_protocol() -> str:
    proto = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    return proto.strip().lower() or "grpc"


def _otlp_exporter() -> Any:
    """The OTLP span exporter the env asks for (gRPC unless ``http/protobuf``)."""
    proto = _otlp_protocol()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if proto in ("http/protobuf", "http"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )
        except ImportError as exc:
            raise ImportError(f"OTLP/HTTP exporter missing: {_OTLP_HINT}") from exc
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        return HttpExporter(endpoint=endpoint or None)
    if proto != "grpc":
        raise ValueError(f"unsupported OTLP protocol {proto!r} (use grpc or http/protobuf)")
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )
    except ImportError as exc:
        raise ImportError(f"OTLP/gRPC exporter missing: {_OTLP_HINT}") from exc
    if not endpoint and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = "localhost:4317"
    if not endpoint:
        return GrpcExporter()
    insecure = None
    if "://" not in endpoint:
        # a bare host:port is a plain-text collector (like Go's WithInsecure) unless
        # the env says otherwise
        env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or os.environ.get(
            "OTEL_EXPORTER_OTLP_INSECURE"
        )
        insecure = env.strip().lower() == "true" if env else True
    return GrpcExporter(endpoint=endpoint, insecure=insecure)


def env_tracer_provider(service: str) -> TracerProvider:
    """An SDK tracer provider exporting over OTLP, configured by the environment.

    ``service.name`` = ``service`` (``AM_SERVICE``); spans go to
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (default ``localhost:4317``) over gRPC, or over
    HTTP when ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` is
    ``http/protobuf``, through a ``BatchSpanProcessor`` (batches of 50, every 100 ms).

    Raises:
        ImportError: the exporter package is missing (the ``trio_am[otlp]`` extra).
        ValueError: an unknown OTLP protocol.
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = _otlp_exporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=50, schedule_delay_millis=100)
    )
    return provider


# ---------------------------------------------------------------------- logs
def _severities() -> dict[int, tuple[Any, str]]:
    from opentelemetry._logs import SeverityNumber

    return {
        1: (SeverityNumber.INFO4, "external"),
        2: (SeverityNumber.INFO3, "changes"),
        3: (SeverityNumber.INFO, "ops"),
        4: (SeverityNumber.TRACE4, "decisions"),
        5: (SeverityNumber.TRACE, "everything"),
    }


class OtelLogger(TracerBase):
    """A tracer exporting each log line of a machine as an OTel log record (tools.md §2.2).

    It observes lines through the ``machine_log`` tracer hook, so whatever sink the
    machine logs to (stdlib logging or ``set_logger``) keeps working.
    """

    def __init__(self, mach: Engine, provider: LoggerProvider, service: str | None) -> None:
        from opentelemetry._logs import SeverityNumber

        self.logger = provider.get_logger(mach.id)
        self._sev = _severities()
        self._error = SeverityNumber.ERROR
        attrs = {"asyncmachine.id": mach.id}
        if service:
            attrs["service.name"] = service
        self._attrs: Mapping[str, str] = attrs
        self._emit: Callable[..., None] = self.logger.emit

    def machine_log(self, mach: Engine, level: int, text: str) -> None:
        """Emit one record: body = the line (no id prefix), severity by level."""
        sev, sev_text = self._sev.get(level, (None, str(level)))
        if text.startswith("[error"):
            sev = self._error
        self._emit(body=text, severity_number=sev, severity_text=sev_text, attributes=self._attrs)


def bind_otel_logger(
    mach: Engine, provider: LoggerProvider, service: str | None = None
) -> OtelLogger:
    """Export ``mach``'s log lines as OpenTelemetry log records (``AM_OTEL_LOGS``).

    A record per line the machine logs (so ``mach.log_level`` decides how many): body =
    the line without the id prefix; severity EXTERNAL→INFO4, CHANGES→INFO3, OPS→INFO,
    DECISIONS→TRACE4, EVERYTHING→TRACE, ERROR for lines starting ``[error``; severity
    text = the level name; attributes ``asyncmachine.id`` and ``service.name``. The
    machine's own log sink is left as it is.

    Args:
        mach: the machine.
        provider: an SDK ``LoggerProvider`` (``opentelemetry.sdk._logs``).
        service: the service name (``AM_SERVICE``).

    Returns:
        The bound :class:`OtelLogger` (``mach.detach_tracer(it)`` stops it).
    """
    logger = OtelLogger(mach, provider, service)
    mach.bind_tracer(logger)
    return logger
