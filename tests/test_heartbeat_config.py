"""Heartbeat settings from the seeds: Redis refreshed every ``interval``, the file every ``write_interval``,
a per-worker file path with a ``{strategy}`` (or ``{strategy_name}``) placeholder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from pine.config.schema import HeartbeatConfig
from pine.heartbeat import Heartbeat


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_redis_every_interval_file_every_write_interval(redis_url: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr("pine.heartbeat.time.time", clock)
    client = redis.Redis.from_url(redis_url)
    cfg = HeartbeatConfig(interval=5, write_interval=30, file_path="run/{strategy}_worker_heartbeat.json", ttl=90)
    hb = Heartbeat("worker:ibs_a", cfg, tmp_path, client)
    assert hb.path == tmp_path / "run" / "ibs_a_worker_heartbeat.json" and hb.every == 5

    def stored() -> tuple[int, int]:
        return json.loads(client.get("heartbeat:worker:ibs_a"))["n"], json.loads(hb.path.read_text())["n"]

    assert hb.beat("ready", n=1)
    assert stored() == (1, 1)
    clock.now += 1
    assert not hb.beat("ready", n=2)  # neither interval has passed
    clock.now += 5
    assert hb.beat("ready", n=3)
    assert stored() == (3, 1)  # Redis refreshed, the file not yet
    clock.now += 25
    assert hb.beat("ready", n=4)
    assert stored() == (4, 4)
    assert hb.beat("stopped", force=True, n=5)  # a final beat writes both at once
    assert stored() == (5, 5)
    assert client.ttl("heartbeat:worker:ibs_a") > 60


def test_the_seeds_strategy_name_placeholder(tmp_path: Path) -> None:
    cfg = HeartbeatConfig(file_path="/var/run/pine/worker_{strategy_name}_heartbeat.json")
    path = Heartbeat("worker:breakout", cfg, tmp_path, None).path
    assert path == Path("/var/run/pine/worker_breakout_heartbeat.json")
    assert Heartbeat("hub", HeartbeatConfig(), tmp_path, None).path == tmp_path / "heartbeat" / "hub.json"
