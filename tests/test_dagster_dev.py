"""Smoke test: `dagster dev` from the repository loads the code location; GraphQL lists what Pine defines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestration.dagster_dev import DagsterDev
from pine.redis_server import free_port

REPOSITORY_QUERY = """
query ($summer: Float, $winter: Float) { repositoriesOrError { __typename
  ... on RepositoryConnection { nodes { name location { name }
      jobs { name }
      assetNodes { assetKey { path } groupName }
      sensors { name minIntervalSeconds sensorState { status } }
      schedules { name cronSchedule executionTimezone scheduleState { status }
        summer: futureTicks(cursor: $summer, limit: 6) { results { timestamp } }
        winter: futureTicks(cursor: $winter, limit: 6) { results { timestamp } } } } } } }
"""


@pytest.fixture
def dagster(tmp_path: Path) -> Iterator[DagsterDev]:
    # A config path that does not exist: loading the code location must not read the Pine config.
    env = {"PINE_CONFIG": str(tmp_path / "absent.yml"), "PINE_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = DagsterDev(tmp_path / "dagster_home", tmp_path / "dagster.log", port=free_port(), env=env)
    with server:
        yield server
    assert server.proc is None


def _utc(timestamps: list[dict[str, float]]) -> list[str]:
    return [datetime.fromtimestamp(t["timestamp"], UTC).strftime("%a %Y-%m-%d %H:%M") for t in timestamps]


@pytest.mark.slow
def test_dagster_dev_loads_the_code_location_and_lists_definitions(dagster: DagsterDev) -> None:
    dagster.wait_loaded(timeout=240)
    assert dagster.location_status() == {"pine": "LOADED"}

    data = dagster.graphql(REPOSITORY_QUERY, {"summer": datetime(2024, 7, 5, 12, tzinfo=UTC).timestamp(),
                                              "winter": datetime(2024, 1, 5, 12, tzinfo=UTC).timestamp()})
    (repo,) = data["repositoriesOrError"]["nodes"]
    assert repo["location"]["name"] == "pine"
    assets = {tuple(a["assetKey"]["path"]): a["groupName"] for a in repo["assetNodes"]}
    assert assets == {("contract_map",): "reference", ("daily_summary",): "operations",
                      ("daily_reconciliation",): "operations", ("warmup_cache",): "market_data",
                      ("bar_audit",): "market_data", ("ml_models",): "ml", ("champion_models",): "ml"}
    jobs = {j["name"] for j in repo["jobs"]}
    assert {"start_process", "restart_process", "stop_process", "daily_summary_job"} <= jobs
    sensors = {s["name"]: (s["minIntervalSeconds"], s["sensorState"]["status"]) for s in repo["sensors"]}
    assert sensors["supervise_processes"] == (30, "STOPPED")  # turned on where Dagster owns the processes
    assert sensors["alert_on_run_failure"][1] == "RUNNING"

    schedules = {s["name"]: s for s in repo["schedules"]}
    assert set(schedules) == {"daily_summary", "warmup_refresh"}
    schedule = schedules["daily_summary"]
    assert (schedule["name"], schedule["cronSchedule"], schedule["executionTimezone"]) == (
        "daily_summary", "0 17 * * 1-5", "America/Chicago")
    assert schedule["scheduleState"]["status"] == "RUNNING"
    # The daemon's own tick times: 17:00 Chicago is 22:00 UTC in summer, 23:00 UTC in winter; no weekend.
    assert _utc(schedule["summer"]["results"]) == [
        "Fri 2024-07-05 22:00", "Mon 2024-07-08 22:00", "Tue 2024-07-09 22:00", "Wed 2024-07-10 22:00",
        "Thu 2024-07-11 22:00", "Fri 2024-07-12 22:00"]
    assert _utc(schedule["winter"]["results"]) == [
        "Fri 2024-01-05 23:00", "Mon 2024-01-08 23:00", "Tue 2024-01-09 23:00", "Wed 2024-01-10 23:00",
        "Thu 2024-01-11 23:00", "Fri 2024-01-12 23:00"]
