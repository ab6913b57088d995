"""Daily reconciliation of one CME trading day: live trades, orders and portfolio state against their references.

Three checks, each failing loudly (ERROR severity, and a Discord alert through the notifier):

1. **parity** — the trades the live workers recorded for the day equal a backtest of the warmup
   caches' bars through the same strategy classes (``workers.engine.backtest``), given the live
   run's external decisions: the entries it signalled but did not place (refused by the killswitch
   or the portfolio coordinator, or failed at the broker) and its recorded ML veto decisions are
   replayed into the backtest, which has neither risk limits nor models;
2. **orders acknowledged** — every journaled order of the day was acknowledged by the broker,
   and every trade of the day names journaled, acknowledged orders;
3. **coordinator matches positions** — the coordinator's slots in Redis and the open positions
   in the trades DB agree (a current-state comparison: it means most on the day's own run).
"""

# No `from __future__ import annotations`: Dagster reads the op's config and resource annotations
# as live types when the decorator runs.

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from orchestration.resources import PineConfigResource, RedisResource
from pine.bar_cache import BarCacheError, cache_path, complete_through, read_bar_list
from pine.bars import Bar
from pine.config.schema import PineConfig
from pine.holidays import cme_holiday
from pine.notify.messages import emergency_message
from pine.notify.notifier import Notifier
from pine.redis_server import RedisUnavailableError
from pine.sessions import SessionCalendar
from pine.trade_records import PositionRecord, TradeRecord
from workers.backtest import backtest_window, series_needed
from workers.coordinator import PortfolioCoordinator, Slot
from workers.engine import StrategySetupError, backtest
from workers.ml_veto import TAKEN, DecisionAudit, RecordedDecisions
from workers.order_journal import OrderJournal, OrderRecord, OrderStatus
from workers.trades_db import DecisionRecord, TradesDB

PARITY = "live_trades_match_backtest"
ORDERS = "orders_acknowledged"
COORDINATOR = "coordinator_matches_positions"
_LISTED = 20

# Partition keys are CME trading days (the local date of the 17:00 close): Monday to Friday.
# end_offset=1 makes the current day's key exist before its window ends, for the 17:00 schedule.
# CME holidays keep their keys (stable partitions): the schedule skips them, and a holiday materialised
# by hand (a backfill) is still reconciled — Pine books an abbreviated holiday session to that date —
# and says it is a holiday in its metadata.
trading_day_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 * * 1-5", timezone="America/Chicago", fmt="%Y-%m-%d", start="2024-01-01", end_offset=1
)


class ReconciliationConfig(dg.Config):
    """Where the backtest stops warming up and starts trading."""

    trading_from: str | None = Field(
        default=None,
        description="ISO instant the live workers started trading (bars up to it are warmup); "
                    "default: just before the first bar each worker took from the live streams (its trades "
                    "DB bar_log); with none, every cached bar is traded",
    )


