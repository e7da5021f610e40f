"""FX: the fixture program of scenarios-tools.md ("Conventions").

Run from the repository root::

    AM_DBG_ADDR=127.0.0.1:6831 AM_LOG=2 python -m tests.support.fx [--exit] [--extra N]
        [--error] [--child] [--id X]

One machine, ``fx-a`` (tags ``fixture``, ``env:test``), bound to whatever the ``AM_*``
environment asks for through :func:`trio_am.telemetry.bind_env`. It runs the fixed
sequence, prints ``done`` and waits for SIGTERM (or, with ``--exit``, disposes and exits).
Expected records, 8: add Start; auto add Ready; add Bar (+Bar +Foo); add Baz (+Baz -Foo);
add Foo (canceled by ``Foo_enter``); add Healthcheck; remove Baz; add Foo.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import trio

import trio_am as am
from trio_am.telemetry import bind_env

#: The FX schema (also importable for diagrams and tests).
SCHEMA: dict[str, dict[str, Any]] = {
    "Start": {},
    "Ready": {"auto": True, "require": ["Start"]},
    "Foo": {"require": ["Start"]},
    "Bar": {"add": ["Foo"]},
    "Baz": {"remove": ["Foo"]},
    "Healthcheck": {"multi": True},
}


class FxHandlers:
    """``Foo_enter`` vetoes Foo while Baz is active."""

    def Foo_enter(self, e: am.Event) -> bool:
        return not e.machine.is1("Baz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trio_am telemetry fixture machine")
    p.add_argument("--exit", action="store_true", help="dispose and exit after the sequence")
    p.add_argument("--extra", type=int, default=0, help="toggle Baz N more times")
    p.add_argument("--error", action="store_true", help="add_err(ValueError('boom'))")
    p.add_argument("--child", action="store_true", help="also create fx-b (parent fx-a)")
    p.add_argument("--id", default="fx-a", help="the machine id")
    return p.parse_args(argv)


def run_fx(mach: am.Machine) -> None:
    """The fixed FX mutations: 8 transitions (the auto Ready is #2, add Foo #5 is canceled)."""
    mach.add1("Start")  # 1, + auto Ready (2)
    mach.add1("Bar")  # 3: +Bar +Foo
    mach.add1("Baz")  # 4: +Baz -Foo
    mach.add1("Foo")  # 5: canceled, Baz removes Foo
    mach.add1("Healthcheck")  # 6
    mach.remove1("Baz")  # 7
    mach.add1("Foo")  # 8


def run_sequence(mach: am.Machine, args: argparse.Namespace) -> None:
    """The fixed mutations of the scenarios, then the optional extras."""
    run_fx(mach)
    for _ in range(args.extra):
        mach.toggle1("Baz")
    if args.error:
        mach.add_err(ValueError("boom"))


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with am.open_machine(
            SCHEMA, id=args.id, handlers=FxHandlers(), tags=["fixture", "env:test"]
        ) as mach:
            bind_env(mach)
            children = []
            if args.child:
                child = am.Machine({"Start": {}}, id="fx-b", parent=mach, tags=["child"])
                bind_env(child)
                children.append(child)
            run_sequence(mach, args)
            for child in children:
                child.add1("Start")
            print("done", flush=True)
            if not args.exit:
                async for _ in signals:
                    break
            for child in children:
                child.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
