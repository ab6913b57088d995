"""Message types, their per-type setting (on / silent / off) and the message record the outbox stores.

A :class:`Message` is what happened, in words and fields, with a unique ``event_id``: the same
event enqueued twice (two workers, a restarted process, two forwarders) is one message. It never
holds a webhook URL: the outbox names a channel by :func:`channel_id`, a digest of its URL, and
each sender maps that back to the URL from its own config.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from pine.config.schema import NotificationTypesConfig

Level = Literal["on", "silent", "off"]

GREEN: Final = 0x2ECC71
RED: Final = 0xE74C3C
BLUE: Final = 0x3498DB
ORANGE: Final = 0xE67E22
GREY: Final = 0x95A5A6


class Kind(StrEnum):
    """Message types; each has a setting in ``notifications.types``."""

    SYSTEM = "system"
    ENTRY = "entry"
    EXIT = "exit"
    DAILY_SUMMARY = "daily_summary"
    EMERGENCY = "emergency"
    STATUS = "status"


def level_for(types: NotificationTypesConfig, kind: Kind) -> Level:
    """The configured setting of ``kind``."""
    level: Level = getattr(types, kind.value)
    return level


def pnl_color(pnl: float) -> int:
    """Green for a gain (or flat), red for a loss."""
    return GREEN if pnl >= 0 else RED


def channel_id(webhook_url: str) -> str:
    """The outbox's name for a Discord channel: a digest of its webhook URL (the URL itself is a secret).

    Two strategies configured with the same URL share one channel, hence one order and one rate limit.
    """
    return "discord-" + hashlib.sha256(webhook_url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EmbedField:
    """One embed field."""

    name: str
    value: str
    inline: bool = True


@dataclass(frozen=True)
class Message:
    """One notification. ``occurred_at`` is the wall time of the event (lateness is measured from it)."""

    event_id: str
    kind: Kind
    title: str
    description: str = ""
    color: int = BLUE
    fields: tuple[EmbedField, ...] = ()
    strategy: str | None = None  # whose channel; None: every configured channel
    occurred_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        """The outbox form."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Message:
        """Inverse of :meth:`to_json`."""
        d: dict[str, Any] = json.loads(text)
        d["kind"] = Kind(d["kind"])
        d["fields"] = tuple(EmbedField(**f) for f in d["fields"])
        return cls(**d)
