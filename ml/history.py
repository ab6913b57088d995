"""Historical bars for training, read from the parquet bar caches (``pine.bar_cache``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pine.bar_cache import cache_path, read_bars
from pine.bars import Bar


class MissingHistoryError(RuntimeError):
    """Bar caches needed for training are absent; the message lists them and how to build them."""


def frame_bars(frame: pd.DataFrame) -> list[Bar]:
    """Bars of a cache frame (UTC-aware datetimes), in frame order."""
    starts = pd.DatetimeIndex(frame["timestamp"]).to_pydatetime()
    ends = pd.DatetimeIndex(frame["end"]).to_pydatetime()
    return [
        Bar(str(sym), str(tf), start, end, float(o), float(h), float(lo), float(c), int(v), int(n), int(iid), str(cs))
        for sym, tf, start, end, o, h, lo, c, v, n, iid, cs in zip(
            frame["symbol"], frame["timeframe"], starts, ends, frame["open"], frame["high"], frame["low"],
            frame["close"], frame["volume"], frame["trade_count"], frame["instrument_id"], frame["contract_symbol"],
            strict=True,
        )
    ]


class BarHistory:
    """Cache frames of a warmup directory, each read once."""

    def __init__(self, warmup_dir: Path) -> None:
        self.warmup_dir = Path(warmup_dir)
        self._frames: dict[tuple[str, str], pd.DataFrame] = {}

    def has(self, root: str, timeframe: str) -> bool:
        """Whether the cache of ``root``/``timeframe`` exists."""
        return cache_path(self.warmup_dir, root, timeframe).exists()

    def require(self, needed: Iterable[tuple[str, str]]) -> None:
        """Raise MissingHistoryError listing every absent cache of ``needed`` (root, timeframe)."""
        absent = sorted({cache_path(self.warmup_dir, r, tf) for r, tf in needed if not self.has(r, tf)})
        if absent:
            listed = "\n  ".join(str(p) for p in absent)
            raise MissingHistoryError(
                f"missing bar cache(s):\n  {listed}\n"
                "build them with `pine warmup build` (the same caches warm up the workers)"
            )

    def frame(self, root: str, timeframe: str) -> pd.DataFrame:
        """The cache of ``root``/``timeframe``; BarCacheError names an unusable file."""
        key = (root, timeframe)
        if key not in self._frames:
            self._frames[key] = read_bars(cache_path(self.warmup_dir, root, timeframe))
        return self._frames[key]

