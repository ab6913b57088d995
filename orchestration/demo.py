"""``pine demo``: the whole system on embedded defaults.

Synthetic market (real DBN files) → private Redis → hub replay → one worker per enabled
strategy with the paper broker → trades DB → summary. Everything lives in ``<runtime>/demo``,
which is recreated on every run so a demo never mixes with real trading state.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import redis

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
    roots = sorted({sym for s in strategies for sym in cfg.strategies[s].instruments})
    root_dir = Path(cfg.runtime_dir) / "demo"
    if root_dir.exists():
        shutil.rmtree(root_dir)
    root_dir.mkdir(parents=True)
    started = time.monotonic()

    print(f"pine demo: {args.days} trading days of synthetic market for {', '.join(roots)} (seed {args.seed})")
    files = write_synthetic_market(
        root_dir / "market",
        roots,
        date.fromisoformat(args.start),
        args.days,
        args.seed,
        load_contract_map(cfg.contract_map_path),
    )

    config_arg = ["--config", str(cfg.source)] if cfg.source else []
    with RedisServer(root_dir / "redis") as server:
        env = {"REDIS_URL": server.url, "PINE_RUNTIME_DIR": str(root_dir)}
        print(f"pine demo: private Redis at {server.url}; runtime dir {root_dir}")
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
    if failed:
        for p in failed:
            print(f"pine demo: {p.name} failed (exit {p.popen.returncode}); last lines of {p.log}:", file=sys.stderr)
            print(log_tail(p.log), file=sys.stderr)
        return 1
    print(summary_table(root_dir / "trades.db"))
    print(
        f"pine demo: done in {time.monotonic() - started:.0f}s. Logs: {root_dir / 'logs'}; "
        f"trades DB: {root_dir / 'trades.db'}"
    )
    return 0


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
