"""The ``daily_reconciliation`` asset: live trades vs a backtest of the cached bars, orders, coordinator slots.

"Live" trades are the backtest's own trades recorded in the trades DB (what a worker in parity
writes); one deliberately altered trade, an unacknowledged order and a stray coordinator slot
must each fail their check. A live run's external decisions (an entry the portfolio coordinator
refused, an ML veto) are replayed into the backtest, so they are no mismatch.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import redis
import yaml

from assets.reconciliation import (
    COORDINATOR,
    ORDERS,
    PARITY,
    backtest_trades,
    daily_reconciliation,
    day_trades,
    order_mismatches,
)
from hub.synthetic import trading_days
from orchestration.resources import PineConfigResource, RedisResource
from pine.bar_cache import bars_frame, cache_path, read_bar_list, write_bars
from pine.bars import Bar
from pine.config import load_config
from pine.trade_records import TradeRecord
from tests.bar_factory import market
from tests.discord_support import FAST_RETRY, discord_server, event_ids
from tests.ml_support import REFERENCES, TRADED, write_ml_config
from tests.ml_support import STRATEGY as ML_STRATEGY
from tests.worker_support import STRATEGY, synthetic_market, write_config
from workers.coordinator import PortfolioCoordinator
from workers.delivery import PaperSender
from workers.execution import Execution, OrderRequest, Role
from workers.ml_veto import VETOED, RecordedDecisions
from workers.order_journal import OrderIntent, OrderJournal, OrderStatus
from workers.trades_db import DecisionRecord, LedgerEntry, TradesDB


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, date, list[TradeRecord]]:
    """Config, the busiest trading day of the backtest and its trades; the bars are in the warmup caches."""
    config = write_config(tmp_path / "config.yml")
    cfg = load_config(config)
    _write_caches(synthetic_market())
    calendar = cfg.sessions.calendar()
    every = backtest_trades(cfg, STRATEGY, calendar, date(2024, 3, 28), None)
    day, _ = Counter(calendar.trading_day(t.exit_time) for t in every).most_common(1)[0]
    trades = day_trades(every, day, calendar)
    assert len(trades) >= 2
    return config, day, trades


def _write_caches(bars: list[Bar]) -> None:
    """Every root and timeframe of ``bars`` as a warmup cache, complete through the last bar."""
    series: dict[tuple[str, str], list[Bar]] = {}
    for b in bars:
        series.setdefault((b.symbol, b.timeframe), []).append(b)
    cache_dir = Path(os.environ["PINE_RUNTIME_DIR"]) / "warmup"
    for (root, tf), group in series.items():
        write_bars(cache_path(cache_dir, root, tf), bars_frame(group), complete_through=bars[-1].end)


def _record(trades: list[TradeRecord], day: date, *, failed: str | None = None, strategy: str = STRATEGY,
            journaled_on: date | None = None) -> None:
    """The trades, and their exit orders journaled (under ``journaled_on``, default ``day``) as the broker
    answered (acknowledged unless ``failed``)."""
    db = TradesDB(Path(os.environ["PINE_RUNTIME_DIR"]) / "trades.db")
    db.record_step(strategy, [], trades)
    journal = OrderJournal(db)
    for t in trades:
        assert t.exit_order_id is not None
        journal.add(OrderIntent(t.exit_order_id, strategy, t.symbol, t.contract, "exit", "sell", "exit", t.size,
                                "market", None, t.exit_price, t.exit_reason, t.exit_time, journaled_on or day,
                                "paper", {}))
        status = OrderStatus.FAILED if t.exit_order_id == failed else OrderStatus.ACKNOWLEDGED
        journal.finish(t.exit_order_id, status, attempts=1, http_status=200, response="ok", error=None)
    db.close()


def _with_discord(config: Path, url: str) -> None:
    doc = yaml.safe_load(config.read_text())
    doc["notifications"] = {**FAST_RETRY, "discord_webhook_url": url}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))


def _materialize(config: Path, day: date, redis_url: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [daily_reconciliation], partition_key=day.isoformat(), raise_on_error=False,
        resources={"pine_config": PineConfigResource(config_path=str(config)), "redis": RedisResource(url=redis_url)},
    )


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


def test_unaltered_day_reconciles(setup: tuple[Path, date, list[TradeRecord]], redis_url: str) -> None:
    config, day, trades = setup
    _record(trades, day)
    with discord_server() as server:
        _with_discord(config, server.url)
        result = _materialize(config, day, redis_url)
    assert result.success
    assert server.requests == []  # nothing to alert
    (event,) = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["trading_day"].value == day.isoformat()
    assert meta["trades"] == dg.MetadataValue.int(len(trades)) and meta["mismatches"] == dg.MetadataValue.int(0)
    assert f"| {STRATEGY} | {trades[0].symbol} |" in meta["preview"].value
    checks = _checks(result)
    assert set(checks) == {PARITY, ORDERS, COORDINATOR}
    assert all(e.passed for e in checks.values()), {k: e.metadata["details"] for k, e in checks.items()}
    assert checks[PARITY].metadata["backtest_trades"] == dg.MetadataValue.int(len(trades))


def test_altered_trade_and_stray_slot_are_reported(setup: tuple[Path, date, list[TradeRecord]],
                                                   redis_url: str) -> None:
    config, day, trades = setup
    altered = replace(trades[0], exit_price=trades[0].exit_price + 1.0, net_pnl=trades[0].net_pnl + 99.0)
    _record([altered, *trades[1:]], day, failed=trades[1].exit_order_id)
    coordinator = PortfolioCoordinator.from_config(redis.Redis.from_url(redis_url), STRATEGY, load_config(config))
    assert coordinator.reserve("ZB", "cid-zb", day).granted and coordinator.confirm("ZB")

    with discord_server() as server:
        _with_discord(config, server.url)
        result = _materialize(config, day, redis_url)
    assert not result.success  # blocking checks fail the run
    # One Discord alert naming the day and each failed check (delivered before the step ended).
    assert event_ids(server.requests) == [f"reconciliation:{day.isoformat()}"]
    description = server.requests[0].body["embeds"][0]["description"]
    assert all(name in description for name in (PARITY, ORDERS, COORDINATOR))
    checks = _checks(result)
    assert not checks[PARITY].passed and checks[PARITY].severity == dg.AssetCheckSeverity.ERROR
    details = checks[PARITY].metadata["details"].value
    assert altered.trade_id in details and "≠ backtest" in details
    assert checks[PARITY].metadata["mismatches"] == dg.MetadataValue.int(1)
    assert not checks[COORDINATOR].passed
    assert f"{STRATEGY}:ZB: coordinator slot open (cid-zb)" in checks[COORDINATOR].metadata["details"].value
    assert not checks[ORDERS].passed
    assert f"order {trades[1].exit_order_id} ({trades[1].symbol} exit) is failed" in (
        checks[ORDERS].metadata["details"].value)
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["mismatches"] == dg.MetadataValue.int(4)


def test_without_a_trades_db_the_backtests_trades_are_missing_and_no_db_is_created(
        setup: tuple[Path, date, list[TradeRecord]], redis_url: str) -> None:
    config, day, trades = setup
    result = _materialize(config, day, redis_url)
    assert not result.success
    checks = _checks(result)
    assert checks[PARITY].metadata["mismatches"] == dg.MetadataValue.int(len(trades))
    assert "backtest trade not recorded live" in checks[PARITY].metadata["details"].value
    assert checks[ORDERS].passed and checks[COORDINATOR].passed
    assert not (Path(os.environ["PINE_RUNTIME_DIR"]) / "trades.db").exists()


def test_a_cache_that_ends_before_the_close_fails_parity_saying_what_to_run(
        setup: tuple[Path, date, list[TradeRecord]], redis_url: str) -> None:
    """Live trades against caches a day short: a stale cache, named, not a list of 'missing' trades."""
    config, day, trades = setup
    _record(trades, day)
    cache_dir = Path(os.environ["PINE_RUNTIME_DIR"]) / "warmup"
    symbol = trades[0].symbol
    stale = cache_path(cache_dir, symbol, "daily")
    bars = read_bar_list(stale)
    write_bars(stale, bars_frame(bars), complete_through=min(b.end for b in bars if b.end.date() >= day)
               - timedelta(days=1))
    result = _materialize(config, day, redis_url)
    assert not result.success
    details = _checks(result)[PARITY].metadata["details"].value
    assert f"the {symbol} daily cache ends before the close" in details
    assert f"materialise warmup_cache for {symbol}" in details and "not recorded live" not in details


def _signal_time(cid: str) -> datetime:
    """The signal bar's end encoded in a client order id (``workers.order_journal.client_order_id``)."""
    return datetime.strptime(cid.split("-")[-2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.fixture
def decided_day(tmp_path: Path, redis_url: str) -> tuple[Path, date, list[TradeRecord], str]:
    """An ML strategy's day on which the live run was refused one entry by the portfolio coordinator and vetoed
    one signal, both recorded as a worker records them; returns the config, the day, its live trades and the
    refused client order id."""
    config = write_ml_config(tmp_path / "config.yml", live=True)
    cfg = load_config(config)
    calendar = cfg.sessions.calendar()
    # The ML market's roots (traded CL and GC, the references the features read) on days with partitions.
    days = trading_days(date(2024, 1, 8), 24)
    bars = sorted(market(REFERENCES, days, seed=5, per_session=8) + market(TRADED, days, seed=5),
                  key=lambda b: (b.end, b.symbol, b.timeframe))
    _write_caches(bars)
    last = calendar.trading_day(bars[-1].end - timedelta(microseconds=1))
    every = backtest_trades(cfg, ML_STRATEGY, calendar, last, None)
    by_day: dict[date, list[TradeRecord]] = {}
    for t in every:
        by_day.setdefault(calendar.trading_day(t.exit_time - timedelta(microseconds=1)), []).append(t)
    # The latest day on which both symbols closed a trade: refuse one's entry, veto the other's signal.
    day = max(d for d, trades in by_day.items() if len({t.symbol for t in trades}) == 2)
    refused, vetoed = (min((t for t in by_day[day] if t.symbol == s), key=lambda t: t.entry_time) for s in ("CL", "GC"))
    assert refused.entry_order_id is not None and vetoed.entry_order_id is not None
    veto = DecisionRecord(ML_STRATEGY, vetoed.symbol, _signal_time(vetoed.entry_order_id), "ibs_ml-GC", "3", 0.31,
                          0.55, False, False, VETOED, "{}")
    live = day_trades(backtest_trades(cfg, ML_STRATEGY, calendar, day, None, refused={refused.entry_order_id},
                                      ml_decisions=RecordedDecisions([veto])), day, calendar)
    live_ids = {t.trade_id for t in live}
    # The decisions change the day (a plain backtest would not match it), and a trade is left to alter.
    assert refused.trade_id not in live_ids and vetoed.trade_id not in live_ids and live

    _record(live, day, strategy=ML_STRATEGY)
    db = TradesDB(Path(os.environ["PINE_RUNTIME_DIR"]) / "trades.db", calendar=calendar)
    db.record_step(ML_STRATEGY, [], [], decisions=[veto])
    # Another strategy holds the portfolio's only slot: the coordinator denies the entry, as it did live.
    client = redis.Redis.from_url(redis_url)
    other = PortfolioCoordinator(client, "other", max_positions=1, daily_stop_loss=1e9, lease_ttl_s=60)
    assert other.reserve("ES", "other-ES", day).granted and other.confirm("ES")
    coordinator = PortfolioCoordinator(client, ML_STRATEGY, max_positions=1, daily_stop_loss=1e9, lease_ttl_s=60)
    execution = Execution(ML_STRATEGY, db=db, journal=OrderJournal(db), sender=PaperSender(), calendar=calendar,
                          coordinator=coordinator)
    cid = refused.entry_order_id
    decision = execution.submit(OrderRequest(cid, refused.symbol, refused.contract, Role.ENTRY, "buy", refused.size,
                                             "ibs", _signal_time(cid), refused.entry_requested_price, False))
    assert (decision.accepted, decision.status) == (False, "denied")
    order = OrderJournal(db).get(cid)
    assert order is not None and (order.status, order.error) == (OrderStatus.CANCELLED,
                                                                 "denied: portfolio: max_positions")
    assert order_mismatches([order], []) == []  # never sent: nothing for the broker to acknowledge
    db.close()
    client.close()
    return config, day, live, cid


def test_refused_entries_and_ml_vetoes_of_the_live_run_are_replayed(
        decided_day: tuple[Path, date, list[TradeRecord], str], redis_url: str) -> None:
    config, day, live, _ = decided_day
    result = _materialize(config, day, redis_url)
    checks = _checks(result)
    assert result.success, {k: e.metadata["details"] for k, e in checks.items()}
    meta = checks[PARITY].metadata
    assert meta["replayed"].value == "1 refused entries and 1 ML vetoes replayed (of 1 recorded ML decisions)"
    assert meta["backtest_trades"] == dg.MetadataValue.int(len(live))
    assert checks[ORDERS].passed and checks[COORDINATOR].passed


def test_with_decisions_replayed_an_altered_trade_is_still_the_one_mismatch(
        decided_day: tuple[Path, date, list[TradeRecord], str], redis_url: str) -> None:
    config, day, live, _ = decided_day
    altered = replace(live[-1], exit_price=live[-1].exit_price + 1.0, net_pnl=live[-1].net_pnl + 99.0)
    db = TradesDB(Path(os.environ["PINE_RUNTIME_DIR"]) / "trades.db")
    db.conn.execute("UPDATE trades SET exit_price = ?, net_pnl = ? WHERE trade_id = ?",
                    (altered.exit_price, altered.net_pnl, altered.trade_id))
    db.close()
    result = _materialize(config, day, redis_url)
    assert not result.success
    parity = _checks(result)[PARITY]
    assert parity.metadata["mismatches"] == dg.MetadataValue.int(1)  # no cascade from the replayed decisions
    assert f"{altered.trade_id}: live" in parity.metadata["details"].value


def test_an_exit_journaled_the_trading_day_before_its_fill_is_acknowledged(
        setup: tuple[Path, date, list[TradeRecord]], redis_url: str) -> None:
    """An exit signalled at the close fills at the next open: the order is journaled one trading day, the trade
    is booked the next. Its acknowledgement is found in the journal whatever the day."""
    config, day, trades = setup
    _record(trades, day, journaled_on=day - timedelta(days=1))
    checks = _checks(_materialize(config, day, redis_url))
    assert checks[ORDERS].passed, checks[ORDERS].metadata["details"]
    assert order_mismatches([], trades, {}) == [
        f"{t.trade_id}: exit order {t.exit_order_id} is not in the order journal" for t in trades]


def test_the_backtest_trades_from_the_first_live_bar_when_not_told(
        setup: tuple[Path, date, list[TradeRecord]], redis_url: str) -> None:
    """Without trading_from the backtest starts where the worker did (its first ledgered live bar), warming up
    on compressed bars before it, as the worker did: not from the first cached bar."""
    config, day, _ = setup
    cfg = load_config(config)
    calendar = cfg.sessions.calendar()
    everything = backtest_trades(cfg, STRATEGY, calendar, day, None)
    # The worker started a few sessions before the day, with an earlier position of the full run still open.
    opened_before = max(t.entry_time for t in everything if calendar.trading_day(t.exit_time) < day)
    first_bar = opened_before + timedelta(minutes=1)
    live = day_trades(backtest_trades(cfg, STRATEGY, calendar, day, first_bar - timedelta(microseconds=1)), day,
                      calendar)
    db = TradesDB(Path(os.environ["PINE_RUNTIME_DIR"]) / "trades.db")
    db.record_step(STRATEGY, [LedgerEntry("CL:1min", (int(first_bar.timestamp() * 1000), 0), first_bar)], [])
    db.close()
    _record(live, day)
    checks = _checks(_materialize(config, day, redis_url))
    assert checks[PARITY].passed, checks[PARITY].metadata["details"]
    assert checks[PARITY].metadata["backtest_trades"] == dg.MetadataValue.int(len(live))
    assert live != day_trades(everything, day, calendar)  # the start matters: the check would fail on it
