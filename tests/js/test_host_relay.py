"""am.js's host role end to end: a machine hosted by node (as a page would host it) is
reached by Python clients through the relay's listen port, and by an in-process listen
handler (arpc.md C2, C3)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import trio_am as am
from tests.js.conftest import JS, node_or_skip
from tests.rpc.conftest import client_kw
from tests.rpc.test_scenarios_f_g import free_port
from trio_am import rpc
from trio_am.relay import serve_relay


class NodeHost:
    """The node process hosting the page machine; ``lines`` collects its JSON output."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.lines: list[Any] = []
        self.changed = trio.Event()

    async def read(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.proc.stdout is not None
        buf = b""
        started = False
        async for chunk in self.proc.stdout:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode()
                if text == "ready" and not started:
                    started = True
                    task_status.started()
                elif text.startswith("{"):
                    self.lines.append(json.loads(text))
                    self.changed.set()
                    self.changed = trio.Event()

    async def wait_line(self, pred: Any) -> Any:
        with trio.fail_after(5):
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                await self.changed.wait()

    async def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(text.encode() + b"\n")


@asynccontextmanager
async def node_host(relay_ws: str, tid: str, listen: str | None) -> AsyncIterator[NodeHost]:
    node = node_or_skip()
    args = [node, "--experimental-websocket", "test/host_run.mjs", relay_ws, tid]
    if listen:
        args.append(listen)
    proc = await trio.lowlevel.open_process(
        args, cwd=JS, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    host = NodeHost(proc)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                await nursery.start(host.read)
            yield host
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            proc.kill()
            await proc.wait()


async def test_python_clients_reach_a_node_hosted_machine() -> None:
    port = free_port()
    async with (
        serve_relay() as relay,
        node_host(relay.ws_url, "page-1", f"127.0.0.1:{port}") as page,
    ):
        url = f"tcp://127.0.0.1:{port}"
        async with (
            rpc.connect(url, id="py1", **client_kw()) as c1,
            rpc.connect(url, id="py2", **client_kw()) as c2,
        ):
            with trio.fail_after(5):
                await c1.rpc.when1("Ready")
                await c2.rpc.when1("Ready")
            assert c1.mach.remote_id == "page-1"
            assert c1.mach.is1("Ready") and c1.mach.not1("Foo")
            # a remote mutation runs the page's handlers; their queued mutation follows
            assert await c1.mach.add1_remote("Foo") == am.Result.EXECUTED
            line = await page.wait_line(lambda x: x.get("handler") == "Foo_state")
            assert line["source"] == "py1"
            with trio.fail_after(3):
                await c1.mach.when1("Bar")
                await c2.mach.when1("Bar")
            # a veto in the page cancels; args travel
            assert await c2.mach.add1_remote("Vetoed") == am.Result.CANCELED
            assert await c2.mach.add1_remote("Echo", {"n": 7}) == am.Result.EXECUTED
            line = await page.wait_line(lambda x: x.get("handler") == "Echo_state")
            assert line["args"] == {"n": 7}
            # a mutation made in the page reaches both mirrors
            await page.command("remove Foo")
            with trio.fail_after(3):
                await c1.mach.when_not1("Foo")
                await c2.mach.when_not1("Bar")
            assert c1.mach.time() == c2.mach.time()
            # unknown states never leave Python
            assert c1.mach.has1("Foo") and not c1.mach.has1("Nope")


async def test_listen_handler_attaches_to_a_node_hosted_machine() -> None:
    got: dict[str, Any] = {}
    done = trio.Event()

    async def attach(tid: str, fs: rpc.FrameStream) -> None:
        async with rpc.attach(fs, id="server-page", **client_kw()) as client:
            with trio.fail_after(5):
                await client.rpc.when1("Ready")
            got["res"] = await client.mach.add1_remote("Foo")
            with trio.fail_after(3):
                await client.mach.when1("Bar")
            got["tid"] = tid
            got["active"] = client.mach.active_states()
            done.set()

    async with (
        serve_relay(listen_handlers={"^browser-": attach}) as relay,
        node_host(relay.ws_url, "browser-p9", None),
    ):
        with trio.fail_after(10):
            await done.wait()
    assert got["res"] == am.Result.EXECUTED
    assert got["tid"] == "browser-p9"
    assert {"Start", "Ready", "Foo", "Bar"} <= set(got["active"])
