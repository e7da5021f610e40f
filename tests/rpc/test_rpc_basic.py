"""Basic aRPC behaviour over real sockets: handshake, mirror, mutations, pushes."""

from __future__ import annotations

import trio

import trio_am as am
from trio_am import rpc

from .conftest import client_kw


async def test_connect_ws_and_tcp(src: am.Machine, server: rpc.Server) -> None:
    for url in server.urls:
        async with rpc.connect(url, id="c1", **client_kw()) as client:
            with trio.fail_after(2):
                await client.rpc.when1("Ready")
            assert client.mach.state_names == src.state_names
            assert client.mach.time() == src.time()
            assert client.mach.id == "rnm-c1"
            assert client.mach.remote_id == "src"
            assert server.rpc.is1("HasClients")


async def test_push_and_remote_mutation(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[0], id="c1", **client_kw()) as client:
        with trio.fail_after(2):
            await client.rpc.when1("Ready")
        src.add1("Foo")
        with trio.fail_after(1):
            await client.mach.when1("Foo")
        assert client.mach.tick("Foo") == 1
        r = await client.mach.add1_remote("Bar")
        assert r == am.Result.EXECUTED
        assert client.mach.is1("Bar")
        assert client.mach.time() == src.time()
        assert client.mach.queue_tick == src.queue_tick


async def test_schema_growth_reaches_the_mirror(src: am.Machine, server: rpc.Server) -> None:
    async with rpc.connect(server.urls[1], id="c1", **client_kw()) as client:
        with trio.fail_after(2):
            await client.rpc.when1("Ready")
        src.set_schema(am.schema_merge(src.schema, {"Extra": {"require": ["Foo"]}}))
        src.add(["Foo", "Extra"])  # the next transition wakes the session's writer
        with trio.fail_after(2):
            await client.mach.when_query(lambda clock: clock.get("Extra", 0) % 2 == 1)
        assert client.mach.state_names == src.state_names
        assert client.mach.schema is not None and client.mach.schema["Extra"].require == ("Foo",)
        assert client.mach.time() == src.time()
        assert await client.mach.remove1_remote("Extra") == am.Result.EXECUTED
        assert not src.is1("Extra")


async def test_replica_tree(src: am.Machine, server: rpc.Server) -> None:
    """A NetMachine served again: a leaf mirrors the root through a replica and its
    mutations reach the root (arpc.md B14)."""
    async with rpc.connect(server.urls[1], id="rep1", **client_kw()) as rep:
        with trio.fail_after(2):
            await rep.rpc.when1("Ready")
        async with rpc.serve(rep.mach, "tcp://127.0.0.1:0", push_interval=0.005) as srv2:
            async with rpc.connect(srv2.urls[0], id="leaf", **client_kw()) as leaf:
                with trio.fail_after(2):
                    await leaf.rpc.when1("Ready")
                assert leaf.mach.remote_id == "rnm-rep1"
                assert leaf.mach.state_names == src.state_names
                src.add1("Foo")
                with trio.fail_after(2):
                    await leaf.mach.when1("Foo")
                assert await leaf.mach.add1_remote("Bar") == am.Result.EXECUTED
                assert src.is1("Bar")
                with trio.fail_after(2):
                    await leaf.mach.when1("Bar")
                assert leaf.mach.time() == src.time()
                # relations are refused at the root: Bar needs Foo
                src.remove1("Foo")
                with trio.fail_after(2):
                    await leaf.mach.when_not1("Foo")
                assert await leaf.mach.add1_remote("Bar") == am.Result.CANCELED
