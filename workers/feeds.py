"""Backtrader feeds of Pine bars: live from Redis streams, or from DataFrames for direct backtests.

Feeds are named ``{SYM}_minute``, ``{SYM}_hour`` and ``{SYM}_day`` (the seeds' names). A bar's
Backtrader datetime is its END (UTC, naive), so a minute bar and the daily bar that end at
the session close are delivered in the same step, in live runs and backtests alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import backtrader as bt

from pine import redis_names
from pine.bars import Bar
from workers.bar_stream import StreamBarSource, StreamId, parse_stream_id

if TYPE_CHECKING:
    import pandas as pd

# Pine timeframe → (feed name suffix, Backtrader timeframe, compression). Cerebro orders its
# feeds by (timeframe, compression), so both run paths must use these same values.
FEED_TIMEFRAMES: Final[dict[str, tuple[str, int, int]]] = {
    "1min": ("minute", bt.TimeFrame.Minutes, 1),
    "hourly": ("hour", bt.TimeFrame.Minutes, 60),
    "daily": ("day", bt.TimeFrame.Days, 1),
}

FeedFactory = Callable[[str, str], bt.feed.DataBase]


def feed_name(symbol: str, timeframe: str) -> str:
    """``('ES', '1min')`` → ``'ES_minute'``."""
    return f"{symbol}_{FEED_TIMEFRAMES[timeframe][0]}"


def bt_datetime(ts: datetime) -> float:
    """Backtrader's float date of a UTC-aware instant (naive UTC inside Backtrader)."""
    return float(bt.date2num(ts.astimezone(UTC).replace(tzinfo=None)))


@dataclass(frozen=True, slots=True)
class BarMeta:
    """What Backtrader's numeric lines cannot hold: the bar's stream id, end and contract."""

    stream_id: StreamId
    end: datetime
    contract: str


def bar_meta(bar: Bar, stream_id: StreamId | None = None) -> BarMeta:
    """Metadata of ``bar``; the stream id defaults to the hub's deterministic id (bar start ms)."""
    sid = stream_id if stream_id is not None else parse_stream_id(redis_names.bar_stream_id(bar.timestamp))
    return BarMeta(sid, bar.end, bar.contract_symbol)


class _Delivery:
    """Tracks which loaded bars Backtrader has delivered (``len(feed)`` counts delivered bars)."""

    _taken: int
    _last_taken: BarMeta | None

    def _reset_delivery(self) -> None:
        self._taken = 0
        self._last_taken = None

    def _meta_from(self, index: int) -> BarMeta:
        raise NotImplementedError

    def take_delivered(self) -> list[BarMeta]:
        """Metadata of the bars delivered since the previous call (at most one per step)."""
        n = len(self)  # type: ignore[arg-type]
        out = [self._meta_from(i) for i in range(self._taken, n)]
        self._forget(n)
        if out:
            self._last_taken = out[-1]
        self._taken = n
        return out

    def _forget(self, upto: int) -> None:
        pass

    def current_meta(self) -> BarMeta | None:
        """Metadata of the bar Backtrader currently shows (index 0), None before the first bar."""
        i = len(self) - 1  # type: ignore[arg-type]
        if i < 0:
            return None
        return self._meta_from(i) if i >= self._taken else self._last_taken


class StreamBarFeed(_Delivery, bt.feed.DataBase):
    """A live feed of one bar stream, fed by the worker's shared ``StreamBarSource``.

    ``_load`` returns True with a ready bar, None when nothing is ready yet, and False once
    the hub has finished, the stream is drained and ``stop_at_end`` was asked for.
    """

    params = (
        ("source", None),
        ("stream", ""),
        ("gate", None),
        ("stop_at_end", False),
    )

    def islive(self) -> bool:
        return True

    def start(self) -> None:
        super().start()
        self._pending: deque[BarMeta] = deque()
        self._reset_delivery()

    def _meta_from(self, index: int) -> BarMeta:
        return self._pending[index - self._taken]

    def _forget(self, upto: int) -> None:
        for _ in range(upto - self._taken):
            self._pending.popleft()

    def do_qcheck(self, onoff: bool, qlapse: float) -> None:
        # Cerebro calls this once per feed at the start of every step (never on retries).
        super().do_qcheck(onoff, qlapse)
        self.p.gate.on_step(self)

    def _load(self) -> bool | None:
        source: StreamBarSource = self.p.source
        sb = source.pop_ready(self.p.stream)
        if sb is None:
            if self.p.stop_at_end and source.finished and source.drained(self.p.stream):
                return False
            return None
        bar = sb.bar
        self.lines.datetime[0] = bt_datetime(bar.end)
        self.lines.open[0] = bar.open
        self.lines.high[0] = bar.high
        self.lines.low[0] = bar.low
        self.lines.close[0] = bar.close
        self.lines.volume[0] = bar.volume
        self.lines.openinterest[0] = 0.0
        self._pending.append(bar_meta(bar, sb.stream_id))
        return True


