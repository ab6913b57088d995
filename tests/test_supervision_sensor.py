"""The supervision sensor, tick by tick, against real heartbeats in a real Redis and a real Dagster instance."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from orchestration.jobs import process_run, start_process
from orchestration.process_control import stop
from orchestration.sensors import SUPERVISION_SENSOR, alert_on_run_failure
from pine.config import load_config
from tests.supervision_support import COMPONENT, alerts, resources, supervised_config, tick, write_beat

STALE = 1000.0  # seconds: far beyond the config's heartbeat ttl (30 s)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return tmp_path / "runtime"  # PINE_RUNTIME_DIR (conftest)


def _only_request(result: dg.SensorResult) -> dg.RunRequest:
    assert result.run_requests is not None and len(result.run_requests) == 1, result
    return result.run_requests[0]


def _kinds(client: redis.Redis) -> list[str]:
    return [a["kind"] for a in alerts(client)]


def test_healthy_heartbeat_requests_nothing(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    write_beat(client, runtime, time.time())
    result = tick(instance, config, redis_url, None)
    assert not result.run_requests
    assert result.skip_reason is not None and f"{COMPONENT}: healthy" in result.skip_reason.skip_message
    assert alerts(client) == []


def test_stale_heartbeat_gives_one_restart_per_outage(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    # The Redis key has expired; the file remains, last written long ago.
    write_beat(client, runtime, time.time() - STALE, ttl=None)

    first = tick(instance, config, redis_url, None)
    request = _only_request(first)
    assert request.job_name == "restart_process"
    assert request.run_key == f"{COMPONENT}/outage-1/attempt-1"
    assert request.tags["pine/process"] == "worker.ibs_t"
    assert request.run_config["ops"] == {"restart_pine_process": {"config": {"component": COMPONENT}}}

    # The same outage on the next ticks: the same run key, which Dagster runs once; no new alert.
    second = tick(instance, config, redis_url, first.cursor)
    third = tick(instance, config, redis_url, second.cursor)
    assert _only_request(second).run_key == _only_request(third).run_key == request.run_key
    (down,) = alerts(client)
    assert down["kind"] == "process_down" and down["component"] == COMPONENT and down["severity"] == "warning"
    assert "last heartbeat" in down["message"]

    # Back up (fresh heartbeat): nothing to do. Down again later: a second outage, a new run key.
    write_beat(client, runtime, time.time())
    healthy = tick(instance, config, redis_url, third.cursor)
    assert not healthy.run_requests
    write_beat(client, runtime, time.time() - STALE / 2, ttl=None)
    again = tick(instance, config, redis_url, healthy.cursor)
    assert _only_request(again).run_key == f"{COMPONENT}/outage-2/attempt-1"
    assert _kinds(client) == ["process_down", "process_down"]


def test_missing_heartbeat_requests_a_start(
    instance: dg.DagsterInstance, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    first = tick(instance, config, redis_url, None)
    request = _only_request(first)
    assert request.job_name == "start_process"
    assert request.run_config["ops"] == {"start_pine_process": {"config": {"component": COMPONENT}}}
    assert _only_request(tick(instance, config, redis_url, first.cursor)).run_key == request.run_key
    assert "no heartbeat" in alerts(client)[0]["message"]


def test_exited_status_and_vanished_process_count_as_down(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    # A fresh heartbeat that says the worker failed.
    write_beat(client, runtime, time.time(), status="failed")
    failed = tick(instance, config, redis_url, None)
    assert _only_request(failed).job_name == "restart_process"
    assert "'failed'" in alerts(client)[-1]["message"]

    # A fresh "running" heartbeat from the PID in our PID file, but that process is gone (SIGKILL).
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid_file = runtime / "pids" / "worker_ibs_t.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{gone.pid}\n")
    write_beat(client, runtime, time.time(), pid=gone.pid)
    killed = tick(instance, config, redis_url, failed.cursor)
    assert _only_request(killed).run_key == f"{COMPONENT}/outage-2/attempt-1"
    assert f"process {gone.pid} is gone" in alerts(client)[-1]["message"]


def test_crash_loop_is_reported_once_and_not_restarted(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml", max_restarts=2, restart_window_minutes=60)
    cursor = None
    # Each outage has a different last heartbeat: the process came back and died again.
    for n in (1, 2):
        write_beat(client, runtime, time.time() - STALE + n, ttl=None)
        result = tick(instance, config, redis_url, cursor)
        assert _only_request(result).run_key == f"{COMPONENT}/outage-{n}/attempt-1"
        cursor = result.cursor

    write_beat(client, runtime, time.time() - STALE + 3, ttl=None)
    looping = tick(instance, config, redis_url, cursor)
    assert not looping.run_requests
    assert "crash loop: 2 restarts in 60 min" in looping.skip_reason.skip_message
    again = tick(instance, config, redis_url, looping.cursor)
    assert not again.run_requests
    assert _kinds(client) == ["process_down", "process_down", "process_down", "crash_loop"]
    loop = alerts(client)[-1]
    assert loop["severity"] == "critical" and loop["component"] == COMPONENT


def test_finished_run_for_a_persisting_outage_gets_a_new_attempt(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    first = tick(instance, config, redis_url, None)
    request = _only_request(first)
    # Dagster ran the requested start and it failed (here: a component the config does not know).
    run_config, tags = process_run("start_process", "worker:nope")
    run = start_process.execute_in_process(
        run_config=run_config, instance=instance, resources=resources(config, redis_url), raise_on_error=False,
        tags={**tags, "dagster/run_key": request.run_key, "dagster/sensor_name": SUPERVISION_SENSOR},
    )
    assert not run.success

    retry = tick(instance, config, redis_url, first.cursor)
    assert _only_request(retry).run_key == f"{COMPONENT}/outage-1/attempt-2"
    assert _kinds(client) == ["process_down"]  # still the same outage


def test_run_failure_sensor_alerts_with_the_step_error(
    instance: dg.DagsterInstance, client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    run_config, tags = process_run("start_process", "worker:nope")
    result = start_process.execute_in_process(
        run_config=run_config, tags=tags, instance=instance, resources=resources(config, redis_url),
        raise_on_error=False,
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=result.get_run_failure_event(), dagster_instance=instance,
        dagster_run=result.dagster_run, resources=resources(config, redis_url),
    ).for_run_failure()
    alert_on_run_failure(context)

    (alert,) = alerts(client)
    assert alert["kind"] == "run_failed" and alert["severity"] == "critical"
    assert alert["component"] == "worker:nope"
    assert "unknown Pine process 'worker:nope'; known: hub, worker:ibs_t" in alert["message"]
    assert json.loads(alert["details"])["run_id"] == result.run_id


def test_systemd_mode_only_alerts(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml", mode="systemd")
    write_beat(client, runtime, time.time() - STALE, ttl=None)
    first = tick(instance, config, redis_url, None)
    second = tick(instance, config, redis_url, first.cursor)
    assert not first.run_requests and not second.run_requests
    assert "systemd restarts it" in first.skip_reason.skip_message
    (down,) = alerts(client)
    assert "systemd should restart it" in down["message"]
    # A clean stop (systemctl stop) is on purpose: no alert.
    write_beat(client, runtime, time.time(), status="stopped")
    assert "stopped" in tick(instance, config, redis_url, second.cursor).skip_reason.skip_message
    assert len(alerts(client)) == 1


def test_stop_marker_keeps_the_sensor_away(
    instance: dg.DagsterInstance, client: redis.Redis, runtime: Path, redis_url: str, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml")
    write_beat(client, runtime, time.time() - STALE, status="stopped", ttl=None)
    outcome = stop(load_config(config), COMPONENT, None, reason="test")
    assert outcome.action == "not running"
    result = tick(instance, config, redis_url, None)
    assert not result.run_requests
    assert f"{COMPONENT}: stopped (stopped by an operator" in result.skip_reason.skip_message
    assert alerts(client) == []
