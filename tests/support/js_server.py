"""A real aRPC server for am.js's node tests (``js/test/client.test.mjs``).

Run from the repository root::

    python tests/support/js_server.py

It serves the machine ``js-src`` (:data:`SCHEMA`) on ``ws://`` and ``tcp://`` (loopback,
free ports), puts a :class:`~trio_am.rpc.testing.FaultyProxy` in front of the ``ws://``
URL and a relay (``allow_dial`` = the ``tcp://`` address) beside it, then prints one JSON
line (flushed)::

    {"ws": "ws://...", "proxy": "ws://...", "relay": "ws://...", "tcp": "127.0.0.1:P", "epoch": "..."}

Then it reads commands from stdin, one JSON object a line, ``{"id": N, "cmd": NAME, ...}``,
and answers each with a line ``{"id": N, "ok": true, "value": ...}`` (or ``"ok": false,
"error": "..."``). Commands run one at a time, in order; EOF on stdin stops it.

Commands:
  add, remove {state}        mutate the source; value: the result code
  time                       value: {state name: tick} of the source
  count                      value: how many times ``Msg_state`` ran
  wait_tick {state, tick}    wait (5 s) until the source's tick of state reaches tick
  payload {name, data, dest} ``send_payload``; value: {"ok": true} or {"ok": false, "code": c}
  sessions                   value: the sids of the server's live sessions
  drop_next {kind, direction}          ``FaultyProxy.drop_next``
  dropped {kind, direction}  value: how many frames of kind the proxy swallowed or dropped
  corrupt_next_clock         the next CLOCK down gets a wrong checksum
  blackhole {direction}, restore, reset          the proxy faults of the same names
  cut                        restore, then reset: every proxied connection drops at once
  restart                    a new server (a new epoch) on the same ports; value: the epoch

Clients authenticate by token: none = full rights; ``"limited"`` = may only mutate
``Foo``; any other token is refused (``AUTH``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import trio

import trio_am as am
from trio_am import rpc
from trio_am.relay import serve_relay
from trio_am.rpc.testing import FaultyProxy

#: The source: ``Bar`` removes ``Foo``; ``Vetoed`` is always vetoed; ``Msg`` is multi.
SCHEMA: dict[str, Any] = am.schema_merge(
    am.BASIC_SCHEMA,
    {
        "Foo": {},
        "Bar": {"remove": ["Foo"]},
        "Vetoed": {},
        "Msg": {"multi": True},
    },
)


class Handlers:
    def __init__(self) -> None:
        self.msgs = 0

    def Vetoed_enter(self, e: am.Event) -> bool:
        return False

    def Msg_state(self, e: am.Event) -> None:
        self.msgs += 1


async def auth(client_id: str, token: str | None, peer: str) -> rpc.Grant | None:
    if token is None:
        return rpc.Grant()
    if token == "limited":
        return rpc.Grant(mutable={"Foo"})
    return None


class App:
    """The source, its current server (replaced by ``restart``) and the proxy."""

    def __init__(self, src: am.Machine, handlers: Handlers, nursery: trio.Nursery) -> None:
        self.src = src
        self.handlers = handlers
        self.nursery = nursery
        self.server: rpc.Server | None = None
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.proxy: FaultyProxy | None = None

    async def start_server(self, urls: list[str]) -> rpc.Server:
        """Serve the source at ``urls`` (a new epoch) once the previous server stopped."""
        self.scope.cancel()
        if self.server is not None:
            await self.stopped.wait()
        self.scope = scope = trio.CancelScope()
        self.stopped = stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[rpc.Server]) -> None:
            try:
                with scope:
                    async with rpc.serve(self.src, *urls, auth=auth) as server:
                        server.add_getter(
                            "echo", lambda s, params: {"client": s.client_id, "params": params}
                        )
                        task_status.started(server)
                        await trio.sleep_forever()
            finally:
                stopped.set()

        self.server = await self.nursery.start(run)
        return self.server

    async def run(self, cmd: str, a: dict[str, Any]) -> Any:
        src, proxy, server = self.src, self.proxy, self.server
        assert proxy is not None and server is not None
        if cmd in ("add", "remove"):
            return int(src.mutate(cmd, [a["state"]]))
        if cmd == "time":
            return dict(zip(src.state_names, src.time(), strict=True))
        if cmd == "count":
            return self.handlers.msgs
        if cmd == "wait_tick":
            with trio.fail_after(5):
                while src.tick(a["state"]) < a["tick"]:
                    await trio.sleep(0.005)
            return src.tick(a["state"])
        if cmd == "payload":
            try:
                await server.send_payload(a["name"], a.get("data"), dest=a.get("dest"), timeout=5)
            except rpc.DeliveryError as exc:
                return {"ok": False, "code": exc.code}
            return {"ok": True}
        if cmd == "sessions":
            return [s.sid for s in server.sessions]
        if cmd == "dropped":
            return (proxy.dropped_up if a["direction"] == "up" else proxy.dropped_down)[a["kind"]]
        if cmd == "drop_next":
            proxy.drop_next(a["kind"], a.get("direction", "down"))
        elif cmd == "corrupt_next_clock":
            proxy.rewrite_next(6, lambda f: [f[0], f[1], f[2], [*f[3][:3], (f[3][3] + 1) % 2**32]])
        elif cmd == "blackhole":
            proxy.blackhole(a.get("direction", "both"))
        elif cmd == "restore":
            proxy.restore()
        elif cmd == "reset":
            proxy.reset()
        elif cmd == "cut":
            proxy.restore()
            proxy.reset()
        elif cmd == "restart":
            server = await self.start_server(server.urls)
            proxy.reset()
            return server.epoch
        else:
            raise ValueError(f"unknown command {cmd!r}")
        return None


async def main() -> None:
    async with am.open_machine(SCHEMA, id="js-src") as src, trio.open_nursery() as nursery:
        handlers = Handlers()
        src.bind_handlers(handlers)
        app = App(src, handlers, nursery)
        server = await app.start_server(["ws://127.0.0.1:0", "tcp://127.0.0.1:0"])
        tcp = server.urls[1].removeprefix("tcp://")
        async with FaultyProxy(server.urls[0]) as proxy, serve_relay(allow_dial={tcp}) as relay:
            app.proxy = proxy
            info = {
                "ws": server.urls[0],
                "proxy": proxy.url,
                "relay": relay.ws_url,
                "tcp": tcp,
                "epoch": server.epoch,
            }
            print(json.dumps(info), flush=True)
            stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
            buf = b""
            while True:
                chunk = await stdin.receive_some()
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    try:
                        reply = {
                            "id": msg["id"],
                            "ok": True,
                            "value": await app.run(msg["cmd"], msg),
                        }
                    except Exception as exc:
                        reply = {
                            "id": msg["id"],
                            "ok": False,
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    print(json.dumps(reply), flush=True)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
