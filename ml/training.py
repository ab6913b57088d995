"""Train one veto model per (strategy, symbol) from the bar caches.

Pipeline: labelled trades (``ml.labels``) joined with the features as of each decision
(``ml.features``, only bars ended by then); trades whose features were not all ready are
dropped, as the worker makes no decision until they are. The most recent
``heldout_fraction`` of the trades is held out (purged and embargoed); walk-forward folds
over the rest give out-of-fold scores, on which the threshold is chosen; the final model
is fitted on all training trades and judged on the held-out window.

Classifier: L2-regularised logistic regression on standardised features
(``StandardScaler`` → ``LogisticRegression``). A symbol has tens to a few hundred labelled
trades and about thirty tabular features: a linear model with strong shrinkage has far
less variance than trees or boosting, which overfit at this size; it is fitted by log
loss, so its scores are probability-like (roughly calibrated) and one threshold cuts them
meaningfully; it fits in milliseconds per fold and decides in microseconds in the worker;
and its coefficients can be read. Models are fitted on plain arrays in the order of the
feature list, which is stored with the model (signature, metadata) and checked at load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.features import CATALOG, REQUIRED_REFERENCES, FeatureSet, feature_frame, feature_set
from ml.history import BarHistory, frame_bars
from ml.labels import label_trades
from ml.metrics import VetoMetrics, choose_threshold, veto_metrics
from ml.registry import model_name
from ml.walk_forward import Split, heldout_split, walk_forward
from pine.bars import TIMEFRAMES
from pine.config.schema import MlConfig, PineConfig

CLASSIFIER = "StandardScaler+LogisticRegression(l2)"


class TrainingSkipped(Exception):
    """A symbol that cannot be trained (too few trades, one outcome only); the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Labelled trades with their features (``samples``, sorted by decision) of one strategy and symbol."""

    strategy: str
    symbol: str
    feature_set: FeatureSet
    samples: pd.DataFrame
    not_ready: int

    @property
    def features(self) -> list[str]:
        return self.feature_set.names


@dataclass
class TrainResult:
    """A fitted model with everything the registry logs about it."""

    strategy: str
    symbol: str
    model: Pipeline
    feature_set: FeatureSet
    threshold: float
    validation: VetoMetrics
    heldout_metrics: VetoMetrics
    heldout: pd.DataFrame
    dataset: Dataset
    split: Split
    folds: list[Split]
    train_window: tuple[pd.Timestamp, pd.Timestamp]
    heldout_window: tuple[pd.Timestamp, pd.Timestamp]
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return self.feature_set.names

    def trades(self) -> pd.DataFrame:
        """Every sample with its role: ``train``, ``heldout`` or ``purged`` (dropped before the held-out window)."""
        out = self.dataset.samples.copy()
        out["split"] = "purged"
        out.loc[out.index[self.split.train], "split"] = "train"
        out.loc[out.index[self.split.test], "split"] = "heldout"
        return out

    @property
    def model_name(self) -> str:
        return model_name(self.strategy, self.symbol)


def make_classifier(c: float) -> Pipeline:
    """The veto classifier (see the module docstring for why this one)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))


def scores(model: Pipeline, x: np.ndarray) -> np.ndarray:
    """Probability of a winning trade for each row of ``x``."""
    return model.predict_proba(x)[:, 1]


def ml_symbols(cfg: PineConfig, strategy: str) -> list[str]:
    """The instruments of ``strategy`` with ``ml_enabled: true``."""
    return [s for s, inst in cfg.strategy(strategy).instruments.items() if inst.ml_enabled]


def training_features(history: BarHistory, symbol: str) -> FeatureSet:
    """The features of ``symbol``: optional references count as present when their caches exist."""
    needs: dict[str, set[str]] = {}
    for d in CATALOG:
        if d.neutral is not None and d.root is not None:
            needs.setdefault(d.root, set()).add(d.timeframe)
    optional = {root for root, tfs in needs.items() if all(history.has(root, tf) for tf in tfs)}
    return feature_set(symbol, {*REQUIRED_REFERENCES, *optional})


def required_caches(history: BarHistory, symbol: str) -> list[tuple[str, str]]:
    """(root, timeframe) of every cache training ``symbol`` reads: its own bars and its features' sources."""
    return sorted({*((symbol, tf) for tf in TIMEFRAMES), *training_features(history, symbol).sources})


def build_dataset(cfg: PineConfig, strategy: str, symbol: str, history: BarHistory) -> Dataset:
    """Labelled trades of ``symbol`` with features at each decision; raises MissingHistoryError."""
    history.require(required_caches(history, symbol))
    fs = training_features(history, symbol)
    own = [b for tf in TIMEFRAMES for b in frame_bars(history.frame(symbol, tf))]
    labels = label_trades(cfg, strategy, symbol, own)
    feats = feature_frame(fs, {src: history.frame(*src) for src in fs.sources}, labels["decision_time"])
    samples = pd.concat([labels, feats.reset_index(drop=True)], axis=1)
    ready = samples[fs.names].notna().all(axis=1)
    return Dataset(strategy, symbol, fs, samples[ready].reset_index(drop=True), int((~ready).sum()))


