"""CME holidays: per-product calendars (pine.holidays) and the schedules that skip CME holidays, naming them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest

from orchestration.definitions import defs
from orchestration.resources import PineConfigResource
from orchestration.schedules import daily_summary_schedule, warmup_refresh_schedule
from pine.holidays import TRADE_DATE_CALENDAR, MarketCalendar, cme_holiday
from tests.conftest import REPO

EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
CHICAGO = ZoneInfo("America/Chicago")


@pytest.fixture(scope="module")
def evaluate() -> Iterator[Callable[..., dg.ScheduleExecutionData]]:
    """Evaluates one tick of a schedule at a Chicago wall time, as the daemon does (one instance for the module)."""
    repository = defs.get_repository_def()
    resources = {"pine_config": PineConfigResource(config_path=str(EXAMPLE))}
    with dg.instance_for_test() as instance:
        def tick(schedule: dg.ScheduleDefinition, day: date, hour: int, minute: int = 0) -> dg.ScheduleExecutionData:
            at = datetime(day.year, day.month, day.day, hour, minute, tzinfo=CHICAGO)
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, repository_def=repository,
                                           resources=resources) as context:
                return schedule.evaluate_tick(context)

        yield tick


HOLIDAYS = [
    (date(2026, 12, 25), "Christmas"),  # winter time (CST)
    (date(2027, 1, 1), "New Years Day"),
]


@pytest.mark.parametrize("day, name", HOLIDAYS)
def test_both_schedules_skip_a_day_no_configured_instrument_trades(
        evaluate: Callable[..., dg.ScheduleExecutionData], day: date, name: str) -> None:
    for schedule, hour, minute in ((daily_summary_schedule, 17, 0), (warmup_refresh_schedule, 16, 15)):
        data = evaluate(schedule, day, hour, minute)
        assert data.run_requests == [], schedule.name
        assert data.skip_message == f"{day.isoformat()} is a CME holiday ({name}): no configured instrument trades"


RATES_FX_EQUITY = {"6A", "6B", "6C", "6M", "6N", "6S", "ES", "NQ", "RTY", "YM", "ZB"}
METALS_ENERGY = {"CL", "GC", "HG", "NG", "SI"}


@pytest.mark.parametrize("day, trading", [
    # Thanksgiving: abbreviated sessions (grains closed), booked to this Pine trading day.
    (date(2026, 11, 26), RATES_FX_EQUITY | METALS_ENERGY),
    (date(2026, 4, 3), RATES_FX_EQUITY),  # Good Friday (CDT): equity index futures until 08:15 CT
])
def test_an_abbreviated_holiday_session_is_summarised_and_refreshed_for_the_roots_that_traded(
        evaluate: Callable[..., dg.ScheduleExecutionData], day: date, trading: set[str]) -> None:
    summary = evaluate(daily_summary_schedule, day, 17)
    (request,) = summary.run_requests or []
    assert request.partition_key == day.isoformat()
    refresh = evaluate(warmup_refresh_schedule, day, 16, 15)
    assert {r.partition_key for r in refresh.run_requests or []} == trading


@pytest.mark.parametrize("day", [date(2026, 11, 25), date(2026, 11, 27), date(2026, 12, 24), date(2026, 12, 28),
                                 date(2026, 4, 2), date(2026, 4, 6), date(2026, 7, 2), date(2026, 1, 14)])
def test_the_days_around_a_holiday_run_in_summer_and_winter(evaluate: Callable[..., dg.ScheduleExecutionData],
                                                            day: date) -> None:
    summary = evaluate(daily_summary_schedule, day, 17)
    (request,) = summary.run_requests or []
    assert (request.partition_key, request.run_key) == (day.isoformat(), f"daily_summary:{day.isoformat()}")
    refresh = evaluate(warmup_refresh_schedule, day, 16, 15)
    assert len(refresh.run_requests or []) == 19 and summary.skip_message is None is refresh.skip_message


def test_holidays_differ_by_product_and_early_closes_end_the_trading_hours() -> None:
    thanksgiving, christmas, juneteenth = date(2026, 11, 26), date(2026, 12, 25), date(2026, 6, 19)
    es, zc, cl = (MarketCalendar.for_root(r) for r in ("ES", "ZC", "CL"))
    # Equity index futures trade Thanksgiving morning, grains are closed; nobody trades on Christmas.
    assert es.is_trading_day(thanksgiving) and not zc.is_trading_day(thanksgiving)
    assert (es.holiday(thanksgiving), zc.holiday(thanksgiving), cl.holiday(christmas)) == (
        None, "Thanksgiving Day", "Christmas")
    # The rule's validity is not part of the name; weekends are no holiday.
    assert cme_holiday(juneteenth) == "Juneteenth" and cme_holiday(date(2026, 11, 28)) is None
    assert cme_holiday(date(2026, 11, 27)) is None
    # ES stops at 12:00 CT on Thanksgiving: the 11:00 CT hour is its last full one (17:00 UTC).
    hours = sorted(es.full_hours(thanksgiving, thanksgiving))
    assert hours[0].astimezone(CHICAGO) == datetime(2026, 11, 25, 17, tzinfo=CHICAGO)
    assert hours[-1] == datetime(2026, 11, 26, 17, tzinfo=UTC) and len(hours) == 19
    # Grains open at 19:00 CT and pause 07:45–08:30: hours cut by the pause are not full hours.
    grains = {h.astimezone(CHICAGO).hour for h in zc.full_hours(date(2026, 11, 24), date(2026, 11, 24))}
    assert grains == {19, 20, 21, 22, 23, 0, 1, 2, 3, 4, 5, 6, 8 + 1, 10, 11, 12}
    # A root without a product calendar falls back to the CME trade dates.
    assert MarketCalendar.for_root("XYZ").name == TRADE_DATE_CALENDAR
    assert MarketCalendar.for_root("XYZ").trading_days(date(2026, 11, 23), date(2026, 11, 29)) == [
        date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 27)]
