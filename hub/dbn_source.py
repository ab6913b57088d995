"""Stream the records of DBN files (plain or zstd-compressed), chunk by chunk.

Files are read in fixed-size chunks and fed to ``databento_dbn.DBNDecoder``, so a file of
any size decodes in constant memory. Every record type is yielded, the file's ``Metadata``
first; consumers pick what they need. Problems raise :class:`DBNFileError` naming the file,
what is wrong and where: records are numbered from 0, the header (``Metadata``) being record 0.

Databento batch files with ``raw_symbol`` → ``instrument_id`` symbology carry their symbol
mappings only in the header (``Metadata.mappings``, date intervals), not as records: those
mappings follow the ``Metadata`` as ``SymbolMappingMsg`` records, earliest interval first, so
that every consumer maps instrument ids to contracts as it does for live and recorded files.
(With ``parent`` symbology the header maps ``ES.FUT`` to ids and names no contract.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import databento_dbn
import zstandard

CHUNK_SIZE: Final = 1 << 20
DBN_MAGIC: Final = b"DBN"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_PRELUDE: Final = 8
# The metadata holds symbol lists and mappings; anything larger is a corrupt length field.
MAX_HEADER: Final = 64 << 20


class DBNFileError(ValueError):
    """A DBN file that cannot be decoded completely; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def iter_records(paths: Iterable[Path | str], *, chunk_size: int = CHUNK_SIZE) -> Iterator[Any]:
    """Every record of every file, in file order (each file's ``Metadata`` first)."""
    for path in paths:
        yield from iter_file(path, chunk_size=chunk_size)


def iter_file(path: Path | str, *, chunk_size: int = CHUNK_SIZE) -> Iterator[Any]:
    """Every record of one DBN file (``.dbn`` or zstd ``.dbn.zst``, detected from its content)."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DBNFileError(path, f"cannot open: {exc.strerror or exc}") from None
    with handle:
        head = handle.read(len(ZSTD_MAGIC))
        if not head:
            raise DBNFileError(path, "empty file, not a DBN file")
        handle.seek(0)
        chunks = _raw_chunks(handle, chunk_size)
        if head == ZSTD_MAGIC:
            chunks = _decompressed(path, chunks)
        yield from _decode(path, chunks)


def _raw_chunks(handle: BinaryIO, chunk_size: int) -> Iterator[bytes]:
    while chunk := handle.read(chunk_size):
        yield chunk


def _decompressed(path: Path, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress one or more concatenated zstd frames; a frame cut short is an error."""
    dctx = zstandard.ZstdDecompressor()
    frame = None  # decompressor of the frame in progress; None between frames
    for chunk in chunks:
        data = chunk
        while data:
            if frame is None:
                frame = dctx.decompressobj()
            try:
                out = frame.decompress(data)
            except zstandard.ZstdError as exc:
                raise DBNFileError(path, f"corrupt zstd data: {exc}") from None
            if out:
                yield out
            if not frame.eof:
                break
            data = frame.unused_data
            frame = None
    if frame is not None:
        raise DBNFileError(path, "truncated: the zstd stream ends in the middle of a frame")


def _decode(path: Path, chunks: Iterator[bytes]) -> Iterator[Any]:
    decoder = databento_dbn.DBNDecoder()
    head = b""  # bytes up to the end of the header, decoded on their own for precise errors
    framing: _Framing | None = None
    decoded = 0
    for chunk in chunks:
        if framing is None:
            head += chunk
            if not head.startswith(DBN_MAGIC[: len(head)]):
                raise DBNFileError(path, f"not a DBN file (starts with {head[:8]!r}, expected {DBN_MAGIC!r}...)")
            if len(head) < _PRELUDE or len(head) < (header_len := _header_len(path, head)):
                continue
            header = _decode_chunk(path, decoder, head[:header_len], "invalid DBN header")
            yield from header
            yield from _header_mappings(path, header)
            framing = _Framing(head[len(DBN_MAGIC)])
            decoded, chunk = 1, head[header_len:]
        good, problem = framing.check(chunk)
        records = _decode_chunk(path, decoder, chunk[:good], f"corrupt record after record {decoded - 1}")
        decoded += len(records)
        yield from records
        if problem:
            raise DBNFileError(path, problem)
    if framing is None:
        raise DBNFileError(path, "not a DBN file" if len(head) < len(DBN_MAGIC) else "truncated: incomplete DBN header")
    leftover = len(decoder.buffer())
    if leftover:
        raise DBNFileError(path, f"truncated: {leftover} trailing bytes after record {decoded - 1}")


