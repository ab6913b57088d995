"""The strategy framework: per-symbol entry/exit hooks evaluated on each session's daily bar.

A strategy subclasses ``BaseStrategy``, implements the seeds' hooks ``should_enter_long``,
``should_enter_short`` and ``should_exit`` (and ``stop_price`` for a protective stop), and
registers itself (``workers.strategies.register``). The base class owns everything else:
orders go to the symbol's ``{SYM}_minute`` feed (a market order fills at the next minute
bar's open), the protective stop is placed once the entry has filled and cancelled before
a signalled exit, closed trades become ``TradeRecord``s, and every step is reported to the
journal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import backtrader as bt

from workers.feeds import feed_name
from workers.journal import Step, StepJournal
from workers.trades_db import TradeRecord

log = logging.getLogger(__name__)

STOP_EXIT = "stop"


def bt_time(num: float) -> datetime:
    """UTC-aware datetime of a Backtrader float date (exact for whole seconds)."""
    return bt.num2date(num).replace(tzinfo=UTC)


def _money(x: float) -> float:
    # Float noise such as 1180.0000000000068 is not money.
    return round(float(x), 6)


@dataclass
class _SymbolState:
    """Orders in flight and the open trade of one symbol."""

    entry_order: bt.Order | None = None
    exit_order: bt.Order | None = None
    stop_order: bt.Order | None = None
    direction: int = 0
    entry_time: datetime | None = None
    entry_price: float = 0.0
    contract: str = ""
    bars_held: int = 0
    exit_reason: str = ""
    exit_time: datetime | None = None
    exit_price: float = 0.0


class BaseStrategy(bt.Strategy):
    """Per-symbol hooks on daily bars, paper orders on minute feeds, trades to the journal."""

    # Framework parameters set by the engine, never from the config's ``params``.
    FRAMEWORK_PARAMS: ClassVar[frozenset[str]] = frozenset({"strategy_name", "sizes", "tick_sizes", "journal"})
    params = (
        ("strategy_name", ""),
        ("sizes", {}),
        ("tick_sizes", {}),
        ("journal", None),
    )

    def __init__(self) -> None:
        self.symbols: list[str] = list(self.p.sizes)
        self.minute = {s: self.getdatabyname(feed_name(s, "1min")) for s in self.symbols}
        self.hour = {s: self.getdatabyname(feed_name(s, "hourly")) for s in self.symbols}
        self.day = {s: self.getdatabyname(feed_name(s, "daily")) for s in self.symbols}
        self._state = {s: _SymbolState() for s in self.symbols}
        self._roles: dict[int, tuple[str, str]] = {}
        self._symbol_of = {id(self.minute[s]): s for s in self.symbols}
        self._day_seen = dict.fromkeys(self.symbols, 0)
        self._closed: list[TradeRecord] = []
        self.journal: StepJournal | None = self.p.journal

    # -- hooks ---------------------------------------------------------------------------
    def should_enter_long(self, symbol: str) -> bool:
        """Called on a new daily bar of a flat symbol; True buys ``size`` contracts."""
        return False

    def should_enter_short(self, symbol: str) -> bool:
        """Called on a new daily bar of a flat symbol when no long entry was signalled."""
        return False

    def should_exit(self, symbol: str) -> str | bool | None:
        """Called on a new daily bar of an open position; an exit reason (or True: ``signal``) closes it."""
        return None

    def stop_price(self, symbol: str, direction: int, entry_price: float) -> float | None:
        """Protective stop for a position just entered at ``entry_price`` (None: no stop)."""
        return None

    # -- helpers for strategies ----------------------------------------------------------
    def bars_held(self, symbol: str) -> int:
        """Daily bars seen since the entry of the open position of ``symbol``."""
        return self._state[symbol].bars_held

    def tick_size(self, symbol: str) -> float:
        """Minimum price increment of ``symbol`` (from the instrument spec)."""
        return float(self.p.tick_sizes[symbol])

    def position_size(self, symbol: str) -> int:
        """Contracts held in ``symbol`` (negative when short)."""
        data = self.minute[symbol]
        if not len(data):
            # Asking creates a broker position, and the broker then values it at a bar that does not exist.
            return 0
        return int(self.getposition(data).size)

    # -- Backtrader callbacks ------------------------------------------------------------
    def prenext(self) -> None:
        self._step()

    def next(self) -> None:
        self._step()

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Submitted, order.Accepted, order.Partial):
            return
        symbol, role = self._roles.pop(order.ref)
        st = self._state[symbol]
        if role == "entry":
            st.entry_order = None
        elif role == "exit":
            st.exit_order = None
        else:
            st.stop_order = None
        if order.status != order.Completed:
            if role != "stop" or order.status != order.Canceled:
                log.warning("%s %s order %s: %s", symbol, role, order.ref, order.getstatusname())
            return
        when = bt_time(order.executed.dt)
        if role == "entry":
            self._entered(symbol, order, when)
        else:
            st.exit_time = when
            st.exit_price = float(order.executed.price)
            if role == "stop":
                st.exit_reason = STOP_EXIT

    def notify_trade(self, trade: bt.Trade) -> None:
        if not trade.isclosed:
            return
        symbol = self._symbol_of[id(trade.data)]
        st = self._state[symbol]
        assert st.entry_time is not None and st.exit_time is not None
        self._closed.append(TradeRecord(
            strategy=self.p.strategy_name,
            symbol=symbol,
            contract=st.contract,
            direction="long" if st.direction > 0 else "short",
            size=abs(int(self.p.sizes[symbol])),
            entry_time=st.entry_time,
            entry_price=st.entry_price,
            exit_time=st.exit_time,
            exit_price=st.exit_price,
            pnl=_money(trade.pnl),
            commission=_money(trade.commission),
            net_pnl=_money(trade.pnlcomm),
            exit_reason=st.exit_reason,
            bars_held=st.bars_held,
        ))
        self._state[symbol] = _SymbolState()

    # -- internals -----------------------------------------------------------------------
    def _step(self) -> None:
        bars = [(d._name, meta) for d in self.datas for meta in d.take_delivered()]
        for symbol in self.symbols:
            n = len(self.day[symbol])
            if n > self._day_seen[symbol]:
                self._day_seen[symbol] = n
                self._on_daily(symbol)
        trades, self._closed = self._closed, []
        if self.journal is not None:
            positions = {s: size for s in self.symbols if (size := self.position_size(s))}
            self.journal.record(Step(bars=bars, trades=trades, positions=positions))

    def _on_daily(self, symbol: str) -> None:
        st = self._state[symbol]
        if st.entry_order is not None or st.exit_order is not None:
            return
        if self.position_size(symbol):
            st.bars_held += 1
            reason = self.should_exit(symbol)
            if reason:
                self._exit(symbol, reason if isinstance(reason, str) else "signal")
            return
        if not len(self.minute[symbol]):
            return  # an order needs a minute bar to be placed against
        if self.should_enter_long(symbol):
            self._enter(symbol, 1)
        elif self.should_enter_short(symbol):
            self._enter(symbol, -1)

    def _enter(self, symbol: str, direction: int) -> None:
        size = abs(int(self.p.sizes[symbol]))
        data = self.minute[symbol]
        order = self.buy(data=data, size=size) if direction > 0 else self.sell(data=data, size=size)
        st = self._state[symbol]
        st.entry_order = order
        st.direction = direction
        self._roles[order.ref] = (symbol, "entry")

    def _entered(self, symbol: str, order: bt.Order, when: datetime) -> None:
        st = self._state[symbol]
        st.entry_time = when
        st.entry_price = float(order.executed.price)
        meta = self.minute[symbol].current_meta()
        st.contract = meta.contract if meta is not None else ""
        st.bars_held = 0
        price = self.stop_price(symbol, st.direction, st.entry_price)
        if price is None:
            return
        data = self.minute[symbol]
        size = abs(order.executed.size)
        stop = (self.sell if st.direction > 0 else self.buy)(data=data, size=size, exectype=bt.Order.Stop, price=price)
        st.stop_order = stop
        self._roles[stop.ref] = (symbol, "stop")

    def _exit(self, symbol: str, reason: str) -> None:
        st = self._state[symbol]
        if st.stop_order is not None:
            self.cancel(st.stop_order)
        st.exit_reason = reason
        order = self.close(data=self.minute[symbol])
        st.exit_order = order
        self._roles[order.ref] = (symbol, "exit")
