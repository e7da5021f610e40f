"""Frame transports (arpc.md B2, B10) and the FaultyProxy test tool.

Real sockets use the real clock with generous ``fail_after`` bounds; throttling is
checked on virtual time over memory pairs.
"""

from __future__ import annotations

import collections
import functools
import logging

import msgpack
import pytest
import trio
import trio.testing
import trio_websocket

from trio_am.rpc import testing as rpc_testing
from trio_am.rpc.testing import FaultyProxy, frame_kind
from trio_am.rpc.transport import (
    DEFAULT_HARD_FRAME,
    DEFAULT_MAX_FRAME,
    SUBPROTOCOL,
    EmptyFrame,
    FrameStream,
    FrameTooLarge,
    StreamClosed,
    TcpFrameStream,
    connect_stream,
    memory_pair,
    parse_url,
    serve_streams,
)

T = 5  # generous upper bound for real-socket waits; never a measurement


def frame(kind, *rest):
    return msgpack.packb([kind, *rest])


async def start(nursery, url, handler, **kw) -> str:
    return await nursery.start(functools.partial(serve_streams, url, handler, **kw))


async def echo(fs: FrameStream) -> None:
    while True:
        try:
            data = await fs.receive_frame()
        except StreamClosed:
            return
        await fs.send_frame(data)


