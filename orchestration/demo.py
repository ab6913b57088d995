"""``pine demo``: the whole system on embedded defaults.

Synthetic market (real DBN files) → private Redis → hub replay → one worker per enabled
strategy with the paper broker → trades DB → summary. The days before the replayed market are
written too and aggregated into the warmup caches the workers start from (``demo_history``).
Meanwhile, in a second process, the ML veto models of one ibs strategy are trained on the
demo's training history and promoted to champion (``demo_models``), so its worker vetoes.
Once the market is replayed, Dagster (unless ``--no-dagster``) summarises and reconciles each replayed
day with trades (``daily_summary_job``, one run per trading day), so its UI shows the demo's trades.
Everything lives in ``<runtime>/demo``, which is recreated on every run so a demo never mixes
with real trading state.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final
from urllib.error import URLError

import redis

from hub.history import HistoryError, bars_from_archive
from orchestration.dagster_dev import DagsterDev, DagsterDevError
from orchestration.demo_dashboard import DemoDashboard
from orchestration.demo_history import demo_roots, history_days, prepare_history
from orchestration.demo_models import TRAINING_SESSIONS, DemoModels, prepare_models
from orchestration.processes import log_tail, spawn_pine, stop
from pine import redis_names
from pine.bar_cache import BarCacheError, bars_frame, cache_path, read_bar_list, write_bars
from pine.bars import TIMEFRAMES
from pine.config import PineConfig
from pine.contracts import load_contract_map
from pine.redis_server import RedisServer

SUMMARY_JOB: Final = "daily_summary_job"
# After the replay the code location has normally loaded long ago; this bounds a slow or broken start.
DAGSTER_LOAD_TIMEOUT_S: Final = 90.0
DAGSTER_RUNS_TIMEOUT_S: Final = 300.0
# Each run is a Python process importing the code location and backtesting every strategy from the workers'
# start (about 15 s of CPU per day on the demo's market): only the last days go to Dagster.
DAGSTER_MAX_DAYS: Final = 5
_FINISHED: Final = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


def demo_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when every process finished cleanly and the summary was printed."""
    from hub.synthetic import write_synthetic_market

    strategies = sorted(cfg.enabled_strategies())
    if not strategies:
        print("pine demo: no enabled strategy in the config; enable one under 'strategies'", file=sys.stderr)
        return 1
    roots = demo_roots(cfg, strategies)
    root_dir = Path(cfg.runtime_dir) / "demo"
    if root_dir.exists():
        shutil.rmtree(root_dir)
    root_dir.mkdir(parents=True)
    started = time.monotonic()
    if os.environ.pop("MLFLOW_TRACKING_URI", None):
        print("pine demo: MLFLOW_TRACKING_URI ignored: the demo's models stay in its own store", flush=True)

    start = date.fromisoformat(args.start)
    print(f"pine demo: {args.history_days} trading days of history for the workers' warmup, {args.days} trading "
          f"days of synthetic market to replay, for {', '.join(roots)} (seed {args.seed})", flush=True)
    # The models train in a second process while this one writes the DBN history (both CPU-bound).
    models: DemoModels | None = None
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        training = pool.submit(_train_models, cfg, root_dir, history_days(start, max(args.history_days, 1))[0],
                               args.seed)
        handover = prepare_history(cfg, root_dir, roots, start, args.history_days, args.seed)
        print(f"pine demo: warmup caches in {root_dir / cfg.warmup.cache_dir}, complete through "
              f"{handover.isoformat() if handover else '(no history)'}", flush=True)
        history_ready = time.monotonic()
        try:
            models = training.result()
        except Exception as exc:  # the demo goes on: its workers trade without veto, and say so
            print(f"pine demo: ML veto models NOT trained ({type(exc).__name__}: {exc}; see "
                  f"{_training_log(root_dir)}): the workers trade without veto", file=sys.stderr, flush=True)
    if models is not None:
        detail = (f" ({TRAINING_SESSIONS} sessions of training history in {root_dir / 'ml_history'}; MLflow store "
                  f"{root_dir / 'mlflow'}; log {_training_log(root_dir)}; the demo waited "
                  f"{time.monotonic() - history_ready:.0f}s for it)") if models.strategy else ""
        print(f"pine demo: {models.describe()}{detail}", flush=True)
    files = write_synthetic_market(
        root_dir / "replay",  # the demo's live feed; its archive (<root_dir>/market) holds the history only
        roots,
        date.fromisoformat(args.start),
        args.days,
        args.seed,
        load_contract_map(cfg.contract_map_path),
    )

    config_arg = ["--config", str(cfg.source)] if cfg.source else []
    with RedisServer(root_dir / "redis") as server, ExitStack() as services:
        env = {"REDIS_URL": server.url, "PINE_RUNTIME_DIR": str(root_dir)}
        print(f"pine demo: private Redis at {server.url}; runtime dir {root_dir}")
        # Dagster and the dashboard stop when the demo ends (the ExitStack closes before Redis stops).
        ui = None if args.no_dagster else services.enter_context(_dagster(cfg, root_dir, env))
        if ui is not None:
            print(f"pine demo: Dagster (webserver + daemon) at {ui.url}, for the length of the demo; log {ui.log}")
        board = services.enter_context(DemoDashboard(root_dir, env, config_arg))
        print(f"pine demo: dashboard at {board.url} ({'until Ctrl-C' if args.serve else 'for the length of the demo'}"
              f"; log {board.log})", flush=True)
        procs = [
            _start(f"worker:{s}", ["worker", "--strategy", s, "--stop-at-end", *config_arg], root_dir, env)
            for s in strategies
        ]
        procs.append(
            _start("hub", ["hub", "--replay", *map(str, files), "--speed", args.speed, *config_arg], root_dir, env)
        )
        try:
            failed = _watch(procs, server.url, root_dir / "trades.db")
        except KeyboardInterrupt:
            for p in procs:
                stop(p.popen)
            print("\npine demo: interrupted", file=sys.stderr)
            return 130
        if ui is not None and not failed:
            _summarise_in_dagster(ui, cfg, root_dir, roots, files, handover)
        if args.serve and not failed:
            _serve(board, root_dir / "trades.db", ui)
        if ui is not None:
            print(f"pine demo: Dagster {'had loaded the code location' if ui.is_loaded() else 'was still starting'}"
                  "; stopping it")
    if failed:
        for p in failed:
            print(f"pine demo: {p.name} failed (exit {p.popen.returncode}); last lines of {p.log}:", file=sys.stderr)
            print(log_tail(p.log), file=sys.stderr)
        return 1
    print(summary_table(root_dir / "trades.db"))
    print(f"pine demo: {ml_summary(root_dir / 'trades.db')}")
    print(
        f"pine demo: done in {time.monotonic() - started:.0f}s. Logs: {root_dir / 'logs'}; "
        f"trades DB: {root_dir / 'trades.db'}"
    )
    if not args.serve:
        print(f"pine demo: dashboard again: `PINE_RUNTIME_DIR={root_dir} pine dashboard` (trades and P&L from the DB; "
              "health needs running processes), or `pine demo --serve` to keep it up with the demo's Redis")
    return 0


