"""ML features: incremental (worker) equals vectorised (training), no look-ahead, readiness, missing feeds."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from itertools import groupby

import numpy as np
import pandas as pd
import pytest

from ml.features import (
    OPTIONAL_REFERENCES,
    REQUIRED_REFERENCES,
    FeatureSet,
    MissingFeedError,
    StreamingFeatures,
    feature_frame,
    feature_set,
)
from ml.features.ops import Ibs, RangeRatio, ZScore
from ml.readiness import FeatureTracker
from pine.bar_cache import bars_frame
from pine.bars import Bar
from tests.ml_support import ml_market

SESSIONS = 90


def _frames(bars: list[Bar]) -> dict[tuple[str, str], pd.DataFrame]:
    groups: dict[tuple[str, str], list[Bar]] = {}
    for b in bars:
        groups.setdefault((b.symbol, b.timeframe), []).append(b)
    return {k: bars_frame(v) for k, v in groups.items()}


def _streamed(fs: FeatureSet, bars: list[Bar], at: set[pd.Timestamp]) -> pd.DataFrame:
    """Values of the incremental evaluator after all bars ended by each instant of ``at`` went in."""
    sf = StreamingFeatures(fs)
    rows: dict[pd.Timestamp, dict[str, float | None]] = {}
    for end, group in groupby(sorted(bars, key=lambda b: b.end), key=lambda b: b.end):
        for bar in group:
            sf.update_bar(bar)
        if pd.Timestamp(end) in at:
            rows[pd.Timestamp(end)] = sf.values()
    return pd.DataFrame.from_dict(rows, orient="index", dtype=float)[fs.names].sort_index()


@pytest.mark.parametrize("optional", [OPTIONAL_REFERENCES, ("PL",), ()], ids=["all-optional", "PL-only", "none"])
def test_incremental_equals_vectorised_on_multi_symbol_bars(optional: tuple[str, ...]) -> None:
    bars = ml_market(SESSIONS, optional=optional, traded_minutes=20)
    frames = _frames(bars)
    roots = {b.symbol for b in bars}
    for symbol in ("CL", "GC"):
        fs = feature_set(symbol, roots)
        absent = sorted(set(OPTIONAL_REFERENCES) - set(optional))
        assert fs.missing_feeds == sorted(f"{r}_day" for r in absent)
        at = pd.DatetimeIndex(frames[(symbol, "daily")]["end"])
        vectorised = feature_frame(fs, frames, at)
        streamed = _streamed(fs, bars, set(at))
        assert list(streamed.index) == list(vectorised.index)
        # Same readiness bar by bar, then the same numbers (to rounding of the rolling moments).
        assert (streamed.isna().to_numpy() == vectorised.isna().to_numpy()).all()
        np.testing.assert_allclose(streamed.to_numpy(), vectorised.to_numpy(), rtol=1e-9, atol=1e-12)
        ready = vectorised.dropna()
        assert len(ready) >= SESSIONS - 30, "features should be ready once the longest window has filled"
        for name in fs.defaulted:
            assert (ready[name] == 0.0).all()
        live = [f.name for f in fs.features if not f.missing]
        assert (ready[live].std() > 0).all(), "every fed feature should vary"


def test_missing_required_feed_is_an_error_naming_it() -> None:
    with pytest.raises(MissingFeedError, match=r"CL: required reference feed\(s\) missing: ES_day \(for ES_ret_1d, "
                                               r"ES_z_close_20d\); TLT_day"):
        feature_set("CL", [r for r in REQUIRED_REFERENCES if r not in ("ES", "ZB")])


def _perturbed_after(bars: list[Bar], cutoff: pd.Timestamp, seed: int) -> list[Bar]:
    """Bars ended after ``cutoff`` get shuffled prices (scaled randomly); earlier bars are untouched."""
    rng = random.Random(seed)
    early = [b for b in bars if pd.Timestamp(b.end) <= cutoff]
    late = [b for b in bars if pd.Timestamp(b.end) > cutoff]
    prices = [(b.open, b.high, b.low, b.close) for b in late]
    rng.shuffle(prices)
    out = []
    for b, (o, h, lo, c) in zip(late, prices, strict=True):
        f = rng.uniform(0.5, 2.0)
        out.append(replace(b, open=o * f, high=h * f, low=lo * f, close=c * f))
    return early + rng.sample(out, k=len(out) * 4 // 5)


def test_features_before_a_cutoff_ignore_later_bars() -> None:
    bars = ml_market(SESSIONS, optional=("VIX",), traded_minutes=20)
    frames = _frames(bars)
    fs = feature_set("CL", {b.symbol for b in bars})
    at = pd.DatetimeIndex(frames[("CL", "daily")]["end"])
    cutoff = at[60]
    changed = _perturbed_after(bars, cutoff, seed=3)
    before, after = feature_frame(fs, frames, at), feature_frame(fs, _frames(changed), at)
    upto = at[at <= cutoff]
    pd.testing.assert_frame_equal(before.loc[upto], after.loc[upto])
    assert not before.loc[at > cutoff].equals(after.loc[at > cutoff]), "the perturbation should reach later features"
    pd.testing.assert_frame_equal(_streamed(fs, bars, set(upto)), _streamed(fs, changed, set(upto)))


def test_flat_windows_and_degenerate_bars_agree() -> None:
    flat = pd.Series([5.0] * 25)
    for op in (ZScore(20), RangeRatio(20), Ibs()):
        state = op.stream()
        for _ in range(25):
            state.update(5.0, 5.0, 5.0)
        assert op.series(flat, flat, flat).iloc[-1] == state.value()
    assert ZScore(20).stream().value() is None
    with pytest.raises(ValueError, match="ZScore needs n >= 2"):
        ZScore(1)


def test_tracker_reports_readiness_per_symbol_and_missing_feeds() -> None:
    bars = ml_market(SESSIONS, optional=("PL",), traded_minutes=20)
    tracker = FeatureTracker(["CL", "GC"], {b.symbol for b in bars})
    cl_daily = sorted(b.end for b in bars if b.symbol == "CL" and b.timeframe == "daily")
    cut = cl_daily[10]
    for bar in bars:
        if bar.end <= cut:
            tracker.update_bar(bar)
    early = tracker.snapshot()
    assert not tracker.ready("CL") and not early["CL"]["ready"]
    assert early["CL"]["waiting"]["rv_20d"] == "11/21 CL_day bars"
    assert early["CL"]["waiting"]["TLT_day_z_close_20d"] == "11/20 TLT_day bars"
    assert "ibs_1d" not in early["CL"]["waiting"] and "VIX_ret_1d" not in early["CL"]["waiting"]
    assert early["CL"]["missing_feeds"] == ["6E_day", "6J_day", "VIX_day"]
    assert early["CL"]["defaulted"] == ["VIX_z_close_20d", "VIX_ret_1d", "6E_ret_1d", "6J_ret_1d"]
    assert tracker.values("CL")["rv_20d"] is None and tracker.values("CL")["VIX_ret_1d"] == 0.0
    for bar in bars:
        if bar.end > cut:
            tracker.update_bar(bar)
    done = tracker.snapshot()
    assert tracker.ready("CL") and tracker.ready("GC")
    assert done["GC"] == {**done["GC"], "ready": True, "waiting": {}, "features_ready": "32/32"}
    json.dumps(done)  # goes into the heartbeat as is
