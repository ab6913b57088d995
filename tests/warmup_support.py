"""Warmup history for tests: seeded hourly and session bars per root, written as real parquet caches.

Hourly bars follow a random walk through each session's trading hours (the 16:00–17:00 Chicago
maintenance hour has none); a session's daily bar aggregates them, as the hub's would. Bars
are built directly (no DBN round trip) so that a year of 19 roots costs a second or two.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hub.synthetic import trading_days
from pine.bar_cache import bars_frame, cache_path, write_bars
from pine.bars import Bar
from pine.sessions import SessionCalendar

CALENDAR = SessionCalendar()
LEVELS = {"ES": 4750.0, "NQ": 16800.0, "RTY": 2030.0, "YM": 37700.0, "6A": 0.68, "6B": 1.27, "6C": 0.755,
          "6M": 0.058, "6N": 0.63, "6S": 1.19, "CL": 70.4, "NG": 2.6, "GC": 2070.0, "SI": 23.8, "HG": 3.88,
          "ZC": 470.0, "ZS": 1290.0, "ZW": 620.0, "ZB": 122.0, "PL": 990.0, "VIX": 14.0, "6E": 1.09, "6J": 0.0071}


def session_close(day: date) -> datetime:
    """Session close (UTC) of trading day ``day``."""
    return CALENDAR.session_end(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))


def _bar(root: str, tf: str, start: datetime, end: datetime, o: float, h: float, lo: float, c: float, n: int) -> Bar:
    return Bar(root, tf, start, end, o, max(h, o, c), min(lo, o, c), c, 10 * n, n, 1000 + sum(map(ord, root)),
               f"{root}M4")


def history(roots: Iterable[str], days: Sequence[date], *, seed: int = 5, hourly_sessions: int | None = None,
            drift: float = 0.0) -> dict[tuple[str, str], list[Bar]]:
    """Hourly and daily bars of ``roots`` over ``days``; hourly bars kept for the last ``hourly_sessions`` only
    (every session's daily bar is built from its hours either way). ``drift`` trends the walk (per hour)."""
    out: dict[tuple[str, str], list[Bar]] = {}
    for root in roots:
        rng = random.Random(f"{seed}:{root}")
        price = LEVELS.get(root, 100.0)
        hourly: list[Bar] = []
        daily: list[Bar] = []
        for i, day in enumerate(days):
            close = session_close(day)
            start = close - timedelta(hours=24)
            hours = []
            for h in range(23):  # the last hour before the close is the maintenance halt
                t0 = start + timedelta(hours=h)
                o = price
                c = o * (1 + drift + rng.gauss(0, 0.002))
                hi = max(o, c) * (1 + abs(rng.gauss(0, 0.001)))
                lo = min(o, c) * (1 - abs(rng.gauss(0, 0.001)))
                hours.append(_bar(root, "hourly", t0, t0 + timedelta(hours=1), o, hi, lo, c, rng.randint(5, 50)))
                price = c
            daily.append(_bar(root, "daily", start, close, hours[0].open, max(b.high for b in hours),
                              min(b.low for b in hours), hours[-1].close, sum(b.trade_count for b in hours)))
            if hourly_sessions is None or i >= len(days) - hourly_sessions:
                hourly.extend(hours)
        out[(root, "hourly")] = hourly
        out[(root, "daily")] = daily
    return out


def year_of_history(roots: Iterable[str], *, end: date = date(2024, 3, 1), sessions: int = 270,
                    hourly_sessions: int = 30, seed: int = 5) -> tuple[dict[tuple[str, str], list[Bar]], datetime]:
    """``sessions`` trading days up to ``end`` (inclusive); returns the bars and their hand-over (``end``'s close)."""
    first = end - timedelta(days=sessions * 7 // 5 + 10)
    days = [d for d in trading_days(first, sessions * 2) if d <= end][-sessions:]
    return history(roots, days, seed=seed, hourly_sessions=hourly_sessions), session_close(days[-1])


def write_caches(cache_dir: Path, series: dict[tuple[str, str], list[Bar]], through: datetime) -> list[Path]:
    """One cache file per series, complete through ``through``."""
    return [write_bars(cache_path(cache_dir, root, tf), bars_frame(bars), complete_through=through)
            for (root, tf), bars in series.items()]
