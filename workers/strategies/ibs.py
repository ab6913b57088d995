"""IBS (internal bar strength) mean reversion on the session daily bar.

IBS = (close − low) / (high − low) of the daily bar (0.5 when high == low). Long when
IBS <= ``entry_low``; exit when IBS >= ``exit_high`` (``ibs_exit``), after
``max_bars_held`` daily bars (``max_bars``), or by a stop at entry × (1 − ``stop_pct``)
on the minute feed (``stop``).
"""

from __future__ import annotations

import math

from workers.strategies.base import BaseStrategy
from workers.strategies.registry import register


def ibs(high: float, low: float, close: float) -> float:
    """Internal bar strength of one bar, in [0, 1]."""
    if high == low:
        return 0.5
    return (close - low) / (high - low)


@register("ibs")
class IbsStrategy(BaseStrategy):
    """Long-only IBS: buy weak closes, sell strong closes, time and price stops."""

    params = (
        ("entry_low", 0.2),
        ("exit_high", 0.8),
        ("max_bars_held", 5),
        ("stop_pct", 0.02),
    )

    def daily_ibs(self, symbol: str) -> float:
        """IBS of the latest session daily bar of ``symbol``."""
        d = self.day[symbol]
        return ibs(d.high[0], d.low[0], d.close[0])

    def should_enter_long(self, symbol: str) -> bool:
        return self.daily_ibs(symbol) <= self.p.entry_low

    def entry_tag(self, symbol: str, direction: int) -> str:
        return f"ibs={self.daily_ibs(symbol):.3f}"

    def should_exit(self, symbol: str) -> str | None:
        if self.daily_ibs(symbol) >= self.p.exit_high:
            return "ibs_exit"
        if self.bars_held(symbol) >= self.p.max_bars_held:
            return "max_bars"
        return None

    def stop_price(self, symbol: str, direction: int, entry_price: float) -> float | None:
        if not self.p.stop_pct:
            return None
        tick = self.tick_size(symbol)
        raw = entry_price * (1 - direction * self.p.stop_pct)
        # A long's stop rounds down to the tick grid (a short's up): never tighter than asked.
        ticks = math.floor(raw / tick + 1e-9) if direction > 0 else math.ceil(raw / tick - 1e-9)
        return round(ticks * tick, 10)
