"""Acceptance scenarios A to E of scenarios-arpc.md (handshake, clock sync, mutations,
payloads and getters, auth), plus the variants around them.

Every scenario ends with :func:`assert_intact`, the "checked after every scenario"
invariant: ``src`` has no ``Exception``, the server still serves, and a fresh client
``probe`` reaches ``Ready`` within 2 s with ``mach.time() == src.time()``.

Real sockets use the real clock (bounds are generous limits, never measurements);
"virtual time" scenarios run on ``MockClock`` (pytest-trio's ``autojump_clock``) over
``memory_pair`` streams.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import trio_am as am
from trio_am import rpc
from trio_am.args import args_key
from trio_am.rpc.protocol import FLAG_NO_RESULT, Kind, Op
from trio_am.rpc.testing import FaultyProxy, memory_pair
from trio_am.rpc.transport import StreamClosed

from .conftest import SERVER_KW, SRC_SCHEMA, SrcHandlers, client_kw
from .raw import Raw, open_raw, pack, unpack

WS, TCP = 0, 1  # indexes into server.urls


# ------------------------------------------------------------------------------ helpers
async def ready(client: rpc.Client, timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        await client.rpc.when1("Ready")


async def probe(src: am.Machine, client: rpc.Client) -> None:
    await ready(client)
    assert client.mach.time() == src.time()
    assert client.mach.state_names == src.state_names


async def assert_intact(src: am.Machine, server: rpc.Server) -> None:
    """The "checked after every scenario" invariant: nothing got corrupted."""
    assert not src.is1("Exception"), src.active_states()
    assert server.rpc.is1("Start") and server.rpc.is1("Listening")
    assert server._nursery is not None and not server._nursery.cancel_scope.cancel_called
    if server.urls:
        for url in server.urls:
            async with rpc.connect(url, id="probe", **client_kw()) as client:
                await probe(src, client)
    else:  # a memory-only server (virtual time)
        a, b = memory_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, b)
            async with rpc.attach(a, id="probe", **client_kw()) as client:
                await probe(src, client)
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def serve_src(src: am.Machine, *urls: str, **kw: Any) -> AsyncIterator[rpc.Server]:
    """The scenario server with extra options (``kw`` overrides SERVER_KW); with no URLs,
    a memory-only server for ``serve_stream``."""
    handlers = SrcHandlers()
    src.bind_handlers(handlers)
    opts = {**SERVER_KW, **kw}
    if not urls and "urls" not in kw:
        urls = ("ws://127.0.0.1:0", "tcp://127.0.0.1:0")
    async with rpc.serve(src, *urls, **opts) as srv:
        handlers.server = srv
        yield srv


@asynccontextmanager
async def mem_server(src: am.Machine, **kw: Any) -> AsyncIterator[rpc.Server]:
    """A server with no listener (virtual time tests connect through memory pairs)."""
    handlers = SrcHandlers()
    src.bind_handlers(handlers)
    async with rpc.serve(src, **{**SERVER_KW, **kw}) as srv:
        handlers.server = srv
        yield srv


class Recorder:
    """Records decoded frames of one kind passing a FaultyProxy (forwarded unchanged)."""

    def __init__(self, proxy: FaultyProxy, kind: int, direction: str = "down") -> None:
        self.proxy = proxy
        self.kind = kind
        self.direction = direction
        self.frames: list[list[Any]] = []
        self.arm()

    def arm(self) -> None:
        self.proxy.rewrite_next(self.kind, self._rec, self.direction)

    def _rec(self, frame: list[Any]) -> list[Any]:
        self.frames.append(frame)
        self.arm()
        return frame


def consumer_machine(id: str) -> tuple[am.Machine, list[rpc.Payload]]:
    got: list[rpc.Payload] = []

    class H:
        def ServerPayload_state(self, e: am.Event) -> None:
            got.append(e.args["payload"])

    cons = am.Machine(rpc.CONSUMER_SCHEMA, id=id)
    cons.bind_handlers(H())
    return cons, got


# ======================================================================================
# A. Handshake and basics
# ======================================================================================
@pytest.mark.parametrize("which", [WS, TCP], ids=["ws", "tcp"])
async def test_01_connect(src: am.Machine, server: rpc.Server, which: int) -> None:
    src.add1("Foo")
    before = server.rpc.tick("ClientConnected")
    async with rpc.connect(server.urls[which], id="c1", **client_kw()) as client:
        assert client.mach.id == "rnm-c1"
        await ready(client)
        assert client.mach.state_names == src.state_names
        assert client.mach.time() == src.time()
        assert client.mach.id == "rnm-c1"
        assert client.mach.remote_id == "src"
        assert client.mach.is1("Foo") and client.mach.tick("Foo") == 1
        assert server.rpc.is1("HasClients")
        assert server.rpc.tick("ClientConnected") > before
        assert client.welcome is not None
        assert client.sid is not None and client.sid == client.welcome["sid"]
        assert len(client.sid) == 32
        assert [s.client_id for s in server.sessions] == ["c1"]
    await assert_intact(src, server)


async def test_01_tcp_first_bytes_are_the_welcome_length(
    src: am.Machine, server: rpc.Server
) -> None:
    host, port = server.urls[TCP].removeprefix("tcp://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        hello = pack([Kind.HELLO, {"proto": 1, "id": "bytes"}])
        await stream.send_all(struct.pack(">I", len(hello)) + hello)
        buf = b""
        with trio.fail_after(2):
            while len(buf) < 4:
                buf += await stream.receive_some(4 - len(buf))
            (n,) = struct.unpack(">I", buf[:4])
            body = b""
            while len(body) < n:
                body += await stream.receive_some(n - len(body))
        welcome = unpack(body)
        assert welcome[0] == Kind.WELCOME  # exactly n bytes decode as the WELCOME frame
        assert welcome[1]["names"] == src.state_names
        assert welcome[1]["proto"] == 1 and welcome[1]["resumed"] is False
        assert welcome[1]["time"] == list(src.time())
    await assert_intact(src, server)


async def test_01_welcome_fields(src: am.Machine, server: rpc.Server) -> None:
    async with open_raw(server.urls[WS]) as raw:
        w = await raw.hello(id="r1")
    assert w["proto"] == 1 and w["id"] == "src" and w["resumed"] is False
    assert isinstance(w["sid"], str) and len(w["sid"]) == 32
    assert w["epoch"] == server.epoch
    assert w["names"] == src.state_names and w["complete"] is True
    assert isinstance(w["hash"], bytes) and len(w["hash"]) == 16
    assert w["schema"] is not None and w["schema"]["Bar"]["require"] == ["Foo"]
    assert w["limits"]["hb"] == 0.1 and w["limits"]["push"] == 0.005
    assert w["seq"] >= 1 and w["ack"] == 0
    # the same hash in HELLO: no schema sent
    async with open_raw(server.urls[TCP]) as raw:
        w2 = await raw.hello(id="r2", hash=w["hash"])
    assert w2["schema"] is None and w2["hash"] == w["hash"]
    await assert_intact(src, server)


@pytest.mark.parametrize("which", [WS, TCP], ids=["ws", "tcp"])
async def test_03_version_mismatch(src: am.Machine, server: rpc.Server, which: int) -> None:
    async with rpc.connect(server.urls[WS], id="c2", **client_kw()) as c2:
        await ready(c2)
        ready_tick = c2.rpc.tick("Ready")
        time = src.time()
        async with open_raw(server.urls[which]) as raw:
            frame = await raw.hello_reply(proto=2)
            assert frame[0] == Kind.ERROR
            _, req, code, _msg, fatal, detail = frame
            assert code == 5 and fatal is True and req is None
            assert detail["supported"] == [1]
            with pytest.raises(StreamClosed):
                await raw.recv()
            if which == WS:
                assert raw.stream.close_code == 1002  # WS_CLOSE
        assert c2.rpc.is1("Ready") and c2.rpc.tick("Ready") == ready_tick
        assert src.time() == time
        assert await c2.mach.add1_remote("Foo") == am.Result.EXECUTED
    await assert_intact(src, server)


async def test_03_client_gives_up_on_version_error(src: am.Machine) -> None:
    """A server answering VERSION: the client adds ErrRpc and ReconnectFailed, no retry."""
    a, b = memory_pair()

    async def fake_server() -> None:
        raw = Raw(b)
        hello = await raw.recv()
        assert hello[0] == Kind.HELLO
        await raw.send([Kind.ERROR, None, 5, "unsupported", True, {"supported": [9]}])
        await b.aclose(1002)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_server)
        async with rpc.attach(a, id="c1", **client_kw()) as client:
            with trio.fail_after(2):
                await client.rpc.when1("ReconnectFailed")
            assert client.rpc.is1("ErrRpc")
            assert not client.rpc.is1("Ready") and not client.rpc.is1("Start")
            assert client.rpc.tick("Reconnecting") == 0  # not retried


@pytest.mark.parametrize(
    "first",
    [
        [Kind.SYNC, 1],  # not HELLO
        [Kind.HELLO, {"proto": 1, "id": "bad id!"}],  # id out of [A-Za-z0-9._-]
        [Kind.HELLO, {"proto": 1, "id": "x" * 129}],
        [Kind.HELLO, {"proto": 1, "id": "r", "allow": "Foo"}],
        [Kind.HELLO, "nope"],
    ],
    ids=["not-hello", "bad-id", "long-id", "bad-allow", "not-a-map"],
)
async def test_03_bad_hello_is_fatal(src: am.Machine, server: rpc.Server, first: Any) -> None:
    pe = server.rpc.tick("PeerError")
    async with open_raw(server.urls[WS]) as raw:
        await raw.send(first)
        frame = await raw.recv()
        assert frame[0] == Kind.ERROR
        assert frame[2] == 6 and frame[4] is True  # HANDSHAKE, fatal
        with pytest.raises(StreamClosed):
            await raw.recv()
        assert raw.stream.close_code == 1002
    assert server.rpc.tick("PeerError") > pe
    assert list(src.time()) == [0] * len(src.state_names)
    await assert_intact(src, server)


async def test_05_handshake_timeout_virtual(autojump_clock: trio.testing.MockClock) -> None:
    async with am.open_machine(SRC_SCHEMA, id="src") as src, mem_server(src) as server:
        a, b = memory_pair()
        pe = server.rpc.tick("PeerError")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, b)
            raw = Raw(a)
            t0 = trio.current_time()
            frame = await raw.recv(timeout=10)
            assert trio.current_time() - t0 == pytest.approx(0.5, abs=1e-6)
            assert frame[0] == Kind.ERROR and frame[2] == 6 and frame[4] is True
            with pytest.raises(StreamClosed):
                await raw.recv(timeout=10)
            assert a.close_code == 1002
        assert server.rpc.tick("PeerError") > pe
        await assert_intact(src, server)


async def test_05_handshake_timeout_ws(src: am.Machine, server: rpc.Server) -> None:
    pe = server.rpc.tick("PeerError")
    async with open_raw(server.urls[WS]) as raw:
        frame = await raw.recv(timeout=3)
        assert frame[0] == Kind.ERROR and frame[2] == 6 and frame[4] is True
        with pytest.raises(StreamClosed):
            await raw.recv()
        assert raw.stream.close_code == 1002
    assert server.rpc.tick("PeerError") > pe
    await assert_intact(src, server)


# ======================================================================================
# B. Clock sync
# ======================================================================================
@pytest.mark.parametrize("which", [WS, TCP], ids=["ws", "tcp"])
async def test_07_push_of_a_server_change(src: am.Machine, server: rpc.Server, which: int) -> None:
    async with FaultyProxy(server.urls[which]) as proxy:
        clocks = Recorder(proxy, Kind.CLOCK)
        async with rpc.connect(proxy.url, id="c1", **client_kw()) as client:
            await ready(client)
            assert client.welcome is not None
            src.add1("Foo")
            with trio.fail_after(0.1):
                await client.mach.when1("Foo")
            assert client.mach.tick("Foo") == 1
            await client.get("tags")  # a round trip: anything pushed before is counted
            assert proxy.frames_down[Kind.CLOCK] == 1
            assert len(clocks.frames) == 1
            assert clocks.frames[0][1] == client.welcome["seq"] + 1
            assert client.mach.time() == src.time()
    await assert_intact(src, server)


async def test_07_auto_states_and_relations_reach_the_mirror(
    src: am.Machine, server: rpc.Server
) -> None:
    async with rpc.connect(server.urls[TCP], id="c1", **client_kw()) as client:
        await ready(client)
        src.add1("D")  # adds C and B; A is auto (requires C)
        assert src.is1("A") and src.is1("B") and src.is1("C")
        with trio.fail_after(1):
            await client.mach.when(["A", "B", "C", "D"])
        assert client.mach.time() == src.time()
        src.remove1("C")  # A loses its requirement
        with trio.fail_after(1):
            await client.mach.when_not(["A", "C"])
        assert client.mach.time() == src.time()
    await assert_intact(src, server)


async def test_07_per_mutation_mode(src: am.Machine) -> None:
    """``muts=True``: a burst of transitions arrives as one MUTATIONS frame with one
    entry per mutation, and the mirror runs one transition per entry."""
    async with serve_src(src, push_interval=0.2) as server:
        async with FaultyProxy(server.urls[TCP]) as proxy:
            rec = Recorder(proxy, Kind.MUTATIONS)
            async with rpc.connect(proxy.url, id="c1", muts=True, **client_kw()) as client:
                await ready(client)
                seen: list[tuple[str, ...]] = []

                class T:
                    def transition_end(self, tx: Any) -> None:
                        seen.append(tuple(client.mach.active_states()))

                client.mach.bind_tracer(T())
                src.add1("Foo")
                src.add1("Bar")
                src.remove1("Bar")
                src.add1("Secret")
                with trio.fail_after(2):
                    await client.mach.when1("Secret")
                assert client.mach.time() == src.time()
                assert proxy.frames_down[Kind.CLOCK] == 0
                assert len(rec.frames) >= 1
                entries = [e for f in rec.frames for e in f[3]]
                names = src.state_names
                called = [[names[i] for i in e[1]] for e in entries if e[1]]
                assert called == [["Foo"], ["Bar"], ["Bar"], ["Secret"]]
                assert len(seen) == 4
                assert seen[0] == ("Foo",) and set(seen[1]) == {"Foo", "Bar"}
                assert seen[2] == ("Foo",) and set(seen[3]) == {"Foo", "Secret"}
        await assert_intact(src, server)


@pytest.mark.parametrize("which", [WS, TCP], ids=["ws", "tcp"])
async def test_09_the_diff_rides_on_the_result(
    src: am.Machine, server: rpc.Server, which: int
) -> None:
    async with FaultyProxy(server.urls[which]) as proxy:
        results = Recorder(proxy, Kind.RESULT)
        async with rpc.connect(proxy.url, id="c1", **client_kw()) as client:
            await ready(client)
            n0 = len(proxy.log)
            r = await client.mach.add1_remote("Foo")
            assert r == am.Result.EXECUTED
            assert client.mach.is1("Foo")  # no checkpoint since the call returned
            assert client.mach.tick("Foo") == 1
            assert len(results.frames) == 1
            res = results.frames[0]
            d = res[3]
            assert d is not None
            assert d[0] == [src.state_names.index("Foo"), 1]
            log = [(direction, kind) for direction, kind, _ in proxy.log[n0:]]
            i = log.index(("up", Kind.MUTATE))
            j = log.index(("down", Kind.RESULT))
            assert i < j
            assert ("down", Kind.CLOCK) not in log[i:j]
            # nothing else changed: no CLOCK follows either
            await client.get("tags")
            assert proxy.frames_down[Kind.CLOCK] == 0
            assert client.mach.time() == src.time()
            # adding an active state changes no state tick, only the queue tick
            assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED
            d2 = results.frames[1][3]
            assert d2 is not None and d2[0] == [] and d2[1] == 1
            assert results.frames[1][1] == res[1] + 1
            assert client.mach.tick("Foo") == 1 and client.mach.time() == src.time()
    await assert_intact(src, server)


async def test_11_queue_tick(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[TCP], id="c1", **client_kw()) as client:
        await ready(client)
        m = client.mach
        calls: list[Callable[[], Any]] = [
            lambda: m.add1_remote("Foo"),
            lambda: m.add1_remote("Bar"),
            lambda: m.remove1_remote("Bar"),
            lambda: m.toggle1_remote("Foo"),
            lambda: m.set_remote(["Foo", "Secret"]),
            lambda: m.add1_remote("D"),
            lambda: m.remove_remote(["C"]),
            lambda: m.toggle_remote(["Secret"]),
            lambda: m.add_remote(["Foo", "Bar"]),
            lambda: m.add1_remote("Bar"),  # already active: the queue tick still moves
        ]
        qts = []
        for call in calls:
            await call()
            assert m.queue_tick == src.queue_tick
            assert m.time() == src.time()
            qts.append(m.queue_tick)
            w = m.when_queue(src.queue_tick)
            assert w.is_set()  # returns without waiting
            await w
        assert qts == sorted(qts) and qts[-1] > qts[0]
    await assert_intact(src, server)


@pytest.mark.parametrize(("bursts", "per_burst"), [(80, 125)])
async def test_13_slow_reader_virtual(
    autojump_clock: trio.testing.MockClock, bursts: int, per_burst: int
) -> None:
    async with am.open_machine(SRC_SCHEMA, id="src") as src, mem_server(src) as server:
        c_cli, c_px = memory_pair()
        s_px, s_srv = memory_pair()
        proxy = FaultyProxy("tcp://127.0.0.1:9")  # never entered: only pumps the pairs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, s_srv)
            nursery.start_soon(proxy.pump, c_px, s_px)
            async with rpc.attach(c_cli, id="c1", **client_kw()) as client:
                await ready(client)
                assert client.sid is not None
                proxy.throttle(2_000, "down")
                samples = []
                t0 = trio.current_time()
                # 10 000 toggles spread evenly over 2 s of virtual time
                for _ in range(bursts):
                    for _ in range(per_burst):
                        src.toggle1("Foo")
                    samples.append(server.session_stats(client.sid).outbound_frames)
                    await trio.sleep(2.0 / bursts)
                    samples.append(server.session_stats(client.sid).outbound_frames)
                assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.01)
                assert max(samples) <= 2
                proxy.restore()
                with trio.fail_after(5):
                    await client.mach.when_query(lambda _: client.mach.time() == src.time())
                assert proxy.frames_down[Kind.CLOCK] < 100
                assert src.tick("Foo") == 10_000
                assert client.mach.time() == src.time()
                assert not client.rpc.is1("Resyncing") and client.rpc.tick("MetricSync") == 0
            nursery.cancel_scope.cancel()
        await assert_intact(src, server)


async def test_13_saturated_link_gets_merged_deltas_virtual(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The link is the bottleneck (a toggle every ms, far more than it carries): deltas
    merge at send time, the session's queue stays short, and the mirror ends exact."""
    async with am.open_machine(SRC_SCHEMA, id="src") as src, mem_server(src) as server:
        c_cli, c_px = memory_pair()
        s_px, s_srv = memory_pair(buffer=1)
        proxy = FaultyProxy("tcp://127.0.0.1:9")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, s_srv)
            nursery.start_soon(proxy.pump, c_px, s_px)
            async with rpc.attach(c_cli, id="c1", **client_kw()) as client:
                await ready(client)
                assert client.sid is not None
                proxy.throttle(500, "down")
                worst = 0
                for i in range(2000):
                    src.toggle1("Foo")
                    if i % 3 == 0:
                        src.toggle1("B")
                    worst = max(worst, server.session_stats(client.sid).outbound_frames)
                    await trio.sleep(0.001)
                assert worst <= 2
                # 500 B/s for 2 s carries well under 100 small frames; 2000 were due
                assert proxy.frames_down[Kind.CLOCK] < 100
                proxy.restore()
                with trio.fail_after(5):
                    await client.mach.when_query(lambda _: client.mach.time() == src.time())
                assert client.rpc.tick("MetricSync") == 0
            nursery.cancel_scope.cancel()
        await assert_intact(src, server)


