"""The ``warmup_cache`` asset: one symbol partition built from a synthetic DBN archive, and its three checks."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from assets.warmup_cache import ALIGNMENT, DUPLICATES, GAPS, check_results, warmup_cache
from hub.history import build_caches
from hub.synthetic import write_synthetic_market
from orchestration.resources import PineConfigResource
from orchestration.schedules import warmup_refresh_schedule
from pine.bar_cache import cache_path, read_bar_list
from pine.bars import Bar
from pine.config import load_config
from pine.contracts import load_contract_map
from pine.holidays import MarketCalendar
from pine.sessions import SessionCalendar
from tests.conftest import REPO

EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
CALENDAR = SessionCalendar()
CHICAGO = ZoneInfo("America/Chicago")


@pytest.fixture
def runtime() -> Path:
    """Three synthetic ES trading days (Fri 8, Mon 11, Tue 12 March 2024: across DST) in the runtime dir's archive."""
    runtime = Path(os.environ["PINE_RUNTIME_DIR"])
    cmap = load_contract_map(load_config(EXAMPLE).contract_map_path)
    write_synthetic_market(runtime / "market", ["ES"], date(2024, 3, 8), 3, 7, cmap)
    return runtime


def _materialize(partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([warmup_cache], partition_key=partition, raise_on_error=False,
                          resources={"pine_config": PineConfigResource(config_path=str(EXAMPLE))})


def test_a_partition_builds_the_symbols_caches_and_passes_its_checks(runtime: Path) -> None:
    assert "ES" in warmup_cache.partitions_def.get_partition_keys()
    result = _materialize("ES")
    assert result.success

    (event,) = result.get_asset_materialization_events()
    assert event.partition == "ES"
    meta = event.materialization.metadata
    assert meta["source"].value == "archive"
    assert meta["complete_through"].value == "2024-03-12T22:00:00+00:00"
    assert (meta["first_session"].value, meta["last_session"].value) == ("2024-03-08", "2024-03-12")
    assert meta["bars_daily"] == dg.MetadataValue.int(3)
    assert meta["bars_hourly"].value > 60 and meta["bars_1min"].value > 3000
    assert "| 2024-03-12 22:00 |" in meta["preview"].value
    assert meta["cache_dir"].value == str(runtime / "warmup" / "ES")
    assert len(read_bar_list(cache_path(runtime / "warmup", "ES", "daily"))) == 3

    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {GAPS, DUPLICATES, ALIGNMENT}
    assert all(e.passed for e in checks.values()), {k: e.description for k, e in checks.items()}
    assert checks[ALIGNMENT].metadata["daily_bars"] == dg.MetadataValue.int(3)


def test_checks_name_a_missing_session_a_missing_hour_a_duplicate_and_a_misaligned_bar(runtime: Path) -> None:
    assert _materialize("ES").success
    bars = {tf: read_bar_list(cache_path(runtime / "warmup", "ES", tf)) for tf in ("1min", "hourly", "daily")}
    fri, mon, tue = bars["daily"]
    hourly = bars["hourly"]
    dropped = hourly[30]  # an hour inside Monday's session
    altered = {
        "1min": bars["1min"] + [bars["1min"][5]],
        "hourly": [b for b in hourly if b is not dropped],
        # Monday's session missing; Tuesday's bar ending at midnight UTC, the legacy close.
        "daily": [fri, replace(tue, end=datetime(2024, 3, 13, tzinfo=UTC))],
    }
    results = {r.check_name: r for r in check_results(altered, CALENDAR, MarketCalendar.for_root("ES"))}
    assert not results[GAPS].passed and results[GAPS].severity == dg.AssetCheckSeverity.WARN
    examples = results[GAPS].metadata["examples"].value
    assert "`2024-03-11`" in examples and f"`{dropped.timestamp.isoformat()}`" in examples
    assert not results[DUPLICATES].passed and results[DUPLICATES].metadata["duplicates_1min"] == dg.MetadataValue.int(1)
    assert not results[ALIGNMENT].passed and results[ALIGNMENT].severity == dg.AssetCheckSeverity.ERROR
    assert "2024-03-13T00:00:00+00:00" in results[ALIGNMENT].metadata["examples"].value
    assert mon.end - mon.timestamp == timedelta(hours=24)
    # The unaltered bars pass all three.
    assert all(r.passed for r in check_results(bars, CALENDAR, MarketCalendar.for_root("ES")))


def test_a_root_without_history_fails_with_the_reason() -> None:
    result = _materialize("ES")  # no key and no archive written: nothing to build from
    assert not result.success
    assert result.get_asset_materialization_events() == []
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description == f"{os.environ['PINE_RUNTIME_DIR']}/market: no such DBN file or archive directory"


def test_the_refresh_schedule_requests_every_configured_symbol_after_trading_stops() -> None:
    tick = datetime(2024, 7, 10, 21, 15, tzinfo=UTC)  # 16:15 CDT: trading stopped at 16:00, the close is at 17:00
    context = dg.build_schedule_context(scheduled_execution_time=tick,
                                        resources={"pine_config": PineConfigResource(config_path=str(EXAMPLE))})
    requests = warmup_refresh_schedule(context)
    assert isinstance(requests, list)
    instruments = sorted(load_config(EXAMPLE).instruments)
    assert [r.partition_key for r in requests] == instruments and len(instruments) == 19
    assert requests[0].run_key == f"warmup_cache:2024-07-10:{instruments[0]}"
    assert (warmup_refresh_schedule.cron_schedule, warmup_refresh_schedule.execution_timezone) == (
        "15 16 * * 1-5", "America/Chicago")


def _chicago(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=CHICAGO)


def test_thanksgiving_week_a_holiday_and_early_closes_are_not_gaps_a_missing_session_is() -> None:
    """Synthetic ES and ZC, Mon 23 – Fri 27 November 2026, trimmed to what CME trades that week: grains closed on
    Thanksgiving (Thu 26), equity index futures halted at 12:00 CT on Thursday and Friday."""
    runtime = Path(os.environ["PINE_RUNTIME_DIR"])
    cfg = load_config(EXAMPLE)
    write_synthetic_market(runtime / "market", ["ES", "ZC"], date(2026, 11, 23), 5, 7,
                           load_contract_map(cfg.contract_map_path))
    build_caches(cfg, ["ES", "ZC"], source="archive")
    cached = {root: {tf: read_bar_list(cache_path(runtime / "warmup", root, tf)) for tf in ("1min", "hourly", "daily")}
              for root in ("ES", "ZC")}
    es, zc = MarketCalendar.for_root("ES"), MarketCalendar.for_root("ZC")
    # The synthetic market ignores holidays: its extra sessions and hours are no gap either.
    assert all(r.passed for r in check_results(cached["ES"], CALENDAR, es))
    assert all(r.passed for r in check_results(cached["ZC"], CALENDAR, zc))

    def day_of(bar: Bar) -> date:
        return CALENDAR.trading_day(bar.end - timedelta(microseconds=1))

    early_closes = [(_chicago(26, 12), _chicago(26, 17)), (_chicago(27, 12), _chicago(27, 17))]
    es_real = {**cached["ES"], "hourly": [b for b in cached["ES"]["hourly"]
                                          if not any(lo <= b.timestamp < hi for lo, hi in early_closes)]}
    thanksgiving = date(2026, 11, 26)
    zc_real = {tf: [b for b in bars if day_of(b) != thanksgiving] for tf, bars in cached["ZC"].items()}
    assert len(es_real["hourly"]) == len(cached["ES"]["hourly"]) - 8 and len(zc_real["daily"]) == 4
    es_gaps, zc_gaps = check_results(es_real, CALENDAR, es)[0], check_results(zc_real, CALENDAR, zc)[0]
    assert es_gaps.passed, es_gaps.metadata["examples"].value
    assert zc_gaps.passed, zc_gaps.metadata["examples"].value
    assert zc_gaps.metadata["holidays"].value == "- `2026-11-26 Thanksgiving Day`"
    assert es_gaps.metadata["holidays"].value == "none"  # ES trades on Thanksgiving morning
    assert (es_gaps.metadata["market_calendar"].value, zc_gaps.metadata["market_calendar"].value) == (
        "CME_Equity", "CMEGlobex_Grains")
    # The old weekday rule would have flagged all of these; what is really missing still is flagged.
    tuesday = date(2026, 11, 24)
    lost_hour = next(b for b in zc_real["hourly"] if b.timestamp == _chicago(25, 10).astimezone(UTC))
    zc_lossy = {**zc_real, "daily": [b for b in zc_real["daily"] if day_of(b) != tuesday],
                "hourly": [b for b in zc_real["hourly"] if b is not lost_hour]}
    gaps = check_results(zc_lossy, CALENDAR, zc)[0]
    assert not gaps.passed
    assert (gaps.metadata["missing_sessions"].value, gaps.metadata["missing_hours"].value) == (1, 1)
    assert gaps.metadata["examples"].value == f"- `2026-11-24`\n- `{lost_hour.timestamp.isoformat()}`"
    # An hour lost on Thanksgiving morning, when ES did trade, is a gap for ES.
    es_lossy = {**es_real, "hourly": [b for b in es_real["hourly"] if b.timestamp != _chicago(26, 9).astimezone(UTC)]}
    assert check_results(es_lossy, CALENDAR, es)[0].metadata["missing_hours"].value == 1
