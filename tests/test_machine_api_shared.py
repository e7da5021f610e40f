"""The machine-API checks of :mod:`trio_am.testing`, run against a local ``Machine`` and
against a ``NetMachine`` mirroring a served machine over WebSocket, TCP and memory."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import trio_am as am
from trio_am import testing

HARNESSES = ["local", "net-ws", "net-tcp", "net-memory"]


@pytest.mark.parametrize("harness", HARNESSES)
@pytest.mark.parametrize("check", list(testing.CHECKS))
async def test_machine_api(harness: str, check: str) -> None:
    await testing.CHECKS[check](testing.make_harness(harness))


def test_every_harness_and_check_is_run() -> None:
    assert set(HARNESSES) == set(testing.HARNESSES)
    public = {n[len("check_") :] for n in testing.__all__ if n.startswith("check_")}
    assert public == set(testing.CHECKS)


class _Detached(testing.MachineHarness):
    """A broken harness: the view is a second machine that never hears of the source's
    changes. Every check must notice."""

    name = "detached"

    @asynccontextmanager
    async def _open(self, **kw: Any) -> AsyncIterator[tuple[am.Machine, testing.Driver]]:
        async with (
            am.open_machine(testing.API_SCHEMA, id="src") as src,
            am.open_machine(testing.API_SCHEMA, id="view") as view,
        ):
            yield view, testing.LocalDriver(view, src, timeout=self.timeout)

    def open(self, schema: Any = None, **kw: Any) -> Any:
        return self._open(**kw)


@pytest.mark.parametrize(
    "check", [c for c in testing.CHECKS if c not in ("negotiation_handlers", "plain_mutations")]
)
async def test_checks_fail_on_a_view_that_does_not_follow(check: str) -> None:
    with pytest.raises(AssertionError):
        await testing.CHECKS[check](_Detached(timeout=0.2))


def test_make_harness_rejects_unknown_names() -> None:
    with pytest.raises(ValueError):
        testing.make_harness("net-udp")
    with pytest.raises(ValueError):
        testing.make_harness("remote")
    assert testing.make_harness("net-tcp").name == "net-tcp"
    assert testing.make_harness("local").remote is False


def test_importing_the_module_does_not_import_pytest() -> None:
    code = "import sys, trio_am.testing\nprint('pytest' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
