"""The relay (arpc.md C2): scenario 51 of scenarios-arpc.md, and the tunnels both ways.

A "page" here is Python: a WebSocket to ``/listen/…`` that serves a machine with
``rpc.serve_stream`` once the relay sends ``RELAY_BRIDGED``. The browser itself is
tested in ``tests/browser``.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
import trio

import trio_am as am
from tests.rpc.conftest import SERVER_KW, SRC_SCHEMA, client_kw
from tests.rpc.test_scenarios_f_g import free_port, subproc
from trio_am import rpc
from trio_am.relay import RELAY_BRIDGED, RELAY_ERROR, RelayCode, RelayError, serve_relay
from trio_am.rpc.transport import (
    FrameStream,
    StreamClosed,
    TcpFrameStream,
    connect_stream,
    serve_streams,
)

MiB = 1024 * 1024
#: the headers of a WebSocket upgrade request
WS_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


async def http_get(
    addr: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET; returns (status, headers, body). A 101 answer (an
    accepted WebSocket) returns after the head."""
    host, port = addr.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {addr}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    with trio.fail_after(5):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            if buf.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in buf:
                break
    await stream.aclose()
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *hdr_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in hdr_lines)}
    return int(status_line.split()[1]), hdrs, body


class TargetServer:
    """A fake TCP target (B2 framing) that records what it receives and counts
    accepted connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.frames: list[bytes] = []
        self.streams: list[FrameStream] = []
        self.got_frame = trio.Event()
        self.url = ""

    async def handler(self, fs: FrameStream) -> None:
        self.accepted += 1
        self.streams.append(fs)
        while True:
            try:
                self.frames.append(await fs.receive_frame())
            except StreamClosed:
                return
            except Exception as exc:  # FrameTooLarge etc.: record and go on
                self.frames.append(repr(exc).encode())
            self.got_frame.set()
            self.got_frame = trio.Event()


@contextlib.asynccontextmanager
async def target_server() -> AsyncIterator[TargetServer]:
    t = TargetServer()
    async with trio.open_nursery() as n:
        t.url = await n.start(serve_streams, "tcp://127.0.0.1:0", t.handler)
        yield t
        n.cancel_scope.cancel()


def hostport(url: str) -> str:
    return url.split("://", 1)[1]


@contextlib.asynccontextmanager
async def fake_page(
    relay_ws: str, tid: str, target: str | None, mach: am.Machine
) -> AsyncIterator[dict[str, int]]:
    """A Python stand-in for a page hosting ``mach``: keeps one idle listen tunnel
    open and serves ``mach`` on each tunnel the relay bridges."""
    path = f"/listen/{tid}" + (f"/{target}" if target else "")
    counts = {"bridged": 0}

    async def one_tunnel(task_status: trio.TaskStatus[None]) -> None:
        fs = await connect_stream(relay_ws + path)
        task_status.started()
        async with fs:
            try:
                first = unpack(await fs.receive_frame())
            except StreamClosed:
                return
            assert first[0] == RELAY_BRIDGED, first
            counts["bridged"] += 1
            nursery.start_soon(one_tunnel_soon)
            await rpc.serve_stream(mach, fs, **SERVER_KW)

    async def one_tunnel_soon() -> None:
        await nursery.start(one_tunnel)

    async with trio.open_nursery() as nursery:
        await nursery.start(one_tunnel)
        yield counts
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- scenario 51
async def test_51a_dial_not_allowed() -> None:
    async with target_server() as t, serve_relay(allow_dial={"127.0.0.1:1"}) as relay:
        before = relay.mach.tick("TargetRefused")
        fs = await connect_stream(f"{relay.ws_url}/dial/x1/{hostport(t.url)}")
        async with fs:
            with trio.fail_after(2):
                frame = unpack(await fs.receive_frame())
                assert frame[:2] == [RELAY_ERROR, RelayCode.NOT_ALLOWED]
                assert "not allowed" in frame[2]
                with pytest.raises(StreamClosed):
                    await fs.receive_frame()
        assert t.accepted == 0
        assert relay.mach.tick("TargetRefused") > before
        assert relay.stats()["refused"] == 1


async def test_51a_default_allows_no_dial() -> None:
    async with target_server() as t, serve_relay() as relay:
        fs = await connect_stream(f"{relay.ws_url}/dial/x1/{hostport(t.url)}")
        async with fs:
            with trio.fail_after(2):
                frame = unpack(await fs.receive_frame())
        assert frame[:2] == [RELAY_ERROR, RelayCode.NOT_ALLOWED]
        assert t.accepted == 0


async def test_51b_origin_refused() -> None:
    async with target_server() as t, serve_relay(allow_dial={hostport(t.url)}) as relay:
        status, _, body = await http_get(
            relay.addr,
            f"/dial/x1/{hostport(t.url)}",
            {**WS_HEADERS, "Origin": "http://evil.example"},
        )
        assert status == 403
        assert b"origin" in body
        assert relay.stats()["opened"] == 0
        assert relay.mach.tick("OriginRefused") == 1
        assert t.accepted == 0
        # the relay's own origin is fine
        status, hdrs, _ = await http_get(
            relay.addr, f"/dial/x1/{hostport(t.url)}", {**WS_HEADERS, "Origin": relay.url}
        )
        assert status == 101, hdrs


async def test_51b_allow_origin_list() -> None:
    async with serve_relay(allow_origin={"http://app.example:8000"}) as relay:
        ok, _, _ = await http_get(
            relay.addr, "/dial/x/1.2.3.4:5", {**WS_HEADERS, "Origin": "http://app.example:8000"}
        )
        bad, _, _ = await http_get(
            relay.addr, "/dial/x/1.2.3.4:5", {**WS_HEADERS, "Origin": "http://app.example:8001"}
        )
        assert (ok, bad) == (101, 403)


async def test_51c_upstream_dies_while_bridged() -> None:
    port = free_port()
    async with (
        subproc(port) as (proc, _epoch),
        serve_relay(allow_dial={f"127.0.0.1:{port}"}) as relay,
    ):
        url = f"{relay.ws_url}/dial/c1/127.0.0.1:{port}"
        async with rpc.connect(url, id="c1", **client_kw()) as client:
            with trio.fail_after(5):
                await client.rpc.when1("Ready")
            assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED
            # a raw observer on a second tunnel sees the RELAY_ERROR itself
            raw = await connect_stream(url)
            async with raw:
                await raw.send_frame(msgpack.packb([1, {"proto": 1, "id": "raw1"}]))
                with trio.fail_after(2):
                    assert unpack(await raw.receive_frame())[0] == 2  # WELCOME
                proc.kill()
                with trio.fail_after(1):
                    frame = unpack(await raw.receive_frame())
                    while frame[0] != RELAY_ERROR:  # clock pushes may come first
                        frame = unpack(await raw.receive_frame())
                assert frame[1] == RelayCode.TARGET_CLOSED
            with trio.fail_after(2):
                await client.rpc.when1("Reconnecting")
            assert client.rpc.is1("ErrNetwork")
        assert relay.mach.tick("TargetFailed") >= 1


async def test_51d_too_large_from_ws_side() -> None:
    async with target_server() as t, serve_relay(allow_dial={hostport(t.url)}) as relay:
        fs = await connect_stream(
            f"{relay.ws_url}/dial/big/{hostport(t.url)}", max_frame=4 * MiB, hard_frame=8 * MiB
        )
        async with fs:
            await fs.send_frame(b"\x91\x20" + b"x" * (2 * MiB))
            with trio.fail_after(2):
                frame = unpack(await fs.receive_frame())
            assert frame[:2] == [RELAY_ERROR, RelayCode.TOO_LARGE]
            # the tunnel stays usable: a small frame still goes through
            await fs.send_frame(msgpack.packb([32, 7]))
            with trio.fail_after(2):
                while not t.frames:
                    await t.got_frame.wait()
        assert t.frames == [msgpack.packb([32, 7])]  # the big one was not forwarded
        assert relay.mach.tick("PeerError") >= 1


async def test_51d_too_large_from_tcp_side() -> None:
    async with target_server() as t, serve_relay(allow_dial={hostport(t.url)}) as relay:
        fs = await connect_stream(f"{relay.ws_url}/dial/big/{hostport(t.url)}")
        async with fs:
            await fs.send_frame(msgpack.packb([32, 1]))
            with trio.fail_after(2):
                while not t.streams:
                    await t.got_frame.wait()
            upstream = t.streams[0]
            await upstream.send_frame(b"\x91\x20" + b"y" * (2 * MiB))
            await upstream.send_frame(msgpack.packb([33, 1]))
            with trio.fail_after(2):
                # the WS side gets only the small frame
                assert unpack(await fs.receive_frame()) == [33, 1]
                while len(t.frames) < 2:
                    await t.got_frame.wait()
            err = unpack(t.frames[1])
            assert err[0] == 34 and err[2] == RelayCode.TOO_LARGE  # ERROR on TCP


async def test_51e_healthz_and_am_js() -> None:
    async with serve_relay() as relay:
        status, hdrs, body = await http_get(relay.addr, "/healthz")
        assert status == 200 and hdrs["content-type"].startswith("application/json")
        counts = json.loads(body)
        assert counts["tunnels"] == 0 and "bridged" in counts
        status, hdrs, body = await http_get(relay.addr, "/am.js")
        assert status == 200
        assert hdrs["content-type"].startswith("text/javascript")
        assert b"export" in body


# ---------------------------------------------------------------- dial, both ends real
@pytest.mark.parametrize("transport", ["tcp", "handler"])
async def test_client_reaches_tcp_server_through_relay(transport: str) -> None:
    async with (
        am.open_machine(SRC_SCHEMA, id="src") as src,
        rpc.serve(src, "tcp://127.0.0.1:0", **SERVER_KW) as server,
    ):
        target = hostport(server.urls[0])

        async def serve_src(tid: str, fs: FrameStream) -> None:
            await rpc.serve_stream(src, fs, **SERVER_KW)

        handlers = {"^local-": serve_src} if transport == "handler" else None
        async with serve_relay(allow_dial={target}, dial_handlers=handlers) as relay:
            url = f"{relay.ws_url}/dial/local-1" if handlers else f"{relay.ws_url}/dial/c1/{target}"
            async with rpc.connect(url, id="c1", **client_kw()) as client:
                with trio.fail_after(3):
                    await client.rpc.when1("Ready")
                assert await client.mach.add1_remote("Foo") == am.Result.EXECUTED
                src.add1("B")
                with trio.fail_after(2):
                    await client.mach.when1("B")
                assert client.mach.time() == src.time()
                assert relay.stats()["bridged"] == 1
            assert relay.mach.tick("Bridged") >= 1


async def test_bad_paths_give_bad_target() -> None:
    async with serve_relay(allow_dial={"loopback:*"}) as relay:
        for path in (
            "/nope/x",
            "/dial/bad id/127.0.0.1:5",
            "/dial/x/127.0.0.1:99999",
            "/dial/x",
            "/listen/x",
        ):
            fs = await connect_stream(relay.ws_url + path.replace(" ", "%20"))
            async with fs:
                with trio.fail_after(2):
                    frame = unpack(await fs.receive_frame())
            assert frame[:2] == [RELAY_ERROR, RelayCode.BAD_TARGET], path
        assert relay.mach.tick("TargetRefused") >= 5


async def test_unreachable_target() -> None:
    port = free_port()  # nothing listens there
    async with serve_relay(allow_dial={f"127.0.0.1:{port}"}) as relay:
        fs = await connect_stream(f"{relay.ws_url}/dial/x/127.0.0.1:{port}")
        async with fs:
            with trio.fail_after(5):
                frame = unpack(await fs.receive_frame())
        assert frame[:2] == [RELAY_ERROR, RelayCode.UNREACHABLE]
        assert relay.mach.tick("TargetFailed") >= 1


async def test_client_gives_up_on_not_allowed() -> None:
    async with serve_relay() as relay:
        url = f"{relay.ws_url}/dial/c1/127.0.0.1:5"
        async with rpc.connect(url, id="c1", **client_kw()) as client:
            with trio.fail_after(3):
                await client.rpc.when1("ReconnectFailed")
            assert client.rpc.is1("ErrNetwork")


async def test_raw_mode_copies_bytes() -> None:
    got: list[bytes] = []
    done = trio.Event()

    async def echo(stream: trio.SocketStream) -> None:
        data = await stream.receive_some(100)
        got.append(bytes(data))
        await stream.send_all(b"pong:" + data)
        done.set()

    async with trio.open_nursery() as n:
        listeners = await n.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with serve_relay(allow_dial={f"127.0.0.1:{port}"}) as relay:
            fs = await connect_stream(f"{relay.ws_url}/dial/r/127.0.0.1:{port}?raw=1")
            async with fs:
                await fs.send_frame(b"hello")
                with trio.fail_after(2):
                    assert await fs.receive_frame() == b"pong:hello"
        assert got == [b"hello"]
        n.cancel_scope.cancel()


# ---------------------------------------------------------------- listen
async def test_python_client_reaches_page_machine() -> None:
    port = free_port()
    async with am.open_machine(SRC_SCHEMA, id="page-src") as page, serve_relay() as relay:
        async with fake_page(relay.ws_url, "page1", f"127.0.0.1:{port}", page) as counts:
            with trio.fail_after(2):
                while relay.listen_port("page1") is None:
                    await trio.sleep(0.01)
            assert relay.listen_port("page1") == port
            url = f"tcp://127.0.0.1:{port}"
            async with (
                rpc.connect(url, id="py1", **client_kw()) as c1,
                rpc.connect(url, id="py2", **client_kw()) as c2,
            ):
                with trio.fail_after(3):
                    await c1.rpc.when1("Ready")
                    await c2.rpc.when1("Ready")
                assert await c1.mach.add1_remote("Foo") == am.Result.EXECUTED
                with trio.fail_after(2):
                    await c2.mach.when1("Foo")
                page.add1("B")
                with trio.fail_after(2):
                    await c1.mach.when1("B")
                    await c2.mach.when1("B")
                assert c1.mach.time() == c2.mach.time() == page.time()
            assert counts["bridged"] == 2
        assert relay.mach.tick("ListenerOpened") == 1


async def test_listen_overload_when_no_idle_tunnel() -> None:
    port = free_port()
    async with serve_relay(overload_wait=0.2) as relay:
        fs = await connect_stream(f"{relay.ws_url}/listen/p2/127.0.0.1:{port}")
        async with fs:
            with trio.fail_after(2):
                while relay.listen_port("p2") is None:
                    await trio.sleep(0.01)
            # the first TCP client takes the only idle tunnel
            tcp1 = TcpFrameStream(await trio.open_tcp_stream("127.0.0.1", port))
            with trio.fail_after(2):
                assert unpack(await fs.receive_frame())[0] == RELAY_BRIDGED
            await tcp1.send_frame(msgpack.packb([32, 5]))
            with trio.fail_after(2):
                assert unpack(await fs.receive_frame()) == [32, 5]
            # the second one finds none and gets ERROR OVERLOAD
            tcp2 = TcpFrameStream(await trio.open_tcp_stream("127.0.0.1", port))
            with trio.fail_after(2):
                err = unpack(await tcp2.receive_frame())
            assert err[0] == 34 and err[2] == RelayCode.OVERLOAD and err[4] is True
            await tcp1.aclose()
            await tcp2.aclose()


async def test_listen_refusals() -> None:
    async with serve_relay(allow_listen={"127.0.0.1:20000-20010"}) as relay:
        for path, code in (
            ("/listen/p/127.0.0.1:30000", RelayCode.NOT_ALLOWED),
            ("/listen/p/10.1.2.3:20001", RelayCode.NOT_ALLOWED),
        ):
            fs = await connect_stream(relay.ws_url + path)
            async with fs:
                with trio.fail_after(2):
                    frame = unpack(await fs.receive_frame())
            assert frame[:2] == [RELAY_ERROR, code], path


async def test_listen_address_taken_by_another_id() -> None:
    port = free_port()
    async with serve_relay() as relay:
        a = await connect_stream(f"{relay.ws_url}/listen/a/127.0.0.1:{port}")
        async with a:
            with trio.fail_after(2):
                while relay.listen_port("a") is None:
                    await trio.sleep(0.01)
            b = await connect_stream(f"{relay.ws_url}/listen/b/127.0.0.1:{port}")
            async with b:
                with trio.fail_after(2):
                    frame = unpack(await b.receive_frame())
            assert frame[:2] == [RELAY_ERROR, RelayCode.NOT_ALLOWED]


async def test_listener_closes_after_the_page_leaves() -> None:
    port = free_port()
    async with serve_relay(listen_grace=0.05) as relay:
        fs = await connect_stream(f"{relay.ws_url}/listen/gone/127.0.0.1:{port}")
        with trio.fail_after(2):
            while relay.listen_port("gone") is None:
                await trio.sleep(0.01)
        await fs.aclose()
        with trio.fail_after(2):
            await relay.mach.when_ticks("ListenerClosed", 1)
        assert relay.stats()["pools"] == 0
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_listen_handler_attaches_to_page() -> None:
    async with am.open_machine(SRC_SCHEMA, id="page-src") as page:
        mirrored = trio.Event()
        seen: dict[str, Any] = {}

        async def attach(tid: str, fs: FrameStream) -> None:
            async with rpc.attach(fs, id="server-page", **client_kw()) as client:
                await client.rpc.when1("Ready")
                await client.mach.when1("Foo")
                seen["time"] = client.mach.time()
                seen["tid"] = tid
                mirrored.set()

        async with serve_relay(listen_handlers={"^browser-": attach}) as relay:
            async with fake_page(relay.ws_url, "browser-p1", None, page):
                page.add1("Foo")
                with trio.fail_after(3):
                    await mirrored.wait()
        assert seen["tid"] == "browser-p1"
        assert seen["time"] == page.time()


async def test_connect_listener_without_a_page_times_out() -> None:
    async with serve_relay() as relay:
        with pytest.raises(RelayError) as info:
            await relay.connect_listener("nobody", timeout=0.1)
        assert info.value.code == RelayCode.OVERLOAD


# ---------------------------------------------------------------- HTTP and limits
async def test_static_files_and_traversal(tmp_path: Any) -> None:
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "app.js").write_text("export const x = 1;")
    (tmp_path.parent / "secret.txt").write_text("no")
    async with serve_relay(static_dir=tmp_path) as relay:
        status, hdrs, body = await http_get(relay.addr, "/")
        assert (status, body) == (200, b"<h1>hi</h1>") and hdrs["content-type"].startswith(
            "text/html"
        )
        status, hdrs, _ = await http_get(relay.addr, "/app.js")
        assert status == 200 and hdrs["content-type"].startswith("text/javascript")
        for bad in ("/../secret.txt", "/%2e%2e/secret.txt", "/nope.html"):
            status, _, _ = await http_get(relay.addr, bad)
            assert status == 404, bad


async def test_per_ip_tunnel_limit() -> None:
    async with serve_relay(max_per_ip=2) as relay:
        path = f"{relay.ws_url}/listen/p/127.0.0.1:{free_port()}"
        async with await connect_stream(path), await connect_stream(path):
            with trio.fail_after(2):
                while relay.stats()["idle"] < 2:
                    await trio.sleep(0.01)
            with pytest.raises(StreamClosed, match="429"):
                await connect_stream(path)
            assert relay.stats()["tunnels"] == 2
        # a closed tunnel frees its slot
        with trio.fail_after(2):
            while relay.stats()["tunnels"]:
                await trio.sleep(0.01)
        async with await connect_stream(path):
            pass


async def test_shutdown_tells_open_tunnels() -> None:
    port = free_port()
    async with serve_relay() as relay:
        fs = await connect_stream(f"{relay.ws_url}/listen/s/127.0.0.1:{port}")
        with trio.fail_after(2):
            while relay.listen_port("s") is None:
                await trio.sleep(0.01)
    async with fs:
        with trio.fail_after(2):
            frame = unpack(await fs.receive_frame())
        assert frame[:2] == [RELAY_ERROR, RelayCode.SHUTDOWN]
        with pytest.raises(StreamClosed) as info:
            await fs.receive_frame()
        assert info.value.code == 1001


async def test_garbage_http_does_not_hurt() -> None:
    async with serve_relay() as relay:
        host, port = relay.addr.rsplit(":", 1)
        for junk in (
            b"\x00\x01\x02\r\n\r\n",
            b"GET / HTTP/9\r\n\r\n",
            b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            s = await trio.open_tcp_stream(host, int(port))
            await s.send_all(junk)
            with trio.fail_after(2):
                while await s.receive_some(1000):
                    pass
            await s.aclose()
        status, _, _ = await http_get(relay.addr, "/healthz")
        assert status == 200
        assert relay.mach.is1("Ready") and not relay.mach.is1("Exception")
