"""The order path of a live worker: killswitch → portfolio coordinator → journal → broker.

Every order a strategy wants to place goes through :meth:`Execution.submit` before Backtrader's
book (the paper broker, which is also the model of a webhook broker's fills) sees it:

1. **Replayed bars** (processed by an earlier run, see ``workers.journal``) never send anything:
   the decision is looked up in the order journal by its deterministic client order id, and the
   book takes the order iff the broker had it (``acknowledged``/``unconfirmed``). The replay thus
   rebuilds exactly the book of the earlier run, whatever the killswitch or coordinator say now.
2. **Live bars**: an order already journaled by an earlier run (the step that crashed is run
   again) is not sent twice: a final status is reproduced; ``sent`` (in doubt) becomes
   ``unconfirmed`` and is reported; ``pending`` (certainly never sent) is sent now, once, with
   its id. Anything else is new: killswitch check, slot reservation for entries, journal as
   ``pending``, then delivery (the journal records each attempt before it is made). An entry the
   killswitch or the coordinator refuses is journaled too, as ``cancelled`` with the reason
   (``blocked: killswitch …``, ``denied: portfolio: …``), so the refusal outlives the process.

The coordinator's view of this strategy is synced when trading starts (:meth:`start_trading`),
and kept up to date as entries fill, fail and positions close (live steps only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from enum import StrEnum

import redis

from pine.killswitch import Killswitch, KillswitchState, allows
from pine.notify.notifier import Notifier
from pine.sessions import SessionCalendar
from pine.trade_records import FillRecord, PositionRecord, TradeRecord
from workers.coordinator import PortfolioCoordinator
from workers.crash_points import crash_point
from workers.db_schema import bar_end_trading_day
from workers.delivery import OrderSender
from workers.order_journal import ACCEPTED, OrderIntent, OrderJournal, OrderStatus
from workers.reconcile import ReconcileError, compare_positions
from workers.traderspost import broker_ticker, build_payload
from workers.trades_db import TradesDB

log = logging.getLogger(__name__)


class Role(StrEnum):
    """Entries open a position (they need a portfolio slot); exits reduce one."""

    ENTRY = "entry"
    EXIT = "exit"


@dataclass(frozen=True)
class OrderRequest:
    """An order a strategy wants to place, decided on the bar that ended at ``signal_time``."""

    client_order_id: str
    symbol: str
    contract: str
    role: Role
    side: str
    quantity: int
    reason: str
    signal_time: datetime
    signal_price: float | None
    replay: bool


@dataclass(frozen=True)
class Decision:
    """Whether the book may take the order; ``status`` is the journal status or blocked/denied/…"""

    accepted: bool
    status: str
    detail: str = ""


@dataclass
class ExecutionStats:
    """Order counts of this process (heartbeats): sent, acknowledged, failed, blocked, denied, …"""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str) -> None:
        """Count one ``what``."""
        self.counts[what] = self.counts.get(what, 0) + 1


class Execution:
    """One strategy's order path (see the module docstring)."""

    def __init__(self, strategy: str, *, db: TradesDB, journal: OrderJournal, sender: OrderSender,
                 calendar: SessionCalendar, killswitch: Killswitch | None = None,
                 coordinator: PortfolioCoordinator | None = None, ticker_mode: str = "contract",
                 fail_fast: bool = False, notifier: Notifier | None = None) -> None:
        self.strategy = strategy
        self.db = db
        self.journal = journal
        self.sender = sender
        self.calendar = calendar
        self.killswitch = killswitch
        self.coordinator = coordinator
        self.ticker_mode = ticker_mode
        self.fail_fast = fail_fast
        self.notifier = notifier
        self.stats = ExecutionStats()
        self.state = KillswitchState.OFF
        self._swept = False
        self._touched: set[str] = set()
        self._exits_by_reason: dict[str, dict[datetime, list[str]]] = {}

    @property
    def fill_source(self) -> str:
        """``paper`` or ``model`` (a webhook broker reports no fills)."""
        return self.sender.fill_source

    def trading_day(self, bar_end: datetime) -> date:
        """CME trading day of the session the bar ending at ``bar_end`` belongs to."""
        return date.fromisoformat(bar_end_trading_day(self.calendar, bar_end))

    # -- per step ---------------------------------------------------------------------------------
    def begin_step(self) -> KillswitchState:
        """Read the killswitch at the start of a live step (every worker sees a change within one bar)."""
        self.state = self._killswitch_now()
        return self.state

    def end_step(self, *, flat: bool) -> None:
        """After a live step: resolve what a crash left behind (once), and finish a flatten."""
        if not self._swept:
            self._swept = True
            self._sweep_unresolved()
        if self.state is KillswitchState.FLATTEN and flat:
            self._finish_flatten()

    # -- orders -----------------------------------------------------------------------------------
    def submit(self, req: OrderRequest) -> Decision:
        """Decide whether ``req`` is placed; sends it to the broker when it is new (see module docstring)."""
        cid = req.client_order_id
        self._touched.add(cid)
        row = self.journal.get(cid)
        if req.replay:
            return self._replayed(req, row.status if row is not None else None)
        if row is not None and row.status is OrderStatus.SENT:
            return self._in_doubt(req)
        if row is not None and row.status is not OrderStatus.PENDING:
            self.stats.add("matched")
            accepted = row.status in ACCEPTED
            if accepted and req.role is Role.ENTRY:
                self._hold(req.symbol, cid)
            return Decision(accepted, row.status.value, "journaled by an earlier run; not sent again")
        state = self._killswitch_now()
        if not allows(state, exit=req.role is Role.EXIT):
            return self._refuse(req, row is not None, "blocked", f"killswitch {state.value}")
        if req.role is Role.ENTRY and self.coordinator is not None:
            granted, reason = self._reserve(req, cid)
            if not granted:
                return self._refuse(req, row is not None, "denied", f"portfolio: {reason}")
        if row is None:
            intent = self._intent(req)
            self.journal.add(intent)
            crash_point("after_journal")
            payload = intent.payload
        else:
            log.warning("%s: resending order %s (journaled by an earlier run, never sent)", req.symbol, cid)
            self.stats.add("resent")
            payload = row.intent.payload
        delivery = self.sender.deliver(payload, lambda n: self.journal.mark_attempt(cid, n))
        crash_point("after_send")
        status = OrderStatus.ACKNOWLEDGED if delivery.acknowledged else OrderStatus.FAILED
        self.journal.finish(cid, status, attempts=delivery.attempts, http_status=delivery.http_status,
                            response=delivery.response, error=delivery.error)
        self.stats.add(status.value)
        if delivery.acknowledged:
            log.info("%s %s %s %d (%s): %s by %s after %d attempt(s)", req.symbol, req.role.value, req.side,
                     req.quantity, req.reason, cid, self.sender.name, delivery.attempts)
            return Decision(True, status.value)
        if req.role is Role.ENTRY:
            self._release(req.symbol)
        log.error("%s %s order %s failed at %s: %s", req.symbol, req.role.value, cid, self.sender.name, delivery.error)
        self._emit("order_failed", client_order_id=cid, symbol=req.symbol, error=delivery.error or "")
        return Decision(False, status.value, delivery.error or "")

    def _replayed(self, req: OrderRequest, status: OrderStatus | None) -> Decision:
        self.stats.add("replayed")
        if status is None:
            return Decision(False, "not_journaled", "the earlier run did not place it")
        if status is OrderStatus.PENDING:
            # Its bar was ledgered, so the earlier run finished that step without sending it.
            self.journal.resolve(req.client_order_id, OrderStatus.CANCELLED, "never sent; its bar is history")
            return Decision(False, OrderStatus.CANCELLED.value)
        if status is OrderStatus.SENT:
            self.journal.resolve(req.client_order_id, OrderStatus.UNCONFIRMED,
                                 "found 'sent' after a restart: it may have arrived, so it is not resent")
            return Decision(True, OrderStatus.UNCONFIRMED.value)
        return Decision(status in ACCEPTED, status.value)

    def _in_doubt(self, req: OrderRequest) -> Decision:
        cid = req.client_order_id
        self.journal.resolve(cid, OrderStatus.UNCONFIRMED,
                             "found 'sent' after a restart: it may have arrived, so it is not resent")
        self.stats.add("unconfirmed")
        log.error("%s: order %s was being sent when the worker stopped; it may have arrived and is NOT resent "
                  "(treated as placed; check the broker)", req.symbol, cid)
        self._emit("order_in_doubt", client_order_id=cid, symbol=req.symbol)
        if req.role is Role.ENTRY:
            self._hold(req.symbol, cid)
        return Decision(True, OrderStatus.UNCONFIRMED.value, "in doubt after a restart")

    def _refuse(self, req: OrderRequest, journaled: bool, what: str, why: str) -> Decision:
        # A refused entry is journaled as cancelled: a durable record of the decision, which a restart's
        # replay reproduces and the daily reconciliation replays into its backtest. A refused exit is not:
        # the position stays and the strategy signals its exit again on a later bar.
        if req.role is Role.ENTRY and not journaled:
            self.journal.add(self._intent(req))
        if journaled or req.role is Role.ENTRY:
            self.journal.resolve(req.client_order_id, OrderStatus.CANCELLED, f"{what}: {why}")
        self.stats.add(what)
        log.warning("%s %s %s (%s) %s: %s", req.symbol, req.role.value, req.side, req.reason, what, why)
        return Decision(False, what, why)

    def _reserve(self, req: OrderRequest, cid: str) -> tuple[bool, str]:
        assert self.coordinator is not None
        try:
            r = self.coordinator.reserve(req.symbol, cid, self.trading_day(req.signal_time))
        except redis.RedisError as exc:
            return False, f"coordinator unreachable ({exc})"
        return r.granted, r.reason

    def _intent(self, req: OrderRequest) -> OrderIntent:
        day = self.trading_day(req.signal_time)
        intent = OrderIntent(
            client_order_id=req.client_order_id, strategy=self.strategy, symbol=req.symbol, contract=req.contract,
            role=req.role.value, side=req.side, action=req.side if req.role is Role.ENTRY else "exit",
            quantity=req.quantity, order_type="market", limit_price=None, requested_price=req.signal_price,
            reason=req.reason, signal_time=req.signal_time, trading_day=day, broker=self.sender.name, payload={},
        )
        ticker = broker_ticker(req.symbol, req.contract, self.ticker_mode, req.signal_time.year)
        return replace(intent, payload=build_payload(intent, ticker))

    def replayed_exits(self, signal_time: datetime, reason: str) -> list[str]:
        """Symbols an earlier run closed at ``signal_time`` for ``reason`` (a flatten decided by the killswitch,
        not by bars: a replay cannot rebuild it from the bars, so it is taken from the journal)."""
        if reason not in self._exits_by_reason:
            self._exits_by_reason[reason] = self.journal.accepted_exits(self.strategy, reason)
        return self._exits_by_reason[reason].get(signal_time, [])

    # -- position lifecycle (live steps) ----------------------------------------------------------
    def on_opened(self, symbol: str, fill: FillRecord | None = None, *, ml_score: float | None = None) -> None:
        """The entry of ``symbol`` filled: its reservation becomes an open slot (and Discord hears of it, with
        the ML veto's score when a model decided)."""
        if self.notifier is not None and fill is not None:
            self.notifier.entry(fill, ml_score=ml_score)
        if self.coordinator is not None:
            self._redis_safely("confirm", self.coordinator.confirm, symbol)

    def on_entry_failed(self, symbol: str) -> None:
        """The book could not execute an entry the broker took: free the slot, report it."""
        log.error("%s: the entry was not executed by the book (see the previous warning)", symbol)
        self._release(symbol)

    def on_closed(self, trade: TradeRecord) -> None:
        """A position closed: free its slot and add its P&L to the trading day (may hit the daily stop)."""
        if self.notifier is not None:
            self.notifier.exit(trade)
        self._release(trade.symbol)
        if self.coordinator is None:
            return
        day = self.trading_day(trade.exit_time)
        try:
            pnl = self.coordinator.record_pnl(day, trade.trade_id, trade.net_pnl)
        except redis.RedisError as exc:
            log.error("could not record the P&L of %s in Redis (%s): the daily stop may not see it", trade.trade_id,
                      exc)
            return
        if pnl.hit_now:
            log.critical("DAILY STOP HIT for trading day %s: realised %.2f across the portfolio (limit %.2f); no new "
                         "entries anywhere until the session closes", day, pnl.realized,
                         self.coordinator.daily_stop_loss)

    def _release(self, symbol: str) -> None:
        if self.coordinator is not None:
            self._redis_safely("release", self.coordinator.release, symbol)

    def _hold(self, symbol: str, cid: str) -> None:
        # The broker has (or may have) this entry: it takes a slot whatever the capacity says.
        if self.coordinator is not None:
            self._redis_safely("hold", lambda s: self.coordinator.hold(s, cid), symbol)  # type: ignore[union-attr]

    # -- restart safety -------------------------------------------------------------------------
    def start_trading(self, shadow: Mapping[str, PositionRecord], in_flight: Mapping[str, str]) -> list[PositionRecord]:
        """First live step: compare the replayed book with the DB; returns the DB positions to restore.

        ``in_flight`` maps symbols with an entry order still waiting for its fill to its client
        order id. Mismatches are reported (and raise ReconcileError with ``fail_fast``); the
        coordinator is synced to the positions the strategy will hold.
        """
        check = compare_positions(shadow, self.db.open_positions(self.strategy), self.journal)
        for note in check.notes:
            log.warning("reconcile: %s", note)
        for problem in check.problems:
            log.error("reconcile: %s", problem)
            self._emit("position_mismatch", detail=problem)
        if check.problems and self.fail_fast:
            raise ReconcileError(f"{len(check.problems)} position mismatch(es) between the DB, the order journal "
                                 f"and the replayed book; refusing to trade (preflight.fail_fast): "
                                 + "; ".join(check.problems))
        for p in check.restore:
            log.warning("reconcile: %s: restoring %s from the DB (the replay did not rebuild it)", p.symbol,
                        f"{p.direction} {p.size} @ {p.entry_price}")
            self._emit("position_restored", symbol=p.symbol, client_order_id=p.entry_order_id or "")
        if self.coordinator is not None:
            held = {**{s: p.entry_order_id or "" for s, p in shadow.items()},
                    **{p.symbol: p.entry_order_id or "" for p in check.restore}}
            try:
                sync = self.coordinator.sync(held, in_flight)
            except redis.RedisError as exc:
                log.error("could not sync the portfolio coordinator (%s)", exc)
            else:
                if sync.added or sync.removed:
                    log.warning("coordinator: restored slots %s, released stale slots %s", sync.added or "none",
                                sync.removed or "none")
                if sync.total > self.coordinator.max_positions:
                    log.warning("portfolio holds %d slots, above max_positions %d (positions exist: no entries until "
                                "some close)", sync.total, self.coordinator.max_positions)
        return check.restore

    def _sweep_unresolved(self) -> None:
        """Orders a crash left unresolved that the strategy did not signal again: never send them now."""
        for order in self.journal.unresolved(self.strategy):
            cid = order.client_order_id
            if cid in self._touched:
                continue
            if order.status is OrderStatus.SENT:
                self.journal.resolve(cid, OrderStatus.UNCONFIRMED, "in doubt after a restart and not signalled again")
                log.error("order %s was being sent when the worker stopped and was not signalled again: it may have "
                          "arrived; check the broker", cid)
                self._emit("order_in_doubt", client_order_id=cid, symbol=order.intent.symbol)
            else:
                self.journal.resolve(cid, OrderStatus.CANCELLED, "journaled before a restart, not signalled again")
                log.warning("order %s was journaled but never sent, and not signalled again after the restart: "
                            "cancelled", cid)

    def _finish_flatten(self) -> None:
        if self.coordinator is None or self.killswitch is None:
            return
        try:
            if self.coordinator.slots():
                return
            if self.killswitch.compare_and_set(KillswitchState.FLATTEN, KillswitchState.HALT,
                                               reason="flatten complete: the portfolio is flat",
                                               source=f"worker:{self.strategy}"):
                log.warning("killswitch: portfolio flat, FLATTEN → HALT")
                self.state = KillswitchState.HALT
        except redis.RedisError as exc:
            log.warning("could not finish the flatten (%s); will retry on the next bar", exc)

    # -- helpers ----------------------------------------------------------------------------------
    def _killswitch_now(self) -> KillswitchState:
        if self.killswitch is None:
            return KillswitchState.OFF
        try:
            return self.killswitch.effective()
        except redis.RedisError as exc:
            # Unknown state: no new risk, but positions can still be closed.
            log.warning("cannot read the killswitch (%s): reduce-only until Redis answers", exc)
            return KillswitchState.REDUCE_ONLY

    def _emit(self, kind: str, **fields: object) -> None:
        if self.coordinator is not None:
            self.coordinator.emit(kind, strategy=self.strategy, **fields)

    def _redis_safely(self, what: str, fn: Callable[[str], object], symbol: str) -> None:
        try:
            fn(symbol)
        except redis.RedisError as exc:
            log.warning("coordinator %s of %s failed (%s); the next start will re-sync", what, symbol, exc)