async def test_15_shallow_clocks(src: am.Machine) -> None:
    async with serve_src(src, push_interval=0.5) as server:
        async with FaultyProxy(server.urls[WS]) as proxy:
            async with rpc.connect(proxy.url, id="c1", shallow=True, **client_kw()) as client:
                await ready(client)
                assert client.welcome is not None and client.welcome["limits"]["push"] == 0.5
                src.add1("Foo")
                src.remove1("Foo")
                src.add1("Foo")
                with trio.fail_after(2):
                    await client.mach.when1("Foo")
                assert client.mach.is1("Foo")
                assert client.mach.tick("Foo") == 1
                assert src.tick("Foo") == 3
                assert proxy.frames_down[Kind.CLOCK] == 1
        await assert_intact(src, server)


async def test_15_shallow_clocks_virtual(autojump_clock: trio.testing.MockClock) -> None:
    async with am.open_machine(SRC_SCHEMA, id="src") as src:
        src.add1("Foo")
        src.remove1("Foo")
        src.add1("Foo")  # tick 3 before the client connects
        async with mem_server(src, push_interval=0.5) as server:
            a, b = memory_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_stream, b)
                async with rpc.attach(a, id="c1", shallow=True, **client_kw()) as client:
                    await ready(client)
                    m = client.mach
                    assert m.is1("Foo") and m.tick("Foo") == 1  # the WELCOME is shallow too
                    t0 = trio.current_time()
                    src.remove1("Foo")
                    src.add1("Foo")
                    src.remove1("Foo")
                    with trio.fail_after(1):
                        await m.when_not1("Foo")
                    assert trio.current_time() - t0 <= 0.5 + 1e-6  # one push interval
                    assert m.tick("Foo") == 2 and src.tick("Foo") == 6
                    # an even number of changes between two pushes: nothing to send
                    src.add1("Foo")
                    src.remove1("Foo")
                    src.add1("B")
                    src.add1("B")  # multi: re-activated, still active
                    with trio.fail_after(1):
                        await m.when1("B")
                    assert m.tick("Foo") == 2 and not m.is1("Foo")
                    assert m.tick("B") == 1 and src.tick("B") > 1
                    assert m.is1("C") and m.tick("C") == 1
                    src.remove1("B")
                    with trio.fail_after(1):
                        await m.when_not1("B")
                    assert m.tick("B") == 2
                    # parity always matches the source
                    for name in src.state_names:
                        assert m.is1(name) == src.is1(name), name
                        assert m.tick(name) <= src.tick(name)
                nursery.cancel_scope.cancel()
            await assert_intact(src, server)


