"""The start/restart/stop jobs run for real: a worker on an empty Redis, detached, PID file, stop marker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import redis
import yaml

from orchestration.jobs import process_run, restart_process, start_process, stop_process
from orchestration.process_control import pid_alive, stop
from pine.config import load_config
from pine.redis_server import free_port
from tests.conftest import REPO
from tests.supervision_support import COMPONENT, resources, supervised_config, tick

DAGSTER = Path(sys.executable).parent / "dagster"
JOBS = {"start_process": start_process, "restart_process": restart_process, "stop_process": stop_process}


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    path = supervised_config(tmp_path / "config.yml", stop_timeout_s=20)
    yield path
    # Never leave a worker behind, whatever the test did.
    stop(load_config(path), COMPONENT, None, reason="test teardown")


def _run(job: str, config: Path, redis_url: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    run_config, tags = process_run(job, COMPONENT)
    return JOBS[job].execute_in_process(
        run_config=run_config, tags=tags, instance=instance, resources=resources(config, redis_url),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (output,) = [e for e in result.all_events if e.is_successful_output]
    return {k: v.value for k, v in output.event_specific_data.metadata.items()}


def _pid(runtime: Path) -> int:
    return int((runtime / "pids" / "worker_ibs_t.pid").read_text())


def _beat(redis_url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    try:
        return json.loads(client.get(f"heartbeat:{COMPONENT}"))
    finally:
        client.close()


def test_start_restart_stop_manage_one_detached_worker(
    config: Path, redis_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    # No REDIS_URL in this environment: the job hands the started worker the Redis it reads heartbeats from.
    env = redis_url
    runtime = tmp_path / "runtime"
    started = _run("start_process", config, env, instance)
    assert started.success
    pid = _pid(runtime)
    assert _metadata(started)["started"] == pid
    assert pid_alive(pid)
    # Its own session (and process group): signals to Dagster's process group never reach it.
    assert os.getsid(pid) == pid != os.getsid(0)
    assert _beat(env)["pid"] == pid
    assert (runtime / "logs" / "worker_ibs_t.log").exists()

    # Starting what runs is a no-op: never two workers for one strategy.
    again = _run("start_process", config, env, instance)
    assert again.success and _metadata(again)["already running"] == pid and _pid(runtime) == pid

    restarted = _run("restart_process", config, env, instance)
    assert restarted.success
    new_pid = _pid(runtime)
    assert new_pid != pid and not pid_alive(pid) and pid_alive(new_pid)
    assert _metadata(restarted)["stopped"] == pid and _metadata(restarted)["started"] == new_pid
    assert _beat(env)["pid"] == new_pid

    stopped = _run("stop_process", config, env, instance)
    assert stopped.success and _metadata(stopped)["stopped"] == new_pid
    assert not pid_alive(new_pid)
    assert not (runtime / "pids" / "worker_ibs_t.pid").exists()
    assert (runtime / "pids" / "worker_ibs_t.stopped").exists()
    assert _beat(env)["status"] == "stopped"  # SIGTERM: a graceful stop with a last heartbeat
    # The sensor leaves an intentionally stopped process alone...
    result = tick(instance, config, env, None)
    assert not result.run_requests and "stopped by an operator" in result.skip_reason.skip_message

    # ...until it is started again.
    assert _run("start_process", config, env, instance).success
    assert not (runtime / "pids" / "worker_ibs_t.stopped").exists()
    assert not tick(instance, config, env, None).run_requests


def test_started_worker_outlives_the_run_process(config: Path, redis_url: str, tmp_path: Path) -> None:
    """The job runs in a separate `dagster job execute` process; the worker it starts stays after it exits."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump({"ops": {"start_pine_process": {"config": {"component": COMPONENT}}}}))
    proc = subprocess.run(
        [str(DAGSTER), "job", "execute", "-m", "orchestration.definitions", "-j", "start_process",
         "-c", str(run_config), "--tags", json.dumps({"pine/process": "worker.ibs_t"})],
        cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home), "PINE_CONFIG": str(config), "REDIS_URL": redis_url},
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pid = _pid(tmp_path / "runtime")
    assert pid_alive(pid), "the worker died with the run's process"
    assert os.getppid() != pid and os.getsid(pid) == pid
    assert _beat(redis_url)["pid"] == pid


def test_a_process_that_ignores_sigterm_is_killed_on_restart(
    redis_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    config = supervised_config(tmp_path / "config.yml", stop_timeout_s=1)
    runtime = tmp_path / "runtime"
    # A hung "worker": its command line is the worker's, it ignores SIGTERM and writes no heartbeat.
    hung = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
         "pine", "worker", "--strategy", "ibs_t"],
    )
    try:
        (runtime / "pids").mkdir(parents=True)
        (runtime / "pids" / "worker_ibs_t.pid").write_text(f"{hung.pid}\n")
        restarted = _run("restart_process", config, redis_url, instance)
        assert restarted.success
        assert _metadata(restarted)["killed"] == hung.pid
        assert hung.wait(timeout=30) == -9
        assert pid_alive(_pid(runtime))
    finally:
        hung.kill()
        stop(load_config(config), COMPONENT, None, reason="test teardown")


def test_a_worker_that_dies_at_start_fails_the_run_with_its_log(
    config: Path, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    # Nobody listens there: the job reads heartbeat files only, the worker it starts exits.
    result = _run("start_process", config, f"redis://127.0.0.1:{free_port()}/0", instance)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"{COMPONENT} exited at start (exit code 1); last lines of")
    assert "cannot reach Redis" in description
    assert not (tmp_path / "runtime" / "pids" / "worker_ibs_t.pid").exists()


def test_unknown_component_fails_without_starting_anything(
    config: Path, redis_url: str, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    run_config, tags = process_run("start_process", "worker:typo")
    result = start_process.execute_in_process(
        run_config=run_config, tags=tags, instance=instance, resources=resources(config, redis_url),
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_failure_data.user_failure_data.description == (
        "unknown Pine process 'worker:typo'; known: hub, worker:ibs_t"
    )
    assert not (tmp_path / "runtime" / "pids").exists()
