"""``pine demo`` prints the dashboard's address and, with ``--serve``, keeps it up after the market is replayed."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO


@pytest.mark.slow
def test_demo_serves_its_dashboard_until_interrupted(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABENTO_API_KEY")}
    env["PINE_RUNTIME_DIR"] = str(runtime)
    demo = subprocess.Popen([sys.executable, "-m", "pine.cli", "demo", "--days", "2", "--no-dagster", "--serve"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert demo.stdout is not None
    lines = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        ready = lines[-1]
        assert "dashboard answering at http://127.0.0.1:" in ready, "".join(lines)
        assert any(line.startswith("pine demo: dashboard at http://127.0.0.1:") for line in lines)
        m = re.search(r"(http://127\.0\.0\.1:\d+)/#token=(\S+)", ready)
        assert m is not None
        base, token = m.groups()
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base}/api/overview", timeout=10).status_code == 401
        overview = requests.get(f"{base}/api/overview", headers=auth, timeout=10).json()
        with sqlite3.connect(runtime / "demo" / "trades.db") as conn:
            trades = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
        assert overview["metrics"]["all"] is None or overview["metrics"]["all"]["trades"] == trades
        assert overview["redis"] == "ok"  # the demo's Redis is still up
        # The market is over and the processes finished: /health says so.
        health = requests.get(f"{base}/health", timeout=10)
        assert health.status_code == 503 and "hub: finished" in health.json()["reasons"]
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    assert demo.returncode == 0, err[-3000:]
    assert "stopping the dashboard" in out
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health", timeout=5)
