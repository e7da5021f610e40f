"""Fixtures of the node tests, and the rule they all share: **no process outlives its
test**, even a failed one.

Each test runs with a fresh ``AM_NODE_TEST_MARK`` in its environment, which every
process it starts inherits (supervisors pass their environment on to workers). After
the test, any live process carrying the mark, and any new child of the test process,
is a leak: it is killed and the test fails.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_am as am
from trio_am import node

ROOT = Path(__file__).resolve().parents[2]
#: The test worker: squares ``WorkRequested {"input": n}`` into the payload ``result``.
SQUARER = [sys.executable, "-m", "tests.node.squarer_worker"]
MARK = "AM_NODE_TEST_MARK"

#: Short timings for tests (the defaults are minutes and seconds).
FAST: dict[str, Any] = {
    "heartbeat": 30.0,
    "healthcheck_timeout": 0.2,
    "healthcheck_pause": 0.05,
    "conn_timeout": 10.0,
    "pool_pause": 0.05,
    "term_timeout": 2.0,
}


def _procs() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, state) of every process we can see."""
    out: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        rest = stat.rsplit(")", 1)[-1].split()
        out[int(entry)] = (int(rest[1]), rest[0])
    return out


def _marked(pid: int, mark: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except OSError:
        return False
    return f"{MARK}={mark}".encode() in env.split(b"\0")


def children_of(pid: int) -> list[int]:
    """Live (not zombie) children of ``pid``."""
    return sorted(p for p, (ppid, state) in _procs().items() if ppid == pid and state != "Z")


def leftovers(mark: str, before: set[int]) -> list[int]:
    """Live processes carrying ``mark``, and children of this process not in ``before``."""
    me = os.getpid()
    found = []
    for pid, (ppid, state) in _procs().items():
        if pid == me or state == "Z":
            continue
        if (ppid == me and pid not in before) or _marked(pid, mark):
            found.append(pid)
    return sorted(found)


@pytest.fixture(autouse=True)
def no_orphans(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Fail the test (after killing them) if it left processes behind."""
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK, mark)
    monkeypatch.chdir(ROOT)  # `-m tests.node.squarer_worker` resolves from here
    before = set(children_of(os.getpid()))
    yield mark
    left = leftovers(mark, before)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"processes left behind by the test: {left}"


class Inbox:
    """A payload consumer that keeps what it got."""

    def __init__(self) -> None:
        self.payloads: list[am.rpc.Payload] = []

    def ServerPayload_state(self, e: am.Event) -> None:
        self.payloads.append(e.args["payload"])

    def named(self, name: str) -> list[am.rpc.Payload]:
        return [p for p in self.payloads if p.name == name]


@asynccontextmanager
async def open_inbox(id: str = "inbox") -> AsyncIterator[tuple[am.Machine, Inbox]]:
    """A consumer machine and its record of payloads."""
    inbox = Inbox()
    async with am.open_machine(am.rpc.CONSUMER_SCHEMA, id=id, handlers=inbox) as mach:
        yield mach, inbox


async def wait_payload(mach: am.Machine, inbox: Inbox, name: str, n: int = 1) -> am.rpc.Payload:
    """Wait until ``inbox`` holds ``n`` payloads named ``name``; return the last."""
    while len(inbox.named(name)) < n:
        await mach.when_next_active("ServerPayload")
    return inbox.named(name)[n - 1]


@asynccontextmanager
async def running(
    pool: node.Pool | None = None, cmd: list[str] | None = None, **options: Any
) -> AsyncIterator[node.Supervisor]:
    """A running supervisor of squarer workers on a free TCP port."""
    opts = {**FAST, **options}
    sup = node.Supervisor(
        "squarer",
        cmd or SQUARER,
        node.WORKER_SCHEMA,
        pool=pool or node.Pool(min=2, max=4, warm=1),
        **opts,
    )
    async with sup.run("tcp://127.0.0.1:0"):
        yield sup


def client_options(**extra: Any) -> dict[str, Any]:
    """Fast node-client timings."""
    return {
        "heartbeat": 0.2,
        "resume_timeout": 1.0,
        "request_timeout": 10.0,
        "super_retry": 0.5,
        **extra,
    }


async def wait_until(fn: Any, timeout: float = 10.0) -> None:
    """Wait (polling on a trio checkpoint cadence) until ``fn()`` is true."""
    with trio.fail_after(timeout):
        while not fn():
            await trio.sleep(0.02)
