"""Where a live hub's first subscription replays from, so that the bars it starts with are complete.

A hub that starts (or restarts) mid-session has not seen the session's earlier trades: without a
replay its daily and hourly bars would hold only the trades since it connected. Its first
subscription therefore asks for intraday replay from the earlier of

* the start of the current CME session (the configured session calendar), and
* the start of the earliest *unfinished* bar in the streams: a bar that was open when the previous
  hub stopped. Per root, the newest minute bar in the streams tells when that was; the minute,
  hourly and daily bars containing it are unfinished unless their stream holds a complete version
  (a graceful stop published them marked ``partial``; a crash published nothing).

The normal record path then rebuilds the bars: those already complete in the streams are skipped by
the publisher's id rule, a complete bar whose stream holds it partial replaces it as a correction
(:mod:`pine.bus`), and bars not published yet are published.

Databento's intraday replay covers the last 24 hours. An unfinished bar that started earlier cannot
be rebuilt: it is named in a warning and left as the streams have it (the aggregator never hands
out a bar that starts before the data does, :meth:`hub.aggregator.Aggregator.start_data_at`). The
current session's start is less than 24 hours back whenever CME trades: sessions last 24 hours,
except the 23- and 25-hour ones of a DST change, which falls on a weekend.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pine.bus import BarPublisher
from pine.sessions import SessionCalendar

NS: Final = 1_000_000_000
REPLAY_WINDOW_NS: Final = 24 * 3600 * NS  # how far back Databento's intraday replay reaches


def _ns(ts: datetime) -> int:
    return int(ts.timestamp()) * NS  # bar and session bounds are whole seconds


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, UTC).isoformat()


@dataclass(frozen=True)
class UnfinishedBar:
    """A bar that was open when the previous hub stopped; ``partial``: its stream holds it marked partial
    (otherwise not at all)."""

    symbol: str
    timeframe: str
    start: int  # ns
    partial: bool

    def __str__(self) -> str:
        return f"{self.symbol} {self.timeframe} {_iso(self.start)}"


@dataclass
class StartupReplay:
    """Where the first subscription replays from and why; ``trades`` is filled in once it has caught up."""

    start: int | None  # ns; None: there is nothing before now to replay
    reason: str
    unfinished: list[UnfinishedBar] = field(default_factory=list)
    lost: list[UnfinishedBar] = field(default_factory=list)  # unfinished, but older than the replay window
    trades: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Heartbeat form."""
        return {
            "start": _iso(self.start) if self.start is not None else None,
            "reason": self.reason,
            "unfinished": [str(u) for u in self.unfinished],
            "not_recoverable": [str(u) for u in self.lost],
            "trades": self.trades,
        }


def unfinished_bars(publisher: BarPublisher, roots: Iterable[str], calendar: SessionCalendar) -> list[UnfinishedBar]:
    """The bars of ``roots`` that were open when the hub publishing to these streams last stopped.

    Raises the Redis error if the streams cannot be read.
    """
    out: list[UnfinishedBar] = []
    for root in roots:
        minute = publisher.newest_bar(root, "1min")
        if minute is None:  # nothing published yet
            continue
        last = minute.timestamp
        containing = {"1min": last, "hourly": last.replace(minute=0), "daily": calendar.session_bounds(last)[0]}
        for timeframe, start in containing.items():
            newest = minute if timeframe == "1min" else publisher.newest_bar(root, timeframe)
            there = newest is not None and newest.timestamp == start
            if newest is None or newest.timestamp < start or (there and newest.partial):
                out.append(UnfinishedBar(root, timeframe, _ns(start), there))
    return out


def plan_startup_replay(now: int, calendar: SessionCalendar, unfinished: list[UnfinishedBar]) -> StartupReplay:
    """Where the first subscription at ``now`` (ns) replays from (see the module docstring)."""
    horizon = now - REPLAY_WINDOW_NS
    session_start = _ns(calendar.session_bounds(datetime.fromtimestamp(now // NS, UTC))[0])
    if session_start >= horizon:
        start, reason = session_start, "the start of the current session"
    else:  # a 25-hour session (DST change): no trading in its first hour
        start, reason = horizon, "24 hours back (the intraday replay window)"
    reachable = [u for u in unfinished if u.start >= horizon]
    lost = [u for u in unfinished if u.start < horizon]
    if reachable:
        earliest = min(reachable, key=lambda u: u.start)
        if earliest.start < start:
            start, reason = earliest.start, f"the start of the unfinished bar {earliest}"
    if not 0 < start < now:  # a clock near the epoch (tests), or a hub started right on the session open
        return StartupReplay(None, "nothing before now to replay", unfinished, lost)
    return StartupReplay(start, reason, unfinished, lost)
