"""SIGTERM during warmup and during live trading: a clean exit within the limit, a final heartbeat, and a
restart that loses no journal entry (every bar once, every order once, trades as a backtest's)."""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
import redis

from hub.synthetic import trading_days
from pine.bars import Bar
from pine.bus import BarPublisher
from pine.config import load_config
from tests.bar_factory import market
from tests.scenario import Feed, WorkerProc, ledgered, query
from tests.warmup_support import session_close, write_caches
from tests.worker_support import SPECS, STRATEGY, synthetic_market, write_config
from workers.backtest import backtest_window
from workers.feeds import feed_name
from workers.trades_db import TradesDB

# systemd's TimeoutStopSec and the seeds' Phase 4 requirement.
STOP_LIMIT_S = 30


def _series(bars: list[Bar]) -> dict[tuple[str, str], list[Bar]]:
    out: dict[tuple[str, str], list[Bar]] = {}
    for b in sorted(bars, key=lambda b: b.end):
        out.setdefault((b.symbol, b.timeframe), []).append(b)
    return out


def _beat(runtime: Path) -> dict:
    path = runtime / "heartbeat" / f"worker_{STRATEGY}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _term(worker: WorkerProc) -> int:
    worker.proc.send_signal(signal.SIGTERM)
    return worker.proc.wait(STOP_LIMIT_S)  # TimeoutExpired (a failure) past the limit


@pytest.mark.slow
def test_sigterm_while_draining_the_warmup_exits_cleanly(redis_url: str, tmp_path: Path) -> None:
    # Five weeks of dense minute history with 1min compression: seconds of draining through Backtrader.
    days = trading_days(date(2024, 1, 8), 25)
    bars = market(SPECS, days, seed=3, per_session=900)
    handover = session_close(days[-1])
    config = write_config(tmp_path / "c.yml", historical_warmup_compression="1min",
                          warmup={"daily_bars": 250, "hourly_days": 15, "minute_days": 40})
    runtime = tmp_path / "runtime"
    cfg = load_config(config)
    write_caches(runtime / "warmup", _series(bars), handover)

    worker = WorkerProc(config, STRATEGY, redis_url, runtime)
    worker.wait_for(lambda: _beat(runtime).get("warmup", {}).get("state") == "draining", "the warmup drain")
    assert _term(worker) == 0, worker.stderr[-3000:]
    beat = _beat(runtime)
    assert beat["status"] == "stopped" and beat["warmup"]["state"] == "draining"
    assert 0 < beat["warmup"]["delivered"] < beat["warmup"]["bars"]
    assert json.loads(redis.Redis.from_url(redis_url).get(f"heartbeat:worker:{STRATEGY}"))["status"] == "stopped"
    assert "SIGTERM received, stopping" in worker.stderr
    assert ledgered(runtime, STRATEGY) == 0 and query(runtime, "SELECT count(*) FROM orders") == [(0,)]
    assert cfg.strategies[STRATEGY].historical_warmup_compression == "1min"


@pytest.mark.slow
def test_sigterm_while_trading_exits_cleanly_and_the_restart_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yml")
    cfg = load_config(config)
    runtime = tmp_path / "runtime"
    bars = synthetic_market()
    days = sorted({b.end.date() for b in bars if b.timeframe == "daily"})
    handover = session_close(days[9])
    write_caches(runtime / "warmup", _series([b for b in bars if b.end <= handover]), handover)
    stream = [b for b in bars if b.end > handover]
    feed = Feed(BarPublisher(redis.Redis.from_url(redis_url)), stream)
    feed.until(handover + timedelta(days=20))  # a backlog: the worker is still working through it when stopped

    first = WorkerProc(config, STRATEGY, redis_url, runtime)
    first.wait_for(lambda: _beat(runtime).get("status") == "ready", "ready")
    first.wait_for(lambda: ledgered(runtime, STRATEGY) >= len(stream) // 4, "a quarter of the stream")
    assert _term(first) == 0, first.stderr[-3000:]
    beat = _beat(runtime)
    assert beat["status"] == "stopped" and beat["warmup"]["state"] == "done"
    done = ledgered(runtime, STRATEGY)
    assert 0 < done < len(stream)
    # Every order the first run decided reached the journal with a final status: nothing pending or in flight.
    assert {s for (s,) in query(runtime, "SELECT status FROM orders")} <= {"acknowledged"}

    second = WorkerProc(config, STRATEGY, redis_url, runtime, stop_at_end=True)
    feed.finish()
    second.finish()
    rows = query(runtime, "SELECT feed, stream_ms FROM bar_log WHERE strategy = ?", STRATEGY)
    assert Counter(rows) == Counter((feed_name(b.symbol, b.timeframe), int(b.timestamp.timestamp() * 1000))
                                    for b in stream)
    db = TradesDB(runtime / "trades.db")
    live = db.trades(STRATEGY)
    db.close()
    expected = backtest_window(cfg, STRATEGY, _series(bars), handover, max(b.end for b in bars)).journal.trades
    assert live == sorted(expected, key=lambda t: (t.exit_time, t.symbol, t.entry_time)) and len(live) >= 3
    orders = query(runtime, "SELECT client_order_id, status FROM orders")
    assert len(orders) == len({cid for cid, _ in orders}) and {s for _, s in orders} == {"acknowledged"}
    assert "replaying up to" in second.stderr
