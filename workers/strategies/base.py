"""The strategy framework: per-symbol entry/exit hooks evaluated on each session's daily bar.

A strategy subclasses ``BaseStrategy``, implements the seeds' hooks ``should_enter_long``,
``should_enter_short`` and ``should_exit`` (and ``stop_price`` for a protective stop, ``entry_tag``
to label entries), and registers itself (``workers.strategies.register``). The base class owns
everything else: orders go to the symbol's ``{SYM}_minute`` feed (a market order fills at the next
minute bar's open), the protective stop is placed once the entry has filled and cancelled before
a signalled exit, closed trades become ``TradeRecord``s, and every step is reported to the journal.

Warmup: bars of the worker's history (``BarMeta.warmup``) update indicators and the
:meth:`observe_bar` hook but no hook decides on them and nothing is ordered. Strategies read
indicators through :meth:`value`, which returns None instead of reading past the data (an
indicator still in its minimum period, or a bar further back than the feed holds).

ML veto (``workers.ml_veto``, the ``ml`` parameter): every ended daily and hourly bar of any feed
(warmup included) updates the veto's feature tracker before the step's decisions; an entry signal of
an ML-enabled symbol with a champion model is taken only when the model agrees (or in shadow mode),
and each decision goes to the journal with the step.

Feeds: ``self.minute``/``self.hour``/``self.day`` map traded symbols to their feeds;
``self.series[(root, timeframe)]`` holds every feed, reference roots' included (``workers.references``).

In a live worker every order first goes through the worker's ``Execution`` (killswitch, portfolio
coordinator, order journal, broker): an entry or exit it refuses is not placed in Backtrader's
book, and a triggered protective stop is only executed once it was let through. The first step
on a bar no earlier run processed starts trading: positions the DB holds but the replay did not
rebuild are restored into the book. Under the FLATTEN killswitch every position is closed at market.
Backtests run without an execution: every order is placed, except those a live run refused (``refused``:
their client order ids, which a reconciliation backtest replays).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import backtrader as bt

from pine.config.schema import ReferenceFeedsConfig, StrategyConfig
from pine.killswitch import KillswitchState
from pine.logs import log_symbol
from pine.trade_records import FillRecord, PositionRecord, TradeRecord
from workers.execution import Execution, OrderRequest, Role
from workers.feeds import BarMeta, feed_name
from workers.journal import Step, StepJournal
from workers.order_journal import client_order_id
from workers.paper_broker import PaperBroker
from workers.trades_db import DecisionRecord

if TYPE_CHECKING:
    from workers.ml_veto import MlVeto

log = logging.getLogger(__name__)

STOP_EXIT = "stop"
FLATTEN_EXIT = "flatten"


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
    entry_order_id: str | None = None
    exit_order_id: str | None = None
    entry_requested: float | None = None
    exit_requested: float | None = None
    entry_tag: str | None = None
    stop_price: float | None = None
    best: float = 0.0
    worst: float = 0.0
    ml_score: float | None = None
    ml_model_version: str | None = None

    def extend(self, high: float, low: float) -> None:
        """Widen the trade's best/worst price by a bar's range (or a fill price)."""
        up, down = (high, low) if self.direction > 0 else (low, high)
        self.best = max(self.best, up) if self.direction > 0 else min(self.best, up)
        self.worst = min(self.worst, down) if self.direction > 0 else max(self.worst, down)


class BaseStrategy(bt.Strategy):
    """Per-symbol hooks on daily bars, orders on minute feeds through the execution, trades to the journal."""

    # Framework parameters set by the engine, never from the config's ``params``.
    FRAMEWORK_PARAMS: ClassVar[frozenset[str]] = frozenset(
        {"strategy_name", "sizes", "tick_sizes", "journal", "execution", "feeds", "ml", "missing_feeds", "refused"})
    params = (
        ("strategy_name", ""),
        ("sizes", {}),
        ("tick_sizes", {}),
        ("journal", None),
        ("execution", None),
        # Feed name → (root, timeframe) of every feed; the ML veto (None: no ML-enabled symbol); names of
        # absent optional feeds.
        ("feeds", {}),
        ("ml", None),
        ("missing_feeds", ()),
        # Backtests only: client order ids a live run refused (killswitch, portfolio limits), not placed here
        # either, so a reconciliation backtest takes the same decisions as the live run.
        ("refused", frozenset()),
    )

    def __init__(self) -> None:
        self.symbols: list[str] = list(self.p.sizes)
        self.series: dict[tuple[str, str], bt.feed.DataBase] = {self.p.feeds[d._name]: d for d in self.datas}
        self._source_of = {id(d): key for key, d in self.series.items()}
        self.minute = {s: self.getdatabyname(feed_name(s, "1min")) for s in self.symbols}
        self.hour = {s: self.getdatabyname(feed_name(s, "hourly")) for s in self.symbols}
        self.day = {s: self.getdatabyname(feed_name(s, "daily")) for s in self.symbols}
        self._state = {s: _SymbolState() for s in self.symbols}
        self._roles: dict[int, tuple[str, str]] = {}
        self._symbol_of = {id(self.minute[s]): s for s in self.symbols}
        self._day_seen = dict.fromkeys(self.symbols, 0)
        self._closed: list[TradeRecord] = []
        self._fills: list[FillRecord] = []
        # Position events of this step for the execution: ("opened", symbol, entry fill) | ("entry_failed",
        # symbol, None) | ("closed", symbol, trade).
        self._events: list[tuple[str, str, TradeRecord | FillRecord | None]] = []
        self._awaiting_restore: dict[str, PositionRecord] = {}
        self._trading = False
        self.journal: StepJournal | None = self.p.journal
        self.execution: Execution | None = self.p.execution
        self.ml: MlVeto | None = self.p.ml
        self._decisions: list[DecisionRecord] = []

    def start(self) -> None:
        if self.execution is not None and isinstance(self.broker, PaperBroker):
            self.broker.stop_gate = self._gate_stop

    @classmethod
    def check_params(cls, params: Mapping[str, Any]) -> None:
        """Raise ValueError for a configured parameter value the strategy cannot run with."""

    @classmethod
    def default_reference_feeds(cls, config: StrategyConfig) -> ReferenceFeedsConfig:
        """Reference roots when the config does not list them (none unless a strategy says otherwise)."""
        return ReferenceFeedsConfig()

    @classmethod
    def check_references(cls, config: StrategyConfig, references: ReferenceFeedsConfig) -> None:
        """Raise ValueError when the strategy cannot run with these reference roots."""

    # -- hooks ---------------------------------------------------------------------------------
    def observe_bar(self, root: str, timeframe: str, data: bt.feed.DataBase) -> None:
        """Called for every bar any feed delivers (warmup included), before the step's decisions."""

    def indicators(self) -> dict[str, dict[str, float | None]]:
        """Per traded symbol, the values the strategy decides on (None: not ready); for checks and heartbeats."""
        return {}

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

    def entry_tag(self, symbol: str, direction: int) -> str:
        """A label of why an entry was taken (stored with the order and the trade)."""
        return "long" if direction > 0 else "short"

    # -- helpers for strategies ----------------------------------------------------------------
    @staticmethod
    def value(line: bt.LineSeries | bt.linebuffer.LineBuffer, ago: int = 0) -> float | None:
        """``line[ago]`` (``ago`` <= 0), or None when that bar does not exist or has no value yet.

        Backtrader wraps a negative index past the start of a line around to its newest value,
        and an indicator within its minimum period holds NaN: both are None here.
        """
        if len(line) <= -ago:
            return None
        x = float(line[ago])
        return None if math.isnan(x) else x

    def bars_held(self, symbol: str) -> int:
        """Daily bars seen since the entry of the open position of ``symbol``."""
        return self._state[symbol].bars_held

    def tick_size(self, symbol: str) -> float:
        """Minimum price increment of ``symbol`` (from the instrument spec)."""
        return float(self.p.tick_sizes[symbol])

    def stop_on_grid(self, symbol: str, direction: int, raw: float) -> float:
        """A protective stop price on ``symbol``'s tick grid, never tighter than ``raw``: a long's
        (``direction`` > 0) rounds down, a short's up."""
        tick = self.tick_size(symbol)
        ticks = math.floor(raw / tick + 1e-9) if direction > 0 else math.ceil(raw / tick - 1e-9)
        return round(ticks * tick, 10)

    def position_size(self, symbol: str) -> int:
        """Contracts held in ``symbol`` (negative when short)."""
        data = self.minute[symbol]
        if not len(data):
            # Asking creates a broker position, and the broker then values it at a bar that does not exist.
            return 0
        return int(self.getposition(data).size)

    # -- Backtrader callbacks ------------------------------------------------------------------
    def prenext(self) -> None:
        self._step()

    def next(self) -> None:
        self._step()

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Submitted, order.Accepted, order.Partial):
            return
        symbol, role = self._roles.pop(order.ref)
        if role == "restore":
            return  # the state was set when the position was restored
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
            if role == "entry":
                self._events.append(("entry_failed", symbol, None))
            return
        when = bt_time(order.executed.dt)
        if role == "stop":
            st.exit_order_id = client_order_id(self.p.strategy_name, symbol, when, "buy" if order.isbuy() else "sell")
            st.exit_requested = float(order.created.price)
        fill = self._fill(symbol, role, order, when)
        self._fills.append(fill)
        if role == "entry":
            self._entered(symbol, order, when)
            self._events.append(("opened", symbol, fill))
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
        st.extend(st.exit_price, st.exit_price)
        record = TradeRecord(
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
            entry_order_id=st.entry_order_id,
            exit_order_id=st.exit_order_id,
            entry_requested_price=st.entry_requested,
            exit_requested_price=st.exit_requested,
            entry_tag=st.entry_tag,
            best_price=st.best,
            worst_price=st.worst,
            ml_score=st.ml_score,
            ml_model_version=st.ml_model_version,
        )
        self._closed.append(record)
        self._events.append(("closed", symbol, record))
        self._state[symbol] = _SymbolState()

    # -- the step --------------------------------------------------------------------------------
    def _step(self) -> None:
        bars = []
        for d in self.datas:
            delivered = d.take_delivered()
            if delivered:
                bars += [(d._name, meta) for meta in delivered]
                root, timeframe = self._source_of[id(d)]
                # Features read daily and hourly series only; minute bars would be ignored by the tracker anyway.
                if self.ml is not None and timeframe != "1min":
                    self.ml.tracker.update(root, timeframe, d.high[0], d.low[0], d.close[0])
                self.observe_bar(root, timeframe, d)
        if bars and all(meta.warmup for _, meta in bars):
            self._warmup_step(bars)
            return
        live = self.journal is None or not self.journal.is_replay(bars)
        events, self._events = self._events, []
        if live and self.execution is not None:
            self.execution.begin_step()
            if not self._trading:
                self._start_trading()
            self._report(events)
        self._restore_ready()
        delivered = {name for name, _ in bars}
        for symbol in self.symbols:
            st = self._state[symbol]
            if st.entry_time is not None and feed_name(symbol, "1min") in delivered:
                st.extend(self.minute[symbol].high[0], self.minute[symbol].low[0])
        if self.execution is not None and bars:
            now = max(meta.end for _, meta in bars)
            if live and self.execution.state is KillswitchState.FLATTEN:
                self._flatten(self.symbols, now, replay=False)
            elif not live:
                self._flatten(self.execution.replayed_exits(now, FLATTEN_EXIT), now, replay=True)
        for symbol in self.symbols:
            n = len(self.day[symbol])
            if n > self._day_seen[symbol]:
                self._day_seen[symbol] = n
                self._on_daily(symbol)
        trades, self._closed = self._closed, []
        fills, self._fills = self._fills, []
        decisions, self._decisions = self._decisions, []
        if self.journal is not None:
            positions = {s: size for s in self.symbols if (size := self.position_size(s))}
            self.journal.record(Step(bars=bars, trades=trades, positions=positions, fills=fills,
                                     open_positions=self._snapshot(), decisions=decisions))
        if live and self.execution is not None:
            self.execution.end_step(flat=self._flat())

    def _warmup_step(self, bars: list[tuple[str, BarMeta]]) -> None:
        """History: daily bars are marked seen (no decision is taken on them), the journal counts the bars."""
        for symbol in self.symbols:
            self._day_seen[symbol] = len(self.day[symbol])
        if self.journal is not None:
            self.journal.record(Step(bars=bars, trades=[], positions={}))

    def _on_daily(self, symbol: str) -> None:
        with log_symbol(symbol):
            self._decide(symbol)

    def _decide(self, symbol: str) -> None:
        st = self._state[symbol]
        if st.entry_order is not None or st.exit_order is not None or symbol in self._awaiting_restore:
            return
        if self.position_size(symbol):
            st.bars_held += 1
            reason = self.should_exit(symbol)
            if reason:
                day = self.day[symbol]
                self._exit(symbol, reason if isinstance(reason, str) else "signal", day.current_meta(),
                           float(day.close[0]))
            return
        if not len(self.minute[symbol]):
            return  # an order needs a minute bar to be placed against
        if self.should_enter_long(symbol):
            self._enter(symbol, 1)
        elif self.should_enter_short(symbol):
            self._enter(symbol, -1)

    # -- orders --------------------------------------------------------------------------------
    def _submit(self, symbol: str, role: Role, side: str, quantity: int, reason: str, signal: BarMeta | None,
                feed: str, price: float | None, when: datetime | None = None,
                replay: bool | None = None) -> str | None:
        """The client order id if the order may be placed, else None (a backtest places all but ``refused``).

        Whether the decision is replayed follows from its signal bar, unless ``replay`` says so.
        """
        signal_time = when if when is not None else (signal.end if signal is not None else self._now(symbol))
        cid = client_order_id(self.p.strategy_name, symbol, signal_time, side)
        if self.execution is None:
            return None if cid in self.p.refused else cid
        if replay is None:
            replay = signal is not None and self.journal is not None and self.journal.is_replay([(feed, signal)])
        contract = (signal.contract if signal is not None else "") or self._state[symbol].contract
        decision = self.execution.submit(OrderRequest(
            client_order_id=cid, symbol=symbol, contract=contract, role=role, side=side, quantity=quantity,
            reason=reason, signal_time=signal_time, signal_price=price, replay=replay,
        ))
        return cid if decision.accepted else None

    def _enter(self, symbol: str, direction: int) -> None:
        size = abs(int(self.p.sizes[symbol]))
        day = self.day[symbol]
        meta = day.current_meta()
        verdict = None
        if self.ml is not None and symbol in self.ml.models:
            verdict = self.ml.decide(symbol, meta.end if meta is not None else self._now(symbol))
            if verdict.record is not None:
                self._decisions.append(verdict.record)
            if not verdict.take:
                return
        tag = self.entry_tag(symbol, direction)
        side = "buy" if direction > 0 else "sell"
        price = float(day.close[0])
        cid = self._submit(symbol, Role.ENTRY, side, size, tag, meta, day._name, price)
        if cid is None:
            return
        data = self.minute[symbol]
        order = self.buy(data=data, size=size) if direction > 0 else self.sell(data=data, size=size)
        st = self._state[symbol]
        st.entry_order = order
        st.direction = direction
        st.entry_order_id = cid
        st.entry_requested = price
        st.entry_tag = tag
        if verdict is not None:
            st.ml_score, st.ml_model_version = verdict.score, verdict.version
        self._roles[order.ref] = (symbol, "entry")

    def _entered(self, symbol: str, order: bt.Order, when: datetime) -> None:
        st = self._state[symbol]
        st.entry_time = when
        st.entry_price = float(order.executed.price)
        st.best = st.worst = st.entry_price
        st.contract = self._contract(symbol)
        st.bars_held = 0
        price = self.stop_price(symbol, st.direction, st.entry_price)
        if price is not None:
            self._place_stop(symbol, abs(order.executed.size), price)

    def _place_stop(self, symbol: str, size: int, price: float) -> None:
        st = self._state[symbol]
        data = self.minute[symbol]
        stop = (self.sell if st.direction > 0 else self.buy)(data=data, size=size, exectype=bt.Order.Stop, price=price)
        st.stop_order = stop
        st.stop_price = price
        self._roles[stop.ref] = (symbol, "stop")

    def _exit(self, symbol: str, reason: str, signal: BarMeta | None, price: float | None,
              when: datetime | None = None, replay: bool | None = None) -> None:
        st = self._state[symbol]
        side = "sell" if st.direction > 0 else "buy"
        size = abs(self.position_size(symbol))
        cid = self._submit(symbol, Role.EXIT, side, size, reason, signal, self.day[symbol]._name, price, when, replay)
        if cid is None:
            return  # refused: the position and its stop stay as they are
        if st.stop_order is not None:
            self.cancel(st.stop_order)
        st.exit_reason = reason
        st.exit_order_id = cid
        st.exit_requested = price
        order = self.close(data=self.minute[symbol])
        st.exit_order = order
        self._roles[order.ref] = (symbol, "exit")

    def _gate_stop(self, order: bt.Order) -> bool:
        """Called by the paper broker when a protective stop would execute on this bar: may it?"""
        symbol = self._symbol_of[id(order.data)]
        side = "buy" if order.isbuy() else "sell"
        meta = order.data.current_meta()
        with log_symbol(symbol):
            return self._submit(symbol, Role.EXIT, side, abs(int(order.size)), STOP_EXIT, meta, order.data._name,
                                float(order.created.price)) is not None

    def _flatten(self, symbols: list[str], now: datetime, *, replay: bool) -> None:
        """Close ``symbols``' positions at market: the FLATTEN killswitch (live), or its record (replay)."""
        for symbol in symbols:
            st = self._state[symbol]
            if self.position_size(symbol) and st.exit_order is None and symbol not in self._awaiting_restore:
                self._exit(symbol, FLATTEN_EXIT, None, float(self.minute[symbol].close[0]), when=now, replay=replay)

    def _fill(self, symbol: str, role: str, order: bt.Order, when: datetime) -> FillRecord:
        st = self._state[symbol]
        entry = role == "entry"
        return FillRecord(
            client_order_id=(st.entry_order_id if entry else st.exit_order_id) or "",
            strategy=self.p.strategy_name, symbol=symbol,
            contract=self._contract(symbol),
            role="entry" if entry else "exit", side="buy" if order.isbuy() else "sell",
            quantity=abs(int(order.executed.size)),
            requested_price=st.entry_requested if entry else st.exit_requested,
            fill_price=float(order.executed.price), commission=_money(order.executed.comm), fill_time=when,
            source=self.execution.fill_source if self.execution is not None else "backtest",
        )

    def _now(self, symbol: str) -> datetime:
        return bt_time(self.minute[symbol].datetime[0])

    def _contract(self, symbol: str) -> str:
        meta = self.minute[symbol].current_meta()
        return meta.contract if meta is not None else self._state[symbol].contract

    # -- restart safety --------------------------------------------------------------------------
    def _start_trading(self) -> None:
        assert self.execution is not None
        self._trading = True
        in_flight = {s: st.entry_order_id or "" for s, st in self._state.items() if st.entry_order is not None}
        for p in self.execution.start_trading(self._snapshot(), in_flight):
            self._awaiting_restore[p.symbol] = p

    def _report(self, events: list[tuple[str, str, TradeRecord | FillRecord | None]]) -> None:
        assert self.execution is not None
        for kind, symbol, record in events:
            if kind == "opened":
                self.execution.on_opened(symbol, record if isinstance(record, FillRecord) else None,
                                         ml_score=self._state[symbol].ml_score)
            elif kind == "entry_failed":
                self.execution.on_entry_failed(symbol)
            elif isinstance(record, TradeRecord):
                self.execution.on_closed(record)

    def _restore_ready(self) -> None:
        """Put DB positions into the book once their minute feed has a bar to execute against."""
        for symbol, p in list(self._awaiting_restore.items()):
            data = self.minute[symbol]
            if not len(data) or not isinstance(self.broker, PaperBroker):
                continue
            del self._awaiting_restore[symbol]
            direction = 1 if p.direction == "long" else -1
            order = self.broker.restore_position(self, data, direction * p.size, p.entry_price)
            self._roles[order.ref] = (symbol, "restore")
            self._state[symbol] = _SymbolState(
                direction=direction, entry_time=p.entry_time, entry_price=p.entry_price, contract=p.contract,
                bars_held=p.bars_held, entry_order_id=p.entry_order_id, entry_requested=p.entry_requested_price,
                entry_tag=p.entry_tag, best=p.best_price, worst=p.worst_price,
            )
            if p.stop_price is not None:
                self._place_stop(symbol, p.size, p.stop_price)
            log.warning("%s: restored %s %d @ %s (entered %s, %d daily bars held)", symbol, p.direction, p.size,
                        p.entry_price, p.entry_time.isoformat(), p.bars_held)

    def _snapshot(self) -> dict[str, PositionRecord]:
        out: dict[str, PositionRecord] = {}
        for symbol in self.symbols:
            st = self._state[symbol]
            size = self.position_size(symbol)
            if not size or st.entry_time is None:
                continue
            out[symbol] = PositionRecord(
                strategy=self.p.strategy_name, symbol=symbol, contract=st.contract,
                direction="long" if size > 0 else "short", size=abs(size), entry_time=st.entry_time,
                entry_price=st.entry_price, entry_order_id=st.entry_order_id,
                entry_requested_price=st.entry_requested, entry_tag=st.entry_tag, stop_price=st.stop_price,
                bars_held=st.bars_held, best_price=st.best, worst_price=st.worst,
            )
        return out

    def _flat(self) -> bool:
        return not self._awaiting_restore and all(
            not self.position_size(s) and self._state[s].entry_order is None and self._state[s].exit_order is None
            for s in self.symbols)
