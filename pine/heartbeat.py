"""Heartbeats: a JSON file (path from config) and a Redis key with a TTL, per process."""

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
    """Writes ``{component, status, pid, uptime_s, ...}``; at most every ``write_interval`` unless forced."""

    def __init__(self, component: str, cfg: HeartbeatConfig, runtime_dir: Path, client: redis.Redis | None) -> None:
        self.component = component
        self.cfg = cfg
        self.client = client
        name = component.replace(":", "_")
        path = Path(cfg.file_path.format(component=name, strategy=name.removeprefix("worker_")))
        self.path = path if path.is_absolute() else runtime_dir / path
        self.started = time.time()
        self._last_write = 0.0

    def beat(self, status: str, *, force: bool = False, **fields: Any) -> bool:
        """Record the process state; returns True if written. Never raises on Redis errors."""
        now = time.time()
        if not force and now - self._last_write < self.cfg.write_interval:
            return False
        self._last_write = now
        doc = {
            "component": self.component,
            "status": status,
            "pid": os.getpid(),
            "time": now,
            "uptime_s": round(now - self.started, 3),
            **fields,
        }
        payload = json.dumps(doc, default=str, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(payload)
        os.replace(tmp, self.path)  # readers never see half a file
        if self.client is not None:
            try:
                self.client.set(redis_names.heartbeat(self.component), payload, ex=int(self.cfg.ttl))
            except redis.RedisError as exc:
                log.warning("heartbeat: Redis write failed (%s); file %s still written", exc, self.path)
        return True
