"""End to end: the Dagster daemon runs the supervision sensor; it starts a worker, the worker is SIGKILLed,
the sensor restarts it, and it resumes with no bar lost or processed twice and the same trades and orders."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import redis

from orchestration.process_control import pid_alive, read_pid, stop
from pine.bus import BarPublisher
from pine.config import load_config
from tests.bar_factory import boundaries
from tests.conftest import REPO
from tests.supervision_support import COMPONENT, alerts, supervised_config
from tests.worker_support import bar_log, start_worker, synthetic_market
from workers.feeds import feed_name

BIN = Path(sys.executable).parent
# Bounds for waiting on the daemon (a 30 s sensor interval, run launch, worker start); never asserted on.
DEADLINE_S = 300


def _wait_for(condition: Callable[[], bool], what: str, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if daemon.poll() is not None:
            raise AssertionError(f"dagster-daemon exited ({daemon.returncode}) before {what}; see {log}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}; daemon log {log}")
        time.sleep(0.5)


@pytest.fixture
def dagster_env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    config = supervised_config(tmp_path / "config.yml")
    return {**os.environ, "DAGSTER_HOME": str(home), "PINE_CONFIG": str(config), "REDIS_URL": redis_url,
            "PINE_RUNTIME_DIR": str(tmp_path / "runtime")}


@pytest.fixture
def daemon(dagster_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``dagster-daemon run`` with the supervision sensor turned on; stopped (with the worker) afterwards."""
    started = subprocess.run(
        [str(BIN / "dagster"), "sensor", "start", "supervise_processes", "-w", "workspace.yaml"],
        cwd=REPO, env=dagster_env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    log = tmp_path / "daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO,
                                env=dagster_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the code server and run workers it started
        proc.wait()
        stop(load_config(Path(dagster_env["PINE_CONFIG"])), COMPONENT, None, reason="test teardown")


def _orders(db: Path) -> list[tuple[str, str, str, int, str]]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute("SELECT client_order_id, symbol, side, quantity, status FROM orders").fetchall())
    finally:
        conn.close()


def _trades(db: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute(
            "SELECT trade_id, symbol, direction, size, entry_time, entry_price, exit_time, exit_price, net_pnl "
            "FROM trades").fetchall())
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sensor_restarts_a_killed_worker_which_resumes_exactly_once(
    daemon: tuple[subprocess.Popen[bytes], Path], dagster_env: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    proc, log = daemon
    runtime = tmp_path / "runtime"
    pid_file = runtime / "pids" / "worker_ibs_t.pid"
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    bars = synthetic_market()
    groups = boundaries(bars)
    cuts = (0, len(groups) // 3, len(groups) * 2 // 3, len(groups))

    def publish(part: int) -> int:
        for end, group in groups[cuts[part]:cuts[part + 1]]:
            publisher.publish(group, end)
        return sum(len(g) for _, g in groups[:cuts[part + 1]])

    # The hub has published a third of the market; no worker runs: the sensor starts one.
    first_third = publish(0)
    _wait_for(lambda: len(bar_log(runtime)) == first_third, "the started worker to process the first third",
              proc, log)
    first_pid = read_pid(pid_file)
    assert first_pid is not None and os.getsid(first_pid) == first_pid

    # SIGKILL: no last heartbeat, no cleanup. While it is down the hub publishes another third.
    os.kill(first_pid, signal.SIGKILL)
    two_thirds = publish(1)
    _wait_for(lambda: (pid := read_pid(pid_file)) not in (None, first_pid) and pid_alive(pid),
              "the sensor to restart the worker", proc, log)
    publish(2)
    publisher.publish([], groups[-1][0], state="finished")
    _wait_for(lambda: len(bar_log(runtime)) >= len(bars), "every bar", proc, log)

    # Every bar published was processed exactly once across the two processes.
    published = Counter((feed_name(b.symbol, b.timeframe), int(b.timestamp.timestamp() * 1000), 0) for b in bars)
    assert Counter(bar_log(runtime)) == published
    assert first_third < two_thirds < len(bars)
    second_pid = read_pid(pid_file)
    assert second_pid is not None and pid_alive(second_pid)
    assert json.loads(client.get(f"heartbeat:{COMPONENT}"))["pid"] == second_pid

    # One run per outage: the initial start, then one restart.
    instance = dg.DagsterInstance.from_config(dagster_env["DAGSTER_HOME"])
    try:
        runs = sorted(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/sensor_name": "supervise_processes"})),
                      key=lambda r: r.tags["dagster/run_key"])
        assert [(r.job_name, r.tags["dagster/run_key"], r.status) for r in runs] == [
            ("start_process", f"{COMPONENT}/outage-1/attempt-1", dg.DagsterRunStatus.SUCCESS),
            ("restart_process", f"{COMPONENT}/outage-2/attempt-1", dg.DagsterRunStatus.SUCCESS),
        ]
        assert all(r.tags["pine/process"] == "worker.ibs_t" for r in runs)
    finally:
        instance.dispose()
    kinds = [(a["kind"], a["component"]) for a in alerts(client)]
    assert kinds == [("process_down", COMPONENT), ("process_down", COMPONENT)]
    assert f"process {first_pid} is gone" in alerts(client)[1]["message"]

    # The same trades and orders as one uninterrupted worker over the same bars.
    reference = tmp_path / "reference"
    uninterrupted = start_worker(Path(dagster_env["PINE_CONFIG"]), redis_url, reference)
    _, err = uninterrupted.communicate(timeout=240)
    assert uninterrupted.returncode == 0, err
    assert len(_trades(reference / "trades.db")) >= 6
    assert _trades(runtime / "trades.db") == _trades(reference / "trades.db")
    assert _orders(runtime / "trades.db") == _orders(reference / "trades.db")
    client.close()
