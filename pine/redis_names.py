"""Redis key and channel names: the contract between hub, workers and tools (DESIGN.md)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Final

CONTROL_CHANNEL: Final = "datahub:control"
# Replies to control commands: a command names its reply channel, which must be this one or
# start with it followed by ':' (replies never land on market channels); malformed commands,
# which name none, are answered here.
CONTROL_REPLY_CHANNEL: Final = "datahub:control:reply"
# Stream of the hub's data clock: an entry {watermark, state} is added after every bar
# boundary has been published, so a consumer knows that every bar ending at or before
# ``watermark`` is already in the bar streams (a minute without trades has no bar).
CLOCK_STREAM: Final = "datahub:clock"

# Operational alerts for people (process down, crash loop, failed Dagster run, ...): stream entries
# {kind, severity: info|warning|critical, component, message, source, time, details (JSON)}.
OPS_ALERTS: Final = "ops:alerts"
# Present (value: the epoch time it was set, with a TTL of a few sensor intervals) while a Dagster daemon
# runs Pine's code location: the workers then leave the daily summary to Dagster (pine.notify.summary).
DAGSTER_ALIVE: Final = "ops:dagster:alive"


def channel(root: str, timeframe: str) -> str:
    """Pub/sub channel of one root symbol and timeframe, e.g. ``market:ES:1min``."""
    return f"market:{root}:{timeframe}"


def stream(root: str, timeframe: str) -> str:
    """Redis stream holding the same bars, for consumers that must not miss any."""
    return f"market:{root}:{timeframe}:stream"


def latest(root: str, timeframe: str) -> str:
    """Key holding the latest bar JSON."""
    return f"market:{root}:{timeframe}:latest"


def heartbeat(component: str) -> str:
    """Heartbeat key; component is ``hub`` or ``worker:{strategy}``."""
    return f"heartbeat:{component}"


def worker_control(strategy: str) -> str:
    """Control channel of one strategy worker, e.g. ``worker:ibs:control``; messages are JSON objects,
    ``{"command": "reload_models"}`` reloads the ML champion models."""
    return f"worker:{strategy}:control"


def bar_stream_id(start: datetime) -> str:
    """Stream entry id of a bar: its start in epoch milliseconds.

    Deterministic ids make a republished bar (hub restarted over the same data) an
    error Redis rejects instead of a duplicate, and let a consumer resume from a time.
    """
    return f"{int(start.timestamp() * 1000)}-0"


# -- Portfolio risk (issue 4): shared by every worker, read by the CLI and the dashboard ------------
# Killswitch: hash {state: off|reduce_only|halt|flatten, reason, source, updated_at}.
KILLSWITCH: Final = "portfolio:killswitch"
# Open positions and entry reservations across all strategies: hash {"{strategy}:{symbol}": JSON
# {owner, cid, state: reserved|open, since (ms)}}; its length is what max_positions limits.
PORTFOLIO_SLOTS: Final = "portfolio:slots"
# Owner liveness: hash {strategy: lease expiry in epoch ms}, refreshed with the worker's heartbeat;
# a reservation whose owner's lease has expired is reclaimed (an open position never is).
PORTFOLIO_LEASES: Final = "portfolio:leases"
# Stream of risk events {kind, ...}: daily_stop_hit, reservation_reconciled, killswitch_changed,
# order_failed, order_in_doubt, position_mismatch, position_restored, flatten_complete.
PORTFOLIO_EVENTS: Final = "portfolio:events"


def portfolio_day(trading_day: date) -> str:
    """Hash of one CME trading day: ``realized`` P&L across strategies and ``stopped`` once the daily stop hit."""
    return f"portfolio:day:{trading_day.isoformat()}"


def portfolio_day_trades(trading_day: date) -> str:
    """Set of trade ids whose P&L is already in :func:`portfolio_day` (recording twice is a no-op)."""
    return f"portfolio:day:{trading_day.isoformat()}:trades"


# -- Notifications (issue 7) ---------------------------------------------------------------------------
# Trading days whose session close some worker has passed and whose daily summary is not enqueued yet:
# sorted set {day: wall time the first worker passed the close}.
NOTIFY_SUMMARY_PENDING: Final = "notify:summary:pending"


def notify_summary_closed(trading_day: date) -> str:
    """Set of the strategies that have processed every bar of ``trading_day`` (passed its session close)."""
    return f"notify:summary:{trading_day.isoformat()}:closed"
