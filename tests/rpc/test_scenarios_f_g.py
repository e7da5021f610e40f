"""Scenarios F (bad input) and G (faults and reconnects) of scenarios-arpc.md, plus the
variants a reviewer would add.

Every scenario ends with the "nothing corrupted" invariant (:func:`assert_intact`):
``src`` has no ``Exception``, the server still runs, and a fresh probe client reaches
``Ready`` within 2 s with a mirror equal to ``src``.

Raw frames go through :mod:`tests.rpc.raw` (``RAW`` of the scenarios). Scenario 43 runs
the server in a subprocess (``python -m tests.support.src_server``); scenario 45 runs on
``MockClock`` over memory streams (see its docstring).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from wsproto.events import TextMessage

import trio_am as am
from trio_am import rpc
from trio_am.rpc import client as client_mod
from trio_am.rpc.testing import FaultyProxy
from trio_am.rpc.transport import FrameStream, StreamClosed, TcpFrameStream, WsFrameStream

from .conftest import SERVER_KW, client_kw
from .raw import Kind, Op, Raw, open_raw, pack

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
URL_IDS = ["ws", "tcp"]


# ----------------------------------------------------------------------------- helpers
async def assert_intact(src: am.Machine, server: rpc.Server) -> None:
    """The "nothing corrupted" invariant of scenarios-arpc.md."""
    assert not src.is1("Exception"), src.active_states()
    assert server.rpc.is1("Ready") and server.rpc.is1("Listening")
    for url in server.urls:
        async with rpc.connect(url, id="probe", **client_kw()) as probe:
            with trio.fail_after(2):
                await probe.rpc.when1("Ready")
            assert probe.mach.time() == src.time()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def ready_client(url: str, id: str, **kw: Any) -> AsyncIterator[rpc.Client]:
    """A scenario client that reached ``Ready``; on exit it must still be ``Ready``
    without having left it (its ``Ready`` tick is unchanged)."""
    async with rpc.connect(url, id=id, **client_kw(**kw)) as client:
        with trio.fail_after(2):
            await client.rpc.when1("Ready")
        tick = client.rpc.tick("Ready")
        yield client
        assert client.rpc.is1("Ready")
        assert client.rpc.tick("Ready") == tick, "the client left Ready"


def error_fields(frame: list[Any]) -> tuple[Any, int, bool]:
    """``(req, code, fatal)`` of an ERROR frame."""
    assert frame[0] == Kind.ERROR, frame
    return frame[1], frame[2], frame[4] if len(frame) > 4 else False


async def expect_error(raw: Raw, code: int, *, req: int | None = None, fatal: bool = False) -> None:
    frame = await raw.recv()
    assert error_fields(frame) == (req, code, fatal), frame


async def expect_result(raw: Raw, req: int, res: int = 0) -> list[Any]:
    frame = await raw.recv()
    assert frame[0] == Kind.RESULT, frame
    assert frame[4:6] == [req, res], frame
    return frame


async def expect_closed(raw: Raw) -> list[list[Any]]:
    """Frames until the server closes the connection."""
    return await raw.recv_closed(timeout=3)


async def send_quietly(stream: FrameStream, data: bytes) -> None:
    """Send a frame the server may cut off half-way."""
    with contextlib.suppress(StreamClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_frame(data)


class Events:
    """Counts multi events of a machine (``<State>_state`` handlers) and keeps their
    args."""

    def __init__(self, mach: am.Machine, *states: str) -> None:
        self.args: dict[str, list[dict[str, Any]]] = {s: [] for s in states}
        for s in states:
            setattr(self, f"{s}_state", self._recorder(s))
        mach.bind_handlers(self)

    def _recorder(self, state: str) -> Callable[[am.Event], None]:
        def record(e: am.Event) -> None:
            self.args[state].append(dict(e.args))

        return record

    def count(self, state: str) -> int:
        return len(self.args[state])


# ============================================================================ F. Bad input
@pytest.mark.parametrize("which", [0, 1], ids=URL_IDS)
async def test_35_garbage_frame(src: am.Machine, server: rpc.Server, which: int) -> None:
    async with (
        ready_client(server.urls[0], "c2"),
        open_raw(server.urls[which], keepalive=0.05) as raw,
    ):
        await raw.hello(id="r1")
        before = list(src.time())
        await raw.send_bytes(b"\xc1" * 16)
        await expect_error(raw, rpc.ErrorCode.MALFORMED)
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
        frame = await expect_result(raw, req, int(am.Result.EXECUTED))
        assert frame[3] is not None  # the diff rides on the RESULT
        expected = before.copy()
        expected[src.state_names.index("Foo")] += 1
        assert list(src.time()) == expected  # changed only by that MUTATE
    await assert_intact(src, server)


@pytest.mark.parametrize("which", [0, 1], ids=URL_IDS)
async def test_35_not_a_frame(src: am.Machine, server: rpc.Server, which: int) -> None:
    """Valid msgpack that is not a frame: MALFORMED, non-fatal, nothing applied."""
    async with open_raw(server.urls[which], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        before = list(src.time())
        for obj in ({"kind": 3}, 7, [], ["3", 1], [True, 1], "MUTATE"):
            await raw.send(obj)
            await expect_error(raw, rpc.ErrorCode.MALFORMED)
        await raw.send_bytes(b"\x93\x03\x01")  # an array cut short
        await expect_error(raw, rpc.ErrorCode.MALFORMED)
        assert list(src.time()) == before
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
        await expect_result(raw, req)
    await assert_intact(src, server)


async def test_35_unknown_kind(src: am.Machine, server: rpc.Server) -> None:
    """Unknown kinds and kinds only a server may send: UNKNOWN_KIND, non-fatal."""
    async with open_raw(server.urls[1], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        before = list(src.time())
        foo = raw.idx("Foo")
        for frame in (
            [99, 1],
            [200],
            [Kind.WELCOME, {"proto": 1}],
            [Kind.RESULT, 1, 0, None, 1, 0],
            [Kind.CLOCK, 1, 0, [[foo, 1], 0, 0, 1]],
            [Kind.PAYLOAD, 1, "x", None, "src", ""],
            [112, "relay"],
        ):
            await raw.send(frame)
            await expect_error(raw, rpc.ErrorCode.UNKNOWN_KIND)
        assert list(src.time()) == before
        req = await raw.mutate(Op.ADD, [foo])
        await expect_result(raw, req)
        assert src.tick("Foo") == 1
    await assert_intact(src, server)


async def test_35_bad_fields(src: am.Machine, server: rpc.Server) -> None:
    """Wrong field types or counts: BAD_FIELD, non-fatal, naming the request when its id
    could be read; nothing is applied."""
    foo = src.state_names.index("Foo")  # the session shows every state: same indexes
    cases: list[tuple[list[Any], int | None]] = [
        ([Kind.MUTATE, "1", Op.ADD, [foo]], None),  # req not an int
        ([Kind.MUTATE, -1, Op.ADD, [foo]], None),  # req negative
        ([Kind.MUTATE, 1, Op.ADD, foo], 1),  # idxs not a list
        ([Kind.MUTATE, 1, Op.ADD, ["Foo"]], 1),  # names instead of indexes
        ([Kind.MUTATE, 1, Op.ADD, [-1]], 1),  # a negative index
        ([Kind.MUTATE, 1, 9, [foo]], 1),  # op out of 0-3
        ([Kind.MUTATE, 1, "add", [foo]], 1),  # op not an int
        ([Kind.MUTATE, 1, Op.ADD, [foo], [1, 2]], 1),  # args not a map
        ([Kind.MUTATE, 1, Op.ADD, [foo], None, "x"], 1),  # flags not an int
        ([Kind.MUTATE, 1, Op.ADD, [foo], None, None, "src"], 1),  # src not a list
        ([Kind.MUTATE, 1, Op.ADD], 1),  # too few fields
        ([Kind.MUTATE], None),
        ([Kind.SYNC], None),
        ([Kind.SYNC, "x"], None),
        ([Kind.GET, 1, 5], 1),  # getter name not a string
        ([Kind.PING], None),
        ([Kind.PING, "n"], None),
        ([Kind.PAYLOAD_ACK, 1, "yes"], 1),
        ([Kind.BYE, "1000", 3], None),
        ([Kind.HELLO, [1]], None),  # HELLO must be a map
        ([Kind.MUTATE, 2**53, Op.ADD, [foo]], None),  # beyond what JS can read
    ]
    for start in range(0, len(cases), 10):  # stay below max_errors per connection
        before = list(src.time())
        async with open_raw(server.urls[1], keepalive=0.05) as raw:
            await raw.hello(id="r1")
            assert raw.idx("Foo") == foo
            for frame, req in cases[start : start + 10]:
                await raw.send(frame)
                got = await raw.recv()
                assert error_fields(got) == (req, rpc.ErrorCode.BAD_FIELD, False), (frame, got)
            assert list(src.time()) == before
            # none of these used up a request id: req 1 is still fresh
            await raw.mutate(Op.TOGGLE, [foo], req=1)
            await expect_result(raw, 1)
    async with open_raw(server.urls[1], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        # extra fields at the end are ignored (B3)
        await raw.send([Kind.MUTATE, 2, Op.TOGGLE, [foo], None, None, None, "future", 1])
        await expect_result(raw, 2)
    assert src.tick("Foo") == 4
    await assert_intact(src, server)


async def test_35_req_order(src: am.Machine, server: rpc.Server) -> None:
    """A request id that does not increase: REQ_ORDER, non-fatal, not applied."""
    async with open_raw(server.urls[1], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        foo = raw.idx("Foo")
        await raw.mutate(Op.ADD, [foo], req=5)  # ids need only increase
        await expect_result(raw, 5)
        await raw.mutate(Op.REMOVE, [foo], req=5)
        await expect_error(raw, rpc.ErrorCode.REQ_ORDER, req=5)
        await raw.mutate(Op.REMOVE, [foo], req=3)
        await expect_error(raw, rpc.ErrorCode.REQ_ORDER, req=3)
        await raw.send([Kind.SYNC, 4])
        await expect_error(raw, rpc.ErrorCode.REQ_ORDER, req=4)
        await raw.send([Kind.GET, 5, "tags"])
        await expect_error(raw, rpc.ErrorCode.REQ_ORDER, req=5)
        assert src.is1("Foo") and src.tick("Foo") == 1
        await raw.mutate(Op.REMOVE, [foo], req=6)
        await expect_result(raw, 6)
        assert src.tick("Foo") == 2
    await assert_intact(src, server)


async def test_35_unknown_state_index(src: am.Machine, server: rpc.Server) -> None:
    """An index out of range or repeated: UNKNOWN_STATE (9), non-fatal, and nothing of
    the request is applied (all or nothing)."""
    async with open_raw(server.urls[1], keepalive=0.05) as raw:
        welcome = await raw.hello(id="r1")
        n = len(welcome["names"])
        foo, bar = raw.idx("Foo"), raw.idx("Bar")
        before = list(src.time())
        for idxs in ([n], [foo, n], [foo, foo], [foo, bar, foo], [2**40]):
            req = await raw.mutate(Op.ADD, idxs)
            await expect_error(raw, rpc.ErrorCode.UNKNOWN_STATE, req=req)
            assert list(src.time()) == before, idxs
        req = await raw.mutate(Op.SET, [n - 1, n])
        await expect_error(raw, rpc.ErrorCode.UNKNOWN_STATE, req=req)
        assert list(src.time()) == before
        req = await raw.mutate(Op.ADD, [foo, bar])
        await expect_result(raw, req)
        assert src.is1("Foo") and src.is1("Bar")
    await assert_intact(src, server)


async def test_35_unknown_state_via_client(src: am.Machine, server: rpc.Server) -> None:
    """The same through the API: ``*_remote`` raises ``StateError`` (code 9, also an
    ``am.StateError``); the connection and the request numbering stay usable."""
    async with FaultyProxy(server.urls[1]) as proxy, ready_client(proxy.url, "c1") as c:
        n = len(c.mach.state_names)
        proxy.rewrite_next(Kind.MUTATE, lambda f: [*f[:3], [f[3][0], n], *f[4:]], "up")
        before = list(src.time())
        with pytest.raises(rpc.StateError) as info:
            await c.mach.add1_remote("Foo")
        assert info.value.code == 9
        assert isinstance(info.value, am.StateError)
        assert not info.value.fatal
        assert list(src.time()) == before
        assert await c.mach.add1_remote("Foo") == am.Result.EXECUTED
        assert c.mach.time() == src.time()
        assert not c.rpc.is1("Exception")
    await assert_intact(src, server)


@pytest.mark.parametrize("which", [0, 1], ids=URL_IDS)
async def test_35_second_hello(src: am.Machine, server: rpc.Server, which: int) -> None:
    """A repeated HELLO is a HANDSHAKE error: fatal, close 1002 (B11)."""
    events = Events(server.rpc, "PeerError")
    async with (
        ready_client(server.urls[0], "c2"),
        open_raw(server.urls[which], keepalive=0.05) as raw,
    ):
        await raw.hello(id="r1")
        before = list(src.time())
        await raw.send([Kind.HELLO, {"proto": 1, "id": "r1"}])
        frames = await expect_closed(raw)
        assert [error_fields(f) for f in frames] == [(None, rpc.ErrorCode.HANDSHAKE, True)]
        if which == 0:
            assert raw.stream.close_code == 1002
        assert list(src.time()) == before
    assert [a["code"] for a in events.args["PeerError"]] == [rpc.ErrorCode.HANDSHAKE]
    await assert_intact(src, server)


# -- 37. Oversized frames
@pytest.mark.parametrize("which", [0, 1], ids=URL_IDS)
async def test_37_oversized_skipped(src: am.Machine, server: rpc.Server, which: int) -> None:
    """Between max_frame (1 MiB) and hard_frame (4 MiB): TOO_LARGE, non-fatal, the
    connection stays usable (the frame is not applied even if it is a valid MUTATE)."""
    async with (
        ready_client(server.urls[0], "c2"),
        open_raw(server.urls[which], keepalive=0.05) as raw,
    ):
        await raw.hello(id="r1")
        foo = raw.idx("Foo")
        await raw.send_bytes(b"\x00" * (2 * MiB))
        await expect_error(raw, rpc.ErrorCode.TOO_LARGE)
        big = pack([Kind.MUTATE, 1, Op.ADD, [foo], {"s": "x" * (MiB + 10)}])
        await raw.send_bytes(big)
        await expect_error(raw, rpc.ErrorCode.TOO_LARGE)
        assert not src.is1("Foo")
        req = await raw.mutate(Op.ADD, [foo], req=1)
        await expect_result(raw, req)
        assert src.tick("Foo") == 1
    await assert_intact(src, server)


async def test_37_over_hard_frame_ws(src: am.Machine, server: rpc.Server) -> None:
    async with ready_client(server.urls[1], "c2"), open_raw(server.urls[0]) as raw:
        await raw.hello(id="r1")
        before = list(src.time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_quietly, raw.stream, b"\x00" * (5 * MiB))
            frames = await expect_closed(raw)
        assert all(error_fields(f)[1] == rpc.ErrorCode.TOO_LARGE for f in frames)
        assert raw.stream.close_code == 1009
        assert list(src.time()) == before
    await assert_intact(src, server)


async def test_37_over_hard_frame_tcp(src: am.Machine, server: rpc.Server) -> None:
    async with ready_client(server.urls[0], "c2"), open_raw(server.urls[1]) as raw:
        await raw.hello(id="r1")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_quietly, raw.stream, b"\x00" * (5 * MiB))
            frames = await expect_closed(raw)
        assert [error_fields(f) for f in frames] == [(None, rpc.ErrorCode.TOO_LARGE, True)]
    await assert_intact(src, server)


async def test_37_huge_tcp_prefix(src: am.Machine, server: rpc.Server) -> None:
    """A length prefix of 0xFFFFFFF0 alone: the server answers and closes without
    waiting for a body (none is ever sent)."""
    async with ready_client(server.urls[0], "c2"), open_raw(server.urls[1]) as raw:
        await raw.hello(id="r1")
        assert isinstance(raw.stream, TcpFrameStream)
        await raw.stream.stream.send_all(b"\xff\xff\xff\xf0")
        frames = await expect_closed(raw)
        assert [error_fields(f) for f in frames] == [(None, rpc.ErrorCode.TOO_LARGE, True)]
    await assert_intact(src, server)


async def test_37_tcp_length_zero(src: am.Machine, server: rpc.Server) -> None:
    async with ready_client(server.urls[0], "c2"), open_raw(server.urls[1], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        await raw.send_bytes(b"")  # a length prefix of 0
        await expect_error(raw, rpc.ErrorCode.MALFORMED)
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
        await expect_result(raw, req)
    await assert_intact(src, server)


async def test_37_ws_empty_message(src: am.Machine, server: rpc.Server) -> None:
    async with open_raw(server.urls[0], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        await raw.send_bytes(b"")
        await expect_error(raw, rpc.ErrorCode.MALFORMED)
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
        await expect_result(raw, req)
    await assert_intact(src, server)


async def test_37_ws_text_message(src: am.Machine, server: rpc.Server) -> None:
    async with ready_client(server.urls[1], "c2"), open_raw(server.urls[0]) as raw:
        await raw.hello(id="r1")
        before = list(src.time())
        ws = raw.stream
        assert isinstance(ws, WsFrameStream)
        await ws.stream.send_all(ws._ws.send(TextMessage(data="[3, 1, 0, [0]]")))
        frames = await expect_closed(raw)
        assert all(f[0] == Kind.ERROR for f in frames)
        assert raw.stream.close_code == 1003
        assert list(src.time()) == before
    await assert_intact(src, server)


async def test_37_ws_text_before_hello(src: am.Machine, server: rpc.Server) -> None:
    async with open_raw(server.urls[0]) as raw:
        ws = raw.stream
        assert isinstance(ws, WsFrameStream)
        await ws.stream.send_all(ws._ws.send(TextMessage(data="hello")))
        await expect_closed(raw)
        assert raw.stream.close_code == 1003
    await assert_intact(src, server)


# -- 39. Abuse
@pytest.mark.parametrize("which", [0, 1], ids=URL_IDS)
async def test_39_abuse(src: am.Machine, server: rpc.Server, which: int) -> None:
    events = Events(server.rpc, "PeerError")
    async with ready_client(server.urls[1 - which], "c2"), open_raw(server.urls[which]) as raw:
        await raw.hello(id="r1")
        before = list(src.time())
        with trio.fail_after(1):
            for _ in range(25):
                await send_quietly(raw.stream, b"\xc1" * 16)
        frames = await expect_closed(raw)
        errors = [error_fields(f) for f in frames]
        assert errors[-1] == (None, rpc.ErrorCode.ABUSE, True), errors
        # max_errors is 20: the 21st error ends the connection (answers still queued
        # then may be dropped in favour of the fatal ERROR)
        assert set(errors[:-1]) <= {(None, rpc.ErrorCode.MALFORMED, False)}
        assert len(errors) - 1 <= 21
        if which == 0:
            assert raw.stream.close_code == 1008
        assert list(src.time()) == before
    codes = Counter(a["code"] for a in events.args["PeerError"])
    assert codes[rpc.ErrorCode.MALFORMED] >= 21
    await assert_intact(src, server)


async def test_39_twenty_errors_are_tolerated(src: am.Machine, server: rpc.Server) -> None:
    """``max_errors`` is 20 in 10 s: 20 bad frames are answered one by one and the
    connection stays usable."""
    async with open_raw(server.urls[1], keepalive=0.05) as raw:
        await raw.hello(id="r1")
        for _ in range(20):
            await raw.send_bytes(b"\xc1")
            await expect_error(raw, rpc.ErrorCode.MALFORMED)
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
        await expect_result(raw, req)
        assert src.tick("Foo") == 1
    await assert_intact(src, server)


# ===================================================================== G. Faults, reconnects
async def test_41_cut_before_the_request_reaches_the_server(
    src: am.Machine, server: rpc.Server
) -> None:
    async with (
        FaultyProxy(server.urls[1]) as proxy,
        rpc.connect(proxy.url, id="c1", **client_kw()) as c,
    ):
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        sid = c.sid
        outcome: list[am.Result] = []

        async def call() -> None:
            outcome.append(await c.mach.add1_remote("Foo"))

        async with trio.open_nursery() as nursery:
            proxy.blackhole("up")
            with trio.fail_after(0.3):
                nursery.start_soon(call)
                await c.rpc.when1("ErrNetworkTimeout")
            with trio.fail_after(1):
                await c.rpc.when1("Reconnecting")
            assert proxy.dropped_up[Kind.MUTATE] == 1  # the request was sent, and lost
            assert not src.is1("Foo")
            proxy.restore()
        assert outcome == [am.Result.EXECUTED]
        assert c.welcome is not None and c.welcome["resumed"] is True
        assert c.sid == sid
        assert src.tick("Foo") == 1
        assert c.rpc.is1("Ready") and not c.rpc.is1("Exception")
        assert c.mach.time() == src.time()
    await assert_intact(src, server)


async def test_41_result_lost_is_replayed_not_reapplied(
    src: am.Machine, server: rpc.Server
) -> None:
    """The MUTATE reached the server but the RESULT was lost: after the resume the
    server replays the cached result; the toggle is applied exactly once."""
    async with (
        FaultyProxy(server.urls[0]) as proxy,
        rpc.connect(proxy.url, id="c1", **client_kw()) as c,
    ):
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        outcome: list[am.Result] = []

        async def call() -> None:
            outcome.append(await c.mach.toggle1_remote("Foo"))

        async with trio.open_nursery() as nursery:
            proxy.blackhole("down")
            nursery.start_soon(call)
            with trio.fail_after(2):
                await proxy.wait_for(lambda: proxy.frames_up[Kind.MUTATE] == 1)
                await c.rpc.when1("Reconnecting")
            assert src.tick("Foo") == 1 and not c.mach.is1("Foo")
            proxy.restore()
        assert outcome == [am.Result.EXECUTED]
        assert c.welcome is not None and c.welcome["resumed"] is True
        assert proxy.frames_up[Kind.MUTATE] == 1  # not sent again: the server had it
        assert src.tick("Foo") == 1
        assert c.mach.is1("Foo") and c.mach.time() == src.time()
    await assert_intact(src, server)


# -- 43. Server killed in the middle of a mutation
@contextlib.asynccontextmanager
async def subproc(port: int) -> AsyncIterator[tuple[trio.Process, str]]:
    """``SUBPROC(port)``: the scenario server in its own process; yields it and its
    epoch (from ``READY <epoch>``). Killed on exit."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.support.src_server", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        buf = b""
        with trio.fail_after(15):
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    raise AssertionError(f"the server exited early ({await proc.wait()})")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        assert line.startswith("READY "), line
        yield proc, line.split()[1]
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


