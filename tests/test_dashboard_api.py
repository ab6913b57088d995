"""The dashboard's JSON API in this process (uvicorn on a thread, real Redis, trades DB written by the workers'
writer): today's P&L, and health as the heartbeats tell it — warmup, missing feeds, gaps, a stale heartbeat."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import requests

from pine.config import load_config
from pine.heartbeat import Heartbeat
from pine.trade_records import TradeRecord
from tests.dashboard_support import served
from tests.scenario import write_config
from workers.trades_db import TradesDB


def _trade(strategy: str, symbol: str, exit_time: datetime, net: float) -> TradeRecord:
    return TradeRecord(strategy=strategy, symbol=symbol, contract=f"{symbol}H4", direction="long", size=1,
                       entry_time=exit_time - timedelta(hours=20), entry_price=100.0, exit_time=exit_time,
                       exit_price=100.0 + net / 1000, pnl=net + 9.0, commission=9.0, net_pnl=net,
                       exit_reason="ibs_exit", bars_held=1)


def test_todays_pnl_and_health_details(redis_url: str, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yml", {"s1": {"symbols": ["CL"]}, "s2": {"symbols": ["GC"]}}))
    now = datetime.now(UTC)
    db = TradesDB(cfg.trades_db_path, calendar=cfg.sessions.calendar())
    db.record_step("s1", [], [_trade("s1", "CL", datetime(2024, 2, 6, 23, 6, tzinfo=UTC), -29.0),
                              _trade("s1", "CL", now - timedelta(seconds=2), 410.5)])
    db.record_step("s2", [], [_trade("s2", "GC", now - timedelta(seconds=1), -120.25)])
    days = dict(db.conn.execute("SELECT trading_day, SUM(net_pnl) FROM trades GROUP BY trading_day").fetchall())
    db.close()

    client = redis.Redis.from_url(redis_url)
    gap = {"start": "2024-02-05T14:00:01+00:00", "end": "2024-02-05T14:02:30+00:00", "recovered": 120}
    Heartbeat("hub", cfg.heartbeat, cfg.runtime_dir, client).beat(
        "streaming", force=True, data_clock=(now - timedelta(seconds=90)).isoformat(), gaps=[gap] * 5, gaps_total=5,
        gaps_unrecovered=1)
    Heartbeat("worker:s1", cfg.heartbeat, cfg.runtime_dir, client).beat(
        "warming_up", force=True, warmup={"state": "draining", "bars": 5000, "delivered": 1200},
        missing_feeds=["VIX_day", "VIX_hour"], bars={"CL_minute": 3}, bad_messages=2,
        last_bar_end={"CL_minute": (now - timedelta(minutes=3)).isoformat()})
    # s2 died long ago: its Redis key expired, only its file is left.
    s2 = Heartbeat("worker:s2", cfg.heartbeat, cfg.runtime_dir, None)
    s2.path.parent.mkdir(parents=True, exist_ok=True)
    s2.path.write_text(json.dumps({"component": "worker:s2", "status": "ready", "time": time.time() - 600}))

    with served(cfg, redis_url) as url:
        pnl = requests.get(f"{url}/api/pnl", timeout=10).json()
        health = requests.get(f"{url}/api/health", timeout=10).json()
        monitor = requests.get(f"{url}/health", timeout=10)

    today = pnl["today"]
    assert today["trading_day"] in days and len(days) == 2  # the two recent trades are today's
    assert today == {"trading_day": today["trading_day"], "net_pnl": round(days[today["trading_day"]], 2),
                     "trades": 2}
    assert [d["trading_day"] for d in pnl["days"]] == sorted(days) and pnl["equity"][-1]["value"] == 261.25

    hub, s1, s2_health = health["components"]
    assert (hub["status"], hub["fresh"], hub["gaps"]["total"], hub["gaps"]["unrecovered"]) == ("streaming", True, 5, 1)
    assert len(hub["gaps"]["recent"]) == 3 and hub["lag_s"] >= 90
    assert (s1["status"], s1["fresh"], s1["warmup"]) == ("warming_up", True, "draining 1,200/5,000 bars")
    assert s1["missing_feeds"] == ["VIX_day", "VIX_hour"] and s1["gaps"] == {"bad_messages": 2}
    assert s1["lag_s"] >= 180
    assert s2_health["fresh"] is False and s2_health["source"] == "file"
    assert health["reasons"] == [f"worker:s2: last heartbeat {s2_health['age_s']:.0f}s ago (ttl 30s)",
                                 "worker:s2: heartbeat missing in Redis (file only)"]
    assert monitor.status_code == 503 and monitor.json()["reasons"] == health["reasons"]