def _both_outcomes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def train_symbol(cfg: PineConfig, strategy: str, symbol: str, history: BarHistory) -> TrainResult:
    """Train, validate and judge the veto model of ``symbol``; raises TrainingSkipped or MissingHistoryError."""
    settings: MlConfig = cfg.ml
    data = build_dataset(cfg, strategy, symbol, history)
    samples = data.samples
    if len(samples) < settings.min_trades:
        raise TrainingSkipped(
            f"{strategy}/{symbol}: {len(samples)} labelled trades with all features ready "
            f"(need {settings.min_trades}; {data.not_ready} more had features not ready)"
        )
    x = samples[data.features].to_numpy(dtype=float)
    y = samples["label"].to_numpy(dtype=int)
    pnl = samples["net_pnl"].to_numpy(dtype=float)
    embargo = pd.Timedelta(days=settings.embargo_days)
    hold = heldout_split(samples["decision_time"], samples["exit_time"], settings.heldout_fraction, embargo)
    train = hold.train
    if not _both_outcomes(y[train]):
        raise TrainingSkipped(f"{strategy}/{symbol}: the training trades have a single outcome")

    # Out-of-fold scores from expanding-window folds over the training trades only.
    tr = samples.iloc[train]
    folds = walk_forward(tr["decision_time"], tr["exit_time"], settings.folds, embargo)
    oof_idx: list[np.ndarray] = []
    oof_scores: list[np.ndarray] = []
    fold_metrics: dict[str, float] = {}
    for split in folds:
        fit_rows, test_rows = train[split.train], train[split.test]
        if not _both_outcomes(y[fit_rows]):
            continue  # nothing to learn from yet; its trades get no out-of-fold score
        model = make_classifier(settings.regularization_c).fit(x[fit_rows], y[fit_rows])
        s = scores(model, x[test_rows])
        oof_idx.append(test_rows)
        oof_scores.append(s)
        fold_metrics[f"fold{split.number}_train_trades"] = len(fit_rows)
        fold_metrics[f"fold{split.number}_dropped"] = split.dropped
        if _both_outcomes(y[test_rows]):
            fold_metrics[f"fold{split.number}_auc"] = float(roc_auc_score(y[test_rows], s))
    if not oof_idx:
        raise TrainingSkipped(f"{strategy}/{symbol}: no walk-forward fold had both winning and losing trades")
    val_rows, val_scores = np.concatenate(oof_idx), np.concatenate(oof_scores)
    threshold = choose_threshold(
        val_scores, pnl[val_rows], math.ceil(settings.min_kept_fraction * len(val_rows))
    )
    validation = veto_metrics(y[val_rows], pnl[val_rows], val_scores >= threshold)

    model = make_classifier(settings.regularization_c).fit(x[train], y[train])
    held = hold.test
    held_scores = scores(model, x[held])
    heldout_metrics = veto_metrics(y[held], pnl[held], held_scores >= threshold)

    metrics = {**validation.as_dict("val_"), **heldout_metrics.as_dict("heldout_"), **fold_metrics}
    if _both_outcomes(y[val_rows]):
        metrics["val_auc"] = float(roc_auc_score(y[val_rows], val_scores))
    if _both_outcomes(y[held]):
        metrics["heldout_auc"] = float(roc_auc_score(y[held], held_scores))
    decisions = samples["decision_time"]
    result = TrainResult(
        strategy=strategy,
        symbol=symbol,
        model=model,
        feature_set=data.feature_set,
        threshold=threshold,
        validation=validation,
        heldout_metrics=heldout_metrics,
        heldout=samples.iloc[held].reset_index(drop=True),
        dataset=data,
        split=hold,
        folds=folds,
        train_window=(decisions.iloc[train[0]], decisions.iloc[train[-1]]),
        heldout_window=(decisions.iloc[held[0]], decisions.iloc[held[-1]]),
        metrics=metrics,
    )
    result.params = {
        "strategy": strategy,
        "symbol": symbol,
        "classifier": CLASSIFIER,
        "regularization_c": settings.regularization_c,
        "folds": settings.folds,
        "embargo_days": settings.embargo_days,
        "heldout_fraction": settings.heldout_fraction,
        "min_kept_fraction": settings.min_kept_fraction,
        "threshold": threshold,
        "n_features": len(data.features),
        "trades_labelled": len(samples) + data.not_ready,
        "trades_not_ready": data.not_ready,
        "trades_train": len(train),
        "trades_heldout": len(held),
        "trades_purged_before_heldout": hold.dropped,
        "train_start": result.train_window[0].isoformat(),
        "train_end": result.train_window[1].isoformat(),
        "train_label_end": samples["exit_time"].iloc[train].max().isoformat(),
        "heldout_start": result.heldout_window[0].isoformat(),
        "heldout_end": result.heldout_window[1].isoformat(),
        "missing_feeds": ",".join(data.feature_set.missing_feeds) or "none",
        "sklearn_version": sklearn.__version__,
        **{f"strategy.{k}": v for k, v in sorted(cfg.strategy(strategy).params.items())},
    }
    return result

