"""The IBS strategy's features: one definition each (name, source series, operator, neutral default).

A definition names the bar series it reads: the traded symbol's own daily or hourly bars,
or a reference root's (seeds: index futures ES NQ RTY YM, commodities NG SI ZC ZS ZW,
currency crosses 6B 6N 6S, and ZB exposed as ``TLT_day`` and ``ZB_hour``; VIX, PL, 6E and 6J
are optional). A feature of an optional root that has no feed takes its neutral default
(0.0: a flat return, an average z-score) and is reported as missing; a required root
without a feed is an error. Names are stable: a model's feature list refers to them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from ml.features.ops import Ibs, Op, Range, RangeRatio, RealisedVol, Return, ZScore

DAILY: Final = "daily"
HOURLY: Final = "hourly"

INDEX_REFERENCES: Final = ("ES", "NQ", "RTY", "YM")
COMMODITY_REFERENCES: Final = ("NG", "SI", "ZC", "ZS", "ZW")
CURRENCY_REFERENCES: Final = ("6B", "6N", "6S")
BOND_REFERENCE: Final = "ZB"
REQUIRED_REFERENCES: Final = (*INDEX_REFERENCES, *COMMODITY_REFERENCES, *CURRENCY_REFERENCES, BOND_REFERENCE)
OPTIONAL_REFERENCES: Final = ("VIX", "PL", "6E", "6J")


class MissingFeedError(LookupError):
    """A required reference feed is absent; the message names the feed and the features needing it."""


@dataclass(frozen=True)
class FeatureDef:
    """One feature: ``root`` None means the traded symbol; ``neutral`` set means the root is optional."""

    name: str
    root: str | None
    timeframe: str
    op: Op
    neutral: float | None = None


def feed_label(root: str, timeframe: str) -> str:
    """The seeds' name of a feed: ``ES_day``, ``CL_hour``; ZB's daily feed is ``TLT_day``."""
    if root == BOND_REFERENCE and timeframe == DAILY:
        return "TLT_day"
    return f"{root}_{'day' if timeframe == DAILY else 'hour'}"


def _own() -> tuple[FeatureDef, ...]:
    return (
        FeatureDef("ibs_1d", None, DAILY, Ibs()),
        FeatureDef("ret_1d", None, DAILY, Return(1)),
        FeatureDef("ret_5d", None, DAILY, Return(5)),
        FeatureDef("range_1d", None, DAILY, Range()),
        FeatureDef("range_ratio_20d", None, DAILY, RangeRatio(20)),
        FeatureDef("rv_20d", None, DAILY, RealisedVol(20)),
        FeatureDef("z_close_20d", None, DAILY, ZScore(20)),
        FeatureDef("ibs_1h", None, HOURLY, Ibs()),
        FeatureDef("ret_1h", None, HOURLY, Return(1)),
        FeatureDef("ret_4h", None, HOURLY, Return(4)),
        FeatureDef("rv_24h", None, HOURLY, RealisedVol(24)),
    )


def _cross_asset() -> tuple[FeatureDef, ...]:
    refs = (*INDEX_REFERENCES, *COMMODITY_REFERENCES, *CURRENCY_REFERENCES)
    return (
        *(FeatureDef(f"{root}_ret_1d", root, DAILY, Return(1)) for root in refs),
        FeatureDef("ES_z_close_20d", "ES", DAILY, ZScore(20)),
        FeatureDef("TLT_day_ret_1d", BOND_REFERENCE, DAILY, Return(1)),
        FeatureDef("TLT_day_z_close_20d", BOND_REFERENCE, DAILY, ZScore(20)),
        FeatureDef("ZB_hour_ret_1h", BOND_REFERENCE, HOURLY, Return(1)),
        # Seeds: without a VIX feed its z-score is 0.0; the other optional roots default to a flat return.
        FeatureDef("VIX_z_close_20d", "VIX", DAILY, ZScore(20), neutral=0.0),
        FeatureDef("VIX_ret_1d", "VIX", DAILY, Return(1), neutral=0.0),
        FeatureDef("PL_ret_1d", "PL", DAILY, Return(1), neutral=0.0),
        FeatureDef("6E_ret_1d", "6E", DAILY, Return(1), neutral=0.0),
        FeatureDef("6J_ret_1d", "6J", DAILY, Return(1), neutral=0.0),
    )


CATALOG: Final[tuple[FeatureDef, ...]] = (*_own(), *_cross_asset())


@dataclass(frozen=True)
class Feature:
    """A feature resolved for one traded symbol; ``missing`` means its optional feed is absent."""

    name: str
    root: str
    timeframe: str
    op: Op
    neutral: float | None
    missing: bool

    @property
    def source(self) -> tuple[str, str]:
        """(root, timeframe) of the bars it reads."""
        return self.root, self.timeframe

    @property
    def feed(self) -> str:
        """The seeds' feed name of its source (``ES_day``, ``TLT_day``, ``CL_hour``)."""
        return feed_label(self.root, self.timeframe)


@dataclass(frozen=True)
class FeatureSet:
    """The features of one traded symbol given the reference feeds that exist."""

    symbol: str
    features: tuple[Feature, ...]

    @property
    def names(self) -> list[str]:
        """Feature names in model column order."""
        return [f.name for f in self.features]

    @property
    def missing_feeds(self) -> list[str]:
        """Optional feeds that are absent (their features take neutral defaults)."""
        return sorted({f.feed for f in self.features if f.missing})

    @property
    def defaulted(self) -> list[str]:
        """Features that take their neutral default because their feed is absent."""
        return [f.name for f in self.features if f.missing]

    @property
    def sources(self) -> list[tuple[str, str]]:
        """(root, timeframe) of every bar series the features read (absent optional feeds excluded)."""
        return sorted({f.source for f in self.features if not f.missing})

    def describe(self) -> list[dict[str, object]]:
        """One row per feature: name, feed, formula, neutral default, missing (logged with a model)."""
        return [
            {"name": f.name, "feed": f.feed, "formula": f.op.describe(), "warmup_bars": f.op.warmup,
             "neutral": f.neutral, "missing": f.missing}
            for f in self.features
        ]


def reference_roots() -> tuple[str, ...]:
    """Every reference root the features read: required first, then optional."""
    return (*REQUIRED_REFERENCES, *OPTIONAL_REFERENCES)


def feature_set(symbol: str, available: Collection[str]) -> FeatureSet:
    """The features of ``symbol`` when the roots in ``available`` have feeds (``symbol`` always has).

    Raises MissingFeedError when a required reference root is not available.
    """
    have = {*available, symbol}
    absent: dict[str, list[str]] = {}
    features = []
    for d in CATALOG:
        root = d.root or symbol
        missing = root not in have
        if missing and d.neutral is None:
            absent.setdefault(feed_label(root, d.timeframe), []).append(d.name)
        features.append(Feature(d.name, root, d.timeframe, d.op, d.neutral, missing))
    if absent:
        detail = "; ".join(f"{feed} (for {', '.join(names)})" for feed, names in sorted(absent.items()))
        raise MissingFeedError(f"{symbol}: required reference feed(s) missing: {detail}")
    return FeatureSet(symbol, tuple(features))
