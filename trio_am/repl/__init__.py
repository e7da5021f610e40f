"""The REPL / CLI of trio_am (tools.md §3.1): reach running machines over aRPC.

Served side: :func:`serve_repl` serves a machine for the REPL (and writes
``<id>-repl.addr`` into a directory); :func:`bind_env_repl` does it when
``AM_REPL_ADDR`` asks (``1`` = ``127.0.0.1:0``; ``AM_REPL_DIR`` for the file).

Client side: :func:`open_repl` connects to many endpoints and runs commands
(:meth:`Repl.execute`); the ``trio-am repl`` command line (:mod:`trio_am.cli.repl`) is
built on it::

    async with serve_repl(mach, addr_dir="tmp"):      # in the program
        ...

    $ trio-am repl -d tmp -- list                      # elsewhere
    => 1. worker t3
    =>    CS: (Start:1 Foo:2)
"""

from __future__ import annotations

from ._addrs import (
    ADDR_SUFFIX,
    AddrSource,
    addr_file_name,
    normalize_url,
    read_addr_dir,
    read_addr_file,
)
from ._commands import CHEATSHEET, COMMANDS, GROUPS, Command
from ._complete import CompletionContext, complete
from ._errors import ReplError
from ._filters import ListFilters, MachSnapshot
from ._repl import Conn, Repl, Status, open_repl
from ._server import (
    DEFAULT_REPL_ADDR,
    ReplBinding,
    ReplEnv,
    ReplServer,
    bind_env_repl,
    parse_repl_env,
    serve_repl,
)
from ._states import REPL_SCHEMA, ReplStates

__all__ = [
    "ADDR_SUFFIX",
    "CHEATSHEET",
    "COMMANDS",
    "DEFAULT_REPL_ADDR",
    "GROUPS",
    "REPL_SCHEMA",
    "AddrSource",
    "Command",
    "CompletionContext",
    "Conn",
    "ListFilters",
    "MachSnapshot",
    "Repl",
    "ReplBinding",
    "ReplEnv",
    "ReplError",
    "ReplServer",
    "ReplStates",
    "Status",
    "addr_file_name",
    "bind_env_repl",
    "complete",
    "normalize_url",
    "open_repl",
    "parse_repl_env",
    "read_addr_dir",
    "read_addr_file",
    "serve_repl",
]
