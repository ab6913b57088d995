"""The status message sent on request (``pine notify status``): killswitch, positions, today's P&L, processes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from pine import redis_names
from pine.config.schema import PineConfig
from pine.killswitch import Killswitch
from pine.notify.events import Message
from pine.notify.messages import money, status_message

_EXITED = frozenset({"finished", "stopped", "failed", "refused"})


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def component_line(component: str, raw: bytes | str | None, ttl: float, now: float) -> str:
    """``worker:ibs_a: running, beat 3s ago`` (or why it is not healthy)."""
    if raw is None:
        return f"{component}: no heartbeat (not running, or silent for more than {ttl:.0f}s)"
    try:
        doc: dict[str, Any] = json.loads(raw)
        age = now - float(doc["time"])
        status = str(doc["status"])
    except (ValueError, KeyError, TypeError):
        return f"{component}: unreadable heartbeat"
    flag = "" if status not in _EXITED and age <= ttl else " ⚠️"
    return f"{component}: {status}, beat {age:.0f}s ago{flag}"


def build_status(cfg: PineConfig, client: redis.Redis, *, now: float | None = None) -> Message:
    """The status of the whole system as one message (raises redis.RedisError if Redis cannot be read)."""
    now = time.time() if now is None else now
    ks = Killswitch(client, mirror_dir=cfg.runtime_dir).stored()
    slots = {_text(k): json.loads(_text(v)) for k, v in client.hgetall(redis_names.PORTFOLIO_SLOTS).items()}
    day = cfg.sessions.calendar().trading_day(datetime.fromtimestamp(now, UTC))
    realized = client.hget(redis_names.portfolio_day(day), "realized")
    stopped = client.hexists(redis_names.portfolio_day(day), "stopped")
    components = ["hub", *(f"worker:{s}" for s in cfg.enabled_strategies())]
    beats = [component_line(c, client.get(redis_names.heartbeat(c)), cfg.heartbeat.ttl, now) for c in components]
    open_slots = ", ".join(f"{k} ({v.get('state', '?')})" for k, v in sorted(slots.items())) or "none"
    fields = {
        "Killswitch": ks.state.value + (f" ({ks.reason})" if ks.reason else ""),
        "Positions": f"{len(slots)} of max {cfg.portfolio.max_positions}: {open_slots}",
        f"Realised P&L {day.isoformat()}": money(float(_text(realized))) if realized is not None else money(0.0),
        "Daily stop": "HIT: no new entries" if stopped else f"not hit (limit {money(-cfg.portfolio.daily_stop_loss)})",
    }
    return status_message(f"status:{uuid.uuid4().hex}", beats, fields)