class StepGate:
    """Polls Redis at most once per Backtrader step, at its start, and only when idle.

    An idle worker thus blocks once per step, not once per feed, and the set of ready bars
    stays fixed while Cerebro asks each feed (and asks again those that had nothing).
    """

    def __init__(self, source: StreamBarSource, *, stop_at_end: bool, on_idle: Callable[[], None] | None) -> None:
        self.source = source
        self.stop_at_end = stop_at_end
        self.on_idle = on_idle
        self.feeds: list[StreamBarFeed] = []
        self._seen: set[int] = set()

    def on_step(self, feed: StreamBarFeed) -> None:
        """Called by each feed once per step; the first call of a step may poll."""
        key = id(feed)
        if self._seen and key not in self._seen:
            self._seen.add(key)
            return
        self._seen = {key}
        if self._idle():
            self.source.poll(block=not (self.stop_at_end and self.source.finished))
            if self.on_idle is not None:
                self.on_idle()

    def _idle(self) -> bool:
        if self.source.has_ready():
            return False
        # A bar Backtrader loaded and rewound (it was later than the step's time) is still to come.
        return all(len(f) >= f.buflen() for f in self.feeds)


class LiveFeedSet:
    """Builds the live feeds of one worker around one ``StreamBarSource``."""

    def __init__(
        self, source: StreamBarSource, *, stop_at_end: bool = False, on_idle: Callable[[], None] | None = None
    ) -> None:
        self.source = source
        self.stop_at_end = stop_at_end
        self.gate = StepGate(source, stop_at_end=stop_at_end, on_idle=on_idle)

    def make_feed(self, symbol: str, timeframe: str) -> StreamBarFeed:
        """The feed of ``market:{symbol}:{timeframe}:stream``."""
        stream = self.source.subscribe(symbol, timeframe)
        _, tf, comp = FEED_TIMEFRAMES[timeframe]
        feed = StreamBarFeed(
            source=self.source, stream=stream, gate=self.gate, stop_at_end=self.stop_at_end,
            timeframe=tf, compression=comp,
        )
        self.gate.feeds.append(feed)
        return feed


class FrameBarFeed(_Delivery, bt.feeds.PandasData):
    """A non-live feed over a DataFrame of bars (index = bar end, naive UTC)."""

    params = (
        ("meta", ()),
        ("datetime", None),
        ("open", "open"),
        ("high", "high"),
        ("low", "low"),
        ("close", "close"),
        ("volume", "volume"),
        ("openinterest", None),
    )

    def start(self) -> None:
        super().start()
        self._reset_delivery()

    def _meta_from(self, index: int) -> BarMeta:
        return self.p.meta[index]


def bar_frame(bars: Sequence[Bar]) -> pd.DataFrame:
    """DataFrame of one symbol and timeframe, indexed by bar end (naive UTC)."""
    import pandas as pd

    return pd.DataFrame(
        {
            "open": [b.open for b in bars],
            "high": [b.high for b in bars],
            "low": [b.low for b in bars],
            "close": [b.close for b in bars],
            "volume": [float(b.volume) for b in bars],
        },
        index=pd.DatetimeIndex([b.end.astimezone(UTC).replace(tzinfo=None) for b in bars], name="datetime"),
    )


class FrameFeedSet:
    """Builds non-live feeds from a collection of bars, for backtests over the same bars."""

    def __init__(self, bars: Iterable[Bar]) -> None:
        self.by_stream: dict[tuple[str, str], list[Bar]] = {}
        for bar in sorted(bars, key=lambda b: b.end):
            self.by_stream.setdefault((bar.symbol, bar.timeframe), []).append(bar)

    def make_feed(self, symbol: str, timeframe: str) -> FrameBarFeed:
        """The feed of one symbol and timeframe (empty if there are no such bars)."""
        bars = self.by_stream.get((symbol, timeframe), [])
        _, tf, comp = FEED_TIMEFRAMES[timeframe]
        return FrameBarFeed(dataname=bar_frame(bars), meta=tuple(bar_meta(b) for b in bars), timeframe=tf,
                            compression=comp)
