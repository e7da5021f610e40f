"""The relay's rules, without I/O (arpc.md C2): request paths, ids, target allow-lists,
origins and the relay's own control frames.

Everything here is pure so that it can be checked exhaustively (see
``tests/relay/test_rules.py``); :mod:`trio_am.relay._relay` does the networking.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import urllib.parse
from collections.abc import Iterable
from typing import Final

import attrs
import msgpack

__all__ = [
    "DEFAULT_ALLOW_LISTEN",
    "FINAL_CODES",
    "ID_RE",
    "LOOPBACK_HOSTS",
    "RELAY_BRIDGED",
    "RELAY_ERROR",
    "OriginPolicy",
    "RelayCode",
    "Route",
    "RouteError",
    "TargetRules",
    "bridged_frame",
    "error_frame",
    "format_target",
    "parse_route",
    "parse_target",
    "tcp_error_frame",
]

#: Kind of the control frame a listen tunnel gets when it is bridged: ``[112, peer]``.
RELAY_BRIDGED: Final = 112
#: Kind of the relay's error frame on the WebSocket side: ``[113, code, message]``.
RELAY_ERROR: Final = 113
#: Tunnel ids: the ``<id>`` in ``/dial/<id>/…`` and ``/listen/<id>/…``.
ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Hosts that count as loopback for the default ``allow_listen``.
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


class RelayCode(enum.IntEnum):
    """Codes of ``RELAY_ERROR`` frames (WS side) and of the ``ERROR`` frames the relay
    sends on the TCP side. The first ones are the aRPC codes (B11) with the same meaning;
    32 and up are the relay's own."""

    MALFORMED = 1
    TOO_LARGE = 4
    OVERLOAD = 12
    SHUTDOWN = 13
    INTERNAL = 15
    TIMEOUT = 16
    #: The target is not in ``allow_dial`` / ``allow_listen``.
    NOT_ALLOWED = 32
    #: A bad path, id or ``host:port``, or no handler for an address-less tunnel.
    BAD_TARGET = 33
    #: The TCP target could not be reached (or the listen address could not be bound).
    UNREACHABLE = 34
    #: The TCP side closed or died while bridged.
    TARGET_CLOSED = 35


#: Codes after which a page should not retry the same tunnel.
FINAL_CODES: Final = frozenset({RelayCode.NOT_ALLOWED, RelayCode.BAD_TARGET})


def error_frame(code: int, message: str) -> bytes:
    """``[113, code, message]``, encoded."""
    return msgpack.packb([RELAY_ERROR, int(code), message], use_bin_type=True)  # type: ignore[no-any-return]


def bridged_frame(peer: str) -> bytes:
    """``[112, peer]``, encoded."""
    return msgpack.packb([RELAY_BRIDGED, peer], use_bin_type=True)  # type: ignore[no-any-return]


def tcp_error_frame(code: int, message: str, fatal: bool) -> bytes:
    """An aRPC ``ERROR`` frame ``[34, req, code, message, fatal]`` for the TCP side."""
    return msgpack.packb([34, None, int(code), message, fatal], use_bin_type=True)  # type: ignore[no-any-return]


