"""Delivering an order to a broker: the result every broker returns, and the paper broker's delivery.

A sender gets the journaled payload and a callback to call before each attempt (the journal
records ``sent`` and the attempt number there, before anything leaves the process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Delivery:
    """How a delivery ended: acknowledged by the broker or failed, after how many attempts."""

    acknowledged: bool
    attempts: int
    http_status: int | None = None
    response: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Probe:
    """A reachability check of a broker: ok or not, and what was (or was not) checked."""

    ok: bool
    detail: str
    skipped: bool = False


class OrderSender(Protocol):
    """A broker endpoint: ``name`` goes into the journal, ``fill_source`` into fills."""

    name: str
    fill_source: str

    def deliver(self, payload: dict[str, Any], on_attempt: Callable[[int], None]) -> Delivery:
        """Deliver ``payload``; ``on_attempt(n)`` is called before attempt ``n`` is made."""
        ...

    def probe(self) -> Probe:
        """Check the broker can be reached without placing anything."""
        ...


class PaperSender:
    """The paper broker: Backtrader's book is the execution, so every order is acknowledged at once."""

    name = "paper"
    fill_source = "paper"

    def deliver(self, payload: dict[str, Any], on_attempt: Callable[[int], None]) -> Delivery:
        """Acknowledge ``payload`` (after the journal has recorded the attempt, as for a real broker)."""
        on_attempt(1)
        return Delivery(acknowledged=True, attempts=1, response="paper broker")

    def probe(self) -> Probe:
        """Nothing to reach."""
        return Probe(True, "paper broker: nothing to reach", skipped=True)
