"""The sans-I/O protocol: frame checks, clock views and mirrors (arpc.md B4, B6).

Property tests: the frame parser answers any decoded value with a :class:`Frame` or a
:class:`FrameError` (never another exception), and a mirror fed by a clock view always
ends equal to the source, detecting every lost or corrupted delta.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_am.rpc import _codec
from trio_am.rpc.errors import ErrorCode
from trio_am.rpc.protocol import (
    ClockView,
    FrameError,
    Kind,
    Mirror,
    checksum,
    parse_client_frame,
    parse_server_frame,
    schema_hash,
    wire_schema,
)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**60), 2**60),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
_kinds = st.sampled_from([int(k) for k in Kind] + [0, 11, 13, 99, 112, -1])
_frames = st.builds(lambda k, rest: [k, *rest], _kinds, st.lists(_values, max_size=8))


@given(_frames)
def test_parse_never_raises_other_errors(frame: list[Any]) -> None:
    for parse in (parse_client_frame, parse_server_frame):
        try:
            out = parse(frame)
        except FrameError as exc:
            assert exc.code in ErrorCode
            continue
        assert out.kind == frame[0]


@given(st.binary(max_size=200))
def test_bytes_to_frame_never_raises_other_errors(data: bytes) -> None:
    try:
        obj = _codec.decode(data)
        parse_client_frame(obj)
    except (_codec.DecodeError, FrameError):
        pass


def test_parse_mutate_fields() -> None:
    f = parse_client_frame([Kind.MUTATE, 7, 0, [1, 2]])
    assert f.fields == [7, 0, [1, 2], None, None, None]
    # unknown extra fields at the end are ignored
    f = parse_client_frame([Kind.MUTATE, 7, 0, [1], None, 1, ["m", "t", 3], "extra"])
    assert f.fields[5] == ["m", "t", 3]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ([], ErrorCode.MALFORMED),
        ("x", ErrorCode.MALFORMED),
        (["3"], ErrorCode.MALFORMED),
        ([Kind.RESULT, 1, 1, None, 1, 0], ErrorCode.UNKNOWN_KIND),  # a server kind
        ([99], ErrorCode.UNKNOWN_KIND),
        ([Kind.MUTATE, 1, 0], ErrorCode.BAD_FIELD),
        ([Kind.MUTATE, -1, 0, [1]], ErrorCode.BAD_FIELD),
        ([Kind.MUTATE, 1, 0, ["Foo"]], ErrorCode.BAD_FIELD),
        ([Kind.MUTATE, 1, 0, [1], "args"], ErrorCode.BAD_FIELD),
        ([Kind.MUTATE, 1, 0, [1], None, None, ["m", "t"]], ErrorCode.BAD_FIELD),
        ([Kind.HELLO, [1]], ErrorCode.BAD_FIELD),
        ([Kind.PING], ErrorCode.BAD_FIELD),
        ([Kind.PAYLOAD_ACK, 1, 1], ErrorCode.BAD_FIELD),
    ],
)
def test_bad_client_frames(frame: Any, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame(frame)
    assert info.value.code == code


def test_bad_field_names_the_request() -> None:
    with pytest.raises(FrameError) as info:
        parse_client_frame([Kind.MUTATE, 5, 0, "x"])
    assert info.value.req == 5


def test_server_delta_shape_checked() -> None:
    with pytest.raises(FrameError):
        parse_server_frame([Kind.CLOCK, 1, 0, [[1], 0, 0, 0]])  # odd pairs
    with pytest.raises(FrameError):
        parse_server_frame([Kind.CLOCK, 1, 0, [[1, -1], 0, 0, 0]])  # a shrinking tick
    f = parse_server_frame([Kind.CLOCK, 1, 0, [[1, 2], 0, 0, 2]])
    assert f.fields[2] == [[1, 2], 0, 0, 2]


# -------------------------------------------------------------------- clock sync
_steps = st.lists(
    st.tuples(
        st.lists(st.integers(0, 3), min_size=4, max_size=4),  # tick increments per state
        st.integers(0, 2),  # queue tick increment
        st.sampled_from(["send", "hold", "drop"]),
    ),
    max_size=30,
)


@given(_steps, st.booleans(), st.sets(st.integers(0, 3)))
def test_mirror_follows_view(steps: list[Any], shallow: bool, untracked: set[int]) -> None:
    n = 4
    tracked = [i for i in range(n) if i not in untracked]
    src = [0] * n
    qt = 1
    view = ClockView(list(range(n)), tracked, shallow)
    mirror = Mirror(n)
    mirror.reset(view.snapshot(src, qt, 0), qt, 0, 1)
    seq = 1
    resync = False
    for incs, dqt, action in steps:
        src = [t + d for t, d in zip(src, incs, strict=True)]
        qt += dqt
        if action == "hold":
            continue  # deltas are computed at send time: held changes merge
        d = view.delta(src, qt, 0)
        if d is None:
            assert not view.dirty(src, qt, 0)
            continue
        seq += 1
        if action == "drop":
            resync = True
            continue
        ok = mirror.apply(seq, d)
        if resync:
            assert not ok, "a delta after a lost one must be refused (gap)"
            mirror.reset(view.snapshot(src, qt, 0), qt, 0, seq)
            resync = False
        else:
            assert ok
        _assert_equal(mirror, src, qt, tracked, shallow)
    d = view.delta(src, qt, 0)
    if d is not None:
        seq += 1
        if not resync:
            assert mirror.apply(seq, d)
    if resync or d is not None and mirror.seq != seq:
        # the client saw a gap (or will, with the next delta): SYNC gives a snapshot
        seq += 1
        mirror.reset(view.snapshot(src, qt, 0), qt, 0, seq)
    _assert_equal(mirror, src, qt, tracked, shallow)


def _assert_equal(
    mirror: Mirror, src: list[int], qt: int, tracked: list[int], shallow: bool
) -> None:
    assert mirror.qt == qt
    for i, t in enumerate(mirror.ticks):
        if i not in tracked:
            assert t == 0
        elif shallow:
            assert t & 1 == src[i] & 1
            assert t <= src[i]
        else:
            assert t == src[i]


def test_checksum_catches_a_corrupted_delta() -> None:
    view = ClockView([0, 1], [0, 1], False)
    mirror = Mirror(2)
    mirror.reset(view.snapshot([0, 0], 1, 0), 1, 0, 1)
    d = view.delta([1, 2], 1, 0)
    assert d is not None and d[3] == checksum([1, 2], 1, 0)
    bad = [[0, 1, 1, 1], d[1], d[2], d[3]]
    assert not mirror.apply(2, bad)
    assert mirror.ticks == [0, 0]  # unchanged
    assert mirror.apply(2, d)
    assert mirror.ticks == [1, 2]


def test_index_out_of_range_is_refused() -> None:
    mirror = Mirror(2)
    assert not mirror.apply(1, [[5, 1], 0, 0, 1])


def test_shallow_view_sends_activity_only() -> None:
    view = ClockView([0], [0], True)
    view.snapshot([0], 0, 0)
    # on, off, on between two pushes: the client sees one activation
    assert view.delta([3], 0, 0) == [[0, 1], 0, 0, 1]
    assert view.delta([4], 0, 0) == [[0, 1], 0, 0, 2]


def test_schema_hash_is_order_sensitive_and_stable() -> None:
    from trio_am import State

    schema = {"A": State(require=["B"]), "B": State(), "Hidden": State()}
    wire = wire_schema(schema, ["A", "B"])
    assert wire == {"A": {"require": ["B"]}, "B": {}}
    assert schema_hash(wire, ["A", "B"]) == schema_hash(dict(wire), ["A", "B"])
    assert schema_hash(wire, ["A", "B"]) != schema_hash(wire, ["B", "A"])
    assert len(schema_hash(wire, ["A", "B"])) == 16
    # relations to hidden states are dropped
    assert wire_schema({"A": State(require=["Hidden"])}, ["A"]) == {"A": {}}
    assert msgpack.unpackb(msgpack.packb(wire)) == wire
