"""The daily summary: schedule ticks at the CME close (DST-correct, no weekends) and the asset from the trades DB."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

# Dagster's own tick iterator: what the daemon uses to decide when a schedule fires.
from dagster._utils.schedules import schedule_execution_time_iterator

from assets.daily_summary import daily_summary, last_closed_trading_day, summarize_day
from orchestration.resources import PineConfigResource
from orchestration.schedules import daily_summary_schedule
from pine.sessions import SessionCalendar
from tests.conftest import REPO
from tests.worker_support import write_config
from workers.trades_db import TradesDB

CHICAGO = ZoneInfo("America/Chicago")


def _ticks(start: datetime, n: int) -> list[str]:
    schedule = daily_summary_schedule
    times = schedule_execution_time_iterator(start.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    return [next(times).astimezone(UTC).strftime("%a %Y-%m-%d %H:%M") for _ in range(n)]


def test_ticks_at_the_session_close_in_summer_and_winter_and_never_at_weekends() -> None:
    # A week from Saturday: Monday to Friday only, 17:00 Chicago = 22:00 UTC (CDT) / 23:00 UTC (CST).
    assert _ticks(datetime(2024, 7, 6, tzinfo=UTC), 6) == [
        "Mon 2024-07-08 22:00", "Tue 2024-07-09 22:00", "Wed 2024-07-10 22:00", "Thu 2024-07-11 22:00",
        "Fri 2024-07-12 22:00", "Mon 2024-07-15 22:00"]
    assert _ticks(datetime(2024, 1, 6, tzinfo=UTC), 6) == [
        "Mon 2024-01-08 23:00", "Tue 2024-01-09 23:00", "Wed 2024-01-10 23:00", "Thu 2024-01-11 23:00",
        "Fri 2024-01-12 23:00", "Mon 2024-01-15 23:00"]
    # Across the March 2024 change (Sunday 10 March): Friday in CST, Monday in CDT.
    assert _ticks(datetime(2024, 3, 8, 12, tzinfo=UTC), 2) == ["Fri 2024-03-08 23:00", "Mon 2024-03-11 22:00"]


@pytest.mark.parametrize("tick_utc, day", [
    (datetime(2024, 7, 10, 22, tzinfo=UTC), "2024-07-10"),
    (datetime(2024, 1, 10, 23, tzinfo=UTC), "2024-01-10"),
])
def test_a_tick_summarises_the_trading_day_that_just_closed(tick_utc: datetime, day: str) -> None:
    example = PineConfigResource(config_path=str(REPO / "data" / "config.multi_alpha.example.yml"))
    with dg.build_schedule_context(scheduled_execution_time=tick_utc, resources={"pine_config": example}) as context:
        request = daily_summary_schedule(context)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"daily_summary:{day}"
    assert request.run_config["ops"] == {"daily_summary": {"config": {"trading_day": day}}}
    assert request.tags["pine/trading_day"] == day
    assert request.partition_key == day  # the day's daily_reconciliation runs in the same job


def test_last_closed_trading_day_skips_weekends_and_open_sessions() -> None:
    cal = SessionCalendar()
    assert last_closed_trading_day(cal, datetime(2024, 7, 10, 17, 0, tzinfo=CHICAGO)) == date(2024, 7, 10)
    assert last_closed_trading_day(cal, datetime(2024, 7, 10, 16, 59, tzinfo=CHICAGO)) == date(2024, 7, 9)
    assert last_closed_trading_day(cal, datetime(2024, 7, 13, 12, 0, tzinfo=CHICAGO)) == date(2024, 7, 12)  # Sat
    assert last_closed_trading_day(cal, datetime(2024, 7, 15, 9, 0, tzinfo=CHICAGO)) == date(2024, 7, 12)  # Mon


def _trade(db: Path, trade_id: str, strategy: str, symbol: str, net: float, day: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            """INSERT INTO trades (trade_id, strategy, symbol, contract, direction, size, entry_time, entry_price,
               exit_time, exit_price, pnl, commission, net_pnl, exit_reason, bars_held, recorded_at, trading_day)
               VALUES (?, ?, ?, ?, 'long', 1, ?, 100, ?, 101, ?, 4.5, ?, 'signal', 2, ?, ?)""",
            (trade_id, strategy, symbol, f"{symbol}U4", f"{day}T14:00:00+00:00", f"{day}T15:00:00+00:00",
             net + 4.5, net, f"{day}T15:00:01+00:00", day),
        )
    conn.close()


def _materialize(config: Path, day: str | None) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"daily_summary": {"config": {"trading_day": day}}}}
    return dg.materialize([daily_summary], resources={"pine_config": PineConfigResource(config_path=str(config))},
                          run_config=run_config, raise_on_error=False)


def test_daily_summary_asset_reports_each_strategy_of_the_day(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml")
    db_path = tmp_path / "runtime" / "trades.db"
    TradesDB(db_path).close()  # the workers' schema
    _trade(db_path, "a1", "ibs_a", "CL", 250.0, "2024-07-10")
    _trade(db_path, "a2", "ibs_a", "GC", -120.5, "2024-07-10")
    _trade(db_path, "a3", "ibs_a", "6A", 80.0, "2024-07-10")
    _trade(db_path, "b1", "ibs_b", "ES", -40.0, "2024-07-10")
    _trade(db_path, "x1", "ibs_b", "ES", 999.0, "2024-07-09")  # another day: not counted

    result = _materialize(config, "2024-07-10")
    assert result.success
    (event,) = result.get_asset_materialization_events()
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["trading_day"] == "2024-07-10"
    assert meta["trades"] == 4
    assert meta["net_pnl"] == pytest.approx(169.5)
    ibs_a, ibs_b = meta["by_strategy"]["ibs_a"], meta["by_strategy"]["ibs_b"]
    assert (ibs_a["trades"], ibs_a["wins"], ibs_a["win_rate"], ibs_a["net_pnl"], ibs_a["commission"]) == (
        3, 2, 0.6667, 209.5, 13.5)
    assert (ibs_a["best"]["symbol"], ibs_a["best"]["net_pnl"]) == ("CL", 250.0)
    assert (ibs_a["worst"]["symbol"], ibs_a["worst"]["net_pnl"]) == ("GC", -120.5)
    assert (ibs_b["trades"], ibs_b["wins"], ibs_b["net_pnl"], ibs_b["best"]["symbol"]) == (1, 0, -40.0, "ES")
    table = meta["strategies"].splitlines()
    assert table[2] == "| ibs_a | 3 | 67% | 209.50 | 13.50 | 250.00 (CL) | -120.50 (GC) |"
    assert table[3] == "| ibs_b | 1 | 0% | -40.00 | 4.50 | -40.00 (ES) | -40.00 (ES) |"


def test_daily_summary_without_trades_db_or_with_a_bad_day(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml")
    empty = _materialize(config, "2024-07-10")
    assert empty.success
    (event,) = empty.get_asset_materialization_events()
    assert event.materialization.metadata["trades"].value == 0
    assert event.materialization.metadata["strategies"].value == "No closed trades."
    total, per_strategy = summarize_day(tmp_path / "absent.db", date(2024, 7, 10))
    assert (total.trades, per_strategy) == (0, {})

    bad = _materialize(config, "10/07/2024")
    assert not bad.success
    (failure,) = bad.get_step_failure_events()
    assert failure.step_failure_data.user_failure_data.description == (
        "trading_day must be YYYY-MM-DD, got '10/07/2024'")
