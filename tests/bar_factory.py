"""Deterministic synthetic bars, published through ``pine.bus.BarPublisher`` as the hub would.

Sparse seeded minute bars per session (a minute without trades has no bar), hourly bars
bucketed by UTC hour and daily bars per CME session (17:00 America/Chicago close, via
``SessionCalendar``), published boundary by boundary with the clock watermark and finally
``state='finished'``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import redis

from pine.bars import Bar
from pine.bus import BarPublisher
from pine.sessions import SessionCalendar

CALENDAR = SessionCalendar()
_CHICAGO = ZoneInfo("America/Chicago")


@dataclass(frozen=True)
class SymbolSpec:
    """Price level and tick of one synthetic instrument."""

    symbol: str
    price: float
    tick: float
    contract: str
    instrument_id: int


def _round(x: float, tick: float) -> float:
    return round(round(x / tick) * tick, 10)


def minute_bars(
    spec: SymbolSpec, days: Sequence[date], *, seed: int, per_session: int = 40, sigma: float = 0.0015
) -> list[Bar]:
    """Seeded random-walk minute bars at ``per_session`` random minutes of each session.

    ``sigma`` is the relative close-to-close move per bar. Minutes fall in the session's
    trading hours (the 16:00–17:00 Chicago maintenance hour has none).
    """
    rng = random.Random(f"{seed}:{spec.symbol}")
    price = spec.price
    bars: list[Bar] = []
    for day in days:
        start, end = CALENDAR.session_bounds(datetime.combine(day, time(12), tzinfo=_CHICAGO))
        minutes = int((end - start).total_seconds() // 60) - 60
        for offset in sorted(rng.sample(range(minutes), per_session)):
            ts = start + timedelta(minutes=offset)
            open_ = _round(price * (1 + rng.gauss(0, sigma / 4)), spec.tick)
            close = _round(open_ * (1 + rng.gauss(0, sigma)), spec.tick)
            high = _round(max(open_, close) * (1 + abs(rng.gauss(0, sigma / 3))), spec.tick)
            low = _round(min(open_, close) * (1 - abs(rng.gauss(0, sigma / 3))), spec.tick)
            bars.append(Bar(
                symbol=spec.symbol, timeframe="1min", timestamp=ts, end=ts + timedelta(minutes=1),
                open=open_, high=max(high, open_, close), low=min(low, open_, close), close=close,
                volume=rng.randint(1, 50), trade_count=rng.randint(1, 20),
                instrument_id=spec.instrument_id, contract_symbol=spec.contract,
            ))
            price = close
    return bars


def _combine(group: Sequence[Bar], timeframe: str, start: datetime, end: datetime) -> Bar:
    return Bar(
        symbol=group[0].symbol, timeframe=timeframe, timestamp=start, end=end,
        open=group[0].open, high=max(b.high for b in group), low=min(b.low for b in group), close=group[-1].close,
        volume=sum(b.volume for b in group), trade_count=sum(b.trade_count for b in group),
        instrument_id=group[-1].instrument_id, contract_symbol=group[-1].contract_symbol,
    )


def aggregate(minutes: Sequence[Bar]) -> list[Bar]:
    """Hourly (UTC hour buckets) and daily (session) bars of one symbol's minute bars."""
    hours: dict[datetime, list[Bar]] = {}
    sessions: dict[tuple[datetime, datetime], list[Bar]] = {}
    for b in minutes:
        hours.setdefault(b.timestamp.replace(minute=0, second=0, microsecond=0), []).append(b)
        sessions.setdefault(CALENDAR.session_bounds(b.timestamp), []).append(b)
    out = [_combine(g, "hourly", h, h + timedelta(hours=1)) for h, g in hours.items()]
    out += [_combine(g, "daily", s, e) for (s, e), g in sessions.items()]
    return out


def market(specs: Iterable[SymbolSpec], days: Sequence[date], *, seed: int, **kwargs: float) -> list[Bar]:
    """Minute, hourly and daily bars of every symbol, sorted by end."""
    bars: list[Bar] = []
    for spec in specs:
        minutes = minute_bars(spec, days, seed=seed, **kwargs)  # type: ignore[arg-type]
        bars += minutes + aggregate(minutes)
    return sorted(bars, key=lambda b: (b.end, b.symbol, b.timeframe))


def boundaries(bars: Iterable[Bar]) -> list[tuple[datetime, list[Bar]]]:
    """Bars grouped by end time, in time order: what the hub publishes at each boundary."""
    groups: dict[datetime, list[Bar]] = {}
    for b in bars:
        groups.setdefault(b.end.astimezone(UTC), []).append(b)
    return sorted(groups.items())


def publish(client: redis.Redis, bars: Iterable[Bar], *, finish: bool = True) -> int:
    """Publish ``bars`` boundary by boundary (watermark = boundary); then ``finished`` if asked."""
    publisher = BarPublisher(client)
    last: datetime | None = None
    for end, group in boundaries(bars):
        publisher.publish(group, end)
        last = end
    if finish:
        publisher.publish([], last or datetime.now(UTC), state="finished")
    return publisher.published
