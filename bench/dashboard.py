"""Dashboard API response times with 100k trades in the DB, next to a bare SQLite query measured in the same run.

    .venv/bin/python bench/dashboard.py                      # 100k trades, 200 requests per endpoint
    .venv/bin/python bench/dashboard.py --trades 20000 --requests 500

A trades DB (the workers' schema) is filled with ``--trades`` closed trades of 4 strategies over about
two years of trading days, plus open positions; a private Redis holds the latest bars and heartbeats.
The dashboard app runs under uvicorn in this process on a free port and is called over real HTTP with
a keep-alive ``requests`` session. The dashboard keeps its totals over every trade incrementally
(``dashboard.totals``): the first request folds all trades, later ones only what was added.
Baselines: one bare SQLite aggregate over the trades table (what a metrics query costs at minimum)
and an HTTP round trip to ``/api/meta`` (the framework without data).
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
import uvicorn

from pine import redis_names
from pine.config import load_config
from pine.heartbeat import Heartbeat
from pine.redis_server import RedisServer, connect
from workers.trades_db import TradesDB, open_reader

STRATEGIES = ("ibs_a", "ibs_b", "breakout", "ibs_c")
SYMBOLS = ("CL", "GC", "ES", "6A", "YM")


def _dashboard() -> tuple[Callable[..., object], Callable[..., object]]:
    """``dashboard.app.create_app`` and ``dashboard.server.bind``.

    Run as ``python bench/dashboard.py``, ``bench/`` is ``sys.path[0]`` and this file would shadow the package.
    """
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    return importlib.import_module("dashboard.app").create_app, importlib.import_module("dashboard.server").bind


def fill_db(path: Path, n: int, seed: int = 3) -> None:
    """``n`` trades (and one open position per strategy) written with the workers' schema."""
    TradesDB(path).close()  # creates and migrates the schema
    rng = random.Random(seed)
    start = datetime(2023, 1, 2, 23, tzinfo=UTC)
    rows = []
    for i in range(n):
        day = start + timedelta(days=int(i * 730 / n))
        exit_time = day + timedelta(minutes=rng.randrange(1, 1300))
        net = round(rng.gauss(20, 400), 2)
        strategy, symbol = STRATEGIES[i % len(STRATEGIES)], SYMBOLS[i % len(SYMBOLS)]
        rows.append((f"{strategy}:{symbol}:{i}", strategy, symbol, f"{symbol}H4", "long", 1,
                     (exit_time - timedelta(days=2)).isoformat(), 100.0, exit_time.isoformat(), 101.0, net + 4.5, 4.5,
                     net, "signal", 2, exit_time.isoformat(), exit_time.date().isoformat()))
    positions = [(s, "CL", "CLH4", "long", 1, start.isoformat(), 78.0, 1, 78.5, 77.5, start.isoformat())
                 for s in STRATEGIES]
    conn = TradesDB(path).conn
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO trades (trade_id, strategy, symbol, contract, direction, size, entry_time, entry_price, "
        "exit_time, exit_price, pnl, commission, net_pnl, exit_reason, bars_held, recorded_at, trading_day) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.executemany(
        "INSERT INTO positions (strategy, symbol, contract, direction, size, entry_time, entry_price, bars_held, "
        "best_price, worst_price, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", positions)
    conn.execute("COMMIT")
    conn.close()


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """Milliseconds of ``n`` calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def line(name: str, ms: list[float]) -> str:
    """``name  p50  p99`` in milliseconds."""
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"  {name:<34} p50 {q[49]:7.2f} ms   p99 {q[98]:7.2f} ms"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args(argv)
    create_app, bind = _dashboard()
    with tempfile.TemporaryDirectory(prefix="pine-bench-dash-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        runtime = Path(tmp) / "runtime"
        t = time.perf_counter()
        fill_db(runtime / "trades.db", args.trades)
        print(f"trades DB: {args.trades:,} trades written in {time.perf_counter() - t:.1f}s")
        os.environ["PINE_RUNTIME_DIR"] = str(runtime)
        cfg = load_config()
        client = connect(server.url)
        client.set(redis_names.latest("CL", "1min"), json.dumps({"close": 78.3, "end": "2024-03-04T15:00:00+00:00"}))
        for component in ("hub", *(f"worker:{s}" for s in cfg.enabled_strategies())):
            Heartbeat(component, cfg.heartbeat, runtime, client).beat("running", force=True)
        sock = bind("127.0.0.1", 0)
        uv = uvicorn.Server(uvicorn.Config(create_app(cfg, redis_url=server.url), log_level="warning"))
        threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True).start()
        while not uv.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        http = requests.Session()

        def get(path: str) -> Callable[[], object]:
            def call() -> object:
                r = http.get(base + path, timeout=30)
                r.raise_for_status()
                return r.content
            return call

        t = time.perf_counter()
        get("/api/overview")()
        cold = (time.perf_counter() - t) * 1000
        conn = open_reader(runtime / "trades.db")
        bare = timed(lambda: conn.execute("SELECT strategy, COUNT(*), SUM(net_pnl) FROM trades GROUP BY strategy")
                     .fetchall(), args.requests)
        print(f"dashboard API over HTTP, {args.requests} requests each ({len(get('/api/overview')())/1000:.0f} kB "
              "overview):")
        print(f"  first GET /api/overview (folds every trade once): {cold:.0f} ms")
        for path in ("/api/overview", "/api/metrics", "/api/pnl", "/api/trades", "/api/positions", "/health"):
            print(line(f"GET {path}", timed(get(path), args.requests)))
        print("baselines (same run):")
        print(line("bare SQLite GROUP BY over trades", bare))
        print(line("GET /api/meta (HTTP + framework)", timed(get("/api/meta"), args.requests)))
        conn.close()
        uv.should_exit = True
    return 0


if __name__ == "__main__":
    sys.exit(main())
