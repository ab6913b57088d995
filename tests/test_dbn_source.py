"""DBN files decode chunk by chunk, plain or zstd; bad files fail with a message naming file and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import databento_dbn as dbn
import pytest
import zstandard

from hub.dbn_source import DBNFileError, iter_file, iter_records

T0 = 1_709_700_000_000_000_000
HEADER = dbn.Metadata(dataset="GLBX.MDP3", start=T0, stype_in=dbn.SType.PARENT,
                      stype_out=dbn.SType.INSTRUMENT_ID, schema=None).encode()
TRADE_SIZE = 48


def trade(i: int) -> dbn.TradeMsg:
    return dbn.TradeMsg(publisher_id=1, instrument_id=7, ts_event=T0 + i, price=5_000_000_000_000 + i * 250_000_000,
                        size=1 + i % 5, action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0, ts_recv=T0 + i + 20_000)


MAPPING = dbn.SymbolMappingMsg(publisher_id=1, instrument_id=7, ts_event=T0, stype_in=dbn.SType.PARENT,
                               stype_in_symbol="ES.FUT", stype_out=dbn.SType.RAW_SYMBOL, stype_out_symbol="ESM4",
                               start_ts=T0, end_ts=T0 + 1)
BODY = bytes(MAPPING) + b"".join(bytes(trade(i)) for i in range(3000))
DATA = HEADER + BODY


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def summary(records: list[object]) -> list[tuple[str, int]]:
    return [(type(r).__name__, getattr(r, "price", 0)) for r in records]


def test_plain_and_zstd_give_the_same_records_whatever_the_chunk_size(tmp_path: Path) -> None:
    plain = write(tmp_path / "a.dbn", DATA)
    frames = zstandard.ZstdCompressor()
    # Two concatenated frames, as `cat a.zst b.zst` would produce.
    packed = write(tmp_path / "a.dbn.zst", frames.compress(DATA[:5000]) + frames.compress(DATA[5000:]))
    reference = summary(list(iter_file(plain)))
    assert len(reference) == 3002 and reference[0][0] == "Metadata" and reference[1][0] == "SymbolMappingMsg"
    for chunk_size in (1, 7, 4096, 1 << 20):
        assert summary(list(iter_file(plain, chunk_size=chunk_size))) == reference
        assert summary(list(iter_file(packed, chunk_size=chunk_size))) == reference
    assert len(list(iter_records([plain, packed]))) == 2 * 3002


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file, not a DBN file"),
        (b"DB", "not a DBN file"),
        (b"date,price\n2024-03-01,5000\n", "not a DBN file (starts with b'date,pri'"),
        (HEADER[:40], "truncated: incomplete DBN header"),
        (DATA[:-20], f"truncated: {TRADE_SIZE - 20} trailing bytes after record 3000"),
        (HEADER[:4] + (10**9).to_bytes(4, "little") + HEADER[8:], "implausible metadata length"),
    ],
    ids=["empty", "short", "csv", "header-cut", "record-cut", "header-length"],
)
def test_unusable_files_raise_a_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path / "bad.dbn", data)
    with pytest.raises(DBNFileError) as err:
        list(iter_file(path, chunk_size=1000))
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_records_before_a_corrupt_record_are_delivered_first(tmp_path: Path) -> None:
    data = bytearray(DATA)
    bad = len(HEADER) + len(bytes(MAPPING)) + 1000 * TRADE_SIZE  # the 1001st trade: record 1002
    data[bad + 1] = int(dbn.RType.MBP_10)  # an MBP-10 record cannot be 48 bytes long
    path = write(tmp_path / "corrupt.dbn", bytes(data))
    got: list[object] = []
    with pytest.raises(DBNFileError, match=r"corrupt record 1002: length 48 bytes is too short for rtype 0x0a"):
        got.extend(iter_file(path, chunk_size=1 << 20))
    assert len(got) == 1002


def test_corruption_never_reaches_the_decoder_as_a_panic(tmp_path: Path) -> None:
    """The Rust decoder panics (printing a backtrace) on some corrupt records; none may get through."""
    script = f"""
import random, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from pathlib import Path
from hub.dbn_source import DBNFileError, iter_file
data = Path({str(write(tmp_path / "good.dbn", DATA))!r}).read_bytes()
rng = random.Random(5)
path = Path({str(tmp_path / "fuzz.dbn")!r})
for _ in range(400):
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    path.write_bytes(bytes(b))
    try:
        for _ in iter_file(path, chunk_size=4096):
            pass
    except DBNFileError:
        pass
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"RUST_BACKTRACE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "panicked" not in done.stderr and done.stderr == ""


def test_truncated_or_corrupt_zstd(tmp_path: Path) -> None:
    packed = zstandard.ZstdCompressor(write_checksum=True).compress(DATA)
    cut = write(tmp_path / "cut.dbn.zst", packed[:-10])
    with pytest.raises(DBNFileError, match="truncated: the zstd stream ends in the middle of a frame"):
        list(iter_file(cut))
    broken = bytearray(packed)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(DBNFileError, match=f"{tmp_path / 'bad.dbn.zst'}: corrupt"):
        list(iter_file(write(tmp_path / "bad.dbn.zst", bytes(broken))))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DBNFileError, match="cannot open"):
        list(iter_file(tmp_path / "nope.dbn"))
