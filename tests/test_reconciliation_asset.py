"""The ``daily_reconciliation`` asset: live trades vs a backtest of the cached bars, orders, coordinator slots.

"Live" trades are the backtest's own trades recorded in the trades DB (what a worker in parity
writes); one deliberately altered trade, an unacknowledged order and a stray coordinator slot
must each fail their check.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
import redis
import yaml

from assets.reconciliation import COORDINATOR, ORDERS, PARITY, backtest_trades, daily_reconciliation, day_trades
from orchestration.resources import PineConfigResource, RedisResource
from pine.bar_cache import bars_frame, cache_path, read_bar_list, write_bars
from pine.config import load_config
from pine.trade_records import TradeRecord
from tests.discord_support import FAST_RETRY, discord_server, event_ids
from tests.worker_support import STRATEGY, synthetic_market, write_config
from workers.coordinator import PortfolioCoordinator
from workers.order_journal import OrderIntent, OrderJournal, OrderStatus
from workers.trades_db import TradesDB


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, date, list[TradeRecord]]:
    """Config, the busiest trading day of the backtest and its trades; the bars are in the warmup caches."""
    config = write_config(tmp_path / "config.yml")
    cfg = load_config(config)
    bars = synthetic_market()
    series: dict[tuple[str, str], list] = {}
    for b in bars:
        series.setdefault((b.symbol, b.timeframe), []).append(b)
    cache_dir = Path(os.environ["PINE_RUNTIME_DIR"]) / "warmup"
    for (root, tf), group in series.items():
        write_bars(cache_path(cache_dir, root, tf), bars_frame(group), complete_through=bars[-1].end)
    calendar = cfg.sessions.calendar()
    every = backtest_trades(cfg, STRATEGY, calendar, date(2024, 3, 28), None)
    day, _ = Counter(calendar.trading_day(t.exit_time) for t in every).most_common(1)[0]
    trades = day_trades(every, day, calendar)
    assert len(trades) >= 2
    return config, day, trades


def _record(trades: list[TradeRecord], day: date, *, failed: str | None = None) -> None:
    """The trades, and their exit orders journaled as the broker answered (acknowledged unless ``failed``)."""
    db = TradesDB(Path(os.environ["PINE_RUNTIME_DIR"]) / "trades.db")
    db.record_step(STRATEGY, [], trades)
    journal = OrderJournal(db)
    for t in trades:
        assert t.exit_order_id is not None
        journal.add(OrderIntent(t.exit_order_id, STRATEGY, t.symbol, t.contract, "exit", "sell", "exit", t.size,
                                "market", None, t.exit_price, t.exit_reason, t.exit_time, day, "paper", {}))
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