async def test_43_server_killed_mid_mutation() -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    async with subproc(port) as (proc1, epoch1), rpc.connect(url, id="c1", **client_kw()) as c:
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        assert c.epoch == epoch1
        assert await c.mach.add1_remote("Foo") == am.Result.EXECUTED
        assert c.mach.is1("Foo")
        scope_cancelled = trio.Event()
        queue_errors: list[BaseException] = []
        crash: list[BaseException] = []

        async def in_foo(task_status: trio.TaskStatus[None]) -> None:
            with c.mach.state_scope("Foo"):
                task_status.started()
                await trio.sleep_forever()
            scope_cancelled.set()

        async def queue_waiter(task_status: trio.TaskStatus[None]) -> None:
            waiter = c.mach.when_queue(10**6)
            task_status.started()
            try:
                await waiter
            except rpc.QueueResetError as exc:
                queue_errors.append(exc)

        async def call_crash() -> None:
            try:
                await c.mach.add1_remote("Crash")
            except Exception as exc:
                crash.append(exc)

        async with trio.open_nursery() as nursery:
            await nursery.start(in_foo)
            await nursery.start(queue_waiter)
            nursery.start_soon(call_crash)
            with trio.fail_after(5):
                assert await proc1.wait() == -9  # SIGKILL by Crash_enter
            async with subproc(port) as (_proc2, epoch2):
                assert epoch2 != epoch1
                with trio.fail_after(5):
                    await scope_cancelled.wait()
                with trio.fail_after(5):
                    while not (c.rpc.is1("Ready") and c.epoch == epoch2):
                        await c.rpc.when_ticks("Ready", 1)
                assert len(crash) == 1
                assert isinstance(crash[0], rpc.OutcomeUnknownError), crash
                assert isinstance(crash[0], rpc.ConnectionLostError)
                assert len(queue_errors) == 1
                assert c.welcome is not None and c.welcome["resumed"] is False
                assert list(c.mach.time()) == c.welcome["time"]
                assert set(c.mach.time()) == {0}  # the new source starts with nothing
                assert not c.mach.is1("Foo")
                assert await c.mach.add1_remote("Foo") == am.Result.EXECUTED
                assert c.mach.is1("Foo")
                # nothing corrupted (the source lives in the subprocess: compare mirrors)
                async with rpc.connect(url, id="probe", **client_kw()) as probe:
                    with trio.fail_after(2):
                        await probe.rpc.when1("Ready")
                    assert probe.mach.time() == c.mach.time()
                    assert not probe.mach.is1("Exception")


