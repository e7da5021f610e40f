"""``AM_*`` environment switches (tools.md §2.4, scenario 41): ``bind_env``."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

import trio_am as am
from trio_am.telemetry import env as am_env
from trio_am.telemetry.env import LOG_FLAG_NAMES, bind_env, close_env_servers, log_flags
from trio_am.telemetry.prometheus import MetricsTracer

SCHEMA = {
    "Start": {},
    "Foo": {"require": ["Start"]},
    "Healthcheck": {"multi": True},
}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without AM_*/OTEL_* variables and ends with no env servers."""
    for k in list(os.environ):
        if k.startswith(("AM_", "OTEL_")):
            monkeypatch.delenv(k)
    for k in ("AM_OTEL_TRACE_ID", "AM_OTEL_SPAN_ID"):
        # otel.py exports these for child processes: undo restores the original state
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    yield
    close_env_servers()


class FakeDbg:
    """Stands in for trio_am.telemetry.dbg (records bind_debugger calls)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str, dict[str, Any]]] = []

    def bind_debugger(self, mach: Any, addr: str, **kw: Any) -> object:
        self.calls.append((mach, addr, kw))
        return ("reporter", addr)


class FakeOtel:
    """Stands in for trio_am.telemetry.otel."""

    def __init__(self) -> None:
        self.traces: list[tuple[Any, Any, dict[str, Any]]] = []
        self.logs: list[tuple[Any, Any, str]] = []
        self.providers: list[tuple[str, str]] = []

    def env_tracer_provider(self, service: str) -> tuple[str, str]:
        self.providers.append(("trace", service))
        return ("tp", service)

    def env_logger_provider(self, service: str) -> tuple[str, str]:
        self.providers.append(("logs", service))
        return ("lp", service)

    def bind_otel(self, mach: Any, provider: Any, **kw: Any) -> str:
        self.traces.append((mach, provider, kw))
        return "otel-tracer"

    def bind_otel_logger(self, mach: Any, provider: Any, service: str) -> str:
        self.logs.append((mach, provider, service))
        return "otel-logger"


def _install(monkeypatch: pytest.MonkeyPatch, name: str, fake: object) -> None:
    mod = types.ModuleType(f"trio_am.telemetry.{name}")
    for attr in dir(fake):
        if not attr.startswith("_"):
            setattr(mod, attr, getattr(fake, attr))
    monkeypatch.setitem(sys.modules, f"trio_am.telemetry.{name}", mod)


@pytest.fixture
def fake_dbg(monkeypatch: pytest.MonkeyPatch) -> FakeDbg:
    fake = FakeDbg()
    _install(monkeypatch, "dbg", fake)
    return fake


@pytest.fixture
def fake_otel(monkeypatch: pytest.MonkeyPatch) -> FakeOtel:
    fake = FakeOtel()
    _install(monkeypatch, "otel", fake)
    monkeypatch.setattr(am_env, "_PROVIDERS", {})
    return fake


def mach(id: str = "env-1", **kw: Any) -> am.Machine:
    return am.Machine(SCHEMA, id=id, **kw)


# ------------------------------------------------------------------------ nothing
def test_nothing_set_binds_nothing(fake_dbg: FakeDbg) -> None:
    m = mach(log_level=3)
    b = bind_env(m)
    assert b.bound == [] and not b
    assert b.disabled is None
    assert m.tracers == []
    assert m.log_level == 3  # AM_LOG unset leaves the machine's level alone
    assert fake_dbg.calls == []


def test_test_runner_binds_nothing(monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg) -> None:
    monkeypatch.setenv("AM_TEST_RUNNER", "1")
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    monkeypatch.setenv("AM_LOG", "5")
    monkeypatch.setenv("AM_PROM_ADDR", "127.0.0.1:0")
    monkeypatch.setenv("AM_DEBUG", "1")
    m = mach()
    b = bind_env(m)
    assert b.disabled == "AM_TEST_RUNNER"
    assert b.bound == []
    assert fake_dbg.calls == []
    assert m.tracers == []
    assert m.log_level == 0


def test_test_runner_with_test_debug_binds(
    monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg
) -> None:
    monkeypatch.setenv("AM_TEST_RUNNER", "1")
    monkeypatch.setenv("AM_TEST_DEBUG", "1")
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    b = bind_env(mach())
    assert b.disabled is None
    assert [c[1] for c in fake_dbg.calls] == ["localhost:6831"]


def test_bind_env_is_idempotent(monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg) -> None:
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    m = mach()
    first = bind_env(m)
    assert bind_env(m) is first
    assert len(fake_dbg.calls) == 1


# ------------------------------------------------------------------------ debugger + AM_LOG
@pytest.mark.parametrize(
    ("value", "addr"),
    [
        ("1", "localhost:6831"),
        ("127.0.0.1:7000", "127.0.0.1:7000"),
        ("dbg.example:6831", "dbg.example:6831"),
    ],
)
def test_dbg_addr(
    monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg, value: str, addr: str
) -> None:
    monkeypatch.setenv("AM_DBG_ADDR", value)
    m = mach()
    b = bind_env(m)
    assert fake_dbg.calls == [(m, addr, {"buffer": None, "trace": True, "log_checks": False})]
    assert b.debugger == ("reporter", addr)
    assert b.debugger_addr == addr
    assert "debugger" in b.bound


def test_dbg_addr_file_and_options(
    monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg, tmp_path: Path
) -> None:
    monkeypatch.setenv("AM_DBG_ADDR", f"file:{tmp_path / 'out.amdbg'}")
    monkeypatch.setenv("AM_DBG_BUFFER", "50")
    monkeypatch.setenv("AM_DBG_NO_TRACE", "1")
    monkeypatch.setenv("AM_LOG_CHECKS", "true")
    m = mach()
    bind_env(m)
    assert fake_dbg.calls == [
        (m, f"file:{tmp_path / 'out.amdbg'}", {"buffer": 50, "trace": False, "log_checks": True})
    ]


def test_log_level_defaults_to_2_with_a_debugger(
    monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg
) -> None:
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    m = mach()
    assert bind_env(m).log_level == 2
    assert m.log_level == am.LogLevel.CHANGES
    # a higher level given to the machine is kept
    m2 = mach("env-2", log_level=4)
    assert bind_env(m2).log_level is None
    assert m2.log_level == 4


@pytest.mark.parametrize(("value", "level"), [("0", 0), ("4", 4), ("ops", 3), ("Everything", 5)])
def test_am_log_explicit(
    monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg, value: str, level: int
) -> None:
    monkeypatch.setenv("AM_LOG", value)
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    m = mach(log_level=1)
    assert bind_env(m).log_level == level
    assert m.log_level == level  # explicit AM_LOG wins, even 0 with a debugger


def test_am_log_without_debugger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_LOG", "2")
    m = mach()
    b = bind_env(m)
    assert b.bound == ["log_level"]
    assert m.log_level == 2


# ------------------------------------------------------------------------ bad values
@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AM_LOG", "abc"),
        ("AM_LOG", "6"),
        ("AM_LOG", "-1"),
        ("AM_DBG_ADDR", "nonsense"),
        ("AM_DBG_ADDR", "localhost:99999"),
        ("AM_DBG_ADDR", "localhost:0"),
        ("AM_DBG_ADDR", ":6831"),
        ("AM_DBG_ADDR", "file:"),
        ("AM_DBG_ADDR", "file:/nonexistent-dir-xyz/out.amdbg"),
        ("AM_DBG_BUFFER", "-5"),
        ("AM_DBG_BUFFER", "lots"),
        ("AM_DEBUG", "maybe"),
        ("AM_LOG_PRINT", "sure"),
        ("AM_LOG_FULL", "2x"),
        ("AM_LOG_FILE", "/nonexistent-dir-xyz"),
        ("AM_PROM_ADDR", "nope"),
        ("AM_PROM_ADDR", "127.0.0.1:port"),
        ("AM_OTEL_TRACE", "yes please"),
        ("AM_OTEL_TRACE_SKIP_STATES_RE", "(unclosed"),
        ("AM_OTEL_TRACE_ID", "xyz"),
        ("AM_OTEL_SPAN_ID", "0123"),
        ("AM_HEALTHCHECK", "often"),
    ],
)
def test_bad_values_raise_before_binding(
    monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg, var: str, value: str
) -> None:
    if var != "AM_DBG_ADDR":
        monkeypatch.setenv("AM_DBG_ADDR", "1")  # valid, but must not be bound
    monkeypatch.setenv(var, value)
    m = mach()
    with pytest.raises(ValueError, match=var):
        bind_env(m)
    assert fake_dbg.calls == []
    assert m.tracers == []
    assert m.log_level == 0


@pytest.mark.parametrize("value", ["", "0", "false", "OFF", "no"])
def test_flags_off(monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg, value: str) -> None:
    monkeypatch.setenv("AM_DBG_ADDR", value)
    monkeypatch.setenv("AM_DEBUG", value)
    monkeypatch.setenv("AM_TEST_RUNNER", value)
    monkeypatch.setenv("AM_LOG_PRINT", value)
    b = bind_env(mach())
    assert b.bound == [] and b.disabled is None
    assert fake_dbg.calls == []


# ------------------------------------------------------------------------ logging
def test_log_print_chains_the_sink(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AM_LOG", "2")
    monkeypatch.setenv("AM_LOG_PRINT", "1")
    m = mach("printer")
    got: list[tuple[int, str]] = []
    m.set_logger(lambda level, text, _m: got.append((level, text)))
    b = bind_env(m)
    assert b.log_print
    m.add1("Start")
    out = capsys.readouterr().out
    assert "[print] [state] +Start" in out
    assert got == [(2, "[state] +Start")]  # the previous sink still gets every line


def test_log_print_keeps_stdlib_logging(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AM_LOG", "2")
    monkeypatch.setenv("AM_LOG_PRINT", "yes")
    m = mach("stdlib")
    bind_env(m)
    with caplog.at_level("INFO", logger="trio_am.machine"):
        m.add1("Start")
    assert "[stdli] [state] +Start" in capsys.readouterr().out
    assert "[stdli] [state] +Start" in caplog.text


def test_log_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AM_LOG", "3")
    monkeypatch.setenv("AM_LOG_FILE", str(tmp_path))
    m = mach("svc/a b")
    b = bind_env(m)
    assert b.log_file == tmp_path / "svc_a_b.log"
    m.add1("Start")
    m.dispose()
    text = (tmp_path / "svc_a_b.log").read_text()
    assert "[svc/a] [add] Start" in text
    assert "[svc/a] [state] +Start" in text


def test_log_file_in_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AM_LOG", "2")
    monkeypatch.setenv("AM_LOG_FILE", "1")
    m = mach("cwd-mach")
    assert bind_env(m).log_file == tmp_path / "cwd-mach.log"
    m.add1("Start")
    m.dispose()
    assert "+Start" in (tmp_path / "cwd-mach.log").read_text()


def test_log_flags(monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg) -> None:
    monkeypatch.setenv("AM_LOG_STEPS", "1")
    monkeypatch.setenv("AM_LOG_WHEN", "1")
    m = mach()
    b = bind_env(m)
    assert b.log_flags == frozenset({"steps", "when"}) == log_flags(m)
    assert log_flags(mach("other")) == frozenset()
    monkeypatch.setenv("AM_LOG_FULL", "1")
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    m2 = mach("full")
    assert bind_env(m2).log_flags == frozenset(LOG_FLAG_NAMES)
    assert fake_dbg.calls[0][2]["log_checks"] is True


def test_log_args_shows_every_arg(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []
    plain = mach("plain", log_level=3)
    plain.set_logger(lambda _l, text, _m: lines.append(text))
    plain.add1("Start", {"color": "blue"})
    assert "[add] Start" in lines and not any("color" in t for t in lines)
    monkeypatch.setenv("AM_LOG_ARGS", "1")
    monkeypatch.setenv("AM_LOG", "3")
    m = mach("args")
    m.set_logger(lambda _l, text, _m: lines.append(text))
    bind_env(m)
    m.add1("Start", {"color": "blue", "long": "x" * 40})
    assert f"[add] Start (color=blue long={'x' * 17}...)" in lines


# ------------------------------------------------------------------------ AM_DEBUG
def test_am_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    class Boom:
        def Start_state(self, e: am.Event) -> None:
            raise RuntimeError("start broke")

    normal = mach("normal", handlers=Boom(), handler_timeout=1.0)
    bind_env(normal)
    normal.add1("Start")  # becomes the Exception state
    assert normal.is_err()

    monkeypatch.setenv("AM_DEBUG", "1")
    m = mach("dbg", handlers=Boom(), handler_timeout=1.0)
    b = bind_env(m)
    assert b.debug and "debug" in b.bound
    assert m._handler_timeout is None
    with pytest.raises(RuntimeError, match="start broke"):
        m.add1("Start")
    assert not m.is_err()


# ------------------------------------------------------------------------ metrics
def test_prom_addr_serves_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_PROM_ADDR", "127.0.0.1:0")
    m1, m2 = mach("prom-env-a"), mach("prom-env-b")
    b1, b2 = bind_env(m1), bind_env(m2)
    assert isinstance(b1.metrics, MetricsTracer)
    assert b1.metrics_server is not None
    assert b2.metrics_server is b1.metrics_server  # one server per process and address
    m1.add1("Start")
    with urllib.request.urlopen(b1.metrics_server.url, timeout=5) as resp:
        text = resp.read().decode()
    assert 'am_transitions_total{accepted="true",machine_id="prom-env-a"} 1.0' in text
    assert 'machine_id="prom-env-b"' in text


def test_push_url_needs_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_PROM_PUSH_URL", "http://127.0.0.1:9")
    b = bind_env(mach("push-nosvc"))
    assert b.metrics_pusher is None
    assert any("AM_SERVICE" in w for w in b.warnings)


def test_push_url_pushes(monkeypatch: pytest.MonkeyPatch) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    paths: list[str] = []
    arrived = threading.Event()

    class Gw(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            paths.append(self.path)
            self.send_response(200)
            self.end_headers()
            arrived.set()

        def log_message(self, *a: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Gw)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        monkeypatch.setattr(am_env, "PUSH_INTERVAL", 0.05)
        monkeypatch.setenv("AM_PROM_PUSH_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
        monkeypatch.setenv("AM_SERVICE", "My Service-1")
        b = bind_env(mach("push-svc"))
        assert b.metrics_pusher is not None and isinstance(b.metrics, MetricsTracer)
        assert arrived.wait(10)
        close_env_servers()
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join()
    assert paths[0] == "/metrics/job/my_service_1"


# ------------------------------------------------------------------------ OpenTelemetry
def test_otel_trace_without_service_binds_nothing(
    monkeypatch: pytest.MonkeyPatch, fake_otel: FakeOtel, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AM_OTEL_TRACE", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_TXS", "1")
    m = mach()
    b = bind_env(m)  # raises nothing
    assert b.otel is None and b.bound == []
    assert fake_otel.traces == [] and fake_otel.providers == []
    assert any("AM_SERVICE" in w for w in b.warnings)
    assert "AM_SERVICE" in caplog.text
    assert m.tracers == []


def test_otel_trace_options(monkeypatch: pytest.MonkeyPatch, fake_otel: FakeOtel) -> None:
    monkeypatch.setenv("AM_SERVICE", "svc")
    monkeypatch.setenv("AM_OTEL_TRACE", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_TXS", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_ARGS", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_NOAUTO", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_ALLOW_STATES", "Foo, env-1:Bar,")
    monkeypatch.setenv("AM_OTEL_TRACE_SKIP_STATES", "Foo")
    monkeypatch.setenv("AM_OTEL_TRACE_ALLOW_STATES_RE", "^env-.*")
    monkeypatch.setenv("AM_OTEL_TRACE_SKIP_STATES_RE", "Health")
    monkeypatch.setenv("AM_RPC_DBG", "1")
    m = mach()
    b = bind_env(m)
    assert b.otel == "otel-tracer"
    assert fake_otel.traces == [
        (
            m,
            ("tp", "svc"),
            {
                "transitions": True,
                "args": True,
                "skip_auto": True,
                "allow_states": ["Foo", "env-1:Bar"],
                "skip_states": ["Foo"],
                "allow_re": "^env-.*",
                "skip_re": "Health",
                "rpc_dbg": True,
                "service": "svc",
            },
        )
    ]
    # one provider per service, shared by machines
    bind_env(mach("env-2"))
    assert fake_otel.providers == [("trace", "svc")]
    assert len(fake_otel.traces) == 2


def test_otel_defaults(monkeypatch: pytest.MonkeyPatch, fake_otel: FakeOtel) -> None:
    monkeypatch.setenv("AM_SERVICE", "svc")
    monkeypatch.setenv("AM_OTEL_TRACE", "1")
    bind_env(mach())
    kw = fake_otel.traces[0][2]
    assert kw["transitions"] is False and kw["args"] is False and kw["skip_auto"] is False
    assert kw["allow_states"] == [] and kw["skip_states"] == []
    assert kw["allow_re"] is None and kw["skip_re"] is None and kw["rpc_dbg"] is False


def test_otel_logs(monkeypatch: pytest.MonkeyPatch, fake_otel: FakeOtel) -> None:
    monkeypatch.setenv("AM_OTEL_LOGS", "1")
    assert bind_env(mach("no-svc")).otel_logger is None
    monkeypatch.setenv("AM_SERVICE", "svc")
    m = mach()
    b = bind_env(m)
    assert b.otel_logger == "otel-logger" and b.otel is None
    assert fake_otel.logs == [(m, ("lp", "svc"), "svc")]


def test_otel_logs_own_provider(monkeypatch: pytest.MonkeyPatch, fake_otel: FakeOtel) -> None:
    """Without an env_logger_provider in otel.py, bind_env builds an OTLP LoggerProvider."""
    from opentelemetry.sdk._logs import LoggerProvider

    monkeypatch.delattr(sys.modules["trio_am.telemetry.otel"], "env_logger_provider")
    monkeypatch.setenv("AM_OTEL_LOGS", "1")
    monkeypatch.setenv("AM_SERVICE", "svc-logs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    m = mach()
    bind_env(m)
    (_, provider, service) = fake_otel.logs[0]
    try:
        assert isinstance(provider, LoggerProvider)
        assert provider.resource.attributes["service.name"] == "svc-logs" == service
    finally:
        provider.shutdown()


# ------------------------------------------------------------------------ healthcheck
async def test_healthcheck_in_the_machines_nursery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(am_env, "HEALTHCHECK_INTERVAL", 0.01)
    monkeypatch.setenv("AM_HEALTHCHECK", "1")
    async with am.open_machine(SCHEMA, id="hc") as m:
        assert bind_env(m).healthcheck
        with trio.fail_after(5):
            await m.when_time1("Healthcheck", 3)  # two activations
    assert m.disposed


async def test_healthcheck_without_a_nursery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(am_env, "HEALTHCHECK_INTERVAL", 0.01)
    monkeypatch.setenv("AM_HEALTHCHECK", "1")
    m = mach("hc-sys")
    assert bind_env(m).healthcheck  # a Trio system task
    with trio.fail_after(5):
        await m.when_time1("Healthcheck", 1)
    m.dispose()


def test_healthcheck_needs_trio_and_the_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_HEALTHCHECK", "1")
    b = bind_env(mach("hc-sync"))
    assert not b.healthcheck and any("Trio" in w for w in b.warnings)
    b2 = bind_env(am.Machine({"Start": {}}, id="hc-none"))
    assert not b2.healthcheck and any("Healthcheck" in w for w in b2.warnings)


# ------------------------------------------------------------------------ misc
def test_hostname_and_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AM_HOSTNAME", "box-1")
    monkeypatch.setenv("AM_LOKI_ADDR", "localhost:3100")
    monkeypatch.setenv("AM_FOO_UNKNOWN", "x")
    b = bind_env(mach())
    assert b.hostname == "box-1" == am_env.hostname()
    assert b.ignored == ["AM_FOO_UNKNOWN", "AM_LOKI_ADDR"]
    monkeypatch.delenv("AM_HOSTNAME")
    assert am_env.hostname() == socket.gethostname()


def test_lazy_export() -> None:
    from trio_am import telemetry

    assert telemetry.bind_env is bind_env


# ------------------------------------------------------------------------ scenario 41
def _frames(data: bytes) -> list[list[Any]]:
    out = []
    while len(data) >= 4:
        (n,) = struct.unpack(">I", data[:4])
        if len(data) < 4 + n:
            break
        out.append(msgpack.unpackb(data[4 : 4 + n], raw=False))
        data = data[4 + n :]
    return out


FX_SCRIPT = textwrap.dedent(
    """
    import trio_am as am
    from trio_am.telemetry import bind_env

    mach = am.Machine({"Start": {}, "Foo": {"require": ["Start"]}}, id="fx-a", tags=["fixture"])
    b = bind_env(mach)
    print("bound", sorted(b.bound), flush=True)
    mach.add1("Start")
    mach.add1("Foo")
    mach.dispose()
    """
)


def test_scenario_41_dbg_addr_1_reaches_localhost_6831() -> None:
    """AM_DBG_ADDR=1 (and nothing else) reports to a debugger on localhost:6831."""
    srv = socket.socket()
    try:
        srv.bind(("127.0.0.1", 6831))
    except OSError as exc:
        srv.close()
        pytest.skip(f"localhost:6831 is busy ({exc}); cannot host the fake debugger")
    srv.listen(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AM_", "OTEL_"))}
    env["AM_DBG_ADDR"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", FX_SCRIPT],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    data = b""
    conn = None
    try:
        srv.settimeout(0.1)
        deadline = time.monotonic() + 20
        while conn is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue  # polling the subprocess with a deadline
        if conn is None:
            out, err = proc.communicate(timeout=20)
            pytest.fail(f"no connection to localhost:6831; fx said:\n{out.decode()}{err.decode()}")
        with conn:
            conn.settimeout(20)
            while time.monotonic() < deadline:
                chunk = conn.recv(65536)
                if not chunk:
                    break  # the reporter said bye and closed
                data += chunk
                if "bye" in [f[0] for f in _frames(data)]:
                    break
        out, err = proc.communicate(timeout=20)
    finally:
        srv.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "bound ['debugger', 'log_level']" in out.decode()
    msgs = _frames(data)
    assert msgs and msgs[0][0] == "hello"
    schemas = [m for m in msgs if m[0] == "schema"]
    assert schemas and schemas[0][1] == "fx-a"
    txs = [m for m in msgs if m[0] == "tx" and m[1] == "fx-a"]
    assert len(txs) >= 2


def test_real_otel_through_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real otel.py with the env's options (scenario 37: skip Foo via the env)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from trio_am.telemetry import otel

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(otel, "env_tracer_provider", lambda service: tp)
    monkeypatch.setattr(am_env, "_PROVIDERS", {})
    monkeypatch.setenv("AM_SERVICE", "svc")
    monkeypatch.setenv("AM_OTEL_TRACE", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_TXS", "1")
    monkeypatch.setenv("AM_OTEL_TRACE_SKIP_STATES", "Foo")
    m = mach("ot-env")
    b = bind_env(m)
    assert b.otel is not None and b.otel in m.tracers
    m.add1("Start")
    m.add1("Foo")
    m.dispose()
    names = {s.name for s in exporter.get_finished_spans()}
    assert "0: [add] Foo" in names
    assert "0:Start" in names
    assert "0:Foo" not in names
    tp.shutdown()


def test_prom_addr_busy_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        monkeypatch.setenv("AM_PROM_ADDR", f"127.0.0.1:{busy.getsockname()[1]}")
        b = bind_env(mach("prom-busy"))
    assert isinstance(b.metrics, MetricsTracer)  # metrics still collected
    assert b.metrics_server is None
    assert any("cannot serve metrics" in w for w in b.warnings)


def test_test_runner_any_marker(monkeypatch: pytest.MonkeyPatch, fake_dbg: FakeDbg) -> None:
    monkeypatch.setenv("AM_TEST_RUNNER", "pytest")
    monkeypatch.setenv("AM_DBG_ADDR", "1")
    assert bind_env(mach()).disabled == "AM_TEST_RUNNER"
    assert fake_dbg.calls == []
