"""Keep publishing through Redis outages: a bounded, ordered buffer in front of ``BarPublisher``.

Every bar boundary (bars + watermark) is queued and published in order. When Redis fails,
the boundary stays at the head of the queue and is retried with backoff; later boundaries
wait behind it, so bars reach Redis in order and — because ``BarPublisher`` re-reads the
stream tops after a failure and skips what is already there — exactly once, even when the
failed attempt was in fact applied. Nothing is lost while at most ``max_bars`` bars wait;
beyond that the oldest boundaries are dropped, counted and logged as errors.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import redis

from pine.bars import Bar
from pine.bus import BarPublisher

log = logging.getLogger(__name__)

RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 2.0
# An outage is logged once, then again at most this often while it lasts.
LOG_EVERY_S = 10.0


@dataclass
class _Pending:
    bars: list[Bar]
    watermark: datetime
    state: str


class BufferedPublisher:
    """Publishes boundaries in order through ``publisher``; buffers them while Redis is down."""

    def __init__(self, publisher: BarPublisher, max_bars: int) -> None:
        self.publisher = publisher
        self.max_bars = max_bars
        self._queue: deque[_Pending] = deque()
        self._bars = 0
        self._next_try = 0.0
        self._delay = RETRY_INITIAL_S
        self._last_log = -LOG_EVERY_S
        self.publish_errors = 0
        self.overflow_bars = 0
        self.last_error: str | None = None

    @property
    def depth(self) -> int:
        """Bars waiting to be published."""
        return self._bars

    @property
    def boundaries(self) -> int:
        """Boundaries (clock updates, with or without bars) waiting to be published."""
        return len(self._queue)

    def submit(self, bars: list[Bar], watermark: datetime, *, state: str = "running") -> None:
        """Queue one boundary and publish what is due."""
        tail = self._queue[-1] if self._queue else None
        if tail is not None and not bars:
            # A clock-only update while waiting: no bar ends between the two watermarks, so the
            # waiting boundary's bars can go out with the later one.
            tail.watermark, tail.state = watermark, state
        else:
            self._queue.append(_Pending(bars, watermark, state))
            self._bars += len(bars)
            self._enforce_limit()
        self.pump()

    def pump(self, *, force: bool = False) -> int:
        """Publish queued boundaries in order until one fails; returns boundaries published.

        After a failure nothing is tried before the retry delay unless ``force``.
        """
        if not self._queue or (not force and time.monotonic() < self._next_try):
            return 0
        done = 0
        while self._queue:
            head = self._queue[0]
            try:
                self.publisher.publish(head.bars, head.watermark, state=head.state)
            except redis.RedisError as exc:
                self._failed(exc)
                return done
            self._queue.popleft()
            self._bars -= len(head.bars)
            done += 1
        if self.last_error is not None:
            log.warning("Redis is back: %d boundaries published from the buffer", done)
            self.last_error = None
        self._delay = RETRY_INITIAL_S
        self._next_try = 0.0
        return done

    def drain(self, deadline: float) -> bool:
        """Retry until everything is published or ``time.monotonic()`` passes ``deadline``; True if empty."""
        while self._queue:
            self.pump(force=True)
            if not self._queue or time.monotonic() >= deadline:
                break
            time.sleep(min(RETRY_INITIAL_S, max(deadline - time.monotonic(), 0)))
        return not self._queue

    def _failed(self, exc: redis.RedisError) -> None:
        self.publish_errors += 1
        now = time.monotonic()
        self._next_try = now + self._delay
        self._delay = min(self._delay * 2, RETRY_MAX_S)
        first = self.last_error is None
        self.last_error = f"{type(exc).__name__}: {exc}"
        if first or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            log.error("Redis publish failed (%s); %d bars buffered (limit %d), retrying", self.last_error,
                      self._bars, self.max_bars)

    def _enforce_limit(self) -> None:
        dropped = 0
        # The head may be mid-retry; it is dropped like any other when the buffer overflows.
        while self._bars > self.max_bars and len(self._queue) > 1:
            old = self._queue.popleft()
            self._bars -= len(old.bars)
            dropped += len(old.bars)
        if dropped:
            self.overflow_bars += dropped
            log.error("Redis buffer overflow: %d bars DROPPED (%d in total); raise hub.redis_buffer_max_bars "
                      "or restore Redis", dropped, self.overflow_bars)
