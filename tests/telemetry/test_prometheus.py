"""Prometheus metrics (tools.md §2.3): values after known mutations, serving, pushing, and
scenario 39 against a real ``prometheus`` binary."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import trio_am as am
from trio_am.telemetry.prometheus import (
    MetricsTracer,
    bind_metrics,
    serve_metrics,
    start_push,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fx import SCHEMA, FxHandlers  # noqa: E402  (the FX fixture's schema)


def fx(id: str = "fx-a", **kw: object) -> am.Machine:
    return am.Machine(SCHEMA, id=id, handlers=FxHandlers(), **kw)  # type: ignore[arg-type]


def run_fx(mach: am.Machine) -> None:
    """The FX mutations of scenarios-tools.md "Conventions" (8 transitions, #5 canceled)."""
    mach.add1("Start")  # 1, + auto Ready (2)
    mach.add1("Bar")  # 3: +Bar +Foo
    mach.add1("Baz")  # 4: +Baz -Foo
    assert mach.add1("Foo") == am.Result.CANCELED  # 5: vetoed by Foo_enter
    mach.add1("Healthcheck")  # 6
    mach.remove1("Baz")  # 7
    mach.add1("Foo")  # 8


def val(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


class StepsRecorder(am.TracerBase):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def transition_end(self, tx: am.Transition) -> None:
        if tx.is_accepted and not tx.is_check:
            self.steps.append(len(tx.steps or ()))


@pytest.fixture
def reg() -> CollectorRegistry:
    return CollectorRegistry()


# ------------------------------------------------------------------------ values
def test_fx_counters(reg: CollectorRegistry) -> None:
    mach = fx()
    rec = StepsRecorder()
    mach.bind_tracer(rec)
    tracer = bind_metrics(mach, reg)
    assert isinstance(tracer, MetricsTracer)
    assert tracer in mach.tracers
    run_fx(mach)
    m = {"machine_id": "fx-a"}
    assert val(reg, "am_transitions_total", accepted="true", **m) == 7
    assert val(reg, "am_transitions_total", accepted="false", **m) == 1
    # added: Start Ready Bar Foo Baz Healthcheck Foo; removed: Foo Baz
    assert val(reg, "am_states_added_total", **m) == 7
    assert val(reg, "am_states_removed_total", **m) == 2
    assert val(reg, "am_exceptions_total", **m) == 0
    acts = {
        s: val(reg, "am_state_activations_total", state=s, **m)
        for s in ("Start", "Ready", "Foo", "Bar", "Baz", "Healthcheck")
    }
    assert acts == {"Start": 1, "Ready": 1, "Foo": 2, "Bar": 1, "Baz": 1, "Healthcheck": 1}
    assert val(reg, "am_state_activations_total", state="Exception", **m) is None
    # ticks of accepted txs add up to the machine time (the canceled one added none)
    assert val(reg, "am_transition_ticks_sum", **m) == sum(mach.time()) == 9
    assert val(reg, "am_transition_ticks_count", **m) == 7
    # the duration histogram sees every transition, canceled ones too
    assert val(reg, "am_transition_duration_seconds_count", **m) == 8
    assert val(reg, "am_transition_duration_seconds_bucket", le="+Inf", **m) == 8
    assert val(reg, "am_transition_duration_seconds_sum", **m) > 0  # type: ignore[operator]
    # Foo_enter ran in txs 3 and 8 (Baz's relation cancels tx 5 before negotiation)
    assert val(reg, "am_transition_handlers_sum", **m) == 2
    assert val(reg, "am_handler_duration_seconds_count", **m) == 2
    assert val(reg, "am_transition_steps_count", **m) == 7
    assert val(reg, "am_transition_steps_sum", **m) == sum(rec.steps) > 7
    # touched per accepted tx: Start | Ready | Bar Foo | Baz Foo | Healthcheck | Baz | Foo
    assert val(reg, "am_states_touched_total", **m) == 9


def test_touched_counts_distinct_states_per_tx(reg: CollectorRegistry) -> None:
    mach = am.Machine({"A": {}, "B": {}, "C": {"add": ["A"]}}, id="t")
    MetricsTracer.wants_steps = False
    try:
        bind_metrics(mach, reg)
        mach.add(["A", "B"])  # A B
        mach.add1("C")  # C (A already active: called C, no other change)
        mach.remove(["A", "B"])  # A B
    finally:
        MetricsTracer.wants_steps = True
    assert val(reg, "am_states_touched_total", machine_id="t") == 5
    assert val(reg, "am_transition_steps_sum", machine_id="t") == 0


def test_vetoed_tx(reg: CollectorRegistry) -> None:
    class Veto:
        def Foo_enter(self, e: am.Event) -> bool:
            return False

    mach = am.Machine(SCHEMA, id="v", handlers=Veto())
    bind_metrics(mach, reg)
    mach.add1("Start")
    assert mach.add1("Foo") == am.Result.CANCELED
    m = {"machine_id": "v"}
    assert val(reg, "am_transitions_total", accepted="false", **m) == 1
    assert val(reg, "am_handler_duration_seconds_count", **m) == 1  # the veto was timed
    assert val(reg, "am_transition_handlers_sum", **m) == 0  # canceled txs: not counted
    assert val(reg, "am_state_activations_total", state="Foo", **m) is None
    mach.add1("Healthcheck")
    assert val(reg, "am_transition_handlers_sum", **m) == 0  # no leak into the next tx


def test_multi_reactivation_counts(reg: CollectorRegistry) -> None:
    mach = fx()
    bind_metrics(mach, reg)
    for _ in range(3):
        mach.add1("Healthcheck")
    m = {"machine_id": "fx-a"}
    assert val(reg, "am_state_activations_total", state="Healthcheck", **m) == 3
    assert val(reg, "am_states_added_total", **m) == 1  # only the first made it active
    assert mach.tick("Healthcheck") == 5


def test_exceptions_and_raising_handlers(reg: CollectorRegistry) -> None:
    class Boom:
        def Bar_state(self, e: am.Event) -> None:
            raise RuntimeError("bar broke")

    mach = am.Machine(SCHEMA, id="ex", handlers=Boom())
    bind_metrics(mach, reg)
    mach.add_err(ValueError("boom"))
    mach.add_err(ValueError("boom again"))  # Exception is multi: re-activated
    mach.add1("Start")
    mach.add1("Bar")  # raises in Bar_state: rolled back, Exception added
    assert mach.is1("Exception") and mach.not1("Bar")
    assert val(reg, "am_exceptions_total", machine_id="ex") == 3
    assert val(reg, "am_state_activations_total", machine_id="ex", state="Exception") == 3


def test_checks_are_not_transitions(reg: CollectorRegistry) -> None:
    mach = fx()
    bind_metrics(mach, reg)
    mach.add1("Start")
    m = {"machine_id": "fx-a"}
    handlers = val(reg, "am_handler_duration_seconds_count", **m)
    assert mach.can_add1("Bar") == am.Result.EXECUTED  # runs Foo_enter as a dry run
    assert mach.can_remove1("Start") == am.Result.EXECUTED
    assert val(reg, "am_transitions_total", accepted="true", **m) == 2
    assert val(reg, "am_transitions_total", accepted="false", **m) == 0
    assert val(reg, "am_transition_duration_seconds_count", **m) == 2
    assert val(reg, "am_transition_handlers_count", **m) == 2
    assert val(reg, "am_transition_handlers_sum", **m) == 0
    # the dry run's handler call is timed, but not counted into the next tx
    assert val(reg, "am_handler_duration_seconds_count", **m) == handlers + 1  # type: ignore[operator]
    mach.add1("Healthcheck")
    assert val(reg, "am_transition_handlers_sum", **m) == 0


def test_gauges(reg: CollectorRegistry) -> None:
    mach = fx()
    bind_metrics(mach, reg)
    m = {"machine_id": "fx-a"}
    # Start Ready Foo Bar Baz Healthcheck Exception
    assert val(reg, "am_states", **m) == 7
    # Ready: require Start; Foo: require Start; Bar: add Foo; Baz: remove Foo
    assert val(reg, "am_relations", **m) == 4
    assert val(reg, "am_ref_states", **m) == 2  # Start, Foo
    assert val(reg, "am_states_active", **m) == 0
    assert val(reg, "am_states_inactive", **m) == 7
    mach.add(["Start", "Bar"])
    assert val(reg, "am_states_active", **m) == 4  # Start Ready Bar Foo
    assert val(reg, "am_states_inactive", **m) == 3
    mach.set_schema({**SCHEMA, "Extra": {"require": ["Bar"]}})
    assert val(reg, "am_states", **m) == 8
    assert val(reg, "am_relations", **m) == 5
    assert val(reg, "am_ref_states", **m) == 3


def test_queue_length_at_last_tx_start(reg: CollectorRegistry) -> None:
    seen: dict[str, float | None] = {}

    class Queuer:
        def Start_state(self, e: am.Event) -> None:
            e.machine.add1("Foo")
            e.machine.add1("Bar")
            e.machine.add1("Healthcheck")

        def Foo_state(self, e: am.Event) -> None:
            seen["Foo"] = val(reg, "am_queue_length", machine_id="q")

        def Bar_state(self, e: am.Event) -> None:
            seen["Bar"] = val(reg, "am_queue_length", machine_id="q")

    schema = {"Start": {}, "Foo": {}, "Bar": {}, "Healthcheck": {"multi": True}}
    mach = am.Machine(schema, id="q", handlers=Queuer())
    bind_metrics(mach, reg)
    mach.add1("Start")
    # Foo's handler runs after tx Start ended (queue empty when it started), Bar's after
    # tx Foo, which started with two mutations still waiting (Bar, Healthcheck)
    assert seen == {"Foo": 0, "Bar": 2}
    assert val(reg, "am_queue_length", machine_id="q") == 0


def test_many_machines_one_registry(reg: CollectorRegistry) -> None:
    machines = [fx(f"m-{i}") for i in range(5)]
    for mach in machines:
        bind_metrics(mach, reg)
        assert bind_metrics(mach, reg) is bind_metrics(mach, reg)  # no-op rebinding
        mach.add1("Start")
    for i in range(5):
        assert val(reg, "am_transitions_total", machine_id=f"m-{i}", accepted="true") == 2
    # a second registry is independent
    other = CollectorRegistry()
    t2 = bind_metrics(machines[0], other)
    assert t2 is not bind_metrics(machines[0], reg)
    machines[0].add1("Healthcheck")
    assert val(other, "am_transitions_total", machine_id="m-0", accepted="true") == 1
    assert val(reg, "am_transitions_total", machine_id="m-0", accepted="true") == 3


def test_default_registry_shared() -> None:
    from prometheus_client import REGISTRY

    a, b = fx("dflt-a"), fx("dflt-b")
    bind_metrics(a)
    bind_metrics(b)  # must not raise a duplicate-registration error
    a.add1("Start")
    assert (
        REGISTRY.get_sample_value(
            "am_transitions_total", {"machine_id": "dflt-a", "accepted": "true"}
        )
        == 2
    )
    assert (
        REGISTRY.get_sample_value(
            "am_transitions_total", {"machine_id": "dflt-b", "accepted": "true"}
        )
        == 0
    )


def test_recreated_machine_continues_series(reg: CollectorRegistry) -> None:
    first = fx("again")
    bind_metrics(first, reg)
    first.add1("Start")
    first.dispose()
    second = fx("again")
    bind_metrics(second, reg)
    second.add1("Start")
    assert val(reg, "am_transitions_total", machine_id="again", accepted="true") >= 4  # type: ignore[operator]
    assert val(reg, "am_states_active", machine_id="again") == 2


def test_submachines_inherit_except_rpc(reg: CollectorRegistry) -> None:
    parent = fx("parent")
    bind_metrics(parent, reg)
    child = am.Machine({"Start": {}}, id="child", parent=parent)
    rpc = am.Machine({"Start": {}}, id="rc-x", parent=parent, tags=("rpc-client",))
    grandchild = am.Machine({"Start": {}}, id="grand", parent=child)
    for mach in (child, rpc, grandchild):
        mach.add1("Start")
    assert any(isinstance(t, MetricsTracer) for t in child.tracers)
    assert not any(isinstance(t, MetricsTracer) for t in rpc.tracers)
    assert val(reg, "am_transitions_total", machine_id="child", accepted="true") == 1
    assert val(reg, "am_transitions_total", machine_id="grand", accepted="true") == 1
    assert val(reg, "am_transitions_total", machine_id="rc-x", accepted="true") is None


def test_registry_names_conflict_clearly(reg: CollectorRegistry) -> None:
    from prometheus_client import Counter

    bind_metrics(fx(), reg)
    with pytest.raises(ValueError, match="am_transitions"):
        Counter("am_transitions", "clash", registry=reg)


# ------------------------------------------------------------------------ HTTP
def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        err.close()
        return err.code, ""


def test_serve_metrics_scrape(reg: CollectorRegistry) -> None:
    mach = fx()
    bind_metrics(mach, reg)
    run_fx(mach)
    with serve_metrics("127.0.0.1:0", reg) as srv:
        assert srv.port > 0
        assert srv.url == f"http://127.0.0.1:{srv.port}/metrics"
        status, text = get(srv.url)
        assert status == 200
        assert 'am_transitions_total{accepted="true",machine_id="fx-a"} 7.0' in text
        assert 'am_state_activations_total{machine_id="fx-a",state="Foo"} 2.0' in text
        assert "# TYPE am_transition_duration_seconds histogram" in text
        mach.add1("Healthcheck")  # live values
        assert 'accepted="true",machine_id="fx-a"} 8.0' in get(srv.url)[1]
        assert get(f"http://127.0.0.1:{srv.port}/nope")[0] == 404
        port = srv.port
    # closed: nothing listens there any more
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize("addr", ["nope", "127.0.0.1:http", "1.2.3.4:70000", ""])
def test_serve_metrics_bad_addr(addr: str) -> None:
    with pytest.raises(ValueError, match="metrics address"):
        serve_metrics(addr, CollectorRegistry())


class _Capture(BaseHTTPRequestHandler):
    hits: list[tuple[str, str, bytes]] = []
    event = threading.Event()

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).hits.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()
        type(self).event.set()

    do_POST = do_PUT

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Capture]]]:
    handler = type("Cap", (_Capture,), {"hits": [], "event": threading.Event()})
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()


