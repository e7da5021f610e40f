"""The debugger's TCP listener (trio_am.dbg.server): frames → model, bad input, busy port."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from tests.dbg.conftest import frame, fx_messages, fx_schema
from trio_am.dbg.model import Model
from trio_am.dbg.server import AddressInUseError, DbgServer, parse_addr, serve_dbg


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``pred`` until true (fails after ``timeout`` s)."""
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.005)


async def start(nursery: trio.Nursery, model: Model, **kw: Any) -> tuple[DbgServer, int]:
    server = DbgServer(model, **kw)
    _host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    return server, port


async def test_fx_over_tcp() -> None:
    model = Model()
    seen: list[tuple[int, int, list[Any]]] = []
    changes: list[int] = []
    async with trio.open_nursery() as nursery:
        server, port = await start(
            nursery,
            model,
            on_message=lambda *a: seen.append(a),
            on_change=lambda: changes.append(1),
        )
        assert model.listen_addr == f"127.0.0.1:{port}"
        t0 = time.time_ns()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"".join(frame(m) for m in fx_messages()))
        await wait_until(lambda: "fx-a" in model.clients and len(model.clients["fx-a"].txs) == 8)
        cl = model.clients["fx-a"]
        assert cl.connected and server.connections == 1
        assert all(t0 <= tx.rt <= time.time_ns() for tx in cl.txs)  # stamped on arrival
        assert [m for _rt, _c, m in seen] == fx_messages()
        assert [rt for rt, _c, _m in seen][2:] == [tx.rt for tx in cl.txs]
        assert changes
        assert model.visible(cl) == [1, 2, 3, 4, 5, 7, 8]
        await stream.aclose()
        await wait_until(lambda: not cl.connected)
        assert server.connections == 0 and server.bad_frames == 0
        nursery.cancel_scope.cancel()


async def test_frames_split_anywhere() -> None:
    model = Model()
    data = b"".join(frame(m) for m in fx_messages())
    async with trio.open_nursery() as nursery:
        _server, port = await start(nursery, model)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for i in range(0, len(data), 7):
            await stream.send_all(data[i : i + 7])
        await wait_until(lambda: "fx-a" in model.clients and len(model.clients["fx-a"].txs) == 8)
        await stream.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "bad",
    [
        b"\xff\xff\xff\xff" + b"x" * 64,  # length 0xFFFFFFFF
        frame({"not": "an array"}),  # type: ignore[arg-type]
        frame([]),
        frame([42, "kind is not a string"]),
        (5).to_bytes(4, "big") + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
    ],
    ids=["huge", "map", "empty", "int-kind", "not-msgpack"],
)
async def test_bad_frame_closes_only_that_connection(bad: bytes) -> None:
    model = Model()
    async with trio.open_nursery() as nursery:
        server, port = await start(nursery, model)
        good = await trio.open_tcp_stream("127.0.0.1", port)
        await good.send_all(b"".join(frame(m) for m in fx_messages()[:5]))
        await wait_until(lambda: "fx-a" in model.clients and len(model.clients["fx-a"].txs) == 3)
        evil = await trio.open_tcp_stream("127.0.0.1", port)
        await evil.send_all(frame(fx_schema("evil")) + bad)
        with trio.fail_after(5):
            try:
                while await evil.receive_some(1024):  # the server closes it
                    pass
            except trio.BrokenResourceError:  # closed with unread data: reset
                pass
        await wait_until(lambda: server.bad_frames == 1)
        assert server.last_error
        assert not model.clients["evil"].connected
        # the good connection still updates
        await good.send_all(b"".join(frame(m) for m in fx_messages()[5:]))
        await wait_until(lambda: len(model.clients["fx-a"].txs) == 8)
        assert model.clients["fx-a"].connected
        await good.aclose()
        await evil.aclose()
        nursery.cancel_scope.cancel()


async def test_scenario_33_malformed_input_while_fx_runs() -> None:
    """1 KiB of random bytes, then a frame with length 0xFFFFFFFF: the server keeps
    running and a client connected at the same time still updates (scenario 33)."""
    model = Model()
    async with trio.open_nursery() as nursery:
        server, port = await start(nursery, model)
        fx = await trio.open_tcp_stream("127.0.0.1", port)
        msgs = fx_messages()
        await fx.send_all(b"".join(frame(m) for m in msgs[:4]))
        for payload in (os.urandom(1024), b"\xff\xff\xff\xff" + os.urandom(32)):
            s = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await s.send_all(payload)
            except trio.BrokenResourceError:
                pass
            with trio.move_on_after(2):
                try:
                    while await s.receive_some(1024):
                        pass
                except trio.BrokenResourceError:
                    pass
            await s.aclose()
        await fx.send_all(b"".join(frame(m) for m in msgs[4:]))
        await wait_until(lambda: "fx-a" in model.clients and len(model.clients["fx-a"].txs) == 8)
        assert model.clients["fx-a"].connected
        assert server.bad_frames >= 1
        # and it still accepts new clients
        late = await trio.open_tcp_stream("127.0.0.1", port)
        await late.send_all(frame(fx_schema("late")))
        await wait_until(lambda: "late" in model.clients)
        await late.aclose()
        await fx.aclose()
        nursery.cancel_scope.cancel()


async def test_reconnect_replaces_the_client() -> None:
    model = Model()
    async with trio.open_nursery() as nursery:
        _server, port = await start(nursery, model)
        one = await trio.open_tcp_stream("127.0.0.1", port)
        await one.send_all(b"".join(frame(m) for m in fx_messages()))
        await wait_until(lambda: "fx-a" in model.clients and len(model.clients["fx-a"].txs) == 8)
        await one.aclose()
        await wait_until(lambda: not model.clients["fx-a"].connected)
        two = await trio.open_tcp_stream("127.0.0.1", port)
        await two.send_all(b"".join(frame(m) for m in fx_messages()[:4]))
        await wait_until(lambda: model.clients["fx-a"].connected)
        await wait_until(lambda: len(model.clients["fx-a"].txs) == 2)
        await two.send_all(frame(["bye", 0]))
        await wait_until(lambda: not model.clients["fx-a"].connected)
        await two.aclose()
        nursery.cancel_scope.cancel()


async def test_busy_port() -> None:
    model = Model()
    async with trio.open_nursery() as nursery:
        _server, port = await start(nursery, model)
        with pytest.raises(AddressInUseError) as ei:
            await DbgServer(Model()).bind("127.0.0.1", port)
        assert str(ei.value) == f"address in use: 127.0.0.1:{port}"
        assert isinstance(ei.value, OSError)
        with pytest.raises(AddressInUseError):
            await serve_dbg(Model(), "127.0.0.1", port)
        nursery.cancel_scope.cancel()


async def test_serve_dbg_function() -> None:
    model = Model()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_dbg, model, "127.0.0.1", 0)
        assert host == "127.0.0.1" and port > 0
        s = await trio.open_tcp_stream(host, port)
        await s.send_all(frame(fx_schema()))
        await wait_until(lambda: "fx-a" in model.clients)
        await s.aclose()
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        ("127.0.0.1:6832", ("127.0.0.1", 6832)),
        ("localhost", ("localhost", 6831)),
        (":7000", ("localhost", 7000)),
        ("[::1]:7001", ("::1", 7001)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str, int]) -> None:
    assert parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["h:x", "h:70000", "h:-1"])
def test_parse_addr_bad(addr: str) -> None:
    with pytest.raises(ValueError, match="bad port"):
        parse_addr(addr)