async def test_17_no_schema(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[TCP], id="c1", schema=False, **client_kw()) as client:
        await ready(client)
        m = client.mach
        assert client.welcome is not None and client.welcome["schema"] is None
        assert m.schema is None
        assert m.state_names == src.state_names
        with pytest.raises(rpc.UnsupportedError):
            m.can_add(["Foo"])
        with pytest.raises(rpc.UnsupportedError):
            m.can_remove(["Foo"])
        waiter = m.when1("Foo")
        assert not m.is1("Foo")
        src.add1("Foo")
        with trio.fail_after(1):
            await waiter
        assert m.is1("Foo") and m.tick("Foo") == 1
        # relations are not known: nothing is inferred
        assert m.inferred_states() == []
        assert await m.add1_remote("Bar") == am.Result.EXECUTED
        assert m.is1("Bar") and m.time() == src.time()
    await assert_intact(src, server)


async def test_17_schema_is_known_by_default(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as client:
        await ready(client)
        m = client.mach
        assert m.schema is not None
        assert m.schema["Bar"].require == ("Foo",)
        assert m.schema["B"].multi
        assert m.can_add(["Bar"]) == am.Result.CANCELED  # Bar requires Foo
        assert m.can_add(["Foo"]) == am.Result.EXECUTED
        with pytest.raises(rpc.UnsupportedError):
            m.when_args("Foo", {"x": 1})
    await assert_intact(src, server)


@pytest.mark.parametrize(
    "opts", [{"allow": ["Bar", "Secret"]}, {"skip": ["Foo"]}], ids=["allow", "skip"]
)
async def test_partial_sync_and_inferred_states(
    src: am.Machine, server: rpc.Server, opts: dict[str, Any]
) -> None:
    foo = src.state_names.index("Foo")
    async with FaultyProxy(server.urls[TCP]) as proxy:
        clocks = Recorder(proxy, Kind.CLOCK)
        async with rpc.connect(proxy.url, id="c1", **opts, **client_kw()) as client:
            await ready(client)
            m = client.mach
            assert m.state_names == src.state_names  # all names, only some tracked
            src.add(["Foo", "Bar"])
            with trio.fail_after(1):
                await m.when1("Bar")
            assert m.tick("Bar") == 1
            assert m.tick("Foo") == 0  # not synced
            assert m.is1("Foo")  # but inferred: Bar requires Foo
            assert m.inferred_states() == ["Foo"]
            assert all(
                frame[3][0][k] != foo
                for frame in clocks.frames
                for k in range(0, len(frame[3][0]), 2)
            )
            src.remove1("Bar")
            with trio.fail_after(1):
                await m.when_not1("Bar")
            assert src.is1("Foo") and not m.is1("Foo")  # no longer inferred
            assert m.inferred_states() == []
            # mutations of untracked states still go to the server
            assert await m.remove1_remote("Foo") == am.Result.EXECUTED
            assert not src.is1("Foo") and m.tick("Foo") == 0
            assert m.tick("Bar") == src.tick("Bar")
    await assert_intact(src, server)


# ======================================================================================
# C. Mutations and results
# ======================================================================================
async def test_19_toggle_is_decided_on_the_server(src: am.Machine, server: rpc.Server) -> None:
    async with (
        rpc.connect(server.urls[WS], id="c1", **client_kw()) as c1,
        rpc.connect(server.urls[TCP], id="c2", **client_kw()) as c2,
    ):
        await ready(c1)
        await ready(c2)
        results: list[am.Result] = []

        async def run(client: rpc.Client) -> None:
            for _ in range(100):
                results.append(await client.mach.toggle1_remote("Foo"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, c1)
            nursery.start_soon(run, c2)
        assert results == [am.Result.EXECUTED] * 200
        assert src.tick("Foo") == 200
        assert not src.is1("Foo")
        for c in (c1, c2):
            mirror = c.mach
            with trio.fail_after(2):
                await mirror.when_query(lambda _: mirror.time() == src.time())
            assert c.mach.time() == src.time()
            assert c.mach.queue_tick == src.queue_tick
    await assert_intact(src, server)


async def test_19_plain_toggle_returns_queued(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[TCP], id="c1", **client_kw()) as client:
        await ready(client)
        m = client.mach
        assert m.toggle1("Foo") == am.Result.QUEUED
        assert m.add1("Secret") == am.Result.QUEUED
        assert m.toggle(["Foo", "Secret"]) == am.Result.QUEUED
        assert m.add(["Bar"]) == am.Result.QUEUED
        assert not src.is1("Foo")  # nothing applied locally, nor remotely yet
        with trio.fail_after(2):
            await m.when_query(lambda _: src.tick("Bar") == 0 and src.tick("Secret") == 2)
        await client.sync()
        assert src.tick("Foo") == 2 and src.tick("Secret") == 2 and src.tick("Bar") == 0
        assert m.time() == src.time()
        assert not client.rpc.is1("ErrDelivery")
    await assert_intact(src, server)


async def test_21_no_result_mode(src: am.Machine, server: rpc.Server) -> None:
    async with FaultyProxy(server.urls[TCP]) as proxy:
        snaps = Recorder(proxy, Kind.SNAPSHOT)
        async with rpc.connect(proxy.url, id="c1", **client_kw()) as client:
            await ready(client)
            m = client.mach
            for _ in range(250):
                assert m.add1_ns("Foo") == am.Result.QUEUED
                assert m.remove1_ns("Foo") == am.Result.QUEUED
            await client.sync()
            assert proxy.frames_down[Kind.RESULT] == 0
            assert proxy.frames_up[Kind.MUTATE] == 500
            assert len(snaps.frames) == 1
            assert snaps.frames[0][2] == 501  # 500 mutations plus the SYNC
            assert snaps.frames[0][6] == 501  # the SNAPSHOT answers that SYNC
            assert src.tick("Foo") == 500
            assert m.time() == src.time()
            assert not client.rpc.is1("Resyncing")
    await assert_intact(src, server)


async def test_21_ns_variants(src: am.Machine, server: rpc.Server) -> None:
    async with FaultyProxy(server.urls[WS]) as proxy:
        async with rpc.connect(proxy.url, id="c1", **client_kw()) as client:
            await ready(client)
            m = client.mach
            assert m.add_ns(["Foo", "Secret"]) == am.Result.QUEUED
            assert m.set_ns(["Foo", "D"]) == am.Result.QUEUED
            assert m.toggle1_ns("Secret") == am.Result.QUEUED
            assert m.remove_ns(["D"]) == am.Result.QUEUED
            await client.sync()
            assert proxy.frames_down[Kind.RESULT] == 0
            assert src.is1("Foo") and src.is1("Secret") and not src.is1("D")
            assert src.is1("B") and src.is1("C")  # D added them
            assert m.time() == src.time()
            # a refused *_ns mutation: no RESULT, an ERROR naming the request
            assert m.add1_ns("Bar", {"n": 1}) == am.Result.QUEUED  # Bar needs Foo: fine
            await client.sync()
            assert src.is1("Bar") and proxy.frames_down[Kind.ERROR] == 0
    await assert_intact(src, server)


async def test_21_refused_ns_adds_err_delivery(src: am.Machine) -> None:
    auth = rpc.TokenAuth({"t1": rpc.Grant(mutable={"Foo"})})
    async with serve_src(src, auth=auth) as server:
        async with rpc.connect(server.urls[TCP], id="c1", token="t1", **client_kw()) as client:
            await ready(client)
            assert client.mach.add1_ns("Secret") == am.Result.QUEUED
            with trio.fail_after(2):
                await client.rpc.when1("ErrDelivery")
            err = client.rpc.when1("ErrDelivery")
            assert err.is_set()
            assert src.tick("Secret") == 0
            assert client.rpc.is1("Ready")  # not fatal
            assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED
        async with rpc.connect(server.urls[TCP], id="probe", token="t1", **client_kw()) as c:
            await probe(src, c)
        assert not src.is1("Exception")


@pytest.mark.parametrize("where", ["client", "server"])
async def test_23_args_limits(src: am.Machine, where: str) -> None:
    """(a) too large and (b) too deep: ArgsError code 10, nothing applied, the link
    keeps working. ``where="server"``: the client's own limits are lifted, so the
    server's check answers (BAD_ARGS)."""
    async with serve_src(src) as server:
        async with FaultyProxy(server.urls[TCP]) as proxy:
            kw = client_kw()
            if where == "server":
                kw["limits"] = rpc.Limits(args=1 << 20, args_depth=1000)
            async with rpc.connect(proxy.url, id="c1", **kw) as client:
                await ready(client)
                m = client.mach
                time = src.time()
                deep: Any = 1
                for _ in range(40):
                    deep = [deep]
                for args in ({"s": "x" * 100_000}, {"d": deep}):
                    with pytest.raises(rpc.ArgsError) as info:
                        await m.add1_remote("Foo", args)
                    assert info.value.code == 10
                    assert not isinstance(info.value, rpc.ArgsEncodeError)
                    assert src.time() == time
                    assert client.rpc.is1("Ready")
                assert proxy.frames_down[Kind.ERROR] == (2 if where == "server" else 0)
                # (c) a value that cannot travel: raised locally, 0 bytes sent
                bytes_up, frames_out = proxy.bytes_up, client.frames_out
                with socket.socket() as sock:
                    with pytest.raises(rpc.ArgsEncodeError):
                        await m.add1_remote("Foo", {"sock": sock})
                    with pytest.raises(rpc.ArgsEncodeError):
                        m.add1("Foo", {"sock": sock})
                assert proxy.bytes_up == bytes_up and client.frames_out == frames_out
                assert src.time() == time
                assert await m.add1_remote("Foo") == am.Result.EXECUTED
                assert src.tick("Foo") == 1
        await assert_intact(src, server)


async def test_23_server_args_limit_is_announced_and_enforced(src: am.Machine) -> None:
    async with serve_src(src, max_args=1000) as server:
        async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as client:
            await ready(client)
            assert client.welcome is not None
            assert client.welcome["limits"]["args"] == 1000
            with pytest.raises(rpc.ArgsError) as info:
                await client.mach.add1_remote("Foo", {"s": "x" * 5000})
            assert info.value.code == 10
            assert not src.is1("Foo")
            assert await client.mach.add1_remote("Foo", {"s": "x" * 100}) == am.Result.EXECUTED
        # the same over raw frames: ERROR 10 names the request, non-fatal
        async with open_raw(server.urls[TCP]) as raw:
            await raw.hello(id="r1")
            req = await raw.mutate(Op.REMOVE, [raw.idx("Foo")], {"s": "x" * 5000})
            err = await raw.recv_kind(Kind.ERROR)
            assert err[1] == req and err[2] == 10 and err[4] is False
            req = await raw.mutate(Op.REMOVE, [raw.idx("Foo")])
            res = await raw.recv_kind(Kind.RESULT)
            assert res[4] == req and res[5] == 0
        assert not src.is1("Foo")
        await assert_intact(src, server)


async def test_25_mutation_source(src: am.Machine, server: rpc.Server) -> None:
    sources: list[Any] = []

    class H:
        def Foo_state(self, e: am.Event) -> None:
            sources.append(e.transition.mutation.source)

    src.bind_handlers(H())
    async with rpc.connect(server.urls[TCP], id="c1", **client_kw()) as client:
        await ready(client)
        assert client.welcome is not None
        assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED
        assert len(sources) == 1
        s = sources[0]
        assert s.mach_id == "c1"
        assert s.session_id == client.welcome["sid"] == client.sid
    src.remove1("Foo")
    async with open_raw(server.urls[WS]) as raw:
        w = await raw.hello(id="r1")
        req = await raw.mutate(Op.ADD, [raw.idx("Foo")], src=["page-7", "tx9", 42])
        res = await raw.recv_kind(Kind.RESULT)
        assert res[4] == req and res[5] == 0
    assert len(sources) == 2
    s = sources[1]
    assert (s.mach_id, s.tx_id, s.mach_time) == ("page-7", "tx9", 42)
    assert s.session_id == w["sid"]
    # a local mutation has no remote source
    src.remove1("Foo")
    src.add1("Foo")
    assert sources[2] is None
    await assert_intact(src, server)


async def test_25_source_of_a_mutation_from_a_handler(src: am.Machine, server: rpc.Server) -> None:
    """A NetMachine mutation made from a handler of another machine carries that
    machine's id, transition id and time (``src`` of MUTATE)."""
    sources: list[Any] = []

    class H:
        def Secret_state(self, e: am.Event) -> None:
            sources.append(e.transition.mutation.source)

    src.bind_handlers(H())
    async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as client:
        await ready(client)
        local = am.Machine({"Go": {}}, id="page-7")
        tx_ids: list[str] = []

        class L:
            def Go_state(self, e: am.Event) -> None:
                tx_ids.append(e.transition.id)
                client.mach.add1("Secret", event=e)

        local.bind_handlers(L())
        local.add1("Go")
        with trio.fail_after(2):
            await client.mach.when1("Secret")
        assert len(sources) == 1
        s = sources[0]
        assert s.mach_id == "page-7" and s.tx_id == tx_ids[0]
        assert s.mach_time == sum(local.time())
        assert s.session_id == client.sid
        local.dispose()
    await assert_intact(src, server)


# ======================================================================================
# D. Payloads and getters
# ======================================================================================
def events(mach: am.Machine, state: str) -> int:
    """How many times multi state ``state`` was added (the first add ticks it once, each
    one while it is active twice)."""
    return (mach.tick(state) + 1) // 2


async def when_events(mach: am.Machine, state: str, before: int, n: int = 1) -> None:
    """Wait until multi state ``state`` had ``n`` more events than ``before``."""
    with trio.fail_after(2):
        await mach.when_query(lambda clock: (clock[state] + 1) // 2 >= before + n)


async def test_27_getter_flow_and_broadcast(src: am.Machine, server: rpc.Server) -> None:
    cons1, got1 = consumer_machine("cons1")
    cons2, got2 = consumer_machine("cons2")
    cons3, got3 = consumer_machine("cons3")
    async with (
        rpc.connect(server.urls[WS], id="c1", consumer=cons1, **client_kw()) as c1,
        rpc.connect(server.urls[TCP], id="c2", consumer=cons2, **client_kw()) as c2,
    ):
        await ready(c1)
        await ready(c2)
        delivered = events(server.rpc, "PayloadDelivered")
        tick2 = cons2.tick("ServerPayload")
        tx_ids: list[str] = []

        class H:
            def Provide_enter(self, e: am.Event) -> None:
                tx_ids.append(e.transition.id)

        src.bind_handlers(H())
        r = await c1.mach.add1_remote("Provide", {"name": "x", "data": b"\x01"})
        assert r == am.Result.EXECUTED
        await when_events(server.rpc, "PayloadDelivered", delivered)
        assert len(got1) == 1
        p = got1[0]
        assert (p.name, p.data, p.source) == ("x", b"\x01", "src")
        assert p.source_tx == tx_ids[0] and p.dest is None
        assert c1.rpc.tick("ServerPayload") >= 1
        await c2.get("tags")  # a round trip: anything sent to c2 before has arrived
        assert cons2.tick("ServerPayload") == tick2 and got2 == []
        assert events(server.rpc, "PayloadDelivered") == delivered + 1
        # broadcast: every session allowed payloads, each acks
        async with rpc.connect(server.urls[WS], id="c3", consumer=cons3, **client_kw()) as c3:
            await ready(c3)
            with trio.fail_after(2):
                n = await server.send_payload("news", 1)
            assert n == 3
            for got in (got1, got2, got3):
                assert [(q.name, q.data) for q in got if q.name == "news"] == [("news", 1)]
                news = [q for q in got if q.name == "news"][0]
                assert news.source == "src" and news.source_tx == "" and news.dest is None
            assert len(got1) == 2 and len(got2) == 1 and len(got3) == 1
            # dest: only the sessions of that client
            with trio.fail_after(2):
                assert await server.send_payload("dm", {"k": [1, 2]}, dest="c2") == 1
            assert [q.data for q in got2 if q.name == "dm"] == [{"k": [1, 2]}]
            assert got2[-1].dest == "c2"
            await c1.get("tags")
            await c3.get("tags")
            assert all(q.name != "dm" for q in got1 + got3)
    await assert_intact(src, server)


async def test_27_broadcast_nowait_ticks_payload_delivered(
    src: am.Machine, server: rpc.Server
) -> None:
    cons1, got1 = consumer_machine("cons1")
    cons2, got2 = consumer_machine("cons2")
    async with (
        rpc.connect(server.urls[WS], id="c1", consumer=cons1, **client_kw()) as c1,
        rpc.connect(server.urls[TCP], id="c2", consumer=cons2, **client_kw()) as c2,
    ):
        await ready(c1)
        await ready(c2)
        before = events(server.rpc, "PayloadDelivered")
        assert server.send_payload_nowait("ping", "p") == 2
        await when_events(server.rpc, "PayloadDelivered", before, 2)
        assert [q.data for q in got1] == ["p"] and [q.data for q in got2] == ["p"]
        # src.add1("Provide") is local (no remote caller): a broadcast
        before = events(server.rpc, "PayloadDelivered")
        src.add1("Provide", {"name": "local", "data": 7})
        await when_events(server.rpc, "PayloadDelivered", before, 2)
        assert got1[-1].name == got2[-1].name == "local"
    await assert_intact(src, server)


async def test_27_forwarded_payload_keeps_its_source(src: am.Machine, server: rpc.Server) -> None:
    cons1, got1 = consumer_machine("cons1")
    async with rpc.connect(server.urls[TCP], id="c1", consumer=cons1, **client_kw()) as c1:
        await ready(c1)
        with trio.fail_after(2):
            assert await server.send_payload("fwd", b"r", source="worker-7") == 1
            assert server.send_payload_nowait("own", 2) == 1
            await cons1.when_time1("ServerPayload", 3)
        assert [(q.name, q.data, q.source) for q in got1] == [
            ("fwd", b"r", "worker-7"),
            ("own", 2, "src"),
        ]
    await assert_intact(src, server)


async def test_27_refused_and_oversized_payloads(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[TCP], id="nocons", **client_kw()) as client:
        await ready(client)
        with pytest.raises(rpc.DeliveryError) as info:
            with trio.fail_after(2):
                await server.send_payload("x", 1)
        assert info.value.code == 18
        assert client.rpc.is1("ErrDelivery")
        assert client.rpc.is1("Ready")  # not fatal
        frames_in = client.frames_in
        with pytest.raises(rpc.PayloadTooLargeError):
            await server.send_payload("big", b"x" * (2 << 20))
        with pytest.raises(rpc.ArgsEncodeError):
            server.send_payload_nowait("bad", object())
        await client.get("tags")
        assert client.frames_in == frames_in + 1  # only the VALUE: nothing was sent
    await assert_intact(src, server)


async def test_27_grant_without_payloads(src: am.Machine) -> None:
    auth = rpc.TokenAuth({"yes": rpc.Grant(), "no": rpc.Grant(payloads=False)})
    async with serve_src(src, auth=auth) as server:
        cons1, got1 = consumer_machine("cons1")
        cons2, got2 = consumer_machine("cons2")
        async with (
            rpc.connect(server.urls[WS], id="c1", token="yes", consumer=cons1, **client_kw()) as c1,
            rpc.connect(server.urls[TCP], id="c2", token="no", consumer=cons2, **client_kw()) as c2,
        ):
            await ready(c1)
            await ready(c2)
            assert c2.grant["payloads"] is False
            with trio.fail_after(2):
                assert await server.send_payload("news", 1) == 1
            await c2.get("tags")
            assert len(got1) == 1 and got2 == []
        async with rpc.connect(server.urls[TCP], id="probe", token="yes", **client_kw()) as c:
            await probe(src, c)


@am.typed_args(prefix="scen")
@attrs.define
class AMsg:
    text: str = ""


async def test_29_getters(src: am.Machine) -> None:
    auth = rpc.TokenAuth(
        {
            "all": rpc.Grant(),
            "none": rpc.Grant(getters=set()),
            "tags": rpc.Grant(getters={"tags"}),
        }
    )
    async with serve_src(src, auth=auth, args_types=[AMsg]) as server:
        async with rpc.connect(server.urls[WS], id="c1", token="all", **client_kw()) as c1:
            await ready(c1)
            assert await c1.get("args") == [args_key(AMsg)] == ["scen__Any"]
            with pytest.raises(rpc.UnsupportedError) as info:
                await c1.get("nope")
            assert info.value.code == 17
            assert c1.rpc.is1("Ready")
            assert await c1.get("tags") == []
            src.add1("Foo")
            export = await c1.get("export")
            assert export["id"] == "src"
            assert export["state_names"] == src.state_names
            assert export["time"] == list(src.time())
            assert export["queue_tick"] == src.queue_tick
        async with rpc.connect(server.urls[TCP], id="c2", token="none", **client_kw()) as c2:
            await ready(c2)
            with pytest.raises(rpc.AuthError) as info2:
                await c2.get("args")
            assert info2.value.code == 8
            assert not info2.value.fatal
            assert c2.rpc.is1("Ready") and c2.rpc.tick("Ready") == 1  # not fatal
            with pytest.raises(rpc.UnsupportedError):  # unknown beats forbidden
                await c2.get("nope")
            assert await c2.mach.add1_remote("Secret") == am.Result.EXECUTED
            assert c2.grant["getters"] == []
        async with rpc.connect(server.urls[TCP], id="c3", token="tags", **client_kw()) as c3:
            await ready(c3)
            assert await c3.get("tags") == []
            with pytest.raises(rpc.AuthError):
                await c3.get("export")
        async with rpc.connect(server.urls[TCP], id="probe", token="all", **client_kw()) as c:
            await probe(src, c)
        assert not src.is1("Exception")


async def test_29_custom_getters_and_tags() -> None:
    async with am.open_machine(SRC_SCHEMA, id="src", tags=("env:test", "gpu")) as src:
        async with serve_src(src) as server:
            seen: list[Any] = []

            def echo(info: rpc.SessionInfo, params: Any) -> Any:
                seen.append(info)
                return {"client": info.client_id, "params": params}

            async def slow(info: rpc.SessionInfo, params: Any) -> Any:
                await trio.sleep(0)
                return [info.sid]

            def broken(info: rpc.SessionInfo, params: Any) -> Any:
                return object()  # cannot travel

            server.add_getter("echo", echo)
            server.add_getter("slow", slow)
            server.add_getter("broken", broken)
            async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as c1:
                await ready(c1)
                assert await c1.get("tags") == ["env:test", "gpu"]
                assert await c1.get("echo", {"a": 1}) == {"client": "c1", "params": {"a": 1}}
                assert await c1.get("echo") == {"client": "c1", "params": None}
                assert seen[0].sid == c1.sid and seen[0].connected
                assert await c1.get("slow") == [c1.sid]
                with pytest.raises(rpc.RpcError) as info:
                    await c1.get("broken")
                assert info.value.code == 15  # INTERNAL, non-fatal
                assert await c1.get("tags") == ["env:test", "gpu"]
                assert c1.rpc.tick("Ready") == 1
            await assert_intact(src, server)


async def test_29_raw_get_frames(src: am.Machine, server: rpc.Server) -> None:
    async with open_raw(server.urls[TCP]) as raw:
        await raw.hello(id="r1")
        req = await raw.get("tags")
        assert await raw.recv_kind(Kind.VALUE) == [Kind.VALUE, req, []]
        req = await raw.get("nope", {"x": 1})
        err = await raw.recv_kind(Kind.ERROR)
        assert err[1] == req and err[2] == 17 and err[4] is False
        # a request id that does not grow: REQ_ORDER (11), nothing answered otherwise
        await raw.send([Kind.GET, req, "tags"])
        err = await raw.recv_kind(Kind.ERROR)
        assert err[1] == req and err[2] == 11 and err[4] is False
        req = await raw.get("tags")
        assert (await raw.recv_kind(Kind.VALUE))[1] == req
    await assert_intact(src, server)


# ======================================================================================
# E. Auth and ACL
# ======================================================================================
FOO_ONLY = rpc.TokenAuth({"t1": rpc.Grant(mutable={"Foo"}), "root": rpc.Grant()})


async def test_31_mutable_subset(src: am.Machine) -> None:
    async with serve_src(src, auth=FOO_ONLY) as server:
        async with rpc.connect(server.urls[WS], id="c1", token="t1", **client_kw()) as client:
            await ready(client)
            m = client.mach
            assert client.grant["mutable"] == ["Foo"]
            assert m.state_names == src.state_names  # readable: all
            assert await m.add1_remote("Foo") == am.Result.EXECUTED
            with pytest.raises(rpc.AuthError) as info:
                await m.add1_remote("Secret")
            assert info.value.code == 8 and not info.value.fatal
            assert "Secret" in str(info.value)
            assert src.tick("Secret") == 0
            assert await m.remove1_remote("Foo") == am.Result.EXECUTED
            foo, qt = src.tick("Foo"), src.queue_tick
            with pytest.raises(rpc.AuthError) as info:
                await m.add_remote(["Foo", "Secret"])
            assert info.value.code == 8
            assert src.tick("Foo") == foo == 2  # all or nothing
            assert src.queue_tick == qt and src.tick("Secret") == 0
            for call in (
                lambda: m.toggle1_remote("Bar"),
                lambda: m.remove_remote(["Foo", "Bar"]),
                lambda: m.mutate_remote("add", ["Secret"]),
            ):
                with pytest.raises(rpc.AuthError):
                    await call()
            # an error mutation needs Exception (and ErrOnClient) to be mutable
            with pytest.raises(rpc.AuthError):
                await m.add_err_remote(ValueError("boom"))
            assert not src.is1("Exception")
            assert client.rpc.is1("Ready") and client.rpc.tick("Ready") == 1
            assert m.time() == src.time()
        async with rpc.connect(server.urls[TCP], id="probe", token="t1", **client_kw()) as c:
            await probe(src, c)
        assert not src.is1("Exception")


async def test_31_refused_mutation_over_raw_frames(src: am.Machine) -> None:
    async with serve_src(src, auth=FOO_ONLY) as server:
        async with open_raw(server.urls[TCP]) as raw:
            w = await raw.hello(id="r1", token="t1")
            assert w["grant"]["mutable"] == ["Foo"]
            req = await raw.mutate(Op.ADD, [raw.idx("Foo"), raw.idx("Secret")])
            err = await raw.recv_kind(Kind.ERROR)
            assert err[1] == req and err[2] == 8 and err[4] is False
            assert "Secret" in err[3] and "Foo" not in err[3].split(":", 1)[-1]
            # unknown and repeated indexes: UNKNOWN_STATE (9)
            for idxs in ([len(w["names"])], [raw.idx("Foo"), raw.idx("Foo")]):
                req = await raw.mutate(Op.ADD, idxs)
                err = await raw.recv_kind(Kind.ERROR)
                assert err[1] == req and err[2] == 9 and err[4] is False
            req = await raw.mutate(Op.ADD, [raw.idx("Foo")])
            res = await raw.recv_kind(Kind.RESULT)
            assert res[4] == req and res[5] == 0
        assert src.is1("Foo") and src.tick("Secret") == 0
        async with rpc.connect(server.urls[TCP], id="probe", token="t1", **client_kw()) as c:
            await probe(src, c)


async def test_33_set_counts_as_removing(src: am.Machine) -> None:
    async with serve_src(src, auth=FOO_ONLY) as server:
        src.add1("Secret")
        async with rpc.connect(server.urls[TCP], id="c1", token="t1", **client_kw()) as client:
            await ready(client)
            active, time = src.active_states(), src.time()
            with pytest.raises(rpc.AuthError) as info:
                await client.mach.set_remote(["Foo"])
            assert info.value.code == 8
            assert "Secret" in str(info.value)
            assert src.active_states() == active and src.time() == time
            with pytest.raises(rpc.AuthError):
                await client.mach.set_remote(["Foo", "Secret"])  # names Secret itself
            assert src.active_states() == active
            src.remove1("Secret")
            assert await client.mach.set_remote(["Foo"]) == am.Result.EXECUTED
            assert src.active_states() == ["Foo"]
        async with rpc.connect(server.urls[TCP], id="probe", token="t1", **client_kw()) as c:
            await probe(src, c)
        assert not src.is1("Exception")


@pytest.mark.parametrize("which", [WS, TCP], ids=["ws", "tcp"])
async def test_auth_refused(src: am.Machine, which: int) -> None:
    async with serve_src(src, auth=FOO_ONLY) as server:
        rejected = events(server.rpc, "ClientRejected")
        async with rpc.connect(server.urls[which], id="c1", token="wrong", **client_kw()) as c:
            with trio.fail_after(2):
                await c.rpc.when1("ReconnectFailed")
            assert c.rpc.is1("ErrAuth")
            assert not c.rpc.is1("Start") and not c.rpc.is1("Ready")
            assert c.rpc.tick("Reconnecting") == 0  # AUTH is not retried
            assert c.rpc.tick("HandshakeDone") == 0
            assert c.mach.state_names == ["Exception"]  # no WELCOME, no states
            with pytest.raises(rpc.ConnectionLostError):
                await c.mach.add1_remote("Exception")
            with pytest.raises(rpc.ConnectionLostError):
                await c.get("tags")
            assert c.mach.add1("Exception") == am.Result.CANCELED
            assert c.rpc.is1("ErrDelivery")
        assert events(server.rpc, "ClientRejected") == rejected + 1
        assert server.sessions == []
        # no token at all, over raw frames: ERROR 7, fatal, WS close 1008
        async with open_raw(server.urls[which]) as raw:
            frame = await raw.hello_reply(id="r1")
            assert frame[0] == Kind.ERROR and frame[2] == 7 and frame[4] is True
            assert "wrong" not in frame[3]
            with pytest.raises(StreamClosed):
                await raw.recv()
            if which == WS:
                assert raw.stream.close_code == 1008
        assert events(server.rpc, "ClientRejected") == rejected + 2
        assert not src.is1("Foo")
        async with rpc.connect(server.urls[which], id="probe", token="t1", **client_kw()) as c:
            await probe(src, c)
        assert not src.is1("Exception")


async def test_auth_grant_client_ids(src: am.Machine) -> None:
    auth = rpc.TokenAuth({"t": rpc.Grant(client_ids={"alice"})})
    async with serve_src(src, auth=auth) as server:
        async with rpc.connect(server.urls[TCP], id="alice", token="t", **client_kw()) as ok:
            await ready(ok)
        async with rpc.connect(server.urls[TCP], id="bob", token="t", **client_kw()) as bad:
            with trio.fail_after(2):
                await bad.rpc.when1("ReconnectFailed")
            assert bad.rpc.is1("ErrAuth")
        async with rpc.connect(server.urls[WS], id="alice", token="t", **client_kw()) as c:
            await probe(src, c)


async def test_auth_callable_and_peer(src: am.Machine) -> None:
    calls: list[tuple[str, str | None, str]] = []

    async def auth(client_id: str, token: str | None, peer: str) -> rpc.Grant | None:
        calls.append((client_id, token, peer))
        if token == "raise":
            raise RuntimeError("auth backend down")
        return rpc.Grant(readable={"Foo", "Bar"}, mutable={"Foo"}) if token == "ok" else None

    async with serve_src(src, auth=auth) as server:
        async with rpc.connect(server.urls[TCP], id="c1", token="raise", **client_kw()) as c:
            with trio.fail_after(2):
                await c.rpc.when1("ReconnectFailed")
            assert c.rpc.is1("ErrAuth")
        async with rpc.connect(server.urls[TCP], id="c2", token="ok", **client_kw()) as c:
            await ready(c)
            assert c.mach.state_names == ["Exception", "Foo", "Bar"]
        assert [(cid, tok) for cid, tok, _ in calls] == [("c1", "raise"), ("c2", "ok")]
        assert all(peer.startswith("127.0.0.1:") for _, _, peer in calls)
        assert not src.is1("Exception")


async def hidden_checks(src: am.Machine, server: rpc.Server, token: str | None) -> None:
    """Only Foo, Bar and A/C are visible (plus Exception); see the two tests below."""
    names = [n for n in src.state_names if n in ("Exception", "Foo", "Bar", "A", "C")]
    async with FaultyProxy(server.urls[TCP]) as proxy:
        kw = client_kw(token=token) if token else client_kw()
        async with rpc.connect(proxy.url, id="c1", **kw) as client:
            await ready(client)
            m = client.mach
            assert client.welcome is not None
            assert client.welcome["names"] == names and client.welcome["complete"] is False
            assert m.state_names == names
            assert m.schema is not None
            assert m.schema["A"].require == ("C",)
            assert m.schema["C"].after == ()  # D is hidden: the relation is dropped
            assert "Secret" not in m.state_names
            with pytest.raises(am.StateError):
                await m.add1_remote("Secret")
            # changes of hidden states send no ticks (only the queue tick moves)
            clocks = Recorder(proxy, Kind.CLOCK)
            before = list(m.time())
            qt = src.queue_tick
            src.add1("Secret")
            src.add1("Crash")
            with trio.fail_after(1):
                await m.when_queue(src.queue_tick)
            assert src.queue_tick > qt
            assert list(m.time()) == before
            assert clocks.frames and all(f[3][0] == [] for f in clocks.frames)
            # visible ones do
            src.add1("D")  # adds C (and B): A is auto
            with trio.fail_after(1):
                await m.when(["A", "C"])
            assert [m.tick(n) for n in names] == [src.tick(n) for n in names]
            export = await client.get("export")
            assert export["state_names"] == names
            assert export["time"] == [src.tick(n) for n in names]
            assert await m.add1_remote("Foo") == am.Result.EXECUTED
            assert m.is1("Foo")
        # raw: the index past the visible names is unknown
        async with open_raw(server.urls[WS]) as raw:
            w = await raw.hello(id="r1", **({"token": token} if token else {}))
            assert w["names"] == names
            assert set(w["schema"]) == set(names)
            req = await raw.mutate(Op.ADD, [len(names)])
            err = await raw.recv_kind(Kind.ERROR)
            assert err[1] == req and err[2] == 9
    assert not src.is1("Exception")
    src.remove(["Secret", "Crash", "B", "D"])


async def test_grant_readable_subset(src: am.Machine) -> None:
    grant = rpc.Grant(readable={"Foo", "Bar", "A", "C"}, mutable={"Foo"})
    async with serve_src(src, auth=rpc.TokenAuth({"t": grant})) as server:
        await hidden_checks(src, server, "t")


async def test_expose(src: am.Machine) -> None:
    async with serve_src(src, expose=["Foo", "Bar", "A", "C"]) as server:
        await hidden_checks(src, server, None)
        async with rpc.connect(server.urls[TCP], id="c2", **client_kw()) as c:
            await ready(c)
            assert c.mach.state_names == ["Exception", "Foo", "Bar", "A", "C"][:1] + [
                n for n in src.state_names if n in ("Foo", "Bar", "A", "C")
            ]
            assert await c.mach.add1_remote("Bar") == am.Result.EXECUTED
            assert list(c.mach.time()) == [src.tick(n) for n in c.mach.state_names]
        assert not src.is1("Exception")


async def test_error_mutation(src: am.Machine, server: rpc.Server) -> None:
    got: list[Any] = []

    class H:
        def Exception_state(self, e: am.Event) -> None:
            got.append(e.args.get("err"))

    src.bind_handlers(H())
    async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as client:
        await ready(client)
        r = await client.mach.add_err_remote(ValueError("boom"))
        assert r == am.Result.EXECUTED
        assert src.is1("Exception") and src.is1("ErrOnClient")
        assert isinstance(got[0], rpc.RemoteError)
        assert "boom" in str(got[0]) and got[0].type_name == "ValueError"
        assert client.mach.is1("Exception") and client.mach.is1("ErrOnClient")
    src.remove(["Exception", "ErrOnClient"])
    await assert_intact(src, server)


async def test_mutate_remote_remote_result(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[TCP], id="c1", **client_kw()) as client:
        await ready(client)
        m = client.mach
        rr = await m.mutate_remote("add", ["Bar"])  # Bar requires Foo
        assert rr == rpc.RemoteResult(am.Result.CANCELED, 0)
        assert rr.result == am.Result.CANCELED and not src.is1("Bar")
        rr = await m.mutate_remote(Op.ADD, ["Foo", "Bar"])
        assert rr.result == am.Result.EXECUTED and rr.queue_tick == 0
        assert await m.mutate_remote("toggle", "Foo") == rpc.RemoteResult(am.Result.EXECUTED)
        assert await m.mutate_remote("set", ["Secret"]) == rpc.RemoteResult(am.Result.EXECUTED)
        assert await m.mutate_remote("remove", ["Secret"]) == rpc.RemoteResult(am.Result.EXECUTED)
        assert m.time() == src.time()
        with pytest.raises(ValueError):
            await m.mutate_remote("explode", ["Foo"])
        with pytest.raises(am.StateError):
            await m.mutate_remote("add", ["Nope"])
    await assert_intact(src, server)


async def test_mutate_remote_queued_result() -> None:
    """A server answering ``res >= 2`` (a queued mutation on a replica source): the
    result is QUEUED and ``queue_tick`` is that value."""
    a, b = memory_pair()
    welcome = {
        "proto": 1, "sid": "0" * 32, "epoch": "e1", "resumed": False, "id": "remote",
        "parent": None, "tags": [], "names": ["Exception", "Foo"], "schema": None,
        "hash": b"\0" * 16, "time": [0, 0], "qt": 0, "mt": 0, "seq": 1, "ack": 0,
        "limits": {"hb": 5, "push": 0.005}, "grant": {},
    }  # fmt: skip

    async def fake_server() -> None:
        raw = Raw(b)
        assert (await raw.recv(timeout=5))[0] == Kind.HELLO
        await raw.send([Kind.WELCOME, welcome])
        mut = await raw.recv_kind(Kind.MUTATE, timeout=5)
        assert mut[2] == Op.ADD and mut[3] == [1]
        # queued at queue tick 7; the delta moves Foo and the queue tick
        await raw.send([Kind.RESULT, 2, mut[1], [[1, 1], 7, 0, 8], mut[1], 7])
        mut = await raw.recv_kind(Kind.MUTATE, timeout=5)
        assert mut[5] == FLAG_NO_RESULT
        await raw.send([Kind.CLOCK, 2, mut[1]])  # ack only
        acked.set()
        await trio.sleep_forever()

    acked = trio.Event()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_server)
        async with rpc.attach(a, id="c1", **client_kw(heartbeat=None)) as client:
            await ready(client)
            rr = await client.mach.mutate_remote("add", ["Foo"])
            assert rr.result == am.Result.QUEUED and rr.queue_tick == 7
            assert rr.result.queue_tick == 7
            assert client.mach.is1("Foo") and client.mach.queue_tick == 7
            w = client.mach.when_queue(7)
            assert w.is_set()
            assert client.mach.add1_ns("Foo") == am.Result.QUEUED
            with trio.fail_after(2):
                await acked.wait()
        nursery.cancel_scope.cancel()


# ======================================================================================
# More variants (mirror behaviour, push negotiation, lifetime)
# ======================================================================================
async def test_mirror_waiters_scopes_and_handlers(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as client:
        await ready(client)
        m = client.mach
        entered: list[str] = []

        class Final:
            def Foo_state(self, e: am.Event) -> None:
                entered.append("Foo")

            def Foo_end(self, e: am.Event) -> None:
                entered.append("-Foo")

        class Negotiation:
            def Foo_enter(self, e: am.Event) -> bool:
                return False

        m.bind_handlers(Final())
        with pytest.raises(am.SchemaError):
            m.bind_handlers(Negotiation())
        # a future queue tick: the waiter resolves when the mirror gets there
        w = m.when_queue(src.queue_tick + 2)
        assert not w.is_set()
        src.add1("Foo")
        with trio.fail_after(1):
            await m.when1("Foo")
        cancelled = trio.Event()

        async def in_scope() -> None:
            with m.state_scope("Foo"):
                await trio.sleep_forever()
            cancelled.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_scope)
            await trio.testing.wait_all_tasks_blocked()
            src.add1("Bar")
            with trio.fail_after(1):
                await w
            src.remove1("Foo")  # Bar goes too (it requires Foo)
            with trio.fail_after(1):
                await cancelled.wait()  # the delta that ended Foo cancelled the scope
        assert entered == ["Foo", "-Foo"]
        assert not m.is1("Bar") and m.time() == src.time()
    await assert_intact(src, server)


async def test_push_interval_negotiation(src: am.Machine, server: rpc.Server) -> None:
    for asked, got in ((0.3, 0.3), (0.0001, 0.005), (1000, 60.0), ("x", 0.005)):
        async with open_raw(server.urls[TCP]) as raw:
            w = await raw.hello(id="r1", push=asked)
            assert w["limits"]["push"] == got
    async with serve_src(src, push_interval=None) as srv2:
        async with rpc.connect(srv2.urls[TCP], id="c1", **client_kw()) as client:
            await ready(client)
            assert client.welcome is not None and client.welcome["limits"]["push"] is None
            src.add1("Foo")  # pushes are off: only a RESULT or a SYNC brings it
            await client.get("tags")
            assert not client.mach.is1("Foo")
            await client.sync()
            assert client.mach.is1("Foo")
            assert await client.mach.add1_remote("Bar") == am.Result.EXECUTED
            assert client.mach.time() == src.time()
    await assert_intact(src, server)


async def test_client_leaving_ends_its_session(src: am.Machine, server: rpc.Server) -> None:
    left = events(server.rpc, "ClientDisconnected")
    async with rpc.connect(server.urls[WS], id="c1", **client_kw()) as c1:
        await ready(c1)
        async with rpc.connect(server.urls[TCP], id="c2", **client_kw()) as c2:
            await ready(c2)
            assert sorted(s.client_id for s in server.sessions) == ["c1", "c2"]
            assert all(s.connected for s in server.sessions)
        await when_events(server.rpc, "ClientDisconnected", left)
        assert server.rpc.is1("HasClients")
        assert [s.client_id for s in server.sessions] == ["c1"]  # BYE: not resumable
    await when_events(server.rpc, "ClientDisconnected", left, 2)
    assert not server.rpc.is1("HasClients")
    assert server.sessions == []
    await assert_intact(src, server)