@dg.asset(
    group_name="operations",
    kinds={"sqlite", "redis"},
    partitions_def=trading_day_partitions,
    # Blocking: a failed check fails the run, which alert_on_run_failure reports as well.
    check_specs=[
        dg.AssetCheckSpec(PARITY, asset="daily_reconciliation", description="live trades equal the backtest's",
                          blocking=True),
        dg.AssetCheckSpec(ORDERS, asset="daily_reconciliation", description="journal orders acknowledged",
                          blocking=True),
        dg.AssetCheckSpec(COORDINATOR, asset="daily_reconciliation", description="slots equal DB positions",
                          blocking=True),
    ],
)
def daily_reconciliation(
    context: dg.AssetExecutionContext, config: ReconciliationConfig, pine_config: PineConfigResource,
    redis: RedisResource,
) -> dg.MaterializeResult:
    """Trades, orders and positions of one trading day reconciled with a backtest, the broker and the coordinator."""
    cfg = pine_config.load(verify_contract_map=False)
    day = date.fromisoformat(context.partition_key)
    calendar = cfg.sessions.calendar()
    try:
        warmup_until = datetime.fromisoformat(config.trading_from) if config.trading_from else None
    except ValueError:
        raise dg.Failure(f"trading_from must be an ISO instant, got {config.trading_from!r}",
                         allow_retries=False) from None
    live: dict[str, list[TradeRecord]] = {name: [] for name in cfg.enabled_strategies()}
    orders: list[OrderRecord] = []
    exit_orders: dict[str, OrderRecord | None] = {}
    positions: dict[str, dict[str, PositionRecord]] = {}
    refused: dict[str, set[str]] = {name: set() for name in live}
    trading_from: dict[str, datetime | None] = dict.fromkeys(live, warmup_until)
    decisions: dict[str, list[DecisionRecord]] = {name: [] for name in live}
    # No trades DB means no worker has run: nothing recorded (and Dagster does not create the DB).
    if cfg.trades_db_path.exists():
        db = TradesDB(cfg.trades_db_path, calendar=calendar)
        try:
            live = {name: day_trades(db.trades(name), day, calendar) for name in live}
            journal = OrderJournal(db)
            orders = journal.of_day(day)
            exit_orders = {t.exit_order_id: journal.get(t.exit_order_id)
                           for trades in live.values() for t in trades if t.exit_order_id is not None}
            positions = {name: db.open_positions(name) for name in live}
            # Every day's, not only this one's: the backtest trades from the start of the caches.
            refused = {name: journal.unplaced_entries(name, day) for name in live}
            if warmup_until is None:
                # Just before the worker's first live bar ends: where its warmup stopped.
                trading_from = {name: None if (end := db.first_live_bar_end(name)) is None
                                else end - timedelta(microseconds=1) for name in live}
            decisions = {name: [d for d in db.decisions(name) if _through(d.signal_time, day, calendar)]
                         for name in live}
        finally:
            db.close()
    parity: list[str] = []
    expected_total = 0
    for name, trades in live.items():
        try:
            expected = day_trades(backtest_trades(cfg, name, calendar, day, trading_from[name], refused=refused[name],
                                                  ml_decisions=RecordedDecisions(decisions[name])), day, calendar)
        except (BarCacheError, StrategySetupError) as exc:
            parity.append(f"{name}: no backtest ({exc})")
            continue
        expected_total += len(expected)
        parity += [f"{name}: {m}" for m in parity_mismatches(trades, expected)]
    n_refused = sum(len(cids) for cids in refused.values())
    n_decisions = sum(len(d) for d in decisions.values())
    n_vetoes = sum(d.outcome != TAKEN for records in decisions.values() for d in records)
    live_trades = [t for trades in live.values() for t in trades]
    order_problems = order_mismatches(orders, live_trades, exit_orders)
    coordinator_problems = _coordinator_problems(redis, cfg, positions)
    results = [
        _result(PARITY, parity, {"live_trades": len(live_trades), "backtest_trades": expected_total,
                                 "refused_entries_replayed": n_refused, "ml_decisions_replayed": n_decisions,
                                 "ml_vetoes_replayed": n_vetoes},
                f"{n_refused} refused entries and {n_vetoes} ML vetoes replayed "
                f"(of {n_decisions} recorded ML decisions)"),
        _result(ORDERS, order_problems, {"orders": len(orders)}),
        _result(COORDINATOR, coordinator_problems,
                {"open_positions": sum(len(p) for p in positions.values())}),
    ]
    failed = {r.check_name: problems for r, problems in
              zip(results, (parity, order_problems, coordinator_problems), strict=True) if not r.passed}
    if failed:
        _alert(cfg, day, failed)
    context.log.info(f"trading day {day}: {len(live_trades)} trades, {len(orders)} orders, failed: {sorted(failed)}")
    return dg.MaterializeResult(
        metadata={
            "trading_day": day.isoformat(),
            "cme_holiday": cme_holiday(day) or "-",
            "trades": len(live_trades),
            "orders": len(orders),
            "mismatches": sum(len(p) for p in failed.values()),
            "preview": dg.MetadataValue.md(_trade_table(live_trades)),
            "trades_db": dg.MetadataValue.path(str(cfg.trades_db_path)),
        },
        check_results=results,
    )


