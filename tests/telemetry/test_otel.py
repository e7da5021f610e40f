"""OpenTelemetry traces and logs (tools.md §2.1, §2.2; scenarios-tools.md 35, 37)."""

from __future__ import annotations

import gzip
import http.server
import os
import sys
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import trio_am as am
from trio_am import pipes
from trio_am.telemetry import bind_otel, bind_otel_logger
from trio_am.telemetry.otel import OtelTracer, _otlp_exporter, env_tracer_provider

SCHEMA = {"Start": {}, "Foo": {"require": ["Start"]}, "Bar": {}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AM_", "OTEL_")):
            monkeypatch.delenv(key)
    yield
    # bind_otel exports the root span's ids for child processes: don't leak them
    for key in ("AM_OTEL_TRACE_ID", "AM_OTEL_SPAN_ID"):
        os.environ.pop(key, None)


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def tp(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def spans(exporter, name=None):
    out = exporter.get_finished_spans()
    return [s for s in out if name is None or s.name == name]


def one(exporter, name):
    found = spans(exporter, name)
    assert len(found) == 1, (name, [s.name for s in spans(exporter)])
    return found[0]


def names(exporter):
    return [s.name for s in spans(exporter)]


def scenario(tp, **opts):
    """Scenario B: ot-1, add Start, add Foo, remove Foo, add Bar {id: x}, dispose."""
    mach = am.Machine(SCHEMA, id="ot-1")
    tracer = bind_otel(mach, tracer_provider=tp, **opts)
    mach.add1("Start")
    mach.add1("Foo")
    mach.remove1("Foo")
    mach.add1("Bar", {"id": "x"})
    mach.dispose()
    return mach, tracer


# ---------------------------------------------------------------------------------------
# scenarios 35 and 37
# ---------------------------------------------------------------------------------------


def test_scenario_35_tx_span_attributes(tp, exporter):
    scenario(tp, transitions=True, args=True)
    foo = one(exporter, "0: [add] Foo")
    a = foo.attributes
    assert a["mutation"] == "0: [add] Foo"
    assert a["time_before"] == 1
    assert a["time_after"] == 2
    assert a["states_diff"] == "+Foo"
    assert a["accepted"] is True
    assert a["auto"] is False
    assert isinstance(a["tx_id"], str) and a["tx_id"] == "ot-1:2"
    assert a["steps_count"] > 0
    bar = one(exporter, "0: [add] Bar")
    assert bar.attributes["args.id"] == "x"
    rm = one(exporter, "0: [remove] Foo")
    assert rm.attributes["states_diff"] == "-Foo"
    assert rm.attributes["time_before"] == 2 and rm.attributes["time_after"] == 3


def test_scenario_37_exception_and_health(tp, exporter):
    mach = am.Machine(SCHEMA, id="ot-1")
    bind_otel(mach, tracer_provider=tp, transitions=True)
    mach.add1("Start")
    mach.add_err(ValueError("boom"))
    err = one(exporter, "!0: [add] Exception")
    assert "boom" in err.attributes["error"]
    assert err.status.status_code is StatusCode.ERROR
    mach.set_schema({**SCHEMA, "Healthcheck": {"multi": True}})
    before = len(spans(exporter))
    mach.add1("Healthcheck")
    assert mach.is1("Healthcheck")
    assert len(spans(exporter)) == before
    mach.dispose()
    assert not [n for n in names(exporter) if "Healthcheck" in n]


def test_scenario_37_skip_state(tp, exporter):
    scenario(tp, transitions=True, skip_states=["Foo"])
    assert not spans(exporter, "0:Foo")
    assert spans(exporter, "0: [add] Foo")
    assert spans(exporter, "0:Bar")


@pytest.mark.parametrize("env", [False, True])
def test_scenario_37_rpc_submachine_skipped(tp, exporter, monkeypatch, env):
    if env:
        monkeypatch.setenv("AM_RPC_DBG", "1")
    mach = am.Machine(SCHEMA, id="ot-1")
    bind_otel(mach, tracer_provider=tp, transitions=True)
    child = am.Machine(SCHEMA, id="ot-rpc", parent=mach, tags=["rpc-client"])
    child.add1("Start")
    relay = am.Machine(SCHEMA, id="ot-relay", parent=mach, tags=["relay"])
    relay.add1("Start")
    got = [n for n in names(exporter) if n.startswith(("mach:1", "1:", "mach:2", "2:"))]
    if env:
        assert "mach:1:ot-rpc" in got and "1: [add] Start" in got and "mach:2:ot-relay" in got
    else:
        assert got == []
        assert all(not isinstance(t, OtelTracer) for t in child.tracers)


def test_rpc_submachine_traced_with_rpc_dbg(tp, exporter):
    mach = am.Machine(SCHEMA, id="ot-1")
    bind_otel(mach, tracer_provider=tp, rpc_dbg=True)
    am.Machine(SCHEMA, id="ot-rpc", parent=mach, tags=["rpc-server"]).add1("Start")
    assert spans(exporter, "mach:1:ot-rpc") and spans(exporter, "1:states")


# ---------------------------------------------------------------------------------------
# the span tree
# ---------------------------------------------------------------------------------------


def test_span_tree(tp, exporter):
    scenario(tp, transitions=True)
    root = one(exporter, "root")
    assert root.parent is None
    assert os.environ["AM_OTEL_TRACE_ID"] == f"{root.context.trace_id:032x}"
    assert os.environ["AM_OTEL_SPAN_ID"] == f"{root.context.span_id:016x}"
    mach = one(exporter, "mach:0:ot-1")
    assert mach.parent.span_id == root.context.span_id
    assert mach.attributes["id"] == "ot-1"
    states = one(exporter, "0:states")
    txs = one(exporter, "0:transitions")
    for group in (states, txs):
        assert group.parent.span_id == mach.context.span_id
        assert group.attributes["mach_id"] == "ot-1"
    # one trace
    assert {s.context.trace_id for s in spans(exporter)} == {root.context.trace_id}
    # a state name group (ended at once) and its instances
    foo = spans(exporter, "0:Foo")
    groups = [s for s in foo if s.parent.span_id == states.context.span_id]
    assert len(groups) == 1
    inst = [s for s in foo if s.parent.span_id == groups[0].context.span_id]
    assert len(inst) == 1
    assert inst[0].attributes["tx_id"] == "ot-1:2"
    assert [e.name for e in inst[0].events] == ["[add] Foo"]
    # the instance lasts from add Foo to remove Foo
    add_foo, rm_foo = one(exporter, "0: [add] Foo"), one(exporter, "0: [remove] Foo")
    assert add_foo.start_time <= inst[0].start_time <= inst[0].end_time <= rm_foo.end_time
    for s in spans(exporter):
        if s.name.startswith("0: ["):
            assert s.parent.span_id == txs.context.span_id
    # dispose ended Start and Bar (removing Start is traced too)
    assert spans(exporter, "0: [remove] Start")
    assert len([s for s in spans(exporter, "0:Bar") if s.attributes.get("tx_id")]) == 1


def test_no_transitions_by_default(tp, exporter):
    scenario(tp)
    got = names(exporter)
    assert "0:transitions" not in got
    assert not [n for n in got if n.startswith("0: [")]
    assert "0:Foo" in got and "0:Start" in got and "0:states" in got


def test_env_parent_is_joined(tp, exporter, monkeypatch):
    monkeypatch.setenv("AM_OTEL_TRACE_ID", "0af7651916cd43dd8448eb211c80319c")
    monkeypatch.setenv("AM_OTEL_SPAN_ID", "b7ad6b7169203331")
    scenario(tp)
    assert not spans(exporter, "root")
    mach = one(exporter, "mach:0:ot-1")
    assert mach.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert mach.parent.span_id == 0xB7AD6B7169203331
    assert mach.parent.is_remote


def test_bad_env_parent_makes_a_root(tp, exporter, monkeypatch):
    monkeypatch.setenv("AM_OTEL_TRACE_ID", "nothex")
    monkeypatch.setenv("AM_OTEL_SPAN_ID", "b7ad6b7169203331")
    scenario(tp)
    root = one(exporter, "root")
    assert os.environ["AM_OTEL_TRACE_ID"] == f"{root.context.trace_id:032x}"


def test_multi_reactivation_adds_events(tp, exporter):
    mach = am.Machine({"M": {"multi": True}, "Other": {}}, id="mu")
    bind_otel(mach, tracer_provider=tp, transitions=True)
    mach.add1("M")
    mach.add1("M", {"id": "2"})
    mach.add1("M")
    assert not [s for s in spans(exporter, "0:M [M]") if s.attributes.get("tx_id")]
    mach.remove1("M")
    inst = [s for s in spans(exporter, "0:M [M]") if s.attributes.get("tx_id")]
    assert len(inst) == 1
    assert [e.name for e in inst[0].events] == ["[add] M"] * 3
    adds = spans(exporter, "0: [add] M")
    assert [s.attributes["states_diff"] for s in adds] == ["+M"] * 3
    # every add links to the instance span
    for s in adds:
        assert [link.context.span_id for link in s.links] == [inst[0].context.span_id]


def test_canceled_tx(tp, exporter):
    mach = am.Machine(SCHEMA, id="ot-1")
    bind_otel(mach, tracer_provider=tp, transitions=True)
    assert mach.add1("Foo") == am.Result.CANCELED
    span = one(exporter, "0: [add] Foo")
    assert span.attributes["accepted"] is False
    assert span.attributes["states_diff"] == ""
    assert span.attributes["time_after"] == span.attributes["time_before"] == 0
    assert not spans(exporter, "0:Foo")


def test_vetoed_tx_and_handler_events(tp, exporter):
    class H:
        def Foo_enter(self, e):
            return False

        def Bar_state(self, e):
            pass

    mach = am.Machine(SCHEMA, id="ot-1", handlers=H())
    bind_otel(mach, tracer_provider=tp, transitions=True)
    mach.add1("Start")
    mach.add1("Foo")
    foo = one(exporter, "0: [add] Foo")
    assert foo.attributes["accepted"] is False
    assert [e.name for e in foo.events] == ["Foo_enter"]
    assert foo.events[0].attributes["emitter"] == mach.handler_ids()[0]
    mach.add1("Bar")
    bar = one(exporter, "0: [add] Bar")
    assert [e.name for e in bar.events] == ["Bar_state"]


def test_skip_auto(tp, exporter):
    schema = {**SCHEMA, "Ready": {"auto": True, "require": ["Start"]}}
    for skip in (False, True):
        exporter.clear()
        mach = am.Machine(schema, id="ot-1")
        bind_otel(mach, tracer_provider=tp, transitions=True, skip_auto=skip)
        mach.add1("Start")
        assert mach.is1("Ready")
        auto = spans(exporter, "0: [add] Ready")
        if skip:
            assert auto == []
        else:
            assert auto[0].attributes["auto"] is True
        # the state itself is traced either way
        mach.dispose()
        assert len(spans(exporter, "0:Ready")) == 2


@pytest.mark.parametrize(
    ("opts", "traced"),
    [
        ({"allow_states": ["Bar"]}, {"Bar"}),
        ({"allow_states": ["ot-1:Bar", "other:Foo"]}, {"Bar"}),
        ({"allow_states": ["Foo", "Bar"], "skip_states": ["Foo"]}, {"Bar"}),
        ({"skip_states": ["ot-1:Start"]}, {"Foo", "Bar"}),
        ({"allow_re": r"^ot-1:(Foo|Bar)$"}, {"Foo", "Bar"}),
        ({"allow_re": r"Start", "skip_re": r"ot-1:Sta"}, set()),
        ({"skip_re": r":(Start|Foo)$"}, {"Bar"}),
        ({"allow_states": ["Start"], "allow_re": "Bar"}, {"Start", "Bar"}),
    ],
)
def test_allow_and_skip(tp, exporter, opts, traced):
    scenario(tp, transitions=True, **opts)
    got = {n.split(":", 1)[1] for n in names(exporter) if n[:2] == "0:" and n[2:] in SCHEMA}
    assert got == traced
    # transitions are traced regardless
    assert spans(exporter, "0: [add] Foo")


# ---------------------------------------------------------------------------------------
# submachines, links, dispose
# ---------------------------------------------------------------------------------------


def test_submachines_inherit(tp, exporter):
    mach = am.Machine(SCHEMA, id="ot-1")
    bind_otel(mach, tracer_provider=tp, transitions=True)
    child = am.Machine(SCHEMA, id="ot-2", parent=mach)
    grandchild = am.Machine(SCHEMA, id="ot-3", parent=child)
    child2 = am.Machine(SCHEMA, id="ot-4", parent=mach)
    for m in (mach, child, grandchild, child2):
        m.add1("Start")
    subs0 = one(exporter, "0:submachines")
    assert subs0.attributes["mach_id"] == "ot-1"
    assert subs0.parent.span_id == one(exporter, "mach:0:ot-1").context.span_id
    for name in ("mach:1:ot-2", "mach:3:ot-4"):
        assert one(exporter, name).parent.span_id == subs0.context.span_id
    subs1 = one(exporter, "1:submachines")
    assert one(exporter, "mach:2:ot-3").parent.span_id == subs1.context.span_id
    for i in (1, 2, 3):
        assert spans(exporter, f"{i}: [add] Start")
        assert spans(exporter, f"{i}:Start")
    # disposing the root ends its submachines' open spans too
    mach.dispose()
    inst = [s for s in spans(exporter) if s.name.endswith(":Start") and s.attributes.get("tx_id")]
    assert len(inst) == 4


def test_tracer_passed_to_constructor(tp, exporter):
    tracer = OtelTracer(tp, transitions=True)
    mach = am.Machine(SCHEMA, id="ot-c", tracers=[tracer])
    mach.add1("Start")
    assert spans(exporter, "mach:0:ot-c") and spans(exporter, "0: [add] Start")


def test_link_to_source_tx_event(tp, exporter):
    target = am.Machine({"Got": {}}, id="ot-b")

    class H:
        def Foo_state(self, e):
            target.add1("Got", event=e)

    mach = am.Machine(SCHEMA, id="ot-1", handlers=H())
    bind_otel(mach, tracer_provider=tp, transitions=True)
    # the same tracer also serves a second, unrelated machine
    tracer = next(t for t in mach.tracers if isinstance(t, OtelTracer))
    tracer.bind(target)
    mach.add1("Start")
    mach.add1("Foo")
    src = one(exporter, "0: [add] Foo")
    got = one(exporter, "1: [add] Got")
    assert src.context.span_id in [link.context.span_id for link in got.links]
    # an unrelated tx has no such link
    start = one(exporter, "0: [add] Start")
    assert start.context.span_id not in [
        link.context.span_id for s in spans(exporter) for link in s.links
    ]


def test_link_to_source_tx_pipe(tp, exporter):
    a = am.Machine(SCHEMA, id="ot-a")
    b = am.Machine(SCHEMA, id="ot-b", parent=a)
    bind_otel(a, tracer_provider=tp, transitions=True)
    b2 = am.Machine(SCHEMA, id="ot-c", parent=a)
    pipes.pipe_add(a, b2, "Start")
    a.add1("Start")
    assert b2.is1("Start")
    src = one(exporter, "0: [add] Start")
    piped = one(exporter, "1: [add] Start")
    assert [link.context.span_id for link in piped.links][0] == src.context.span_id
    assert b.tracers == []  # created before binding: not inherited


def test_links_to_state_instances(tp, exporter):
    scenario(tp, transitions=True)
    foo_inst = [s for s in spans(exporter, "0:Foo") if s.attributes.get("tx_id")][0]
    for tx in ("0: [add] Foo", "0: [remove] Foo"):
        links = [link.context.span_id for link in one(exporter, tx).links]
        assert links == [foo_inst.context.span_id]


def test_tx_history_is_bounded(tp, exporter):
    mach = am.Machine({"A": {}}, id="h")
    tracer = bind_otel(mach, tracer_provider=tp, transitions=True)
    for _ in range(400):
        mach.toggle1("A")
    hist = tracer._machs[id(mach)].tx_hist
    assert len(hist) == 300
    assert "h:400" in hist and "h:100" not in hist


def test_dispose_ends_spans_and_flushes(exporter):
    provider = TracerProvider()
    # a batch processor that would not export on its own for a minute
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=60_000, max_export_batch_size=2048)
    )
    try:
        mach = am.Machine(SCHEMA, id="ot-1")
        child = None
        bind_otel(mach, tracer_provider=provider, transitions=True)
        child = am.Machine({"X": {}}, id="ot-2", parent=mach)
        child.add1("X")
        mach.add1("Start")
        mach.add1("Bar")
        assert spans(exporter) == []
        child.dispose()  # ends the child's spans, no flush yet (the root lives)
        assert spans(exporter) == []
        mach.dispose()
        got = names(exporter)
        assert len([s for s in spans(exporter, "0:Bar") if s.attributes.get("tx_id")]) == 1
        assert len([s for s in spans(exporter, "1:X") if s.attributes.get("tx_id")]) == 1
        assert "0: [remove] Start" in got
        # nothing traced after the root is gone
        assert all(not isinstance(t, OtelTracer) for t in child.tracers + mach.tracers)
    finally:
        provider.shutdown()


