"""The aRPC protocol, version 1, without I/O (arpc.md B3 to B7).

Like h11, this module only turns bytes into checked frames and state into frames; the
Trio code in :mod:`trio_am.rpc.server` and :mod:`trio_am.rpc.client` moves them.

* :func:`parse_client_frame` and :func:`parse_server_frame` check one decoded frame
  completely (kind allowed for the side, field types, counts) and return a
  :class:`Frame`, or raise :class:`FrameError` with the B11 code to answer with.
* :class:`ClockView` is the sending side of clock sync for one session: the base last
  sent, deltas computed at send time, shallow clocks, checksums.
* :class:`Mirror` is the receiving side: it checks ``seq`` and the checksum before a
  delta is applied.

A delta ``D`` is ``[pairs, dqt, dmt, sum]``: ``pairs`` is a flat list of
``index, increment``; ``dqt`` and ``dmt`` are the increments of the queue tick and of
the machine tick; ``sum`` is ``(sum of tracked ticks + qt + mt) mod 2**32`` after the
delta.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack

from .errors import ErrorCode

__all__ = [
    "FLAG_ERROR",
    "FLAG_NO_RESULT",
    "ID_RE",
    "PROTO",
    "SUBPROTOCOL",
    "ClockView",
    "Frame",
    "FrameError",
    "Kind",
    "Mirror",
    "Op",
    "checksum",
    "parse_client_frame",
    "parse_server_frame",
    "schema_hash",
    "wire_schema",
]

#: The protocol version this module speaks.
PROTO: Final = 1
#: The WebSocket subprotocol name.
SUBPROTOCOL: Final = "am-rpc.1"
#: Client ids (HELLO ``id``).
ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: MUTATE flag: send no RESULT (``*_ns``).
FLAG_NO_RESULT: Final = 1
#: MUTATE flag: an error mutation (adds ``Exception`` and ``ErrOnClient``).
FLAG_ERROR: Final = 2
_MAX_INT: Final = 2**53 - 1
_MOD: Final = 2**32


class Kind(enum.IntEnum):
    """Frame kinds (B4). Clients send odd kinds, servers even ones; both use 32 and up."""

    HELLO = 1
    WELCOME = 2
    MUTATE = 3
    RESULT = 4
    SYNC = 5
    CLOCK = 6
    GET = 7
    SNAPSHOT = 8
    PAYLOAD_ACK = 9
    MUTATIONS = 10
    PAYLOAD = 12
    VALUE = 14
    SCHEMA = 16
    PING = 32
    PONG = 33
    ERROR = 34
    BYE = 35


class Op(enum.IntEnum):
    """MUTATE ``op`` values; a toggle is decided on the server."""

    ADD = 0
    REMOVE = 1
    SET = 2
    TOGGLE = 3


_CLIENT_KINDS: Final = frozenset({1, 3, 5, 7, 9, 32, 33, 34, 35})
_SERVER_KINDS: Final = frozenset({2, 4, 6, 8, 10, 12, 14, 16, 32, 33, 34, 35})


class FrameError(Exception):
    """A frame that fails the checks; answer with an ERROR of ``code``.

    Attributes:
        code: the B11 code.
        req: the request id when it could be read (the ERROR then names it).
    """

    def __init__(self, code: int, message: str, req: int | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.req = req


class Frame:
    """One checked frame: ``kind`` plus ``fields`` (the positional fields after the
    kind, optional ones filled with None) or ``data`` (the map of map frames)."""

    __slots__ = ("data", "fields", "kind")

    def __init__(self, kind: int, fields: list[Any], data: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.fields = fields
        self.data = data

    def __repr__(self) -> str:
        name = Kind(self.kind).name if self.kind in Kind._value2member_map_ else self.kind
        return f"Frame({name}, {self.data if self.data is not None else self.fields})"


def _is_int(v: object) -> bool:
    return type(v) is int and -_MAX_INT <= v <= _MAX_INT


def _uint(v: object) -> bool:
    return type(v) is int and 0 <= v <= _MAX_INT


def _bad(kind: int, msg: str, req: object = None) -> FrameError:
    name = Kind(kind).name if kind in Kind._value2member_map_ else str(kind)
    return FrameError(ErrorCode.BAD_FIELD, f"{name}: {msg}", req if _uint(req) else None)  # type: ignore[arg-type]


def check_delta(d: object, kind: int) -> list[Any]:
    """Check the shape of a delta ``[pairs, dqt, dmt, sum]``."""
    if type(d) is not list or len(d) < 4:
        raise _bad(kind, "delta must be [pairs, dqt, dmt, sum]")
    pairs, dqt, dmt, s = d[0], d[1], d[2], d[3]
    if type(pairs) is not list or len(pairs) % 2:
        raise _bad(kind, "delta pairs must be a flat list of index, increment")
    for v in pairs:
        if not _uint(v):
            raise _bad(kind, "delta pairs must be non-negative integers")
    if not (_uint(dqt) and _uint(dmt) and _uint(s)):
        raise _bad(kind, "delta dqt, dmt and sum must be non-negative integers")
    return d


# field checkers: (min fields, max fields, per-field checkers)
def _opt_map(v: object) -> bool:
    return v is None or isinstance(v, dict)


def _op(v: object) -> bool:
    return type(v) is int and 0 <= v <= 3


def _opt_uint(v: object) -> bool:
    return v is None or _uint(v)


def _idx_list(v: object) -> bool:
    return type(v) is list and all(_uint(i) for i in v)


def _src(v: object) -> bool:
    return v is None or (
        type(v) is list
        and len(v) >= 3
        and isinstance(v[0], str)
        and isinstance(v[1], str)
        and _is_int(v[2])
    )


def _str(v: object) -> bool:
    return isinstance(v, str)


def _bool(v: object) -> bool:
    return type(v) is bool


def _any(v: object) -> bool:
    return True


def _opt_str(v: object) -> bool:
    return v is None or isinstance(v, str)


def _opt_delta(v: object) -> bool:
    return v is None or type(v) is list


def _res(v: object) -> bool:
    return _is_int(v) and v >= -1  # type: ignore[operator]


_SPECS: Final[dict[int, tuple[int, tuple[Any, ...]]]] = {
    # kind: (required fields, checkers for all fields)
    Kind.MUTATE: (3, (_uint, _op, _idx_list, _opt_map, _opt_uint, _src)),
    Kind.SYNC: (1, (_uint,)),
    Kind.GET: (2, (_uint, _str, _opt_map)),
    Kind.PAYLOAD_ACK: (2, (_uint, _bool, _opt_uint)),
    Kind.PING: (1, (_uint,)),
    Kind.PONG: (1, (_uint,)),
    Kind.ERROR: (3, (_opt_uint, _uint, _str, _bool, _opt_map)),
    Kind.BYE: (2, (_uint, _str)),
    Kind.RESULT: (5, (_uint, _uint, _opt_delta, _uint, _res)),
    Kind.CLOCK: (3, (_uint, _uint, _opt_delta)),
    Kind.SNAPSHOT: (5, (_uint, _uint, _idx_list, _uint, _uint, _opt_uint)),
    Kind.MUTATIONS: (3, (_uint, _uint, lambda v: type(v) is list)),
    Kind.PAYLOAD: (5, (_uint, _str, _any, _str, _str, _opt_str)),
    Kind.VALUE: (2, (_uint, _any)),
}


def _parse(obj: object, allowed: frozenset[int]) -> Frame:
    if type(obj) is not list or not obj:
        raise FrameError(ErrorCode.MALFORMED, "a frame is a non-empty array")
    kind = obj[0]
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise FrameError(ErrorCode.MALFORMED, "a frame starts with an integer kind")
    kind = int(kind)
    if kind not in allowed:
        raise FrameError(ErrorCode.UNKNOWN_KIND, f"frame kind {kind} is unknown or not allowed")
    if kind in (Kind.HELLO, Kind.WELCOME, Kind.SCHEMA):
        if len(obj) < 2 or not isinstance(obj[1], dict):
            raise _bad(kind, "expected a map")
        return Frame(kind, [], obj[1])
    required, checks = _SPECS[kind]
    fields = obj[1:]
    req = fields[0] if fields else None
    if len(fields) < required:
        raise _bad(kind, f"expected at least {required} fields, got {len(fields)}", req)
    n = len(checks)
    if len(fields) < n:
        fields = fields + [None] * (n - len(fields))
    elif len(fields) > n:
        fields = fields[:n]  # unknown extra fields at the end are ignored
    for i, check in enumerate(checks):
        if not check(fields[i]):
            raise _bad(kind, f"field {i + 1} has a wrong type ({type(fields[i]).__name__})", req)
    if kind in (Kind.RESULT, Kind.CLOCK) and fields[2] is not None:
        check_delta(fields[2], kind)
    elif kind == Kind.ERROR and fields[3] is None:
        fields[3] = False
    return Frame(kind, fields)


def parse_client_frame(obj: object) -> Frame:
    """Check a decoded frame that a client sent (for the server)."""
    return _parse(obj, _CLIENT_KINDS)


def parse_server_frame(obj: object) -> Frame:
    """Check a decoded frame that a server sent (for the client)."""
    return _parse(obj, _SERVER_KINDS)


def checksum(ticks: Sequence[int], qt: int, mt: int) -> int:
    """The delta checksum: ``(sum(ticks) + qt + mt) mod 2**32``."""
    return (sum(ticks) + qt + mt) % _MOD


class ClockView:
    """The sending side of clock sync for one session (B6).

    ``src_idx[i]`` is the source index of the session's state ``i``; only ``tracked``
    session indexes are sent (others stay 0 on the client). With ``shallow``, a tick
    only grows when the state's activity differs from what the client last saw, so the
    client sees 0/1-style clocks whose parity is still the truth.
    """

    __slots__ = ("base", "mt", "qt", "shallow", "src_idx", "tracked")

    def __init__(self, src_idx: Sequence[int], tracked: Sequence[int], shallow: bool) -> None:
        self.src_idx = list(src_idx)
        self.tracked = list(tracked)
        self.shallow = shallow
        self.base = [0] * len(self.src_idx)
        self.qt = 0
        self.mt = 0

    def snapshot(self, src_ticks: Sequence[int], qt: int, mt: int) -> list[int]:
        """Reset the base to the source's clock and return the session's time."""
        base = [0] * len(self.src_idx)
        src = self.src_idx
        if self.shallow:
            for i in self.tracked:
                base[i] = src_ticks[src[i]] & 1
        else:
            for i in self.tracked:
                base[i] = src_ticks[src[i]]
        self.base = base
        self.qt = qt
        self.mt = mt
        return list(base)

    def delta(self, src_ticks: Sequence[int], qt: int, mt: int) -> list[Any] | None:
        """The delta from the base to the source's clock (the base moves), or None."""
        base = self.base
        src = self.src_idx
        pairs: list[int] = []
        if self.shallow:
            for i in self.tracked:
                b = base[i]
                if (src_ticks[src[i]] ^ b) & 1:
                    base[i] = b + 1
                    pairs += (i, 1)
        else:
            for i in self.tracked:
                t = src_ticks[src[i]]
                b = base[i]
                if t != b:
                    if t < b:  # cannot happen within an epoch; keep ticks growing
                        continue
                    base[i] = t
                    pairs += (i, t - b)
        dqt = qt - self.qt if qt > self.qt else 0
        dmt = mt - self.mt if mt > self.mt else 0
        if not pairs and not dqt and not dmt:
            return None
        self.qt += dqt
        self.mt += dmt
        return [pairs, dqt, dmt, (sum(base) + self.qt + self.mt) % _MOD]

    def dirty(self, src_ticks: Sequence[int], qt: int, mt: int) -> bool:
        """True when :meth:`delta` would return something."""
        if qt > self.qt or mt > self.mt:
            return True
        src = self.src_idx
        base = self.base
        if self.shallow:
            return any((src_ticks[src[i]] ^ base[i]) & 1 for i in self.tracked)
        return any(src_ticks[src[i]] != base[i] for i in self.tracked)