def _header_mappings(path: Path, header: list[Any]) -> list[Any]:
    """The header's raw symbol → instrument id mappings as SymbolMappingMsg records, by interval start."""
    meta = header[0] if header else None
    if (not isinstance(meta, databento_dbn.Metadata) or not meta.mappings
            or meta.stype_in != databento_dbn.SType.RAW_SYMBOL or meta.stype_out != databento_dbn.SType.INSTRUMENT_ID):
        return []
    intervals = sorted((i["start_date"], i["end_date"], raw, i["symbol"])
                       for raw, entries in meta.mappings.items() for i in entries if i["symbol"])
    if bad := [iid for *_, iid in intervals if not iid.isdigit()]:
        raise DBNFileError(path, f"invalid DBN header: symbol mappings to {bad[:3]}, expected instrument ids")
    return [databento_dbn.SymbolMappingMsg(
        publisher_id=0, instrument_id=int(iid), ts_event=_date_ns(start), stype_in=databento_dbn.SType.RAW_SYMBOL,
        stype_in_symbol=raw, stype_out=databento_dbn.SType.RAW_SYMBOL, stype_out_symbol=raw,
        start_ts=_date_ns(start), end_ts=_date_ns(end)) for start, end, raw, iid in intervals]


def _date_ns(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000_000


def _header_len(path: Path, head: bytes) -> int:
    """Length of the header: 'DBN', version byte, u32 little-endian metadata length, metadata."""
    length = _PRELUDE + int.from_bytes(head[4:_PRELUDE], "little")
    if length > MAX_HEADER:
        raise DBNFileError(path, f"invalid DBN header: implausible metadata length {length - _PRELUDE}")
    return length


def _decode_chunk(path: Path, decoder: Any, data: bytes, where: str) -> list[Any]:
    try:
        return decoder.write_and_decode(data)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic surfaces as a BaseException subclass
        raise DBNFileError(path, f"{where}: {exc}") from None


# Record types by rtype; the decoder panics (instead of raising) on a record shorter than its type.
_RTYPE_CLASSES: Final = {
    0: "TradeMsg", 1: "MBP1Msg", 10: "MBP10Msg", 17: "OHLCVMsg", 18: "StatusMsg", 19: "InstrumentDefMsg",
    20: "ImbalanceMsg", 21: "ErrorMsg", 22: "SymbolMappingMsg", 23: "SystemMsg", 24: "StatMsg",
    32: "OHLCVMsg", 33: "OHLCVMsg", 34: "OHLCVMsg", 35: "OHLCVMsg", 36: "OHLCVMsg", 160: "MBOMsg",
    177: "CMBP1Msg", 192: "CBBOMsg", 193: "CBBOMsg", 194: "CBBOMsg", 195: "BBOMsg", 196: "BBOMsg",
}
_MIN_SIZES: Final = {
    version: {rtype: getattr(module, name).size_hint for rtype, name in _RTYPE_CLASSES.items()}
    for version, module in ((1, databento_dbn.v1), (2, databento_dbn.v2), (3, databento_dbn.v3))
}
_RECORD_HEADER: Final = 16


class _Framing:
    """Walks record boundaries (length byte × 4, rtype byte) ahead of the decoder.

    Catches the corruptions that would make the Rust decoder panic, and numbers records
    so that errors can say where the file goes wrong.
    """

    def __init__(self, version: int) -> None:
        self.min_sizes = _MIN_SIZES.get(version, _MIN_SIZES[3])
        self.records = 1  # records seen so far, the header being record 0
        self._offset = 0  # start of the next record relative to the next chunk
        self._tail = b""  # a record's first byte when its second is in the next chunk

    def check(self, chunk: bytes) -> tuple[int, str | None]:
        """(bytes of ``chunk`` made of well-framed records, problem found after them or None)."""
        data = self._tail + chunk
        pos = self._offset
        sizes = self.min_sizes
        end = len(data) - 1
        while pos < end:
            length = data[pos] * 4
            rtype = data[pos + 1]
            need = sizes.get(rtype, _RECORD_HEADER)
            if length < need:
                good = max(pos - len(self._tail), 0)
                return good, (f"corrupt record {self.records}: length {length} bytes is too short for "
                              f"rtype {rtype:#04x} (at least {need})")
            pos += length
            self.records += 1
        self._tail = data[pos:] if pos == end else b""
        self._offset = 0 if pos == end else pos - len(data)
        return len(chunk), None
