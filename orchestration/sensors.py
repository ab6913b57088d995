"""Dagster sensors: process supervision every 30 s, an alert for every failed run, and the daily summary.

``supervise_processes`` is off by default: turn it on (UI, or ``dagster sensor start
supervise_processes``) where Dagster should own the hub and the workers. With
``supervision.mode: systemd`` it only reports; systemd restarts.

``dagster_presence`` (on by default) tells the workers that Dagster runs, and the two
``send_daily_summary`` sensors send the Discord summary when a ``daily_summary_job`` run ends:
Dagster is then the one sender of the daily summary (``pine.notify.summary``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import dagster as dg

from assets.daily_summary import reconciliation_line, run_trading_day, send_summary
from orchestration.alerts import Alert, emit_alert
from orchestration.components import PROCESS_TAG, supervised_components
from orchestration.jobs import daily_summary_job, process_run, restart_process, start_process
from orchestration.resources import PineConfigResource, RedisResource
from orchestration.supervision import Policy, RunState, observe, plan_tick
from pine import redis_names
from pine.redis_server import RedisUnavailableError

SUPERVISION_SENSOR: Final = "supervise_processes"
SUPERVISION_INTERVAL_S: Final = 30
# Dagster's system tags on runs requested by a sensor.
RUN_KEY_TAG: Final = "dagster/run_key"
SENSOR_NAME_TAG: Final = "dagster/sensor_name"
BACKFILL_TAG: Final = "dagster/backfill"
FINISHED: Final = frozenset({dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED})
PRESENCE_SENSOR: Final = "dagster_presence"
PRESENCE_INTERVAL_S: Final = 30
# Missing a few ticks (a busy daemon) must not hand the summary back to the workers.
PRESENCE_TTL_S: Final = 4 * PRESENCE_INTERVAL_S


@dg.sensor(
    name=SUPERVISION_SENSOR,
    jobs=[start_process, restart_process],
    minimum_interval_seconds=SUPERVISION_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def supervise_processes(
    context: dg.SensorEvaluationContext, pine_config: PineConfigResource, redis: RedisResource
) -> dg.SensorResult:
    """Watch the heartbeats of the hub and every enabled worker; start or restart what is down (one run per outage)."""
    cfg = pine_config.load(verify_contract_map=False)
    try:
        client = redis.client(cfg)
    except RedisUnavailableError as exc:
        context.log.warning(f"{exc}; reading heartbeat files only")
        client = None
    try:
        now = time.time()
        observations = [observe(cfg, c, client, now) for c in supervised_components(cfg)]
        plan = plan_tick(observations, context.cursor, now, Policy.of(cfg), _run_state(context.instance))
        for alert in plan.alerts:
            emit_alert(alert, client)
    finally:
        if client is not None:
            client.close()
    for note in plan.notes:
        context.log.info(note)
    requests = []
    for req in plan.requests:
        run_config, tags = process_run(req.job_name, req.component)
        requests.append(dg.RunRequest(run_key=req.run_key, job_name=req.job_name, run_config=run_config, tags=tags))
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=plan.cursor)
    return dg.SensorResult(skip_reason="; ".join(plan.notes) or "nothing to supervise", cursor=plan.cursor)


def _run_state(instance: dg.DagsterInstance) -> Callable[[str], RunState]:
    def state(run_key: str) -> RunState:
        runs = instance.get_runs(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key, SENSOR_NAME_TAG: SUPERVISION_SENSOR}), limit=1
        )
        if not runs:
            return "absent"
        return "done" if runs[0].status in FINISHED else "active"

    return state


@dg.run_failure_sensor(name="alert_on_run_failure", default_status=dg.DefaultSensorStatus.RUNNING)
def alert_on_run_failure(
    context: dg.RunFailureSensorContext, pine_config: PineConfigResource, redis: RedisResource
) -> None:
    """Every failed run of this code location becomes an ``ops:alerts`` entry (and a log line)."""
    run = context.dagster_run
    errors = [_step_error(e) for e in context.get_step_failure_events()]
    process = run.tags.get(PROCESS_TAG)
    alert = Alert(
        kind="run_failed",
        severity="critical" if process else "warning",
        component=process.replace(".", ":", 1) if process else run.job_name,
        message=f"Dagster run {run.run_id[:8]} of {run.job_name} failed: "
        f"{errors[0] if errors else context.failure_event.message}",
        details={"run_id": run.run_id, "job": run.job_name, "tags": dict(run.tags), "step_errors": errors},
    )
    try:
        client = redis.client(pine_config.load(verify_contract_map=False))
    except (RedisUnavailableError, dg.Failure) as exc:
        context.log.warning(f"alert for run {run.run_id} goes to the log only: {exc}")
        client = None
    try:
        emit_alert(alert, client)
    finally:
        if client is not None:
            client.close()


def _step_error(event: dg.DagsterEvent) -> str:
    """A failed step's own description (``dg.Failure``) or its error message."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    return data.error.message.strip() if data.error is not None else event.message or "step failed"


