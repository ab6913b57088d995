"""The bar bus: how bars travel from the hub to workers through Redis.

Publishing (hub side), per bar boundary, in one MULTI/EXEC transaction:
  XADD  market:{ROOT}:{tf}:stream  id={bar start ms}-0  bar=<json>   (trimmed, approximate MAXLEN)
  SET   market:{ROOT}:{tf}:latest  <json>
  PUBLISH market:{ROOT}:{tf}       <json>
then XADD datahub:clock {watermark, state}: every bar that ends at or before ``watermark``
is in its stream. Consumers merge streams by time and release a bar only when the
watermark has reached its end, so every worker sees bars in the same order as a backtest.
A bar whose id is not above its stream's last id was published before (hub restarted over
the same data) and is skipped: the stream never holds a duplicate (partial bars: below).

Corrected bars (``corrected: true``, live hub: late trades changed a bar already published)
keep ``timestamp`` = the bar start but are appended with the next id after the stream's top
(``{top ms}-{top seq + 1}``), so stream ids stay in arrival order and a consumer reading on
from its last id sees the correction. The latest key is set only when the corrected bar is the
newest bar of its stream. A corrected bar whose exact JSON already follows the original in
its stream was published before and is skipped.

Partial bars (``partial: true``) are flushed by a hub that stops before their end; they take
the id of the complete bar. When the bar to publish starts where the stream's newest bar
starts and the latest version of that bar in the stream is partial, the bar is a later
version of it (a restarted hub rebuilt it from a replay): it is published as a correction
(``corrected: true``, next id after the top), so the complete bar replaces the partial one
instead of being skipped as a duplicate. A version equal to the partial one is skipped. A
later version never holds less: the live hub publishes no bar that starts before its data
(``hub.aggregator``), so every version holds the bar's trades from its start on.

Retries are idempotent: when a publish fails (the transaction may or may not have been
applied), the cached stream tops are forgotten and re-read from Redis on the next attempt, so
a retry skips what got through and publishes the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import redis

from pine import redis_names
from pine.bars import Bar, BarFormatError

log = logging.getLogger(__name__)

# Roughly five weeks of minute bars, years of hourly and daily bars.
STREAM_MAXLEN: Final = {"1min": 50_000, "hourly": 20_000, "daily": 5_000}
CLOCK_MAXLEN: Final = 10_000
BAR_FIELD: Final = "bar"


def _id_tuple(stream_id: str | bytes) -> tuple[int, int]:
    s = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def _bar_field(fields: dict[bytes | str, bytes | str]) -> bytes | str | None:
    """The bar JSON of a stream entry (clients with or without decode_responses)."""
    return fields.get(BAR_FIELD.encode(), fields.get(BAR_FIELD))


@dataclass(frozen=True, slots=True)
class _Top:
    """A stream's last entry id, and the latest version of its newest bar (the bar starting at that id's ms).

    Corrections are appended with ids after the top, so the newest bar's start is always the top's ms.
    """

    last_id: tuple[int, int]
    newest: Bar | None  # None: empty stream, or no readable entry for the newest bar

    def replaced_by(self, start: tuple[int, int], bar: Bar) -> bool:
        """Whether ``bar`` (not a correction, starting at ``start``) is a later version of a partial newest bar."""
        newest = self.newest
        return (newest is not None and newest.partial and start[0] == self.last_id[0]
                and bar.with_flags(corrected=False) != newest.with_flags(corrected=False))


@dataclass
class BarPublisher:
    """Publishes closed bars and the data clock; remembers each stream's top."""

    client: redis.Redis
    published: int = 0
    duplicates_skipped: int = 0
    corrections_published: int = 0
    _tops: dict[str, _Top] = field(default_factory=dict)

    def _top(self, stream: str) -> _Top:
        top = self._tops.get(stream)
        if top is None:
            top = self._tops[stream] = self._read_top(stream)
        return top

    def _read_top(self, stream: str) -> _Top:
        entries = self.client.xrevrange(stream, count=1)
        if not entries:
            return _Top((0, 0), None)
        last = _id_tuple(entries[0][0])
        newest = None
        # The newest bar's original entry and every correction appended after it (usually just the one entry).
        for _, fields in self.client.xrange(stream, min=f"{last[0]}-0"):
            try:
                bar = Bar.from_json(_bar_field(fields) or b"")
            except BarFormatError:
                continue  # not a bar the hub wrote: no version to replace
            if _id_tuple(redis_names.bar_stream_id(bar.timestamp))[0] == last[0]:
                newest = bar
        return _Top(last, newest)

    def newest_bar(self, symbol: str, timeframe: str) -> Bar | None:
        """The latest version of the newest bar of ``symbol``'s ``timeframe`` stream; None if the stream is empty.

        Read from Redis once, then kept up to date as bars are published.
        """
        return self._top(redis_names.stream(symbol, timeframe)).newest

    def publish(self, bars: Iterable[Bar], watermark: datetime, *, state: str = "running") -> int:
        """Publish ``bars`` and advance the clock to ``watermark``; returns bars published.

        Raises the Redis error if the transaction failed; calling again with the same bars is safe.
        """
        pipe = self.client.pipeline(transaction=True)
        tops: dict[str, _Top] = {}  # stream tops after this transaction, cached once it succeeds
        count = corrections = 0
        try:
            for bar in bars:
                stream = redis_names.stream(bar.symbol, bar.timeframe)
                top = tops.get(stream) or self._top(stream)
                start = _id_tuple(redis_names.bar_stream_id(bar.timestamp))
                if bar.corrected:
                    if self._published_after(stream, start, bar.to_json()):
                        self.duplicates_skipped += 1
                        continue
                    sid = max((top.last_id[0], top.last_id[1] + 1), start)
                    corrections += 1
                elif start > top.last_id:
                    sid = start
                elif top.replaced_by(start, bar):
                    bar = bar.with_flags(corrected=True)
                    sid = (top.last_id[0], top.last_id[1] + 1)
                    corrections += 1
                else:
                    self.duplicates_skipped += 1
                    continue
                payload = bar.to_json()
                newest = start[0] == sid[0]  # a correction of an older bar keeps the newest bar's id ms
                pipe.xadd(stream, {BAR_FIELD: payload}, id=f"{sid[0]}-{sid[1]}", maxlen=STREAM_MAXLEN[bar.timeframe],
                          approximate=True)
                if newest:
                    pipe.set(redis_names.latest(bar.symbol, bar.timeframe), payload)
                pipe.publish(redis_names.channel(bar.symbol, bar.timeframe), payload)
                tops[stream] = _Top(sid, bar if newest else top.newest)
                count += 1
            pipe.xadd(
                redis_names.CLOCK_STREAM,
                {"watermark": watermark.isoformat(), "state": state},
                maxlen=CLOCK_MAXLEN,
                approximate=True,
            )
            pipe.execute()
        except redis.RedisError:
            # Applied or not, we cannot tell: the next attempt re-reads every top from Redis.
            self._tops.clear()
            raise
        self._tops.update(tops)
        self.published += count
        self.corrections_published += corrections
        return count

    def _published_after(self, stream: str, start: tuple[int, int], payload: str) -> bool:
        """Whether ``payload`` is already in ``stream`` at or after the bar's own id."""
        entries = self.client.xrange(stream, min=f"{start[0]}-{start[1]}")
        wanted = (payload, payload.encode())  # clients with or without decode_responses
        return any(_bar_field(fields) in wanted for _, fields in entries)
