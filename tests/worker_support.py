"""Helpers for worker tests: a small config file, the synthetic market, worker subprocesses."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from hub.synthetic import trading_days
from pine.bars import Bar
from tests.bar_factory import SymbolSpec, market

REPO = Path(__file__).resolve().parents[1]
STRATEGY = "ibs_t"
SPECS = (
    SymbolSpec("6A", 0.6600, 0.00005, "6AM4", 101),
    SymbolSpec("CL", 78.00, 0.01, "CLK4", 202),
    SymbolSpec("GC", 2050.0, 0.10, "GCJ4", 303),
)
INSTRUMENTS = {
    "6A": {"multiplier": 100000, "tick_size": 0.00005, "databento_product_id": "6A.FUT", "margin": 2200,
           "commission": 4.5},
    "CL": {"multiplier": 1000, "tick_size": 0.01, "databento_product_id": "CL.FUT", "exchange": "NYMEX",
           "margin": 6000, "commission": 4.5},
    "GC": {"multiplier": 100, "tick_size": 0.10, "databento_product_id": "GC.FUT", "exchange": "COMEX",
           "margin": 11000, "commission": 4.5},
}
IBS_PARAMS = {"entry_low": 0.25, "exit_high": 0.75, "max_bars_held": 3, "stop_pct": 0.008}


def write_config(path: Path, *, strategy_params: dict[str, Any] | None = None, **strategy: Any) -> Path:
    """A config with one IBS strategy ``ibs_t`` trading 6A, CL and GC."""
    doc = {
        "heartbeat": {"interval": 1, "write_interval": 0.2, "ttl": 30},
        # Parity with the direct backtest (which has no portfolio coordinator): limits never bind.
        "portfolio": {"starting_cash": 250000, "max_positions": 50, "daily_stop_loss": 10_000_000},
        "strategies": {
            STRATEGY: {
                "strategy_type": "ibs",
                "starting_cash": 150000,
                "slippage_ticks": 1,
                "params": strategy_params if strategy_params is not None else IBS_PARAMS,
                "instruments": {
                    "6A": {"size": 2, "commission": 4.0},
                    "CL": {"size": 1, "slippage_ticks": 2},
                    "GC": {"size": 1},
                },
                **strategy,
            }
        },
        "instruments": INSTRUMENTS,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def synthetic_market(sessions: int = 24, *, seed: int = 11) -> list[Bar]:
    """The worker tests' market: three symbols, ``sessions`` sessions across the March 2024 DST change."""
    return market(SPECS, trading_days(date(2024, 2, 26), sessions), seed=seed)


def worker_env(redis_url: str | None, runtime: Path) -> dict[str, str]:
    """The test's environment with REDIS_URL (unless None) and PINE_RUNTIME_DIR set."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PINE_CONFIG")}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    env["PINE_RUNTIME_DIR"] = str(runtime)
    env["PYTHONPATH"] = str(REPO)
    return env


def worker_cmd(config: Path, strategy: str = STRATEGY, *extra: str) -> list[str]:
    """``python -m pine.cli worker --config … --strategy …`` plus ``extra``."""
    return [sys.executable, "-m", "pine.cli", "worker", "--config", str(config), "--strategy", strategy, *extra]


def start_worker(config: Path, redis_url: str, runtime: Path, *, stop_at_end: bool = True) -> subprocess.Popen[str]:
    """A worker subprocess of ``ibs_t`` (with ``--stop-at-end`` unless told otherwise); output captured."""
    extra = ["--stop-at-end"] if stop_at_end else []
    return subprocess.Popen(
        worker_cmd(config, STRATEGY, *extra), env=worker_env(redis_url, runtime), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def bar_log(runtime: Path) -> list[tuple[str, int, int]]:
    """(feed, stream ms, stream seq) of every ledgered bar, duplicates included."""
    db = runtime / "trades.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT feed, stream_ms, stream_seq FROM bar_log").fetchall()
    except sqlite3.OperationalError:
        return []  # the worker has not created its schema yet
    finally:
        conn.close()
