"""The wall clock the live hub closes bars by, injectable so tests and benches can drive time."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock time in UTC nanoseconds, and how long a span of it lasts in real seconds."""

    def now_ns(self) -> int:
        """The current time (UTC epoch nanoseconds)."""
        ...

    def real_seconds(self, span_ns: int) -> float | None:
        """Real seconds until ``span_ns`` of this clock have passed; None if it does not follow real time."""
        ...


class SystemClock:
    """The machine's clock."""

    def now_ns(self) -> int:
        """``time.time_ns()``."""
        return time.time_ns()

    def real_seconds(self, span_ns: int) -> float | None:
        """One to one."""
        return span_ns / 1e9