def test_bind_late_opens_active_states(tp, exporter):
    mach = am.Machine(SCHEMA, id="ot-1")
    mach.add1("Start")
    bind_otel(mach, tracer_provider=tp)
    mach.remove1("Start")
    inst = [s for s in spans(exporter, "0:Start") if s.events]
    assert len(inst) == 1 and inst[0].events[0].name == "[bind]"


def test_close_is_idempotent(tp, exporter):
    mach = am.Machine(SCHEMA, id="ot-1")
    tracer = bind_otel(mach, tracer_provider=tp, transitions=True)
    mach.add1("Start")
    tracer.close()
    tracer.close()
    n = len(spans(exporter))
    mach.add1("Bar")
    assert len(spans(exporter)) == n
    assert tracer not in mach.tracers


async def test_trio_machine(tp, exporter):
    async with am.open_machine(SCHEMA, id="ot-t") as mach:
        bind_otel(mach, tracer_provider=tp, transitions=True)
        mach.add1("Start")
        mach.add1("Foo")
    assert spans(exporter, "0: [add] Foo")
    assert [s for s in spans(exporter, "0:Foo") if s.attributes.get("tx_id")]


# ---------------------------------------------------------------------------------------
# the env provider: a real OTLP/HTTP export
# ---------------------------------------------------------------------------------------


