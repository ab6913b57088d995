"""Trades → bars: the record handler shared by DBN replay and the live feed.

Contracts. ``SymbolMappingMsg`` records in the stream map instrument ids to raw symbols
(``ESM4``). Only outright contracts of the configured roots are aggregated; calendar spreads
(``ESM4-ESU4``), roots that are not configured and trades of unmapped instruments are ignored
and counted in :attr:`Aggregator.ignored`.

Active contract. Each root's bars come from one contract per trading session:

* the outright with the highest traded volume in the root's previous session (ties go to the
  nearer expiry) — Databento's volume roll rule (as in ``ES.v.0``), lagged one session so the
  choice is known when the session opens;
* in the first session seen, the nearest expiry among the root's mapped outrights (a parent
  subscription maps only instruments that are still trading, so none of them has expired).

Bars. One-minute bars bucket trades by ``floor(ts_recv, 1 min)`` (Databento's ``ohlcv-1m``
rule; a minute without trades has no bar), hourly bars by ``floor(ts_recv, 1 h)`` UTC and
daily bars by the session of the configured :class:`~pine.sessions.SessionCalendar`. A bar's
timestamp is its bucket start and its end the bucket end (daily: session start and close).

Clock. The data clock is the latest ``ts_recv`` of any trade (or ``ts_event`` of a heartbeat).
Whenever it enters a new minute, every open bar whose end is at or before that minute is
closed and returned with the minute as watermark — even when there is none, so that time
passes for consumers. :meth:`Aggregator.flush` closes what is still open at the end of data.
A trade received before the watermark arrives too late for its bars and is counted as late.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import databento_dbn as dbn

from pine.bars import Bar
from pine.contracts import is_spread, parse_contract_symbol
from pine.sessions import SessionCalendar

NS: Final = 1_000_000_000
MINUTE_NS: Final = 60 * NS
HOUR_NS: Final = 3600 * NS
PRICE_SCALE: Final = float(dbn.FIXED_PRICE_SCALE)

_TradeMsg: Final = dbn.TradeMsg
_SymbolMappingMsg: Final = dbn.SymbolMappingMsg
_SystemMsg: Final = dbn.SystemMsg
_UNDEF_PRICE: Final = dbn.UNDEF_PRICE


@dataclass(frozen=True, slots=True)
class Boundary:
    """Bars closed when the data clock reached ``watermark``: every bar ending by then is in ``bars``."""

    watermark: datetime
    bars: list[Bar]


class _OpenBar:
    __slots__ = ("close", "count", "end", "high", "iid", "low", "open", "start", "volume")

    def __init__(self, start: int, end: int, price: int, size: int, iid: int) -> None:
        self.start = start
        self.end = end
        self.open = self.high = self.low = self.close = price
        self.volume = size
        self.count = 1
        self.iid = iid


@dataclass(eq=False)
class _Root:
    name: str
    contracts: dict[int, tuple[int, int]] = field(default_factory=dict)  # iid → (year, month)
    active: int | None = None
    session_start: int = -1
    session_end: int = -1
    session_volume: Counter[int] = field(default_factory=Counter)
    minute: _OpenBar | None = None
    hour: _OpenBar | None = None
    day: _OpenBar | None = None


def _utc(ns: int) -> datetime:
    """The whole second of ``ns`` (every bar bound is a whole second)."""
    return datetime.fromtimestamp(ns // NS, UTC)


class Aggregator:
    """Turns a stream of DBN records into closed bars (see the module docstring for the rules)."""

    def __init__(self, roots: Iterable[str], calendar: SessionCalendar) -> None:
        if calendar.close.minute or calendar.close.second:
            # Hourly bars must never straddle two sessions (whose active contracts may differ).
            raise ValueError(f"the session close must be on the hour, got {calendar.close}")
        self.calendar = calendar
        self._roots = {r: _Root(r) for r in sorted(roots)}
        self._outrights: dict[int, _Root] = {}  # iid → root of an aggregated outright contract
        self._other: dict[int, str] = {}  # iid → reason its trades are ignored
        self._symbols: dict[int, str] = {}
        self._clock = 0
        self._watermark = -1
        self._next_minute = 0
        self._session = (0, 0)
        self.records = 0
        self.trades = 0
        self.bars_closed = 0
        self.ignored: Counter[str] = Counter()

    @property
    def clock(self) -> datetime | None:
        """The data clock (latest ``ts_recv``), None before the first trade."""
        return _utc(self._clock) + timedelta(microseconds=self._clock % NS // 1000) if self._clock else None

    def on_record(self, rec: Any) -> Boundary | None:
        """Handle any DBN record; returns the bars closed by the clock reaching a new minute, if it did."""
        self.records += 1
        kind = type(rec)
        if kind is _TradeMsg:
            return self.on_trade(rec.instrument_id, rec.ts_recv, rec.price, rec.size)
        if kind is _SymbolMappingMsg:
            self.on_mapping(rec.instrument_id, rec.stype_out_symbol, rec.ts_event)
        elif kind is _SystemMsg and rec.is_heartbeat():
            return self.advance(rec.ts_event)
        return None

    def on_mapping(self, iid: int, raw_symbol: str, ts_event: int) -> None:
        """Register instrument ``iid`` as ``raw_symbol`` (``ts_event`` resolves one-digit years)."""
        self._symbols[iid] = raw_symbol
        self._outrights.pop(iid, None)
        self._other.pop(iid, None)
        for root in self._roots.values():
            root.contracts.pop(iid, None)
        if is_spread(raw_symbol):
            self._other[iid] = "spread"
            return
        parsed = parse_contract_symbol(raw_symbol, reference_year=_utc(ts_event).year)
        root = self._roots.get(parsed.root) if parsed else None
        if parsed is None or root is None:
            self._other[iid] = "unknown_root"
            return
        self._outrights[iid] = root
        root.contracts[iid] = (parsed.year, parsed.month)

    def on_trade(self, iid: int, ts: int, price: int, size: int) -> Boundary | None:
        """Aggregate one trade (fixed-point price); returns closed bars if the clock entered a new minute."""
        self.trades += 1
        boundary = self.advance(ts) if ts >= self._next_minute else None
        if ts < self._watermark:
            self.ignored["late"] += 1
            return boundary
        if price == _UNDEF_PRICE:
            self.ignored["undef_price"] += 1
            return boundary
        root = self._outrights.get(iid)
        if root is None:
            self.ignored[self._other.get(iid, "unmapped")] += 1
            return boundary
        if ts >= root.session_end:
            self._start_session(root, ts)
        root.session_volume[iid] += size
        if iid != root.active:
            self.ignored["inactive_contract"] += 1
            return boundary

        start = ts - ts % MINUTE_NS
        bar = root.minute
        if bar is None:
            root.minute = _OpenBar(start, start + MINUTE_NS, price, size, iid)
        else:
            _add(bar, price, size)
        bar = root.hour
        if bar is None:
            start = ts - ts % HOUR_NS
            root.hour = _OpenBar(start, start + HOUR_NS, price, size, iid)
        else:
            _add(bar, price, size)
        bar = root.day
        if bar is None:
            root.day = _OpenBar(root.session_start, root.session_end, price, size, iid)
        else:
            _add(bar, price, size)
        return boundary

    def advance(self, ts: int) -> Boundary | None:
        """Move the data clock to ``ts``; closes bars if that enters a new minute."""
        if ts > self._clock:
            self._clock = ts
        if ts < self._next_minute:
            return None
        watermark = ts - ts % MINUTE_NS
        self._watermark = watermark
        self._next_minute = watermark + MINUTE_NS
        return Boundary(_utc(watermark), self._close(lambda bar: bar.end <= watermark, partial=False))

    def flush(self) -> Boundary:
        """Close every open bar at the end of data, marked partial (the clock has not reached their end).

        The watermark is the latest end of those bars: no bar will follow.
        """
        bars = self._close(lambda bar: True, partial=True)
        latest = max([b.end for b in bars], default=_utc(max(self._watermark, 0)))
        return Boundary(latest, bars)

    def _close(self, due: Callable[[_OpenBar], bool], *, partial: bool) -> list[Bar]:
        bars: list[Bar] = []
        for root in self._roots.values():
            for slot, timeframe in (("minute", "1min"), ("hour", "hourly"), ("day", "daily")):
                bar = getattr(root, slot)
                if bar is not None and due(bar):
                    bars.append(self._bar(root.name, timeframe, bar, partial=partial))
                    setattr(root, slot, None)
        self.bars_closed += len(bars)
        return bars

    def _bar(self, root: str, timeframe: str, bar: _OpenBar, *, partial: bool) -> Bar:
        return Bar(
            symbol=root,
            timeframe=timeframe,
            timestamp=_utc(bar.start),
            end=_utc(bar.end),
            open=bar.open / PRICE_SCALE,
            high=bar.high / PRICE_SCALE,
            low=bar.low / PRICE_SCALE,
            close=bar.close / PRICE_SCALE,
            volume=bar.volume,
            trade_count=bar.count,
            instrument_id=bar.iid,
            contract_symbol=self._symbols[bar.iid],
            partial=partial,
        )

    def _start_session(self, root: _Root, ts: int) -> None:
        """Enter the session containing ``ts``: pick the root's active contract for it."""
        if not self._session[0] <= ts < self._session[1]:
            start, end = self.calendar.session_bounds(_utc(ts))  # bounds are whole seconds: flooring is exact
            self._session = (int(start.timestamp()) * NS, int(end.timestamp()) * NS)
        root.session_start, root.session_end = self._session
        contracts = root.contracts
        if root.session_volume:
            root.active = max(root.session_volume, key=lambda i: (root.session_volume[i], _nearer(contracts.get(i))))
        elif root.active is None:
            root.active = min(contracts, key=lambda i: contracts[i])
        root.session_volume = Counter()


def _nearer(expiry: tuple[int, int] | None) -> tuple[int, int]:
    """Sort key preferring the nearer expiry among equal volumes."""
    year, month = expiry or (9999, 12)
    return -year, -month


def _add(bar: _OpenBar, price: int, size: int) -> None:
    if price > bar.high:
        bar.high = price
    elif price < bar.low:
        bar.low = price
    bar.close = price
    bar.volume += size
    bar.count += 1
