"""Performance figures of closed trades, computed in SQL on the trades DB (daily summary and dashboard).

Win rate is the share of trades with a positive net P&L; profit factor is the sum of winning net
P&L over the (absolute) sum of losing net P&L, None when there is no loss. Best and worst are
single trades by net P&L; between equal P&Ls the earlier exit (then symbol, then strategy) wins, so
:func:`stats_by_strategy` (SQL, for one day's trades) and :class:`StatsAccumulator` (folded trade
by trade, for the dashboard's incremental totals over every trade) always agree.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TradeRef:
    """One trade named by strategy, symbol and exit time, with its net P&L."""

    strategy: str
    symbol: str
    exit_time: str
    net_pnl: float


def best_key(t: TradeRef) -> tuple[float, str, str, str]:
    """Sort key whose minimum is the best trade (highest P&L, then earliest exit, symbol, strategy)."""
    return -t.net_pnl, t.exit_time, t.symbol, t.strategy


def worst_key(t: TradeRef) -> tuple[float, str, str, str]:
    """Sort key whose minimum is the worst trade (lowest P&L, then earliest exit, symbol, strategy)."""
    return t.net_pnl, t.exit_time, t.symbol, t.strategy


@dataclass(frozen=True)
class TradeStats:
    """Figures of a set of closed trades (``None`` where there is nothing to compute)."""

    trades: int = 0
    wins: int = 0
    net_pnl: float = 0.0
    gross_profit: float = 0.0
    gross_loss: float = 0.0  # positive
    commission: float = 0.0
    best: TradeRef | None = None
    worst: TradeRef | None = None

    @property
    def win_rate(self) -> float | None:
        """Wins / trades."""
        return self.wins / self.trades if self.trades else None

    @property
    def profit_factor(self) -> float | None:
        """Gross profit / gross loss; None without a losing trade."""
        return self.gross_profit / self.gross_loss if self.gross_loss > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (rounded money, derived ratios included)."""
        return {
            "trades": self.trades, "wins": self.wins, "losses": self.trades - self.wins,
            "net_pnl": round(self.net_pnl, 2), "gross_profit": round(self.gross_profit, 2),
            "gross_loss": round(self.gross_loss, 2), "commission": round(self.commission, 2),
            "win_rate": None if self.win_rate is None else round(self.win_rate, 4),
            "profit_factor": None if self.profit_factor is None else round(self.profit_factor, 4),
            "best": None if self.best is None else self.best.__dict__,
            "worst": None if self.worst is None else self.worst.__dict__,
        }


def stats_by_strategy(conn: sqlite3.Connection, where: str = "1", args: tuple[Any, ...] = ()
                      ) -> tuple[TradeStats, dict[str, TradeStats]]:
    """(all strategies, per strategy) over the trades matching ``where`` (an SQL condition with ``args``)."""
    sums = conn.execute(
        f"""SELECT strategy, COUNT(*), SUM(net_pnl > 0), SUM(net_pnl),
                   SUM(CASE WHEN net_pnl > 0 THEN net_pnl ELSE 0 END),
                   SUM(CASE WHEN net_pnl < 0 THEN -net_pnl ELSE 0 END), SUM(commission)
            FROM trades WHERE {where} GROUP BY strategy ORDER BY strategy""", args).fetchall()
    best, worst = ({r[0]: TradeRef(*r) for r in conn.execute(
        f"""SELECT strategy, symbol, exit_time, net_pnl FROM (
                SELECT strategy, symbol, exit_time, net_pnl, ROW_NUMBER() OVER (
                    PARTITION BY strategy ORDER BY net_pnl {order}, exit_time, symbol) AS n
                FROM trades WHERE {where}) WHERE n = 1""", args)} for order in ("DESC", "ASC"))
    per = {
        s: TradeStats(trades=n, wins=int(w), net_pnl=float(net), gross_profit=float(gp), gross_loss=float(gl),
                      commission=float(c), best=best.get(s), worst=worst.get(s))
        for s, n, w, net, gp, gl, c in sums
    }
    total = TradeStats(
        trades=sum(p.trades for p in per.values()), wins=sum(p.wins for p in per.values()),
        net_pnl=sum(p.net_pnl for p in per.values()), gross_profit=sum(p.gross_profit for p in per.values()),
        gross_loss=sum(p.gross_loss for p in per.values()), commission=sum(p.commission for p in per.values()),
        best=min((p.best for p in per.values() if p.best), key=best_key, default=None),
        worst=min((p.worst for p in per.values() if p.worst), key=worst_key, default=None),
    )
    return total, per


@dataclass
class _Running:
    trades: int = 0
    wins: int = 0
    net: float = 0.0
    profit: float = 0.0
    loss: float = 0.0
    commission: float = 0.0
    best: TradeRef | None = None
    worst: TradeRef | None = None

    def add(self, ref: TradeRef, commission: float) -> None:
        self.trades += 1
        self.wins += ref.net_pnl > 0
        self.net += ref.net_pnl
        self.profit += max(ref.net_pnl, 0.0)
        self.loss += max(-ref.net_pnl, 0.0)
        self.commission += commission
        if self.best is None or best_key(ref) < best_key(self.best):
            self.best = ref
        if self.worst is None or worst_key(ref) < worst_key(self.worst):
            self.worst = ref

    def stats(self) -> TradeStats:
        return TradeStats(self.trades, self.wins, self.net, self.profit, self.loss, self.commission, self.best,
                          self.worst)


@dataclass
class StatsAccumulator:
    """The same figures as :func:`stats_by_strategy`, folded trade by trade (for incremental updates)."""

    _all: _Running = field(default_factory=_Running)
    _per: dict[str, _Running] = field(default_factory=dict)

    def add(self, strategy: str, symbol: str, exit_time: str, net_pnl: float, commission: float) -> None:
        """Count one closed trade."""
        ref = TradeRef(strategy, symbol, exit_time, float(net_pnl))
        self._all.add(ref, float(commission))
        self._per.setdefault(strategy, _Running()).add(ref, float(commission))

    def stats(self) -> tuple[TradeStats, dict[str, TradeStats]]:
        """(all strategies, per strategy)."""
        return self._all.stats(), {s: r.stats() for s, r in sorted(self._per.items())}
