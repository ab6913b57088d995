"""Where a strategy reports each Backtrader step: the bars it processed and the trades it closed.

``LedgerJournal`` (live worker) makes processing exactly-once across kill/restart. A worker
warms up on history bars (``BarMeta.warmup``, from the parquet caches; see ``workers.warmup``)
and then reads its streams from the first bar after that history (without history: from the
beginning). Warmup bars are neither traded nor ledgered. Stream bars at or below a feed's
ledger cursor were processed by an earlier run and are *replayed*: they go through the strategy
again, silently, to rebuild indicator and book state, and are not ledgered again. Bars after the
cursor are ledgered together with that step's trades, fills, ML decisions and open positions in one
transaction.

Replayed steps never send orders: ``is_replay`` tells the strategy, and ``workers.execution``
then takes each order's outcome from the order journal instead (acknowledged orders are placed
in the book again, nothing is sent). The open positions written with each live step are what a
restarted worker restores when the replay cannot rebuild them (a trimmed stream, or positions
opened before the warmup's hand-over). ``MemoryJournal`` collects trades of a direct backtest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from pine.trade_records import FillRecord, PositionRecord, TradeRecord
from workers.bar_stream import StreamId
from workers.feeds import BarMeta
from workers.trades_db import DecisionRecord, LedgerEntry, TradesDB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One Backtrader step as a strategy saw it."""

    bars: list[tuple[str, BarMeta]]
    trades: list[TradeRecord]
    positions: dict[str, int]
    fills: list[FillRecord] = field(default_factory=list)
    open_positions: dict[str, PositionRecord] = field(default_factory=dict)
    decisions: list[DecisionRecord] = field(default_factory=list)


class StepJournal(Protocol):
    """Receives every step of a strategy, after its orders for that step were placed."""

    def is_replay(self, bars: Sequence[tuple[str, BarMeta]]) -> bool:
        """Whether these bars (of one step, or a signal bar) are warmup history or were processed by an earlier run."""
        ...

    def record(self, step: Step) -> None:
        """Take one step's processed bars, closed trades, fills and open positions."""
        ...


@dataclass
class RunStats:
    """What a journal has seen in this process (for heartbeats and summaries)."""

    bars: dict[str, int] = field(default_factory=dict)
    last_bar_end: dict[str, datetime] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    trades_recorded: int = 0
    replayed_bars: int = 0
    # Warmup history delivered, per feed (not in ``bars``, which counts stream bars).
    warmup_bars: dict[str, int] = field(default_factory=dict)

    def note(self, step: Step) -> None:
        """Count the step's bars and remember its positions."""
        for feed, meta in step.bars:
            if meta.warmup:
                self.warmup_bars[feed] = self.warmup_bars.get(feed, 0) + 1
                continue
            self.bars[feed] = self.bars.get(feed, 0) + 1
            self.last_bar_end[feed] = meta.end
        self.positions = step.positions


class MemoryJournal:
    """Keeps trades in memory (direct backtests, tests)."""

    def __init__(self) -> None:
        self.trades: list[TradeRecord] = []
        self.fills: list[FillRecord] = []
        self.decisions: list[DecisionRecord] = []
        self.stats = RunStats()

    def is_replay(self, bars: Sequence[tuple[str, BarMeta]]) -> bool:
        return bool(bars) and all(meta.warmup for _, meta in bars)

    def record(self, step: Step) -> None:
        self.stats.note(step)
        self.trades.extend(step.trades)
        self.fills.extend(step.fills)
        self.decisions.extend(step.decisions)
        self.stats.trades_recorded += len(step.trades)


class LedgerJournal:
    """Writes new bars and trades to the trades DB, one transaction per step; replays silently."""

    def __init__(self, db: TradesDB, strategy: str, *, on_step: Callable[[], None] | None = None) -> None:
        self.db = db
        self.strategy = strategy
        self.cursors: dict[str, StreamId] = db.cursors(strategy)
        self.on_step = on_step
        self.stats = RunStats(trades_recorded=db.trade_count(strategy))
        self._behind = set(self.cursors)
        self._positions = db.open_positions(strategy)

    @property
    def replaying(self) -> bool:
        """True until every feed has passed the bars an earlier run already processed."""
        return bool(self._behind)

    def is_replay(self, bars: Sequence[tuple[str, BarMeta]]) -> bool:
        """All of ``bars`` are warmup history or at or below their feed's cursor (a step is ledgered whole)."""
        return bool(bars) and all(
            meta.warmup or ((cursor := self.cursors.get(feed)) is not None and meta.stream_id <= cursor)
            for feed, meta in bars
        )

    def record(self, step: Step) -> None:
        self.stats.note(step)
        new: list[LedgerEntry] = []
        for feed, meta in step.bars:
            if meta.warmup:
                continue
            cursor = self.cursors.get(feed)
            if cursor is not None and meta.stream_id <= cursor:
                self.stats.replayed_bars += 1
                if meta.stream_id == cursor:
                    self._behind.discard(feed)
                continue
            self._behind.discard(feed)
            new.append(LedgerEntry(feed, meta.stream_id, meta.end))
        # Positions are written by live steps only: a replayed step's book is older than the DB's.
        positions = step.open_positions if new and step.open_positions != self._positions else None
        if new or step.trades or step.fills or step.decisions:
            inserted = self.db.record_step(self.strategy, new, step.trades, step.fills, positions, step.decisions)
            if positions is not None:
                self._positions = positions
            self.stats.trades_recorded += inserted
            if inserted < len(step.trades) and new:
                log.warning("%d trade(s) of a new step were already recorded", len(step.trades) - inserted)
        if self.on_step is not None:
            self.on_step()
