"""The bar message: the one format the hub publishes and workers consume (DESIGN.md)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

TIMEFRAMES: Final = ("1min", "hourly", "daily")

# The fields every bar message carries, in order (also the parquet cache columns).
FIELDS: Final = (
    "symbol",
    "timeframe",
    "timestamp",
    "end",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trade_count",
    "instrument_id",
    "contract_symbol",
)


class BarFormatError(ValueError):
    """A bar message that cannot be decoded; the text says which field and why."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar of a root symbol, built from the trades of one contract.

    ``timestamp`` is the bar start and ``end`` the bar end (exclusive), both UTC-aware.
    ``partial`` marks a bar flushed before its end (shutdown); ``corrected`` a bar that
    replaces one published earlier with the same ``timestamp``.
    """

    symbol: str
    timeframe: str
    timestamp: datetime
    end: datetime
    open: float
    high: float
    low: float
    close: float
    volume: int
    trade_count: int
    instrument_id: int
    contract_symbol: str
    partial: bool = False
    corrected: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: datetimes as ISO 8601 with offset."""
        # Written out rather than dataclasses.asdict(): asdict deep-copies every field and was
        # a third of the hub's replay time.
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "timestamp": self.timestamp.isoformat(),
            "end": self.end.isoformat(),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "trade_count": self.trade_count,
            "instrument_id": self.instrument_id,
            "contract_symbol": self.contract_symbol,
            "partial": self.partial,
            "corrected": self.corrected,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def with_flags(self, *, partial: bool | None = None, corrected: bool | None = None) -> Bar:
        return replace(
            self,
            partial=self.partial if partial is None else partial,
            corrected=self.corrected if corrected is None else corrected,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Bar:
        """Validate and build a bar; raises BarFormatError naming the bad field."""
        if not isinstance(d, dict):
            raise BarFormatError(f"bar message must be a JSON object, got {type(d).__name__}")
        missing = [k for k in FIELDS if k not in d]
        if missing:
            raise BarFormatError(f"bar message is missing field(s): {', '.join(missing)}")
        if d["timeframe"] not in TIMEFRAMES:
            raise BarFormatError(f"bar field 'timeframe' must be one of {TIMEFRAMES}, got {d['timeframe']!r}")
        try:
            start = _parse_ts(d["timestamp"], "timestamp")
            end = _parse_ts(d["end"], "end")
            prices = {k: _finite(d[k], k) for k in ("open", "high", "low", "close")}
            volume = int(d["volume"])
            count = int(d["trade_count"])
            iid = int(d["instrument_id"])
        except (TypeError, ValueError) as exc:
            raise BarFormatError(f"bad bar message for {d.get('symbol')!r}: {exc}") from exc
        if not prices["low"] <= min(prices["open"], prices["close"]) <= max(
            prices["open"], prices["close"]
        ) <= prices["high"]:
            raise BarFormatError(f"bar {d['symbol']} {d['timestamp']}: OHLC out of order {prices}")
        if end <= start:
            raise BarFormatError(f"bar {d['symbol']} {d['timestamp']}: end {d['end']} is not after start")
        return cls(
            symbol=str(d["symbol"]),
            timeframe=d["timeframe"],
            timestamp=start,
            end=end,
            volume=volume,
            trade_count=count,
            instrument_id=iid,
            contract_symbol=str(d["contract_symbol"]),
            partial=bool(d.get("partial", False)),
            corrected=bool(d.get("corrected", False)),
            **prices,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Bar:
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BarFormatError(f"bar message is not valid UTF-8 JSON: {exc}") from exc
        return cls.from_dict(d)


def _parse_ts(value: Any, field: str) -> datetime:
    ts = datetime.fromisoformat(str(value))
    if ts.tzinfo is None:
        raise ValueError(f"field '{field}' must carry a UTC offset, got {value!r}")
    return ts.astimezone(UTC)


def _finite(value: Any, field: str) -> float:
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"field '{field}' is not a finite number: {value!r}")
    return x
