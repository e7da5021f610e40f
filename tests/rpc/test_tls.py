"""aRPC over TLS: ``wss://`` and TLS over ``tcp://`` with a test CA (trustme)."""

from __future__ import annotations

import ssl

import pytest
import trio

import trio_am as am
from trio_am import rpc

trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")


async def test_wss_and_tls_tcp(src: am.Machine) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with rpc.serve(
        src, "wss://127.0.0.1:0", "tcp://127.0.0.1:0", "ws://127.0.0.1:0", ssl_context=server_ctx
    ) as server:
        assert server.urls[0].startswith("wss://")
        for url in server.urls[:2]:
            async with rpc.connect(url, id="c1", ssl_context=client_ctx) as client:
                with trio.fail_after(5):
                    await client.rpc.when1("Ready")
                assert await client.mach.toggle1_remote("Foo") == am.Result.EXECUTED
                assert client.mach.time() == src.time()
        # the ws:// URL of the same server stays plain
        async with rpc.connect(server.urls[2], id="c2") as client:
            with trio.fail_after(5):
                await client.rpc.when1("Ready")
        # a client that does not trust the CA never gets a session
        async with rpc.connect(
            server.urls[0], id="c3", reconnect=rpc.Backoff(initial=0.01, max_elapsed=0.1)
        ) as client:
            with trio.fail_after(5):
                await client.rpc.when1("ReconnectFailed")
            assert client.rpc.is1("ErrNetwork")
            assert client.rpc.tick("HandshakeDone") == 0
