"""Build the Cerebro of one configured strategy from config and feeds.

The live worker (feeds from Redis streams) and direct backtests (feeds from bar lists)
both go through ``build_cerebro``, so feed order (``workers.references``), broker,
commissions, slippage and strategy parameters cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import backtrader as bt

from pine.bars import Bar
from pine.config.schema import PineConfig, ReferenceFeedsConfig, StrategyConfig
from workers.execution import Execution
from workers.feeds import FeedFactory, ListFeedSet, feed_name
from workers.journal import MemoryJournal, StepJournal
from workers.ml_veto import DecisionAudit, MlVeto
from workers.paper_broker import paper_broker
from workers.references import FeedLayout, layout_for
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
    references: ReferenceFeedsConfig = field(default_factory=ReferenceFeedsConfig)

    @property
    def symbols(self) -> list[str]:
        """The strategy's instruments, in config order (the order of its feeds)."""
        return list(self.config.instruments)

    @property
    def ml_symbols(self) -> list[str]:
        """Instruments with ``ml_enabled``, in config order."""
        return [s for s, inst in self.config.instruments.items() if inst.ml_enabled]

    def layout(self, available: Collection[str]) -> FeedLayout:
        """The strategy's feeds when the roots in ``available`` can have feeds; StrategySetupError names
        a required reference root that cannot."""
        try:
            return layout_for(self.symbols, self.references.required, self.references.optional, available)
        except LookupError as exc:
            raise StrategySetupError(f"strategies.{self.name}.reference_feeds: {exc}") from None


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
    try:
        cls.check_params(scfg.params)
    except ValueError as exc:
        raise StrategySetupError(f"strategies.{name}.params: {exc}") from None
    references = scfg.reference_feeds or cls.default_reference_feeds(scfg)
    try:
        cls.check_references(scfg, references)
    except ValueError as exc:
        raise StrategySetupError(f"strategies.{name}.reference_feeds: {exc}") from None
    setup = StrategySetup(name=name, config=scfg, cls=cls, params=dict(scfg.params), references=references)
    # Only configured instruments are published by the hub: a required root outside them can never have a feed.
    setup.layout(cfg.instruments)
    return setup


def ml_veto(setup: StrategySetup, layout: FeedLayout, runtime_dir: Path | None = None,
            audit: DecisionAudit | None = None) -> MlVeto | None:
    """The strategy's ML veto (feature tracker, no models loaded yet), or None without ML-enabled instruments.

    ``audit`` (the worker's trades DB): replayed signals take the decision recorded on them.

    Raises ``workers.ml_veto.MlSetupError`` naming a feed the features need that ``layout`` lacks.
    """
    if not setup.ml_symbols:
        return None
    return MlVeto(setup.name, setup.ml_symbols, {spec.root for spec in layout.feeds},
                  shadow=setup.config.ml_shadow, runtime_dir=runtime_dir, audit=audit)


def build_cerebro(cfg: PineConfig, setup: StrategySetup, make_feed: FeedFactory, journal: StepJournal,
                  execution: Execution | None = None, layout: FeedLayout | None = None,
                  ml: MlVeto | None = None, refused: Collection[str] = ()) -> bt.Cerebro:
    """A Cerebro with the strategy's feeds (``layout``; default: every configured reference root has
    one), paper broker and strategy.

    With an ``execution`` (live workers) every order goes through it; without (backtests) all are placed.
    ``ml``: the worker's ML veto; without one, ML-enabled instruments get a tracker with no models
    (features computed and reported, no veto: backtests). ``refused``: client order ids a backtest does not
    place (a live run's refusals, see :func:`backtest`).
    """
    layout = layout or setup.layout(cfg.instruments)
    if ml is None:
        ml = ml_veto(setup, layout)
    cerebro = bt.Cerebro(runonce=False, stdstats=False)
    for spec in layout.feeds:
        cerebro.adddata(make_feed(spec.root, spec.timeframe), name=spec.name)
    cerebro.broker = paper_broker(cfg, setup.config, {s: feed_name(s, "1min") for s in setup.symbols})
    cerebro.addstrategy(
        setup.cls,
        strategy_name=setup.name,
        sizes={s: inst.size for s, inst in setup.config.instruments.items()},
        tick_sizes={s: cfg.instruments[s].tick_size for s in setup.symbols},
        journal=journal,
        execution=execution,
        feeds={spec.name: (spec.root, spec.timeframe) for spec in layout.feeds},
        ml=ml,
        missing_feeds=tuple(layout.missing_feeds),
        refused=frozenset(refused),
        **setup.params,
    )
    return cerebro


@dataclass
class BacktestRun:
    """A finished direct backtest: its journal (trades, fills, stats) and the strategy instance."""

    journal: MemoryJournal
    strategy: BaseStrategy
    layout: FeedLayout


def backtest(cfg: PineConfig, name: str, bars: Iterable[Bar], *, warmup_until: datetime | None = None,
             refused: Collection[str] = (), ml_decisions: DecisionAudit | None = None) -> BacktestRun:
    """Run strategy ``name`` on ``bars`` (non-live feeds); bars ending by ``warmup_until`` are warmup.

    Reference roots with no bars among ``bars`` are missing (optional) or an error (required), as
    for a live worker whose history lacks them.

    A live run's external decisions can be replayed (the daily reconciliation): ``refused`` are the
    client order ids of entries it did not place (refused by the killswitch or the portfolio limits,
    failed at the broker), not placed here either;
    ``ml_decisions`` its recorded ML veto decisions: a recorded signal gets its recorded verdict, any
    other signal is taken (a backtest loads no models). Without them every signal is taken.
    """
    bars = list(bars)
    setup = resolve_strategy(cfg, name)
    layout = setup.layout({b.symbol for b in bars})
    journal = MemoryJournal()
    feeds = ListFeedSet(bars, warmup_until=warmup_until)
    ml = ml_veto(setup, layout, audit=ml_decisions) if ml_decisions is not None else None
    [strategy] = build_cerebro(cfg, setup, feeds.make_feed, journal, layout=layout, ml=ml, refused=refused).run()
    return BacktestRun(journal, strategy, layout)


def run_backtest(cfg: PineConfig, name: str, bars: Iterable[Bar], *,
                 warmup_until: datetime | None = None) -> MemoryJournal:
    """Run strategy ``name`` directly on ``bars``; the journal holds its trades (see :func:`backtest`)."""
    return backtest(cfg, name, bars, warmup_until=warmup_until).journal
