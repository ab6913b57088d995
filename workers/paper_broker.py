"""The paper broker: Backtrader's BackBroker with futures commissions and per-instrument tick slippage.

Fills are deterministic, which is what lets a restarted worker rebuild its paper positions
by replaying bars. Market orders fill at the open of the next bar of the order's feed; stop
orders at their trigger price (or the open when the bar gaps through it). Every fill slips
``slippage_ticks × tick_size`` against the trader, even outside the bar's range.

In a live worker this book is also the model of a webhook broker's fills. Two hooks serve the
order path: ``stop_gate`` is asked before a triggered stop executes (the killswitch may hold it,
and a webhook broker must be sent the exit first), and ``restore_position`` puts a position
restored from the trades DB into the book at its recorded entry price.
"""

from __future__ import annotations

from collections.abc import Callable

import backtrader as bt

from pine.config.schema import PineConfig, StrategyConfig


class PaperBroker(bt.brokers.BackBroker):
    """BackBroker whose slippage depends on the instrument of the order's feed."""

    params = (("slip_open", True),)

    def __init__(self) -> None:
        super().__init__()
        self._slippage: dict[str, float] = {}
        self._slip = 0.0
        # Asked before a stop that this bar triggers executes; False leaves it waiting for the next bar.
        self.stop_gate: Callable[[bt.Order], bool] | None = None

    def set_slippage(self, feed_name: str, amount: float) -> None:
        """Price units every fill on ``feed_name`` moves against the trader."""
        self._slippage[feed_name] = amount

    def _try_exec(self, order: bt.Order) -> None:
        # Only a bar after the order's creation can fill it; BackBroker checks that for market
        # orders only, and would test a new stop against the bar it was placed on.
        if order.data.datetime[0] <= order.created.dt:
            return
        if (order.exectype == bt.Order.Stop and self.stop_gate is not None and _stop_triggers(order)
                and not self.stop_gate(order)):
            return
        self._slip = self._slippage.get(order.data._name, 0.0)
        super()._try_exec(order)

    def restore_position(self, owner: bt.Strategy, data: bt.feed.DataBase, size: int, price: float) -> bt.Order:
        """Open ``size`` contracts (negative: short) on ``data`` at ``price`` now, without slippage.

        The order executes at once (the position exists when this returns, so the strategy can
        manage it in the same step); Backtrader notifies it like any order, which opens its Trade
        and charges the entry commission the position paid when it was really opened.
        """
        order = (self.buy if size > 0 else self.sell)(owner, data, abs(size), price=price,
                                                      exectype=bt.Order.Market, _checksubmit=False)
        self.pending.remove(order)
        self._execute(order, ago=0, price=price)
        return order

    # Rounded so that a fill is 77.9, not 77.89999999999999 (prices have at most ~7 decimals).
    def _slip_up(self, pmax: float, price: float, doslip: bool = True, lim: bool = False) -> float:
        return round(price + self._slip, 10) if doslip else price

    def _slip_down(self, pmin: float, price: float, doslip: bool = True, lim: bool = False) -> float:
        return round(price - self._slip, 10) if doslip else price


def _stop_triggers(order: bt.Order) -> bool:
    """Whether the current bar of the order's feed reaches a stop order's trigger price."""
    data, trigger = order.data, order.created.price
    if order.isbuy():
        return bool(data.open[0] >= trigger or data.high[0] >= trigger)
    return bool(data.open[0] <= trigger or data.low[0] <= trigger)


def futures_comminfo(commission: float, multiplier: float, margin: float) -> bt.CommInfoBase:
    """Fixed commission per contract per side, P&L × multiplier, cash margin per contract."""
    return bt.CommInfoBase(
        commission=commission,
        commtype=bt.CommInfoBase.COMM_FIXED,
        stocklike=False,
        mult=multiplier,
        margin=margin or None,
    )


def paper_broker(cfg: PineConfig, strategy: StrategyConfig, feeds_by_symbol: dict[str, str]) -> PaperBroker:
    """A paper broker for ``strategy``; ``feeds_by_symbol`` maps each symbol to its order feed name."""
    broker = PaperBroker()
    broker.setcash(strategy.starting_cash or cfg.portfolio.starting_cash)
    for symbol, feed in feeds_by_symbol.items():
        spec = cfg.instruments[symbol]
        inst = strategy.instruments[symbol]
        commission = inst.commission if inst.commission is not None else spec.commission
        ticks = inst.slippage_ticks if inst.slippage_ticks is not None else strategy.slippage_ticks
        broker.addcommissioninfo(futures_comminfo(commission, spec.multiplier, spec.margin), name=feed)
        broker.set_slippage(feed, ticks * spec.tick_size)
    return broker
