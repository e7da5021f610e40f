"""The aRPC wire encoding (arpc.md B3, B10, B11): msgpack with two ext types. Sans-I/O.

* :func:`encode` turns a frame (or any supported value) into msgpack bytes, or raises
  :class:`~trio_am.rpc.errors.ArgsEncodeError` naming the value and where it was found.
  It never returns partial output.
* :func:`decode` turns bytes from a peer into Python values, or raises
  :class:`DecodeError` with a B11 code. For *any* input it raises nothing else.
* :func:`check_args` checks an args map against :class:`Limits` before it is sent or
  applied.
* :func:`frame_kind` peeks at a frame's kind without decoding it.

Supported values: ``None``, ``bool``, ``int`` (``|i| <= 2**53 - 1``), ``float``, ``str``,
``bytes`` (also ``bytearray`` and ``memoryview``), ``list`` and ``tuple`` (both arrive as
lists), ``dict`` with ``str`` keys, tz-aware ``datetime`` (the msgpack timestamp type;
it arrives in UTC), typed-args objects (ext type 1: ``[args_key, unstructured]``),
:class:`RawArgs` (re-sent unchanged as ext type 1) and exceptions (ext type 2:
``[type, message, traceback]``, arriving as
:class:`~trio_am.rpc.errors.RemoteError`).

Nesting depth counts every list, map, typed-args object (its ``[key, data]`` wrapper) and
exception as one level; a frame itself is level 1, so the args map of a MUTATE is level 2.
:func:`check_args` allows ``limits.args_depth`` levels inside (and including) the args
map; :func:`decode` refuses anything nested deeper than ``limits.args_depth + 8`` (never
more than 256) as ``MALFORMED``, so that too-deep args still reach :func:`check_args` and
get ``BAD_ARGS`` for their request, while absurd nesting is cut off early.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import traceback as _tb
from collections.abc import Mapping
from typing import Any, Final

import attrs
import msgpack

from ..args import args_converter
from .errors import ArgsEncodeError, ArgsError, ErrorCode, RemoteError

__all__ = [
    "DEFAULT_LIMITS",
    "EXT_EXCEPTION",
    "EXT_TYPED_ARGS",
    "MAX_INT",
    "DecodeError",
    "Limits",
    "RawArgs",
    "check_args",
    "decode",
    "encode",
    "frame_kind",
]

#: The largest integer that may travel (JavaScript's ``Number.MAX_SAFE_INTEGER``); the
#: smallest is ``-MAX_INT``.
MAX_INT: Final = 2**53 - 1

#: msgpack ext type of a typed-args object: ``[args_key, unstructured]``.
EXT_TYPED_ARGS: Final = 1
#: msgpack ext type of an exception: ``[type_name, message, traceback]``.
EXT_EXCEPTION: Final = 2

# An exception's traceback is cut to its last characters so that an error mutation
# (args["err"]) stays well below the args limit.
_MAX_TRACEBACK: Final = 16_000
# msgpack's own nesting limit when packing.
_PACK_DEPTH: Final = 511
# decode() never allows deeper nesting than this, whatever the limits say.
_DECODE_DEPTH_CAP: Final = 256

_packb = msgpack.packb
_unpackb = msgpack.unpackb
_ExtType = msgpack.ExtType


def _positive(_inst: Any, attr: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"Limits.{attr.name} must be a positive number, got {value!r}")


@attrs.frozen(kw_only=True)
class Limits:
    """Frame, args and session limits (arpc.md B10). Frozen; use ``attrs.evolve``.

    Attributes:
        frame: frames up to this many bytes are handled; larger ones (up to
            ``hard_frame``) are skipped with ``TOO_LARGE``.
        hard_frame: larger frames close the connection.
        args: the largest encoded args map, in bytes (``BAD_ARGS`` beyond).
        args_depth: the deepest nesting of an args map (``BAD_ARGS`` beyond).
        inflight: requests a session may have in flight before the server stops reading.
        outbound_frames: frames waiting to be sent to one session (``OVERLOAD`` beyond).
        outbound_bytes: bytes waiting to be sent to one session (``OVERLOAD`` beyond).
        sessions: live sessions of one server (``OVERLOAD`` beyond).
        errors: peer errors allowed within ``errors_window`` seconds (``ABUSE`` beyond).
        errors_window: the window for ``errors``, in seconds.
    """

    frame: int = attrs.field(default=1 << 20, validator=_positive)
    hard_frame: int = attrs.field(default=4 << 20, validator=_positive)
    args: int = attrs.field(default=64 << 10, validator=_positive)
    args_depth: int = attrs.field(default=32, validator=_positive)
    inflight: int = attrs.field(default=256, validator=_positive)
    outbound_frames: int = attrs.field(default=1024, validator=_positive)
    outbound_bytes: int = attrs.field(default=8 << 20, validator=_positive)
    sessions: int = attrs.field(default=1024, validator=_positive)
    errors: int = attrs.field(default=20, validator=_positive)
    errors_window: float = attrs.field(default=10.0, validator=_positive)

    def to_wire(self) -> dict[str, Any]:
        """The limits a peer needs to know, for WELCOME's ``limits`` map: ``frame``,
        ``args``, ``args_depth`` and ``inflight`` (the server adds ``hb`` and ``push``)."""
        return {
            "frame": self.frame,
            "args": self.args,
            "args_depth": self.args_depth,
            "inflight": self.inflight,
        }


#: The default :class:`Limits`.
DEFAULT_LIMITS: Final = Limits()


@attrs.frozen
class RawArgs:
    """Typed args whose key is not registered on this side (``strict_args=False``).

    Encoding it again gives the same ext type 1 value, so relays and replicas can
    forward typed args they cannot build.

    Attributes:
        key: the args key, ``"<prefix>__<state>"``.
        data: the unstructured value (usually a map).
    """

    key: str
    data: Any


class DecodeError(Exception):
    """Bytes from a peer that cannot be decoded.

    Attributes:
        code: the B11 code to answer with: ``MALFORMED`` (not msgpack, bad ext or too
            deep), ``TOO_LARGE`` (above ``limits.frame``), ``BAD_ARGS`` (typed args that
            are unknown or do not fit their class) or ``BAD_FIELD`` (an integer beyond
            ``±MAX_INT``).
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DecodeError, (self.code, str(self)))


