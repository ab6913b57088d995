"""End to end: ``pine demo`` on embedded defaults (no REDIS_URL, no keys)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_demo_runs_the_whole_system_and_reports_trades(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABENTO_API_KEY")}
    env["PINE_RUNTIME_DIR"] = str(runtime)
    proc = subprocess.run(
        [sys.executable, "-m", "pine.cli", "demo", "--days", "6", "--no-dagster"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    db = runtime / "demo" / "trades.db"
    with sqlite3.connect(db) as conn:
        per_strategy = dict(conn.execute("SELECT strategy, count(*) FROM trades GROUP BY strategy").fetchall())
        bars = conn.execute("SELECT count(*) FROM bar_log").fetchone()[0]
        workers = {s for (s,) in conn.execute("SELECT DISTINCT strategy FROM bar_log")}
    # Which strategy gets the portfolio's slots first depends on the processes' timing: some must trade.
    assert per_strategy and set(per_strategy) <= {"ibs_a", "ibs_b", "breakout"}, per_strategy
    assert workers == {"ibs_a", "ibs_b", "breakout"}  # the three enabled strategies, side by side
    assert bars > 10_000
    # The workers warmed up from the caches built from the demo's history, then traded the replayed days.
    assert "pine demo: warmup caches in" in proc.stdout and "complete through 2024-03-01T23:00:00+00:00" in proc.stdout
    for strategy in workers:
        log = (runtime / "demo" / "logs" / f"worker_{strategy}.jsonl").read_text()
        assert "warmup done" in log and '"component": "worker:' + strategy + '"' in log
    # The summary printed at the end is the one read back from the DB.
    for strategy, n in per_strategy.items():
        assert any(line.split()[:2] == [strategy, str(n)] for line in proc.stdout.splitlines()), proc.stdout[-2000:]
    assert "private Redis" in proc.stdout
    # The demo trained and promoted one ibs strategy's veto models before the workers started; they decided.
    (trained,) = [line for line in proc.stdout.splitlines()
                  if line.startswith("pine demo: ML veto models trained and promoted to champion for ")]
    strategy = trained.split(" for ", 1)[1].split()[0]
    champions = dict(re.findall(rf"({strategy}_\w+) v(\d+)", trained))
    assert strategy in {"ibs_a", "ibs_b"} and champions, trained
    with sqlite3.connect(db) as conn:
        decisions = conn.execute("SELECT strategy, model, version, outcome, score FROM ml_decisions").fetchall()
    assert decisions, "no ML veto decision recorded"
    for row_strategy, model, version, outcome, score in decisions:
        assert row_strategy == strategy and champions[model] == version and outcome in ("taken", "vetoed", "not_ready")
        assert (score is None) == (outcome == "not_ready")
    assert f"pine demo: {len(decisions)} ML veto decisions recorded (" in proc.stdout


def _processes_with_env(entry: str) -> list[int]:
    """PIDs of this user's processes whose environment contains ``entry`` (``NAME=value``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue  # exited meanwhile, or not ours
    return found


@pytest.mark.slow
def test_demo_runs_dagster_alongside_and_stops_it(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABENTO_API_KEY")}
    env["PINE_RUNTIME_DIR"] = str(runtime)
    proc = subprocess.run(
        [sys.executable, "-m", "pine.cli", "demo", "--days", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    (started,) = [line for line in lines if line.startswith("pine demo: Dagster (webserver + daemon) at http://")]
    assert started.endswith(f"log {runtime / 'demo' / 'logs' / 'dagster.log'}")
    # Whether the UI had finished loading depends on how long the market took; either way it is stopped.
    assert any(line.startswith("pine demo: Dagster ") and line.endswith("; stopping it") for line in lines)
    home = runtime / "demo" / "dagster"
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
    assert _processes_with_env(f"DAGSTER_HOME={home}") == []