class Recorder:
    """A server handler that reports what its streams receive to the test."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel(1000)
        self.streams: list[FrameStream] = []

    async def handler(self, fs: FrameStream) -> None:
        self.streams.append(fs)
        while True:
            try:
                data = await fs.receive_frame()
            except (FrameTooLarge, EmptyFrame) as exc:
                await self.send.send(("error", exc))
                if getattr(exc, "fatal", False):
                    await fs.send_frame(frame(34, None, 4, "too large", True))
                    return
                continue
            except StreamClosed as exc:
                await self.send.send(("closed", exc))
                return
            await self.send.send(("frame", data))

    async def next(self):
        with trio.fail_after(T):
            return await self.recv.receive()


async def raw_tcp(url: str) -> trio.SocketStream:
    _, host, port, _ = parse_url(url)
    return await trio.open_tcp_stream(host, port)


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    with trio.fail_after(T):
        while data := await stream.receive_some(65536):
            out += data
    return bytes(out)


# ------------------------------------------------------------------------------ URLs
@pytest.mark.parametrize(
    "url, expected",
    [
        ("tcp://127.0.0.1:7501", ("tcp", "127.0.0.1", 7501, "")),
        ("tcp://localhost:0", ("tcp", "localhost", 0, "")),
        ("ws://127.0.0.1:7500", ("ws", "127.0.0.1", 7500, "/")),
        ("ws://example.com/rpc?x=1", ("ws", "example.com", 80, "/rpc?x=1")),
        ("wss://example.com", ("wss", "example.com", 443, "/")),
        ("ws://[::1]:9000/a", ("ws", "::1", 9000, "/a")),
    ],
)
def test_parse_url(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1:80", "scheme"),
        ("tcp://127.0.0.1", "port"),
        ("tcp://127.0.0.1:1/path", "no path"),
        ("ws://:80", "host"),
        ("tcp://127.0.0.1:99999", "port"),
        ("127.0.0.1:7500", "scheme"),
    ],
)
def test_parse_url_errors(url, words):
    with pytest.raises(ValueError, match=words):
        parse_url(url)


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("scheme", ["tcp", "ws"])
async def test_round_trip_and_counters(scheme):
    servers: list[FrameStream] = []

    async def handler(fs):
        servers.append(fs)
        await echo(fs)

    sizes = [1, 100, 70_000, 300_000]
    async with trio.open_nursery() as nursery:
        url = await start(nursery, f"{scheme}://127.0.0.1:0", handler)
        assert url.startswith(f"{scheme}://127.0.0.1:") and not url.endswith(":0")
        client = await connect_stream(url)
        assert client.kind == scheme
        assert client.peer == url.split("://")[1]
        for n in sizes:
            data = bytes([n % 251]) * n
            await client.send_frame(data)
            with trio.fail_after(T):
                assert await client.receive_frame() == data
        over = 4 if scheme == "tcp" else 0
        assert client.frames_out == client.frames_in == len(sizes)
        assert client.bytes_out == client.bytes_in == sum(n + over for n in sizes)
        server = servers[0]
        assert server.kind == scheme and server.peer.startswith("127.0.0.1:")
        assert server.bytes_in == client.bytes_out
        if scheme == "ws":
            assert client.subprotocol == server.subprotocol == SUBPROTOCOL
        await client.aclose()
        assert client.closed
        await client.aclose()  # idempotent
        with pytest.raises(StreamClosed):
            await client.send_frame(b"x")
        with pytest.raises(StreamClosed):
            await client.receive_frame()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("scheme", ["tcp", "ws"])
async def test_concurrent_senders_do_not_interleave(scheme):
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, f"{scheme}://127.0.0.1:0", rec.handler)
        client = await connect_stream(url)

        async def sender(tag: int) -> None:
            for i in range(50):
                await client.send_frame(bytes([tag]) * (1000 + 37 * i))

        async with trio.open_nursery() as senders:
            for tag in (1, 2, 3):
                senders.start_soon(sender, tag)
        seen = collections.Counter()
        for _ in range(150):
            what, data = await rec.next()
            assert what == "frame"
            assert len(set(data)) == 1
            seen[data[0]] += 1
        assert seen == {1: 50, 2: 50, 3: 50}
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_ws_interop_with_trio_websocket():
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", echo)
        async with trio_websocket.open_websocket_url(url) as ws:  # offers no subprotocol
            assert ws.subprotocol is None
            await ws.send_message(b"\x93\x01\x02\x03")
            with trio.fail_after(T):
                assert await ws.get_message() == b"\x93\x01\x02\x03"
        async with trio_websocket.open_websocket_url(url, subprotocols=[SUBPROTOCOL]) as ws:
            assert ws.subprotocol == SUBPROTOCOL
            await ws.ping(b"p1")  # answered while the server reads
        # and our client against a trio-websocket server

        async def ts_handler(request):
            ws = await request.accept(subprotocol=SUBPROTOCOL)
            await ws.send_message(await ws.get_message())
            await ws.aclose(4005, "done")

        server = await nursery.start(
            functools.partial(trio_websocket.serve_websocket, ts_handler, "127.0.0.1", 0, None)
        )
        client = await connect_stream(f"ws://127.0.0.1:{server.port}")
        await client.send_frame(b"abc")
        with trio.fail_after(T):
            assert await client.receive_frame() == b"abc"
            with pytest.raises(StreamClosed) as ei:
                await client.receive_frame()
        assert ei.value.code == 4005 and ei.value.reason == "done"
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_ws_rejects_a_plain_http_request():
    called = []

    async def handler(fs):
        called.append(fs)

    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", handler)
        raw = await raw_tcp(url)
        await raw.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = await read_until_eof(raw)
        assert reply.startswith(b"HTTP/1.1 400")
        assert called == []
        await raw.aclose()
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ memory
async def test_memory_pair_round_trip_and_close_codes():
    assert rpc_testing.memory_pair is memory_pair
    a, b = memory_pair()
    assert (a.kind, a.peer) == ("memory", "memory")
    await a.send_frame(b"one")
    await a.send_frame(b"two")
    assert await b.receive_frame() == b"one"
    await a.aclose(4000, "bye")
    assert a.closed
    assert await b.receive_frame() == b"two"  # sent before the close: still delivered
    with pytest.raises(StreamClosed) as ei:
        await b.receive_frame()
    assert (ei.value.code, ei.value.reason) == (4000, "bye")
    with pytest.raises(StreamClosed):
        await b.send_frame(b"x")
    with pytest.raises(StreamClosed):
        await a.receive_frame()
    assert (a.bytes_out, a.frames_out, b.bytes_in, b.frames_in) == (6, 2, 6, 2)

    c, d = memory_pair()
    async with trio.open_nursery() as nursery:

        async def waiter():
            with pytest.raises(StreamClosed) as ei:
                await d.receive_frame()
            assert ei.value.code == 1006

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        await c.abort()


async def test_memory_pair_limits_and_busy():
    a, b = memory_pair(max_frame=10, hard_frame=20)
    await a.send_frame(b"x" * 10)
    await a.send_frame(b"x" * 11)
    await a.send_frame(b"")
    await a.send_frame(b"ok")
    await a.send_frame(b"x" * 21)
    assert await b.receive_frame() == b"x" * 10
    with pytest.raises(FrameTooLarge) as ei:
        await b.receive_frame()
    assert (ei.value.size, ei.value.fatal) == (11, False)
    with pytest.raises(EmptyFrame):
        await b.receive_frame()
    assert await b.receive_frame() == b"ok"
    with pytest.raises(FrameTooLarge) as ei:
        await b.receive_frame()
    assert (ei.value.size, ei.value.fatal) == (21, True)
    with pytest.raises(StreamClosed):
        await b.receive_frame()

    c, d = memory_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(d.receive_frame)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await d.receive_frame()
        await c.send_frame(b"done")


async def test_memory_pair_backpressure(autojump_clock):
    a, b = memory_pair(buffer=2)
    await a.send_frame(b"1")
    await a.send_frame(b"2")
    with trio.move_on_after(1) as cs:
        await a.send_frame(b"3")
    assert cs.cancelled_caught
    assert await b.receive_frame() == b"1"


# ------------------------------------------------------------------------------ TCP limits
async def test_tcp_too_large_is_skipped_and_stream_stays_usable():
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(
            nursery, "tcp://127.0.0.1:0", rec.handler, max_frame=1000, hard_frame=4000
        )
        raw = await raw_tcp(url)
        ok = frame(40, "ok")
        await raw.send_all((1000).to_bytes(4, "big") + b"a" * 1000)  # exactly max_frame: fine
        await raw.send_all((1001).to_bytes(4, "big") + b"b" * 1001)
        await raw.send_all((4000).to_bytes(4, "big") + b"c" * 4000)
        await raw.send_all(len(ok).to_bytes(4, "big") + ok)
        assert await rec.next() == ("frame", b"a" * 1000)
        for size in (1001, 4000):
            what, exc = await rec.next()
            assert what == "error" and isinstance(exc, FrameTooLarge)
            assert (exc.size, exc.limit, exc.fatal) == (size, 1000, False)
        assert await rec.next() == ("frame", ok)
        assert rec.streams[0].bytes_in == 4 * 4 + 1000 + 1001 + 4000 + len(ok)
        await raw.aclose()
        assert (await rec.next())[0] == "closed"
        nursery.cancel_scope.cancel()


async def test_tcp_scenario_sizes_2mib_skipped():
    assert (DEFAULT_MAX_FRAME, DEFAULT_HARD_FRAME) == (1 << 20, 4 << 20)
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", rec.handler)
        client = await connect_stream(url)
        await client.send_frame(b"\x00" * (2 << 20))
        await client.send_frame(frame(41))
        what, exc = await rec.next()
        assert what == "error" and exc.size == 2 << 20 and not exc.fatal
        assert await rec.next() == ("frame", frame(41))
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_tcp_fatal_prefix_is_judged_without_the_body():
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", rec.handler)
        raw = await raw_tcp(url)
        await raw.send_all(b"\xff\xff\xff\xf0")  # and no body at all
        what, exc = await rec.next()
        assert what == "error" and isinstance(exc, FrameTooLarge)
        assert (exc.size, exc.limit, exc.fatal) == (0xFFFFFFF0, DEFAULT_HARD_FRAME, True)
        assert rec.streams[0].bytes_in == 4
        # the handler answered and returned: the server closed the connection
        reply = await read_until_eof(raw)
        n = int.from_bytes(reply[:4], "big")
        assert msgpack.unpackb(reply[4 : 4 + n]) == [34, None, 4, "too large", True]
        await raw.aclose()
        nursery.cancel_scope.cancel()


async def test_tcp_length_zero_is_empty_frame_and_stream_stays_usable():
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", rec.handler)
        raw = await raw_tcp(url)
        ok = frame(43, 1)
        await raw.send_all(b"\x00\x00\x00\x00" + len(ok).to_bytes(4, "big") + ok)
        what, exc = await rec.next()
        assert what == "error" and isinstance(exc, EmptyFrame)
        assert await rec.next() == ("frame", ok)
        await raw.aclose()
        nursery.cancel_scope.cancel()


async def test_tcp_oversized_body_is_discarded_as_it_arrives_not_buffered():
    left, right = trio.testing.memory_stream_pair()
    fs = TcpFrameStream(right, peer="test", max_frame=100, hard_frame=10_000)
    result = []

    async def receiver():
        with pytest.raises(FrameTooLarge) as ei:
            await fs.receive_frame()
        result.append(ei.value)
        result.append(await fs.receive_frame())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await left.send_all((5000).to_bytes(4, "big") + b"z" * 3000)
        await trio.testing.wait_all_tasks_blocked()
        assert not result  # still waiting for the rest of the body...
        assert len(fs._buf) == 0 and fs._skip == 2000  # ...holding none of it
        await left.send_all(b"z" * 2000 + b"\x00\x00\x00\x02hi")
    assert result[0].size == 5000 and not result[0].fatal
    assert result[1] == b"hi"


async def test_tcp_receive_is_cancel_safe():
    left, right = trio.testing.memory_stream_pair()
    fs = TcpFrameStream(right, peer="test")
    body = frame(45, "x" * 100)
    wire = len(body).to_bytes(4, "big") + body
    cs = trio.CancelScope()

    async def partial_receive():
        with cs:
            await fs.receive_frame()

    await left.send_all(wire[:50])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial_receive)
        await trio.testing.wait_all_tasks_blocked()
        assert len(fs._buf) == 50  # read, waiting for the rest
        cs.cancel()
    await left.send_all(wire[50:])
    with trio.fail_after(T):
        assert await fs.receive_frame() == body


async def test_tcp_peer_close_raises_stream_closed():
    async def handler(fs):
        return  # the server closes at once

    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", handler)
        client = await connect_stream(url)
        with trio.fail_after(T):
            with pytest.raises(StreamClosed) as ei:
                await client.receive_frame()
            assert ei.value.code is None
            with pytest.raises(StreamClosed):  # the same on later calls
                await client.receive_frame()
            with pytest.raises(StreamClosed):
                while True:  # a send may still succeed before the RST comes back
                    await client.send_frame(b"x" * 1000)
        await client.aclose()
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ WS limits
async def test_ws_too_large_then_hard_limit_closes_1009():
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", rec.handler, max_frame=1000, hard_frame=4000)
        client = await connect_stream(url)
        await client.send_frame(b"a" * 1000)
        await client.send_frame(b"b" * 2000)
        await client.send_frame(b"")
        await client.send_frame(b"ok")
        assert await rec.next() == ("frame", b"a" * 1000)
        what, exc = await rec.next()
        assert what == "error" and (exc.size, exc.fatal) == (2000, False)
        what, exc = await rec.next()
        assert what == "error" and isinstance(exc, EmptyFrame)
        assert await rec.next() == ("frame", b"ok")
        await client.send_frame(b"c" * 5000)
        what, exc = await rec.next()
        assert what == "error" and isinstance(exc, FrameTooLarge) and exc.fatal
        assert rec.streams[0].close_code == 1009
        with trio.fail_after(T):
            with pytest.raises(StreamClosed) as ei:
                await client.receive_frame()
        assert ei.value.code == 1009
        assert client.close_code == 1009
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_ws_text_message_closes_1003():
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", rec.handler)
        async with trio_websocket.open_websocket_url(url, subprotocols=[SUBPROTOCOL]) as ws:
            await ws.send_message("hello")
            with trio.fail_after(T):
                with pytest.raises(trio_websocket.ConnectionClosed) as ei:
                    await ws.get_message()
            assert ei.value.reason.code == 1003
            # trio-websocket leaves the socket open when the server closes first
            await ws._stream.aclose()
        what, exc = await rec.next()
        assert what == "closed" and exc.code == 1003
        nursery.cancel_scope.cancel()


async def test_ws_aclose_sends_its_code_both_ways():
    rec = Recorder()

    async def closer(fs):
        await fs.aclose(4001, "go away")

    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", closer)
        client = await connect_stream(url)
        with trio.fail_after(T):
            with pytest.raises(StreamClosed) as ei:
                await client.receive_frame()
        assert (ei.value.code, ei.value.reason) == (4001, "go away")
        assert (client.close_code, client.close_reason) == (4001, "go away")
        await client.aclose()

        url2 = await start(nursery, "ws://127.0.0.1:0", rec.handler)
        client = await connect_stream(url2)
        await client.aclose(4002, "bye")
        what, exc = await rec.next()
        assert what == "closed" and (exc.code, exc.reason) == (4002, "bye")
        nursery.cancel_scope.cancel()


async def test_ws_aclose_while_another_task_receives():
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", echo)
        client = await connect_stream(url)
        done = trio.Event()

        async def reader():
            with pytest.raises(StreamClosed):
                await client.receive_frame()
            done.set()

        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(T):
            await client.aclose(1000)
            await done.wait()
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ serving
async def test_handler_exception_is_logged_and_listener_keeps_serving(caplog):
    calls = []

    async def handler(fs):
        calls.append(fs)
        if len(calls) == 1:
            raise RuntimeError("boom")
        await echo(fs)

    caplog.set_level(logging.ERROR, logger="trio_am.rpc")
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", handler)
        first = await connect_stream(url)
        with trio.fail_after(T), pytest.raises(StreamClosed):
            await first.receive_frame()
        assert calls[0].closed
        assert any("boom" in (r.exc_text or "") or r.exc_info for r in caplog.records)
        second = await connect_stream(url)
        await second.send_frame(b"still here")
        with trio.fail_after(T):
            assert await second.receive_frame() == b"still here"
        await first.aclose()
        await second.aclose()
        nursery.cancel_scope.cancel()


async def test_connect_errors():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        held = []

        async def mute(stream):  # accepts and never answers the WebSocket handshake
            held.append(stream)
            await trio.sleep_forever()

        nursery.start_soon(trio.serve_listeners, mute, listeners)
        with pytest.raises(trio.TooSlowError):
            await connect_stream(f"ws://127.0.0.1:{port}", timeout=0.2)
        nursery.cancel_scope.cancel()
    with pytest.raises(OSError):
        await connect_stream(f"tcp://127.0.0.1:{port}")
    with pytest.raises(ValueError):
        await connect_stream("http://127.0.0.1:1")


# ------------------------------------------------------------------------------ FaultyProxy
async def test_proxy_counts_frames_per_kind_and_bytes():
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", echo)
        async with FaultyProxy(url) as proxy:
            assert proxy.url.startswith("tcp://127.0.0.1:")
            client = await connect_stream(proxy.url)
            frames = [frame(40, 1), frame(40, "two"), frame(41), b"\xc1" * 16]
            for f in frames:
                await client.send_frame(f)
            for f in frames:
                with trio.fail_after(T):
                    assert await client.receive_frame() == f  # garbage forwarded unchanged
            expected = collections.Counter({40: 2, 41: 1, -1: 1})
            assert proxy.frames_up == expected
            assert proxy.frames_down == expected
            assert proxy.bytes_up == proxy.bytes_down == sum(len(f) + 4 for f in frames)
            assert [e[:2] for e in proxy.log if e[0] == "up"] == [
                ("up", 40),
                ("up", 40),
                ("up", 41),
                ("up", -1),
            ]
            assert proxy.connections == 1
            proxy.reset_counters()
            assert proxy.bytes_up == 0 and not proxy.frames_down and not proxy.log
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_proxy_blackhole_up_and_restore():
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", rec.handler)
        async with FaultyProxy(url) as proxy:
            client = await connect_stream(proxy.url)
            proxy.blackhole("up")
            await client.send_frame(frame(50, "lost"))
            with trio.fail_after(T):
                await proxy.wait_for(lambda: proxy.dropped_up[50] == 1)
            proxy.restore()
            await client.send_frame(frame(51, "after"))
            # the first thing the server ever gets is the frame sent after restore()
            assert await rec.next() == ("frame", frame(51, "after"))
            assert proxy.frames_up == {51: 1}
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_proxy_blackhole_down_keeps_connection_open():
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", echo)
        async with FaultyProxy(url) as proxy:
            assert proxy.url.startswith("ws://")
            client = await connect_stream(proxy.url)
            proxy.blackhole("down")
            await client.send_frame(frame(50, "echo lost"))
            with trio.fail_after(T):
                await proxy.wait_for(lambda: proxy.dropped_down[50] == 1)
            assert proxy.frames_up == {50: 1}
            proxy.restore()
            await client.send_frame(frame(52))
            with trio.fail_after(T):
                assert await client.receive_frame() == frame(52)
            assert proxy.bytes_down == len(frame(52))  # WS: payload bytes only
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_proxy_drop_next_and_rewrite_next():
    async with trio.open_nursery() as nursery:
        url = await start(nursery, "tcp://127.0.0.1:0", echo)
        async with FaultyProxy(url) as proxy:
            client = await connect_stream(proxy.url)
            proxy.drop_next(40)  # down
            proxy.drop_next(42, "up")
            proxy.rewrite_next(41, lambda f: [f[0], "changed", *f[2:]])
            for f in (frame(42, "x"), frame(40, "a"), frame(41, "orig", 7), frame(40, "b")):
                await client.send_frame(f)
            with trio.fail_after(T):
                assert await client.receive_frame() == frame(41, "changed", 7)
                assert await client.receive_frame() == frame(40, "b")
            assert proxy.dropped_up == {42: 1} and proxy.dropped_down == {40: 1}
            assert proxy.frames_down == {41: 1, 40: 1}
            with pytest.raises(ValueError):
                proxy.drop_next(1, "sideways")
            await client.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("scheme", ["tcp", "ws"])
async def test_proxy_reset_closes_both_sides(scheme):
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        url = await start(nursery, f"{scheme}://127.0.0.1:0", rec.handler)
        async with FaultyProxy(url) as proxy:
            client = await connect_stream(proxy.url)
            await client.send_frame(frame(40))
            assert await rec.next() == ("frame", frame(40))
            proxy.reset()
            with trio.fail_after(T), pytest.raises(StreamClosed):
                await client.receive_frame()
            what, exc = await rec.next()
            assert what == "closed"
            if scheme == "ws":
                assert exc.code == 1006  # no closing handshake
            await client.aclose()
            again = await connect_stream(proxy.url)  # still listening
            await again.send_frame(frame(41))
            assert await rec.next() == ("frame", frame(41))
            assert proxy.connections == 2
            await again.aclose()
        nursery.cancel_scope.cancel()


async def test_proxy_passes_close_codes_on():
    async def closer(fs):
        await fs.aclose(4003, "server says bye")

    async with trio.open_nursery() as nursery:
        url = await start(nursery, "ws://127.0.0.1:0", closer)
        async with FaultyProxy(url) as proxy:
            client = await connect_stream(proxy.url)
            with trio.fail_after(T), pytest.raises(StreamClosed) as ei:
                await client.receive_frame()
            assert (ei.value.code, ei.value.reason) == (4003, "server says bye")
            await client.aclose()
        nursery.cancel_scope.cancel()


async def test_proxy_blackhole_hides_a_close_until_restore(autojump_clock):
    c_app, c_px = memory_pair()
    s_px, s_app = memory_pair()
    proxy = FaultyProxy("tcp://127.0.0.1:1")
    result = []

    async def server_reader():
        with pytest.raises(StreamClosed) as ei:
            await s_app.receive_frame()
        result.append(ei.value.code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy.pump, c_px, s_px)
        nursery.start_soon(server_reader)
        proxy.blackhole("both")
        await c_app.aclose(4010, "client gone")
        await trio.testing.wait_all_tasks_blocked()
        assert result == [] and not s_px.closed  # a silent cut
        proxy.restore()
    assert result == [4010]
    assert c_px.closed and s_px.closed and proxy.active == 0


async def test_proxy_throttle_on_virtual_time(autojump_clock):
    c_app, c_px = memory_pair()
    s_px, s_app = memory_pair()
    proxy = FaultyProxy("tcp://127.0.0.1:1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(proxy.pump, c_px, s_px)
        proxy.throttle(1000, "down")
        big = frame(60, b"x" * 495)
        assert len(big) == 500 and frame_kind(big) == 60

        t0 = trio.current_time()
        await s_app.send_frame(big)
        assert await c_app.receive_frame() == big
        assert trio.current_time() - t0 == pytest.approx(0.5, abs=0.01)

        t0 = trio.current_time()
        await s_app.send_frame(big)
        await s_app.send_frame(big)
        await c_app.receive_frame()
        t1 = trio.current_time()
        await c_app.receive_frame()
        t2 = trio.current_time()
        assert t1 - t0 == pytest.approx(0.5, abs=0.01)
        assert t2 - t0 == pytest.approx(1.0, abs=0.01)

        t0 = trio.current_time()  # up is not throttled
        await c_app.send_frame(big)
        assert await s_app.receive_frame() == big
        assert trio.current_time() - t0 == pytest.approx(0, abs=0.01)

        proxy.restore()
        t0 = trio.current_time()
        await s_app.send_frame(big)
        await c_app.receive_frame()
        assert trio.current_time() - t0 == pytest.approx(0, abs=0.01)
        assert proxy.frames_down == {60: 4} and proxy.bytes_down == 2000
        await c_app.aclose()
    assert s_app.closed is False
    with pytest.raises(StreamClosed):
        await s_app.receive_frame()