def day_trades(trades: Iterable[TradeRecord], day: date, calendar: SessionCalendar) -> list[TradeRecord]:
    """The trades whose exit falls in trading day ``day``, in (exit, symbol, entry) order."""
    out = [t for t in trades if calendar.trading_day(t.exit_time - timedelta(microseconds=1)) == day]
    return sorted(out, key=lambda t: (t.exit_time, t.symbol, t.entry_time))


def backtest_trades(cfg: PineConfig, name: str, calendar: SessionCalendar, day: date,
                    warmup_until: datetime | None, *, refused: Collection[str] = (),
                    ml_decisions: DecisionAudit | None = None) -> list[TradeRecord]:
    """Strategy ``name`` backtested on its cached bars through the close of ``day`` (the live worker's bars),
    replaying the live run's ``refused`` entries and ``ml_decisions`` (see ``workers.engine.backtest``)."""
    close = calendar.session_end(datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(calendar.timezone)))
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    own = set(cfg.strategies[name].instruments)
    series: dict[tuple[str, str], list[Bar]] = {}
    for root, tf in series_needed(cfg, name):
        path = cache_path(cache_dir, root, tf)
        if root in own:
            # A cache that stops before the close would make the backtest miss the day's trades: a
            # mismatch that is really a stale cache (or, with no cache at all, a check that checks nothing).
            through = complete_through(path)
            if through is None or through < close:
                raise BarCacheError(
                    f"the {root} {tf} cache {'is missing' if not path.exists() else 'ends before the close'} "
                    f"({path}{f', complete through {through.isoformat()}' if through else ''}): materialise "
                    f"warmup_cache for {root}, then this partition again")
        if path.exists():  # an optional reference root without history is missing, as for the live worker
            series[(root, tf)] = [b for b in read_bar_list(path) if b.end <= close]
    if warmup_until is None:
        bars = [b for k in sorted(series) for b in series[k]]
        return backtest(cfg, name, bars, refused=refused, ml_decisions=ml_decisions).journal.trades
    # As the live worker did: a compressed warmup (daily/hourly bars) up to its start, then every bar.
    return backtest_window(cfg, name, series, warmup_until, close, refused=refused,
                           ml_decisions=ml_decisions).journal.trades


def parity_mismatches(live: Sequence[TradeRecord], expected: Sequence[TradeRecord]) -> list[str]:
    """Differences between live and backtest trades: missing, extra, or different economics (same trade id)."""
    live_by_id = {t.trade_id: t for t in live}
    expected_by_id = {t.trade_id: t for t in expected}
    out = []
    for tid in sorted(live_by_id.keys() | expected_by_id.keys()):
        got, want = live_by_id.get(tid), expected_by_id.get(tid)
        if want is None:
            out.append(f"{tid}: live trade not in the backtest")
        elif got is None:
            out.append(f"{tid}: backtest trade not recorded live")
        elif got != want:
            out.append(f"{tid}: live {_economics(got)} ≠ backtest {_economics(want)}")
    return out


def order_mismatches(orders: Sequence[OrderRecord], trades: Sequence[TradeRecord],
                     exit_orders: Mapping[str, OrderRecord | None] | None = None) -> list[str]:
    """Orders of the day the broker did not acknowledge, and trades whose exit orders are not acknowledged.

    ``exit_orders``: the journal's record of each trade's exit order, whatever day it was journaled on
    (an exit signalled at the close fills at the next open: journaled one day, its trade booked the next).
    """
    # A cancelled order was never sent: nothing for the broker to acknowledge.
    out = [f"order {o.client_order_id} ({o.intent.symbol} {o.intent.role}) is {o.status}"
           for o in orders if o.status not in (OrderStatus.ACKNOWLEDGED, OrderStatus.CANCELLED)]
    counts = Counter(o.client_order_id for o in orders)
    out += [f"order {cid} journaled {n} times" for cid, n in counts.items() if n > 1]
    known = {o.client_order_id: o for o in orders} | {k: v for k, v in (exit_orders or {}).items() if v is not None}
    for t in trades:
        # Entries of earlier days are journaled under their own day: only the trade's exit is required here.
        if t.exit_order_id is None:
            continue
        order = known.get(t.exit_order_id)
        if order is None:
            out.append(f"{t.trade_id}: exit order {t.exit_order_id} is not in the order journal")
        elif order.status is not OrderStatus.ACKNOWLEDGED:
            out.append(f"{t.trade_id}: exit order {t.exit_order_id} is {order.status}, not acknowledged")
    return out


