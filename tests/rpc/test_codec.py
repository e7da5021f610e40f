"""The aRPC wire codec (arpc.md B3 encoding, B10 limits, B11 error codes): round trips,
refusals both ways, args limits, and a fuzzed decoder that only ever raises DecodeError.
"""

from __future__ import annotations

import datetime as dt
import socket
import struct
import threading
import tracemalloc
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_am as am
from trio_am.args import args_key
from trio_am.rpc import _codec as codec
from trio_am.rpc.errors import ArgsEncodeError, ArgsError, ErrorCode, RemoteError

MAX_INT = codec.MAX_INT
UTC = dt.UTC


@am.typed_args(prefix="codectest")
@attrs.define
class CodecArgs:
    job: str
    n: int = 0
    tags: list[str] = attrs.Factory(list)


@am.typed_args(prefix="codectest", state="Other")
@attrs.frozen
class OtherCodecArgs:
    name: str


KEY = args_key(CodecArgs)
TYPES: dict[str, type] = {KEY: CodecArgs, args_key(OtherCodecArgs): OtherCodecArgs}


def rt(value: Any, **kw: Any) -> Any:
    return codec.decode(codec.encode(value), **kw)


def decode_code(data: bytes, **kw: Any) -> ErrorCode:
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(data, **kw)
    assert isinstance(info.value.code, ErrorCode)
    return info.value.code


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as e:
        return e


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -1,
        255,
        2**32,
        MAX_INT,
        -MAX_INT,
        1.5,
        -0.0,
        float("inf"),
        "",
        "zażółć 🐢",
        b"",
        b"\x00\xff" * 100,
        [],
        {},
        [3, 17, 0, [5], None, 1],
        [4, 9, 9, [[5, 1], 0, 1, 123], 17, 0],
        {"a": [1, {"b": None, "c": [b"x", "y"]}], "": 0.25},
        "x" * 70_000,
        list(range(70_000)),
    ],
)
def test_roundtrip_plain(value):
    assert rt(value) == value


def test_roundtrip_normalizes_sequences_and_buffers():
    assert rt((1, (2, 3))) == [1, [2, 3]]
    assert rt(bytearray(b"ab")) == b"ab"
    assert rt(memoryview(b"cd")) == b"cd"
    assert rt({"t": ("a",)}) == {"t": ["a"]}


def test_int_enum_travels_as_int():
    assert rt([ErrorCode.BAD_ARGS]) == [10]
    assert type(rt([ErrorCode.BAD_ARGS])[0]) is int


def test_typed_args_roundtrip():
    obj = CodecArgs("j1", 3, ["a", "b"])
    frame = [3, 1, 0, [5], am.pass_args(obj, plain=1)]
    out = rt(frame, args_types=TYPES)
    assert out == frame
    assert type(out[4][KEY]) is CodecArgs
    assert rt(OtherCodecArgs("x"), args_types=TYPES) == OtherCodecArgs("x")


def test_typed_args_wire_form():
    data = codec.encode(CodecArgs("j1"))
    ext = msgpack.unpackb(data)
    assert isinstance(ext, msgpack.ExtType) and ext.code == 1
    assert msgpack.unpackb(ext.data) == [KEY, {"job": "j1", "n": 0, "tags": []}]


def test_typed_args_unregistered_key():
    data = codec.encode({"a": CodecArgs("j1")})
    # the default: no typed args accepted at all
    with pytest.raises(codec.DecodeError) as info:
        codec.decode(data)
    assert info.value.code == ErrorCode.BAD_ARGS
    assert f"typed args key {KEY!r} is not registered" in str(info.value)
    assert decode_code(data, args_types={"x__Any": CodecArgs}) == ErrorCode.BAD_ARGS
    raw = codec.decode(data, strict_args=False)
    assert raw == {"a": codec.RawArgs(KEY, {"job": "j1", "n": 0, "tags": []})}
    assert "RawArgs" in repr(raw["a"])
    # forwarded unchanged, and rebuilt where the key is registered
    assert codec.encode(raw) == data
    assert codec.decode(codec.encode(raw), args_types=TYPES) == {"a": CodecArgs("j1")}


