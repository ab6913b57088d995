"""Dagster jobs: start, stop and restart Pine processes; the daily summary.

The process jobs are what the supervision sensor requests and what operators launch from the UI
(run config ``ops: {<op>: {config: {component: worker:ibs_a}}}``, and the tag
``pine/process: worker.ibs_a`` to queue behind other runs on the same process). Their processes
are detached (see :mod:`orchestration.process_control`): the run ends, trading goes on.
"""

# No `from __future__ import annotations`: Dagster reads the op's config and resource annotations
# as live types when the decorator runs.

import dagster as dg
import redis
from pydantic import Field

from assets.daily_summary import daily_summary
from assets.reconciliation import daily_reconciliation
from assets.warmup_cache import warmup_cache
from orchestration import process_control
from orchestration.components import PROCESS_TAG, check_component, tag_value
from orchestration.process_control import Outcome, ProcessControlError
from orchestration.resources import PineConfigResource, RedisResource
from orchestration.supervision import RESTART_JOB, START_JOB, STOP_JOB
from pine.config import PineConfig
from pine.redis_server import RedisUnavailableError


class ProcessConfig(dg.Config):
    """Which Pine process a run manages."""

    component: str = Field(description="`hub` or `worker:{strategy}` (a strategy of the Pine config)")


def _prepare(
    context: dg.OpExecutionContext, config: ProcessConfig, pine_config: PineConfigResource, redis_res: RedisResource
) -> tuple[PineConfig, redis.Redis | None, str | None]:
    """The config, a Redis client (None: unreachable) and the URL the started process must use."""
    cfg = pine_config.load(verify_contract_map=False)
    try:
        check_component(cfg, config.component)
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    try:
        client = redis_res.client(cfg)
    except RedisUnavailableError as exc:
        # Heartbeat files still tell whether the process started; the process reports its own Redis error.
        context.log.warning(f"{exc}; reading heartbeat files only")
        client = None
    return cfg, client, redis_res.resolved_url(cfg)


def _output(*outcomes: Outcome) -> dg.Output[None]:
    metadata: dict[str, dg.RawMetadataValue] = {"component": outcomes[0].component}
    for outcome in outcomes:
        metadata[outcome.action] = outcome.pid if outcome.pid is not None else "-"
        if outcome.detail:
            metadata["detail"] = outcome.detail
    metadata["log"] = dg.MetadataValue.path(str(outcomes[-1].log))
    return dg.Output(None, metadata=metadata)


def _control_failure(exc: ProcessControlError) -> dg.Failure:
    # The message ends with the last lines of the process's log: the alert then says why it died.
    return dg.Failure(description=str(exc))


@dg.op(out=dg.Out(dg.Nothing))
def start_pine_process(
    context: dg.OpExecutionContext, config: ProcessConfig, pine_config: PineConfigResource, redis: RedisResource
) -> dg.Output[None]:
    """Start the process detached unless it runs already (clears a stop marker); wait for its first heartbeat."""
    cfg, client, url = _prepare(context, config, pine_config, redis)
    try:
        outcome = process_control.start(cfg, config.component, client, redis_url=url)
    except ProcessControlError as exc:
        raise _control_failure(exc) from None
    context.log.info(f"{config.component}: {outcome.action} (pid {outcome.pid}); log {outcome.log}")
    return _output(outcome)


@dg.op(out=dg.Out(dg.Nothing))
def restart_pine_process(
    context: dg.OpExecutionContext, config: ProcessConfig, pine_config: PineConfigResource, redis: RedisResource
) -> dg.Output[None]:
    """Stop the process if it runs (SIGTERM, SIGKILL after ``supervision.stop_timeout_s``), then start it."""
    cfg, client, url = _prepare(context, config, pine_config, redis)
    try:
        stopped, started = process_control.restart(cfg, config.component, client, redis_url=url)
    except ProcessControlError as exc:
        raise _control_failure(exc) from None
    context.log.info(f"{config.component}: old process {stopped.action} ({stopped.pid}), new one {started.action} "
                     f"(pid {started.pid}); log {started.log}")
    return _output(stopped, started)


@dg.op(out=dg.Out(dg.Nothing))
def stop_pine_process(
    context: dg.OpExecutionContext, config: ProcessConfig, pine_config: PineConfigResource, redis: RedisResource
) -> dg.Output[None]:
    """Stop the process for good: the supervision sensor leaves it stopped until it is started again."""
    cfg, client, _ = _prepare(context, config, pine_config, redis)
    try:
        outcome = process_control.stop(cfg, config.component, client, reason=f"stop_process run {context.run_id}")
    except ProcessControlError as exc:
        raise _control_failure(exc) from None
    context.log.info(f"{config.component}: {outcome.action} (pid {outcome.pid})")
    return _output(outcome)


# One op per job, run in the run worker's own process: a step subprocess would add seconds of
# imports to every restart.
@dg.job(name=START_JOB, executor_def=dg.in_process_executor, tags={"pine/kind": "process"})
def start_process() -> None:
    """Start a Pine process (hub or worker) detached from Dagster."""
    start_pine_process()


@dg.job(name=RESTART_JOB, executor_def=dg.in_process_executor, tags={"pine/kind": "process"})
def restart_process() -> None:
    """Restart a Pine process: stop the old one if it is still there, start a new one."""
    restart_pine_process()


@dg.job(name=STOP_JOB, executor_def=dg.in_process_executor, tags={"pine/kind": "process"})
def stop_process() -> None:
    """Stop a Pine process and keep the supervision sensor from restarting it."""
    stop_pine_process()


_OPS = {START_JOB: "start_pine_process", RESTART_JOB: "restart_pine_process", STOP_JOB: "stop_pine_process"}


def process_run(job_name: str, component: str) -> tuple[dg.RunConfig, dict[str, str]]:
    """Run config and tags of a process job run for ``component``."""
    return dg.RunConfig(ops={_OPS[job_name]: ProcessConfig(component=component)}), {PROCESS_TAG: tag_value(component)}


daily_summary_job = dg.define_asset_job(
    "daily_summary_job",
    # One run per trading day (its partition): the summary and the day's reconciliation together.
    selection=[daily_summary, daily_reconciliation],
    description="The trading day's summary per strategy from the trades DB and its reconciliation "
                "(17:00 America/Chicago, Mon–Fri); when the run ends, send_daily_summary posts both to Discord.",
)


warmup_refresh_job = dg.define_asset_job(
    "warmup_refresh_job",
    selection=[warmup_cache],
    description="Rebuild one symbol's warmup caches (one run per symbol partition).",
)
