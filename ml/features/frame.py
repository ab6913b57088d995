"""Vectorised feature evaluation (training): every feature as of given instants, from bar DataFrames.

A value at instant ``t`` uses only bars whose ``end`` is at or before ``t``: the bars that
had ended when a decision at ``t`` was made. Reference series are joined as of ``t``, so a
reference that had no bar in a session contributes its previous value, as in the worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ml.features.catalog import FeatureSet, MissingFeedError


def _epoch_ns(values: pd.Series | pd.DatetimeIndex | Sequence[pd.Timestamp]) -> np.ndarray:
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        raise ValueError("feature instants and bar ends must be timezone-aware (UTC)")
    return index.as_unit("ns").asi8


def feature_frame(
    fs: FeatureSet, bars: Mapping[tuple[str, str], pd.DataFrame], at: Sequence[pd.Timestamp] | pd.DatetimeIndex
) -> pd.DataFrame:
    """Feature values (columns ``fs.names``) as of each instant of ``at`` (the index); NaN until ready.

    ``bars`` maps (root, timeframe) to a frame in the bar-cache layout (``end``, ``high``,
    ``low``, ``close``); features of absent optional feeds take their neutral default.
    """
    index = pd.DatetimeIndex(at)
    at_ns = _epoch_ns(index)
    columns: dict[str, np.ndarray] = {}
    positions: dict[tuple[str, str], np.ndarray] = {}
    ordered: dict[tuple[str, str], pd.DataFrame] = {}
    for f in fs.features:
        if f.missing:
            columns[f.name] = np.full(len(index), f.neutral, dtype=float)
            continue
        if f.source not in ordered:
            try:
                frame = bars[f.source]
            except KeyError:
                raise MissingFeedError(f"{fs.symbol}: no {f.feed} bars for feature {f.name}") from None
            frame = frame.sort_values("end", kind="stable").reset_index(drop=True)
            ordered[f.source] = frame
            # Index of the last bar ended at or before each instant (-1: none yet).
            positions[f.source] = np.searchsorted(_epoch_ns(frame["end"]), at_ns, side="right") - 1
        frame, pos = ordered[f.source], positions[f.source]
        values = f.op.series(
            frame["high"].astype(float), frame["low"].astype(float), frame["close"].astype(float)
        ).to_numpy(dtype=float)
        # A trailing NaN stands for "no bar yet" (position -1), so an empty series needs no special case.
        padded = np.append(values, np.nan)
        columns[f.name] = padded[pos]
    return pd.DataFrame(columns, index=index, columns=fs.names)