def test_typed_args_that_do_not_fit():
    bad = msgpack.packb(msgpack.ExtType(1, msgpack.packb([KEY, {"n": "not an int"}])))
    assert decode_code(bad, args_types=TYPES) == ErrorCode.BAD_ARGS
    for payload in ([KEY], [1, {}], {"k": 1}, [KEY, {}, 3]):
        data = msgpack.packb(msgpack.ExtType(1, msgpack.packb(payload)))
        assert decode_code(data, args_types=TYPES) == ErrorCode.MALFORMED


def test_exception_roundtrip():
    exc = raised(ValueError("boom"))
    out = rt({"err": exc})["err"]
    assert isinstance(out, RemoteError)
    assert (out.type_name, out.remote_message) == ("ValueError", "boom")
    assert "Traceback" in out.remote_traceback and "ValueError: boom" in out.remote_traceback
    # not raised: no traceback
    assert rt(KeyError("k")) == RemoteError("KeyError", "'k'", "")
    # a RemoteError travels on as itself
    remote = RemoteError("Custom", "msg", "tb text")
    assert rt(remote) == remote
    assert codec.encode(rt(remote)) == codec.encode(remote)


def test_exception_traceback_is_capped():
    def recurse(n: int) -> None:
        if n == 0:
            raise RuntimeError("deep")
        recurse(n - 1)

    try:
        recurse(300)
    except RuntimeError as e:
        exc = e
    out = rt(exc)
    assert len(out.remote_traceback) <= 16_100
    assert out.remote_traceback.rstrip().endswith("RuntimeError: deep")
    assert codec.check_args({"err": exc}) < 65536


def test_exception_message_with_surrogates():
    out = rt(OSError("bad name \udcff"))
    assert out.type_name == "OSError" and "\\udcff" in out.remote_message


def test_bad_exception_payloads():
    for payload in ([1, "m", ""], ["T", "m"], ["T", "m", None], "x"):
        data = msgpack.packb(msgpack.ExtType(2, msgpack.packb(payload)))
        assert decode_code(data) == ErrorCode.MALFORMED


def test_datetimes():
    aware = dt.datetime(2026, 6, 1, 12, 30, 5, 123456, tzinfo=UTC)
    assert rt(aware) == aware
    other = dt.datetime(2026, 6, 1, 14, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    out = rt({"at": other})["at"]
    assert out == other and out.tzinfo is not None
    assert rt(dt.datetime(1, 1, 1, tzinfo=UTC)) == dt.datetime(1, 1, 1, tzinfo=UTC)
    with pytest.raises(ArgsEncodeError, match=r"naive datetime at \['at'\]"):
        codec.encode({"at": dt.datetime(2026, 1, 1)})
    with pytest.raises(ArgsEncodeError, match="date"):
        codec.encode(dt.date(2026, 1, 1))


def test_big_ints_refused_both_ways():
    for bad in (2**53, -(2**53), 2**63, 2**64, -(2**64), 10**30, 10**5000):
        with pytest.raises(ArgsEncodeError, match="out of range"):
            codec.encode(bad)
    with pytest.raises(ArgsEncodeError, match=r"at \[1\]\['a'\]"):
        codec.encode([1, {"a": 2**53}])
    with pytest.raises(ArgsEncodeError, match="out of range"):
        codec.encode(CodecArgs("j", 2**60))
    assert rt([2**40, -(2**40)]) == [2**40, -(2**40)]
    for bad in (2**53, -(2**53), 2**64 - 1, -(2**63)):
        assert decode_code(msgpack.packb(bad)) == ErrorCode.BAD_FIELD
        assert decode_code(msgpack.packb([1, {"a": [bad]}])) == ErrorCode.BAD_FIELD
        assert decode_code(msgpack.packb({"x": bad})) == ErrorCode.BAD_FIELD
    inner = msgpack.packb([KEY, {"job": "j", "n": 2**60}])
    data = msgpack.packb(msgpack.ExtType(1, inner))
    assert decode_code(data, args_types=TYPES) == ErrorCode.BAD_FIELD


def test_non_str_keys_refused_both_ways():
    for bad in ({1: "a"}, {b"k": 1}, {None: 1}, {(1, 2): 1}, [0, {"ok": {2.5: 1}}]):
        with pytest.raises(ArgsEncodeError, match="keys must be strings"):
            codec.encode(bad)
    with pytest.raises(ArgsEncodeError, match=r"at \[4\]\['a'\]\[1\]"):
        codec.encode([3, 1, 0, [5], {"a": [1, {2: 3}]}])
    with pytest.raises(ArgsEncodeError, match="keys must be strings"):
        codec.encode(codec.RawArgs("k__Any", {1: 2}))
    with pytest.raises(ArgsEncodeError, match="RawArgs key 5"):
        codec.encode([codec.RawArgs(5, {})])  # type: ignore[arg-type]
    for bad in ({1: "a"}, {b"k": 1}, [1, {b"k": 1}], {"a": {-1: 1}}):
        assert decode_code(msgpack.packb(bad, use_bin_type=True)) == ErrorCode.MALFORMED
    assert decode_code(b"\x81\xc4\x01a\x01") == ErrorCode.MALFORMED  # 5 bytes, bytes key


def test_unsupported_values_named():
    with pytest.raises(ArgsEncodeError, match=r"builtins\.set at \['s'\]"):
        codec.encode({"s": {1, 2}})
    with pytest.raises(ArgsEncodeError, match=r"builtins\.object at \[0\]\[1\]"):
        codec.encode([[1, object()]])
    with socket.socket() as sock, pytest.raises(ArgsEncodeError, match="socket"):
        codec.encode([3, 1, 0, [5], {"sock": sock}])
    with pytest.raises(ArgsEncodeError, match="surrogates"):
        codec.encode("\ud800")

    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(ArgsEncodeError, match="BadRepr"):
        codec.encode({"x": [BadRepr()]})
    with pytest.raises(ArgsEncodeError, match="keys must be strings"):
        codec.encode({BadRepr(): 1})
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ArgsEncodeError, match="nested more than"):
        codec.encode(cyclic)


