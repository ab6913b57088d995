"""Dagster schedules: the warmup-cache refresh once the day's trading has stopped, the daily summary and
reconciliation at the CME session close."""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg

from assets.daily_summary import DailySummaryConfig
from assets.warmup_cache import symbol_partitions
from orchestration.jobs import daily_summary_job, warmup_refresh_job
from orchestration.resources import PineConfigResource

# The CME trading day closes at 17:00 America/Chicago, Monday to Friday. Dagster evaluates the
# cron in this zone, so the tick follows daylight saving time (22:00 UTC in summer, 23:00 in winter).
SESSION_CLOSE_CRON: Final = "0 17 * * 1-5"
SESSION_TIMEZONE: Final = "America/Chicago"
# Trading stops at 16:00 Chicago (the maintenance halt before the close): from then on the day's
# history is complete, so caches rebuilt at 16:15 hold the whole session in time for the 17:00
# reconciliation, whose parity backtest reads them.
WARMUP_REFRESH_CRON: Final = "15 16 * * 1-5"


@dg.schedule(
    name="daily_summary",
    cron_schedule=SESSION_CLOSE_CRON,
    execution_timezone=SESSION_TIMEZONE,
    job=daily_summary_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_summary_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Summarise and reconcile the trading day that has just closed (the local date of the tick)."""
    day = context.scheduled_execution_time.astimezone(ZoneInfo(SESSION_TIMEZONE)).date().isoformat()
    return dg.RunRequest(
        run_key=f"daily_summary:{day}",
        run_config=dg.RunConfig(ops={"daily_summary": DailySummaryConfig(trading_day=day)}),
        partition_key=day,  # daily_reconciliation's trading-day partition
        tags={"pine/trading_day": day},
    )


@dg.schedule(
    name="warmup_refresh",
    cron_schedule=WARMUP_REFRESH_CRON,
    execution_timezone=SESSION_TIMEZONE,
    job=warmup_refresh_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def warmup_refresh_schedule(
    context: dg.ScheduleEvaluationContext, pine_config: PineConfigResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """One ``warmup_cache`` run per instrument of the config (the partitions it has)."""
    day = context.scheduled_execution_time.astimezone(ZoneInfo(SESSION_TIMEZONE)).date().isoformat()
    roots = set(pine_config.load(verify_contract_map=False).instruments)
    keys = set(symbol_partitions.get_partition_keys())
    if roots - keys:
        # Partitions are the shipped config's instruments (fixed at load); others cannot be scheduled.
        context.log.warning(f"no warmup_cache partition for {', '.join(sorted(roots - keys))}")
    if not roots & keys:
        return dg.SkipReason("no configured instrument has a warmup_cache partition")
    return [dg.RunRequest(run_key=f"warmup_cache:{day}:{root}", partition_key=root, tags={"pine/trading_day": day})
            for root in sorted(roots & keys)]
