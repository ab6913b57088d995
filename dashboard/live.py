"""What the dashboard reads from Redis (and the heartbeat files): health, latest prices, the killswitch.

Health: the hub and every enabled worker must have a fresh heartbeat — its Redis key exists
(it expires after ``heartbeat.ttl``), it was written within the TTL and its status is not one a
process writes as it exits. The heartbeat file is the fallback when Redis cannot be read.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import redis

from pine import redis_names
from pine.config.schema import PineConfig
from pine.heartbeat import Heartbeat
from pine.killswitch import DESCRIPTIONS, Killswitch, KillswitchState

EXITED: Final = frozenset({"finished", "stopped", "failed", "refused"})
WARMING: Final = frozenset({"starting", "replaying", "warming_up", "warmup"})
FEED_SUFFIXES: Final = ("minute", "hour", "day")  # workers.feeds.FEED_TIMEFRAMES' feed names


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _parse(raw: bytes | str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and "time" in doc else None


def read_heartbeat(cfg: PineConfig, component: str, client: redis.Redis | None) -> tuple[dict[str, Any] | None, str]:
    """(newest heartbeat document, ``redis`` if the Redis key exists, else ``file`` or ``none``).

    The file may be a moment newer than the key just read (the process writes the file first):
    the newer document is returned, but a key that exists is what makes the process visible.
    """
    found: list[tuple[dict[str, Any], str]] = []
    if client is not None:
        doc = _parse(client.get(redis_names.heartbeat(component)))
        if doc is not None:
            found.append((doc, "redis"))
    path = Heartbeat(component, cfg.heartbeat, Path(cfg.runtime_dir), None).path
    try:
        doc = _parse(path.read_bytes())
    except OSError:
        doc = None
    if doc is not None:
        found.append((doc, "file"))
    if not found:
        return None, "none"
    newest = max(found, key=lambda d: float(d[0]["time"]))[0]
    return newest, found[0][1]


def _iso_age(text: Any, now: float) -> float | None:
    try:
        return round(now - datetime.fromisoformat(str(text)).timestamp(), 1)
    except ValueError:
        return None


def component_health(cfg: PineConfig, component: str, doc: dict[str, Any] | None, source: str, now: float,
                     *, redis_ok: bool) -> dict[str, Any]:
    """One process's health as the page and ``/health`` show it."""
    out: dict[str, Any] = {"component": component, "fresh": False, "status": None, "source": source, "reasons": []}
    if doc is None:
        out["reasons"].append(f"{component}: no heartbeat")
        return out
    age = round(now - float(doc["time"]), 1)
    status = str(doc.get("status"))
    out.update(status=status, pid=doc.get("pid"), age_s=age, uptime_s=doc.get("uptime_s"))
    if status in EXITED:
        out["reasons"].append(f"{component}: {status}")
    if age > cfg.heartbeat.ttl:
        out["reasons"].append(f"{component}: last heartbeat {age:.0f}s ago (ttl {cfg.heartbeat.ttl:.0f}s)")
    if redis_ok and source == "file":
        out["reasons"].append(f"{component}: heartbeat missing in Redis (file only)")
    out["fresh"] = not out["reasons"]
    if component == "hub":
        out["last_bar"] = doc.get("data_clock") or doc.get("watermark")
        out["gaps"] = {"total": doc.get("gaps_total", 0), "unrecovered": doc.get("gaps_unrecovered", 0),
                       "recent": (doc.get("gaps") or [])[-3:]}
        out["mode"] = doc.get("mode")
    else:
        ends = list((doc.get("last_bar_end") or {}).values())
        out["last_bar"] = max(ends) if ends else None
        strategy = component.removeprefix("worker:")
        symbols = list(cfg.strategies[strategy].instruments) if strategy in cfg.strategies else []
        expected = [f"{s}_{suffix}" for s in symbols for suffix in FEED_SUFFIXES]
        seen = doc.get("bars") or {}
        out["missing_feeds"] = doc.get("missing_feeds", [f for f in expected if f not in seen])
        out["warmup"] = _warmup(doc.get("warmup"), status)
        out["gaps"] = {"bad_messages": doc.get("bad_messages", 0)}
        out["open_positions"] = doc.get("open_positions", {})
        out["killswitch"] = doc.get("killswitch")
    out["lag_s"] = _iso_age(out["last_bar"], now) if out.get("last_bar") else None
    return out


def _warmup(warmup: Any, status: str) -> str:
    """``done`` / ``draining 1,200/5,000 bars`` / … from the worker's ``warmup`` field (or its status)."""
    if isinstance(warmup, dict):
        state = str(warmup.get("state", "?"))
        if state not in ("done", "none") and warmup.get("bars"):
            return f"{state} {warmup.get('delivered', 0):,}/{warmup['bars']:,} bars"
        return state
    return "in progress" if status in WARMING else "done"


def health(cfg: PineConfig, client: redis.Redis | None, now: float | None = None) -> dict[str, Any]:
    """Hub and enabled workers: ``ok`` when every one has a fresh heartbeat, else the reasons."""
    now = time.time() if now is None else now
    redis_ok, problems = client is not None, []
    components = ["hub", *(f"worker:{s}" for s in cfg.enabled_strategies())]
    out = []
    for component in components:
        try:
            doc, source = read_heartbeat(cfg, component, client if redis_ok else None)
        except redis.RedisError as exc:
            redis_ok = False
            problems.append(f"redis: {type(exc).__name__}")
            doc, source = read_heartbeat(cfg, component, None)
        out.append(component_health(cfg, component, doc, source, now, redis_ok=redis_ok))
    if client is None:
        problems.append("redis: not reachable")
    reasons = problems + [r for c in out for r in c["reasons"]]
    return {"ok": not reasons, "reasons": reasons, "components": out, "checked_at": now}


def latest_closes(client: redis.Redis, symbols: list[str]) -> dict[str, dict[str, Any]]:
    """Latest one-minute bar close and end per symbol (from ``market:{ROOT}:1min:latest``)."""
    if not symbols:
        return {}
    raws = client.mget([redis_names.latest(s, "1min") for s in symbols])
    out = {}
    for symbol, raw in zip(symbols, raws, strict=True):
        try:
            bar = json.loads(raw) if raw is not None else None
            if bar is not None:
                out[symbol] = {"close": float(bar["close"]), "end": bar.get("end")}
        except (ValueError, KeyError, TypeError):
            continue
    return out


def killswitch(client: redis.Redis, cfg: PineConfig) -> dict[str, Any]:
    """The stored killswitch (what every worker obeys, before its own POLICY_KILLSWITCH floor)."""
    st = Killswitch(client, mirror_dir=cfg.runtime_dir).stored()
    return {"state": st.state.value, "description": DESCRIPTIONS[st.state], "reason": st.reason, "source": st.source,
            "updated_at": st.updated_at, "states": [s.value for s in KillswitchState]}
