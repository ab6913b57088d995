"""A trading state for dashboard tests (two live workers on a scenario market, a hub heartbeat) and
``pine dashboard`` as a real subprocess on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import requests

from pine.bus import BarPublisher
from pine.config import PineConfig, load_config
from pine.heartbeat import Heartbeat
from tests.conftest import REPO
from tests.scenario import DAYS, Feed, WorkerProc, market, write_config

TOKEN = "dashboard-token-7b1c5e9d2f"
PLAN = {d: {} for d in DAYS} | {
    DAYS[0]: {"CL": 0.1, "GC": 0.1}, DAYS[1]: {"CL": 0.9}, DAYS[3]: {"CL": 0.1}, DAYS[4]: {"CL": 0.9},
    DAYS[6]: {"GC": 0.9}, DAYS[8]: {"CL": 0.1},  # the last entry is still open at the end
}


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
    workers = {s: WorkerProc(config, s, redis_url, runtime) for s in ("s1", "s2")}
    for s, symbol in (("s1", "CL"), ("s2", "GC")):
        workers[s].wait_bars(feed.published([symbol]))
    # conftest points PINE_RUNTIME_DIR at tmp_path/runtime: the config loads with the workers' runtime dir.
    state = TradingState(config, load_config(config), runtime, redis_url, workers)
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
