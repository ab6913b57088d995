"""ML feature readiness per symbol (the legacy "ML feature tracker").

A strategy worker keeps one ``FeatureTracker`` for its ML-enabled symbols: it feeds every
ended bar through it, asks ``ready(symbol)`` before a model decision (no decision until
every feature of the symbol has a value) and puts ``snapshot()`` in its heartbeat.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from ml.features import StreamingFeatures, feature_set
from pine.bars import Bar


class FeatureTracker:
    """Streaming features of several traded symbols, sharing the worker's feeds."""

    def __init__(self, symbols: Iterable[str], available: Collection[str]) -> None:
        """``available``: roots with feeds in this worker (traded and reference); raises MissingFeedError."""
        self.features = {s: StreamingFeatures(feature_set(s, available)) for s in symbols}

    def update(self, root: str, timeframe: str, high: float, low: float, close: float) -> None:
        """Take one ended bar of any feed; each symbol uses it if its features read that series."""
        for sf in self.features.values():
            sf.update(root, timeframe, high, low, close)

    def update_bar(self, bar: Bar) -> None:
        """``update`` from a Pine bar (partial bars are not used)."""
        for sf in self.features.values():
            sf.update_bar(bar)

    def ready(self, symbol: str) -> bool:
        """True once every feature of ``symbol`` has a value."""
        return self.features[symbol].ready

    def values(self, symbol: str) -> dict[str, float | None]:
        """Current feature values of ``symbol`` (None: not ready)."""
        return self.features[symbol].values()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per symbol: ready, features ready out of total, what each waiting feature still needs,
        missing optional feeds and the features defaulted because of them (heartbeat content)."""
        out: dict[str, dict[str, Any]] = {}
        for symbol, sf in self.features.items():
            status = sf.status()
            waiting = {s.name: f"{s.seen}/{s.needed} {s.feed} bars" for s in status if not s.ready}
            out[symbol] = {
                "ready": not waiting,
                "features_ready": f"{len(status) - len(waiting)}/{len(status)}",
                "waiting": waiting,
                "missing_feeds": sf.feature_set.missing_feeds,
                "defaulted": sf.feature_set.defaulted,
            }
        return out
