"""Worker start-to-ready time and peak memory with the example config, warming up from parquet caches.

    .venv/bin/python bench/worker_start.py                       # ibs_a and breakout, seeded caches
    .venv/bin/python bench/worker_start.py --strategies ibs_a --runs 5
    .venv/bin/python bench/worker_start.py --cache-dir runtime/warmup   # caches `pine warmup build` wrote

Each run starts ``pine worker --strategy NAME --stop-at-end`` as a fresh process (imports included)
against a private Redis whose hub has finished and published nothing, so the worker warms up
(250 daily bars and 15 days of hourly bars of every root it reads, as configured) and exits.
Times are read from its heartbeat file: spawn → ``warming_up`` (imports, config, preflight) and
spawn → ``ready``. Peak memory is the process's maximum resident set size. Without
``--cache-dir`` the caches hold a seeded random walk of 270 sessions (hourly bars for the last
30): the bar count, not the prices, is what warmup costs. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pine.bar_cache import bars_frame, cache_path, write_bars
from pine.bars import Bar
from pine.bus import BarPublisher
from pine.config import load_config
from pine.redis_server import RedisServer, connect
from pine.sessions import SessionCalendar

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"


def seeded_caches(cache_dir: Path, roots: Sequence[str], *, sessions: int = 270, hourly_sessions: int = 30,
                  end: date = date(2024, 3, 1)) -> datetime:
    """Hourly and session bars of ``roots`` as caches; returns the hand-over (the last session's close)."""
    calendar = SessionCalendar()
    days: list[date] = []
    d = end
    while len(days) < sessions:
        if d.weekday() < 5:
            days.append(d)
        d -= timedelta(days=1)
    days.reverse()
    for root in roots:
        rng = random.Random(root)
        price = 100.0
        hourly: list[Bar] = []
        daily: list[Bar] = []
        for i, day in enumerate(days):
            close = calendar.session_end(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
            hours = []
            for h in range(23):
                start = close - timedelta(hours=24 - h)
                o, c = price, price * (1 + rng.gauss(0, 0.002))
                hours.append(Bar(root, "hourly", start, start + timedelta(hours=1), o, max(o, c) * 1.001,
                                 min(o, c) * 0.999, c, 100, 10, 1, f"{root}M4"))
                price = c
            daily.append(Bar(root, "daily", close - timedelta(hours=24), close, hours[0].open,
                             max(b.high for b in hours), min(b.low for b in hours), hours[-1].close, 2300, 230, 1,
                             f"{root}M4"))
            if i >= sessions - hourly_sessions:
                hourly += hours
        for tf, bars in (("hourly", hourly), ("daily", daily)):
            write_bars(cache_path(cache_dir, root, tf), bars_frame(bars), complete_through=daily[-1].end)
    return daily[-1].end


def start_to_ready(strategy: str, config: Path, runtime: Path, redis_url: str) -> dict[str, float]:
    """One worker process from spawn to exit: seconds to ``warming_up`` and ``ready``, peak RSS (MB), bars."""
    beat = runtime / "heartbeat" / f"worker_{strategy}.json"
    beat.unlink(missing_ok=True)
    env = {**os.environ, "PINE_RUNTIME_DIR": str(runtime), "REDIS_URL": redis_url}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pine.cli", "worker", "--strategy", strategy, "--stop-at-end",
                             "--config", str(config), "--log-level", "WARNING"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: dict[str, float] = {}
    while True:
        # wait4, not Popen.poll: it reports the child's own peak memory when it reaps it.
        pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
        try:
            status = json.loads(beat.read_text()).get("status")
        except (FileNotFoundError, ValueError):
            status = None
        if status and status not in seen:
            seen[status] = time.perf_counter() - started
        if pid:
            break
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(wait_status)
    proc.returncode = code
    if code or "ready" not in seen:
        raise RuntimeError(f"worker {strategy} did not get ready (exit {code}): "
                           f"{proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    final = json.loads(beat.read_text())
    return {"warming_up": seen.get("warming_up", float("nan")), "ready": seen["ready"],
            "rss_mb": usage.ru_maxrss / 1024, "bars": final["warmup"]["bars"], "load_s": final["warmup"]["seconds"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=EXAMPLE)
    parser.add_argument("--strategies", nargs="+", default=["ibs_a", "breakout"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None, help="existing caches (default: seeded ones)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Path(tmp) / "runtime"
        cache_dir = runtime / "warmup"
        if args.cache_dir is not None:
            shutil.copytree(args.cache_dir, cache_dir)
        else:
            seeded_caches(cache_dir, sorted(cfg.instruments))
        with RedisServer(Path(tmp) / "redis") as server:
            client = connect(server.url)
            BarPublisher(client).publish([], datetime(2024, 3, 1, tzinfo=UTC), state="finished")
            print(f"worker start from parquet caches, {args.config.name}; {args.runs} runs each (fresh processes)")
            for strategy in args.strategies:
                runs = [start_to_ready(strategy, args.config, runtime, server.url) for _ in range(args.runs)]
                med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                print(f"  {strategy:<10} start → ready {med['ready']:.2f}s (min {min(r['ready'] for r in runs):.2f}s; "
                      f"start → warming_up {med['warming_up']:.2f}s), {int(med['bars']):,} warmup bars loaded in "
                      f"{med['load_s']:.2f}s, peak RSS {med['rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
