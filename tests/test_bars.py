"""The bar message: JSON round trip and clear errors for malformed messages."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from pine.bars import Bar, BarFormatError

START = datetime(2024, 3, 11, 13, 30, tzinfo=UTC)
BAR = Bar("ES", "1min", START, START + timedelta(minutes=1), 5100.25, 5101.0, 5099.75, 5100.5, 42, 7, 1234, "ESM4")


def test_json_round_trip_keeps_every_field() -> None:
    d = json.loads(BAR.to_json())
    assert set(d) == {f.name for f in fields(Bar)}
    assert d["timestamp"] == "2024-03-11T13:30:00+00:00"
    assert Bar.from_json(BAR.to_json()) == BAR
    assert Bar.from_json(BAR.with_flags(corrected=True).to_json()).corrected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"volume": None}, "bad bar message"),
        ({"timeframe": "5min"}, "timeframe"),
        ({"timestamp": "2024-03-11T13:30:00"}, "UTC offset"),
        ({"high": 5000.0}, "OHLC out of order"),
        ({"close": "nan"}, "finite"),
        ({"end": "2024-03-11T13:29:00+00:00"}, "not after start"),
    ],
)
def test_malformed_fields_are_named(change: dict[str, object], message: str) -> None:
    d = {**BAR.to_dict(), **change}
    with pytest.raises(BarFormatError, match=message):
        Bar.from_dict(d)


def test_missing_fields_and_non_json_are_reported() -> None:
    d = BAR.to_dict()
    del d["contract_symbol"], d["low"]
    with pytest.raises(BarFormatError, match=r"missing field.*low.*contract_symbol"):
        Bar.from_dict(d)
    with pytest.raises(BarFormatError, match="not valid UTF-8 JSON"):
        Bar.from_json(b"\xff{")
    with pytest.raises(BarFormatError, match="JSON object"):
        Bar.from_json("[1, 2]")
