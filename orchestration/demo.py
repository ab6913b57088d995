"""``pine demo``: the whole system on embedded defaults.

Synthetic market (real DBN files) → private Redis → hub replay → one worker per enabled
strategy with the paper broker → trades DB → summary. The days before the replayed market are
written too and aggregated into the warmup caches the workers start from (``demo_history``).
Meanwhile, in a second process, the ML veto models of one ibs strategy are trained on the
demo's training history and promoted to champion (``demo_models``), so its worker vetoes.
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
from datetime import date
from pathlib import Path

import redis

from orchestration.dagster_dev import DagsterDev
from orchestration.demo_dashboard import DemoDashboard
from orchestration.demo_history import demo_roots, history_days, prepare_history
from orchestration.demo_models import TRAINING_SESSIONS, DemoModels, prepare_models
from orchestration.processes import log_tail, spawn_pine, stop
from pine import redis_names
from pine.config import PineConfig
from pine.contracts import load_contract_map
from pine.redis_server import RedisServer


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
        if args.serve and not failed:
            _serve(board, root_dir / "trades.db")
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


def _serve(board: DemoDashboard, trades_db: Path) -> None:
    """Keep the dashboard (and the demo's Redis) up until Ctrl-C."""
    state = "answering" if board.ready() else f"NOT answering (see {board.log})"
    print(f"pine demo: market replayed, {_count(trades_db, 'trades')} trades; dashboard {state} at {board.url} — "
          "Ctrl-C to stop (the summary follows)", flush=True)
    try:
        while board.proc is not None and board.proc.poll() is None:
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\npine demo: stopping the dashboard")


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
