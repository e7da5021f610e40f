"""The debugger reporter (tools.md §1.7, §1.8) against a fake debugger that decodes frames.

The fake debugger is a plain thread per connection feeding a ``_wire.Decoder``; tests
wait on conditions with deadlines (``FakeDbg.wait``), never on fixed sleeps.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import trio_am as am
from trio_am.telemetry import _wire, bind_debugger
from trio_am.telemetry.dbg import LOG_IDLE, parse_dbg_addr

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fx import SCHEMA as FX_SCHEMA  # noqa: E402
from tests.support.fx import FxHandlers, run_fx  # noqa: E402

S, T = _wire.STEP_HANDLER, _wire.STEP_CANCEL


def wait_for(pred: Callable[[], Any], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``pred`` until true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ports handed out in this process: a reporter's link outlives its test, so a port that
# comes round again would greet the next test with the last one's machines
_USED_PORTS: set[int] = set()


def _bind_fresh(sock: socket.socket, port: int) -> int:
    if port:
        sock.bind(("127.0.0.1", port))
        return port
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _USED_PORTS:
            _USED_PORTS.add(port)
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no fresh port")


class FakeDbg:
    """A debugger stand-in: accepts connections, decodes every frame per connection."""

    def __init__(self, port: int = 0, *, stall: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = _bind_fresh(self.sock, port)
        self.sock.listen()
        self.addr = f"127.0.0.1:{self.port}"
        self.conns: list[list[list[Any]]] = []
        self.errors: list[Exception] = []
        self.stall = threading.Event() if stall else None
        self.lock = threading.Lock()
        self.live: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            msgs: list[list[Any]] = []
            with self.lock:
                self.conns.append(msgs)
                self.live.append(c)
            threading.Thread(target=self._read, args=(c, msgs), daemon=True).start()

    def _read(self, c: socket.socket, msgs: list[list[Any]]) -> None:
        if self.stall is not None:
            self.stall.wait()
        dec = _wire.Decoder()
        while True:
            try:
                b = c.recv(65536)
            except OSError:
                return
            if not b:
                return
            dec.feed(b)
            try:
                for m in dec.events():
                    with self.lock:
                        msgs.append(m)
            except _wire.WireError as e:  # the reporter sent a bad frame: a test failure
                self.errors.append(e)
                return

    def all(self) -> list[list[Any]]:
        with self.lock:
            return [m for conn in self.conns for m in conn]

    def kind(self, kind: str, mid: str | None = None) -> list[dict[str, Any]]:
        return [
            _wire.as_dict(m)
            for m in self.all()
            if m[0] == kind and (mid is None or (len(m) > 1 and m[1] == mid))
        ]

    def wait(self, pred: Callable[[], Any], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {[m[:2] for m in self.all()]}")
            time.sleep(0.01)
        assert not self.errors

    def drop_connections(self) -> None:
        with self.lock:
            for c in self.live:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self.live.clear()

    def close(self) -> None:
        self.drop_connections()
        self.sock.close()


@pytest.fixture
def fake() -> Iterator[FakeDbg]:
    f = FakeDbg()
    yield f
    f.close()


def free_port() -> int:
    """A fresh port nobody listens on (yet)."""
    with socket.socket() as s:
        return _bind_fresh(s, 0)


def fx_machine(mid: str = "fx-a", **kw: Any) -> am.Machine:
    return am.Machine(FX_SCHEMA, id=mid, handlers=FxHandlers(), tags=["fixture", "env:test"], **kw)


FINAL = {"Start": 1, "Ready": 1, "Foo": 3, "Bar": 1, "Baz": 2, "Healthcheck": 1, "Exception": 0}


# --------------------------------------------------------------------------- the records
def test_hello_then_schema_then_the_fx_records(fake: FakeDbg) -> None:
    mach = fx_machine(log_level=2)
    rep = bind_debugger(mach, fake.addr)
    assert rep.flush(10)  # connected: the greeting's schema shows the machine as new
    run_fx(mach)
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx", "fx-a")) == 8)
    msgs = fake.all()
    hello = _wire.as_dict(msgs[0])
    assert hello["kind"] == "hello" and hello["v"] == 1 and hello["lib"] == "trio_am"
    assert hello["pid"] == os.getpid() and isinstance(hello["t"], int)
    schema = _wire.as_dict(msgs[1])
    assert schema["kind"] == "schema" and schema["m"] == "fx-a" and schema["parent"] is None
    assert schema["tags"] == ["fixture", "env:test"]
    names = schema["names"]
    assert names == list(FINAL)
    assert schema["states"]["Ready"] == {"auto": True, "require": ["Start"]}
    assert schema["states"]["Bar"] == {"add": ["Foo"]}
    assert schema["states"]["Start"] == {}
    assert schema["states"]["Healthcheck"]["multi"] is True
    assert schema["time"] == [0] * 7

    txs = fake.kind("tx", "fx-a")
    assert [t["id"] for t in txs] == [f"fx-a:{i}" for i in range(1, 9)]
    called = [[names[i] for i in t["called"]] for t in txs]
    assert called == [["Start"], ["Ready"], ["Bar"], ["Baz"], ["Foo"], ["Healthcheck"], ["Baz"], ["Foo"]]  # fmt: skip
    assert [t["type"] for t in txs] == [0, 0, 0, 0, 0, 0, 1, 0]
    assert [t["flags"] & _wire.TX_FLAG_AUTO for t in txs] == [0, 1, 0, 0, 0, 0, 0, 0]
    accepted = [bool(t["flags"] & _wire.TX_FLAG_ACCEPTED) for t in txs]
    assert accepted == [True, True, True, True, False, True, True, True]
    # ticks: a chain from all zeros to the FX final time
    assert txs[0]["before"] == [0] * 7
    for prev, nxt in zip(txs, txs[1:], strict=False):
        assert nxt["before"] == prev["after"]
    assert txs[4]["after"] == txs[4]["before"]  # canceled: nothing changed
    assert dict(zip(names, txs[-1]["after"], strict=True)) == FINAL
    assert sum(txs[-1]["after"]) == 9
    # +Bar +Foo, then +Baz -Foo
    assert {names[i] for i in txs[2]["target"]} == {"Bar", "Foo", "Start", "Ready"}
    assert "Foo" not in [names[i] for i in txs[3]["target"]]
    # steps: called first; Bar adds Foo (a relation step); activations; handler timing
    add_bar = txs[2]["steps"]
    assert add_bar[0][:3] == [_wire.STEP_CALLED, -1, names.index("Bar")]
    rel = [s for s in add_bar if s[0] == _wire.STEP_RELATION]
    assert [names.index("Bar"), names.index("Foo"), _wire.REL_ADD] in [s[1:4] for s in rel]
    activated = {names[s[2]] for s in add_bar if s[0] == _wire.STEP_ACTIVATE}
    assert activated == {"Bar", "Foo"}
    handler = [s for s in add_bar if s[0] == S]
    assert handler and handler[0][5] == "Foo_enter" and handler[0][6] > 0
    # tx 5: add Foo while Baz (remove Foo) is active: the relation step, then cancel
    # (Foo_enter does not run; a handler veto is checked below)
    steps5 = txs[4]["steps"]
    assert steps5[0][:3] == [_wire.STEP_CALLED, -1, names.index("Foo")]
    rel5 = [names.index("Baz"), names.index("Foo"), _wire.REL_REMOVE]
    k = next(i for i, s in enumerate(steps5) if s[0] == _wire.STEP_RELATION and s[1:4] == rel5)
    assert steps5[k + 1][0] == T and steps5[-1][0] == T
    assert not any(s[0] in (S, _wire.STEP_ACTIVATE) for s in steps5)
    # the rest of the fields
    for i, t in enumerate(txs):
        assert t["t0"] <= t["t1"] and t["src"] is None and t["err"] is None
        assert t["args"] == {} and t["token"] is None and t["trace"] is None
        assert t["qlen"] == 0 and t["pre_log"] == []
        assert t["qtick"] >= t["mut_qtick"] >= 0, i
    assert [t["qtick"] for t in txs] == sorted(t["qtick"] for t in txs)
    # log entries: [level, text, ev] at level <= 2
    log1 = txs[0]["log"]
    assert [2, "[state] +Start", None] in log1
    assert all(e[0] <= 2 and e[2] is None for t in txs for e in t["log"])
    assert any("-Foo" in e[1] for e in txs[3]["log"])


def test_veto_is_a_handler_step_then_a_cancel_step(fake: FakeDbg) -> None:
    class Veto:
        def A_enter(self, e: am.Event) -> bool:
            return False

    mach = am.Machine({"A": {}}, id="veto", handlers=Veto())
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx", "veto")) == 1)
    tx = fake.kind("tx", "veto")[0]
    assert not tx["flags"] & _wire.TX_FLAG_ACCEPTED
    steps = tx["steps"]
    i = next(i for i, s in enumerate(steps) if s[0] == S)
    assert steps[i][5] == "A_enter"
    assert steps[i + 1][0] == T and steps[i + 1][5] == "A_enter"


def test_args_src_and_handler_errors(fake: FakeDbg) -> None:
    class H:
        def A_state(self, e: am.Event) -> None:
            e.machine.add1("C", event=e)

        def B_state(self, e: am.Event) -> None:
            raise RuntimeError("kaput")

    mach = am.Machine({"A": {}, "B": {}, "C": {}}, id="errs", handlers=H())
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A", {"id": "x1"})
    mach.add1("B")  # raises: this tx carries the error, Exception is added next
    mach.remove1("A")
    mach.add_err(ValueError("boom"))
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx", "errs")) >= 6)
    txs = {t["id"]: t for t in fake.kind("tx", "errs")}
    names = fake.kind("schema", "errs")[0]["names"]
    add_a, add_c = txs["errs:1"], txs["errs:2"]
    assert add_a["args"] == {"id": "x1"}
    assert add_c["src"] == ["errs", "errs:1", 1]  # queued by A_state with event=e
    assert names[add_c["called"][0]] == "C"
    add_b = txs["errs:3"]
    assert add_b["err"] == "kaput"
    exc = txs["errs:4"]
    assert names[exc["called"][0]] == "Exception" and exc["err"] is None
    assert txs["errs:5"]["err"] is None  # remove A: nothing new
    boom = txs["errs:6"]
    assert boom["err"] == "boom" and boom["args"]["err"] == "boom"


def test_queued_records_and_their_txs(fake: FakeDbg) -> None:
    class H:
        def A_state(self, e: am.Event) -> None:
            e.machine.add1("B")
            e.machine.add1("C", {"id": 1, "other": 2})

    mach = am.Machine({"A": {}, "B": {}, "C": {}}, id="q", handlers=H())
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx", "q")) == 3 and len(fake.kind("queued", "q")) == 2)
    q1, q2 = fake.kind("queued", "q")
    assert (q1["id"], q2["id"]) == ("q:1-1", "q:1-2")
    assert (q1["called"], q2["called"]) == ([1], [2])
    assert (q1["qlen"], q2["qlen"]) == (1, 2)
    assert q2["args"] == {"id": "1"}  # logged args only
    assert q1["mut_qtick"] < q2["mut_qtick"]
    assert q1["flags"] == 0 and isinstance(q1["t"], int)
    assert isinstance(q1["trace"], list) and any("test_reporter" in f for f in q1["trace"])
    assert not any("/trio_am/" in f for f in q1["trace"])
    tx1, tx2, tx3 = fake.kind("tx", "q")
    assert tx1["trace"] is None
    assert (tx2["mut_qtick"], tx3["mut_qtick"]) == (q1["mut_qtick"], q2["mut_qtick"])
    assert tx2["trace"] == q1["trace"] and tx3["trace"] == q2["trace"]
    assert tx2["qlen"] == 1  # C still waits
    # a later tx numbers its queued mutations afresh; trace=False sends none
    mach2 = am.Machine({"A": {}, "B": {}, "C": {}}, id="q2", handlers=H())
    rep2 = bind_debugger(mach2, fake.addr, trace=False)
    mach2.add1("A")
    assert rep2.flush(10)
    fake.wait(lambda: len(fake.kind("queued", "q2")) == 2 and len(fake.kind("tx", "q2")) == 3)
    assert all(q["trace"] is None for q in fake.kind("queued", "q2"))
    assert all(t["trace"] is None for t in fake.kind("tx", "q2"))


def test_checks_only_when_asked(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="chk")
    rep = bind_debugger(mach, fake.addr)
    mach.can_add1("A")
    mach.add1("A")
    assert rep.flush(10)
    fake.wait(lambda: fake.kind("tx", "chk"))
    assert [t["flags"] for t in fake.kind("tx", "chk")] == [_wire.TX_FLAG_ACCEPTED]
    mach2 = am.Machine({"A": {}}, id="chk2")
    rep2 = bind_debugger(mach2, fake.addr, log_checks=True)
    mach2.can_add1("A")
    assert rep2.flush(10)
    fake.wait(lambda: fake.kind("tx", "chk2"))
    tx = fake.kind("tx", "chk2")[0]
    assert tx["flags"] & _wire.TX_FLAG_CHECK
    assert tx["after"] == tx["before"] == [0, 0]


# ---------------------------------------------------------------------------- log lines
def test_log_lines_outside_transitions_go_with_the_next_tx(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="logs", log_level=2)
    mach.log("before binding")
    rep = bind_debugger(mach, fake.addr)
    mach.log("hello %s", "world")
    mach.add1("A")
    assert rep._link.flush(10)  # the link only: no forced `log` record
    fake.wait(lambda: fake.kind("tx", "logs"))
    tx = fake.kind("tx", "logs")[0]
    assert tx["pre_log"] == [[1, "[exter] before binding", None], [1, "[exter] hello world", None]]
    assert [2, "[state] +A", None] in tx["log"]
    assert not fake.kind("log", "logs")


def test_idle_log_lines_go_out_alone_and_not_again(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="idle", log_level=2)
    rep = bind_debugger(mach, fake.addr)
    t0 = time.monotonic()
    mach.log("waiting")
    fake.wait(lambda: fake.kind("log", "idle"), timeout=LOG_IDLE + 5)
    assert time.monotonic() - t0 >= LOG_IDLE * 0.9  # held for a transition first
    assert fake.kind("log", "idle")[0]["entries"] == [[1, "[exter] waiting", None]]
    mach.add1("A")
    assert rep.flush(10)
    fake.wait(lambda: fake.kind("tx", "idle"))
    assert fake.kind("tx", "idle")[0]["pre_log"] == []  # already sent


def test_health_checks_and_dispose_send_pending_lines_as_log(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}, "Healthcheck": {"multi": True}}, id="hl", log_level=2)
    rep = bind_debugger(mach, fake.addr)
    mach.log("one")
    mach.add1("Healthcheck")
    mach.log("two")
    mach.dispose()
    assert rep._link.flush(10)
    fake.wait(lambda: fake.kind("dispose", "hl"))
    kinds = [m[0] for m in fake.all() if len(m) > 1 and m[1] == "hl"]
    assert kinds == ["schema", "log", "tx", "log", "dispose"]
    logs = fake.kind("log", "hl")
    assert logs[0]["entries"] == [[1, "[exter] one", None]]
    assert logs[1]["entries"][0] == [1, "[exter] two", None]
    assert fake.kind("tx", "hl")[0]["pre_log"] == []


# -------------------------------------------------------------------- delivery and links
def test_debugger_absent_then_late() -> None:
    port = free_port()
    mach = fx_machine("late")
    t0 = time.perf_counter()
    rep = bind_debugger(mach, f"127.0.0.1:{port}")
    run_fx(mach)
    for _ in range(200):
        mach.toggle1("Baz")
    assert time.perf_counter() - t0 < 1.0  # the machine never waits for the debugger
    assert rep.stats()["connected"] is False
    assert rep.stats()["queued"] == 1 + 208  # the schema, the txs
    assert not rep.flush(0.2)  # nobody to write to
    late = FakeDbg(port)
    try:
        late.wait(lambda: len(late.kind("tx", "late")) == 208, timeout=15)
        assert [m[0] for m in late.all()[:2]] == ["hello", "schema"]
        assert rep.flush(5)
        assert rep.stats()["connected"] is True
    finally:
        late.close()


def test_records_of_a_machine_gone_before_the_connection() -> None:
    port = free_port()
    mach = fx_machine("gone")
    rep = bind_debugger(mach, f"127.0.0.1:{port}")
    run_fx(mach)
    mach.dispose()
    del mach
    gc.collect()
    late = FakeDbg(port)
    try:
        late.wait(lambda: late.kind("dispose", "gone"), timeout=15)
        kinds = [m[0] for m in late.all() if len(m) > 1 and m[1] == "gone"]
        assert kinds == ["schema"] + ["tx"] * 8 + ["dispose"]
        assert rep.flush(5)
    finally:
        late.close()


def test_reconnect_sends_hello_and_schema_first(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="recon")
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    assert rep.flush(10)
    fake.wait(lambda: fake.kind("tx", "recon"))
    fake.drop_connections()
    fake.wait(lambda: len(fake.conns) >= 2, timeout=15)
    mach.remove1("A")
    assert rep.flush(10)
    fake.wait(lambda: any(m[0] == "tx" for m in fake.conns[-1]))
    second = fake.conns[-1]
    assert [m[0] for m in second[:2]] == ["hello", "schema"]
    schema = _wire.as_dict(second[1])
    assert schema["m"] == "recon" and schema["time"] == [1, 0]  # fresh
    assert [m[2] for m in second if m[0] == "tx"] == ["recon:2"]


def test_full_buffer_drops_oldest_and_reports_it() -> None:
    fake = FakeDbg(stall=True)
    try:
        mach = am.Machine({"A": {}}, id="drops")
        rep = bind_debugger(mach, fake.addr, buffer=50)
        t0 = time.perf_counter()
        for _ in range(5000):
            mach.toggle1("A")
        assert time.perf_counter() - t0 < 5  # never blocked by the stalled debugger
        dropped = rep.stats()["dropped"]
        assert dropped > 0
        assert rep.stats()["queued"] <= 50
        assert fake.stall is not None
        fake.stall.set()
        assert rep.flush(15)
        # every record is accounted for: delivered, or counted in a `drop` message
        fake.wait(lambda: len(fake.kind("tx", "drops")) + dropped == 5000)
        assert sum(d["n"] for d in fake.kind("drop")) == dropped
        assert fake.kind("schema", "drops")  # never dropped
        ids = [int(t["id"].split(":")[1]) for t in fake.kind("tx", "drops")]
        assert ids == sorted(ids) and ids[-1] == 5000  # the newest survive
    finally:
        fake.close()


def test_bind_twice_is_a_noop_and_children_inherit(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="parent", tags=["p"])
    rep = bind_debugger(mach, fake.addr)
    assert bind_debugger(mach, fake.addr) is rep
    assert mach.tracers.count(rep) == 1
    child = am.Machine({"B": {}}, id="child", parent=mach)
    assert bind_debugger(child, fake.addr) is rep
    grandchild = am.Machine({"C": {}}, id="grandchild", parent=child)
    child.add1("B")
    grandchild.add1("C")
    assert rep.flush(10)
    fake.wait(lambda: fake.kind("tx", "child") and fake.kind("tx", "grandchild"))
    assert fake.kind("schema", "child")[0]["parent"] == "parent"
    assert fake.kind("schema", "grandchild")[0]["parent"] == "child"
    assert len(fake.kind("schema", "child")) == 1
    # another address is another reporter
    other = FakeDbg()
    try:
        rep2 = bind_debugger(mach, other.addr)
        assert rep2 is not rep
        mach.add1("A")
        assert rep2.flush(10)
        other.wait(lambda: other.kind("tx", "parent"))
    finally:
        other.close()


def test_schema_change_is_sent_on_the_same_connection(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="grow")
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    mach.set_schema({"A": {}, "B": {"require": ["A"]}})
    mach.add1("B")
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx", "grow")) == 2)
    schemas = fake.kind("schema", "grow")
    assert len(schemas) == 2 and "B" in schemas[1]["names"]
    assert len(fake.conns) == 1


def test_odd_args_never_reach_the_machine(fake: FakeDbg) -> None:
    class Odd:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    mach = am.Machine({"A": {}}, id="odd")
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A", {"id": Odd()})
    mach.remove1("A")
    assert mach.is1("A") is False
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx", "odd")) == 2)
    assert fake.kind("tx", "odd")[0]["args"] == {}


def test_dispose_message_and_no_disposal_txs(fake: FakeDbg) -> None:
    mach = fx_machine("disp")
    rep = bind_debugger(mach, fake.addr)
    run_fx(mach)
    mach.dispose()
    assert rep.flush(10)
    fake.wait(lambda: fake.kind("dispose", "disp"))
    kinds = [m[0] for m in fake.all() if len(m) > 1 and m[1] == "disp"]
    assert kinds == ["schema"] + ["tx"] * 8 + ["dispose"]


# ----------------------------------------------------------------------------- processes
def fx_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AM_", "OTEL_"))}
    env.update(extra)
    return env


def test_fx_subprocess_exit_sends_everything_and_bye(fake: FakeDbg) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.fx", "--exit"],
        cwd=ROOT,
        env=fx_env(AM_DBG_ADDR=fake.addr, AM_LOG="2"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert "Traceback" not in proc.stderr
    fake.wait(lambda: fake.kind("bye"))
    kinds = [m[0] for m in fake.all()]
    assert kinds[:2] == ["hello", "schema"]
    assert kinds.count("tx") == 8
    assert kinds[-2:] == ["dispose", "bye"]


def test_fx_sigterm_child_error_extra(fake: FakeDbg) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.support.fx", "--child", "--error", "--extra", "3"],
        cwd=ROOT,
        env=fx_env(AM_DBG_ADDR=fake.addr, AM_LOG="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "done"
            fake.wait(lambda: fake.kind("tx", "fx-b") and len(fake.kind("tx", "fx-a")) >= 12)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    fake.wait(lambda: fake.kind("bye"))
    assert fake.kind("schema", "fx-b")[0]["parent"] == "fx-a"
    assert fake.kind("schema", "fx-b")[0]["tags"] == ["child"]
    fx_a = fake.kind("tx", "fx-a")
    assert len(fx_a) == 12  # 8 + 3 toggles + Exception
    assert fx_a[-1]["err"] == "boom"
    assert {d["m"] for d in fake.kind("dispose")} == {"fx-a", "fx-b"}


def test_file_address_records_directly(tmp_path: Path) -> None:
    from trio_am.dbg import load

    path = tmp_path / "direct.amdbg"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.fx", "--exit"],
        cwd=ROOT,
        env=fx_env(AM_DBG_ADDR=f"file:{path}", AM_LOG="2"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    rec = load(path)
    client = rec.clients["fx-a"]
    assert len(client.txs) == 8
    assert client.txs[1].auto and client.txs[4].canceled
    assert client.names[:6] == ["Start", "Ready", "Foo", "Bar", "Baz", "Healthcheck"]


def test_bad_addresses() -> None:
    assert parse_dbg_addr("1") == "localhost:6831"
    assert parse_dbg_addr(" 127.0.0.1:9 ") == "127.0.0.1:9"
    assert parse_dbg_addr("file:/tmp/x.amdbg") == "file:/tmp/x.amdbg"
    for bad in ("nonsense", "host:", ":80", "host:99999", "host:0", "file:"):
        with pytest.raises(ValueError):
            parse_dbg_addr(bad)
    mach = am.Machine({"A": {}})
    with pytest.raises(ValueError):
        bind_debugger(mach, "127.0.0.1:9", buffer=0)
    assert mach.tracers == []