# -- 45. Backoff schedule (and other timings on virtual time)
class MemNet:
    """A memory "network" for ``MockClock`` tests: the client's dialer is replaced, and
    each dial gets a memory pair pumped through :attr:`proxy` (a ``FaultyProxy`` used
    only through ``pump``) to ``server.serve_stream``. With :attr:`down` a dial fails
    at once, like a refused TCP connection.

    Why memory: "after the loss" needs a server that was up. Over real sockets, with
    ``autojump_threshold=0``, the clock jumps whenever every task waits on socket I/O,
    so handshake, heartbeat and dial timeouts would fire at arbitrary virtual times.
    Over memory every step runs on the virtual clock and the attempt times are exact.
    (A closed TCP port alone works on Linux, where a refused loopback connect fails
    inside ``connect()``: see ``test_45_backoff_schedule_closed_tcp_port``.)
    """

    def __init__(self, server: rpc.Server, nursery: trio.Nursery) -> None:
        self.server = server
        self.nursery = nursery
        self.proxy = FaultyProxy("tcp://127.0.0.1:9")
        self.down = False
        self.attempts: list[float] = []
        self._changed = trio.Event()

    async def dial(self, url: str, **kw: Any) -> FrameStream:
        refused = self.down
        self.attempts.append(trio.current_time())
        ev, self._changed = self._changed, trio.Event()
        ev.set()
        await trio.lowlevel.checkpoint()
        if refused:
            raise ConnectionRefusedError(111, "Connection refused")
        client_end, proxy_client = rpc.testing.memory_pair()
        proxy_server, server_end = rpc.testing.memory_pair()
        self.nursery.start_soon(self.proxy.pump, proxy_client, proxy_server)
        self.nursery.start_soon(self.server.serve_stream, server_end)
        return client_end

    def crash(self) -> float:
        """The server goes away (connections reset, dials refused); returns the time."""
        self.down = True
        self.proxy.reset()
        return trio.current_time()

    async def wait_attempts(self, n: int) -> None:
        while len(self.attempts) < n:
            await self._changed.wait()


