"""The bar bus: how bars travel from the hub to workers through Redis.

Publishing (hub side), per bar boundary, in one MULTI/EXEC transaction:
  XADD  market:{ROOT}:{tf}:stream  id={bar start ms}-0  bar=<json>   (trimmed, approximate MAXLEN)
  SET   market:{ROOT}:{tf}:latest  <json>
  PUBLISH market:{ROOT}:{tf}       <json>
then XADD datahub:clock {watermark, state}: every bar that ends at or before ``watermark``
is in its stream. Consumers merge streams by time and release a bar only when the
watermark has reached its end, so every worker sees bars in the same order as a backtest.
A bar whose id is not above its stream's last id was published before (hub restarted over
the same data) and is skipped: the stream never holds a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import redis

from pine import redis_names
from pine.bars import Bar

log = logging.getLogger(__name__)

# Roughly five weeks of minute bars, years of hourly and daily bars.
STREAM_MAXLEN: Final = {"1min": 50_000, "hourly": 20_000, "daily": 5_000}
CLOCK_MAXLEN: Final = 10_000
BAR_FIELD: Final = "bar"


def _id_tuple(stream_id: str | bytes) -> tuple[int, int]:
    s = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class BarPublisher:
    """Publishes closed bars and the data clock; remembers each stream's last id."""

    client: redis.Redis
    published: int = 0
    duplicates_skipped: int = 0
    _last_ids: dict[str, tuple[int, int]] = field(default_factory=dict)

    def _last_id(self, stream: str) -> tuple[int, int]:
        if stream not in self._last_ids:
            top = self.client.xrevrange(stream, count=1)
            self._last_ids[stream] = _id_tuple(top[0][0]) if top else (0, 0)
        return self._last_ids[stream]

    def publish(self, bars: Iterable[Bar], watermark: datetime, *, state: str = "running") -> int:
        """Publish ``bars`` and advance the clock to ``watermark``; returns bars published."""
        pipe = self.client.pipeline(transaction=True)
        count = 0
        for bar in bars:
            stream = redis_names.stream(bar.symbol, bar.timeframe)
            sid = redis_names.bar_stream_id(bar.timestamp)
            if _id_tuple(sid) <= self._last_id(stream):
                self.duplicates_skipped += 1
                continue
            payload = bar.to_json()
            pipe.xadd(stream, {BAR_FIELD: payload}, id=sid, maxlen=STREAM_MAXLEN[bar.timeframe], approximate=True)
            pipe.set(redis_names.latest(bar.symbol, bar.timeframe), payload)
            pipe.publish(redis_names.channel(bar.symbol, bar.timeframe), payload)
            self._last_ids[stream] = _id_tuple(sid)
            count += 1
        pipe.xadd(
            redis_names.CLOCK_STREAM,
            {"watermark": watermark.isoformat(), "state": state},
            maxlen=CLOCK_MAXLEN,
            approximate=True,
        )
        pipe.execute()
        self.published += count
        return count
