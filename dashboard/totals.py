"""Figures over every trade, kept up to date incrementally: the page polls every few seconds, and a full
scan of 100k trades per poll would cost a hundred milliseconds or more each time.

Trades are only ever appended (``INSERT OR IGNORE``: a recorded trade is never changed), so the
totals of the rows up to a rowid stay valid; each refresh folds in the rows above the last one seen.
If the table shrank, or the row count disagrees with what was folded (a rebuilt or replaced DB),
everything is folded again from the start.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pine.trade_stats import StatsAccumulator


@dataclass
class _Day:
    trades: int = 0
    wins: int = 0
    net: float = 0.0
    strategies: dict[str, float] = field(default_factory=dict)


class TradeTotals:
    """Metrics (all and per strategy) and P&L per trading day of one trades DB; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        self._identity = identity
        self._rowid = 0
        self._count = 0
        self._acc = StatsAccumulator()
        self._days: dict[str, _Day] = {}

    def refresh(self, conn: sqlite3.Connection, path: Path) -> None:
        """Fold in the trades recorded since the last refresh."""
        st = os.stat(path)
        identity = (st.st_dev, st.st_ino)
        with self._lock:
            count, top = conn.execute("SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM trades").fetchone()
            if identity != self._identity or top < self._rowid or count < self._count:
                self._reset(identity)
            self._fold(conn)
            if self._count != count:  # rows changed below the last rowid seen: start again
                self._reset(identity)
                self._fold(conn)

    def _fold(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT rowid, strategy, symbol, exit_time, net_pnl, commission, trading_day FROM trades "
                            "WHERE rowid > ? ORDER BY rowid", (self._rowid,))
        for rowid, strategy, symbol, exit_time, net, commission, day in rows:
            self._acc.add(strategy, symbol, exit_time, net, commission)
            d = self._days.setdefault(day, _Day())
            d.trades += 1
            d.wins += net > 0
            d.net += net
            d.strategies[strategy] = d.strategies.get(strategy, 0.0) + net
            self._rowid = rowid
            self._count += 1

    def metrics(self) -> dict[str, Any]:
        """``{"all": …, "strategies": {name: …}}`` (``pine.trade_stats.TradeStats.to_dict`` each)."""
        with self._lock:
            total, per = self._acc.stats()
        return {"all": total.to_dict() if total.trades else None,
                "strategies": {s: v.to_dict() for s, v in per.items()}}

    def strategies(self) -> list[str]:
        """Strategies with at least one trade."""
        with self._lock:
            return list(self._acc.stats()[1])

    def days(self) -> list[dict[str, Any]]:
        """Per trading day, oldest first: trades, wins, net P&L, running total and net P&L per strategy."""
        with self._lock:
            items = sorted(self._days.items())
        out, total = [], 0.0
        for day, d in items:
            total += d.net
            out.append({"trading_day": day, "trades": d.trades, "wins": d.wins, "net_pnl": round(d.net, 2),
                        "cumulative": round(total, 2),
                        "strategies": {s: round(v, 2) for s, v in sorted(d.strategies.items())}})
        return out
