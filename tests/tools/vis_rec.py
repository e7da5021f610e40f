"""A small program that records connected machines for the diagram tests.

Run as ``python -m tests.tools.vis_rec PATH``: writes the recording ``PATH`` (.amdbg)
of one process with

* ``src`` (basic states + ``Foo``, ``Bar {require Foo}``), tags ``app``;
* ``src-kid`` (parent ``src``) with pipes ``src:Foo -> src-kid:Work`` (add) and
  ``src:Foo -> src-kid:Work`` (remove, when Foo goes);
* ``rs-src``: the aRPC server of ``src``, and ``rc-c1``: a client that adds ``Foo``
  and ``Bar`` on ``src`` over aRPC;

then prints ``done`` and exits.
"""

from __future__ import annotations

import sys

import trio

import trio_am as am
from trio_am import pipes
from trio_am.telemetry.dbg import bind_debugger

SCHEMA = am.schema_merge(am.BASIC_SCHEMA, {"Foo": {}, "Bar": {"require": ["Foo"]}})


async def main(path: str) -> None:
    addr = "file:" + path
    async with am.open_machine(SCHEMA, id="src", tags=["app"]) as src:
        rep = bind_debugger(src, addr)
        kid = am.Machine({"Start": {}, "Work": {}}, id="src-kid", parent=src)
        bind_debugger(kid, addr)
        pipes.pipe_add(src, kid, "Foo", "Work")
        pipes.pipe_remove(src, kid, "Foo", "Work")
        src.add1("Start")
        async with am.rpc.serve(src, "tcp://127.0.0.1:0") as server:
            bind_debugger(server.rpc, addr)
            async with am.rpc.connect(server.urls[0], id="c1") as client:
                bind_debugger(client.rpc, addr)
                await client.rpc.when1("Ready")
                await client.mach.add_remote(["Foo"])
                await client.mach.add_remote(["Bar"])
        src.remove1("Foo")
        kid.dispose()
        rep.flush(5.0)
    print("done", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
