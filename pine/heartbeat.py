"""Heartbeats: a JSON file (path from config) and a Redis key with a TTL, per process.

Seeds' settings: ``interval`` is how often the Redis key is refreshed, ``write_interval`` how
often the file is rewritten, ``file_path`` where (``{component}`` becomes ``hub`` or
``worker_{strategy}``; ``{strategy}`` — or the seeds' ``{strategy_name}`` — the strategy, ``hub``
for the hub). Callers may call :meth:`Heartbeat.beat` as often as they like; ``force`` writes both now.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import redis

from pine import redis_names
from pine.config.schema import HeartbeatConfig

log = logging.getLogger(__name__)


class Heartbeat:
    """Writes ``{component, status, pid, uptime_s, ...}`` to Redis every ``interval`` and to the file every
    ``write_interval`` (both at once when forced)."""

    def __init__(self, component: str, cfg: HeartbeatConfig, runtime_dir: Path, client: redis.Redis | None) -> None:
        self.component = component
        self.cfg = cfg
        self.client = client
        name = component.replace(":", "_")
        strategy = name.removeprefix("worker_")
        path = Path(cfg.file_path.format(component=name, strategy=strategy, strategy_name=strategy))
        self.path = path if path.is_absolute() else runtime_dir / path
        self.started = time.time()
        self._last_write = 0.0
        self._last_publish = 0.0

    @property
    def every(self) -> float:
        """How often a caller should offer a beat: the shorter of the two intervals."""
        return min(self.cfg.interval, self.cfg.write_interval)

    def beat(self, status: str, *, force: bool = False, **fields: Any) -> bool:
        """Record the process state; returns True if anything was written. Never raises on Redis errors."""
        now = time.time()
        write = force or now - self._last_write >= self.cfg.write_interval
        publish = self.client is not None and (force or now - self._last_publish >= self.cfg.interval)
        if not (write or publish):
            return False
        doc = {
            "component": self.component,
            "status": status,
            "pid": os.getpid(),
            "time": now,
            "uptime_s": round(now - self.started, 3),
            **fields,
        }
        payload = json.dumps(doc, default=str, sort_keys=True)
        if write:
            self._last_write = now
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(payload)
            os.replace(tmp, self.path)  # readers never see half a file
        if publish and self.client is not None:
            self._last_publish = now
            try:
                self.client.set(redis_names.heartbeat(self.component), payload, ex=int(self.cfg.ttl))
            except redis.RedisError as exc:
                log.warning("heartbeat: Redis write failed (%s); the file %s is still written", exc, self.path)
        return True
