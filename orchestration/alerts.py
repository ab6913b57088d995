"""Operational alerts: one structured log line and one entry on the Redis stream ``ops:alerts``.

Whatever forwards alerts to people (Discord, issue 7) reads the stream; the log line is there
when Redis itself is the problem. Emitting never raises: an alert must not break the sensor or
the job that raises it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import redis

from pine import redis_names

log = logging.getLogger("pine.alerts")

Severity = Literal["info", "warning", "critical"]
# Enough history for a forwarder that was down for a while; older alerts are in the logs.
STREAM_MAXLEN: Final = 10_000
_LEVELS: Final = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


@dataclass(frozen=True)
class Alert:
    """Something an operator must hear about."""

    kind: str  # process_down, crash_loop, run_failed
    severity: Severity
    component: str  # hub, worker:{strategy}, or a Dagster job name
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def fields(self) -> dict[str, str]:
        """The stream entry (every value a string)."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "component": self.component,
            "message": self.message,
            "source": "dagster",
            "time": self.time.isoformat(),
            "details": json.dumps(self.details, sort_keys=True, default=str),
        }


def emit_alert(alert: Alert, client: redis.Redis | None) -> str | None:
    """Log ``alert`` and add it to ``ops:alerts``; returns the stream id, None if Redis could not take it."""
    entry = alert.fields()
    log.log(_LEVELS[alert.severity], "ALERT %s", json.dumps(entry, sort_keys=True))
    if client is None:
        return None
    try:
        stream_id = client.xadd(redis_names.OPS_ALERTS, entry, maxlen=STREAM_MAXLEN, approximate=True)
    except redis.RedisError as exc:
        log.error("could not add the %s alert to %s: %s", alert.kind, redis_names.OPS_ALERTS, exc)
        return None
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
