"""What a veto does to a set of trades: precision, profit factor and P&L of kept versus vetoed trades."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def profit_factor(pnl: np.ndarray) -> float:
    """Gross profit / gross loss; inf with profits and no loss, NaN with neither."""
    gains = float(pnl[pnl > 0].sum())
    losses = float(-pnl[pnl < 0].sum())
    if losses == 0:
        return math.inf if gains > 0 else math.nan
    return gains / losses


def _win_rate(label: np.ndarray) -> float:
    return float(label.mean()) if len(label) else math.nan


@dataclass(frozen=True)
class VetoMetrics:
    """Counts, win rates, profit factors and net P&L of all, kept and vetoed trades.

    ``precision`` is the win rate of the kept trades (the precision of "take" as a
    prediction of a winning trade); ``base_rate`` the win rate of all trades.
    """

    trades: int
    kept: int
    vetoed: int
    precision: float
    base_rate: float
    pnl_all: float
    pnl_kept: float
    pnl_vetoed: float
    pf_all: float
    pf_kept: float
    pf_vetoed: float

    def metric(self, name: str) -> float:
        """The promotion metric ``name`` (``pnl``, ``profit_factor`` or ``precision``) of the kept trades."""
        return {"pnl": self.pnl_kept, "profit_factor": self.pf_kept, "precision": self.precision}[name]

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Finite values only (MLflow metrics must be numbers; an undefined ratio is left out)."""
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items() if math.isfinite(v)}


def veto_metrics(label: np.ndarray, pnl: np.ndarray, take: np.ndarray) -> VetoMetrics:
    """Metrics of trades with outcome ``label`` (1 = win) and net ``pnl`` when only ``take`` ones are kept."""
    label, pnl, take = np.asarray(label), np.asarray(pnl, dtype=float), np.asarray(take, dtype=bool)
    return VetoMetrics(
        trades=len(pnl),
        kept=int(take.sum()),
        vetoed=int((~take).sum()),
        precision=_win_rate(label[take]),
        base_rate=_win_rate(label),
        pnl_all=float(pnl.sum()),
        pnl_kept=float(pnl[take].sum()),
        pnl_vetoed=float(pnl[~take].sum()),
        pf_all=profit_factor(pnl),
        pf_kept=profit_factor(pnl[take]),
        pf_vetoed=profit_factor(pnl[~take]),
    )


def choose_threshold(scores: np.ndarray, pnl: np.ndarray, min_kept: int) -> float:
    """The score threshold (take when score >= threshold) maximising the net P&L of the kept trades.

    At least ``min_kept`` trades must be kept. The threshold sits halfway between the lowest
    kept and the highest vetoed score, so that a model refitted on more data, whose scores
    move a little, keeps the same trades; ties go to the lower threshold (the veto keeps more).
    """
    scores, pnl = np.asarray(scores, dtype=float), np.asarray(pnl, dtype=float)
    if len(scores) == 0:
        raise ValueError("no validation scores to choose a threshold from")
    order = np.argsort(-scores, kind="stable")
    s, kept_pnl = scores[order], np.cumsum(pnl[order])
    best_k, best = len(s), kept_pnl[-1]
    for k in range(len(s) - 1, max(min_kept, 1) - 1, -1):
        # Keeping the top k is only possible where the k-th and (k+1)-th scores differ.
        if s[k - 1] > s[k] and kept_pnl[k - 1] > best:
            best_k, best = k, kept_pnl[k - 1]
    if best_k == len(s):
        return 0.0
    return float((s[best_k - 1] + s[best_k]) / 2)
