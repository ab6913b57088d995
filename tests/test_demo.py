"""End to end: ``pine demo`` on embedded defaults (no REDIS_URL, no keys)."""

from __future__ import annotations

import os
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
        [sys.executable, "-m", "pine.cli", "demo", "--days", "6"],
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
    assert set(per_strategy) == {"ibs_a", "ibs_b"}, per_strategy
    assert bars > 10_000
    # The summary printed at the end is the one read back from the DB.
    for strategy, n in per_strategy.items():
        assert any(line.split()[:2] == [strategy, str(n)] for line in proc.stdout.splitlines()), proc.stdout[-2000:]
    assert "private Redis" in proc.stdout
