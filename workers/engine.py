"""Build the Cerebro of one configured strategy from config and feeds.

The live worker (feeds from Redis streams) and direct backtests (feeds from DataFrames)
both go through ``build_cerebro``, so feed order, broker, commissions, slippage and
strategy parameters cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import backtrader as bt

from pine.bars import Bar
from pine.config.schema import PineConfig, StrategyConfig
from workers.execution import Execution
from workers.feeds import FEED_TIMEFRAMES, FeedFactory, FrameFeedSet, feed_name
from workers.journal import MemoryJournal, StepJournal
from workers.paper_broker import paper_broker
from workers.strategies import BaseStrategy, UnknownStrategyTypeError, strategy_class


class StrategySetupError(ValueError):
    """A strategy that cannot be run as configured; the message says what and what is known."""


@dataclass(frozen=True)
class StrategySetup:
    """A configured strategy resolved to its class and parameters."""

    name: str
    config: StrategyConfig
    cls: type[BaseStrategy]
    params: dict[str, Any]

    @property
    def symbols(self) -> list[str]:
        """The strategy's instruments, in config order (the order of its feeds)."""
        return list(self.config.instruments)


def resolve_strategy(cfg: PineConfig, name: str) -> StrategySetup:
    """Look up strategy ``name``, its registered class and its parameters (defaults from the class)."""
    try:
        scfg = cfg.strategy(name)
    except KeyError as exc:
        raise StrategySetupError(str(exc.args[0])) from None
    try:
        cls = strategy_class(scfg.strategy_type)
    except UnknownStrategyTypeError as exc:
        raise StrategySetupError(f"strategies.{name}.strategy_type: {exc}") from None
    allowed = set(cls.params._getkeys()) - BaseStrategy.FRAMEWORK_PARAMS
    unknown = sorted(set(scfg.params) - allowed)
    if unknown:
        raise StrategySetupError(
            f"strategies.{name}.params: unknown parameter(s) {', '.join(unknown)} for strategy_type "
            f"{scfg.strategy_type!r}; known: {', '.join(sorted(allowed))}"
        )
    return StrategySetup(name=name, config=scfg, cls=cls, params=dict(scfg.params))


def build_cerebro(cfg: PineConfig, setup: StrategySetup, make_feed: FeedFactory, journal: StepJournal,
                  execution: Execution | None = None) -> bt.Cerebro:
    """A Cerebro with the strategy's feeds (minute, hour, day per symbol), paper broker and strategy.

    With an ``execution`` (live workers) every order goes through it; without (backtests) all are placed.
    """
    cerebro = bt.Cerebro(runonce=False, stdstats=False)
    for symbol in setup.symbols:
        for timeframe in FEED_TIMEFRAMES:
            cerebro.adddata(make_feed(symbol, timeframe), name=feed_name(symbol, timeframe))
    cerebro.broker = paper_broker(cfg, setup.config, {s: feed_name(s, "1min") for s in setup.symbols})
    cerebro.addstrategy(
        setup.cls,
        strategy_name=setup.name,
        sizes={s: inst.size for s, inst in setup.config.instruments.items()},
        tick_sizes={s: cfg.instruments[s].tick_size for s in setup.symbols},
        journal=journal,
        execution=execution,
        **setup.params,
    )
    return cerebro


def run_backtest(cfg: PineConfig, name: str, bars: Iterable[Bar]) -> MemoryJournal:
    """Run strategy ``name`` directly on ``bars`` (non-live DataFrame feeds); the journal holds its trades."""
    setup = resolve_strategy(cfg, name)
    journal = MemoryJournal()
    feeds = FrameFeedSet(bars)
    build_cerebro(cfg, setup, feeds.make_feed, journal).run()
    return journal
