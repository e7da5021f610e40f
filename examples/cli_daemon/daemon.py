"""A daemon that runs ops for a CLI over aRPC (arpc.md F2).

Run it with ``python examples/cli_daemon/daemon.py``, then, in another terminal,
``python examples/cli_daemon/cli.py --foo-1 --duration=0.5s``. Ctrl+C (SIGINT) or
SIGTERM stops it cleanly.

The daemon's machine (``daemon``, see ``common.py``) is served over aRPC on ``--addr``
(WebSocket). A second endpoint on port+1 (TCP) serves the same machine for a REPL; its
address goes to the file ``daemon-repl.addr`` in ``--repl-dir``.

The CLI adds ``OpFoo1`` (or ``OpBar2``) remotely, with the typed args ``OpArgs``. The
op's handler forks the work, which lives in a scope bound to:

* the op's activation, which requires ``Start``: removing ``Start`` (or the op, or
  adding the other op) cancels it;
* the CLI's session: the handler reads the session id from the mutation's source
  (``e.mutation.source.session_id``, set by the aRPC server) and the work waits for
  ``ClientDisconnected`` with that ``sid`` on the server's machine (``server.rpc``). A
  CLI that is killed (or exits) drops its connection, which ends the op at once; the
  daemon does not wait the ``session_ttl`` during which the session could resume.

When the time is up it prints ``op done``, removes the op and sends the payload
``opdone`` back to that client only (``dest=`` its client id). When the scope ends
first, it prints ``ctx done``, removes the op (if it is still the same activation) and
sends nothing.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import trio
from common import DAEMON_SCHEMA, DEFAULT_ADDR, OpArgs, format_duration

import trio_am as am
from trio_am import rpc


class Daemon:
    """The handlers of the daemon's machine."""

    def __init__(self, mach: am.Machine, server: rpc.Server) -> None:
        self.mach = mach
        self.server = server

    def OpFoo1_state(self, e: am.Event) -> None:
        self.start_op(e)

    def OpBar2_state(self, e: am.Event) -> None:
        self.start_op(e)

    def start_op(self, e: am.Event) -> None:
        """Common op logic: print, then fork the work bound to the op and the session."""
        called = e.mutation.called
        op_args = am.parse_args(OpArgs, e.args)
        duration = op_args.duration if op_args is not None else 3.0
        print(f"starting op {called} for {format_duration(duration)}", flush=True)
        source = e.mutation.source
        sid = source.session_id if source is not None else None
        # the activation's tick: remove the op later only if it is still this one
        tick = self.mach.tick(called[0])
        # e.fork: cancelled when this activation of the op ends
        e.fork(self.run_op, called, duration, sid, tick)

    async def run_op(self, called: list[str], duration: float, sid: str | None, tick: int) -> None:
        mach = self.mach
        server = self.server
        client_id = None
        done = False
        try:
            with trio.CancelScope() as session_scope:
                async with trio.open_nursery() as nursery:
                    if sid is not None:
                        # register first, then check: a disconnect cannot slip in between
                        gone = server.rpc.when_args("ClientDisconnected", {"sid": sid})
                        live = [s for s in server.sessions if s.sid == sid and s.connected]
                        if live:
                            client_id = live[0].client_id
                            nursery.start_soon(cancel_when, gone, session_scope)
                        else:  # the CLI left before the op started
                            gone.close()
                            session_scope.cancel()
                    await trio.sleep(duration)
                    print("op done", flush=True)
                    done = True
                    nursery.cancel_scope.cancel()  # stop the watch
        finally:
            # the time is up, or the scope ended: the op or Start was removed (then this
            # task is being cancelled) or the session ended (session_scope)
            if not done:
                print("ctx done", flush=True)
            if mach.tick(called[0]) == tick:
                mach.remove(called)
        if done and client_id is not None:
            # the op was removed above, so this task is cancelled at its next await:
            # send without waiting for the ack
            server.send_payload_nowait("opdone", f"done for {called}", dest=client_id)


async def cancel_when(waiter: am.Waiter, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when ``waiter`` resolves (or its machine is disposed)."""
    try:
        await waiter
    except am.MachineDisposedError:
        pass  # the server stopped: its sessions ended too
    scope.cancel()


async def main(addr: str, repl_dir: Path) -> None:
    host, _, port = addr.rpartition(":")
    repl_addr = f"{host}:{int(port) + 1}"
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            am.open_machine(DAEMON_SCHEMA, id="daemon") as mach,
            # args_types: the typed args clients may send (others are refused)
            rpc.serve(mach, f"ws://{addr}", f"tcp://{repl_addr}", args_types=[OpArgs]) as server,
            trio.open_nursery() as nursery,
        ):
            mach.bind_handlers(Daemon(mach, server))
            mach.add1("Start")
            print(f"listening on {server.urls[0]}", flush=True)
            (repl_dir / "daemon-repl.addr").write_text(server.urls[1] + "\n")
            print(f"REPL listening on {server.urls[1]}", flush=True)

            async def stop_on_signal() -> None:
                async for _ in signals:
                    mach.remove1("Start")  # ends the running op (it requires Start)
                    return

            nursery.start_soon(stop_on_signal)
            await mach.when_not1("Start")
            nursery.cancel_scope.cancel()
    print("bye", flush=True)


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The daemon of the cli_daemon example.")
    parser.add_argument("--addr", default=DEFAULT_ADDR, help="host:port of the aRPC server")
    parser.add_argument(
        "--repl-dir", default=".", type=Path, help="where to write daemon-repl.addr"
    )
    args = parser.parse_args(argv)
    trio.run(main, args.addr, args.repl_dir)


if __name__ == "__main__":
    cli()
