"""Parquet bar caches: round trip, partial bars left out, clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pine.bar_cache import BarCacheError, bars_frame, cache_path, read_bars, write_bars
from pine.bars import Bar

T0 = datetime(2024, 3, 11, 14, 0, tzinfo=UTC)


def _bar(i: int, *, partial: bool = False) -> Bar:
    start = T0 + timedelta(minutes=i)
    return Bar(
        "CL",
        "1min",
        start,
        start + timedelta(minutes=1),
        80.0 + i,
        80.5 + i,
        79.5 + i,
        80.25 + i,
        10 + i,
        3,
        77,
        "CLK4",
        partial=partial,
    )


def test_round_trip_sorted_without_partial_bars(tmp_path: Path) -> None:
    path = write_bars(
        cache_path(tmp_path, "CL", "1min"), bars_frame([_bar(2), _bar(0), _bar(1), _bar(3, partial=True)])
    )
    assert path == tmp_path / "CL" / "1min.parquet"
    frame = read_bars(path)
    assert list(frame["open"]) == [80.0, 81.0, 82.0]
    assert frame["timestamp"].iloc[0] == pd.Timestamp(T0)
    assert str(frame["end"].dt.tz) == "UTC"


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(BarCacheError, match=r"no bar cache.*pine warmup build"):
        read_bars(tmp_path / "ES" / "daily.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(BarCacheError, match=r"bad\.parquet: not a readable parquet"):
        read_bars(bad)
    thin = tmp_path / "thin.parquet"
    pd.DataFrame({"open": [1.0]}).to_parquet(thin)
    with pytest.raises(BarCacheError, match="missing column"):
        read_bars(thin)
    with pytest.raises(ValueError, match="timeframe"):
        cache_path(tmp_path, "ES", "5min")
