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

Order. A bar's open and close are the trades with the smallest and the largest ``ts_recv``
(ties: the first and the last to arrive), so a bar does not depend on the order trades arrive in.

Clock. The data clock is the latest ``ts_recv`` of any trade (or ``ts_event`` of a heartbeat).
Whenever it enters a new minute, every open bar whose end is at or before that minute is
closed and returned with the minute as watermark — even when there is none, so that time
passes for consumers. The live hub also closes minutes by the wall clock
(:meth:`Aggregator.close_due`). :meth:`Aggregator.flush` closes what is still open at the end of data.

Data start. A live hub's data begins where its first replay starts (or when it connected):
:meth:`Aggregator.start_data_at`. A bar that starts earlier misses the trades before that
instant, so it is never handed out — neither closed, flushed nor corrected — and is counted in
:attr:`Aggregator.incomplete_bars`; a version published by an earlier run stays as it is.

Late trades. A trade received before the watermark arrives too late for its bars. Replay
counts and ignores it. With ``correction_window_ns`` (live), closed bars stay correctable for
that long: a late trade is added to its bars (or makes a bar for a minute that had none) and
:meth:`Aggregator.take_corrections` returns every closed bar that changed, marked ``corrected``.
"""

from __future__ import annotations

from collections import Counter, deque
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
_TIMEFRAMES: Final = {"minute": "1min", "hour": "hourly", "day": "daily"}  # _Root slot → bar timeframe
# Sessions whose active contract is remembered for late trades (the current one and the one before).
_SESSIONS_KEPT: Final = 2


@dataclass(frozen=True, slots=True)
class Boundary:
    """Bars closed when the data clock reached ``watermark``: every bar ending by then is in ``bars``."""

    watermark: datetime
    bars: list[Bar]


class _OpenBar:
    __slots__ = ("close", "count", "end", "first", "high", "iid", "last", "low", "open", "start", "volume")

    def __init__(self, start: int, end: int, price: int, size: int, iid: int, ts: int) -> None:
        self.start = start
        self.end = end
        self.open = self.high = self.low = self.close = price
        self.volume = size
        self.count = 1
        self.iid = iid
        self.first = self.last = ts  # ts_recv of the open and of the close trade


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
    last_trade: int = 0  # ts_recv of the latest aggregated trade
    # Active contract of recent sessions by session start: late trades go to their session's contract.
    actives: dict[int, int] = field(default_factory=dict)


def _utc(ns: int) -> datetime:
    """The whole second of ``ns`` (every bar bound is a whole second)."""
    return datetime.fromtimestamp(ns // NS, UTC)


class Aggregator:
    """Turns a stream of DBN records into closed bars (see the module docstring for the rules)."""

    def __init__(self, roots: Iterable[str], calendar: SessionCalendar, *, correction_window_ns: int = 0) -> None:
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
        self.correction_window_ns = correction_window_ns
        self.late_trades = 0
        self._data_start = 0
        self.incomplete_bars = 0
        # Closed bars kept correctable, by (root, slot, start), and the version last handed out.
        self._closed: dict[tuple[str, str, int], _OpenBar] = {}
        self._closing_order: deque[tuple[str, str, int]] = deque()  # keys of _closed, oldest end first
        self._handed_out: dict[tuple[str, str, int], Bar] = {}
        self._dirty: set[tuple[str, str, int]] = set()

    @property
    def roots(self) -> list[str]:
        """The aggregated roots."""
        return list(self._roots)

    def last_trade(self, root: str) -> int:
        """``ts_recv`` (ns) of the latest trade aggregated for ``root``, 0 if none."""
        return self._roots[root].last_trade

    def active_contract(self, root: str) -> str | None:
        """Raw symbol of the contract ``root``'s bars are built from in the current session."""
        active = self._roots[root].active
        return self._symbols.get(active) if active is not None else None

    def start_data_at(self, ns: int) -> None:
        """Trades before ``ns`` (ns) are not in the data: bars that start earlier are never handed out."""
        self._data_start = ns

    @property
    def watermark_ns(self) -> int:
        """Every bar ending at or before this instant (ns) has been closed; -1 before the first."""
        return self._watermark

    @property
    def next_boundary_ns(self) -> int:
        """The minute boundary (ns) whose arrival closes bars next."""
        return self._next_minute

    @property
    def has_corrections(self) -> bool:
        """Whether late trades changed closed bars since :meth:`take_corrections` was last called."""
        return bool(self._dirty)

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
        if ts >= self._next_minute:
            boundary = self.advance(ts)
        else:
            boundary = None
            if ts > self._clock:
                self._clock = ts
        if ts < self._watermark:
            self._late(iid, ts, price, size)
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
        root.last_trade = ts

        start = ts - ts % MINUTE_NS
        bar = root.minute
        if bar is None:
            root.minute = _OpenBar(start, start + MINUTE_NS, price, size, iid, ts)
        else:
            _add(bar, price, size, ts)
        bar = root.hour
        if bar is None:
            start = ts - ts % HOUR_NS
            root.hour = _OpenBar(start, start + HOUR_NS, price, size, iid, ts)
        else:
            _add(bar, price, size, ts)
        bar = root.day
        if bar is None:
            root.day = _OpenBar(root.session_start, root.session_end, price, size, iid, ts)
        else:
            _add(bar, price, size, ts)
        return boundary

    def _late(self, iid: int, ts: int, price: int, size: int) -> None:
        """A trade for a minute already closed: correct its bars if they are still correctable."""
        self.late_trades += 1
        if not self.correction_window_ns:
            self.ignored["late"] += 1
            return
        root = self._outrights.get(iid)
        if price == _UNDEF_PRICE or root is None:
            self.ignored["undef_price" if root is not None else self._other.get(iid, "unmapped")] += 1
            return
        if ts < self._watermark - self.correction_window_ns:
            self.ignored["late_uncorrectable"] += 1
            return
        if root.session_start <= ts < root.session_end:
            session = root.session_start, root.session_end
            root.session_volume[iid] += size
        else:  # an earlier session: its contract choice is made, only its bars can change
            session = self._bounds(ts)
        if iid != root.actives.get(session[0]):
            self.ignored["inactive_contract"] += 1
            return
        minute, hour = ts - ts % MINUTE_NS, ts - ts % HOUR_NS
        for slot, start, end in (("minute", minute, minute + MINUTE_NS), ("hour", hour, hour + HOUR_NS),
                                 ("day", *session)):
            bar = getattr(root, slot)
            if bar is not None and bar.start == start:
                _add(bar, price, size, ts)
            elif end > self._watermark and bar is None:  # its period is still open: open its bar now
                setattr(root, slot, _OpenBar(start, end, price, size, iid, ts))
            else:
                key = (root.name, slot, start)
                closed = self._closed.get(key)
                if closed is None:  # a period that had no trade so far gets its first bar, late
                    self._closed[key] = _OpenBar(start, end, price, size, iid, ts)
                    self._closing_order.append(key)  # out of end order: forgotten a little later
                else:
                    _add(closed, price, size, ts)
                self._dirty.add(key)

    def take_corrections(self) -> list[Bar]:
        """Closed bars changed by late trades since the last call, marked ``corrected`` (unchanged ones left out)."""
        out: list[Bar] = []
        for key in sorted(self._dirty, key=lambda k: (k[2], k[0], k[1])):
            bar = self._closed.get(key)
            if bar is None or key[2] < self._data_start:  # a late trade of a bar that misses earlier ones
                continue
            fresh = self._bar(key[0], _TIMEFRAMES[key[1]], bar, partial=False)
            if fresh != self._handed_out.get(key):
                self._handed_out[key] = fresh
                out.append(fresh.with_flags(corrected=True))
        self._dirty.clear()
        return out

    def advance(self, ts: int) -> Boundary | None:
        """Move the data clock to ``ts``; closes bars if that enters a new minute."""
        if ts > self._clock:
            self._clock = ts
        if ts < self._next_minute:
            return None
        return self._enter_minute(ts - ts % MINUTE_NS)

    def close_due(self, now: int) -> Boundary | None:
        """Wall-clock closing (live): close the bars ending by the minute ``now`` (ns) is in; the data clock stays."""
        if now < self._next_minute:
            return None
        return self._enter_minute(now - now % MINUTE_NS)

    def _enter_minute(self, watermark: int) -> Boundary:
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
        retain = self.correction_window_ns and not partial
        for root in self._roots.values():
            for slot, timeframe in _TIMEFRAMES.items():
                bar = getattr(root, slot)
                if bar is None or not due(bar):
                    continue
                setattr(root, slot, None)
                if bar.start < self._data_start:
                    self.incomplete_bars += 1
                    continue
                closed = self._bar(root.name, timeframe, bar, partial=partial)
                bars.append(closed)
                if retain:
                    key = (root.name, slot, bar.start)
                    self._closed[key] = bar
                    self._handed_out[key] = closed
                    self._closing_order.append(key)
        self.bars_closed += len(bars)
        if retain:
            self._forget_closed()
        return bars

    def _forget_closed(self) -> None:
        """Drop closed bars older than the correction window (a correction not yet taken is kept until it is).

        Bars close in the order of their ends, so the oldest are at the front of the closing order.
        """
        horizon = self._watermark - self.correction_window_ns
        order, closed = self._closing_order, self._closed
        while order and order[0] not in self._dirty and closed[order[0]].end <= horizon:
            key = order.popleft()
            del closed[key]
            self._handed_out.pop(key, None)

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

    def _bounds(self, ts: int) -> tuple[int, int]:
        """(start, end) in ns of the session containing ``ts``."""
        start, end = self.calendar.session_bounds(_utc(ts))  # bounds are whole seconds: flooring is exact
        return int(start.timestamp()) * NS, int(end.timestamp()) * NS

    def _start_session(self, root: _Root, ts: int) -> None:
        """Enter the session containing ``ts``: pick the root's active contract for it."""
        if not self._session[0] <= ts < self._session[1]:
            self._session = self._bounds(ts)
        root.session_start, root.session_end = self._session
        contracts = root.contracts
        if root.session_volume:
            root.active = max(root.session_volume, key=lambda i: (root.session_volume[i], _nearer(contracts.get(i))))
        elif root.active is None:
            root.active = min(contracts, key=lambda i: contracts[i])
        root.session_volume = Counter()
        if self.correction_window_ns:
            root.actives[root.session_start] = root.active
            for old in sorted(root.actives)[:-_SESSIONS_KEPT]:
                del root.actives[old]


def _nearer(expiry: tuple[int, int] | None) -> tuple[int, int]:
    """Sort key preferring the nearer expiry among equal volumes."""
    year, month = expiry or (9999, 12)
    return -year, -month


def _add(bar: _OpenBar, price: int, size: int, ts: int) -> None:
    if price > bar.high:
        bar.high = price
    elif price < bar.low:
        bar.low = price
    if ts >= bar.last:
        bar.close = price
        bar.last = ts
    elif ts < bar.first:
        bar.open = price
        bar.first = ts
    bar.volume += size
    bar.count += 1
