"""Parquet bar caches: ``<runtime>/warmup/{ROOT}/{timeframe}.parquet``.

The one on-disk bar format, written from DBN history (``pine warmup build``, the Dagster
``warmup_cache`` asset) and read by worker warmup, backtests and ML training. Columns are the
bar message fields; ``timestamp`` and ``end`` are UTC timestamps; rows sorted by ``timestamp``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

import pandas as pd

from pine.bars import TIMEFRAMES, Bar

COLUMNS: Final = (
    "symbol",
    "timeframe",
    "timestamp",
    "end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trade_count",
    "instrument_id",
    "contract_symbol",
)


class BarCacheError(ValueError):
    """A cache file that is missing or unusable; the message names the file."""


def cache_path(warmup_dir: Path, root: str, timeframe: str) -> Path:
    """Where the cache of one root and timeframe lives."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe must be one of {TIMEFRAMES}, got {timeframe!r}")
    return Path(warmup_dir) / root / f"{timeframe}.parquet"


def bars_frame(bars: Iterable[Bar]) -> pd.DataFrame:
    """Bars as a DataFrame in the cache layout (complete bars only)."""
    rows = [{c: getattr(b, c) for c in COLUMNS} for b in bars if not b.partial]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("timestamp", "end"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def write_bars(path: Path, frame: pd.DataFrame) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def read_bars(path: Path) -> pd.DataFrame:
    """Read one cache file; BarCacheError names the file and what is wrong."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise BarCacheError(f"{path}: no bar cache (build it with `pine warmup build`)") from None
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise BarCacheError(f"{path}: not a readable parquet bar cache ({exc})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise BarCacheError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame
