"""Read the hub's bar streams and data clock from Redis; release bars in backtest order.

One ``StreamBarSource`` per worker reads every bar stream of the worker plus
``datahub:clock`` with a single XREAD, so nothing is missed (streams, not pub/sub) and a
restart can read the streams again from the beginning.

A bar is *ready* when the clock's watermark has reached its end: the hub writes a clock
entry only after every bar ending at or before the watermark is in its stream, so once a
bar is ready every bar that ends before it is known too. Releasing only ready bars makes
the order Backtrader sees equal to a backtest over the same bars (a minute without trades
simply has no bar; waiting for the clock is what tells "no bar" from "not yet").

Watermark rule: a clock entry is applied only when the bars it covers have been read. At
start the latest clock entry is read *before* the bars. Afterwards, one XREAD returns the
bar streams and the clock together; a bar stream that filled the COUNT limit may have more
entries, so the watermark is held back to the end of the last bar read from such a stream
(bars in one stream are in time order, so nothing at or before that end is still unread).

Corrected bars (``corrected: true``): the live hub appends them after the stream's top when
late trades changed a bar it had published. One for a bar still queued here replaces it in
place (keeping the original's stream id, so ledger cursors stay in stream order); one for a
bar already released is logged and counted in ``corrections_ignored``: history is not traded
again. Any other bar that does not end after the stream's previous bar is a bad message.
After a restart the original and its correction may be read in one batch, so the silent
replay of processed bars can use the corrected version of a bar the first run traded on.

Partial bars (``partial: true``, flushed when the hub stopped mid-bar) are held: a restarted
hub publishes the complete version as a correction, which replaces the partial one before any
strategy sees it. Only if the stream moves on without a correction is the partial bar released
as it is (logged, counted in ``partial_released``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import redis

from pine import redis_names
from pine.bars import Bar, BarFormatError
from pine.bus import BAR_FIELD

log = logging.getLogger(__name__)

FINISHED: Final = "finished"
StreamId = tuple[int, int]


def parse_stream_id(raw: str | bytes) -> StreamId:
    """``b'1709251200000-0'`` → ``(1709251200000, 0)``."""
    s = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(sid: StreamId) -> str:
    """``(1709251200000, 0)`` → ``'1709251200000-0'``."""
    return f"{sid[0]}-{sid[1]}"


@dataclass(frozen=True, slots=True)
class StreamedBar:
    """A decoded bar and where it came from. ``end`` is UTC-aware."""

    stream_id: StreamId
    bar: Bar

    @property
    def end(self) -> datetime:
        """The bar's end (UTC-aware): when it is complete, and its Backtrader time."""
        return self.bar.end