@pytest.fixture
async def memnet(src: am.Machine, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MemNet]:
    async with rpc.serve(src, **SERVER_KW) as server, trio.open_nursery() as nursery:
        net = MemNet(server, nursery)
        monkeypatch.setattr(client_mod, "connect_stream", net.dial)
        yield net
        nursery.cancel_scope.cancel()


BACKOFF_45 = rpc.Backoff(initial=0.25, factor=2, max=1, jitter=0)
MEM_URL = "tcp://127.0.0.1:9"


async def test_45_backoff_schedule(
    autojump_clock: trio.testing.MockClock, src: am.Machine, memnet: MemNet
) -> None:
    async with rpc.connect(MEM_URL, id="c1", heartbeat=0.1, reconnect=BACKOFF_45) as c:
        with trio.fail_after(1):
            await c.rpc.when1("Ready")
        assert len(memnet.attempts) == 1
        lost = memnet.crash()
        with trio.fail_after(10):
            await memnet.wait_attempts(6)
        offsets = [t - lost for t in memnet.attempts[1:]]
        assert offsets == pytest.approx([0.25, 0.75, 1.75, 2.75, 3.75], abs=1e-3)
        assert c.rpc.is1("Reconnecting") and c.rpc.is1("ErrNetwork")
        assert not c.rpc.is1("Ready")
        # the server comes back after 3.75 s, past the 2 s session_ttl: a new session
        memnet.down = False
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        assert c.welcome is not None and c.welcome["resumed"] is False
        assert c.mach.time() == src.time()
        assert not c.rpc.is1("Exception") and not c.rpc.is1("Reconnecting")
    await assert_intact_mem(src, memnet)


