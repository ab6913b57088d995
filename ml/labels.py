"""Labels: the outcome of every trade a strategy's signals opened over historical bars.

The strategy runs through ``workers.engine.run_backtest`` (the live worker's engine, paper
broker, commissions and slippage), one traded symbol at a time so that trades of other
symbols cannot change its cash or margin. Each closed trade is one sample: decided at the
end of the daily bar whose signal opened it, labelled 1 when its net P&L is positive.
Trades still open at the end of the history have no outcome and are not samples.

Limitation: only signals the un-vetoed strategy acted on are labelled; a signal that came
while it held a position (and that a veto might have freed it to take) has no label.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np
import pandas as pd

from pine.bars import Bar
from pine.config.schema import PineConfig
from workers.engine import run_backtest

LABEL_COLUMNS: Final = ("decision_time", "entry_time", "exit_time", "net_pnl", "label", "exit_reason")


def single_symbol_config(cfg: PineConfig, strategy: str, symbol: str) -> PineConfig:
    """``cfg`` with only ``strategy``, trading only ``symbol`` (with its configured settings, ML off)."""
    scfg = cfg.strategy(strategy)
    if symbol not in scfg.instruments:
        raise KeyError(f"{symbol} is not an instrument of strategy {strategy} ({', '.join(scfg.instruments)})")
    # Labels are the outcomes of every signal, unvetoed: the labelling backtest needs neither the
    # features nor their reference feeds (which the symbol's own bars do not include).
    inst = scfg.instruments[symbol].model_copy(update={"ml_enabled": False})
    only = scfg.model_copy(update={"instruments": {symbol: inst}})
    return cfg.model_copy(update={"strategies": {strategy: only}})


def label_trades(cfg: PineConfig, strategy: str, symbol: str, bars: Iterable[Bar]) -> pd.DataFrame:
    """One row per trade of ``strategy`` on ``symbol`` closed within ``bars`` (columns ``LABEL_COLUMNS``).

    ``bars`` are the symbol's minute, hourly and daily bars (orders fill on minute bars).
    ``decision_time`` is the end of the last daily bar before the entry fill: the bar whose
    signal placed the order (it fills on a later minute bar).
    """
    own = [b for b in bars if b.symbol == symbol]
    trades = run_backtest(single_symbol_config(cfg, strategy, symbol), strategy, own).trades
    frame = pd.DataFrame(
        {
            "entry_time": pd.to_datetime([t.entry_time for t in trades], utc=True),
            "exit_time": pd.to_datetime([t.exit_time for t in trades], utc=True),
            "net_pnl": np.array([t.net_pnl for t in trades], dtype=float),
            "exit_reason": [t.exit_reason for t in trades],
        }
    )
    daily_ends = pd.DatetimeIndex(sorted(b.end for b in own if b.timeframe == "daily"), tz="UTC").as_unit("ns")
    pos = np.searchsorted(daily_ends.asi8, frame["entry_time"].dt.as_unit("ns").astype("int64"), side="left") - 1
    if (pos < 0).any():
        raise ValueError(f"{strategy}/{symbol}: a trade entered before any daily bar had ended")
    frame["decision_time"] = daily_ends[pos]
    frame["label"] = (frame["net_pnl"] > 0).astype(int)
    return frame.loc[:, list(LABEL_COLUMNS)].sort_values("decision_time", kind="stable").reset_index(drop=True)
