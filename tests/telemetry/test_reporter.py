"""The debugger reporter (tools.md §1.8) against a fake debugger that decodes frames."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import trio_am as am
from trio_am.telemetry import _wire, bind_debugger
from trio_am.telemetry.dbg import parse_dbg_addr

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.fx import SCHEMA as FX_SCHEMA  # noqa: E402
from tests.support.fx import FxHandlers  # noqa: E402


class FakeDbg:
    """A debugger stand-in: accepts connections, decodes every frame."""

    def __init__(self, port: int = 0, *, stall: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.conns: list[list[list[Any]]] = []
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
            for m in dec.events():
                with self.lock:
                    msgs.append(m)

    def all(self) -> list[list[Any]]:
        with self.lock:
            return [m for conn in self.conns for m in conn]

    def kind(self, kind: str) -> list[list[Any]]:
        return [m for m in self.all() if m[0] == kind]

    def wait(self, pred: Any, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {[m[0] for m in self.all()]}")
            time.sleep(0.02)

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


def fx_machine(mid: str = "fx-a") -> am.Machine:
    return am.Machine(FX_SCHEMA, id=mid, handlers=FxHandlers(), tags=["fixture", "env:test"])


def run_fx(mach: am.Machine) -> None:
    mach.add1("Start")
    mach.add1("Bar")
    mach.add1("Baz")
    mach.add1("Foo")
    mach.add1("Healthcheck")
    mach.remove1("Baz")
    mach.add1("Foo")


def test_hello_then_schema_then_the_fx_records(fake: FakeDbg) -> None:
    mach = fx_machine()
    rep = bind_debugger(mach, fake.addr)
    run_fx(mach)
    assert rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx")) == 8)
    msgs = fake.all()
    assert msgs[0][0] == "hello" and msgs[0][1] == 1 and msgs[0][2] == "trio_am"
    assert msgs[1][0] == "schema"
    schema = _wire.as_dict(msgs[1])
    assert schema["m"] == "fx-a" and schema["tags"] == ["fixture", "env:test"]
    names = schema["names"]
    assert names[:6] == ["Start", "Ready", "Foo", "Bar", "Baz", "Healthcheck"]
    assert schema["states"]["Ready"] == {"auto": True, "require": ["Start"]}
    assert schema["states"]["Healthcheck"]["multi"] is True
    txs = [_wire.as_dict(m) for m in fake.kind("tx")]
    assert [t["id"] for t in txs] == [f"fx-a:{i}" for i in range(1, 9)]
    called = [[names[i] for i in t["called"]] for t in txs]
    assert called == [
        ["Start"],
        ["Ready"],
        ["Bar"],
        ["Baz"],
        ["Foo"],
        ["Healthcheck"],
        ["Baz"],
        ["Foo"],
    ]
    assert txs[1]["flags"] & _wire.TX_FLAG_AUTO
    assert not txs[4]["flags"] & _wire.TX_FLAG_ACCEPTED  # add Foo canceled (Baz removes it)
    assert all(t["flags"] & _wire.TX_FLAG_ACCEPTED for i, t in enumerate(txs) if i != 4)
    assert txs[6]["type"] == 1  # remove
    final = dict(zip(names, txs[-1]["after"], strict=True))
    assert final == {
        "Start": 1,
        "Ready": 1,
        "Foo": 3,
        "Bar": 1,
        "Baz": 2,
        "Healthcheck": 1,
        "Exception": 0,
    }
    assert sum(txs[-1]["after"]) == 9
    # steps: called first, activations recorded, handler steps with name and duration
    add_bar = txs[2]["steps"]
    assert add_bar[0][:3] == [_wire.STEP_CALLED, -1, names.index("Bar")]
    kinds = [s[0] for s in add_bar]
    assert _wire.STEP_RELATION in kinds and _wire.STEP_ACTIVATE in kinds
    handler = [s for s in add_bar if s[0] == _wire.STEP_HANDLER]
    assert handler and handler[0][5] == "Foo_enter" and handler[0][6] > 0
    assert txs[0]["t0"] <= txs[0]["t1"]


def test_veto_is_a_handler_step_then_a_cancel_step(fake: FakeDbg) -> None:
    class Veto:
        def A_enter(self, e: am.Event) -> bool:
            return False

    mach = am.Machine({"A": {}}, id="veto", handlers=Veto())
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx")) == 1)
    steps = _wire.as_dict(fake.kind("tx")[0])["steps"]
    i = next(i for i, s in enumerate(steps) if s[0] == _wire.STEP_HANDLER)
    assert steps[i][5] == "A_enter"
    assert steps[i + 1][0] == _wire.STEP_CANCEL


def test_queued_records_and_their_tx(fake: FakeDbg) -> None:
    class H:
        def A_state(self, e: am.Event) -> None:
            e.machine.add1("B")

    mach = am.Machine({"A": {}, "B": {}}, id="q", handlers=H())
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    rep.flush(10)
    fake.wait(lambda: len(fake.kind("tx")) == 2 and fake.kind("queued"))
    q = _wire.as_dict(fake.kind("queued")[0])
    assert q["m"] == "q" and q["id"].startswith("q:1-") and q["called"] == [1]
    assert isinstance(q["trace"], list) and any("test_reporter" in f for f in q["trace"])
    tx2 = _wire.as_dict(fake.kind("tx")[1])
    assert tx2["mut_qtick"] == q["mut_qtick"]


def test_log_lines_inside_and_outside_transitions(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="logs", log_level=2)
    rep = bind_debugger(mach, fake.addr)
    mach.log("hello %s", "world")
    mach.add1("A")
    rep.flush(10)
    fake.wait(lambda: fake.kind("tx") and fake.kind("log"))
    log = _wire.as_dict(fake.kind("log")[0])
    assert log["entries"] == [[1, "[exter] hello world", None]]
    tx = _wire.as_dict(fake.kind("tx")[0])
    assert [2, "[state] +A", None] in tx["log"]
    assert tx["pre_log"] == []  # already sent as a `log` record


def test_checks_only_when_asked(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="chk")
    rep = bind_debugger(mach, fake.addr)
    mach.can_add1("A")
    mach.add1("A")
    rep.flush(10)
    fake.wait(lambda: fake.kind("tx"))
    assert [_wire.as_dict(m)["flags"] & _wire.TX_FLAG_CHECK for m in fake.kind("tx")] == [0]
    mach2 = am.Machine({"A": {}}, id="chk2")
    rep2 = bind_debugger(mach2, fake.addr, log_checks=True)
    mach2.can_add1("A")
    rep2.flush(10)
    fake.wait(lambda: any(_wire.as_dict(m)["m"] == "chk2" for m in fake.kind("tx")))
    tx = next(_wire.as_dict(m) for m in fake.kind("tx") if m[1] == "chk2")
    assert tx["flags"] & _wire.TX_FLAG_CHECK


def test_debugger_absent_then_late() -> None:
    with socket.socket() as s:  # a free port, nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mach = fx_machine("late")
    t0 = time.perf_counter()
    rep = bind_debugger(mach, f"127.0.0.1:{port}")
    run_fx(mach)
    assert time.perf_counter() - t0 < 1.0  # the machine never waits for the debugger
    assert rep.stats()["connected"] is False
    late = FakeDbg(port)
    try:
        late.wait(lambda: len(late.kind("tx")) == 8, timeout=15)
        assert late.all()[0][0] == "hello" and late.all()[1][0] == "schema"
    finally:
        late.close()


def test_reconnect_sends_hello_and_schema_first(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="recon")
    rep = bind_debugger(mach, fake.addr)
    mach.add1("A")
    rep.flush(10)
    fake.wait(lambda: fake.kind("tx"))
    fake.drop_connections()
    fake.wait(lambda: len(fake.conns) >= 2, timeout=15)
    mach.remove1("A")
    rep.flush(10)
    fake.wait(lambda: len(fake.conns[-1]) >= 3)
    second = fake.conns[-1]
    assert [m[0] for m in second[:2]] == ["hello", "schema"]
    assert any(m[0] == "tx" and m[2] == "recon:2" for m in second)


def test_full_buffer_drops_oldest_and_reports_it() -> None:
    fake = FakeDbg(stall=True)
    try:
        mach = am.Machine({"A": {}}, id="drops")
        rep = bind_debugger(mach, fake.addr, buffer=50)
        # the sender may take a batch before the debugger stalls it; the rest overflows
        for _ in range(5000):
            mach.toggle1("A")
        assert rep.stats()["dropped"] > 0
        fake.stall.set()  # type: ignore[union-attr]
        rep.flush(15)
        fake.wait(lambda: fake.kind("drop"))
        drop = _wire.as_dict(fake.kind("drop")[0])
        assert drop["n"] > 0
        # schema is never dropped
        assert fake.kind("schema")
    finally:
        fake.close()


def test_bind_twice_is_a_noop_and_children_inherit(fake: FakeDbg) -> None:
    mach = am.Machine({"A": {}}, id="parent")
    rep = bind_debugger(mach, fake.addr)
    assert bind_debugger(mach, fake.addr) is rep
    assert mach.tracers.count(rep) == 1
    child = am.Machine({"B": {}}, id="child", parent=mach)
    child.add1("B")
    rep.flush(10)
    fake.wait(lambda: any(m[1] == "child" for m in fake.kind("schema")))
    schema = next(_wire.as_dict(m) for m in fake.kind("schema") if m[1] == "child")
    assert schema["parent"] == "parent"
    fake.wait(lambda: any(m[1] == "child" for m in fake.kind("tx")))


def test_dispose_message_and_no_disposal_txs(fake: FakeDbg) -> None:
    mach = fx_machine("disp")
    rep = bind_debugger(mach, fake.addr)
    run_fx(mach)
    mach.dispose()
    rep.flush(10)
    fake.wait(lambda: fake.kind("dispose"))
    assert len([m for m in fake.kind("tx") if m[1] == "disp"]) == 8


def test_fx_subprocess_exit_sends_everything_and_bye(fake: FakeDbg) -> None:
    env = {"AM_DBG_ADDR": fake.addr, "AM_LOG": "2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.fx", "--exit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    fake.wait(lambda: fake.kind("bye"))
    assert len(fake.kind("tx")) == 8
    assert fake.kind("dispose")


def test_file_address_records_directly(tmp_path: Path) -> None:
    from trio_am.dbg import load

    path = tmp_path / "direct.amdbg"
    env = {"AM_DBG_ADDR": f"file:{path}", "AM_LOG": "2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.fx", "--exit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    rec = load(path)
    assert len(rec.clients["fx-a"].txs) == 8
    assert rec.clients["fx-a"].txs[1].auto


def test_bad_addresses() -> None:
    assert parse_dbg_addr("1") == "localhost:6831"
    for bad in ("nonsense", "host:", ":80", "host:99999", "file:"):
        with pytest.raises(ValueError):
            parse_dbg_addr(bad)
