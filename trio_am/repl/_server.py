"""The served side of the REPL: :func:`serve_repl` and the ``AM_REPL_*`` switches.

A REPL endpoint is an aRPC server (``am.rpc.serve``) on a TCP URL; what makes it a REPL
endpoint is that its address can be found: :func:`serve_repl` writes it to
``<addr_dir>/<machine id>-repl.addr`` and removes the file when it stops, so
``trio-am repl -d DIR`` reaches every machine of a directory.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from .._core._engine import Engine
from .._errors import MachineDisposedError
from .._runtime._machine import Machine
from ..rpc.server import Server, serve
from ._addrs import normalize_url, remove_addr_file, write_addr_file
from ._errors import ReplError

__all__ = [
    "DEFAULT_REPL_ADDR",
    "ReplBinding",
    "ReplEnv",
    "ReplServer",
    "bind_env_repl",
    "parse_repl_env",
    "serve_repl",
]

_log: Final = logging.getLogger("trio_am.repl")

#: Where ``serve_repl`` (and ``AM_REPL_ADDR=1``) listens by default: a free local port.
DEFAULT_REPL_ADDR: Final = "127.0.0.1:0"

_OFF: Final = frozenset({"", "0", "false", "no", "off", "n"})


@attrs.frozen
class ReplServer:
    """A running REPL endpoint (what :func:`serve_repl` yields).

    Attributes:
        server: the aRPC :class:`~trio_am.rpc.Server`.
        url: the URL clients dial (``tcp://127.0.0.1:PORT``).
        addr_file: the address file written, or None.
    """

    server: Server
    url: str
    addr_file: Path | None


@asynccontextmanager
async def serve_repl(
    mach: Engine,
    addr: str = DEFAULT_REPL_ADDR,
    addr_dir: str | os.PathLike[str] | None = None,
    **serve_options: Any,
) -> AsyncIterator[ReplServer]:
    """Serve ``mach`` for ``trio-am repl`` until the block ends.

    Listens with :func:`trio_am.rpc.serve` on ``addr`` (``host:port``, meaning TCP, or an
    aRPC URL; port 0 picks a free one). With ``addr_dir`` it writes the URL to
    ``addr_dir/<mach id>-repl.addr`` (creating the directory) once listening, and removes
    that file on exit unless another server rewrote it meanwhile.

    Args:
        mach: the machine to serve (a ``Machine`` or a ``NetMachine``).
        addr: where to listen (default ``127.0.0.1:0``).
        addr_dir: the directory for the address file, or None for no file.
        serve_options: passed to :func:`trio_am.rpc.serve` (``auth``, ``args_types``…).

    Raises:
        ReplError: ``addr`` is not an address.
        OSError: the address is taken, or the file cannot be written.

    Example::

        async with am.open_machine(schema, id="worker") as mach:
            async with serve_repl(mach, addr_dir="tmp") as repl:
                print(repl.url)          # tmp/worker-repl.addr holds it too
                await trio.sleep_forever()
    """
    url = normalize_url(addr, listen=True)
    serve_options.setdefault("id", f"repl-{mach.id}")
    listening = False
    try:
        async with serve(mach, url, **serve_options) as server:
            listening = True
            real = server.urls[0]
            path = write_addr_file(addr_dir, mach.id, real) if addr_dir is not None else None
            try:
                yield ReplServer(server, real, path)
            finally:
                if path is not None:
                    remove_addr_file(path, real)
    except BaseExceptionGroup as group:
        # a failure to listen arrives wrapped in the server's nurseries: unwrap it
        leaf = None if listening else _single(group)
        if leaf is None:
            raise
        raise leaf from None


def _single(group: BaseExceptionGroup[Any]) -> Exception | None:
    """The only exception inside (nested) groups, if it is an ``Exception``."""
    leaves: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        e = todo.pop()
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        else:
            leaves.append(e)
    if len(leaves) == 1 and isinstance(leaves[0], Exception):
        return leaves[0]
    return None


# ---------------------------------------------------------------------------- env
@attrs.frozen
class ReplEnv:
    """What ``AM_REPL_ADDR`` / ``AM_REPL_DIR`` ask for (see :func:`parse_repl_env`).

    Attributes:
        addr: where to listen (``host:port`` or a URL).
        addr_dir: the directory for the address file, or None.
    """

    addr: str
    addr_dir: str | None


def parse_repl_env(env: Mapping[str, str] | None = None) -> ReplEnv | None:
    """Read ``AM_REPL_ADDR`` and ``AM_REPL_DIR`` (from ``os.environ`` by default).

    ``AM_REPL_ADDR`` unset, empty or an off word (``0``, ``false``, ``no``, ``off``):
    None. ``1`` (or ``true``, ``yes``, ``on``): listen on ``127.0.0.1:0``. Anything else
    must be ``host:port`` or a URL. ``AM_REPL_DIR`` (optional) names the directory for
    ``<id>-repl.addr``; alone, it does nothing.

    Raises:
        ValueError: a bad value; the message names the variable.
    """
    env = os.environ if env is None else env
    raw = env.get("AM_REPL_ADDR", "")
    v = raw.strip()
    if v.lower() in _OFF:
        return None
    addr = DEFAULT_REPL_ADDR if v.lower() in ("1", "true", "yes", "on", "y") else v
    try:
        normalize_url(addr, listen=True)
    except ReplError as exc:
        raise ValueError(f"AM_REPL_ADDR={raw!r}: {exc}") from None
    d = env.get("AM_REPL_DIR", "").strip() or None
    if d is not None and Path(d).expanduser().exists() and not Path(d).expanduser().is_dir():
        raise ValueError(f"AM_REPL_DIR={d!r}: not a directory")
    return ReplEnv(addr, d)


class ReplBinding:
    """A REPL endpoint started by :func:`bind_env_repl`; it lives as long as the machine.

    Attributes:
        machine_id: the machine's id.
        addr: the address asked for; ``url`` is the real one once listening.
        addr_dir: the directory of the address file, or None.
        url: the URL clients dial, None until listening (or when it failed).
        addr_file: the address file, None until written.
        error: why the endpoint could not start or stopped early, else None.
        disabled: why nothing was started (``"AM_TEST_RUNNER"``), else None.
    """

    def __init__(self, machine_id: str, addr: str, addr_dir: str | None) -> None:
        self.machine_id = machine_id
        self.addr = addr
        self.addr_dir = addr_dir
        self.url: str | None = None
        self.addr_file: Path | None = None
        self.error: BaseException | None = None
        self.disabled: str | None = None
        self._done = trio.Event()
        self._closed = trio.Event()

    async def wait_ready(self) -> str:
        """Wait until the endpoint listens and return its URL.

        Raises:
            ReplError: it could not start (the cause is chained), or it is disabled.
        """
        await self._done.wait()
        if self.url is None:
            why = self.disabled or repr(self.error)
            raise ReplError(f"[{self.machine_id}] no REPL endpoint: {why}") from self.error
        return self.url

    async def wait_closed(self) -> None:
        """Wait until the endpoint stopped (the machine was disposed, or it failed) and
        its address file is gone."""
        await self._closed.wait()

    def __repr__(self) -> str:
        return f"<ReplBinding {self.machine_id} url={self.url!r} error={self.error!r}>"


_BOUND: weakref.WeakKeyDictionary[Engine, ReplBinding] = weakref.WeakKeyDictionary()


def _is_set(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in _OFF


def bind_env_repl(mach: Engine, env: Mapping[str, str] | None = None) -> ReplBinding | None:
    """Serve ``mach`` for the REPL when ``AM_REPL_ADDR`` asks for it (see
    :func:`parse_repl_env`); the endpoint stops when the machine is disposed.

    Does not block: the server runs in the machine's nursery (a ``Machine`` bound with
    ``async with`` / ``open_machine``), else in a Trio system task; ``await
    binding.wait_ready()`` gives its URL. A failure to listen or to write the address
    file is logged and kept in ``binding.error``; it never reaches the machine's
    ``Exception`` state. Calling it again for the same machine returns the first binding.
    Under ``AM_TEST_RUNNER`` (without ``AM_TEST_DEBUG``) nothing starts
    (``binding.disabled``).

    Returns:
        The binding, or None when ``AM_REPL_ADDR`` is unset or off.

    Raises:
        ValueError: ``AM_REPL_ADDR`` or ``AM_REPL_DIR`` has a bad value.
        RuntimeError: the machine is not bound to a nursery and no Trio loop runs.
    """
    prev = _BOUND.get(mach)
    if prev is not None:
        return prev
    env = os.environ if env is None else env
    cfg = parse_repl_env(env)
    if cfg is None:
        return None
    binding = ReplBinding(mach.id, cfg.addr, cfg.addr_dir)
    if _is_set(env, "AM_TEST_RUNNER") and not _is_set(env, "AM_TEST_DEBUG"):
        binding.disabled = "AM_TEST_RUNNER"
        binding._done.set()
        binding._closed.set()
        _BOUND[mach] = binding
        return binding

    if mach.disposed:
        binding.error = MachineDisposedError("disposed before its REPL started", machine_id=mach.id)
        binding._done.set()
        binding._closed.set()
        _BOUND[mach] = binding
        return binding
    bound = isinstance(mach, Machine) and mach._nursery is not None
    gone = trio.Event()
    if not bound:
        mach.on_dispose(lambda _id: gone.set())

    async def run() -> None:
        try:
            async with serve_repl(mach, cfg.addr, cfg.addr_dir) as rs:
                binding.url = rs.url
                binding.addr_file = rs.addr_file
                binding._done.set()
                _log.info("[%s] REPL listening on %s", mach.id, rs.url)
                await gone.wait()  # (a bound machine's fork is cancelled instead)
        except Exception as exc:
            binding.error = exc
            _log.warning(
                "[%s] REPL endpoint %s failed: %r",
                mach.id,
                cfg.addr,
                exc,
                extra={"machine_id": mach.id},
            )
        finally:
            binding._done.set()
            binding._closed.set()

    if bound:
        mach.fork(run)
    else:
        try:
            trio.lowlevel.spawn_system_task(run, name=f"{mach.id}:repl")
        except RuntimeError:
            raise RuntimeError(
                f"[{mach.id}] AM_REPL_ADDR needs the machine bound to a nursery "
                "(async with mach / open_machine) or a running Trio loop"
            ) from None
    _BOUND[mach] = binding
    return binding
