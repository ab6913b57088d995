"""``pine killswitch halt|reduce-only|flatten|off|status``: change or show the portfolio killswitch."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from datetime import UTC, datetime

import redis

from pine import redis_names
from pine.config.schema import PineConfig
from pine.killswitch import DESCRIPTIONS, ENV_VAR, Killswitch, parse_state
from pine.redis_server import RedisUnavailableError, connect, resolve_redis_url

_RECENT_EVENTS = 8


def killswitch_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """Set the state (every worker applies it at its next bar) or print it with the portfolio's slots."""
    try:
        client = connect(resolve_redis_url(cfg.redis.resolved_url(), cfg.runtime_dir))
    except RedisUnavailableError as exc:
        print(f"pine killswitch: {exc}", file=sys.stderr)
        return 1
    ks = Killswitch(client, mirror_dir=cfg.runtime_dir)
    try:
        if args.action == "status":
            print(_status(ks, client, cfg))
            return 0
        before = ks.stored().state
        state = parse_state(args.action)
        status = ks.set(state, reason=args.reason or "", source=f"cli:{_who()}")
    except redis.RedisError as exc:
        print(f"pine killswitch: Redis error: {exc}", file=sys.stderr)
        return 1
    print(f"killswitch: {before.value} -> {status.state.value} ({DESCRIPTIONS[status.state]}); "
          "every worker applies it at its next bar")
    return 0


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


def _status(ks: Killswitch, client: redis.Redis, cfg: PineConfig) -> str:
    stored = ks.stored()
    when = datetime.fromtimestamp(stored.updated_at, UTC).isoformat(timespec="seconds") if stored.updated_at else "-"
    lines = [f"killswitch: {stored.state.value} ({DESCRIPTIONS[stored.state]})"]
    if stored.updated_at:
        lines.append(f"  set by {stored.source or '?'} at {when}" + (f": {stored.reason}" if stored.reason else ""))
    env = os.environ.get(ENV_VAR)
    lines.append(f"  {ENV_VAR} here: {env if env is not None else '(unset)'} -> effective for processes with this "
                 f"environment: {ks.effective().value}")
    slots = {_text(k): json.loads(_text(v)) for k, v in client.hgetall(redis_names.PORTFOLIO_SLOTS).items()}
    lines.append(f"portfolio: {len(slots)} of max {cfg.portfolio.max_positions} slot(s) in use")
    for key in sorted(slots):
        lines.append(f"  {key:<16} {slots[key].get('state', '?'):<9} {slots[key].get('cid', '')}")
    events = client.xrevrange(redis_names.PORTFOLIO_EVENTS, count=_RECENT_EVENTS)
    if events:
        lines.append("recent risk events (newest first):")
        for entry_id, fields in events:
            ms = int(_text(entry_id).split("-")[0])
            stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
            decoded = {_text(k): _text(v) for k, v in fields.items()}
            kind = decoded.pop("kind", "?")
            lines.append(f"  {stamp} {kind}: " + " ".join(f"{k}={v}" for k, v in decoded.items()))
    return "\n".join(lines)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