class StreamBarSource:
    """Per-stream queues of decoded bars, filled by one XREAD over all streams and the clock."""

    def __init__(self, client: redis.Redis, *, count: int = 1000, block_ms: int = 250) -> None:
        self.client = client
        self.count = count
        self.block_ms = block_ms
        self._queues: dict[str, deque[StreamedBar]] = {}
        self._expected: dict[str, tuple[str, str]] = {}
        self._last_ids: dict[str, str] = {}
        self._last_end: dict[str, datetime] = {}
        self._clock_id = "0-0"
        self._pending_watermark: datetime | None = None
        self._pending_state = ""
        self.watermark: datetime | None = None
        self.state = ""
        self._caught_up = False
        self.bad_messages = 0
        self.partial_released = 0
        self.corrections_applied = 0
        self.corrections_ignored = 0
        self._known_through: dict[str, datetime] = {}
        self.warmup_overlap = 0
        self._last_error_log = 0.0

    def subscribe(self, symbol: str, timeframe: str, *, after: StreamId | None = None,
                  known_through: datetime | None = None) -> str:
        """Read ``market:{symbol}:{timeframe}:stream`` from its beginning (or after the id ``after``);
        returns the stream key.

        Bars ending at or before ``known_through`` are already known (a worker's warmup history):
        they are skipped quietly and counted in ``warmup_overlap``.
        """
        key = redis_names.stream(symbol, timeframe)
        self._expected[key] = (symbol, timeframe)
        self._queues.setdefault(key, deque())
        self._last_ids.setdefault(key, format_stream_id(after) if after is not None else "0-0")
        if known_through is not None:
            self._known_through[key] = known_through
        return key

    def start(self) -> None:
        """Take the latest clock entry first, then read the bars it covers (no blocking)."""
        top = self.client.xrevrange(redis_names.CLOCK_STREAM, count=1)
        if top:
            entry_id, fields = top[0]
            self._clock_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            self._note_clock(fields)
        self.poll(block=False)

    @property
    def finished(self) -> bool:
        """The hub said it has published everything, and every bar it published has been read."""
        return self.state == FINISHED and self._caught_up

    def is_ready(self, bar: StreamedBar) -> bool:
        """Whether every bar ending at or before ``bar`` is known (see the module docstring)."""
        if self.finished:
            # Nothing more will come: bars flushed after the final watermark are complete too.
            return True
        return self.watermark is not None and bar.end <= self.watermark

    def has_ready(self) -> bool:
        """Whether any stream has a ready bar queued."""
        return any(self._head_ready(q) for q in self._queues.values())

    def pop_ready(self, stream: str) -> StreamedBar | None:
        """The next bar of ``stream`` if it is ready, else None."""
        q = self._queues[stream]
        if not self._head_ready(q):
            return None
        head = q.popleft()
        if head.bar.partial and not self.finished:
            self.partial_released += 1
            log.warning("releasing partial bar %s %s as it is: the hub moved on without completing it",
                        stream, format_stream_id(head.stream_id))
        return head

    def _head_ready(self, q: deque[StreamedBar]) -> bool:
        # A partial bar (flushed when the hub stopped) is held while its complete version can
        # still arrive as a correction (a restarted hub replays the session); if the stream moves
        # on without one, the next ready bar releases it as the best data there is. After a
        # finished replay, partial bars are all the data there will ever be.
        if not q or not self.is_ready(q[0]):
            return False
        if q[0].bar.partial and not self.finished:
            return len(q) > 1 and self.is_ready(q[1])
        return True

    def drained(self, stream: str) -> bool:
        """Whether ``stream`` has no bar queued (ready or not)."""
        return not self._queues[stream]

    def poll(self, *, block: bool = True) -> int:
        """One XREAD over every stream and the clock (BLOCK ``block_ms`` if asked); returns bars queued.

        A lost Redis connection is logged and retried on the next poll (redis-py reconnects).
        """
        streams = {**self._last_ids, redis_names.CLOCK_STREAM: self._clock_id}
        try:
            reply = self.client.xread(streams, count=self.count, block=self.block_ms if block else None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            now = time.monotonic()
            if now - self._last_error_log > 10:
                log.warning("Redis read failed (%s); retrying", exc)
                self._last_error_log = now
            time.sleep(self.block_ms / 1000 if block else 0)
            return 0
        queued = 0
        # The earliest end up to which every full stream is known; None with full: nothing is known.
        holdback: datetime | None = None
        full = blind = False
        for raw_key, entries in reply or []:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            if key == redis_names.CLOCK_STREAM:
                entry_id, fields = entries[-1]
                self._clock_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                self._note_clock(fields)
                continue
            for entry_id, fields in entries:
                queued += self._enqueue(key, entry_id, fields)
            self._last_ids[key] = entries[-1][0].decode() if isinstance(entries[-1][0], bytes) else entries[-1][0]
            if len(entries) >= self.count:
                full = True
                last_end = self._last_end.get(key)
                if last_end is None:
                    blind = True
                elif holdback is None or last_end < holdback:
                    holdback = last_end
        self._caught_up = not full
        self._apply_watermark(None if blind else holdback, full)
        return queued

    def _note_clock(self, fields: dict[bytes | str, bytes | str]) -> None:
        decoded = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        try:
            wm = datetime.fromisoformat(decoded["watermark"])
            if wm.tzinfo is None:
                raise ValueError("watermark has no UTC offset")
        except (KeyError, ValueError) as exc:
            log.error("ignoring bad clock entry %s %r: %s", self._clock_id, decoded, exc)
            return
        self._pending_watermark = wm.astimezone(UTC)
        self._pending_state = decoded.get("state", "")

    def _apply_watermark(self, holdback: datetime | None, full: bool) -> None:
        if self._pending_watermark is None:
            return
        candidate = self._pending_watermark
        if full:
            if holdback is None:
                return
            candidate = min(candidate, holdback)
        else:
            self.state = self._pending_state
        if self.watermark is None or candidate > self.watermark:
            self.watermark = candidate

    def _enqueue(self, key: str, entry_id: bytes | str, fields: dict[bytes | str, bytes | str]) -> int:
        sid = parse_stream_id(entry_id)
        raw = fields.get(BAR_FIELD.encode(), fields.get(BAR_FIELD))
        try:
            if raw is None:
                raise BarFormatError(f"stream entry has no {BAR_FIELD!r} field")
            bar = Bar.from_json(raw)
            if (bar.symbol, bar.timeframe) != self._expected[key]:
                raise BarFormatError(f"a {bar.symbol} {bar.timeframe} bar does not belong in this stream")
        except BarFormatError as exc:
            self.bad_messages += 1
            log.error("skipping bad bar message %s %s: %s", key, format_stream_id(sid), exc)
            return 0
        known = self._known_through.get(key)
        if known is not None and bar.end <= known:
            self.warmup_overlap += 1
            # What this stream is known up to, for the COUNT-limit rule.
            self._last_end[key] = max(self._last_end.get(key, bar.end), bar.end)
            return 0
        last = self._last_end.get(key)
        if last is not None and bar.end <= last and bar.corrected:
            self._correct(key, sid, bar)
            return 0
        if last is not None and bar.end <= last:
            self.bad_messages += 1
            log.error("skipping out-of-order bar %s %s: ends %s, not after %s", key, format_stream_id(sid),
                      bar.end.isoformat(), last.isoformat())
            return 0
        self._last_end[key] = bar.end
        self._queues[key].append(StreamedBar(sid, bar))
        return 1

    def _correct(self, key: str, sid: StreamId, bar: Bar) -> None:
        """Apply a corrected bar to the queued bar it replaces, or count it if that bar was released."""
        queue = self._queues[key]
        for i, queued in enumerate(queue):
            if queued.bar.timestamp == bar.timestamp:
                queue[i] = StreamedBar(queued.stream_id, bar)
                self.corrections_applied += 1
                log.info("corrected bar %s %s replaces %s before release", key, format_stream_id(sid),
                         format_stream_id(queued.stream_id))
                return
        self.corrections_ignored += 1
        log.warning("corrected bar %s %s for %s arrived after that bar was processed: not trading it again",
                    key, format_stream_id(sid), bar.timestamp.isoformat())
