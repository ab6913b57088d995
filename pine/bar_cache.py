"""Parquet bar caches: ``<runtime>/warmup/{ROOT}/{timeframe}.parquet``.

The one on-disk bar format, written from DBN history (``pine warmup build``, the Dagster
``warmup_cache`` asset) and read by worker warmup, backtests and ML training. Columns are the
bar message fields; ``timestamp`` and ``end`` are UTC timestamps; rows sorted by ``timestamp``.

A cache may say up to when it is *complete* (file metadata ``pine.complete_through``, an ISO
8601 UTC instant): every bar of its root and timeframe that ends at or before that instant is
in the file. A worker hands over from the caches to the live bar streams at that instant.
"""

from __future__ import annotations

import bisect
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pine.bars import FIELDS, TIMEFRAMES, Bar

if TYPE_CHECKING:
    import pandas as pd

COLUMNS: Final = FIELDS
COMPLETE_THROUGH_KEY: Final = b"pine.complete_through"


class BarCacheError(ValueError):
    """A cache file that is missing or unusable; the message names the file."""


def cache_path(warmup_dir: Path, root: str, timeframe: str) -> Path:
    """Where the cache of one root and timeframe lives."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe must be one of {TIMEFRAMES}, got {timeframe!r}")
    return Path(warmup_dir) / root / f"{timeframe}.parquet"


def bars_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Bars as a DataFrame in the cache layout (complete bars only)."""
    import pandas as pd

    rows = [{c: getattr(b, c) for c in COLUMNS} for b in bars if not b.partial]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("timestamp", "end"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def write_bars(path: Path, frame: pd.DataFrame, *, complete_through: datetime | None = None) -> Path:
    """Write atomically (a reader never sees half a file); ``complete_through`` goes into the file metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # pandas 3 deprecates what pyarrow's conversion of timezone-aware columns uses (pandas' own
        # to_parquet silences the same warning); the values written are unaffected.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        table = pa.Table.from_pandas(frame, preserve_index=False)
    if complete_through is not None:
        meta = dict(table.schema.metadata or {})
        meta[COMPLETE_THROUGH_KEY] = complete_through.astimezone(UTC).isoformat().encode()
        table = table.replace_schema_metadata(meta)
    # One temporary name per process: two writers of the same cache never share a half-written file.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a failed read of the cache file ``path`` into a BarCacheError that says what to do."""
    try:
        yield
    except FileNotFoundError:
        raise BarCacheError(f"{path}: no bar cache (build it with `pine warmup build`)") from None
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise BarCacheError(f"{path}: not a readable parquet bar cache ({exc})") from None


def _require_columns(path: Path, present: Iterable[str]) -> None:
    have = set(present)
    missing = [c for c in COLUMNS if c not in have]
    if missing:
        raise BarCacheError(f"{path}: missing column(s) {', '.join(missing)}")


def read_bars(path: Path) -> pd.DataFrame:
    """Read one cache file; BarCacheError names the file and what is wrong."""
    import pandas as pd

    with _reading(path):
        frame = pd.read_parquet(path)
    _require_columns(path, frame.columns)
    return frame


def complete_through(path: Path) -> datetime | None:
    """The instant the cache is complete through (None when the file does not say)."""
    import pyarrow.parquet as pq

    with _reading(path):
        meta = pq.read_schema(path).metadata or {}
    raw = meta.get(COMPLETE_THROUGH_KEY)
    return datetime.fromisoformat(raw.decode()).astimezone(UTC) if raw else None


def read_bar_list(path: Path, *, ends_after: datetime | None = None) -> list[Bar]:
    """The bars of one cache file (optionally only those ending after ``ends_after``), in time order.

    Reads with pyarrow alone and converts timestamps itself: several pyarrow conveniences
    (``read_table``, compute kernels, timezone-aware ``to_pylist``) import pandas, which a
    worker's start-up should not pay for.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _reading(path):
        table = pq.ParquetFile(path).read()
    _require_columns(path, table.column_names)
    times = {}
    for col in ("timestamp", "end"):
        kind = table.schema.field(col).type
        if not pa.types.is_timestamp(kind):
            raise BarCacheError(f"{path}: column {col!r} is {kind}, not a timestamp")
        per_us = _PER_MICROSECOND[kind.unit]
        times[col] = [_EPOCH + timedelta(microseconds=v / per_us) for v in table[col].cast(pa.int64()).to_pylist()]
    first = 0
    if ends_after is not None:
        first = bisect.bisect_right(times["end"], ends_after.astimezone(UTC))
    cols = {c: table[c].to_pylist()[first:] for c in COLUMNS if c not in times}
    n = len(times["end"]) - first
    return [
        Bar(cols["symbol"][i], cols["timeframe"][i], times["timestamp"][first + i], times["end"][first + i],
            float(cols["open"][i]), float(cols["high"][i]), float(cols["low"][i]), float(cols["close"][i]),
            int(cols["volume"][i]), int(cols["trade_count"][i]), int(cols["instrument_id"][i]),
            str(cols["contract_symbol"][i]))
        for i in range(n)
    ]


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamp units per microsecond (bar bounds are whole seconds, so every unit converts exactly).
_PER_MICROSECOND: Final = {"s": 1e-6, "ms": 1e-3, "us": 1, "ns": 1000}
