"""Trend breakout: a Donchian channel on session daily bars with an ATR stop.

On each daily bar of a flat symbol: long when the close is above the highest high of the
``entry_period`` daily bars before it, short (if ``allow_short``) when below their lowest
low. An open long exits when the close falls below the lowest low of the ``exit_period``
bars before it (a short: above their highest high), reason ``channel_exit``; after
``max_bars_held`` daily bars when that is set (``max_bars``); or by the protective stop
``atr_stop`` × ATR from the entry fill on the minute feed (``stop``).

ATR here is the simple mean of the last ``atr_period`` true ranges. Unlike Wilder's
smoothing it depends only on its window, so a worker warmed up on a few hundred daily bars
has exactly the channel and ATR of a run over the whole history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import backtrader as bt

from workers.strategies.base import BaseStrategy
from workers.strategies.registry import register


@register("breakout")
class BreakoutStrategy(BaseStrategy):
    """Donchian channel breakout on daily bars, channel exit, ATR protective stop."""

    params = (
        ("entry_period", 20),
        ("exit_period", 10),
        ("atr_period", 14),
        ("atr_stop", 2.0),
        ("allow_short", True),
        ("max_bars_held", 0),
    )

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        for name in ("entry_period", "exit_period", "atr_period"):
            value = params.get(name, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number of daily bars, at least 1, got {value!r}")

    def __init__(self) -> None:
        super().__init__()
        p = self.p
        self.upper = {s: bt.ind.Highest(self.day[s].high, period=p.entry_period) for s in self.symbols}
        self.lower = {s: bt.ind.Lowest(self.day[s].low, period=p.entry_period) for s in self.symbols}
        self.exit_upper = {s: bt.ind.Highest(self.day[s].high, period=p.exit_period) for s in self.symbols}
        self.exit_lower = {s: bt.ind.Lowest(self.day[s].low, period=p.exit_period) for s in self.symbols}
        self.atr = {s: bt.ind.SMA(bt.ind.TrueRange(self.day[s]), period=p.atr_period) for s in self.symbols}

    def indicators(self) -> dict[str, dict[str, float | None]]:
        return {
            s: {
                "upper": self.value(self.upper[s]),
                "lower": self.value(self.lower[s]),
                "exit_upper": self.value(self.exit_upper[s]),
                "exit_lower": self.value(self.exit_lower[s]),
                "atr": self.value(self.atr[s]),
            }
            for s in self.symbols
        }

    def _close(self, symbol: str) -> float:
        return float(self.day[symbol].close[0])

    def should_enter_long(self, symbol: str) -> bool:
        # The channel of the bars *before* this one: today's high is part of today's channel.
        upper = self.value(self.upper[symbol], -1)
        return upper is not None and self.value(self.atr[symbol]) is not None and self._close(symbol) > upper

    def should_enter_short(self, symbol: str) -> bool:
        lower = self.value(self.lower[symbol], -1)
        return (bool(self.p.allow_short) and lower is not None and self.value(self.atr[symbol]) is not None
                and self._close(symbol) < lower)

    def entry_tag(self, symbol: str, direction: int) -> str:
        band = self.value(self.upper[symbol] if direction > 0 else self.lower[symbol], -1)
        return f"donchian{self.p.entry_period}={'high' if direction > 0 else 'low'}:{band}"

    def should_exit(self, symbol: str) -> str | None:
        size = self.position_size(symbol)
        if size > 0:
            band = self.value(self.exit_lower[symbol], -1)
            if band is not None and self._close(symbol) < band:
                return "channel_exit"
        elif size < 0:
            band = self.value(self.exit_upper[symbol], -1)
            if band is not None and self._close(symbol) > band:
                return "channel_exit"
        if self.p.max_bars_held and self.bars_held(symbol) >= self.p.max_bars_held:
            return "max_bars"
        return None

    def stop_price(self, symbol: str, direction: int, entry_price: float) -> float | None:
        atr = self.value(self.atr[symbol])
        if atr is None or not self.p.atr_stop:
            return None
        return self.stop_on_grid(symbol, direction, entry_price - direction * self.p.atr_stop * atr)
