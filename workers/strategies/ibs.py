"""IBS (internal bar strength) mean reversion on the session daily bar.

IBS = (close − low) / (high − low) of the daily bar (0.5 when high == low). Long when
IBS <= ``entry_low``; exit when IBS >= ``exit_high`` (``ibs_exit``), after
``max_bars_held`` daily bars (``max_bars``), or by a stop at entry × (1 − ``stop_pct``)
on the minute feed (``stop``).

ML features: for the ML-enabled instruments the base class keeps the veto model's features
(``workers.ml_veto``, the legacy "ML feature tracker") up to date from every bar of its feeds —
its own and the reference roots' (by default the seeds' list, see
:meth:`IbsStrategy.default_reference_feeds`). Features of a missing optional root hold their
neutral default. They are reported by :meth:`indicators` and in the heartbeat.
"""

from __future__ import annotations

from typing import Any

from pine.config.schema import ReferenceFeedsConfig, StrategyConfig
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

    @classmethod
    def default_reference_feeds(cls, config: StrategyConfig) -> ReferenceFeedsConfig:
        """The roots the ML features read (seeds' list) when an instrument is ML-enabled, else none."""
        if not any(inst.ml_enabled for inst in config.instruments.values()):
            return ReferenceFeedsConfig()
        # Imported here: a strategy without ML never pays for the feature library (it imports pandas).
        from ml.features import OPTIONAL_REFERENCES, REQUIRED_REFERENCES

        return ReferenceFeedsConfig(required=list(REQUIRED_REFERENCES), optional=list(OPTIONAL_REFERENCES))

    @classmethod
    def check_references(cls, config: StrategyConfig, references: ReferenceFeedsConfig) -> None:
        """The ML features of ML-enabled instruments need every root the feature catalog requires."""
        if not any(inst.ml_enabled for inst in config.instruments.values()):
            return
        from ml.features import REQUIRED_REFERENCES

        absent = [r for r in REQUIRED_REFERENCES if r not in references.required and r not in config.instruments]
        if absent:
            raise ValueError(f"the ML features of the ML-enabled instruments need {', '.join(absent)} among the "
                             "required reference roots (or leave reference_feeds out for the seeds' list)")

    def indicators(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for symbol in self.symbols:
            d = self.day[symbol]
            values: dict[str, float | None] = {"ibs": self.daily_ibs(symbol) if len(d) else None}
            if self.ml is not None and symbol in self.ml.tracker.features:
                values |= self.ml.tracker.values(symbol)
            out[symbol] = values
        return out

    def feature_status(self) -> dict[str, Any]:
        """Per ML-enabled symbol: features ready out of total, and what the waiting ones still need."""
        return self.ml.tracker.snapshot() if self.ml is not None else {}

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
        return self.stop_on_grid(symbol, direction, entry_price * (1 - direction * self.p.stop_pct))
