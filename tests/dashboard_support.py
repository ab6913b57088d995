"""A trading state for dashboard tests (two live workers on a scenario market, a hub heartbeat, ML veto
decisions) and ``pine dashboard`` as a real subprocess on a free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests
import uvicorn

from dashboard.app import create_app
from dashboard.server import bind
from pine.bus import BarPublisher
from pine.config import PineConfig, load_config
from pine.heartbeat import Heartbeat
from tests.conftest import REPO
from tests.scenario import DAYS, Feed, WorkerProc, market, session_close, write_config
from workers.trades_db import DecisionRecord, TradesDB

TOKEN = "dashboard-token-7b1c5e9d2f"
PLAN = {d: {} for d in DAYS} | {
    DAYS[0]: {"CL": 0.1, "GC": 0.1}, DAYS[1]: {"CL": 0.9}, DAYS[3]: {"CL": 0.1}, DAYS[4]: {"CL": 0.9},
    DAYS[6]: {"GC": 0.9}, DAYS[8]: {"CL": 0.1},  # the last entry is still open at the end
}


# The feature set of an IBS model (``ml.features``): long names, dozens of them; the page must fold them away.
FEATURES = {f"{root}_{name}": 0.001 * i for i, (root, name) in enumerate(
    (r, n) for r in ("ES", "NQ", "RTY", "YM", "ZB", "6B", "6S", "VIX") for n in ("ret_1d", "ret_5d", "vol_20d", "ibs"))}


def _decision(strategy: str, symbol: str, day: int, *, score: float | None, take: bool | None, shadow: bool,
              outcome: str) -> DecisionRecord:
    features = {k: (None if score is None and k.endswith("vol_20d") else v) for k, v in FEATURES.items()}
    return DecisionRecord(strategy=strategy, symbol=symbol, signal_time=session_close(DAYS[day]),
                          model=f"{strategy}_{symbol}", version="3" if strategy == "s1" else "1", score=score,
                          threshold=None if score is None else 0.55, take=take, shadow=shadow, outcome=outcome,
                          features=json.dumps(features, sort_keys=True))


# One of each kind the page tells apart, newest first: taken, vetoed, not ready, taken in shadow against the model.
ML_DECISIONS = (
    _decision("s1", "CL", 8, score=0.7312, take=True, shadow=False, outcome="taken"),
    _decision("s2", "GC", 6, score=0.2104, take=False, shadow=False, outcome="vetoed"),
    _decision("s2", "GC", 5, score=None, take=None, shadow=False, outcome="not_ready"),
    _decision("s1", "CL", 3, score=0.4018, take=False, shadow=True, outcome="taken"),
)


@dataclass
class TradingState:
    """Workers s1 (CL) and s2 (GC) running idle after the whole market, the hub's heartbeat fresh."""

    config: Path
    cfg: PineConfig
    runtime: Path
    redis_url: str
    workers: dict[str, WorkerProc]

    def beat_hub(self) -> None:
        """Write the hub's heartbeat (the scenario's bars were published by the test, as the hub would)."""
        Heartbeat("hub", self.cfg.heartbeat, self.runtime, redis.Redis.from_url(self.redis_url)).beat(
            "running", force=True, mode="replay", data_clock="2024-02-16T23:00:00+00:00", gaps=[], gaps_total=0,
            gaps_unrecovered=0)

    def stop(self) -> None:
        """Stop the workers."""
        for w in self.workers.values():
            w.stop()


def trading_state(redis_url: str, tmp_path: Path, **top: Any) -> TradingState:
    """Publish the market, start both workers and wait until each has processed every bar of its symbol."""
    runtime = tmp_path / "runtime"
    feed = Feed(BarPublisher(redis.Redis.from_url(redis_url)), market(PLAN, ["CL", "GC"]))
    feed.finish()
    config = write_config(tmp_path / "c.yml", {"s1": {"symbols": ["CL"]}, "s2": {"symbols": ["GC"]}}, **top)
    # conftest points PINE_RUNTIME_DIR at tmp_path/runtime: the config loads with the workers' runtime dir.
    cfg = load_config(config)
    # Created (WAL mode, migrated) before the workers start: two workers creating one new DB at the same instant
    # were seen failing their preflight under load with "database is locked".
    TradesDB(cfg.trades_db_path).close()
    workers = {s: WorkerProc(config, s, redis_url, runtime) for s in ("s1", "s2")}
    for s, symbol in (("s1", "CL"), ("s2", "GC")):
        workers[s].wait_bars(feed.published([symbol]))
    state = TradingState(config, cfg, runtime, redis_url, workers)
    # The ML audit as workers write it (their writer, their step transaction); these workers have no models.
    db = TradesDB(state.cfg.trades_db_path)
    for strategy in ("s1", "s2"):
        db.record_step(strategy, [], [], decisions=[d for d in ML_DECISIONS if d.strategy == strategy])
    db.close()
    state.beat_hub()
    return state


class DashboardProc:
    """``pine dashboard --port 0`` with the state's config, Redis and runtime dir; ``url`` once it listens."""

    def __init__(self, state: TradingState, *, env: Mapping[str, str] | None = None) -> None:
        full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PINE_CONFIG")}
        full.update({"REDIS_URL": state.redis_url, "PINE_RUNTIME_DIR": str(state.runtime), "PYTHONPATH": str(REPO),
                     **(env or {})})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pine.cli", "dashboard", "--port", "0", "--config", str(state.config)],
            cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("pine dashboard: http://"), line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.url = line.split()[2].rstrip("/")
        assert self.url.startswith("http://127.0.0.1:"), self.url  # no --host, no dashboard.host: loopback only

    def get(self, path: str, token: str | None = None) -> requests.Response:
        """GET ``path`` (with ``token`` as a bearer token)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=10)

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> requests.Response:
        """POST JSON ``body`` to ``path``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, json=body, headers=headers, timeout=10)

    def stop(self) -> str:
        """Stop it; returns what it logged."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return err


@contextmanager
def served(cfg: PineConfig, redis_url: str | None) -> Iterator[str]:
    """The dashboard app under uvicorn on a thread of this process (as ``bench/dashboard.py`` runs it); its URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, redis_url=redis_url), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # a guard against hanging, not a timing assertion
        assert thread.is_alive() and time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
