"""CME holidays and trading hours per product, from ``pandas-market-calendars``.

Two views of the exchange calendar:

- **CME trade dates** (``CME_TradeDate``): the days the exchange settles. On a holiday there is none,
  even when a product trades an abbreviated morning session (Thanksgiving, Good Friday with a jobs
  report); ``cme_holiday`` names the holiday.
- **A product's sessions** (``ROOT_CALENDARS``): the hours a root trades, holidays and early closes
  included. Equity index futures trade until 12:00 CT on Thanksgiving, grains are closed; a cache is
  checked against its own root's hours, and the Dagster schedules run on a day when any configured
  root trades (Pine books an abbreviated holiday session to that day). The library indexes a
  session by the local date of its close, which is Pine's trading day (``pine.sessions.SessionCalendar``).

Calendars are built on first use (the library's import and rule evaluation take about a second) and
kept for the process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Final

import pandas as pd

if TYPE_CHECKING:
    import pandas_market_calendars as mcal

TRADE_DATE_CALENDAR: Final = "CME_TradeDate"

# The library's calendar for each root Pine ships (data/contract_map.yml). A root not listed is checked
# against the CME trade dates with the standard Globex hours (17:00–16:00 CT).
ROOT_CALENDARS: Final[Mapping[str, str]] = {
    **dict.fromkeys(("ES", "NQ", "RTY"), "CME_Equity"),
    "YM": "CBOT_Equity",
    **dict.fromkeys(("6A", "6B", "6C", "6E", "6J", "6M", "6N", "6S"), "CME_Currency"),
    "CL": "CMEGlobex_CL",
    "NG": "CMEGlobex_NG",
    "PL": "CMEGlobex_PL",
    "GC": "CMEGlobex_GC",
    "SI": "CMEGlobex_SI",
    "HG": "CMEGlobex_HG",
    **dict.fromkeys(("ZC", "ZW"), "CMEGlobex_Grains"),
    "ZS": "CMEGlobex_Oilseeds",
    "ZB": "CBOT_Bond",
}

# The library names some rules by their validity ("Juneteenth Starting at 2022"): keep the holiday's name.
_RULE_SUFFIX = re.compile(r"\s+(starting|before|after|from|until|since)\b.*$", re.IGNORECASE)


@dataclass(frozen=True)
class MarketCalendar:
    """One exchange calendar of ``pandas-market-calendars`` (e.g. ``CME_Equity``), by trading day."""

    name: str

    @classmethod
    def for_root(cls, root: str) -> MarketCalendar:
        """The calendar of a root symbol's product (``ROOT_CALENDARS``; CME trade dates for others)."""
        return cls(ROOT_CALENDARS.get(root, TRADE_DATE_CALENDAR))

    @classmethod
    def trade_dates(cls) -> MarketCalendar:
        """The CME's settlement days (no trade date on any exchange holiday)."""
        return cls(TRADE_DATE_CALENDAR)

    def schedule(self, start: date, end: date) -> pd.DataFrame:
        """The library's schedule from ``start`` through ``end``: one row per trading day (UTC instants)."""
        return _calendar(self.name).schedule(start_date=start.isoformat(), end_date=end.isoformat())

    def trading_days(self, start: date, end: date) -> list[date]:
        """The trading days from ``start`` through ``end`` (the local dates of the session closes)."""
        return [ts.date() for ts in self.schedule(start, end).index]

    def is_trading_day(self, day: date) -> bool:
        """Whether ``day`` has a session (a weekend never has)."""
        return bool(self.trading_days(day, day))

    def holiday(self, day: date) -> str | None:
        """The holiday's name when weekday ``day`` has no session; None on a trading day or at a weekend."""
        return self.holidays(day, day).get(day)

    def holidays(self, start: date, end: date) -> dict[date, str]:
        """The weekdays from ``start`` through ``end`` without a session, with the holiday's name."""
        open_days = set(self.trading_days(start, end))
        closed = [d for d in (start + timedelta(days=i) for i in range((end - start).days + 1))
                  if d.weekday() < 5 and d not in open_days]
        if not closed:
            return {}
        rules = _calendar(self.name).regular_holidays
        names = rules.holidays(pd.Timestamp(start), pd.Timestamp(end), return_name=True) if rules else None
        named = {} if names is None else {ts.date(): _RULE_SUFFIX.sub("", str(n)) for ts, n in names.items()}
        # Ad-hoc closures (a national day of mourning, a hurricane) have no name in the library.
        return {d: named.get(d, "exchange closure") for d in closed}

    def open_intervals(self, start: date, end: date) -> list[tuple[datetime, datetime]]:
        """Trading intervals [open, close) of the sessions from ``start`` through ``end`` (UTC), breaks excluded."""
        frame = self.schedule(start, end)
        out: list[tuple[datetime, datetime]] = []
        for row in frame.itertuples(index=False):
            opened, closed = row.market_open.to_pydatetime(), row.market_close.to_pydatetime()
            pause, resume = getattr(row, "break_start", pd.NaT), getattr(row, "break_end", pd.NaT)
            # A break of zero length (equity index futures list one at 15:15 CT) is no break.
            if pd.isna(pause) or pd.isna(resume) or pause >= resume:
                out.append((opened, closed))
            else:
                out += [(opened, pause.to_pydatetime()), (resume.to_pydatetime(), closed)]
        return out

    def full_hours(self, start: date, end: date) -> set[datetime]:
        """UTC hour starts whose whole hour lies in a trading interval of the sessions ``start`` through ``end``.

        An hour the market is open for only part of (the open of grains at 19:00 CT is on the hour, their
        07:45 break is not) may lack trades without anything being wrong: it is not counted.
        """
        hours: set[datetime] = set()
        for opened, closed in self.open_intervals(start, end):
            t = opened.replace(minute=0, second=0, microsecond=0)
            if t < opened:
                t += timedelta(hours=1)
            while t + timedelta(hours=1) <= closed:
                hours.add(t)
                t += timedelta(hours=1)
        return hours


def cme_holiday(day: date) -> str | None:
    """The name of the CME holiday on ``day`` (a weekday without a CME trade date), else None."""
    return MarketCalendar.trade_dates().holiday(day)


@cache
def _calendar(name: str) -> mcal.MarketCalendar:
    import pandas_market_calendars as mcal  # about a second to import: only where a calendar is used

    return mcal.get_calendar(name)
