"""`pine backtest` throughput next to plain Backtrader over the same bars, measured in one run.

    .venv/bin/python bench/backtest.py                  # the example breakout strategy, 30 synthetic days
    .venv/bin/python bench/backtest.py --days 10 --strategy breakout

Bars: a synthetic DBN market aggregated by the hub's code (``hub.history``), as `pine backtest`
reads them. "pine" is what `pine backtest` runs once the bars are loaded: the strategy class in
the engine's Cerebro (feeds per symbol and timeframe, paper broker, journal, order bookkeeping).
"plain" is a bare Backtrader Cerebro over the same bars (the stock PandasData feed, as a plain
Backtrader user would load them) with the same indicators and entry/exit rules written directly
against Backtrader. Pine's own feed reads plain lists (PandasData reads every cell with ``iloc``),
which is why Pine can come out ahead. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date
from pathlib import Path

import backtrader as bt
import pandas as pd

from hub.history import bars_from_archive
from hub.synthetic import write_synthetic_market
from pine.bars import Bar
from pine.config import load_config
from pine.contracts import load_contract_map
from workers.engine import backtest, resolve_strategy
from workers.feeds import FEED_TIMEFRAMES, ListFeedSet

REPO = Path(__file__).resolve().parents[1]


class PlainBreakout(bt.Strategy):
    """The breakout rules straight on Backtrader: Donchian entry on daily bars, channel exit, ATR stop."""

    params = (("symbols", ()), ("entry_period", 20), ("exit_period", 10), ("atr_period", 14), ("atr_stop", 2.0))

    def __init__(self) -> None:
        p = self.p
        self.day = {s: self.getdatabyname(f"{s}_day") for s in p.symbols}
        self.minute = {s: self.getdatabyname(f"{s}_minute") for s in p.symbols}
        self.upper = {s: bt.ind.Highest(self.day[s].high, period=p.entry_period) for s in p.symbols}
        self.lower = {s: bt.ind.Lowest(self.day[s].low, period=p.entry_period) for s in p.symbols}
        self.exit_upper = {s: bt.ind.Highest(self.day[s].high, period=p.exit_period) for s in p.symbols}
        self.exit_lower = {s: bt.ind.Lowest(self.day[s].low, period=p.exit_period) for s in p.symbols}
        self.atr = {s: bt.ind.SMA(bt.ind.TrueRange(self.day[s]), period=p.atr_period) for s in p.symbols}
        self.seen = dict.fromkeys(p.symbols, 0)
        self.trades = 0

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        for s in self.p.symbols:
            day = self.day[s]
            if len(day) == self.seen[s]:
                continue
            self.seen[s] = len(day)
            if len(day) <= self.p.entry_period or not len(self.minute[s]):
                continue
            close, pos = day.close[0], self.getposition(self.minute[s]).size
            if (pos > 0 and close < self.exit_lower[s][-1]) or (pos < 0 and close > self.exit_upper[s][-1]):
                self.close(data=self.minute[s])
            elif not pos and close > self.upper[s][-1]:
                self.buy(data=self.minute[s])
                self.sell(data=self.minute[s], exectype=bt.Order.Stop, price=close - self.p.atr_stop * self.atr[s][0])
            elif not pos and close < self.lower[s][-1]:
                self.sell(data=self.minute[s])
                self.buy(data=self.minute[s], exectype=bt.Order.Stop, price=close + self.p.atr_stop * self.atr[s][0])

    def notify_trade(self, trade: bt.Trade) -> None:
        self.trades += trade.isclosed


def bar_frame(bars: Sequence[Bar]) -> pd.DataFrame:
    """Bars of one series as the DataFrame a plain Backtrader user feeds to PandasData (index: end, naive UTC)."""
    return pd.DataFrame(
        {"open": [b.open for b in bars], "high": [b.high for b in bars], "low": [b.low for b in bars],
         "close": [b.close for b in bars], "volume": [float(b.volume) for b in bars]},
        index=pd.DatetimeIndex([b.end.astimezone(UTC).replace(tzinfo=None) for b in bars], name="datetime"),
    )


def plain_run(symbols: Sequence[str], params: dict[str, object], by_series: dict[tuple[str, str], list[Bar]], *,
              pine_feed: bool = False) -> int:
    """Bars through a bare Cerebro (PandasData feeds, or Pine's list feed); returns closed trades."""
    cerebro = bt.Cerebro(runonce=False, stdstats=False)
    lists = ListFeedSet([b for series in by_series.values() for b in series])
    for s in symbols:
        for tf, (suffix, timeframe, compression) in FEED_TIMEFRAMES.items():
            feed = lists.make_feed(s, tf) if pine_feed else bt.feeds.PandasData(
                dataname=bar_frame(by_series.get((s, tf), [])), timeframe=timeframe, compression=compression,
                openinterest=None)
            cerebro.adddata(feed, name=f"{s}_{suffix}")
    cerebro.addstrategy(PlainBreakout, symbols=tuple(symbols), **params)
    [strategy] = cerebro.run()
    return strategy.trades


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "data" / "config.multi_alpha.example.yml")
    parser.add_argument("--strategy", default="breakout", help="a breakout strategy of the config")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", default="2024-01-02")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    setup = resolve_strategy(cfg, args.strategy)
    if setup.config.strategy_type != "breakout":
        parser.error(f"--strategy must name a breakout strategy (the plain baseline implements its rules), "
                     f"got {setup.config.strategy_type}")
    symbols = setup.symbols
    with tempfile.TemporaryDirectory() as tmp:
        files = write_synthetic_market(Path(tmp), symbols, date.fromisoformat(args.start), args.days, args.seed,
                                       load_contract_map(cfg.contract_map_path))
        history = bars_from_archive(files, symbols, cfg.sessions.calendar())
    bars = [b for series in history.bars.values() for b in series]
    n = len(bars)
    print(f"{args.strategy}: {len(symbols)} symbols ({' '.join(symbols)}), {args.days} synthetic days, {n:,} bars "
          f"({sum(b.timeframe == '1min' for b in bars):,} minute bars), {len(symbols) * 3} feeds; best of {args.runs}")

    pine_best = plain_best = listed_best = float("inf")
    pine_trades = plain_trades = 0
    params = {k: v for k, v in setup.params.items() if k in ("entry_period", "exit_period", "atr_period", "atr_stop")}
    for _ in range(args.runs):
        started = time.perf_counter()
        run = backtest(cfg, args.strategy, bars)
        pine_best = min(pine_best, time.perf_counter() - started)
        pine_trades = len(run.journal.trades)
        started = time.perf_counter()
        plain_trades = plain_run(symbols, params, history.bars)
        plain_best = min(plain_best, time.perf_counter() - started)
        started = time.perf_counter()
        plain_run(symbols, params, history.bars, pine_feed=True)
        listed_best = min(listed_best, time.perf_counter() - started)
    print(f"  pine backtest      {n / pine_best:>10,.0f} bars/s  ({pine_best:.2f}s, {pine_trades} trades)")
    print(f"  plain Backtrader   {n / plain_best:>10,.0f} bars/s  ({plain_best:.2f}s, {plain_trades} trades)")
    print(f"  plain, Pine's feed {n / listed_best:>10,.0f} bars/s  ({listed_best:.2f}s)")
    print(f"  pine / plain time  {pine_best / plain_best:>10.2f}x; strategy layers alone (same feed) "
          f"{pine_best / listed_best:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