def position_mismatches(positions: Mapping[str, Mapping[str, PositionRecord]], slots: Sequence[Slot]) -> list[str]:
    """Open coordinator slots without a DB position and DB positions without a slot (per strategy and symbol)."""
    held = {(s.owner, s.symbol): s for s in slots}
    out = [f"{owner}:{symbol}: coordinator slot {slot.state} ({slot.client_order_id}) but no open position in the DB"
           for (owner, symbol), slot in sorted(held.items())
           # A reserved slot is an entry in flight; only an open slot claims a position.
           if slot.state == "open" and symbol not in positions.get(owner, {})]
    out += [f"{name}:{symbol}: open in the DB ({p.direction} {p.size}) but no coordinator slot"
            for name, by_symbol in sorted(positions.items()) for symbol, p in sorted(by_symbol.items())
            if (name, symbol) not in held]
    return out


def _coordinator_problems(redis: RedisResource, cfg: PineConfig,
                          positions: Mapping[str, Mapping[str, PositionRecord]]) -> list[str]:
    try:
        client = redis.client(cfg)
    except RedisUnavailableError as exc:
        return [f"coordinator state unreadable: {exc}"]
    try:
        # The owner name only scopes writes; reading every slot is owner-independent.
        slots = PortfolioCoordinator.from_config(client, "dagster", cfg).slots()
    finally:
        client.close()
    enabled = set(cfg.enabled_strategies())
    return position_mismatches(positions, [s for s in slots if s.owner in enabled])


def _result(name: str, problems: list[str], counts: Mapping[str, int], note: str = "") -> dg.AssetCheckResult:
    more = f"\n- … and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
    extra = {"replayed": note} if note else {}
    return dg.AssetCheckResult(
        check_name=name,
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(problems)} mismatch(es)" if problems else None,
        metadata={**counts, **extra, "mismatches": len(problems),
                  "details": dg.MetadataValue.md("\n".join(f"- `{p}`" for p in problems[:_LISTED]) + more
                                                 or "none")},
    )


def _alert(cfg: PineConfig, day: date, failed: Mapping[str, list[str]]) -> None:
    notifier = Notifier(cfg, "dagster", client=None, watch=False).start()
    try:
        lines = [f"{check}: {len(problems)} mismatch(es), e.g. {problems[0]}" for check, problems in failed.items()]
        notifier.publish(emergency_message(f"reconciliation:{day.isoformat()}", f"Reconciliation of {day} failed",
                                           "\n".join(lines)))
    finally:
        notifier.close()


def _through(signal_time: datetime, day: date, calendar: SessionCalendar) -> bool:
    # A daily signal bar ends at its session's close: the instant just before it belongs to its trading day.
    return calendar.trading_day(signal_time - timedelta(microseconds=1)) <= day


def _economics(t: TradeRecord) -> str:
    return (f"{t.direction} {t.size} {t.entry_price:g}→{t.exit_price:g} net {t.net_pnl:.2f} "
            f"({t.exit_reason}, {t.exit_time.isoformat()})")


def _trade_table(trades: Sequence[TradeRecord]) -> str:
    if not trades:
        return "No closed trades."
    rows = ["| strategy | symbol | direction | entry | exit | net P&L | reason |", "|---|---|---|---:|---:|---:|---|"]
    rows += [f"| {t.strategy} | {t.symbol} | {t.direction} | {t.entry_price:g} | {t.exit_price:g} | "
             f"{t.net_pnl:,.2f} | {t.exit_reason} |" for t in trades[:_LISTED]]
    return "\n".join(rows)
