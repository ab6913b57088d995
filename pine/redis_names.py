"""Redis key and channel names: the contract between hub, workers and tools (DESIGN.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Final

CONTROL_CHANNEL: Final = "datahub:control"
# Stream of the hub's data clock: an entry {watermark, state} is added after every bar
# boundary has been published, so a consumer knows that every bar ending at or before
# ``watermark`` is already in the bar streams (a minute without trades has no bar).
CLOCK_STREAM: Final = "datahub:clock"


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


def bar_stream_id(start: datetime) -> str:
    """Stream entry id of a bar: its start in epoch milliseconds.

    Deterministic ids make a republished bar (hub restarted over the same data) an
    error Redis rejects instead of a duplicate, and let a consumer resume from a time.
    """
    return f"{int(start.timestamp() * 1000)}-0"
