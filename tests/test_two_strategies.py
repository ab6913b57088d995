"""IBS and breakout side by side on one hub (real DBN replay), warmed up from caches built by `pine warmup
build`; then `pine backtest` over the replayed days equals each live worker's trades."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import redis
import yaml

from hub.synthetic import write_synthetic_market
from orchestration.backtest import trade_dict
from pine import redis_names
from pine.config import load_config
from pine.contracts import load_contract_map
from tests.scenario import INSTRUMENTS, WorkerProc, pine, query
from workers.feeds import FEED_TIMEFRAMES, feed_name
from workers.trades_db import TradesDB

STRATEGIES = {
    "ibs_p": {"strategy_type": "ibs", "instruments": ["CL", "GC"],
              "params": {"entry_low": 0.5, "exit_high": 0.5, "max_bars_held": 1, "stop_pct": 0.05}},
    "trend_p": {"strategy_type": "breakout", "instruments": ["ES", "NQ"], "historical_warmup_compression": "1d",
                "params": {"entry_period": 3, "exit_period": 1, "atr_period": 3, "atr_stop": 1.0, "max_bars_held": 1}},
}
NQ = {"multiplier": 20, "tick_size": 0.25, "databento_product_id": "NQ.FUT", "exchange": "CME", "margin": 17600,
      "commission": 4.0}
# Away from contract rolls: a hub replaying only the live days picks the same contracts as the whole archive.
HISTORY = (date(2024, 1, 22), 10)
LIVE = (date(2024, 2, 5), 4)


@pytest.mark.slow
def test_two_strategies_on_one_hub_trade_what_their_backtests_trade(redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "two.yml"
    config.write_text(yaml.safe_dump({
        "heartbeat": {"interval": 1, "write_interval": 0.5, "ttl": 30},
        "portfolio": {"max_positions": 50, "daily_stop_loss": 10_000_000},
        "strategies": STRATEGIES,
        "instruments": {**{r: INSTRUMENTS[r] for r in ("CL", "GC", "ES")}, "NQ": NQ},
    }))
    cfg = load_config(config)
    runtime = tmp_path / "runtime"
    roots = sorted(cfg.instruments)
    cmap = load_contract_map(cfg.contract_map_path)
    history = write_synthetic_market(tmp_path / "history", roots, *HISTORY, 7, cmap)
    live = write_synthetic_market(tmp_path / "live", roots, *LIVE, 7, cmap)

    build = pine("warmup", "build", "--config", str(config), "--archive", str(history[0].parent),
                 redis_url=redis_url, runtime=runtime)
    assert build.returncode == 0, build.stderr
    assert "complete through 2024-02-02T23:00:00+00:00" in build.stdout  # the last history session's close

    workers = {name: WorkerProc(config, name, redis_url, runtime, stop_at_end=True) for name in STRATEGIES}
    hub = pine("hub", "--config", str(config), "--replay", str(live[0].parent), redis_url=redis_url, runtime=runtime)
    assert hub.returncode == 0, hub.stderr
    for worker in workers.values():
        worker.finish()

    client = redis.Redis.from_url(redis_url)
    db = TradesDB(runtime / "trades.db")
    for name, spec in STRATEGIES.items():
        assert "warmup done" in workers[name].stderr
        # Every bar the hub published on this strategy's feeds was processed once (none came from before the caches).
        published = Counter(
            (feed_name(sym, tf), int(entry_id.split(b"-")[0]))
            for sym in spec["instruments"] for tf in FEED_TIMEFRAMES
            for entry_id, _ in client.xrange(redis_names.stream(sym, tf)))
        assert Counter(query(runtime, "SELECT feed, stream_ms FROM bar_log WHERE strategy = ?", name)) == published

        trades = sorted(db.trades(name), key=lambda t: (t.exit_time, t.symbol, t.entry_time))
        assert trades and {t.symbol for t in trades} <= set(spec["instruments"]), name
        back = pine("backtest", "--config", str(config), "--strategy", name, "--from", "2024-02-05", "--to",
                    "2024-02-08", "--archive", str(history[0].parent), str(live[0].parent), "--json",
                    redis_url=redis_url, runtime=runtime)
        assert back.returncode == 0, back.stderr
        expected = sorted((json.loads(line) for line in back.stdout.splitlines()),
                          key=lambda t: (t["exit_time"], t["symbol"], t["entry_time"]))
        assert [trade_dict(t) for t in trades] == expected, name
    assert {t.exit_reason for t in db.trades("trend_p")} >= {"max_bars"}

    # The same from caches that cover the replayed days too (built from the whole archive).
    whole = pine("warmup", "build", "--config", str(config), "--archive", str(history[0].parent),
                 str(live[0].parent), redis_url=redis_url, runtime=runtime)
    assert whole.returncode == 0, whole.stderr
    cached = pine("backtest", "--config", str(config), "--strategy", "ibs_p", "--from", "2024-02-05", "--to",
                  "2024-02-08", "--source", "cache", "--json", redis_url=redis_url, runtime=runtime)
    assert cached.returncode == 0, cached.stderr
    assert [json.loads(line) for line in cached.stdout.splitlines()] == [
        trade_dict(t) for t in sorted(db.trades("ibs_p"), key=lambda t: (t.exit_time, t.symbol, t.entry_time))]
    db.close()
