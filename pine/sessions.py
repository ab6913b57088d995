"""CME trading sessions: the daily bar closes at 17:00 America/Chicago (DST-correct).

The legacy system closed sessions at a fixed 23:00 UTC, which is right only in
winter; a fixed UTC hour remains available for parity (``sessions.fixed_utc_close_hour``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class SessionCalendar:
    """Maps instants to the trading session (start, end] they belong to."""

    close: time = time(17, 0)
    timezone: str = "America/Chicago"

    @classmethod
    def fixed_utc(cls, hour: int) -> SessionCalendar:
        return cls(close=time(hour, 0), timezone="UTC")

    @property
    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def session_end(self, ts: datetime) -> datetime:
        """The first session close strictly after ``ts`` (UTC-aware result)."""
        local = ts.astimezone(self._tz)
        end = datetime.combine(local.date(), self.close, tzinfo=self._tz)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.close, tzinfo=self._tz)
        return end.astimezone(UTC)

    def session_bounds(self, ts: datetime) -> tuple[datetime, datetime]:
        """(start, end) of the session containing ``ts``; start inclusive, end exclusive."""
        end = self.session_end(ts)
        local_end = end.astimezone(self._tz)
        start = datetime.combine(local_end.date() - timedelta(days=1), self.close, tzinfo=self._tz)
        return start.astimezone(UTC), end

    def trading_day(self, ts: datetime) -> date:
        """The CME trading day of ``ts``: the local date of its session close."""
        return self.session_end(ts).astimezone(self._tz).date()
