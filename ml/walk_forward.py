"""Walk-forward splits of time-ordered trades, purged and embargoed.

A sample is a trade: decided at ``decision_time``, its label known at ``exit_time``. A
training sample is kept for a test window only when its label was known ``embargo``
before the window's first decision (purge: its horizon cannot overlap the window; embargo:
a further gap, against serial correlation around the boundary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """Positional indices of training and test samples; ``dropped`` training samples were purged/embargoed."""

    number: int
    train: np.ndarray
    test: np.ndarray
    dropped: int


def _times(values: pd.Series) -> np.ndarray:
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def _purged(candidates: np.ndarray, exit_ns: np.ndarray, test_start_ns: int, embargo: pd.Timedelta) -> np.ndarray:
    return candidates[exit_ns[candidates] < test_start_ns - embargo.value]


def walk_forward(decision: pd.Series, exit_: pd.Series, folds: int, embargo: pd.Timedelta) -> list[Split]:
    """Expanding-window folds: the samples in ``folds + 1`` time blocks; fold k tests block k on blocks before it.

    Samples must be sorted by decision time.
    """
    dec, ext = _times(decision), _times(exit_)
    if np.any(np.diff(dec) < 0):
        raise ValueError("samples must be sorted by decision time")
    if len(dec) < folds + 1:
        raise ValueError(f"{len(dec)} samples cannot make {folds} walk-forward folds")
    blocks = np.array_split(np.arange(len(dec)), folds + 1)
    splits = []
    for k in range(1, folds + 1):
        test = blocks[k]
        before = np.concatenate(blocks[:k])
        train = _purged(before, ext, int(dec[test[0]]), embargo)
        splits.append(Split(k, train, test, len(before) - len(train)))
    return splits


def heldout_split(decision: pd.Series, exit_: pd.Series, fraction: float, embargo: pd.Timedelta) -> Split:
    """The most recent ``fraction`` of the samples as the held-out window, the rest (purged) for training."""
    dec, ext = _times(decision), _times(exit_)
    n_test = max(1, round(len(dec) * fraction))
    if n_test >= len(dec):
        raise ValueError(f"{len(dec)} samples are too few to hold out {fraction:.0%}")
    test = np.arange(len(dec) - n_test, len(dec))
    before = np.arange(len(dec) - n_test)
    train = _purged(before, ext, int(dec[test[0]]), embargo)
    return Split(0, train, test, len(before) - len(train))
