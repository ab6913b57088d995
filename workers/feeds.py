"""Backtrader feeds of Pine bars: live from Redis streams, or from bar lists for direct backtests.

Feeds are named ``{SYM}_minute``, ``{SYM}_hour`` and ``{SYM}_day`` (the seeds' names); a
reference root's daily and hourly feeds likewise, except ZB's daily feed, ``TLT_day``. A bar's
Backtrader datetime is its END (UTC, naive), so a minute bar and the daily bar that end at
the session close are delivered in the same step, in live runs and backtests alike.

Warmup: a feed may hold history bars (``BarMeta.warmup``) that it delivers before anything
else — a live feed before the bars of its stream, which start after the warmup's hand-over
instant. Strategies take no decision on them (``workers.journal``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import backtrader as bt

from pine import redis_names
from pine.bars import Bar
from workers.bar_stream import StreamBarSource, StreamId, parse_stream_id

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


def reference_feed_name(root: str, timeframe: str) -> str:
    """Name of a reference root's feed: ``ES_day``, ``ZB_hour``; the seeds call ZB's daily feed ``TLT_day``."""
    return "TLT_day" if (root, timeframe) == ("ZB", "daily") else feed_name(root, timeframe)


def bt_datetime(ts: datetime) -> float:
    """Backtrader's float date of a UTC-aware instant (naive UTC inside Backtrader)."""
    return float(bt.date2num(ts.astimezone(UTC).replace(tzinfo=None)))


@dataclass(frozen=True, slots=True)
class BarMeta:
    """What Backtrader's numeric lines cannot hold: the bar's stream id, end and contract; history or not."""

    stream_id: StreamId
    end: datetime
    contract: str
    warmup: bool = False


def bar_meta(bar: Bar, stream_id: StreamId | None = None, *, warmup: bool = False) -> BarMeta:
    """Metadata of ``bar``; the stream id defaults to the hub's deterministic id (bar start ms)."""
    sid = stream_id if stream_id is not None else parse_stream_id(redis_names.bar_stream_id(bar.timestamp))
    return BarMeta(sid, bar.end, bar.contract_symbol, warmup)


def _fill_lines(feed: bt.feed.DataBase, bar: Bar) -> None:
    feed.lines.datetime[0] = bt_datetime(bar.end)
    feed.lines.open[0] = bar.open
    feed.lines.high[0] = bar.high
    feed.lines.low[0] = bar.low
    feed.lines.close[0] = bar.close
    feed.lines.volume[0] = bar.volume
    feed.lines.openinterest[0] = 0.0


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
        if n == self._taken:
            return []  # most feeds deliver nothing in most steps (a minute step of an hourly feed)
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
    """A live feed of one bar stream, fed by the worker's shared ``StreamBarSource``, after its warmup bars.

    ``_load`` returns True with a warmup bar or a ready stream bar, None when nothing is ready
    yet, and False once the hub has finished, the stream is drained and ``stop_at_end`` was asked for.
    """

    params = (
        ("source", None),
        ("stream", ""),
        ("gate", None),
        ("stop_at_end", False),
        ("warmup", ()),
    )

    def islive(self) -> bool:
        return True

    def start(self) -> None:
        super().start()
        self._pending: deque[BarMeta] = deque()
        self._warmup: deque[Bar] = deque(self.p.warmup)
        self._reset_delivery()

    @property
    def warmup_pending(self) -> int:
        """Warmup bars not loaded yet."""
        return len(self._warmup)

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
        if self._warmup:
            bar = self._warmup.popleft()
            _fill_lines(self, bar)
            self._pending.append(bar_meta(bar, warmup=True))
            return True
        source: StreamBarSource = self.p.source
        sb = source.pop_ready(self.p.stream)
        if sb is None:
            if self.p.stop_at_end and source.finished and source.drained(self.p.stream):
                return False
            return None
        _fill_lines(self, sb.bar)
        self._pending.append(bar_meta(sb.bar, sb.stream_id))
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
        if self.source.has_ready() or any(f.warmup_pending for f in self.feeds):
            return False
        # A bar Backtrader loaded and rewound (it was later than the step's time) is still to come.
        return all(len(f) >= f.buflen() for f in self.feeds)