class RouteError(ValueError):
    """A request path the relay cannot route; ``code`` is the :class:`RelayCode`."""

    def __init__(self, code: RelayCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_target(text: str) -> tuple[str, int]:
    """``"host:port"`` (IPv6 as ``[::1]:port``) -> ``(host, port)``.

    Raises:
        RouteError: BAD_TARGET when it is not a host and a port in 1..65535.
    """
    host, sep, port_s = text.rpartition(":")
    if not sep or not host or not port_s.isdigit() or len(port_s) > 5:
        raise RouteError(RelayCode.BAD_TARGET, f"bad target {text!r}: expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise RouteError(RelayCode.BAD_TARGET, f"bad target {text!r}: port out of range")
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,253}", host):
        raise RouteError(RelayCode.BAD_TARGET, f"bad target {text!r}: bad host")
    return host.lower(), port


def format_target(host: str, port: int) -> str:
    """``(host, port)`` -> ``"host:port"`` (``[v6]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@attrs.frozen
class Route:
    """A routed WebSocket request.

    Attributes:
        mode: ``"dial"`` or ``"listen"``.
        id: the tunnel id.
        target: ``(host, port)``, or None when the path has none (then an in-process
            handler must match the id).
        raw: ``?raw=1``: copy bytes unchanged instead of frames (dial only).
    """

    mode: str
    id: str
    target: tuple[str, int] | None
    raw: bool = False


def parse_route(path: str) -> Route:
    """Route a WebSocket request path: ``/dial/<id>[/<host:port>]`` or
    ``/listen/<id>[/<host:port>]``, with an optional ``?raw=1``.

    Raises:
        RouteError: BAD_TARGET for anything else, a bad id or a bad ``host:port``.
    """
    parts = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(parts.query)
    raw = query.get("raw", ["0"])[-1] in ("1", "true", "yes")
    segs = [urllib.parse.unquote(s) for s in parts.path.split("/")[1:]]
    if len(segs) not in (2, 3) or segs[0] not in ("dial", "listen"):
        raise RouteError(
            RelayCode.BAD_TARGET,
            f"bad path {parts.path!r}: expected /dial/<id>/<host:port> or /listen/<id>/<host:port>",
        )
    mode, tid = segs[0], segs[1]
    if not ID_RE.fullmatch(tid):
        raise RouteError(RelayCode.BAD_TARGET, f"bad tunnel id {tid!r}: [A-Za-z0-9._-]{{1,64}}")
    target = parse_target(segs[2]) if len(segs) == 3 and segs[2] else None
    if raw and mode != "dial":
        raise RouteError(RelayCode.BAD_TARGET, "raw mode is for /dial only")
    return Route(mode, tid, target, raw)


def _norm_host(host: str) -> str:
    host = host.lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class TargetRules:
    """An allow-list of ``host:port`` targets.

    Entries are ``"host:port"``, ``"host:lo-hi"`` (a port range) or ``"host:*"``; the
    host may be ``*`` (any host) or ``loopback`` (``127.0.0.1``, ``::1``, ``localhost``).
    An empty list allows nothing.
    """

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.entries: tuple[str, ...] = tuple(entries)
        self._rules: list[tuple[str, int, int]] = []
        for e in self.entries:
            host, sep, ports = e.rpartition(":")
            if not sep or not host:
                raise ValueError(f"bad allow-list entry {e!r}: expected host:port")
            if ports == "*":
                lo, hi = 1, 65535
            elif "-" in ports:
                a, _, b = ports.partition("-")
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(ports)
            if not 1 <= lo <= hi <= 65535:
                raise ValueError(f"bad allow-list entry {e!r}: ports out of range")
            self._rules.append((_norm_host(host), lo, hi))

    def allows(self, host: str, port: int) -> bool:
        """True when some entry matches ``host:port``."""
        h = _norm_host(host)
        for rh, lo, hi in self._rules:
            if not lo <= port <= hi:
                continue
            if rh == "*" or rh == h:
                return True
            if rh == "loopback" and h in LOOPBACK_HOSTS:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self._rules)

    def __repr__(self) -> str:
        return f"TargetRules({list(self.entries)!r})"


#: The default ``allow_listen``: loopback hosts, unprivileged ports.
DEFAULT_ALLOW_LISTEN: Final = ("loopback:1024-65535",)


class OriginPolicy:
    """Which browser pages may open tunnels (the ``Origin`` header of a WebSocket).

    A request without ``Origin`` is not from a browser page and is allowed. A page from
    the relay's own origin (its ``Host`` header) is allowed. Otherwise the origin must be
    listed (``"http://localhost:8000"``), or the list must contain ``"*"``.
    """

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed)

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        """True when a request with this ``Origin`` and ``Host`` may open a tunnel."""
        if origin is None:
            return True
        o = origin.rstrip("/").lower()
        if "*" in self.allowed or o in self.allowed:
            return True
        if host_header:
            netloc = urllib.parse.urlsplit(o).netloc
            if netloc and netloc == host_header.lower():
                return True
        return False
