"""End to end: ``pine demo`` on embedded defaults (no REDIS_URL, no keys), in ONE run of the whole system.

The demo replays a few synthetic days with Dagster and ``--serve``; while it serves, the dashboard is checked
over HTTP and in a real headless Chromium (Debian's ``chromium`` through Playwright, as in
``test_dashboard_browser``); then Ctrl-C, and what it left behind: the trades DB, the summary, the Dagster
instance in ``<runtime>/demo/dagster`` (runs and materialisation metadata) and no process.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from tests.conftest import REPO
from tests.test_dashboard_browser import ARTIFACTS, CHROMIUM, FLAGS

STRATEGIES = {"ibs_a", "ibs_b", "breakout"}  # the enabled strategies of the shipped config


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


def _money(x: float) -> str:
    """The dashboard's money format (``+$1,234.50``)."""
    return f"{'-' if x < 0 else '+'}${abs(x):,.2f}"


def _ml_decision(outcome: str, shadow: int, take: int | None) -> str:
    """What the dashboard's ML panel says of a decision (``mlDecision`` in app.js)."""
    if outcome == "not_ready":
        return "features not ready"
    return f"taken (shadow: model said {'take' if take else 'veto'})" if shadow else outcome


def _check_page(base: str, token: str, db: Path) -> None:
    """The dashboard in Chromium: the trades table and the ML decisions panel show the DB's rows."""
    from playwright.sync_api import expect, sync_playwright

    with sqlite3.connect(db) as conn:
        trades = conn.execute("SELECT exit_time, strategy, symbol, net_pnl FROM trades "
                              "ORDER BY exit_time DESC, trade_id DESC LIMIT 50").fetchall()
        decisions = conn.execute("SELECT signal_time, strategy, symbol, outcome, shadow, take, model, version "
                                 "FROM ml_decisions ORDER BY signal_time DESC, strategy, symbol LIMIT 50").fetchall()
        counts = dict(conn.execute("SELECT outcome, COUNT(*) FROM ml_decisions GROUP BY outcome").fetchall())
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/#token={token}")
        expect(page.locator("#trades tbody tr td").first).not_to_have_text("none")

        def cells(table: str) -> list[list[str]]:
            rows: list[list[str]] = page.eval_on_selector_all(
                f"#{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            return rows

        shown = cells("trades")
        assert [(r[0], r[1], r[2], r[7]) for r in shown] == [
            (t[:16].replace("T", " "), s, sym, _money(net)) for t, s, sym, net in trades]
        expect(page.locator("#ml-summary")).to_have_text(
            f"{counts.get('taken', 0)} taken · {counts.get('vetoed', 0)} vetoed · {counts.get('not_ready', 0)} "
            "not ready (all recorded decisions)")
        assert [r[:4] + r[6:8] for r in cells("ml")] == [
            [t[:16].replace("T", " "), s, sym, _ml_decision(outcome, shadow, take), model, str(version)]
            for t, s, sym, outcome, shadow, take, model, version in decisions]
        page.screenshot(path=str(ARTIFACTS / "demo-dashboard.png"), full_page=True)
        rendered = page.content()
        browser.close()
    assert token not in rendered
    assert (ARTIFACTS / "demo-dashboard.png").stat().st_size > 10_000


def _dagster_record(home: Path) -> tuple[dict[str, dg.DagsterRunStatus], dict[str, Any], dict[str, Any]]:
    """From the demo's Dagster instance: status of each ``daily_summary_job`` run by trading day, and the
    ``trades`` metadata of the ``daily_summary`` and ``daily_reconciliation`` materialisations by trading day."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="daily_summary_job"))
        statuses = {run.tags["pine/trading_day"]: run.status for run in runs}

        def trades(key: str) -> dict[str, Any]:
            records = instance.fetch_materializations(dg.AssetKey(key), limit=100).records
            metadata = [r.asset_materialization.metadata for r in records if r.asset_materialization]
            return {m["trading_day"].value: m["trades"].value for m in metadata}

        return statuses, trades("daily_summary"), trades("daily_reconciliation")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_trades_and_shows_them_in_the_dashboard_and_dagster_then_stops_cleanly(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    demo_dir = runtime / "demo"
    db = demo_dir / "trades.db"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABENTO_API_KEY", "PINE_DAGSTER_PG_URL")}
    env["PINE_RUNTIME_DIR"] = str(runtime)
    demo = subprocess.Popen([sys.executable, "-m", "pine.cli", "demo", "--days", "4", "--serve"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert demo.stdout is not None
    lines: list[str] = []
    base = ""
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
        with sqlite3.connect(db) as conn:
            trades = conn.execute("SELECT COUNT(*) FROM trades").fetchone()[0]
        assert overview["metrics"]["all"] is None or overview["metrics"]["all"]["trades"] == trades
        assert overview["redis"] == "ok"  # the demo's Redis is still up
        # The market is over and the processes finished: /health says so.
        health = requests.get(f"{base}/health", timeout=10)
        assert health.status_code == 503 and "hub: finished" in health.json()["reasons"]
        if CHROMIUM is not None:
            _check_page(base, token, db)
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=90)
    assert demo.returncode == 0, "".join(lines)[-3000:] + out[-3000:] + err[-3000:]
    stdout = "".join(lines) + out
    out_lines = stdout.splitlines()
    assert "stopping the dashboard" in out
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/health", timeout=5)

    # The three enabled strategies ran side by side on the replayed market; which one gets the portfolio's
    # slots first depends on the processes' timing: some must trade.
    with sqlite3.connect(db) as conn:
        per_strategy = dict(conn.execute("SELECT strategy, count(*) FROM trades GROUP BY strategy").fetchall())
        per_day = dict(conn.execute("SELECT trading_day, count(*) FROM trades GROUP BY trading_day").fetchall())
        bars = conn.execute("SELECT count(*) FROM bar_log").fetchone()[0]
        workers = {s for (s,) in conn.execute("SELECT DISTINCT strategy FROM bar_log")}
        decisions = conn.execute("SELECT strategy, model, version, outcome, score FROM ml_decisions").fetchall()
    assert per_strategy and set(per_strategy) <= STRATEGIES, per_strategy
    assert workers == STRATEGIES
    assert bars > 10_000
    # The workers warmed up from the caches built from the demo's history, then traded the replayed days.
    assert "pine demo: warmup caches in" in stdout and "complete through 2024-03-01T23:00:00+00:00" in stdout
    for strategy in workers:
        log = (demo_dir / "logs" / f"worker_{strategy}.jsonl").read_text()
        assert "warmup done" in log and '"component": "worker:' + strategy + '"' in log
    # The summary printed at the end is the one read back from the DB.
    for strategy, n in per_strategy.items():
        assert any(line.split()[:2] == [strategy, str(n)] for line in out_lines), stdout[-2000:]
    assert "private Redis" in stdout
    # The demo trained and promoted one ibs strategy's veto models before the workers started; they decided.
    (trained,) = [line for line in out_lines
                  if line.startswith("pine demo: ML veto models trained and promoted to champion for ")]
    strategy = trained.split(" for ", 1)[1].split()[0]
    champions = dict(re.findall(rf"({strategy}_\w+) v(\d+)", trained))
    assert strategy in {"ibs_a", "ibs_b"} and champions, trained
    assert decisions, "no ML veto decision recorded"
    for row_strategy, model, version, outcome, score in decisions:
        assert row_strategy == strategy and champions[model] == version and outcome in ("taken", "vetoed", "not_ready")
        assert (score is None) == (outcome == "not_ready")
    assert f"pine demo: {len(decisions)} ML veto decisions recorded (" in stdout

    # Dagster ran alongside, summarised and reconciled every day with trades, and was stopped.
    (started,) = [line for line in out_lines if line.startswith("pine demo: Dagster (webserver + daemon) at http://")]
    assert started.endswith(f"log {demo_dir / 'logs' / 'dagster.log'}")
    ui = started.split(" at ", 1)[1].split(",", 1)[0]
    assert f"pine demo: Dagster UI: the daily summaries (trades, P&L per strategy) at {ui}/assets/daily_summary" \
        in stdout
    assert any(line.startswith("pine demo: Dagster ") and line.endswith("; stopping it") for line in out_lines)
    home = demo_dir / "dagster"
    assert (home / "dagster.yaml").read_text() == (REPO / "dagster.yaml").read_text()
    assert _processes_with_env(f"DAGSTER_HOME={home}") == []
    statuses, summaries, reconciliations = _dagster_record(home)
    assert summaries == per_day  # the asset page shows the DB's trades, day by day
    assert reconciliations == per_day
    for day, n in per_day.items():
        assert any(line.strip().startswith(f"{day}: ") and f" {n} trades, net P&L " in line
                   for line in out_lines + err.splitlines()), stdout[-2000:] + err[-2000:]
    # Every run succeeded: each day's reconciliation checks passed (a failed one names its run's page).
    assert statuses == dict.fromkeys(per_day, dg.DagsterRunStatus.SUCCESS), (
        statuses, [line for line in out_lines if "Dagster" in line], err[-3000:])
    if CHROMIUM is None:
        pytest.skip("everything but the page in a browser checked: no chromium on PATH (`make test` installs "
                    "Debian's chromium as root: apt-get install chromium)")
