"""``pine worker --check`` and the preflight at start: what is checked, and ``fail_fast``."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import redis

from pine.bus import BarPublisher
from pine.trade_records import PositionRecord
from tests.scenario import DAYS, Feed, market, pine, write_config
from workers.coordinator import PortfolioCoordinator
from workers.trades_db import LedgerEntry, TradesDB

T0 = datetime(2024, 2, 5, 23, 6, tzinfo=UTC)


def _check(config: Path, redis_url: str, runtime: Path, *extra: str) -> tuple[int, str]:
    done = pine("worker", "--strategy", "pf", "--config", str(config), *extra, redis_url=redis_url, runtime=runtime)
    return done.returncode, done.stdout + done.stderr


def test_a_fresh_worker_is_ready_and_says_what_it_checked(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yml", {"pf": {"symbols": ["CL"]}})
    code, out = _check(config, redis_url, tmp_path / "runtime", "--check")
    assert code == 0, out
    for line in ("ok    config", "ok    redis", "ok    killswitch   off", "skip  broker       paper broker",
                 "ok    trades db", "writable (schema v3, migrated to v3, WAL)",
                 "warn  warmup data  3 of 3 bar streams have no bars yet", "=> ready"):
        assert line in out, out
    Feed(BarPublisher(redis.Redis.from_url(redis_url)), market({DAYS[0]: {}}, ["CL"])).finish()
    code, out = _check(config, redis_url, tmp_path / "runtime", "--check")
    assert code == 0 and "ok    warmup data  all 3 bar streams have bars" in out, out


def test_a_position_without_an_acknowledged_entry_stops_the_worker(redis_url: str, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    db = TradesDB(runtime / "trades.db")
    position = PositionRecord("pf", "CL", "CLH4", "long", 1, T0, 78.01, "pf-CL-20240205T230000Z-buy", 78.0,
                              "ibs=0.1", None, 1, 78.02, 78.0)
    db.record_step("pf", [LedgerEntry("CL_minute", (1, 0), T0)], [], [], {"CL": position})
    db.close()
    # A stale slot in the coordinator, as a crashed run may leave one.
    PortfolioCoordinator(redis.Redis.from_url(redis_url), "pf", max_positions=2, daily_stop_loss=1,
                         lease_ttl_s=60).reserve("GC", "pf-GC-x", T0.date())

    strict = write_config(tmp_path / "strict.yml", {"pf": {"symbols": ["CL"]}})
    code, out = _check(strict, redis_url, runtime, "--check")
    assert code == 1, out
    assert "fail  reconcile    CL: open in the DB (long 1 @ 78.01" in out
    assert "its entry order pf-CL-20240205T230000Z-buy is not journaled" in out
    assert "warn  reconcile    GC: the coordinator holds a reserved slot (pf-GC-x)" in out
    assert "=> FAILED" in out
    code, out = _check(strict, redis_url, runtime, "--stop-at-end")
    assert code == 1 and "refusing to start (preflight.fail_fast)" in out, out

    Feed(BarPublisher(redis.Redis.from_url(redis_url)), market({DAYS[0]: {}}, ["CL"])).finish()
    lenient = write_config(tmp_path / "lenient.yml", {"pf": {"symbols": ["CL"]}}, preflight={"fail_fast": False})
    code, out = _check(lenient, redis_url, runtime, "--stop-at-end")
    assert code == 0, out
    assert "preflight failed; starting anyway" in out
    assert "reconcile: CL: open in the DB" in out  # reported again when trading starts


def test_an_unusable_trades_db_fails_the_check(redis_url: str, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    conn = sqlite3.connect(runtime / "trades.db")
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    config = write_config(tmp_path / "c.yml", {"pf": {"symbols": ["CL"]}})
    code, out = _check(config, redis_url, runtime, "--check")
    assert code == 1 and "fail  trades db" in out and "schema v7, newer than this Pine's v3" in out, out