def test_encode_reentrant_from_hooks():
    class Weird(Exception):
        def __str__(self) -> str:
            return codec.encode([1, {"a": 2}]).hex()

    out = rt([1, Weird()])
    assert out[1].remote_message == codec.encode([1, {"a": 2}]).hex()


def test_big_frames():
    big = [12, 1, "p", b"x" * (1 << 20), "src", "tx"]
    assert rt(big, limits=codec.Limits(frame=2 << 20)) == big
    assert rt([1, 2]) == [1, 2]  # the thread's packer still works after a big frame


def test_encode_in_threads():
    frames = [[3, i, 0, [i % 7], {"k": [i, "x"]}, RemoteError("T", str(i), "")] for i in range(300)]
    expected = [msgpack.packb(f[:5]) for f in frames]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for f, exp in zip(frames, expected):
                got = codec.decode(codec.encode(f))
                assert msgpack.packb(got[:5]) == exp and got[5] == f[5]
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ------------------------------------------------------------------------------ decode errors


def test_decode_malformed():
    cases = [
        b"\xc1",  # never used
        b"\x93\x01\x02",  # truncated
        b"\x01\x02",  # extra data
        b"\xa3ab",  # short str
        b"\xa2\xff\xfe",  # not UTF-8
        msgpack.packb(msgpack.ExtType(5, b"x")),  # unknown ext
        msgpack.packb(msgpack.ExtType(1, b"\xc1")),  # bad ext payload
        msgpack.packb(msgpack.ExtType(1, msgpack.packb("no array"))),
        b"\xd6\xff\x00",  # truncated timestamp
        b"\xc7\x01\xff\x00",  # timestamp of a bad length
        b"\xdd\xff\xff\xff\xff",  # an array that claims more than the frame holds
    ]
    for data in cases:
        assert decode_code(data) == ErrorCode.MALFORMED, data
    assert decode_code(b"") == ErrorCode.MALFORMED


def test_decode_too_large():
    limits = codec.Limits(frame=100)
    assert codec.decode(codec.encode("x" * 90), limits=limits) == "x" * 90
    assert decode_code(codec.encode("x" * 100), limits=limits) == ErrorCode.TOO_LARGE


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_decode_depth():
    limits = codec.Limits(args_depth=4)  # decode allows 4 + 8 = 12 levels
    assert codec.decode(codec.encode(nested(12)), limits=limits) == nested(12)
    assert decode_code(codec.encode(nested(13)), limits=limits) == ErrorCode.MALFORMED
    # the default: 40 levels
    assert rt(nested(40)) == nested(40)
    assert decode_code(codec.encode(nested(41))) == ErrorCode.MALFORMED
    # deeper than msgpack's own stack
    assert decode_code(b"\x91" * 5000) == ErrorCode.MALFORMED
    # MUTATE args one level too deep still decode, so check_args can answer BAD_ARGS
    frame = [3, 1, 0, [5], nested(33)]
    assert codec.decode(codec.encode(frame)) == frame
    with pytest.raises(ArgsError):
        codec.check_args(frame[4], codec.DEFAULT_LIMITS)


