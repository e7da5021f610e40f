"""The browser example (arpc.md F6): ``server-foo`` in Python, ``browser-bar`` in a page.

Run it with ``python examples/browser/server.py`` and open the URL it prints::

    open http://127.0.0.1:12733/

One process runs:

* ``foo`` (id ``server-foo``), a machine with the basic and source states, ``Msg`` and
  ``Bored``, served over aRPC on ``tcp://`` (loopback, ``--foo-addr``);
* the relay (``--port``), which serves the page (``static/``) and ``/am.js``, and has two
  in-process handlers:

  - dial ``^browser-foo-``: the page's mirror of foo; the tunnel is served by foo's
    aRPC server, as a TCP client would be;
  - listen ``^browser-bar-``: the page hosts ``bar`` (aRPC server role in the browser);
    the process attaches the client ``server-bar`` to it and so mirrors bar.

Every second foo:

* adds ``Bored`` after ``BORED_AFTER`` seconds without a message;
* if bar is Ready (its connection is), bar's ``Msg`` tick is below 20 and
  ``HELLO_EVERY`` seconds passed since the last hello, adds ``Msg("hello")`` on bar and
  on itself, from its ``Start`` transition (so the author is ``server-foo``).

Lines on stdout (the tests read them)::

    aRPC server-foo on tcp://127.0.0.1:PORT
    open http://127.0.0.1:PORT/
    bar connected: browser-bar-xxx
    [<author>] <msg>                  each Msg on foo: author = the mutation source's
                                      machine id, or "bar" when there is none
    foo is bored...                   foo's Bored became active
    foo is Ready / foo is not Ready   foo's Ready changed (the page's button)
    bar is Ready / bar is not Ready   the mirror of bar saw bar's Ready change
    bar disconnected: browser-bar-xxx

Environment: ``BORED_AFTER`` (15 s), ``HELLO_EVERY`` (10 s) and the ``AM_*`` switches of
:func:`trio_am.telemetry.env.bind_env` (e.g. ``AM_DBG_ADDR=1``), bound to foo and to
each mirror of bar, so both report to the debugger. Ctrl+C (SIGINT) or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
from pathlib import Path
from typing import Any

import attrs
import trio

import trio_am as am
from trio_am import rpc
from trio_am.relay import serve_relay
from trio_am.rpc import FrameStream
from trio_am.telemetry.env import bind_env

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_PORT = 12733

#: What foo and bar share: ``Msg`` (multi) carries typed args :class:`AMsg`.
SHARED_SCHEMA: dict[str, Any] = am.schema_merge(
    am.BASIC_SCHEMA,
    rpc.STATE_SOURCE,
    {"Msg": {"multi": True}},
)
#: foo (the server): ``Bored`` after a quiet while; a ``Msg`` removes it.
FOO_SCHEMA: dict[str, Any] = am.schema_merge(
    SHARED_SCHEMA,
    {"Bored": {}, "Msg": {"multi": True, "remove": ["Bored"]}},
)
#: bar (the page; ``static/app.js`` holds the same schema): Enter adds ``SubmitMsg``.
BAR_SCHEMA: dict[str, Any] = am.schema_merge(SHARED_SCHEMA, {"SubmitMsg": {"multi": True}})

#: Stop saying hello once bar's ``Msg`` tick reaches this.
HELLO_MAX_TICK = 20


@am.typed_args(prefix="browser")
@attrs.define
class AMsg:
    """The args of ``Msg``: the text. On the wire: the typed args ``browser__Any``
    (the page sends ``typedArgs("browser__Any", {msg})``)."""

    msg: str = am.log_field("msg")


def parse_msg(args: Any) -> str:
    """The text of a ``Msg``'s :class:`AMsg`, or "" when absent or malformed."""
    try:
        a = am.parse_args(AMsg, args)
    except Exception:  # a wire form that does not fit AMsg
        return ""
    return a.msg if a is not None and isinstance(a.msg, str) else ""


