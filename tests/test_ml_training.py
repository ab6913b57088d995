"""ML training pieces: labels and dataset without look-ahead, purged/embargoed walk-forward, veto metrics."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.history import BarHistory, MissingHistoryError
from ml.metrics import choose_threshold, profit_factor, veto_metrics
from ml.training import TrainingSkipped, build_dataset, train_symbol
from ml.walk_forward import heldout_split, walk_forward
from pine.bars import Bar
from pine.config import load_config
from tests.ml_support import STRATEGY, ml_market, write_caches, write_ml_config


def _perturbed_after(bars: list[Bar], cutoff: pd.Timestamp, seed: int) -> list[Bar]:
    """Every bar ended after ``cutoff`` moved by a random factor (per root and day, so bars stay consistent)."""
    rng = random.Random(seed)
    factors: dict[tuple[str, object], float] = {}
    out = []
    for b in bars:
        if pd.Timestamp(b.end) <= cutoff:
            out.append(b)
            continue
        f = factors.setdefault((b.symbol, b.end.date()), rng.uniform(0.9, 1.1))
        out.append(replace(b, open=b.open * f, high=b.high * f, low=b.low * f, close=b.close * f))
    return out


def test_dataset_before_a_cutoff_ignores_later_bars(tmp_path: Path) -> None:
    """Perturbed future bars change neither the labels nor the features of trades that ended before the cut."""
    cfg = load_config(write_ml_config(tmp_path / "config.yml"))
    bars = ml_market(200, traded_minutes=20)
    daily = sorted(b.end for b in bars if b.symbol == "CL" and b.timeframe == "daily")
    cutoff = pd.Timestamp(daily[140])
    original = build_dataset(cfg, STRATEGY, "CL", BarHistory(write_caches(tmp_path / "a", bars)))
    changed = build_dataset(
        cfg, STRATEGY, "CL", BarHistory(write_caches(tmp_path / "b", _perturbed_after(bars, cutoff, seed=1)))
    )
    a, b = original.samples, changed.samples
    done_a, done_b = a[a["exit_time"] <= cutoff], b[b["exit_time"] <= cutoff]
    assert len(done_a) >= 15
    pd.testing.assert_frame_equal(done_a, done_b)
    later = a[a["decision_time"] > cutoff].reset_index(drop=True)
    assert len(later) >= 5
    assert not later.equals(b[b["decision_time"] > cutoff].reset_index(drop=True))
    # Decisions are signal bars' ends: each trade entered after its decision, exited after entry.
    assert (a["decision_time"] < a["entry_time"]).all() and (a["entry_time"] < a["exit_time"]).all()
    assert set(a["label"]) == {0, 1} and ((a["net_pnl"] > 0) == (a["label"] == 1)).all()


def test_missing_caches_name_the_files_and_the_command(tmp_path: Path) -> None:
    cfg = load_config(write_ml_config(tmp_path / "config.yml"))
    bars = [b for b in ml_market(30, traded_minutes=10) if b.symbol != "ES"]
    history = BarHistory(write_caches(tmp_path / "warmup", bars))
    with pytest.raises(MissingHistoryError, match=r"(?s)ES/daily\.parquet.*pine warmup build"):
        build_dataset(cfg, STRATEGY, "CL", history)


def test_too_few_trades_is_skipped_with_the_reason(tmp_path: Path) -> None:
    cfg = load_config(write_ml_config(tmp_path / "config.yml"))
    history = BarHistory(write_caches(tmp_path / "warmup", ml_market(50, traded_minutes=10)))
    with pytest.raises(TrainingSkipped, match=r"ibs_ml/CL: \d+ labelled trades with all features ready \(need 20; "
                                              r"\d+ more had features not ready\)"):
        train_symbol(cfg, STRATEGY, "CL", history)


def _overlapping_trades(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    decision = pd.Timestamp("2024-01-02 22:00", tz="UTC") + pd.to_timedelta(np.sort(rng.choice(400, n, replace=False)),
                                                                            unit="D")
    exit_ = decision + pd.to_timedelta(rng.integers(1, 9, n), unit="D") + pd.Timedelta(hours=3)
    return pd.DataFrame({"decision_time": decision, "exit_time": exit_})


@pytest.mark.parametrize("embargo_days", [0, 3])
def test_walk_forward_folds_are_purged_and_embargoed(embargo_days: int) -> None:
    trades = _overlapping_trades(120, seed=embargo_days)
    embargo = pd.Timedelta(days=embargo_days)
    splits = walk_forward(trades["decision_time"], trades["exit_time"], 4, embargo)
    assert [s.number for s in splits] == [1, 2, 3, 4]
    assert sum(s.dropped for s in splits) > 0, "horizons overlap, so some training trades must be dropped"
    tested = np.concatenate([s.test for s in splits])
    assert len(np.unique(tested)) == len(tested)
    for s in [*splits, heldout_split(trades["decision_time"], trades["exit_time"], 0.2, embargo)]:
        train, test = trades.iloc[s.train], trades.iloc[s.test]
        assert len(train) > 0
        test_start, test_end = test["decision_time"].min(), test["exit_time"].max()
        # No training label horizon [decision, exit] overlaps the test window, and the gap is at least the embargo.
        assert not ((train["decision_time"] <= test_end) & (train["exit_time"] >= test_start)).any()
        assert (train["exit_time"] < test_start - embargo).all()
        # Expanding window: everything before the test block that is not purged is used.
        before = trades.iloc[: s.test[0]]
        assert len(train) + s.dropped == len(before)


def test_walk_forward_refuses_unsorted_or_too_few_samples() -> None:
    trades = _overlapping_trades(10, seed=1)
    with pytest.raises(ValueError, match="sorted"):
        walk_forward(trades["decision_time"][::-1], trades["exit_time"][::-1], 3, pd.Timedelta(0))
    with pytest.raises(ValueError, match="cannot make 12"):
        walk_forward(trades["decision_time"], trades["exit_time"], 12, pd.Timedelta(0))


def test_veto_metrics_kept_versus_vetoed() -> None:
    pnl = np.array([100.0, -50.0, 30.0, -20.0, -10.0])
    label = (pnl > 0).astype(int)
    m = veto_metrics(label, pnl, np.array([True, True, True, False, False]))
    assert (m.trades, m.kept, m.vetoed) == (5, 3, 2)
    assert m.precision == pytest.approx(2 / 3) and m.base_rate == pytest.approx(0.4)
    assert (m.pnl_all, m.pnl_kept, m.pnl_vetoed) == (50.0, 80.0, -30.0)
    assert m.pf_kept == pytest.approx(130 / 50) and m.pf_all == pytest.approx(130 / 80)
    assert m.pf_vetoed == 0.0
    assert "pf_vetoed" in m.as_dict() and m.metric("pnl") == 80.0
    assert profit_factor(np.array([5.0])) == math.inf
    assert "val_pf_kept" not in veto_metrics(label[:1], pnl[:1], np.array([True])).as_dict("val_")


def test_threshold_maximises_kept_pnl_with_a_floor_on_kept_trades() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    pnl = np.array([10.0, 10.0, -30.0, 5.0, -1.0, -1.0])
    # Best: keep the top two (P&L 20), threshold between 0.8 and 0.7.
    assert choose_threshold(scores, pnl, min_kept=1) == pytest.approx(0.75)
    # At least four kept: the top four (P&L -5) beat five (-6) and all six (-7).
    assert choose_threshold(scores, pnl, min_kept=4) == pytest.approx(0.55)
    # Nothing to gain: keep everything.
    assert choose_threshold(scores, np.abs(pnl), min_kept=1) == 0.0
    # Equal scores cannot be split.
    assert choose_threshold(np.array([0.5, 0.5, 0.2]), np.array([5.0, -10.0, 1.0]), min_kept=1) == 0.0
