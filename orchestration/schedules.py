"""Dagster schedules: the warmup-cache refresh once the day's trading has stopped, the daily summary and
reconciliation at the CME session close; a day no configured instrument trades (a CME holiday) is
skipped, named."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Final
from zoneinfo import ZoneInfo

import dagster as dg

from assets.daily_summary import DailySummaryConfig
from assets.warmup_cache import symbol_partitions
from orchestration.jobs import daily_summary_job, warmup_refresh_job
from orchestration.resources import PineConfigResource
from pine.holidays import MarketCalendar, cme_holiday

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
def daily_summary_schedule(
    context: dg.ScheduleEvaluationContext, pine_config: PineConfigResource
) -> dg.RunRequest | dg.SkipReason:
    """Summarise and reconcile the trading day that has just closed (the local date of the tick)."""
    local_day = _tick_day(context)
    roots = pine_config.load(verify_contract_map=False).instruments
    if not _trading(roots, local_day):
        return _holiday_skip(local_day)
    day = local_day.isoformat()
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
    """One ``warmup_cache`` run per instrument of the config that traded today (the partitions it has)."""
    local_day = _tick_day(context)
    roots = _trading(pine_config.load(verify_contract_map=False).instruments, local_day)
    if not roots:
        return _holiday_skip(local_day)
    day = local_day.isoformat()
    keys = set(symbol_partitions.get_partition_keys())
    if roots - keys:
        # Partitions are the shipped config's instruments (fixed at load); others cannot be scheduled.
        context.log.warning(f"no warmup_cache partition for {', '.join(sorted(roots - keys))}")
    if not roots & keys:
        return dg.SkipReason("no configured instrument has a warmup_cache partition")
    return [dg.RunRequest(run_key=f"warmup_cache:{day}:{root}", partition_key=root, tags={"pine/trading_day": day})
            for root in sorted(roots & keys)]


def _tick_day(context: dg.ScheduleEvaluationContext) -> date:
    return context.scheduled_execution_time.astimezone(ZoneInfo(SESSION_TIMEZONE)).date()


def _trading(roots: Iterable[str], day: date) -> set[str]:
    """The roots with a session closing on ``day`` by their product's calendar.

    Pine books a session to the date of its close, so an abbreviated holiday session (equity index
    futures until 12:00 CT on Thanksgiving) is a Pine trading day to summarise and reconcile, even
    though the CME settles it on the next trade date.
    """
    return {root for root in roots if MarketCalendar.for_root(root).is_trading_day(day)}


def _holiday_skip(day: date) -> dg.SkipReason:
    """A skip naming the CME holiday on ``day``, when no configured instrument trades."""
    name = cme_holiday(day) or "exchange closure"
    return dg.SkipReason(f"{day.isoformat()} is a CME holiday ({name}): no configured instrument trades")