class _Collector(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.requests = []


class _CollectorHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        self.server.requests.append((self.path, req))
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    server = _Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_env_provider_exports_otlp_http(collector, monkeypatch):
    port = collector.server_address[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}/v1/traces")
    mach = am.Machine(SCHEMA, id="ot-1")
    tracer = bind_otel(mach, transitions=True, args=True, service="svc-otel")
    try:
        mach.add1("Start")
        mach.add1("Foo")
        mach.add1("Bar", {"id": "x"})
        mach.dispose()  # force-flushes
        deadline = time.monotonic() + 10
        found: dict[str, dict] = {}
        services = set()
        while time.monotonic() < deadline:
            for path, req in list(collector.requests):
                assert path == "/v1/traces"
                for rs in req.resource_spans:
                    for kv in rs.resource.attributes:
                        if kv.key == "service.name":
                            services.add(kv.value.string_value)
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            found[span.name] = {kv.key: kv.value for kv in span.attributes}
            if "0: [add] Bar" in found and "root" in found:
                break
            time.sleep(0.02)  # polling an external server with a deadline
        assert {"root", "mach:0:ot-1", "0:states", "0:Foo", "0: [add] Foo"} <= set(found)
        assert found["0: [add] Bar"]["args.id"].string_value == "x"
        assert found["0: [add] Foo"]["time_before"].int_value == 1
        assert services == {"svc-otel"}
    finally:
        tracer.provider.shutdown()


def test_env_provider_batches(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    provider = env_tracer_provider("svc")
    try:
        assert provider.resource.attributes["service.name"] == "svc"
        (proc,) = provider._active_span_processor._span_processors
        assert isinstance(proc, BatchSpanProcessor)
        batch = proc._batch_processor
        assert batch._max_export_batch_size == 50
        assert batch._schedule_delay == pytest.approx(0.1)
    finally:
        provider.shutdown()


def test_grpc_exporter_by_default(monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exp = _otlp_exporter()
    try:
        assert isinstance(exp, OTLPSpanExporter)
        assert exp._endpoint == "localhost:4317"
    finally:
        exp.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:9999")
    exp = _otlp_exporter()
    try:
        assert exp._endpoint == "collector:9999"
    finally:
        exp.shutdown()


def test_http_exporter_endpoint(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "127.0.0.1:4318/v1/traces")
    exp = _otlp_exporter()
    assert isinstance(exp, OTLPSpanExporter)
    assert exp._endpoint == "http://127.0.0.1:4318/v1/traces"
    exp.shutdown()


@pytest.mark.parametrize("proto", ["grpc", "http/protobuf"])
def test_missing_exporter_names_the_extra(monkeypatch, proto):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", proto)
    kind = "grpc" if proto == "grpc" else "http"
    monkeypatch.setitem(
        sys.modules, f"opentelemetry.exporter.otlp.proto.{kind}.trace_exporter", None
    )
    with pytest.raises(ImportError, match=r"trio_am\[otlp\]"):
        env_tracer_provider("svc")


def test_unknown_protocol(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        env_tracer_provider("svc")


# ---------------------------------------------------------------------------------------
# logs
# ---------------------------------------------------------------------------------------


@pytest.fixture
def logs():
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exp = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exp))
    yield provider, exp
    provider.shutdown()


def _records(exp):
    return [r.log_record for r in exp.get_finished_logs()]


def test_otel_logger(logs):
    from opentelemetry._logs import SeverityNumber

    provider, exp = logs
    mach = am.Machine(SCHEMA, id="ot-log", log_level=am.LogLevel.EVERYTHING)
    user: list[str] = []
    mach.set_logger(lambda level, text, m: user.append(text))
    bind_otel_logger(mach, provider, "svc-log")
    mach.log("hello %s", "world")
    mach.add1("Start")
    mach.add_err(ValueError("boom"))
    recs = _records(exp)
    bodies = [r.body for r in recs]
    # the user's sink still gets every line, the same ones
    assert bodies == user
    assert "[exter] hello world" in bodies
    assert "[state] +Start" in bodies
    by_body = {r.body: r for r in recs}
    ext = by_body["[exter] hello world"]
    assert ext.severity_number is SeverityNumber.INFO4
    assert ext.severity_text == "external"
    assert ext.attributes["asyncmachine.id"] == "ot-log"
    assert ext.attributes["service.name"] == "svc-log"
    state = by_body["[state] +Start"]
    assert (state.severity_number, state.severity_text) == (SeverityNumber.INFO3, "changes")
    ops = by_body["[add] Start"]
    assert ops.severity_number is SeverityNumber.INFO
    errs = [r for r in recs if r.body.startswith("[error")]
    assert errs and all(r.severity_number is SeverityNumber.ERROR for r in errs)
    levels = {r.severity_text: r.severity_number for r in recs}
    if "decisions" in levels:
        assert levels["decisions"] is SeverityNumber.TRACE4
    if "everything" in levels:
        assert levels["everything"] is SeverityNumber.TRACE
    assert not [b for b in bodies if b.startswith("[ot-lo")]


def test_otel_logger_keeps_stdlib_logging(logs, caplog):
    provider, exp = logs
    mach = am.Machine(SCHEMA, id="ot-std", log_level=am.LogLevel.CHANGES)
    bind_otel_logger(mach, provider, None)
    with caplog.at_level("DEBUG", logger="trio_am.machine"):
        mach.add1("Start")
    assert [r.body for r in _records(exp)] == ["[state] +Start"]
    assert "service.name" not in _records(exp)[0].attributes
    assert any("+Start" in r.getMessage() for r in caplog.records)
    # a sink set later does not stop the export
    mach.set_logger(lambda level, text, m: None)
    mach.add1("Bar")
    assert [r.body for r in _records(exp)] == ["[state] +Start", "[state] +Bar"]


def test_otel_logger_severities():
    from opentelemetry._logs import SeverityNumber

    from trio_am.telemetry.otel import _severities

    sev = _severities()
    assert sev[4] == (SeverityNumber.TRACE4, "decisions")
    assert sev[5] == (SeverityNumber.TRACE, "everything")


def test_machine_log_hook_sees_every_sink():
    """The core's ``machine_log`` tracer hook (used by bind_otel_logger)."""

    class Lines(am.TracerBase):
        def __init__(self):
            self.got = []

        def machine_log(self, mach, level, text):
            self.got.append((mach.id, level, text))

    mach = am.Machine(SCHEMA, id="ot-h", log_level=am.LogLevel.CHANGES)
    lines = Lines()
    mach.bind_tracer(lines)
    mach.add1("Start")
    sink = []
    mach.set_logger(lambda level, text, m: sink.append(text))
    mach.add1("Bar")
    mach.add1("Foo", {"id": "quiet"})  # CHANGES only: the [add] line is not logged
    assert lines.got == [
        ("ot-h", 2, "[state] +Start"),
        ("ot-h", 2, "[state] +Bar"),
        ("ot-h", 2, "[state] +Foo (id=quiet)"),
    ]
    assert sink == ["[state] +Bar", "[state] +Foo (id=quiet)"]
