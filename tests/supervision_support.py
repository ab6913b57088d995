"""Helpers for the Dagster supervision tests: a supervised config, heartbeats, sensor ticks, alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import redis
import yaml

from orchestration.resources import PineConfigResource, RedisResource
from orchestration.sensors import supervise_processes
from pine import redis_names
from tests.worker_support import STRATEGY, write_config

COMPONENT = f"worker:{STRATEGY}"


def supervised_config(path: Path, **supervision: Any) -> Path:
    """The worker tests' config (strategy ``ibs_t``) with the hub unsupervised and ``supervision`` settings."""
    write_config(path)
    doc = yaml.safe_load(path.read_text())
    doc["supervision"] = {"hub": False, **supervision}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def resources(config: Path, redis_url: str) -> dict[str, Any]:
    """The Definitions' resources, pointed at ``config`` and the test Redis."""
    return {"pine_config": PineConfigResource(config_path=str(config)), "redis": RedisResource(url=redis_url)}


def write_beat(client: redis.Redis, runtime: Path, at: float, *, status: str = "running", pid: int = 424242,
               ttl: int | None = 30, component: str = COMPONENT) -> None:
    """A heartbeat as ``pine.heartbeat`` writes it, dated ``at``: the file, and the Redis key unless ``ttl`` is None
    (an expired key)."""
    doc = json.dumps({"component": component, "status": status, "pid": pid, "time": at, "uptime_s": 1.0})
    path = runtime / "heartbeat" / f"{component.replace(':', '_')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc)
    if ttl is None:
        client.delete(redis_names.heartbeat(component))
    else:
        client.set(redis_names.heartbeat(component), doc, ex=ttl)


def tick(instance: dg.DagsterInstance, config: Path, redis_url: str, cursor: str | None) -> dg.SensorResult:
    """One evaluation of the supervision sensor."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources(config, redis_url))
    result = supervise_processes(context)
    assert isinstance(result, dg.SensorResult)
    return result


def alerts(client: redis.Redis) -> list[dict[str, str]]:
    """Every entry of ``ops:alerts``, oldest first."""
    return [
        {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v for k, v in f.items()}
        for _, f in client.xrange(redis_names.OPS_ALERTS)
    ]
