"""Dagster schedules: the daily summary at the CME session close."""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg

from assets.daily_summary import DailySummaryConfig
from orchestration.jobs import daily_summary_job

# The CME trading day closes at 17:00 America/Chicago, Monday to Friday. Dagster evaluates the
# cron in this zone, so the tick follows daylight saving time (22:00 UTC in summer, 23:00 in winter).
SESSION_CLOSE_CRON: Final = "0 17 * * 1-5"
SESSION_TIMEZONE: Final = "America/Chicago"


@dg.schedule(
    name="daily_summary",
    cron_schedule=SESSION_CLOSE_CRON,
    execution_timezone=SESSION_TIMEZONE,
    job=daily_summary_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_summary_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Summarise the trading day that has just closed (the local date of the tick)."""
    day = context.scheduled_execution_time.astimezone(ZoneInfo(SESSION_TIMEZONE)).date().isoformat()
    return dg.RunRequest(
        run_key=f"daily_summary:{day}",
        run_config=dg.RunConfig(ops={"daily_summary": DailySummaryConfig(trading_day=day)}),
        tags={"pine/trading_day": day},
    )
