"""Recording files ``.amdbg``: export, import and headless capture (tools.md §1.9).

Layout: bytes 0-5 ``TAMDBG``, byte 6 the format version (1), byte 7 the compression
(0 none, 1 gzip, 2 brotli, 3 zstd), then ONE compressed stream of msgpack arrays:
``["meta", {created, app, app_v, host, filters}]`` followed by ``[rt, conn_id, message]``
entries in receive order (``rt`` ns, ``message`` exactly as on the wire).

Writers pick brotli when it is importable, else gzip, buffer in memory and compress in
batches; :meth:`RecordingWriter.flush` makes everything written so far readable (a sync
flush of the compressor), so a file being recorded can be loaded at any time — it then
reads as truncated. Readers stream with ``msgpack.Unpacker``; an unknown magic, version or
compression raises :class:`RecordingError`; a stream cut short (or corrupt past some point)
yields what is readable and reports it in :attr:`Entries.truncated`.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
import zlib
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

    from trio_am.dbg.model import Model

__all__ = [
    "COMPRESSION_NAMES",
    "MAGIC",
    "VERSION",
    "Entries",
    "RecordingError",
    "RecordingWarning",
    "RecordingWriter",
    "default_compression",
    "load",
    "read_recording",
    "replay",
]

MAGIC = b"TAMDBG"
VERSION = 1
NONE, GZIP, BROTLI, ZSTD = 0, 1, 2, 3
COMPRESSION_NAMES = {NONE: "none", GZIP: "gzip", BROTLI: "brotli", ZSTD: "zstd"}
_BY_NAME = {v: k for k, v in COMPRESSION_NAMES.items()}
_BATCH = 64 * 1024
_CHUNK = 256 * 1024


class RecordingError(ValueError):
    """The file is not a readable trio_am recording (bad magic, version, compression)."""


class RecordingWarning(UserWarning):
    """A recording was read only in part (cut short or corrupt past some point)."""


def _import_brotli() -> Any:
    try:
        import brotli
    except ImportError:
        return None
    return brotli


def _import_zstd() -> Any:
    try:
        import zstandard  # type: ignore[import-not-found]
    except ImportError:
        return None
    return zstandard


def default_compression() -> int:
    """Brotli (2) when importable, else gzip (1)."""
    return BROTLI if _import_brotli() is not None else GZIP


def _app_version() -> str:
    try:
        from trio_am import __version__
    except ImportError:  # pragma: no cover
        return ""
    return str(__version__)


# ---------------------------------------------------------------------------------- codecs
class _Plain:
    def compress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""

    def finish(self) -> bytes:
        return b""


class _Gzip:
    def __init__(self) -> None:
        self._c = zlib.compressobj(6, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        return self._c.compress(data)

    def flush(self) -> bytes:
        return self._c.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


class _Brotli:
    def __init__(self, brotli: Any) -> None:
        self._c = brotli.Compressor(quality=5)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.process(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush())

    def finish(self) -> bytes:
        return bytes(self._c.finish())


class _Zstd:
    def __init__(self, zstd: Any) -> None:
        self._zstd = zstd
        self._c = zstd.ZstdCompressor().compressobj()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._c.compress(data))

    def flush(self) -> bytes:
        return bytes(self._c.flush(self._zstd.COMPRESSOBJ_FLUSH_BLOCK))

    def finish(self) -> bytes:
        return bytes(self._c.flush())


def _compressor(comp: int) -> _Plain | _Gzip | _Brotli | _Zstd:
    if comp == NONE:
        return _Plain()
    if comp == GZIP:
        return _Gzip()
    if comp == BROTLI:
        mod = _import_brotli()
        if mod is None:
            raise RecordingError("brotli compression needs the brotli package (pip install brotli)")
        return _Brotli(mod)
    if comp == ZSTD:
        mod = _import_zstd()
        if mod is None:
            raise RecordingError("zstd compression needs the zstandard package")
        return _Zstd(mod)
    raise RecordingError(f"unknown compression {comp}")


# ---------------------------------------------------------------------------------- writer
class RecordingWriter:
    """Appends ``[rt, conn_id, message]`` entries to a ``.amdbg`` file.

    Use :meth:`open` (or the constructor) as a context manager. Entries are buffered and
    compressed in batches; :meth:`flush` pushes them to the file in a readable state and
    :meth:`maybe_flush` does so when ``flush_interval`` seconds passed since the last
    flush (``write`` calls it). :meth:`close` ends the compressed stream.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        meta: dict[str, Any] | None = None,
        compression: int | str | None = None,
        flush_interval: float = 1.0,
    ) -> None:
        if compression is None:
            comp = default_compression()
        elif isinstance(compression, str):
            if compression not in _BY_NAME:
                raise RecordingError(f"unknown compression {compression!r}")
            comp = _BY_NAME[compression]
        else:
            comp = int(compression)
        self.path = Path(path)
        self.compression = comp
        self.flush_interval = flush_interval
        self.entries = 0
        self._codec = _compressor(comp)
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._buf = bytearray()
        self._fh: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115
        self._last_flush = time.monotonic()
        self._dirty = False
        m: dict[str, Any] = {
            "created": time.time_ns(),
            "app": "trio_am",
            "app_v": _app_version(),
            "host": socket.gethostname(),
            "filters": {},
        }
        if meta:
            m.update(meta)
        self.meta = m
        try:
            self._fh.write(MAGIC + bytes((VERSION, comp)))
            self._buf += self._packer.pack(["meta", m])
            self.flush()
        except BaseException:
            self._fh.close()
            self._fh = None
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        meta: dict[str, Any] | None = None,
        compression: int | str | None = None,
        flush_interval: float = 1.0,
    ) -> RecordingWriter:
        """Create (truncate) ``path`` and write the header and meta record."""
        return cls(path, meta=meta, compression=compression, flush_interval=flush_interval)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._fh is None

    def write(self, rt: int, conn_id: int, msg: list[Any] | tuple[Any, ...]) -> None:
        """Append one entry (``msg`` as on the wire)."""
        if self._fh is None:
            raise ValueError("recording is closed")
        self._buf += self._packer.pack([rt, conn_id, msg])
        self.entries += 1
        self._dirty = True
        if len(self._buf) >= _BATCH:
            self._fh.write(self._codec.compress(bytes(self._buf)))
            self._buf.clear()
        self.maybe_flush()

    def maybe_flush(self) -> bool:
        """Flush when there is unflushed data and ``flush_interval`` passed; returns
        whether it flushed."""
        if self._dirty and time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Compress what is buffered and flush the compressor and file: everything written
        so far becomes readable."""
        fh = self._fh
        if fh is None:
            return
        if self._buf:
            fh.write(self._codec.compress(bytes(self._buf)))
            self._buf.clear()
        fh.write(self._codec.flush())
        fh.flush()
        self._last_flush = time.monotonic()
        self._dirty = False

    def close(self) -> None:
        """Finish the compressed stream and close the file (idempotent)."""
        fh = self._fh
        if fh is None:
            return
        try:
            if self._buf:
                fh.write(self._codec.compress(bytes(self._buf)))
                self._buf.clear()
            fh.write(self._codec.finish())
        finally:
            self._fh = None
            fh.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------- reader
class _Decomp:
    """Streaming decompressor with an end-of-stream flag."""

    def __init__(self, comp: int) -> None:
        self.comp = comp
        self.eof = comp == NONE
        self._d: Any
        if comp == GZIP:
            self._d = zlib.decompressobj(47)
        elif comp == BROTLI:
            mod = _import_brotli()
            if mod is None:
                raise RecordingError(
                    "this recording is brotli-compressed: install the brotli package "
                    "(pip install brotli) to read it"
                )
            self._d = mod.Decompressor()
        elif comp == ZSTD:
            mod = _import_zstd()
            if mod is None:
                raise RecordingError(
                    "this recording is zstd-compressed: install the zstandard package to read it"
                )
            self._d = mod.ZstdDecompressor().decompressobj()
        elif comp != NONE:
            raise RecordingError(f"unknown compression {comp} (expected 0-3)")

    def feed(self, data: bytes) -> bytes:
        if self.comp == NONE:
            return data
        if self.comp == GZIP:
            out = self._d.decompress(data)
            if self._d.eof:
                self.eof = True
            return bytes(out)
        if self.comp == BROTLI:
            out = self._d.process(data)
            self.eof = bool(self._d.is_finished())
            return bytes(out)
        out = self._d.decompress(data)
        self.eof = bool(getattr(self._d, "eof", False))
        return bytes(out)


class Entries:
    """Iterator over a recording's ``(rt, conn_id, message)`` entries.

    After iteration, :attr:`truncated` is None for a complete file, else a message saying
    where reading stopped (stream cut short, or corrupt data); :attr:`count` is how many
    entries were read and :attr:`skipped` how many were not ``[int, int, list]``.
    """

    def __init__(self, path: Path, fh: IO[bytes], dec: _Decomp, unpacker: Any, fed: int) -> None:
        self.path = path
        self._fed = fed
        self.truncated: str | None = None
        self.count = 0
        self.skipped = 0
        self._fh: IO[bytes] | None = fh
        self._dec = dec
        self._unpacker = unpacker
        self._bad = False
        self._it = self._run()

    def __iter__(self) -> Entries:
        return self

    def __next__(self) -> tuple[int, int, list[Any]]:
        return next(self._it)

    def close(self) -> None:
        """Close the file (iteration ends)."""
        self._it.close()
        fh, self._fh = self._fh, None
        if fh is not None:
            fh.close()

    def _drain(self) -> Iterator[Any]:
        """Objects complete so far; on undecodable data stop (``self._bad``)."""
        try:
            yield from self._unpacker
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
            self._bad = True
            self._stop(f"corrupt msgpack data ({type(e).__name__})")

    def _objects(self) -> Iterator[Any]:
        fh = self._fh
        assert fh is not None
        self._bad = False
        yield from self._drain()
        while not self._bad:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            try:
                data = self._dec.feed(chunk)
            except Exception as e:  # zlib.error, brotli.error & co
                self._stop(f"corrupt compressed data ({type(e).__name__}: {e})")
                return
            self._fed += len(data)
            try:
                self._unpacker.feed(data)
            except msgpack.BufferFull:
                self._stop("an entry larger than 64 MiB")
                return
            yield from self._drain()
        if self._bad:
            return
        if not self._dec.eof:
            self._stop("the compressed stream was cut short")
        elif self._unpacker.tell() < self._fed:
            self._stop("the last entry was cut short")

    def _stop(self, why: str) -> None:
        self.truncated = f"{self.path}: recording truncated after {self.count} entries: {why}"

    def _run(self) -> Generator[tuple[int, int, list[Any]], None, None]:
        try:
            for obj in self._objects():
                if (
                    isinstance(obj, list)
                    and len(obj) >= 3
                    and type(obj[0]) is int
                    and type(obj[1]) is int
                    and isinstance(obj[2], list)
                ):
                    self.count += 1
                    yield obj[0], obj[1], obj[2]
                else:
                    self.skipped += 1
        finally:
            fh, self._fh = self._fh, None
            if fh is not None:
                fh.close()


def read_recording(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Entries]:
    """Open a recording: its meta dict and an iterator of ``(rt, conn_id, message)``.

    Raises:
        RecordingError: not a trio_am recording, an unsupported version or compression,
            or no readable meta record.
        OSError: the file cannot be read.
    """
    p = Path(path)
    fh = open(p, "rb")  # noqa: SIM115
    try:
        head = fh.read(8)
        if len(head) < 8 or head[:6] != MAGIC:
            raise RecordingError(
                f"{p}: not a trio_am debugger recording (expected the TAMDBG header)"
            )
        if head[6] != VERSION:
            raise RecordingError(
                f"{p}: unsupported recording version {head[6]} (this trio_am reads {VERSION})"
            )
        dec = _Decomp(head[7])
        up = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=64 * 1024**2)
        fed = 0
        meta: Any = None
        while meta is None:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            try:
                data = dec.feed(chunk)
                fed += len(data)
                up.feed(data)
                meta = next(up, None)
            except Exception as e:
                raise RecordingError(f"{p}: corrupt recording ({type(e).__name__}: {e})") from e
        if meta is None:
            raise RecordingError(f"{p}: recording has no meta record (empty or cut short)")
        if not (isinstance(meta, list) and len(meta) >= 2 and meta[0] == "meta"):
            raise RecordingError(f"{p}: recording does not start with a meta record")
        entries = Entries(p, fh, dec, up, fed)
    except BaseException:
        fh.close()
        raise
    return (meta[1] if isinstance(meta[1], dict) else {}), entries


# ---------------------------------------------------------------------------------- load
def replay(path: str | os.PathLike[str], model: Model, *, warn: bool = True) -> Model:
    """Replay a recording into ``model`` (D42): every message goes through
    :meth:`Model.ingest` with its recorded receive time, on fresh connection ids; at the
    end its clients are disconnected and marked ``imported``. A truncated file loads what
    is readable, adds a note to ``model.warnings`` and (``warn``) warns
    :class:`RecordingWarning`."""
    meta, entries = read_recording(path)
    conns: dict[int, int] = {}
    ingest = model.ingest
    try:
        for rt, conn, msg in entries:
            cid = conns.get(conn)
            if cid is None:
                cid = conns[conn] = model.new_conn_id()
            ingest(cid, msg, rt)
    finally:
        entries.close()
    mapped = set(conns.values())
    for cid in mapped:
        model.conn_closed(cid)
    for cl in model.clients.values():
        if cl.conn_id in mapped:
            cl.imported = True
            cl.connected = False
    model.recording_meta = meta
    if entries.truncated:
        model.warnings.append(entries.truncated)
        if warn:
            warnings.warn(entries.truncated, RecordingWarning, stacklevel=2)
    model.version += 1
    return model


def load(path: str | os.PathLike[str], **model_kw: Any) -> Model:
    """Read a `.amdbg` recording into a new :class:`~trio_am.dbg.model.Model`
    (``trio_am.dbg.load``); ``model_kw`` go to the Model constructor."""
    from trio_am.dbg.model import Model

    return replay(path, Model(**model_kw))
