"""The records of trading that cross rooms: closed trades, fills and open positions.

Workers write them to the trades DB (``workers.trades_db``); notifications, reconciliation and
backtests read them. They live in ``pine`` because ``pine`` never imports the workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One closed trade. Times are UTC-aware; ``pnl`` is gross, in the contract currency.

    Equality is the trade's economics (what live/backtest parity is about); the annotations
    after ``bars_held`` (order ids, requested prices, tags, price extremes, ML) are not compared.
    """

    strategy: str
    symbol: str
    contract: str
    direction: str
    size: int
    entry_time: datetime
    entry_price: float
    exit_time: datetime
    exit_price: float
    pnl: float
    commission: float
    net_pnl: float
    exit_reason: str
    bars_held: int
    entry_order_id: str | None = field(default=None, compare=False)
    exit_order_id: str | None = field(default=None, compare=False)
    entry_requested_price: float | None = field(default=None, compare=False)
    exit_requested_price: float | None = field(default=None, compare=False)
    entry_tag: str | None = field(default=None, compare=False)
    best_price: float | None = field(default=None, compare=False)
    worst_price: float | None = field(default=None, compare=False)
    ml_score: float | None = field(default=None, compare=False)
    ml_model_version: str | None = field(default=None, compare=False)

    @property
    def trade_id(self) -> str:
        """``strategy:symbol:entry time``: the same trade recorded twice is one row."""
        return f"{self.strategy}:{self.symbol}:{self.entry_time.isoformat()}"


@dataclass(frozen=True, slots=True)
class FillRecord:
    """An executed order. ``source`` is ``paper`` (the paper broker is the execution) or ``model``
    (a webhook broker reports no fills: the fill is the paper model of the order that was sent)."""

    client_order_id: str
    strategy: str
    symbol: str
    contract: str
    role: str
    side: str
    quantity: int
    requested_price: float | None
    fill_price: float
    commission: float
    fill_time: datetime
    source: str


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """An open position as the strategy holds it: enough to restore it after a restart."""

    strategy: str
    symbol: str
    contract: str
    direction: str
    size: int
    entry_time: datetime
    entry_price: float
    entry_order_id: str | None
    entry_requested_price: float | None
    entry_tag: str | None
    stop_price: float | None
    bars_held: int
    best_price: float
    worst_price: float