async def assert_intact_mem(src: am.Machine, memnet: MemNet) -> None:
    """The invariant over the memory network."""
    assert not src.is1("Exception")
    memnet.down = False
    async with rpc.connect(MEM_URL, id="probe", **client_kw()) as probe:
        with trio.fail_after(2):
            await probe.rpc.when1("Ready")
        assert probe.mach.time() == src.time()


async def test_45_backoff_restarts_after_a_reconnect(
    autojump_clock: trio.testing.MockClock, src: am.Machine, memnet: MemNet
) -> None:
    """Each loss starts the schedule again from ``initial``."""
    async with rpc.connect(MEM_URL, id="c1", heartbeat=0.1, reconnect=BACKOFF_45) as c:
        with trio.fail_after(1):
            await c.rpc.when1("Ready")
        lost = memnet.crash()
        with trio.fail_after(10):
            await memnet.wait_attempts(3)
        memnet.down = False  # the third attempt (at 1.75) succeeds
        with trio.fail_after(10):
            await c.rpc.when1("Ready")
        assert trio.current_time() - lost == pytest.approx(1.75, abs=1e-3)
        assert c.welcome is not None and c.welcome["resumed"] is True  # within the ttl
        lost = memnet.crash()
        with trio.fail_after(10):
            await memnet.wait_attempts(7)
        offsets = [t - lost for t in memnet.attempts[4:]]
        assert offsets == pytest.approx([0.25, 0.75, 1.75], abs=1e-3)
    await assert_intact_mem(src, memnet)


async def test_45_gives_up_after_max_elapsed(
    autojump_clock: trio.testing.MockClock, src: am.Machine, memnet: MemNet
) -> None:
    """No attempt starts later than ``max_elapsed`` after the loss; then
    ``ReconnectFailed`` removes ``Start``, the request that was sent fails with
    ``OutcomeUnknownError``, the ones never sent with ``ConnectionLostError``."""
    backoff = rpc.Backoff(initial=0.25, factor=2, max=1, jitter=0, max_elapsed=2)
    async with rpc.connect(MEM_URL, id="c1", heartbeat=0.1, reconnect=backoff) as c:
        with trio.fail_after(1):
            await c.rpc.when1("Ready")
        outcomes: dict[str, BaseException] = {}

        async def call(name: str) -> None:
            try:
                await c.mach.add1_remote(name)
            except Exception as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            memnet.proxy.blackhole("up")
            nursery.start_soon(call, "Foo")
            await memnet.proxy.wait_for(lambda: memnet.proxy.dropped_up[Kind.MUTATE] == 1)
            lost = memnet.crash()
            with trio.fail_after(1):
                await c.rpc.when1("Reconnecting")
            nursery.start_soon(call, "Bar")
            assert c.mach.add1("Foo") == am.Result.QUEUED
            with trio.fail_after(10):
                await c.rpc.when1("ReconnectFailed")
            assert trio.current_time() - lost == pytest.approx(1.75, abs=1e-3)
        assert [t - lost for t in memnet.attempts[1:]] == pytest.approx(
            [0.25, 0.75, 1.75], abs=1e-3
        )
        assert not c.rpc.is1("Start") and not c.rpc.is1("Reconnecting")
        assert isinstance(outcomes["Foo"], rpc.OutcomeUnknownError)
        assert isinstance(outcomes["Bar"], rpc.ConnectionLostError)
        assert not isinstance(outcomes["Bar"], rpc.OutcomeUnknownError)
        assert c.rpc.is1("ErrDelivery")  # the plain add1 failed
        assert not src.is1("Foo") and not src.is1("Bar")
    memnet.proxy.restore()
    await assert_intact_mem(src, memnet)


