"""The debugger wire protocol (tools.md §1.7), sans-I/O: frames in, messages out.

A frame is a ``uint32`` big-endian length followed by one msgpack **array** whose first
item is the message kind (a str). Machines (the reporter) :func:`encode` messages; the
debugger feeds received bytes to a :class:`Decoder` and takes whole messages from
:meth:`Decoder.events`. Trailing fields may be left out (they default to None, see
:func:`as_dict`); unknown trailing fields and unknown kinds are for the reader to ignore.

Nothing here touches sockets or Trio: the reporter's sender thread, the debugger's Trio
server, recordings and tests all share it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import msgpack

__all__ = [
    "FIELDS",
    "HEADER",
    "KINDS",
    "MAX_FRAME",
    "PROTOCOL_VERSION",
    "REL_ADD",
    "REL_AFTER",
    "REL_REMOVE",
    "REL_REQUIRE",
    "STEP_ACTIVATE",
    "STEP_CALLED",
    "STEP_CANCEL",
    "STEP_DEACTIVATE",
    "STEP_DEACTIVATE_PASSIVE",
    "STEP_HANDLER",
    "STEP_RELATION",
    "TX_FLAG_ACCEPTED",
    "TX_FLAG_AUTO",
    "TX_FLAG_CHECK",
    "Decoder",
    "Encoder",
    "WireError",
    "as_dict",
    "decode_body",
    "encode",
]

#: Frames longer than this close the connection.
MAX_FRAME: Final = 16 * 1024 * 1024
#: The ``v`` field of ``hello``.
PROTOCOL_VERSION: Final = 1
#: Bytes of the length prefix.
HEADER: Final = 4

#: Transition flags (``tx.flags``).
TX_FLAG_AUTO: Final = 1
TX_FLAG_CHECK: Final = 2
TX_FLAG_ACCEPTED: Final = 4

#: Step kinds (the first item of a step), asyncmachine-go's codes.
STEP_RELATION: Final = 1
STEP_HANDLER: Final = 2
STEP_ACTIVATE: Final = 4
STEP_DEACTIVATE: Final = 8
STEP_DEACTIVATE_PASSIVE: Final = 16
STEP_CALLED: Final = 32
STEP_CANCEL: Final = 64

#: Relation codes of relation steps.
REL_AFTER: Final = 0
REL_ADD: Final = 1
REL_REQUIRE: Final = 2
REL_REMOVE: Final = 3

#: Field names after the kind, in wire order, per message kind.
FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "hello": ("v", "lib", "lib_v", "pid", "host", "argv0", "t"),
    "schema": (
        "m", "parent", "tags", "names", "states", "groups", "groups_order", "time", "qtick",
        "t",
    ),
    "tx": (
        "m", "id", "type", "called", "args", "flags", "target", "before", "after", "steps",
        "log", "pre_log", "qlen", "qtick", "mut_qtick", "token", "src", "t0", "t1", "err",
        "trace",
    ),
    "queued": (
        "m", "id", "type", "called", "args", "flags", "qlen", "qtick", "mut_qtick", "token",
        "time", "src", "t", "trace",
    ),
    "log": ("m", "entries"),
    "dispose": ("m", "t"),
    "drop": ("m", "n", "t"),
    "bye": ("t",),
}  # fmt: skip

#: Every known kind.
KINDS: Final = frozenset(FIELDS)


class WireError(ValueError):
    """A frame that cannot be a message: too large, not msgpack, or not a non-empty array
    starting with a str kind. The connection it came on should be closed."""


def encode(msg: Sequence[Any]) -> bytes:
    """One frame: the length prefix and ``msg`` packed as a msgpack array."""
    body: bytes = msgpack.packb(list(msg), use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise WireError(f"message of {len(body)} bytes is over the {MAX_FRAME} limit")
    return len(body).to_bytes(HEADER, "big") + body


class Encoder:
    """A reusable :func:`encode` (one msgpack packer, kept between calls: faster for a
    stream of messages). Not thread-safe: one per sender."""

    __slots__ = ("_pack",)

    def __init__(self) -> None:
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def encode(self, msg: Sequence[Any]) -> bytes:
        """One frame, like :func:`encode`."""
        body: bytes = self._pack(msg)
        if len(body) > MAX_FRAME:
            raise WireError(f"message of {len(body)} bytes is over the {MAX_FRAME} limit")
        return len(body).to_bytes(HEADER, "big") + body


def decode_body(body: bytes) -> list[Any]:
    """Unpack one frame body (without its prefix) into a message list."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False, use_list=True)
    except Exception as exc:  # msgpack raises several types for bad bytes
        raise WireError(f"frame is not msgpack: {exc}") from None
    if not isinstance(msg, list) or not msg or not isinstance(msg[0], str):
        raise WireError("frame is not an array starting with a kind")
    return msg


class Decoder:
    """Turns a byte stream into messages: :meth:`feed` bytes, then iterate :meth:`events`.

    :meth:`events` raises :class:`WireError` at the first bad frame; the decoder is then
    broken (the stream cannot be re-synchronised) and raises again on every call.
    """

    __slots__ = ("_buf", "_error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._error: WireError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer received bytes."""
        if self._error is None:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their frame."""
        return len(self._buf)

    def events(self) -> Iterator[list[Any]]:
        """Yield every complete message buffered so far."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        while len(buf) >= HEADER:
            size = int.from_bytes(buf[:HEADER], "big")
            if size > MAX_FRAME:
                self._fail(WireError(f"frame of {size} bytes is over the {MAX_FRAME} limit"))
            if size == 0:
                self._fail(WireError("empty frame"))
            if len(buf) < HEADER + size:
                return
            body = bytes(buf[HEADER : HEADER + size])
            del buf[: HEADER + size]
            try:
                msg = decode_body(body)
            except WireError as exc:
                self._fail(exc)
            yield msg

    def _fail(self, exc: WireError) -> None:
        self._error = exc
        self._buf.clear()
        raise exc


def as_dict(msg: Sequence[Any]) -> dict[str, Any]:
    """``{"kind": kind, field: value}`` for a message; missing trailing fields are None,
    extra trailing fields are dropped, an unknown kind gives only ``{"kind": kind}``."""
    kind = msg[0]
    out: dict[str, Any] = {"kind": kind}
    names = FIELDS.get(kind, ())
    n = len(msg) - 1
    for i, name in enumerate(names):
        out[name] = msg[i + 1] if i < n else None
    return out
