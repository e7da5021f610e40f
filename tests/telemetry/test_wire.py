"""The debugger wire codec (tools.md §1.7): frames, the streaming decoder, bad input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_am.telemetry import _wire

scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)
messages = st.builds(
    lambda k, rest: [k, *rest], st.sampled_from(sorted(_wire.KINDS)), st.lists(values, max_size=8)
)


@given(st.lists(messages, min_size=1, max_size=10), st.data())
def test_round_trip_any_chunking(msgs: list[list[object]], data: st.DataObject) -> None:
    blob = b"".join(_wire.encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=6)))
    dec = _wire.Decoder()
    got: list[list[object]] = []
    prev = 0
    for cut in [*cuts, len(blob)]:
        dec.feed(blob[prev:cut])
        prev = cut
        got.extend(dec.events())
    assert got == msgs
    assert dec.buffered == 0


@given(st.binary(max_size=2048))
def test_random_bytes_only_give_messages_or_wire_error(blob: bytes) -> None:
    dec = _wire.Decoder()
    dec.feed(blob)
    try:
        for msg in dec.events():
            assert isinstance(msg, list) and isinstance(msg[0], str)
    except _wire.WireError:
        with pytest.raises(_wire.WireError):  # broken for good: the connection closes
            list(dec.events())


@given(st.binary(max_size=2048), st.data())
def test_random_bytes_in_any_chunks_only_give_messages_or_wire_error(
    blob: bytes, data: st.DataObject
) -> None:
    # a valid frame first, so the garbage starts at a frame boundary too
    good = _wire.encode(["log", "m", [[1, "x", None]]])
    stream = good + blob
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    dec = _wire.Decoder()
    got: list[list[object]] = []
    prev = 0
    try:
        for cut in [*cuts, len(stream)]:
            dec.feed(memoryview(stream)[prev:cut])
            prev = cut
            for msg in dec.events():
                assert isinstance(msg, list) and isinstance(msg[0], str)
                got.append(msg)
    except _wire.WireError:
        pass
    assert got[0] == ["log", "m", [[1, "x", None]]]  # the good frame always decodes


@given(st.lists(messages, min_size=1, max_size=5))
def test_as_dict_round_trips_known_fields(msgs: list[list[object]]) -> None:
    for msg in msgs:
        d = _wire.as_dict(msg)
        names = _wire.FIELDS[str(msg[0])]
        assert list(d) == ["kind", *names]
        for i, name in enumerate(names):
            assert d[name] == (msg[i + 1] if i + 1 < len(msg) else None)


def test_oversized_length_fails_without_the_body() -> None:
    dec = _wire.Decoder()
    dec.feed(b"\xff\xff\xff\xff")
    with pytest.raises(_wire.WireError, match="over the"):
        list(dec.events())
    dec = _wire.Decoder()
    dec.feed((_wire.MAX_FRAME + 1).to_bytes(4, "big") + b"\x91")
    with pytest.raises(_wire.WireError, match="over the"):
        list(dec.events())
    assert dec.buffered == 0  # the body is never buffered
    dec.feed(b"more")
    with pytest.raises(_wire.WireError):
        list(dec.events())


def test_max_frame_is_allowed_and_waits_for_its_body() -> None:
    dec = _wire.Decoder()
    dec.feed(_wire.MAX_FRAME.to_bytes(4, "big") + b"\x91")
    assert list(dec.events()) == []
    assert dec.buffered == 5


def test_frames_are_length_prefixed_msgpack_arrays() -> None:
    frame = _wire.encode(("bye", 7))
    assert frame[:4] == (len(frame) - 4).to_bytes(4, "big")
    assert msgpack.unpackb(frame[4:]) == ["bye", 7]
    assert _wire.Encoder().encode(["bye", 7]) == frame
    dec = _wire.Decoder()
    dec.feed(frame * 3)
    assert list(dec.events()) == [["bye", 7]] * 3


def test_frame_body_must_be_an_array_with_a_kind() -> None:
    for body in (msgpack.packb({"a": 1}), msgpack.packb([]), msgpack.packb([1, 2]), b"\xc1"):
        dec = _wire.Decoder()
        dec.feed(len(body).to_bytes(4, "big") + body)
        with pytest.raises(_wire.WireError):
            list(dec.events())


def test_empty_frame_is_an_error() -> None:
    dec = _wire.Decoder()
    dec.feed(b"\x00\x00\x00\x00")
    with pytest.raises(_wire.WireError, match="empty"):
        list(dec.events())


def test_as_dict_defaults_missing_and_drops_extra_fields() -> None:
    d = _wire.as_dict(["dispose", "m1"])
    assert d == {"kind": "dispose", "m": "m1", "t": None}
    d = _wire.as_dict(["bye", 5, "extra", 7])
    assert d == {"kind": "bye", "t": 5}
    assert _wire.as_dict(["future-kind", 1]) == {"kind": "future-kind"}
    assert _wire.FIELDS["tx"][:4] == ("m", "id", "type", "called")


def test_encode_refuses_oversized_messages() -> None:
    with pytest.raises(_wire.WireError):
        _wire.encode(["log", "m", "x" * (_wire.MAX_FRAME + 1)])