# ---------------------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------------------


class _Unencodable(Exception):
    """Raised by the pack hook; :func:`encode` then looks for the value to blame."""


def _safe_str(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def _exc_fields(exc: BaseException) -> list[str]:
    if isinstance(exc, RemoteError):
        return [
            _safe_str(str(exc.type_name)),
            _safe_str(str(exc.remote_message)),
            _safe_str(str(exc.remote_traceback)),
        ]
    try:
        msg = str(exc)
    except Exception:
        msg = f"<unprintable {type(exc).__name__}>"
    tb = ""
    if exc.__traceback__ is not None:
        try:
            tb = "".join(_tb.format_exception(exc))
        except Exception:
            tb = ""
        if len(tb) > _MAX_TRACEBACK:
            tb = "...\n" + tb[-_MAX_TRACEBACK:]
    return [type(exc).__name__, _safe_str(msg), _safe_str(tb)]


def _default(obj: Any) -> Any:
    """msgpack ``default`` hook: typed args, RawArgs and exceptions become ext types."""
    key = getattr(type(obj), "__am_args_key__", None)
    if key is not None:
        return _ExtType(EXT_TYPED_ARGS, _pack_checked([key, args_converter.unstructure(obj)]))
    if type(obj) is RawArgs:
        if not isinstance(obj.key, str):
            raise _Unencodable
        return _ExtType(EXT_TYPED_ARGS, _pack_checked([obj.key, obj.data]))
    if isinstance(obj, BaseException):
        return _ExtType(EXT_EXCEPTION, _packb(_exc_fields(obj), use_bin_type=True))
    raise _Unencodable


# Bytes that mark a map header or a 64-bit integer. Output without any of them has no
# map (so no non-str key) and no integer beyond 2**32, so it needs no further check.
_enc_scan = re.compile(rb"[\x80-\x8f\xde\xdf\xcf\xd3]").search


def _fast_ok(obj: Any) -> bool:
    """Whether every map key in ``obj`` is a str and every int is within ``±MAX_INT``.

    Ext values (typed args, RawArgs) are checked when they are packed, so they count as
    leaves here.
    """
    t = type(obj)
    items: Any
    if t is list or t is tuple:
        items = obj
    elif t is dict or isinstance(obj, dict):
        for k in obj:
            if type(k) is not str and not isinstance(k, str):
                return False
        items = obj.values()
    elif isinstance(obj, list | tuple):
        items = obj
    elif isinstance(obj, int):
        return -MAX_INT <= obj <= MAX_INT
    else:
        return True
    for v in items:
        t = type(v)
        if t is int:
            if v > MAX_INT or v < -MAX_INT:
                return False
        elif t is str or v is None or t is float or t is bool or t is bytes:
            continue
        elif not _fast_ok(v):
            return False
    return True


def _pack_checked(obj: Any) -> bytes:
    """Pack ``obj`` (no shared state, so the hook can nest it); raise on any problem."""
    out: bytes = _packb(obj, use_bin_type=True, datetime=True, default=_default)
    if _enc_scan(out) is not None and not _fast_ok(obj):
        raise _Unencodable
    return out


def _new_packer() -> Any:
    return msgpack.Packer(use_bin_type=True, datetime=True, default=_default)


# A Packer keeps its buffer; one that grew beyond this is replaced.
_KEEP_BUFFER: Final = 256 << 10


class _PackState(threading.local):
    """A Packer per thread (4x cheaper than ``packb``, which builds one per call);
    ``packb`` is used instead when :func:`encode` is re-entered from a hook."""

    def __init__(self) -> None:
        self.packer = _new_packer()
        self.busy = False


_pack_state = _PackState()


def _fmt_path(path: tuple[Any, ...]) -> str:
    if not path:
        return "the top level"
    text = "".join(f"[{_repr(p)}]" for p in path)
    return text if len(text) <= 100 else text[:97] + "..."


def _repr(v: Any) -> str:
    if isinstance(v, int) and v.bit_length() > 64:
        return f"<an integer of {v.bit_length()} bits>"
    try:
        text = repr(v)
    except Exception:
        text = f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(obj: Any, max_depth: int) -> tuple[bool, str] | None:
    """The first reason ``obj`` cannot travel: ``(too_deep, message)``, or None."""
    try:
        return _find_problem(obj, max_depth)
    except Exception as exc:  # a broken __repr__, tzinfo, ...
        return False, f"value cannot be encoded: {type(exc).__name__}: {_repr(exc)}"


def _find_problem(obj: Any, max_depth: int) -> tuple[bool, str] | None:
    """Iterative, so a cycle or very deep nesting ends at ``max_depth``."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(obj, 0, ())]
    pop = stack.pop
    push = stack.append
    while stack:
        v, depth, path = pop()
        if v is None or isinstance(v, bool | float | str | bytes | bytearray | memoryview):
            continue
        if isinstance(v, int):
            if v > MAX_INT or v < -MAX_INT:
                return False, (
                    f"integer {_repr(v)} at {_fmt_path(path)} is out of range "
                    f"(|i| must be at most 2**53-1 = {MAX_INT})"
                )
            continue
        if isinstance(v, _dt.datetime):
            if v.tzinfo is None or v.utcoffset() is None:
                return False, (
                    f"naive datetime at {_fmt_path(path)}: only tz-aware datetimes can "
                    f"travel (e.g. datetime.now(timezone.utc))"
                )
            continue
        depth += 1
        if depth > max_depth:
            return True, f"nested more than {max_depth} levels deep (at {_fmt_path(path)})"
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    return False, (
                        f"map key {_repr(k)} ({type(k).__name__}) at {_fmt_path(path)}: "
                        f"map keys must be strings"
                    )
                push((item, depth, (*path, k)))
        elif isinstance(v, list | tuple):
            for i, item in enumerate(v):
                push((item, depth, (*path, i)))
        elif type(v) is RawArgs:
            if not isinstance(v.key, str):
                return False, f"RawArgs key {_repr(v.key)} at {_fmt_path(path)} is not a string"
            push((v.data, depth, path))
        elif isinstance(v, BaseException):
            continue
        elif getattr(type(v), "__am_args_key__", None) is not None:
            try:
                data = args_converter.unstructure(v)
            except Exception as exc:
                return False, (
                    f"typed args {type(v).__qualname__} at {_fmt_path(path)} cannot be "
                    f"unstructured: {_repr(exc)}"
                )
            push((data, depth, path))
        else:
            t = type(v)
            return False, (
                f"cannot encode {t.__module__}.{t.__qualname__} at {_fmt_path(path)}: "
                f"only None, bool, int, float, str, bytes, list, tuple, dict with str keys, "
                f"tz-aware datetime, typed args and exceptions can travel"
            )
    return None


def _encode_error(obj: Any, exc: BaseException | None) -> ArgsEncodeError:
    found = _problem(obj, _PACK_DEPTH)
    if found is not None:
        return ArgsEncodeError(found[1])
    if exc is None or isinstance(exc, _Unencodable):  # pragma: no cover - defensive
        return ArgsEncodeError("value cannot be encoded")
    return ArgsEncodeError(f"value cannot be encoded: {_short(exc)}")


def encode(obj: Any) -> bytes:
    """Encode a frame (or any supported value) as msgpack bytes.

    Raises:
        ArgsEncodeError: something in ``obj`` cannot travel (the message names its type
            and its path, e.g. ``[4]['when']``); nothing is returned.
    """
    st = _pack_state
    try:
        if st.busy:
            return _pack_checked(obj)
        st.busy = True
        try:
            out: bytes = st.packer.pack(obj)
        finally:
            st.busy = False
        if len(out) > _KEEP_BUFFER:  # do not keep a huge buffer around
            st.packer = _new_packer()
        if _enc_scan(out) is not None and not _fast_ok(obj):
            raise _Unencodable
    except Exception as exc:
        raise _encode_error(obj, exc) from None
    return out


def check_args(args: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> int:
    """Check an args map before it is sent or applied; return its encoded size.

    The args map itself is nesting level 1 (see the module docs).

    Raises:
        ArgsError: (code 10) args nested deeper than ``limits.args_depth`` or larger than
            ``limits.args`` bytes encoded.
        ArgsEncodeError: a key is not a string, or a value cannot travel.
    """
    if not isinstance(args, Mapping):
        raise ArgsEncodeError(f"args must be a map, got {type(args).__name__}")
    if not isinstance(args, dict):
        args = dict(args)
    found = _problem(args, limits.args_depth)
    if found is not None:
        too_deep, msg = found
        if too_deep:
            raise ArgsError(f"args are {msg}")
        raise ArgsEncodeError(msg)
    try:
        size = len(_pack_checked(args))
    except Exception as exc:
        raise _encode_error(args, exc) from None
    if size > limits.args:
        raise ArgsError(f"args are {size} bytes, limit {limits.args}")
    return size


# ---------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------


class _Ext:
    """An ext value left for the walk (which knows the depth and ``args_types``)."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code = code
        self.data = data


def _ext_hook(code: int, data: bytes) -> Any:
    if code in (EXT_TYPED_ARGS, EXT_EXCEPTION):
        return _Ext(code, data)
    raise DecodeError(ErrorCode.MALFORMED, f"unknown msgpack ext type {code}")


def _unpack(data: Any) -> Any:
    # raw=False, use_list=True and the max_*_len limits are unpackb's defaults: each
    # max_*_len is len(data) (max_map_len len(data) // 2), and decode() refuses data above
    # limits.frame (<= hard_frame) first. Passing them again only costs time.
    return _unpackb(data, strict_map_key=True, timestamp=3, ext_hook=_ext_hook)


# Bytes that mark bin (possible bytes keys), ext (typed args, exceptions, timestamps) and
# 64-bit integers. A short frame without any of them needs no walk.
_dec_scan = re.compile(rb"[\xc4-\xc9\xcf\xd3-\xd8]").search


def _short(exc: BaseException) -> str:
    try:
        msg = str(exc)
    except Exception:
        msg = ""
    if len(msg) > 120:
        msg = msg[:117] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


class _Walk:
    """Checks a decoded value (depth, keys, integers) and resolves ext values."""

    __slots__ = ("args_types", "max_depth", "strict_args")

    def __init__(self, max_depth: int, args_types: Mapping[str, type] | None, strict: bool) -> None:
        self.max_depth = max_depth
        self.args_types = args_types
        self.strict_args = strict

    def value(self, obj: Any, depth: int) -> Any:
        """Check ``obj`` found at ``depth`` (its own level if it is a container)."""
        t = type(obj)
        if t is list:
            return self.walk_list(obj, depth)
        if t is dict:
            return self.walk_dict(obj, depth)
        if t is _Ext:
            return self.ext(obj, depth)
        if t is int and (obj > MAX_INT or obj < -MAX_INT):
            raise DecodeError(ErrorCode.BAD_FIELD, f"integer {obj} beyond ±(2**53-1)")
        return obj

    def _deep(self) -> DecodeError:
        return DecodeError(ErrorCode.MALFORMED, f"nested deeper than {self.max_depth} levels")

    def walk_list(self, obj: list[Any], depth: int) -> list[Any]:
        """Check a list and its items."""
        if depth > self.max_depth:
            raise self._deep()
        for i, v in enumerate(obj):
            t = type(v)
            if t is int:
                if v > MAX_INT or v < -MAX_INT:
                    raise DecodeError(ErrorCode.BAD_FIELD, f"integer {v} beyond ±(2**53-1)")
            elif t is list:
                self.walk_list(v, depth + 1)
            elif t is dict:
                self.walk_dict(v, depth + 1)
            elif t is _Ext:
                obj[i] = self.ext(v, depth + 1)
        return obj

    def walk_dict(self, obj: dict[Any, Any], depth: int) -> dict[Any, Any]:
        """Check a map, its keys and its values."""
        if depth > self.max_depth:
            raise self._deep()
        for k, v in obj.items():
            if type(k) is not str:
                raise DecodeError(ErrorCode.MALFORMED, "map keys must be strings")
            t = type(v)
            if t is int:
                if v > MAX_INT or v < -MAX_INT:
                    raise DecodeError(ErrorCode.BAD_FIELD, f"integer {v} beyond ±(2**53-1)")
            elif t is list:
                self.walk_list(v, depth + 1)
            elif t is dict:
                self.walk_dict(v, depth + 1)
            elif t is _Ext:
                obj[k] = self.ext(v, depth + 1)
        return obj

    def ext(self, ext: _Ext, depth: int) -> Any:
        """Decode an ext value; its payload array counts as the level ``depth``."""
        if depth > self.max_depth:
            raise self._deep()
        try:
            payload = _unpack(ext.data)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(ErrorCode.MALFORMED, f"bad ext {ext.code}: {_short(exc)}")
        if type(payload) is not list:
            raise DecodeError(ErrorCode.MALFORMED, f"ext {ext.code} must hold an array")
        self.walk_list(payload, depth)
        if ext.code == EXT_TYPED_ARGS:
            if len(payload) != 2 or type(payload[0]) is not str:
                raise DecodeError(ErrorCode.MALFORMED, "typed args must be [key, data]")
            key, data = payload
            cls = self.args_types.get(key) if self.args_types else None
            if cls is None:
                if self.strict_args:
                    raise DecodeError(
                        ErrorCode.BAD_ARGS, f"typed args key {_repr(key)} is not registered"
                    )
                return RawArgs(key, data)
            try:
                return args_converter.structure(data, cls)
            except Exception as exc:
                raise DecodeError(
                    ErrorCode.BAD_ARGS, f"typed args {_repr(key)} do not fit: {_short(exc)}"
                )
        if len(payload) != 3 or not all(type(x) is str for x in payload):
            raise DecodeError(
                ErrorCode.MALFORMED, "an exception must be [type, message, traceback]"
            )
        return RemoteError(payload[0], payload[1], payload[2])


def decode(
    data: bytes,
    *,
    limits: Limits = DEFAULT_LIMITS,
    args_types: Mapping[str, type] | None = None,
    strict_args: bool = True,
) -> Any:
    """Decode msgpack bytes from a peer.

    Args:
        data: the frame's bytes.
        limits: ``limits.frame`` bounds the input; ``limits.args_depth + 8`` the nesting.
        args_types: typed-args classes that may arrive, by args key (``args_key(cls)``).
            None: no typed args are accepted. No class is ever looked up by name.
        strict_args: with False, typed args of an unknown key arrive as :class:`RawArgs`
            instead of failing with ``BAD_ARGS``.

    Raises:
        DecodeError: for any input that is not a valid value; never anything else.
    """
    n = len(data)
    if n > limits.frame:
        raise DecodeError(ErrorCode.TOO_LARGE, f"frame is {n} bytes, limit {limits.frame}")
    if n == 0:
        raise DecodeError(ErrorCode.MALFORMED, "empty frame")
    try:
        obj = _unpack(data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(ErrorCode.MALFORMED, f"not msgpack: {_short(exc)}") from None
    max_depth = limits.args_depth + 8
    if max_depth > _DECODE_DEPTH_CAP:
        max_depth = _DECODE_DEPTH_CAP
    if n > max_depth or _dec_scan(data) is not None:
        try:
            return _Walk(max_depth, args_types, strict_args).value(obj, 1)
        except DecodeError:
            raise
        except Exception as exc:  # pragma: no cover - defensive (e.g. MemoryError)
            raise DecodeError(ErrorCode.MALFORMED, _short(exc)) from None
    return obj


def frame_kind(data: bytes) -> int | None:
    """The kind of a frame (the int that starts its array) without decoding the rest;
    None when ``data`` does not start with a non-empty array and an integer."""
    mv = memoryview(data)
    n = len(mv)
    if n < 2:
        return None
    b0 = mv[0]
    if 0x91 <= b0 <= 0x9F:
        i = 1
    elif b0 == 0xDC:
        if n < 4 or (mv[1] | mv[2]) == 0:
            return None
        i = 3
    elif b0 == 0xDD:
        if n < 6 or (mv[1] | mv[2] | mv[3] | mv[4]) == 0:
            return None
        i = 5
    else:
        return None
    if i >= n:
        return None
    b = mv[i]
    if b <= 0x7F:
        return b
    if b >= 0xE0:
        return b - 0x100
    size, signed = _INT_HEADERS.get(b, (0, False))
    if not size or i + 1 + size > n:
        return None
    return int.from_bytes(mv[i + 1 : i + 1 + size], "big", signed=signed)


_INT_HEADERS: Final = {
    0xCC: (1, False),
    0xCD: (2, False),
    0xCE: (4, False),
    0xCF: (8, False),
    0xD0: (1, True),
    0xD1: (2, True),
    0xD2: (4, True),
    0xD3: (8, True),
}