def test_decode_depth_through_ext():
    # typed args nested in typed args, far deeper than the limit: MALFORMED, not a crash
    data = msgpack.packb([KEY, {}])
    for _ in range(2000):
        data = msgpack.packb([KEY, msgpack.ExtType(1, data)])
    frame = msgpack.packb(msgpack.ExtType(1, data))
    assert decode_code(frame, strict_args=False) == ErrorCode.MALFORMED
    ok = codec.RawArgs(KEY, codec.RawArgs(KEY, {"a": 1}))
    assert rt(ok, strict_args=False) == ok


def test_decode_array_bomb_memory():
    """Nested array headers that each claim the whole frame's length stay cheap."""
    n = 4096
    data = (b"\xdd" + struct.pack(">I", n)) * (n // 5)
    tracemalloc.start()
    try:
        assert decode_code(data, limits=codec.Limits(frame=n)) == ErrorCode.MALFORMED
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


# ------------------------------------------------------------------------------ check_args


def test_check_args_ok():
    args = {"a": 1, "job": CodecArgs("j1"), "err": RemoteError("T", "m", "")}
    assert codec.check_args(args, codec.DEFAULT_LIMITS) == len(codec.encode(args))
    assert codec.check_args({}, codec.DEFAULT_LIMITS) == 1
    assert codec.check_args({"d": nested(31)}, codec.DEFAULT_LIMITS) > 0  # 32 levels


def test_check_args_too_large():
    with pytest.raises(ArgsError) as info:
        codec.check_args({"s": "x" * 100_000}, codec.DEFAULT_LIMITS)
    assert type(info.value) is ArgsError
    assert info.value.code == 10
    assert str(info.value) == "args are 100008 bytes, limit 65536"


def test_check_args_too_deep():
    with pytest.raises(ArgsError) as info:
        codec.check_args({"d": nested(39)}, codec.DEFAULT_LIMITS)  # 40 levels
    assert type(info.value) is ArgsError
    assert info.value.code == 10
    assert "nested more than 32 levels deep" in str(info.value)
    with pytest.raises(ArgsError):
        codec.check_args({"d": nested(32)}, codec.DEFAULT_LIMITS)  # 33 levels
    # a typed args object counts as a level, like its [key, data] wire form:
    # args map 1, typed args 2, its data map 3, the "tags" list 4
    with pytest.raises(ArgsError):
        codec.check_args({"t": CodecArgs("j")}, codec.Limits(args_depth=3))
    assert codec.check_args({"t": CodecArgs("j")}, codec.Limits(args_depth=4)) > 0


def test_check_args_unencodable():
    with socket.socket() as sock, pytest.raises(ArgsEncodeError, match=r"socket at \['s'\]"):
        codec.check_args({"s": sock}, codec.DEFAULT_LIMITS)
    with pytest.raises(ArgsEncodeError, match="keys must be strings"):
        codec.check_args({1: "x"}, codec.DEFAULT_LIMITS)  # type: ignore[dict-item]
    with pytest.raises(ArgsEncodeError, match="out of range"):
        codec.check_args({"n": 2**53}, codec.DEFAULT_LIMITS)
    with pytest.raises(ArgsEncodeError, match="map"):
        codec.check_args([1], codec.DEFAULT_LIMITS)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ misc


def test_frame_kind():
    assert codec.frame_kind(codec.encode([3, 17, 0, [5], None, 1])) == 3
    assert codec.frame_kind(codec.encode([34, None, 1, "m", False])) == 34
    assert codec.frame_kind(codec.encode([200])) == 200
    assert codec.frame_kind(codec.encode([70000, 1])) == 70000
    assert codec.frame_kind(codec.encode([-3])) == -3
    assert codec.frame_kind(codec.encode([-300])) == -300
    assert codec.frame_kind(codec.encode(list(range(1, 40)))) == 1  # array16
    assert codec.frame_kind(codec.encode([5] * 70000)) == 5  # array32
    assert codec.frame_kind(codec.encode([1, {"a": 1}])) == 1
    for data in (b"", b"\x90", b"\x91", b"\x91\xcc", b"\xdc\x00\x00\x01", b"\x01", b"\x81\x01\x02"):
        assert codec.frame_kind(data) is None, data
    assert codec.frame_kind(codec.encode(["x"])) is None
    assert codec.frame_kind(codec.encode({"kind": 1})) is None


def test_limits():
    lim = codec.Limits()
    assert (lim.frame, lim.hard_frame, lim.args, lim.args_depth) == (1 << 20, 4 << 20, 65536, 32)
    assert (lim.inflight, lim.outbound_frames, lim.outbound_bytes) == (256, 1024, 8 << 20)
    assert (lim.sessions, lim.errors, lim.errors_window) == (1024, 20, 10.0)
    assert lim == codec.DEFAULT_LIMITS
    assert lim.to_wire() == {"frame": 1 << 20, "args": 65536, "args_depth": 32, "inflight": 256}
    assert attrs.evolve(lim, frame=10).frame == 10
    with pytest.raises(ValueError):
        codec.Limits(frame=0)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lim.frame = 5  # type: ignore[misc]


def test_decode_error_pickles():
    import pickle

    err = codec.DecodeError(ErrorCode.BAD_FIELD, "msg")
    back = pickle.loads(pickle.dumps(err))
    assert back.code == ErrorCode.BAD_FIELD and str(back) == "msg"


# ------------------------------------------------------------------------------ properties

texts = st.text(max_size=12)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-MAX_INT, MAX_INT),
    st.floats(allow_nan=False),
    texts,
    st.binary(max_size=12),
    st.datetimes(timezones=st.just(UTC)),
    st.builds(CodecArgs, texts, st.integers(-MAX_INT, MAX_INT), st.lists(texts, max_size=3)),
    st.builds(OtherCodecArgs, texts),
    st.builds(RemoteError, texts, texts, texts),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_roundtrip_property(value):
    data = codec.encode(value)
    assert codec.decode(data, args_types=TYPES) == value
    assert codec.encode(codec.decode(data, args_types=TYPES)) == data


