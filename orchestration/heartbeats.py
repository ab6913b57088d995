"""Reading the heartbeats Pine processes write (``pine.heartbeat``): the Redis key first, the file as fallback."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import redis

from pine import redis_names
from pine.config import PineConfig
from pine.heartbeat import Heartbeat

log = logging.getLogger(__name__)

# Statuses a process writes as it exits: it is not running any more.
EXITED: Final = frozenset({"finished", "stopped", "failed", "refused"})


@dataclass(frozen=True)
class HeartbeatDoc:
    """One heartbeat as written by :class:`pine.heartbeat.Heartbeat`."""

    component: str
    status: str
    pid: int | None
    time: float
    source: Literal["redis", "file"]
    fields: dict[str, Any]

    @property
    def exited(self) -> bool:
        """The process wrote this as it exited."""
        return self.status in EXITED


def heartbeat_file(cfg: PineConfig, component: str) -> Path:
    """Where ``component`` writes its heartbeat file (the writer's own path rule)."""
    return Heartbeat(component, cfg.heartbeat, Path(cfg.runtime_dir), None).path


def read_heartbeat(cfg: PineConfig, component: str, client: redis.Redis | None) -> HeartbeatDoc | None:
    """The newest heartbeat of ``component``: its Redis key (expires after ``heartbeat.ttl``) or its file.

    The file matters when Redis is unreachable from here, or when the process could not write to
    Redis; None when neither exists (or neither parses).
    """
    docs: list[HeartbeatDoc] = []
    if client is not None:
        try:
            raw = client.get(redis_names.heartbeat(component))
        except redis.RedisError as exc:
            log.warning("heartbeat of %s: Redis read failed (%s); using the file", component, exc)
            raw = None
        if raw is not None:
            docs += _parse(raw, component, "redis")
    path = heartbeat_file(cfg, component)
    try:
        docs += _parse(path.read_bytes(), component, "file")
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("heartbeat of %s: cannot read %s (%s)", component, path, exc)
    return max(docs, key=lambda d: d.time, default=None)


def _parse(raw: bytes | str, component: str, source: Literal["redis", "file"]) -> list[HeartbeatDoc]:
    try:
        doc = json.loads(raw)
        beat = HeartbeatDoc(
            component=component,
            status=str(doc["status"]),
            pid=int(doc["pid"]) if doc.get("pid") is not None else None,
            time=float(doc["time"]),
            source=source,
            fields=doc,
        )
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("heartbeat of %s in %s is unreadable (%s); ignored", component, source, exc)
        return []
    return [beat]