class Mirror:
    """The receiving side of clock sync: the client's copy of the session clock.

    :meth:`apply` checks ``seq`` and the checksum before anything changes and reports
    whether the delta was applied; a refused delta leaves the mirror as it was.
    """

    __slots__ = ("mt", "qt", "seq", "ticks")

    def __init__(self, n: int = 0) -> None:
        self.ticks = [0] * n
        self.qt = 0
        self.mt = 0
        self.seq = 0

    def reset(self, ticks: Sequence[int], qt: int, mt: int, seq: int) -> None:
        """Take a full snapshot (WELCOME, SNAPSHOT)."""
        self.ticks = list(ticks)
        self.qt = qt
        self.mt = mt
        self.seq = seq

    def apply(self, seq: int, d: Sequence[Any]) -> bool:
        """Apply delta ``d`` carried by a frame with ``seq``. False on a gap, an index
        out of range or a bad checksum (the caller then resyncs)."""
        if seq != self.seq + 1:
            return False
        pairs, dqt, dmt, s = d[0], d[1], d[2], d[3]
        ticks = self.ticks.copy()
        n = len(ticks)
        for k in range(0, len(pairs), 2):
            i = pairs[k]
            if i >= n:
                return False
            ticks[i] += pairs[k + 1]
        qt = self.qt + dqt
        mt = self.mt + dmt
        if (sum(ticks) + qt + mt) % _MOD != s:
            return False
        self.ticks = ticks
        self.qt = qt
        self.mt = mt
        self.seq = seq
        return True


def wire_schema(schema: Mapping[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The schema as sent in WELCOME: only ``names``, relations to hidden states dropped,
    empty fields left out."""
    visible = set(names)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        st = schema.get(name)
        if st is None:
            out[name] = {}
            continue
        d: dict[str, Any] = {}
        if st.auto:
            d["auto"] = True
        if st.multi:
            d["multi"] = True
        for rel in ("require", "add", "remove", "after"):
            vals = [v for v in getattr(st, rel) if v in visible]
            if vals:
                d[rel] = vals
        if st.tags:
            d["tags"] = list(st.tags)
        out[name] = d
    return out


def schema_hash(wire: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> bytes:
    """16 bytes of SHA-256 over the sorted wire schema and the state order."""
    canon = msgpack.packb(
        [list(names), sorted((k, sorted(v.items())) for k, v in wire.items())],
        use_bin_type=True,
    )
    return hashlib.sha256(canon).digest()[:16]
