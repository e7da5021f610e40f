"""A history tracks a NetMachine (the aRPC mirror of a remote machine) like a local one:
the mirror's clock updates arrive as transitions through the same tracer hooks."""

from __future__ import annotations

import trio

import trio_am as am
from trio_am import history, rpc
from trio_am.history import Query
from trio_am.rpc.testing import memory_pair

SCHEMA = {"A": {}, "B": {"remove": ["A"]}, "C": {"multi": True}}


async def test_history_of_a_mirror() -> None:
    async with am.open_machine(SCHEMA, id="src") as src:
        async with rpc.serve(src, push_interval=0.005, heartbeat=0.1) as server:
            a, b = memory_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_stream, b)
                async with rpc.attach(a, id="cli", heartbeat=0.1) as client:
                    with trio.fail_after(10):
                        await client.rpc.when1("Ready")
                    mirror = client.mach
                    hist = history.Memory(mirror, ["A", "B"])
                    try:
                        src.add1("A")
                        with trio.fail_after(10):
                            await mirror.when1("A")
                        src.add1("B")
                        with trio.fail_after(10):
                            await mirror.when1("B")
                        recs = [r.time for r in hist.find_latest()]
                        assert recs and recs[0].mtime_tracked == (2, 1)
                        assert recs[0].mtime_tracked == tuple(src.time(["A", "B"]))
                        assert hist.find_latest(Query(activated=["B"]), limit=1)
                        assert [r.time.id for r in hist.find_latest(Query(activated=["A"]))] == [
                            recs[-1].id
                        ]
                    finally:
                        hist.dispose()
                nursery.cancel_scope.cancel()
