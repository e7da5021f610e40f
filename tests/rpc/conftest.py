"""Fixtures of the aRPC tests: the scenario source machine, server and clients
(scenarios-arpc.md "Fixtures")."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

import trio_am as am
from trio_am import rpc

SRC_SCHEMA: dict[str, Any] = am.schema_merge(
    am.BASIC_SCHEMA,
    rpc.STATE_SOURCE,
    {
        "Foo": {},
        "Bar": {"require": ["Foo"]},
        "Secret": {},
        "A": {"auto": True, "require": ["C"]},
        "B": {"multi": True, "add": ["C"]},
        "C": {"after": ["D"]},
        "D": {"add": ["C", "B"]},
        "Provide": {"multi": True},
        "Crash": {},
    },
)

SERVER_KW: dict[str, Any] = dict(
    push_interval=0.005, heartbeat=0.1, handshake_timeout=0.5, session_ttl=2
)


def client_kw(**extra: Any) -> dict[str, Any]:
    """The scenario client options (heartbeat 0.1, fast backoff), plus ``extra``."""
    kw: dict[str, Any] = dict(
        heartbeat=0.1, reconnect=rpc.Backoff(initial=0.05, max=0.2, max_elapsed=5)
    )
    kw.update(extra)
    return kw


class SrcHandlers:
    """The scenario handlers of ``src``: ``Provide`` sends a payload."""

    server: rpc.Server | None = None

    def Provide_state(self, e: am.Event) -> None:
        assert self.server is not None
        self.server.send_payload_nowait(e.args["name"], e.args.get("data"))

    def Crash_enter(self, e: am.Event) -> None:
        if os.environ.get("AM_TEST_CRASH") == "1":  # only in the subprocess server
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
async def src() -> AsyncIterator[am.Machine]:
    async with am.open_machine(SRC_SCHEMA, id="src") as mach:
        yield mach


@pytest.fixture
async def server(src: am.Machine) -> AsyncIterator[rpc.Server]:
    handlers = SrcHandlers()
    src.bind_handlers(handlers)
    async with rpc.serve(src, "ws://127.0.0.1:0", "tcp://127.0.0.1:0", **SERVER_KW) as srv:
        handlers.server = srv
        yield srv