@dg.sensor(name=PRESENCE_SENSOR, minimum_interval_seconds=PRESENCE_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING)
def dagster_presence(
    context: dg.SensorEvaluationContext, pine_config: PineConfigResource, redis: RedisResource
) -> dg.SkipReason:
    """Keep ``ops:dagster:alive`` (TTL 2 min) in Redis while the daemon runs: the workers leave the daily summary
    to the ``daily_summary`` schedule."""
    cfg = pine_config.load(verify_contract_map=False)
    try:
        client = redis.client(cfg)
    except RedisUnavailableError as exc:
        return dg.SkipReason(f"{exc}: the workers send the daily summary themselves")
    try:
        client.set(redis_names.DAGSTER_ALIVE, f"{time.time():.0f}", ex=PRESENCE_TTL_S)
    finally:
        client.close()
    return dg.SkipReason(f"{redis_names.DAGSTER_ALIVE} set for {PRESENCE_TTL_S}s (presence only, no runs)")


def _send_daily_summary(context: dg.RunStatusSensorContext, pine_config: PineConfigResource) -> None:
    run = context.dagster_run
    cfg = pine_config.load(verify_contract_map=False)
    if cfg.notifications.daily_summary_sender == "workers":
        context.log.info("notifications.daily_summary_sender is 'workers': the workers send the daily summary")
        return
    if run.tags.get(BACKFILL_TAG):
        context.log.info(f"run {run.run_id} belongs to backfill {run.tags[BACKFILL_TAG]}: no summary for an old day")
        return
    day = run_trading_day(context.instance, run)
    if day is None:
        context.log.warning(f"run {run.run_id} of {run.job_name} names no trading day: no summary sent")
        return
    context.log.info(send_summary(cfg, day, reconciliation_line(context.instance, run.run_id)))


@dg.run_status_sensor(name="send_daily_summary", run_status=dg.DagsterRunStatus.SUCCESS,
                      monitored_jobs=[daily_summary_job], default_status=dg.DefaultSensorStatus.RUNNING)
def send_daily_summary(context: dg.RunStatusSensorContext, pine_config: PineConfigResource) -> None:
    """A ``daily_summary_job`` run succeeded: send the day's Discord summary (figures, reconciliation passed)."""
    _send_daily_summary(context, pine_config)


@dg.run_status_sensor(name="send_daily_summary_after_failure", run_status=dg.DagsterRunStatus.FAILURE,
                      monitored_jobs=[daily_summary_job], default_status=dg.DefaultSensorStatus.RUNNING)
def send_daily_summary_after_failure(context: dg.RunStatusSensorContext, pine_config: PineConfigResource) -> None:
    """A ``daily_summary_job`` run failed (a reconciliation check, usually): send the summary all the same, saying
    which checks failed."""
    _send_daily_summary(context, pine_config)