def test_push_to_gateway(reg: CollectorRegistry, gateway: tuple[str, type[_Capture]]) -> None:
    url, cap = gateway
    mach = fx()
    bind_metrics(mach, reg)
    mach.add1("Start")
    pusher = start_push(url, "my_job", reg, interval=0.05)
    try:
        assert cap.event.wait(10), "no push arrived"
    finally:
        pusher.close()
    method, path, body = cap.hits[0]
    assert method == "PUT"
    assert path == "/metrics/job/my_job"
    assert b'am_transitions_total{accepted="true",machine_id="fx-a"} 2.0' in body
    assert pusher.pushes >= 1 and pusher.errors == 0


def test_push_errors_are_logged_not_raised(
    reg: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    pusher = start_push(f"http://127.0.0.1:{port}", "j", reg, interval=60)
    try:
        assert pusher.push() is False
    finally:
        pusher.close()
    assert pusher.errors == 1
    assert "pushing metrics" in caplog.text


# ------------------------------------------------------------------------ scenario 39
PROMETHEUS = shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the `prometheus` binary is not installed (CI installs the Debian package via .ci/run)",
)
def test_real_prometheus_scrapes_fx(tmp_path: Path) -> None:
    """Scenario 39: a real Prometheus scraping serve_metrics every 1 s sees fx-a."""
    assert PROMETHEUS is not None
    reg = CollectorRegistry()
    mach = fx()
    bind_metrics(mach, reg)
    run_fx(mach)
    with serve_metrics("127.0.0.1:0", reg) as srv:
        web = _free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: trio_am\n"
            "    scrape_interval: 1s\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{srv.port}']\n"
        )
        log_path = tmp_path / "prometheus.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={cfg}",
                    f"--web.listen-address=127.0.0.1:{web}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                series = _wait_for_series(proc, web, log_path)
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    by_outcome = {s["metric"]["accepted"]: float(s["value"][1]) for s in series}
    assert by_outcome == {"true": 7.0, "false": 1.0}
    assert all(s["metric"]["job"] == "trio_am" for s in series)


def _wait_for_series(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> list[dict]:  # type: ignore[type-arg]
    url = f"http://127.0.0.1:{port}/api/v1/query?query=am_transitions_total"
    deadline = time.monotonic() + 20
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                data = json.load(resp)
        except (OSError, ValueError) as exc:  # not up yet
            last = repr(exc)
        else:
            last = json.dumps(data)[:500]
            series = [
                s
                for s in data.get("data", {}).get("result", [])
                if s["metric"].get("machine_id") == "fx-a"
            ]
            if len(series) == 2:
                return series
        time.sleep(0.1)  # polling a subprocess with a deadline
    pytest.fail(
        f"no am_transitions_total series for fx-a within 20 s; last answer: {last}\n"
        f"{log_path.read_text()[-3000:]}"
    )