class LiveFeedSet:
    """Builds the live feeds of one worker around one ``StreamBarSource``.

    With a ``handover`` instant, feeds first deliver their ``warmup`` bars (all ending at or
    before it) and their streams are read from the first bar ending after it; without one,
    streams are read from their beginning.
    """

    def __init__(
        self, source: StreamBarSource, *, stop_at_end: bool = False, on_idle: Callable[[], None] | None = None,
        warmup: Mapping[tuple[str, str], Sequence[Bar]] | None = None, handover: datetime | None = None,
    ) -> None:
        self.source = source
        self.stop_at_end = stop_at_end
        self.gate = StepGate(source, stop_at_end=stop_at_end, on_idle=on_idle)
        self.warmup = warmup or {}
        self.handover = handover

    @property
    def feeds(self) -> list[StreamBarFeed]:
        """Every feed made so far."""
        return self.gate.feeds

    def make_feed(self, symbol: str, timeframe: str) -> StreamBarFeed:
        """The feed of ``market:{symbol}:{timeframe}:stream``."""
        history = tuple(self.warmup.get((symbol, timeframe), ()))
        if self.handover is None:
            stream = self.source.subscribe(symbol, timeframe)
        else:
            # After the last warmup bar's id; without one, from far enough back that a bar straddling the
            # hand-over is read (no bar lasts longer). Bars the warmup already covers are skipped by the source.
            after = (bar_meta(history[-1]).stream_id if history
                     else (int((self.handover - _LONGEST_BAR).timestamp() * 1000), 0))
            stream = self.source.subscribe(symbol, timeframe, after=after, known_through=self.handover)
        _, tf, comp = FEED_TIMEFRAMES[timeframe]
        feed = StreamBarFeed(
            source=self.source, stream=stream, gate=self.gate, stop_at_end=self.stop_at_end,
            timeframe=tf, compression=comp, warmup=history,
        )
        self.gate.feeds.append(feed)
        return feed


# A daily bar lasts at most 25 hours (the session containing the autumn DST change).
_LONGEST_BAR: Final = timedelta(hours=26)


class ListBarFeed(_Delivery, bt.feed.DataBase):
    """A non-live feed over a list of bars of one symbol and timeframe, in time order.

    Plain lists rather than a DataFrame: Backtrader's PandasData reads every cell with ``iloc``,
    which costs more than the rest of a backtest step.
    """

    params = (
        ("bars", ()),
        ("meta", ()),
    )

    def start(self) -> None:
        super().start()
        self._next = 0
        self._reset_delivery()

    def _load(self) -> bool:
        if self._next >= len(self.p.bars):
            return False
        _fill_lines(self, self.p.bars[self._next])
        self._next += 1
        return True

    def _meta_from(self, index: int) -> BarMeta:
        return self.p.meta[index]


class ListFeedSet:
    """Builds non-live feeds from a collection of bars, for backtests over the same bars.

    Bars ending at or before ``warmup_until`` are warmup bars: indicators see them, strategies
    take no decision on them (as a live worker on its warmup history).
    """

    def __init__(self, bars: Iterable[Bar], *, warmup_until: datetime | None = None) -> None:
        self.by_stream: dict[tuple[str, str], list[Bar]] = {}
        self.warmup_until = warmup_until
        for bar in sorted(bars, key=lambda b: b.end):
            self.by_stream.setdefault((bar.symbol, bar.timeframe), []).append(bar)

    def make_feed(self, symbol: str, timeframe: str) -> ListBarFeed:
        """The feed of one symbol and timeframe (empty if there are no such bars)."""
        bars = tuple(self.by_stream.get((symbol, timeframe), ()))
        until = self.warmup_until
        meta = tuple(bar_meta(b, warmup=until is not None and b.end <= until) for b in bars)
        _, tf, comp = FEED_TIMEFRAMES[timeframe]
        return ListBarFeed(bars=bars, meta=meta, timeframe=tf, compression=comp)
