"""A backtest over a window, set up as a live worker started at the window's start would be.

The worker that starts at instant ``start`` warms up on the history before it (the same
lookbacks and compression, ``workers.warmup.select_warmup``) and trades every bar after it;
this runs the same strategy class in the same Cerebro (``workers.engine``) over the same bars
with the paper broker, so its trades equal the live worker's over those bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pine.bars import Bar
from pine.config.schema import PineConfig
from workers.engine import BacktestRun, backtest, resolve_strategy
from workers.warmup import COMPRESSION_TIMEFRAMES, select_warmup


def series_needed(cfg: PineConfig, name: str) -> list[tuple[str, str]]:
    """(root, timeframe) of every bar series a backtest of strategy ``name`` reads (minute: traded symbols)."""
    setup = resolve_strategy(cfg, name)
    layout = setup.layout(cfg.instruments)
    return [(root, tf) for root in layout.roots for tf in COMPRESSION_TIMEFRAMES["1min"]
            if tf != "1min" or root in layout.symbols]


def backtest_window(cfg: PineConfig, name: str, series: Mapping[tuple[str, str], Sequence[Bar]], start: datetime,
                    end: datetime, **replayed: Any) -> BacktestRun:
    """Trade strategy ``name`` on the bars ending in (``start``, ``end``] after a warmup on those before.

    ``series`` maps (root, timeframe) to time-ordered bars; bars of timeframes the strategy's
    warmup compression leaves out are used only after ``start``, as a live worker would.
    ``replayed``: a live run's recorded decisions (``refused``, ``ml_decisions``; see ``engine.backtest``).
    """
    scfg = cfg.strategy(name)
    warm_tfs = COMPRESSION_TIMEFRAMES[scfg.historical_warmup_compression]
    warm = select_warmup({k: v for k, v in series.items() if k[1] in warm_tfs}, scfg, start)
    bars: list[Bar] = [b for k in sorted(warm) for b in warm[k]]
    bars += [b for k in sorted(series) for b in series[k] if start < b.end <= end]
    return backtest(cfg, name, bars, warmup_until=start, **replayed)
