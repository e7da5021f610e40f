"""Recording files `.amdbg` (trio_am.dbg.recording): write, read, load, export, damage."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import msgpack
import pytest

import trio_am.dbg
from tests.dbg.conftest import FX_T0, feed, fx_messages, fx_schema, fx_tx
from trio_am.dbg.model import Model
from trio_am.dbg.recording import (
    MAGIC,
    RecordingError,
    RecordingWarning,
    RecordingWriter,
    default_compression,
    load,
    read_recording,
    replay,
)


def write_fx(path: Path, compression: Any, msgs: list[list[Any]] | None = None) -> Path:
    with RecordingWriter.open(path, meta={"app": "test"}, compression=compression) as w:
        for i, msg in enumerate(msgs if msgs is not None else fx_messages()):
            w.write(FX_T0 + i, 7, msg)
    return path


def check_fx(model: Model) -> None:
    cl = model.clients["fx-a"]
    assert len(cl.txs) == 8
    assert "Foo" in cl.names
    assert cl.txs[1].auto and cl.txs[4].canceled
    assert cl.time_at(8)[2] == 3
    assert not cl.connected and cl.imported  # replayed clients are disconnected
    assert model.selected == "fx-a" and model.tail and cl.c == 8


@pytest.mark.parametrize("compression", [0, 1, "gzip", "none"])
def test_round_trip(tmp_path: Path, compression: Any) -> None:
    p = write_fx(tmp_path / "r.amdbg", compression)
    head = p.read_bytes()[:8]
    assert head[:6] == MAGIC and head[6] == 1
    assert head[7] == {0: 0, 1: 1, "gzip": 1, "none": 0}[compression]
    meta, entries = read_recording(p)
    assert meta["app"] == "test" and "created" in meta and "host" in meta
    got = list(entries)
    assert entries.truncated is None and entries.count == 10
    assert [m for _rt, _c, m in got] == fx_messages()
    assert [rt for rt, _c, _m in got] == [FX_T0 + i for i in range(10)]
    assert {c for _rt, c, _m in got} == {7}
    model = trio_am.dbg.load(p)
    check_fx(model)
    assert model.recording_meta is not None and model.recording_meta["app"] == "test"
    assert model.warnings == []


def test_gzip_stream_is_plain_gzip(tmp_path: Path) -> None:
    p = write_fx(tmp_path / "r.amdbg", 1)
    raw = gzip.decompress(p.read_bytes()[8:])
    up = msgpack.Unpacker(raw=False, strict_map_key=False)
    up.feed(raw)
    objs = list(up)
    assert objs[0][0] == "meta" and objs[1][2][0] == "hello" and len(objs) == 11


def test_brotli_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("brotli", reason="brotli is not installed (optional extra trio_am[brotli])")
    assert default_compression() == 2
    p = write_fx(tmp_path / "r.amdbg", None)
    assert p.read_bytes()[7] == 2
    check_fx(load(p))


def test_default_compression_without_brotli(tmp_path: Path) -> None:
    try:
        import brotli  # noqa: F401
    except ImportError:
        assert default_compression() == 1
        p = write_fx(tmp_path / "r.amdbg", None)
        assert p.read_bytes()[7] == 1
    else:
        assert default_compression() == 2


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not a trio_am debugger recording"),
        (b"GOBDUMP\x01\x01", "not a trio_am debugger recording"),
        (MAGIC + b"\x02\x00", "unsupported recording version 2"),
        (MAGIC + b"\x01\x09", "unknown compression 9"),
        (MAGIC + b"\x01\x00", "no meta record"),
        (MAGIC + b"\x01\x00" + msgpack.packb([1, 2, ["tx"]]), "does not start with a meta"),
        (MAGIC + b"\x01\x01" + b"garbage!" * 4, "corrupt recording"),
    ],
)
def test_bad_files(tmp_path: Path, data: bytes, match: str) -> None:
    p = tmp_path / "bad.amdbg"
    p.write_bytes(data)
    with pytest.raises(RecordingError, match=match):
        read_recording(p)
    with pytest.raises(RecordingError, match=match):
        load(p)


def test_recording_error_is_value_error() -> None:
    assert issubclass(RecordingError, ValueError)


@pytest.mark.parametrize("compression", [0, 1])
def test_truncated_loads_what_is_readable(tmp_path: Path, compression: int) -> None:
    full = write_fx(tmp_path / "full.amdbg", compression).read_bytes()
    # cut inside the last entry
    cut = tmp_path / "cut.amdbg"
    cut.write_bytes(full[: len(full) - 30])
    meta, entries = read_recording(cut)
    got = list(entries)
    assert 5 <= len(got) < 10
    assert entries.truncated is not None and "truncated after" in entries.truncated
    assert str(cut) in entries.truncated
    with pytest.warns(RecordingWarning, match="truncated"):
        model = load(cut)
    assert model.warnings and "truncated" in model.warnings[0]
    assert 4 <= len(model.clients["fx-a"].txs) < 8


def test_corrupt_tail_stops_cleanly(tmp_path: Path) -> None:
    full = write_fx(tmp_path / "full.amdbg", 0).read_bytes()
    p = tmp_path / "bad.amdbg"
    p.write_bytes(full + b"\xc1" * 10)  # 0xc1 is never valid msgpack
    _meta, entries = read_recording(p)
    assert len(list(entries)) == 10
    assert entries.truncated is not None and "corrupt" in entries.truncated


def test_flushed_file_is_readable_while_open(tmp_path: Path) -> None:
    p = tmp_path / "live.amdbg"
    w = RecordingWriter.open(p, compression=1, flush_interval=3600)
    for i, msg in enumerate(fx_messages()):
        w.write(FX_T0 + i, 1, msg)
    w.flush()
    _meta, entries = read_recording(p)
    assert len(list(entries)) == 10
    assert entries.truncated is not None  # the stream is not finished yet
    w.write(FX_T0 + 99, 1, ["bye", 0])
    assert not w.maybe_flush()  # interval not reached
    w.close()
    w.close()
    assert w.closed
    _meta, entries = read_recording(p)
    assert len(list(entries)) == 11 and entries.truncated is None
    with pytest.raises(ValueError, match="closed"):
        w.write(0, 0, ["bye"])


def test_skips_malformed_entries(tmp_path: Path) -> None:
    p = tmp_path / "odd.amdbg"
    body = msgpack.packb(["meta", {}]) + msgpack.packb(["not", "an", "entry"])
    body += b"".join(msgpack.packb([FX_T0, 1, m]) for m in fx_messages())
    p.write_bytes(MAGIC + b"\x01\x00" + body)
    _meta, entries = read_recording(p)
    assert len(list(entries)) == 10 and entries.skipped == 1


def test_replay_keeps_live_ids_apart(tmp_path: Path) -> None:
    # recorded conn ids are remapped, so a live connection 1 is not the recording's 1
    p = write_fx(tmp_path / "r.amdbg", 0)
    model = Model()
    model.ingest(model.new_conn_id(), fx_schema("live"))
    replay(p, model)
    live_conn = model.clients["live"].conn_id
    assert model.clients["live"].connected
    assert model.clients["fx-a"].conn_id != live_conn
    # a live fx-a (new connection) replaces the imported one
    model.ingest(live_conn, fx_schema("fx-a"))
    assert model.clients["fx-a"].connected and model.clients["fx-a"].txs == []


def test_export_and_import(tmp_path: Path, fx_model: Model) -> None:
    m = fx_model
    m.ingest(1, ["log", "fx-a", [[2, "[extern] hello", None]]])
    m.ingest(1, ["drop", "fx-a", 2, 0])
    m.ingest(2, fx_schema("other"))
    out = m.export(tmp_path / "am-dbg-dump")
    assert out == tmp_path / "am-dbg-dump.amdbg"
    back = load(out)
    assert set(back.clients) == {"fx-a", "other"}
    cl = back.clients["fx-a"]
    assert [t.raw for t in cl.txs] == [t.raw for t in m.clients["fx-a"].txs]
    assert [t.rt for t in cl.txs] == [t.rt for t in m.clients["fx-a"].txs]
    assert cl.log[0][0] == 8 and cl.log[0][1].text == "[extern] hello"
    assert cl.dropped == 2
    assert back.visible(cl) == [1, 2, 3, 4, 5, 7, 8]
    # disconnected clients are skipped while the disconn filter is on
    m.conn_closed(2)
    m.filters.disconn = True
    out2 = m.export(tmp_path / "x.amdbg")
    assert set(load(out2).clients) == {"fx-a"}


def test_export_single_frame(tmp_path: Path) -> None:
    m = feed(Model(), fx_messages())
    m.ingest(1, fx_schema("b"))
    m.ingest(1, fx_tx(1, "b"))
    m.goto("fx-a", 4)
    out = m.export(tmp_path / "frame.amdbg", single_frame=True)
    back = load(out)
    cl = back.clients["fx-a"]
    assert len(cl.txs) == 1 and cl.txs[0].id == "fx-a:4"
    assert cl.time_at(1) == m.clients["fx-a"].time_at(4)
    assert len(back.clients["b"].txs) == 1
    m.first()
    back2 = load(m.export(tmp_path / "frame0.amdbg", single_frame=True))
    assert back2.clients["fx-a"].txs == []
