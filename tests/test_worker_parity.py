"""IBS paper trades of the live worker (bars through Redis) equal a direct Backtrader run on the same bars."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import redis

from pine.bus import BarPublisher
from pine.config import load_config
from pine.redis_server import connect
from tests.bar_factory import boundaries, publish
from tests.worker_support import STRATEGY, bar_log, start_worker, synthetic_market, write_config
from workers.engine import resolve_strategy, run_backtest
from workers.feeds import feed_name
from workers.main import Worker
from workers.trades_db import TradesDB


def test_live_worker_trades_equal_direct_backtest(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml")
    runtime = tmp_path / "runtime"
    bars = synthetic_market()
    client = redis.Redis.from_url(redis_url)

    # The worker starts before the first bar and follows the hub boundary by boundary.
    worker = start_worker(config, redis_url, runtime)
    publisher = BarPublisher(client)
    groups = boundaries(bars)
    for end, group in groups:
        publisher.publish(group, end)
    publisher.publish([], groups[-1][0], state="finished")
    _, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err

    db = TradesDB(runtime / "trades.db")
    live = db.trades(STRATEGY)
    db.close()
    backtest = run_backtest(load_config(config), STRATEGY, bars)
    assert live == sorted(backtest.trades, key=lambda t: (t.exit_time, t.symbol, t.entry_time))

    reasons = Counter(t.exit_reason for t in live)
    assert len(live) >= 6 and {"ibs_exit", "max_bars", "stop"} <= set(reasons), reasons
    assert {t.symbol for t in live} == {"6A", "CL", "GC"}
    published = Counter((feed_name(b.symbol, b.timeframe), int(b.timestamp.timestamp() * 1000), 0) for b in bars)
    assert Counter(bar_log(runtime)) == published

    beat = json.loads((runtime / "heartbeat" / f"worker_{STRATEGY}.json").read_text())
    assert beat["status"] == "finished"
    assert beat["trades_recorded"] == len(live)
    assert sum(beat["bars"].values()) == len(bars)
    assert beat["open_positions"] == backtest.stats.positions


def test_small_xread_count_still_releases_bars_in_backtest_order(redis_url: str, tmp_path: Path) -> None:
    """Everything is published before the worker starts and every XREAD hits its COUNT limit."""
    config = write_config(tmp_path / "config.yml")
    bars = synthetic_market(sessions=12)
    publish(redis.Redis.from_url(redis_url), bars)
    cfg = load_config(config)
    worker = Worker(cfg, resolve_strategy(cfg, STRATEGY), connect(redis_url), stop_at_end=True)
    worker.source.count = 7
    assert worker.run() == 0

    db = TradesDB(cfg.runtime_dir / "trades.db")
    live = db.trades(STRATEGY)
    db.close()
    direct = run_backtest(cfg, STRATEGY, bars).trades
    assert len(live) >= 3
    assert live == sorted(direct, key=lambda t: (t.exit_time, t.symbol, t.entry_time))
    assert len(bar_log(cfg.runtime_dir)) == len(bars)
