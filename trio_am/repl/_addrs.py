"""Addresses of REPL endpoints: parsing, ``.addr`` files and directories (tools.md §3.1).

An address is a URL (``tcp://host:port``, ``ws://host:port[/path]``, ``wss://...``) or a
bare ``host:port``, which means TCP. An ``.addr`` file holds one address per line (blank
lines and ``#`` comments are skipped); :func:`serve_repl` writes one, named
``<machine id>-repl.addr``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from ..rpc.transport import parse_url
from ._errors import ReplError

__all__ = [
    "ADDR_SUFFIX",
    "AddrSource",
    "addr_file_name",
    "normalize_url",
    "read_addr_dir",
    "read_addr_file",
    "remove_addr_file",
    "unique",
    "write_addr_file",
]

#: The file name ending of address files (``<machine id>-repl.addr``).
ADDR_SUFFIX: Final = "-repl.addr"

_FILE_SAFE: Final = re.compile(r"[^A-Za-z0-9._-]")


def normalize_url(addr: str, *, listen: bool = False) -> str:
    """Turn ``addr`` (``host:port`` or an aRPC URL) into a URL.

    Args:
        addr: ``host:port`` (TCP), ``[v6]:port``, ``tcp://…``, ``ws://…`` or ``wss://…``.
        listen: the address is to listen on (port 0 allowed); else it is dialed.

    Raises:
        ReplError: not an address of that kind.
    """
    text = addr.strip() if isinstance(addr, str) else ""
    if not text:
        raise ReplError(f"bad address {addr!r}: empty")
    url = text if "://" in text else f"tcp://{text}"
    try:
        scheme, _host, port, _path = parse_url(url)
    except ValueError as exc:
        raise ReplError(f"bad address {text!r}: {exc} (expected host:port or a URL)") from None
    if scheme == "tcp" and not 0 <= port <= 65535:  # pragma: no cover - urlsplit checks
        raise ReplError(f"bad address {text!r}: port out of range")
    if port == 0 and not listen:
        raise ReplError(f"bad address {text!r}: port 0 cannot be dialed")
    return url


def addr_file_name(machine_id: str) -> str:
    """The address file name of a machine: ``<id>-repl.addr`` (unsafe characters ``_``)."""
    return (_FILE_SAFE.sub("_", machine_id).lstrip(".") or "machine") + ADDR_SUFFIX


def write_addr_file(addr_dir: str | os.PathLike[str], machine_id: str, url: str) -> Path:
    """Write ``url`` to ``addr_dir/<id>-repl.addr`` atomically (creating the directory).

    Raises:
        OSError: the directory or the file cannot be written.
    """
    d = Path(addr_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    path = d / addr_file_name(machine_id)
    tmp = d / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_text(url + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def remove_addr_file(path: Path, url: str) -> bool:
    """Remove ``path`` if it still holds ``url`` (another server may have taken the name
    since). Returns whether it was removed; never raises."""
    try:
        if path.read_text(encoding="utf-8").strip() != url:
            return False
        path.unlink()
    except OSError:
        return False
    return True


def _parse_lines(text: str, where: str) -> list[str]:
    out: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(normalize_url(line))
        except ReplError as exc:
            raise ReplError(f"{where}:{n}: {exc}") from None
    return out


def read_addr_file(path: str | os.PathLike[str]) -> list[str]:
    """The addresses (as URLs) in an address file.

    Raises:
        ReplError: the file cannot be read, holds no address or a bad one.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReplError(f"no such file: {str(p)!r}") from None
    except IsADirectoryError:
        raise ReplError(f"{str(p)!r} is a directory (use -d DIR)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplError(f"cannot read {str(p)!r}: {exc}") from None
    urls = _parse_lines(text, str(p))
    if not urls:
        raise ReplError(f"{str(p)!r} holds no address")
    return urls


def read_addr_dir(path: str | os.PathLike[str], problems: list[str] | None = None) -> list[str]:
    """The addresses in every ``*.addr`` file of a directory (not recursive), files in
    name order. A file that cannot be read or holds a bad address is skipped (and
    described in ``problems`` when given).

    Raises:
        ReplError: the directory cannot be listed.
    """
    d = Path(path).expanduser()
    try:
        names = sorted(e.name for e in os.scandir(d) if e.name.endswith(".addr") and e.is_file())
    except FileNotFoundError:
        raise ReplError(f"no such directory: {str(d)!r}") from None
    except NotADirectoryError:
        raise ReplError(f"{str(d)!r} is not a directory (use -f FILE)") from None
    except OSError as exc:
        raise ReplError(f"cannot list {str(d)!r}: {exc}") from None
    out: list[str] = []
    for name in names:
        try:
            out.extend(_parse_lines((d / name).read_text(encoding="utf-8"), name))
        except (OSError, UnicodeDecodeError) as exc:
            if problems is not None:
                problems.append(f"cannot read {name}: {exc}")
        except ReplError as exc:
            if problems is not None:
                problems.append(str(exc))
    return out


class AddrSource:
    """Where addresses come from: an address given as is, a file, or a directory.

    Attributes:
        kind: ``"addr"``, ``"file"`` or ``"dir"``.
        value: the address, or the path.
    """

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: str) -> None:
        if kind not in ("addr", "file", "dir"):
            raise ValueError(f"unknown address source kind {kind!r}")
        self.kind = kind
        self.value = value

    @property
    def watchable(self) -> bool:
        """True for files and directories (their contents can change)."""
        return self.kind != "addr"

    def read(self, problems: list[str] | None = None) -> list[str]:
        """The addresses now (URLs); files of a directory that were skipped are described
        in ``problems`` when given.

        Raises:
            ReplError: a bad address, or a file or directory that cannot be read.
        """
        if self.kind == "addr":
            return [normalize_url(self.value)]
        if self.kind == "file":
            return read_addr_file(self.value)
        return read_addr_dir(self.value, problems)

    def __repr__(self) -> str:
        return f"AddrSource({self.kind!r}, {self.value!r})"


def unique(urls: Iterable[str]) -> list[str]:
    """``urls`` without repeats, in first-seen order."""
    seen: set[str] = set()
    out: list[str] = []
    for u in urls:
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out