class Foo:
    """The handlers of foo (``server-foo``) and its once-a-second rules."""

    def __init__(self, mach: am.Machine, bored_after: float, hello_every: float) -> None:
        self.mach = mach
        self.bored_after = bored_after
        self.hello_every = hello_every
        self.last_msg = trio.current_time()
        self.last_hello = -math.inf
        #: the client attached to the page's bar that connected last (None: no page)
        self.bar: rpc.Client | None = None

    def Start_state(self, e: am.Event) -> None:
        # the rules live as long as Start; `e` makes foo the source of the hellos
        e.fork(self.rules, e)

    async def rules(self, e: am.Event) -> None:
        mach = self.mach
        while True:
            await trio.sleep(1)
            now = trio.current_time()
            if now - self.last_msg > self.bored_after and mach.not1("Bored"):
                mach.add1("Bored")
            bar = self.bar
            if (
                bar is not None
                and bar.rpc.is1("Ready")
                and "Msg" in bar.mach.state_names
                and bar.mach.tick("Msg") < HELLO_MAX_TICK
                and now - self.last_hello >= self.hello_every
            ):
                args = am.pass_args(AMsg("hello"))
                bar.mach.add1("Msg", args, event=e)
                mach.add1("Msg", args, event=e)
                self.last_hello = now

    def Msg_enter(self, e: am.Event) -> bool:
        return parse_msg(e.args) != ""  # an empty message is refused

    def Msg_state(self, e: am.Event) -> None:
        # both foo and bar add Msg; foo's is a pulse
        self.mach.remove1("Msg")
        source = e.mutation.source
        author = source.mach_id if source is not None else "bar"
        print(f"[{author}] {parse_msg(e.args)}", flush=True)
        self.last_msg = trio.current_time()

    def Bored_state(self, e: am.Event) -> None:
        print("foo is bored...", flush=True)

    def Ready_state(self, e: am.Event) -> None:
        print("foo is Ready", flush=True)

    def Ready_end(self, e: am.Event) -> None:
        print("foo is not Ready", flush=True)


class BarMirror:
    """Final handlers on the mirror of bar (a NetMachine runs final handlers only)."""

    def Ready_state(self, e: am.Event) -> None:
        print("bar is Ready", flush=True)

    def Ready_end(self, e: am.Event) -> None:
        print("bar is not Ready", flush=True)


async def wait_any(mach: am.Machine, *states: str) -> None:
    """Return once any of ``states`` is active."""
    async with trio.open_nursery() as nursery:

        async def wait_one(state: str) -> None:
            await mach.when1(state)
            nursery.cancel_scope.cancel()

        for state in states:
            nursery.start_soon(wait_one, state)


async def main(port: int, foo_addr: str) -> None:
    bored_after = float(os.environ.get("BORED_AFTER", "15"))
    hello_every = float(os.environ.get("HELLO_EVERY", "10"))
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            am.open_machine(FOO_SCHEMA, id="server-foo") as foo,
            # args_types: the page sends AMsg (others are refused)
            rpc.serve(foo, f"tcp://{foo_addr}", args_types=[AMsg]) as server,
        ):
            bind_env(foo)
            handlers = Foo(foo, bored_after, hello_every)
            foo.bind_handlers(handlers)

            async def dial_foo(tid: str, fs: FrameStream) -> None:
                # the page's mirror of foo: one more session of foo's server
                await server.serve_stream(fs)

            async def attach_bar(tid: str, fs: FrameStream) -> None:
                # the page hosts bar: this process becomes its client, "server-bar"
                async with rpc.attach(fs, id="server-bar", args_types=[AMsg]) as client:
                    await wait_any(client.rpc, "Ready", "ReconnectFailed")
                    if client.rpc.is1("Ready"):
                        bind_env(client.mach)
                        client.mach.bind_handlers(BarMirror())
                        handlers.bar = client
                        print(f"bar connected: {tid}", flush=True)
                        try:
                            await client.rpc.when1("ReconnectFailed")
                        finally:
                            if handlers.bar is client:
                                handlers.bar = None
                print(f"bar disconnected: {tid}", flush=True)

            foo_target = server.urls[0].split("://", 1)[1]
            async with (
                serve_relay(
                    f"127.0.0.1:{port}",
                    # a page may also dial foo's TCP port through the relay
                    allow_dial={foo_target},
                    static_dir=STATIC_DIR,
                    dial_handlers={r"^browser-foo-": dial_foo},
                    listen_handlers={r"^browser-bar-": attach_bar},
                    name="browser",
                ) as relay,
                trio.open_nursery() as nursery,
            ):
                foo.add1("Start")
                print(f"aRPC server-foo on {server.urls[0]}", flush=True)
                print(f"open {relay.url}/", flush=True)

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(stop_on_signal)
    print("bye", flush=True)


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The browser example (foo in Python, bar in a page)."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the relay's HTTP port ({DEFAULT_PORT}; 0 picks one)",
    )
    parser.add_argument(
        "--foo-addr", default="127.0.0.1:0", help="host:port of foo's aRPC TCP server (127.0.0.1:0)"
    )
    args = parser.parse_args(argv)
    trio.run(main, args.port, args.foo_addr)


if __name__ == "__main__":
    cli()
