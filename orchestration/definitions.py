"""The Dagster code location of Pine (``workspace.yaml`` loads ``orchestration.definitions:defs``).

Importing this module has no side effects: the config is read when an asset, job or sensor runs.
"""

from __future__ import annotations

import dagster as dg

from assets.bar_audit import bar_audit
from assets.contract_map import contract_map, instruments_match_contract_map
from assets.daily_summary import daily_summary
from assets.models import champion_models, ml_models
from assets.reconciliation import daily_reconciliation
from assets.warmup_cache import warmup_cache
from orchestration.jobs import daily_summary_job, restart_process, start_process, stop_process, warmup_refresh_job
from orchestration.resources import PineConfigResource, RedisResource
from orchestration.schedules import daily_summary_schedule, warmup_refresh_schedule
from orchestration.sensors import (
    alert_on_run_failure,
    dagster_presence,
    send_daily_summary,
    send_daily_summary_after_failure,
    supervise_processes,
)

defs = dg.Definitions(
    assets=[
        contract_map, daily_summary, daily_reconciliation, warmup_cache, bar_audit, ml_models, champion_models
    ],
    asset_checks=[instruments_match_contract_map],
    jobs=[start_process, restart_process, stop_process, daily_summary_job, warmup_refresh_job],
    sensors=[supervise_processes, alert_on_run_failure, dagster_presence, send_daily_summary,
             send_daily_summary_after_failure],
    schedules=[daily_summary_schedule, warmup_refresh_schedule],
    resources={"pine_config": PineConfigResource(), "redis": RedisResource()},
)