def _training_log(root_dir: Path) -> Path:
    return root_dir / "logs" / "ml_training.log"


def _train_models(cfg: PineConfig, root_dir: Path, before: date, seed: int) -> DemoModels:
    """``prepare_models`` in the pool's process, its output (MLflow's and scikit-learn's chatter) in a log file."""
    log = _training_log(root_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return prepare_models(cfg, root_dir, before, seed)


def _serve(board: DemoDashboard, trades_db: Path, ui: DagsterDev | None) -> None:
    """Keep the dashboard (and the demo's Redis and Dagster) up until Ctrl-C."""
    state = "answering" if board.ready() else f"NOT answering (see {board.log})"
    dagster = f" and the Dagster UI at {ui.url}" if ui is not None else ""
    print(f"pine demo: market replayed, {_count(trades_db, 'trades')} trades; dashboard {state} at {board.url}"
          f"{dagster} — Ctrl-C to stop (the summary follows)", flush=True)
    try:
        while board.proc is not None and board.proc.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\npine demo: stopping the dashboard")


def _summarise_in_dagster(ui: DagsterDev, cfg: PineConfig, root_dir: Path, roots: list[str], replay: list[Path],
                          handover: datetime | None) -> None:
    """Run ``daily_summary_job`` in the demo's Dagster for the replayed days with trades (the last
    ``DAGSTER_MAX_DAYS``), in parallel, and say where the UI shows them; never fails the demo."""
    days = sorted(_count_by_day(root_dir / "trades.db"))
    if not days:
        print("pine demo: no trades, so nothing for Dagster to summarise", flush=True)
        return
    began = time.monotonic()
    chosen = days[-DAGSTER_MAX_DAYS:]
    skipped = f" (the last {len(chosen)} of {len(days)})" if len(chosen) < len(days) else ""
    print(f"pine demo: Dagster summarises and reconciles {len(chosen)} trading day(s) with trades{skipped}, "
          f"{', '.join(chosen)} (a backtest of each strategy per day: a minute or so)", flush=True)
    if handover is not None:  # caches outside the demo's dir were never written: nothing to extend
        try:
            _extend_caches(cfg, root_dir, roots, replay)
        except (HistoryError, BarCacheError) as exc:
            print(f"pine demo: warmup caches not extended with the replayed days ({exc}): the reconciliation's "
                  "parity check will say it has no backtest", file=sys.stderr, flush=True)
    try:
        ui.wait_loaded(DAGSTER_LOAD_TIMEOUT_S)
        runs = {day: _launch_summary(ui, day) for day in chosen}
        statuses = _wait_runs(ui, runs)
        for day, run_id in runs.items():
            _report_run(ui, day, run_id, statuses.get(run_id, "UNKNOWN"))
    except (DagsterDevError, URLError, OSError) as exc:
        print(f"pine demo: no daily summaries in Dagster: {exc}", file=sys.stderr, flush=True)
        return
    except KeyboardInterrupt:
        print(f"\npine demo: stopped waiting for the Dagster runs (see {ui.url}/runs)", file=sys.stderr, flush=True)
        return
    print(f"pine demo: Dagster UI: the daily summaries (trades, P&L per strategy) at {ui.asset_url('daily_summary')}; "
          f"the reconciliation per day at {ui.asset_url('daily_reconciliation', 'partitions')} (Dagster took "
          f"{time.monotonic() - began:.0f}s)", flush=True)


def _extend_caches(cfg: PineConfig, root_dir: Path, roots: list[str], replay: list[Path]) -> None:
    """Append the replayed days' bars to the warmup caches, as the 16:15 ``warmup_refresh`` does after a
    production day: the reconciliation's parity backtest reads the day's bars from them."""
    cache_dir = root_dir / cfg.warmup.cache_dir
    # The replay files alone, aggregated as the demo's hub did: the bars the workers traded on.
    replayed = bars_from_archive(replay, roots, cfg.sessions.calendar(), timeframes=TIMEFRAMES)
    for root in roots:
        for tf in TIMEFRAMES:
            path = cache_path(cache_dir, root, tf)
            old = read_bar_list(path) if path.exists() else []
            new = [b for b in replayed.bars.get((root, tf), []) if not old or b.end > old[-1].end]
            write_bars(path, bars_frame(old + new), complete_through=replayed.complete_through)


def _launch_summary(ui: DagsterDev, day: str) -> str:
    """A ``daily_summary_job`` run for ``day``: its summary and its reconciliation partition (whose backtest
    starts where the workers did, read from the trades DB's bar log)."""
    # One process per run, not one per step: the runs share the machine with the rest of the demo.
    run_config = {"ops": {"daily_summary": {"config": {"trading_day": day}}},
                  "execution": {"config": {"in_process": {}}}}
    return ui.launch_run(SUMMARY_JOB, run_config, {"dagster/partition": day, "pine/trading_day": day})


def _wait_runs(ui: DagsterDev, runs: dict[str, str]) -> dict[str, str]:
    """Poll the runs' statuses, printing each change, until all finished or ``DAGSTER_RUNS_TIMEOUT_S``."""
    deadline = time.monotonic() + DAGSTER_RUNS_TIMEOUT_S
    last = ""
    while True:
        statuses = ui.run_statuses(list(runs.values()))
        counts = {s: sum(1 for v in statuses.values() if v == s) for s in sorted(set(statuses.values()))}
        line = f"  Dagster runs of {SUMMARY_JOB}: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        if line != last:
            print(line, flush=True)
            last = line
        if set(statuses.values()) <= _FINISHED or time.monotonic() > deadline:
            return statuses
        time.sleep(1.0)


def _report_run(ui: DagsterDev, day: str, run_id: str, status: str) -> None:
    """One line per run: what the day's summary recorded and the reconciliation's checks, or where to look."""
    if status not in _FINISHED:
        print(f"  {day}: run still {status.lower()} after {DAGSTER_RUNS_TIMEOUT_S:.0f}s; see {ui.run_url(run_id)}",
              file=sys.stderr, flush=True)
        return
    events = ui.run_events(run_id)
    summary = next((_metadata(e) for e in events if e["__typename"] == "MaterializationEvent"
                    and e["assetKey"]["path"] == ["daily_summary"]), None)
    checks = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    failed = [c["checkName"] for c in checks if not c["success"]]
    figures = f"{summary['trades']} trades, net P&L {summary['net_pnl']:,.2f}" if summary else "no summary"
    recon = (f"reconciliation: {len(failed)} of {len(checks)} checks FAILED ({', '.join(failed)})" if failed
             else f"reconciliation: {len(checks)} of {len(checks)} checks passed" if checks
             else "reconciliation did not complete")
    if status == "SUCCESS":
        print(f"  {day}: {figures}; {recon}", flush=True)
    else:
        print(f"  {day}: run {status}: {figures}; {recon}; see {ui.run_url(run_id)}", file=sys.stderr, flush=True)


def _metadata(event: dict[str, Any]) -> dict[str, Any]:
    """A materialisation's int, float and text metadata by label."""
    return {m["label"]: m.get("intValue", m.get("floatValue", m.get("text"))) for m in event["metadataEntries"]}


def _dagster(cfg: PineConfig, root_dir: Path, env: dict[str, str]) -> DagsterDev:
    """``dagster dev`` on the demo's runtime dir, Redis and config, with its home in ``<runtime>/demo/dagster``."""
    config_env = {"PINE_CONFIG": str(cfg.source.resolve())} if cfg.source else {}
    return DagsterDev(root_dir / "dagster", root_dir / "logs" / "dagster.log", env={**env, **config_env})


def _start(name: str, args: list[str], root_dir: Path, env: dict[str, str]) -> _Proc:
    log = root_dir / "logs" / f"{name.replace(':', '_')}.log"
    return _Proc(name, spawn_pine(args, log, env), log)


def _watch(procs: list[_Proc], redis_url: str, trades_db: Path) -> list[_Proc]:
    """Print progress once a second until every process has exited; returns the failed ones."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    last = ""
    while any(p.popen.poll() is None for p in procs):
        clock = client.xrevrange(redis_names.CLOCK_STREAM, count=1)
        data_time = clock[0][1]["watermark"][:16].replace("T", " ") if clock else "-"
        line = (
            f"  market time {data_time} UTC | bars processed {_count(trades_db, 'bar_log')} | "
            f"trades {_count(trades_db, 'trades')}"
        )
        if line != last:
            print(line, flush=True)
            last = line
        time.sleep(1.0)
    client.close()
    return [p for p in procs if p.popen.returncode != 0]


def _count_by_day(db: Path) -> dict[str, int]:
    """Closed trades per trading day (``YYYY-MM-DD``)."""
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT trading_day, count(*) FROM trades GROUP BY trading_day").fetchall())


def _count(db: Path, table: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0  # table not created yet


def ml_summary(db: Path) -> str:
    """How many ML veto decisions the workers recorded, by outcome and model version."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT outcome, count(*), group_concat(DISTINCT model || ' v' || version) FROM ml_decisions "
            "GROUP BY outcome ORDER BY outcome"
        ).fetchall()
    if not rows:
        return "0 ML veto decisions recorded (no entry signal of a symbol with a champion model)"
    total = sum(n for _, n, _ in rows)
    outcomes = ", ".join(f"{outcome} {n}" for outcome, n, _ in rows)
    models = sorted({m for _, _, names in rows if names for m in names.split(",")})
    return f"{total} ML veto decisions recorded ({outcomes}) by {', '.join(models)}"


def summary_table(db: Path) -> str:
    """Per-strategy trades, win rate and P&L read back from the trades DB."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            """SELECT strategy, count(*), sum(net_pnl > 0), sum(net_pnl), sum(commission)
               FROM trades GROUP BY strategy ORDER BY strategy"""
        ).fetchall()
    header = f"{'strategy':<12}{'trades':>8}{'win rate':>10}{'net P&L':>14}{'commission':>12}"
    lines = ["", header, "-" * len(header)]
    for strategy, n, wins, net, comm in rows:
        lines.append(f"{strategy:<12}{n:>8}{wins / n:>10.0%}{net:>14,.2f}{comm:>12,.2f}")
    if not rows:
        lines.append("(no closed trades)")
    return "\n".join(lines)