async def test_session_resumed_within_ttl_and_not_after(
    autojump_clock: trio.testing.MockClock, src: am.Machine, memnet: MemNet
) -> None:
    """A session outlives its connection for ``session_ttl`` (2 s): a reconnect at
    1.75 s resumes it; one at 2.75 s gets a new session (same epoch), and the request
    that was sent into the cut fails with ``OutcomeUnknownError`` while one queued during
    the outage is applied once."""
    async with rpc.connect(MEM_URL, id="c1", heartbeat=0.1, reconnect=BACKOFF_45) as c:
        with trio.fail_after(1):
            await c.rpc.when1("Ready")
        sid, epoch = c.sid, c.epoch
        memnet.crash()
        await memnet.wait_attempts(3)
        memnet.down = False  # the attempt at 1.75 s
        with trio.fail_after(10):
            await c.rpc.when1("Ready")
        assert c.welcome is not None and c.welcome["resumed"] is True and c.sid == sid
        assert [s.sid for s in memnet.server.sessions] == [sid]

        outcomes: dict[str, Any] = {}

        async def call(name: str) -> None:
            try:
                outcomes[name] = await c.mach.add1_remote(name)
            except Exception as exc:
                outcomes[name] = exc

        async with trio.open_nursery() as nursery:
            memnet.proxy.blackhole("up")
            nursery.start_soon(call, "Secret")
            await memnet.proxy.wait_for(lambda: memnet.proxy.dropped_up[Kind.MUTATE] == 1)
            n = len(memnet.attempts)
            lost = memnet.crash()
            memnet.proxy.restore()
            with trio.fail_after(1):
                await c.rpc.when1("Reconnecting")
            nursery.start_soon(call, "Foo")  # queued while disconnected
            await memnet.wait_attempts(n + 3)
            memnet.down = False  # the attempt at 2.75 s: the session expired at 2 s
            with trio.fail_after(10):
                await c.rpc.when1("Ready")
            assert trio.current_time() - lost == pytest.approx(2.75, abs=1e-3)
        assert c.welcome is not None and c.welcome["resumed"] is False
        assert c.sid != sid and c.epoch == epoch
        assert [s.sid for s in memnet.server.sessions] == [c.sid]
        assert isinstance(outcomes["Secret"], rpc.OutcomeUnknownError)
        assert outcomes["Foo"] == am.Result.EXECUTED
        assert src.tick("Foo") == 1 and src.tick("Secret") == 0
        assert c.mach.time() == src.time()
    await assert_intact_mem(src, memnet)


