"""The Dagster code location of Pine (``workspace.yaml`` loads ``orchestration.definitions:defs``).

Importing this module has no side effects: the config is read when an asset, job or sensor runs.
"""

from __future__ import annotations

import dagster as dg

from assets.contract_map import contract_map, instruments_match_contract_map
from assets.daily_summary import daily_summary
from orchestration.jobs import daily_summary_job, restart_process, start_process, stop_process
from orchestration.resources import PineConfigResource, RedisResource
from orchestration.schedules import daily_summary_schedule
from orchestration.sensors import alert_on_run_failure, supervise_processes

defs = dg.Definitions(
    assets=[contract_map, daily_summary],
    asset_checks=[instruments_match_contract_map],
    jobs=[start_process, restart_process, stop_process, daily_summary_job],
    sensors=[supervise_processes, alert_on_run_failure],
    schedules=[daily_summary_schedule],
    resources={"pine_config": PineConfigResource(), "redis": RedisResource()},
)