FUZZ_LIMITS = codec.Limits(frame=2048, args_depth=4)


def decode_or_error(data: bytes, strict: bool) -> None:
    """decode() either returns or raises DecodeError; anything else fails the test."""
    try:
        codec.decode(data, limits=FUZZ_LIMITS, args_types=TYPES, strict_args=strict)
    except codec.DecodeError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert exc.code in (
            ErrorCode.MALFORMED,
            ErrorCode.TOO_LARGE,
            ErrorCode.BAD_ARGS,
            ErrorCode.BAD_FIELD,
        )


@settings(max_examples=300)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_random_bytes(data, strict):
    decode_or_error(data, strict)


interesting_bytes = st.sampled_from(
    [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xC0, 0xC1, 0xC4, 0xC7, 0xCF, 0xD3, 0xD4,
     0xD6, 0xD7, 0xD8, 0xDC, 0xDD, 0xDE, 0xDF, 0xFF, 0x01, 0x02, 0xFE]
)  # fmt: skip
frames = st.recursive(
    st.one_of(leaves, st.just(CodecArgs("j")), st.just(codec.RawArgs("zz__Any", {"a": [1]}))),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=8,
).map(lambda v: codec.encode([3, 1, 0, [5], v]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(frames, frames, st.data(), st.booleans())
def test_fuzz_mutated_frames(frame, other, data, strict):
    buf = bytearray(frame)
    how = data.draw(st.sampled_from(["flip", "set", "truncate", "concat", "insert", "splice"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "set":
        for _ in range(data.draw(st.integers(1, 4))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(interesting_bytes)
    elif how == "truncate":
        del buf[data.draw(st.integers(0, len(buf) - 1)) :]
    elif how == "concat":
        buf += other
    elif how == "insert":
        i = data.draw(st.integers(0, len(buf)))
        buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        i = data.draw(st.integers(0, len(buf)))
        j = data.draw(st.integers(0, len(other)))
        buf = buf[:i] + other[j:]
    decode_or_error(bytes(buf), strict)
