"""``pine backtest --strategy NAME --from DAY --to DAY``: the live strategy over history, with the paper broker.

Portfolio-wide limits (the coordinator's ``max_positions`` and daily stop, shared with other
workers) and the killswitch are not simulated: where they refused a live order, the backtest trades.

Bars come from the parquet caches (``pine warmup build``) when they cover the window, else from
the DBN archive through the hub's aggregator (``hub.history``) — the bars a live worker sees.
The run is set up as a worker started at the session start of ``--from`` (``workers.backtest``),
so its trades equal what such a worker traded over the same bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from hub.history import HistoryError, archive_files, bars_from_archive, parse_when, select_files
from pine.bar_cache import BarCacheError, cache_path, complete_through, read_bar_list
from pine.bars import Bar
from pine.config.schema import PineConfig
from pine.trade_records import TradeRecord
from workers.backtest import backtest_window, series_needed
from workers.engine import BacktestRun, StrategySetupError

Series = dict[tuple[str, str], list[Bar]]


def history_start(cfg: PineConfig, name: str, start: datetime) -> datetime:
    """How far before ``start`` the warmup reaches (daily bars: about 7 calendar days per 5, plus holidays)."""
    warm = cfg.strategy(name).warmup
    days = max(warm.daily_bars * 7 // 5 + 30, warm.hourly_days + 1, warm.minute_days + 1)
    return start - timedelta(days=days)


def cached_series(cfg: PineConfig, needed: Sequence[tuple[str, str]], end: datetime) -> Series | str:
    """The needed series from the caches, or why they cannot serve (missing, or not reaching ``end``)."""
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    out: Series = {}
    for root, tf in needed:
        path = cache_path(cache_dir, root, tf)
        if not path.exists():
            return f"no cache {path}"
        try:
            through = complete_through(path)
            bars = read_bar_list(path)
        except BarCacheError as exc:
            return str(exc)
        if (through or (bars[-1].end if bars else None) or end) < end:
            return f"{path} ends at {through}, before {end.isoformat()}"
        out[(root, tf)] = bars
    return out


def archive_series(cfg: PineConfig, needed: Sequence[tuple[str, str]], since: datetime, end: datetime,
                   archive: Sequence[Path]) -> Series:
    """The needed series aggregated from the DBN archive, complete through ``end``."""
    files = select_files(archive_files(list(archive) or [cfg.runtime_path(cfg.warmup.archive_dir)]), since)
    roots = sorted({r for r, _ in needed})
    history = bars_from_archive(files, roots, cfg.sessions.calendar(), through=end)
    return {key: history.bars.get(key, []) for key in needed}


def trade_dict(t: TradeRecord) -> dict[str, object]:
    """A trade as plain JSON values (times ISO 8601)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dataclasses.asdict(t).items()}


def report(run: BacktestRun, name: str, bars: int, seconds: float) -> str:
    """Trades table and totals."""
    trades = run.journal.trades
    lines = [f"{'symbol':<6} {'dir':<5} {'entry (UTC)':<19} {'entry':>12} {'exit (UTC)':<19} {'exit':>12} "
             f"{'net P&L':>11}  reason"]
    for t in trades:
        lines.append(f"{t.symbol:<6} {t.direction:<5} {t.entry_time:%Y-%m-%d %H:%M:%S} {t.entry_price:>12g} "
                     f"{t.exit_time:%Y-%m-%d %H:%M:%S} {t.exit_price:>12g} {t.net_pnl:>11,.2f}  {t.exit_reason}")
    net = sum(t.net_pnl for t in trades)
    wins = sum(t.net_pnl > 0 for t in trades)
    lines.append(f"{name}: {len(trades)} trades, {wins} winners, net P&L {net:,.2f}; open at the end: "
                 f"{run.journal.stats.positions or 'none'}; {bars:,} bars in {seconds:.1f}s "
                 f"({bars / seconds if seconds else 0:,.0f} bars/s)")
    if run.layout.missing:
        lines.append(f"missing optional reference feeds (neutral defaults): {' '.join(run.layout.missing_feeds)}")
    return "\n".join(lines)


def backtest_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """0 after the report; 1 when history is missing; 2 on bad arguments."""
    calendar = cfg.sessions.calendar()
    try:
        needed = series_needed(cfg, args.strategy)
        start = parse_when(args.since, calendar, end=False)
        end = parse_when(args.to, calendar, end=True)
    except (StrategySetupError, KeyError, HistoryError) as exc:
        print(f"pine backtest: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 2
    if end <= start:
        print(f"pine backtest: --to ({end.isoformat()}) must be after --from ({start.isoformat()})", file=sys.stderr)
        return 2
    series: Series | str = "--source archive" if args.source == "archive" else cached_series(cfg, needed, end)
    if isinstance(series, str):
        if args.source == "cache":
            print(f"pine backtest: the caches cannot serve this window: {series}", file=sys.stderr)
            return 1
        try:
            series = archive_series(cfg, needed, history_start(cfg, args.strategy, start), end, args.archive or ())
        except HistoryError as exc:
            print(f"pine backtest: {exc}", file=sys.stderr)
            return 1
    started = time.perf_counter()
    try:
        run = backtest_window(cfg, args.strategy, series, start, end)
    except StrategySetupError as exc:
        print(f"pine backtest: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - started
    stats = run.journal.stats
    bars = sum(stats.bars.values()) + sum(stats.warmup_bars.values())
    if args.json:
        for t in run.journal.trades:
            print(json.dumps(trade_dict(t)))
    else:
        print(report(run, args.strategy, bars, seconds))
    return 0
