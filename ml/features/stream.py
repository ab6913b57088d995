"""Incremental feature evaluation (worker): bars go in one at a time, values come out in O(1).

Feed every ended bar of the symbol's sources (its own daily and hourly bars and the
reference roots') through ``update``; at a decision, ``values`` reads each feature from
its operator state. Bars of series the features do not read are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from ml.features.catalog import FeatureSet
from ml.features.ops import OpState
from pine.bars import Bar


@dataclass(frozen=True)
class FeatureStatus:
    """Readiness of one feature: bars of its feed seen versus needed; ``missing``: neutral default."""

    name: str
    feed: str
    seen: int
    needed: int
    missing: bool

    @property
    def ready(self) -> bool:
        """A defaulted feature is ready (its value is fixed); otherwise enough bars were seen."""
        return self.missing or self.seen >= self.needed


class StreamingFeatures:
    """The features of one ``FeatureSet`` maintained bar by bar."""

    def __init__(self, fs: FeatureSet) -> None:
        self.feature_set = fs
        self._states: list[OpState | None] = [None if f.missing else f.op.stream() for f in fs.features]
        self._by_source: dict[tuple[str, str], list[OpState]] = {}
        for f, state in zip(fs.features, self._states, strict=True):
            if state is not None:
                self._by_source.setdefault(f.source, []).append(state)

    @property
    def symbol(self) -> str:
        return self.feature_set.symbol

    def update(self, root: str, timeframe: str, high: float, low: float, close: float) -> None:
        """Take one ended bar of ``root``/``timeframe`` (ignored when no feature reads that series)."""
        for state in self._by_source.get((root, timeframe), ()):
            state.update(high, low, close)

    def update_bar(self, bar: Bar) -> None:
        """``update`` from a Pine bar; partial bars (flushed before their end) are not used."""
        if not bar.partial:
            self.update(bar.symbol, bar.timeframe, bar.high, bar.low, bar.close)

    def values(self) -> dict[str, float | None]:
        """Every feature's current value (None: not ready yet), in model column order."""
        return {
            f.name: f.neutral if state is None else state.value()
            for f, state in zip(self.feature_set.features, self._states, strict=True)
        }

    def status(self) -> list[FeatureStatus]:
        """Readiness of every feature."""
        return [
            FeatureStatus(f.name, f.feed, 0 if state is None else state.seen, f.op.warmup, f.missing)
            for f, state in zip(self.feature_set.features, self._states, strict=True)
        ]

    @property
    def ready(self) -> bool:
        """True once every feature has a value."""
        return all(
            state is None or state.seen >= f.op.warmup
            for f, state in zip(self.feature_set.features, self._states, strict=True)
        )