async def test_max_pending_and_requests_kept_across_a_reconnect(
    autojump_clock: trio.testing.MockClock, src: am.Machine, memnet: MemNet
) -> None:
    """While disconnected, up to ``max_pending`` requests wait: beyond that a plain call
    returns CANCELED (``ErrDelivery``) and ``*_remote`` raises ``NotConnectedError``;
    the ones that waited are sent after the reconnect and applied exactly once."""
    async with rpc.connect(
        MEM_URL, id="c1", heartbeat=0.1, reconnect=BACKOFF_45, max_pending=3
    ) as c:
        with trio.fail_after(1):
            await c.rpc.when1("Ready")
        memnet.crash()
        with trio.fail_after(1):
            await c.rpc.when1("Reconnecting")
        results: list[am.Result] = []

        async def call() -> None:
            results.append(await c.mach.toggle1_remote("B"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            assert c.mach.add1("Foo") == am.Result.QUEUED
            assert c.mach.add1("Bar") == am.Result.QUEUED
            assert not c.rpc.is1("ErrDelivery")
            assert c.mach.add1("Foo") == am.Result.CANCELED
            assert c.rpc.is1("ErrDelivery")
            with pytest.raises(rpc.NotConnectedError):
                await c.mach.add1_remote("Foo")
            with pytest.raises(rpc.NotConnectedError):
                await c.mach.toggle_remote(["Foo"])
            memnet.down = False
            with trio.fail_after(5):
                await c.rpc.when1("Ready")
        assert results == [am.Result.EXECUTED]
        assert src.is1("Foo") and src.is1("Bar") and src.is1("B")
        assert src.tick("Foo") == 1 and src.tick("Bar") == 1 and src.tick("B") == 1
        with trio.fail_after(1):
            await c.mach.when(["Foo", "Bar", "B"])
        assert c.mach.time() == src.time()
        assert not c.rpc.is1("ErrDelivery")  # cleared by the handshake
    await assert_intact_mem(src, memnet)


# -- 47. Silent cut
async def test_47_silent_cut_seen_from_both_sides(src: am.Machine, server: rpc.Server) -> None:
    events = Events(server.rpc, "PeerError", "ClientDisconnected")
    async with (
        FaultyProxy(server.urls[1]) as proxy,
        rpc.connect(proxy.url, id="c1", **client_kw()) as c,
    ):
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        sid = c.sid
        assert await c.mach.add1_remote("Foo") == am.Result.EXECUTED
        proxy.blackhole("both")
        with trio.fail_after(0.3):
            await c.rpc.when1("ErrNetworkTimeout")
            while not any(a["code"] == rpc.ErrorCode.TIMEOUT for a in events.args["PeerError"]):
                await server.rpc.when_ticks("PeerError", 1)
        with trio.fail_after(2):
            while not events.args["ClientDisconnected"]:
                await server.rpc.when_ticks("ClientDisconnected", 1)
        # the session is kept, without a connection, for session_ttl
        [info] = [s for s in server.sessions if s.client_id == "c1"]
        assert info.sid == sid and not info.connected
        src.add1("Bar")  # changes made during the cut reach the resumed mirror
        with trio.fail_after(1):
            await c.rpc.when1("Reconnecting")
        proxy.restore()
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        assert c.welcome is not None and c.welcome["resumed"] is True and c.sid == sid
        assert c.mach.is1("Bar") and c.mach.time() == src.time()
        assert not c.rpc.is1("ErrNetworkTimeout") and not c.rpc.is1("Exception")
        assert await c.mach.remove1_remote("Bar") == am.Result.EXECUTED
    await assert_intact(src, server)


# -- 49. Many clients, one port
async def test_49_many_clients_one_port(src: am.Machine, server: rpc.Server) -> None:
    events = Events(server.rpc, "ClientConnected", "ClientDisconnected")
    ids = [f"c{i}" for i in range(50)]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(rpc.connect(server.urls[0], id=i, **client_kw()))
            for i in ids
        ]
        with trio.fail_after(5):
            for c in clients:
                await c.rpc.when1("Ready")
        assert server.rpc.is1("HasClients")
        assert len(server.sessions) == 50
        src.add1("C")
        with trio.fail_after(1):
            for c in clients:
                await c.mach.when(["A", "C"])
        assert src.is1("A") and src.is1("C")
        for c in clients:
            assert c.mach.time() == src.time()
    with trio.fail_after(2):
        await server.rpc.when_not1("HasClients")
    assert Counter(a["client"] for a in events.args["ClientConnected"]) == Counter(ids)
    assert Counter(a["client"] for a in events.args["ClientDisconnected"]) == Counter(ids)
    assert server.sessions == []  # BYE ends the sessions: nothing left to resume
    await assert_intact(src, server)


# -- more faults
async def run_src_server(
    src: am.Machine,
    urls: list[str],
    stop: trio.Event,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[rpc.Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``src`` in a task (for ``nursery.start``) until ``stop``; ``done`` is set
    once the server is fully shut down (its ports are free again)."""
    try:
        async with rpc.serve(src, *urls, **SERVER_KW) as srv:
            task_status.started(srv)
            await stop.wait()
    finally:
        done.set()


async def test_server_shutdown_clients_see_shutdown_and_reconnect(src: am.Machine) -> None:
    """Leaving ``serve()`` sends ``ERROR SHUTDOWN`` (fatal) and closes WS with 1001; the
    clients reconnect to the restarted server (a new epoch) and mirror it again."""
    run_server = functools.partial(run_src_server, src)
    async with trio.open_nursery() as nursery:
        stop1, done1 = trio.Event(), trio.Event()
        s1: rpc.Server = await nursery.start(
            run_server, ["ws://127.0.0.1:0", "tcp://127.0.0.1:0"], stop1, done1
        )
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(rpc.connect(url, id=f"c{i}", **client_kw()))
                for i, url in enumerate(s1.urls)
            ]
            errs = [Events(c.rpc, "ErrRpc") for c in clients]
            raw = await stack.enter_async_context(open_raw(s1.urls[0], keepalive=0.05))
            await raw.hello(id="r1")
            with trio.fail_after(2):
                for c in clients:
                    await c.rpc.when1("Ready")
            assert await clients[0].mach.add1_remote("Foo") == am.Result.EXECUTED
            stop1.set()
            frames = await expect_closed(raw)  # maybe a CLOCK (Foo), then the ERROR
            assert {f[0] for f in frames[:-1]} <= {Kind.CLOCK}, frames
            assert error_fields(frames[-1]) == (None, rpc.ErrorCode.SHUTDOWN, True)
            assert raw.stream.close_code == 1001
            with trio.fail_after(2):
                for c in clients:
                    await c.rpc.when1("Reconnecting")
                await done1.wait()
            for e in errs:
                assert [a["err"].code for a in e.args["ErrRpc"]] == [rpc.ErrorCode.SHUTDOWN]
            src.add1("Bar")
            stop2, done2 = trio.Event(), trio.Event()
            s2: rpc.Server = await nursery.start(run_server, s1.urls, stop2, done2)
            assert s2.urls == s1.urls and s2.epoch != s1.epoch
            with trio.fail_after(3):
                for c in clients:
                    await c.rpc.when1("Ready")
            for c in clients:
                assert c.epoch == s2.epoch
                assert c.welcome is not None and c.welcome["resumed"] is False
                assert c.mach.is1("Bar") and c.mach.time() == src.time()
                assert not c.rpc.is1("Exception")
            assert await clients[1].mach.remove1_remote("Bar") == am.Result.EXECUTED
        await assert_intact(src, s2)
        stop2.set()


async def test_call_timeout_late_answer_still_updates_the_mirror(src: am.Machine) -> None:
    """``call_timeout`` raises ``trio.TooSlowError``, but the request stays tracked: the
    late RESULT updates the mirror, and the connection goes on."""
    async with rpc.serve(src, "tcp://127.0.0.1:0", push_interval=0.005, heartbeat=None) as srv:
        async with (
            FaultyProxy(srv.urls[0]) as proxy,
            rpc.connect(proxy.url, id="c1", heartbeat=None, call_timeout=0.05) as c,
        ):
            with trio.fail_after(2):
                await c.rpc.when1("Ready")
            proxy.throttle(100, "down")  # a RESULT of ~20 bytes takes ~0.2 s
            with pytest.raises(trio.TooSlowError):
                await c.mach.add1_remote("Foo")
            assert not c.mach.is1("Foo")
            with trio.fail_after(2):
                await c.mach.when1("Foo")
            assert proxy.frames_down[Kind.RESULT] == 1
            assert src.tick("Foo") == 1 and c.mach.time() == src.time()
            proxy.restore()
            assert await c.mach.add1_remote("Bar") == am.Result.EXECUTED
            assert c.mach.time() == src.time()
            assert not c.rpc.is1("Exception") and not c.rpc.is1("Resyncing")
        await assert_intact(src, srv)


@pytest.mark.parametrize("resend", [False, True], ids=["fail", "resend"])
async def test_new_epoch_fails_or_resends_the_sent_requests(src: am.Machine, resend: bool) -> None:
    """A request sent into a cut, then the server restarts (a new epoch): by default it
    fails with ``OutcomeUnknownError`` and is not applied; with
    ``resend_on_new_epoch=True`` it is sent again and applied once."""
    async with trio.open_nursery() as nursery:
        stop1, done1 = trio.Event(), trio.Event()
        s1: rpc.Server = await nursery.start(
            run_src_server, src, ["tcp://127.0.0.1:0"], stop1, done1
        )
        async with (
            FaultyProxy(s1.urls[0]) as proxy,
            rpc.connect(proxy.url, id="c1", resend_on_new_epoch=resend, **client_kw()) as c,
        ):
            with trio.fail_after(2):
                await c.rpc.when1("Ready")
            outcome: list[Any] = []
            answered = trio.Event()

            async def call() -> None:
                try:
                    outcome.append(await c.mach.toggle1_remote("Foo"))
                except Exception as exc:
                    outcome.append(exc)
                answered.set()

            nursery.start_soon(call)
            proxy.blackhole("up")
            with trio.fail_after(2):
                await proxy.wait_for(lambda: proxy.dropped_up[Kind.MUTATE] == 1)
            stop1.set()
            with trio.fail_after(2):
                await done1.wait()
                await c.rpc.when1("Reconnecting")
            proxy.restore()
            stop2, done2 = trio.Event(), trio.Event()
            s2: rpc.Server = await nursery.start(run_src_server, src, s1.urls, stop2, done2)
            with trio.fail_after(3):
                while not (c.rpc.is1("Ready") and c.epoch == s2.epoch):
                    await c.rpc.when_ticks("Ready", 1)
                await answered.wait()
            if resend:
                assert outcome == [am.Result.EXECUTED]
                assert src.tick("Foo") == 1
            else:
                assert len(outcome) == 1 and isinstance(outcome[0], rpc.OutcomeUnknownError)
                assert src.tick("Foo") == 0
            assert c.welcome is not None and c.welcome["resumed"] is False
            assert c.mach.time() == src.time()
            # Bar requires Foo: the mirror and the source agree on what was applied
            expected = am.Result.EXECUTED if resend else am.Result.CANCELED
            assert await c.mach.add1_remote("Bar") == expected
        await assert_intact(src, s2)
        stop2.set()


@pytest.mark.skipif(
    sys.platform != "linux", reason="needs a refused loopback connect that never waits on I/O"
)
async def test_45_backoff_schedule_closed_tcp_port(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same schedule against a closed TCP port, for a client that never connected
    (the loss is the first refused dial). On Linux a refused loopback connect fails
    inside ``connect()`` itself, so no virtual time passes while dialing."""
    attempts: list[float] = []
    enough = trio.Event()

    class Dials:
        def Connecting_state(self, e: am.Event) -> None:
            attempts.append(trio.current_time())
            if len(attempts) == 6:
                enough.set()

    start = trio.current_time()
    url = f"tcp://127.0.0.1:{free_port()}"
    async with rpc.connect(url, id="c1", heartbeat=0.1, reconnect=BACKOFF_45) as c:
        c.rpc.bind_handlers(Dials())  # the first dial (at `start`) already failed
        with trio.fail_after(10):
            await enough.wait()
        offsets = [t - start for t in attempts[:5]]
        assert offsets == pytest.approx([0.25, 0.75, 1.75, 2.75, 3.75], abs=1e-3)
        assert c.rpc.is1("Reconnecting") and c.rpc.is1("ErrNetwork")
        assert not c.rpc.is1("Connected")


async def test_bad_frames_from_the_server_are_never_applied(
    src: am.Machine, server: rpc.Server
) -> None:
    """B11 rule 4: the client checks the server's frames too. A delta with an unknown
    index or a bad checksum is dropped and a SYNC brings a SNAPSHOT; an unknown kind is
    reported (``ErrRpc``) and skipped; the mirror ends equal to the source."""
    async with (
        FaultyProxy(server.urls[1]) as proxy,
        rpc.connect(proxy.url, id="c1", **client_kw()) as c,
    ):
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        names = c.mach.state_names
        secret = names.index("Secret")
        secret_seen: list[int] = []

        class Watch:
            def Secret_state(self, e: am.Event) -> None:
                secret_seen.append(c.mach.tick("Secret"))

        c.mach.bind_handlers(Watch())

        # (a) an index out of range
        proxy.rewrite_next(Kind.CLOCK, lambda f: [*f[:3], [[len(names) + 3, 1], *f[3][1:]]])
        src.add1("Foo")
        with trio.fail_after(2):
            await c.mach.when1("Foo")
        assert proxy.frames_up[Kind.SYNC] == 1 and proxy.frames_down[Kind.SNAPSHOT] == 1
        assert c.mach.time() == src.time()
        # (b) a bad checksum on a delta that would activate Secret
        proxy.rewrite_next(Kind.CLOCK, lambda f: [*f[:3], [[secret, 1], 0, 0, 12345]])
        src.add1("Bar")
        with trio.fail_after(2):
            await c.mach.when1("Bar")
        assert proxy.frames_up[Kind.SYNC] == 2 and proxy.frames_down[Kind.SNAPSHOT] == 2
        assert c.rpc.tick("MetricSync") >= 2
        assert c.mach.time() == src.time()
        # (c) an unknown kind (its delta is lost: the next delta has a gap and resyncs)
        proxy.rewrite_next(Kind.CLOCK, lambda f: [99, *f[1:]])
        src.remove1("Bar")
        with trio.fail_after(2):
            await c.rpc.when1("ErrRpc")
        src.remove1("Foo")
        with trio.fail_after(2):
            await c.mach.when_not(["Foo", "Bar"])
        assert c.mach.time() == src.time()
        assert secret_seen == [] and c.mach.tick("Secret") == 0
        assert c.rpc.is1("Ready")
        assert await c.mach.add1_remote("Foo") == am.Result.EXECUTED
    await assert_intact(src, server)


async def test_reset_connection_resumes_the_session(src: am.Machine, server: rpc.Server) -> None:
    """An abrupt reset (RST / WS 1006): the client reconnects at once and resumes the
    session; the server counted one ``ClientDisconnected``."""
    events = Events(server.rpc, "ClientDisconnected")
    async with (
        FaultyProxy(server.urls[0]) as proxy,
        rpc.connect(proxy.url, id="c1", **client_kw()) as c,
    ):
        with trio.fail_after(2):
            await c.rpc.when1("Ready")
        sid, ready = c.sid, c.rpc.tick("Ready")
        proxy.reset()
        with trio.fail_after(2):
            await c.rpc.when_time1("Ready", ready + 2)  # left Ready, then back
        assert c.welcome is not None and c.welcome["resumed"] is True and c.sid == sid
        with trio.fail_after(2):
            while not events.args["ClientDisconnected"]:
                await server.rpc.when_ticks("ClientDisconnected", 1)
        assert [a["client"] for a in events.args["ClientDisconnected"]] == ["c1"]
        assert [s.sid for s in server.sessions] == [sid]
        assert not c.rpc.is1("Exception")
        src.add1("Foo")
        with trio.fail_after(1):
            await c.mach.when1("Foo")
        assert c.mach.time() == src.time()
    await assert_intact(src, server)
