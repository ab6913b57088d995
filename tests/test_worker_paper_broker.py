"""Paper fills, commissions, slippage and exits of the IBS strategy on hand-made bars; the registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pine.bars import Bar
from pine.config import load_config
from pine.trade_records import TradeRecord
from tests.bar_factory import aggregate
from tests.worker_support import STRATEGY, write_config
from workers.engine import StrategySetupError, resolve_strategy, run_backtest
from workers.strategies import BaseStrategy, UnknownStrategyTypeError, register, strategy_class
from workers.strategies.ibs import ibs

INSTRUMENT_IDS = {"6A": 1, "CL": 2, "GC": 3}


def _m(symbol: str, start: str, o: float, h: float, low: float, c: float) -> Bar:
    ts = datetime.fromisoformat(start).replace(tzinfo=UTC)
    return Bar(symbol=symbol, timeframe="1min", timestamp=ts, end=ts + timedelta(minutes=1), open=o, high=h,
               low=low, close=c, volume=1, trade_count=1, instrument_id=INSTRUMENT_IDS[symbol],
               contract_symbol=f"{symbol}M4")


def _utc(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


# Sessions close at 23:00 UTC in early March 2024 (17:00 Chicago, standard time).
MINUTES = {
    "CL": [
        _m("CL", "2024-03-04T14:00", 80.00, 80.50, 79.00, 79.10),  # session IBS 0.07: enter
        _m("CL", "2024-03-04T22:59", 79.10, 79.20, 79.00, 79.10),  # ends with the session: no fill on it
        _m("CL", "2024-03-04T23:05", 79.20, 79.30, 79.10, 79.25),  # entry fill 79.20 + 2 ticks
        _m("CL", "2024-03-05T02:00", 79.00, 79.05, 78.50, 78.60),  # stop 78.58 touched: fill 78.58 - 2 ticks
        _m("CL", "2024-03-05T20:00", 78.60, 79.30, 78.60, 79.28),  # session IBS 0.97: stays flat
    ],
    "6A": [
        _m("6A", "2024-03-04T16:00", 0.6600, 0.6620, 0.6580, 0.6585),  # IBS 0.125: enter
        _m("6A", "2024-03-04T23:20", 0.6590, 0.6595, 0.6588, 0.6592),  # entry fill 0.65905
        _m("6A", "2024-03-05T16:00", 0.6592, 0.6650, 0.6588, 0.6645),  # IBS 0.92: exit
        _m("6A", "2024-03-05T23:30", 0.6640, 0.6642, 0.6630, 0.6635),  # exit fill 0.66395
    ],
    "GC": [
        _m("GC", "2024-03-04T15:00", 2010.0, 2012.0, 2000.0, 2001.0),  # IBS 0.08: enter
        _m("GC", "2024-03-04T23:10", 2002.0, 2003.0, 2001.0, 2002.0),  # entry fill 2002.1
        _m("GC", "2024-03-05T15:00", 2002.0, 2010.0, 1995.0, 2002.5),  # IBS 0.5, held 1
        _m("GC", "2024-03-06T15:00", 2002.0, 2008.0, 1996.0, 2002.0),  # IBS 0.5, held 2
        _m("GC", "2024-03-07T15:00", 2002.0, 2008.0, 1996.0, 2002.0),  # IBS 0.5, held 3: max bars
        _m("GC", "2024-03-07T23:01", 2003.0, 2004.0, 2002.0, 2003.0),  # exit fill 2002.9
    ],
}


def _bars() -> list[Bar]:
    return [b for minutes in MINUTES.values() for b in (*minutes, *aggregate(minutes))]


def test_ibs_paper_trades_fill_with_slippage_and_commission(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "c.yml"))
    trades = sorted(run_backtest(cfg, STRATEGY, _bars()).trades, key=lambda t: t.exit_time)
    expected = [
        TradeRecord(STRATEGY, "CL", "CLM4", "long", 1, _utc("2024-03-04T23:06"), 79.22, _utc("2024-03-05T02:01"),
                    78.56, -660.0, 9.0, -669.0, "stop", 0),
        TradeRecord(STRATEGY, "6A", "6AM4", "long", 2, _utc("2024-03-04T23:21"), 0.65905, _utc("2024-03-05T23:31"),
                    0.66395, 980.0, 16.0, 964.0, "ibs_exit", 1),
        TradeRecord(STRATEGY, "GC", "GCM4", "long", 1, _utc("2024-03-04T23:11"), 2002.1, _utc("2024-03-07T23:02"),
                    2002.9, 80.0, 9.0, 71.0, "max_bars", 3),
    ]
    assert trades == expected


def test_ibs_of_a_flat_bar_is_one_half() -> None:
    assert ibs(5.0, 5.0, 5.0) == 0.5
    assert ibs(10.0, 0.0, 2.5) == 0.25


class _ShortEveryDay(BaseStrategy):
    """Short on every daily bar, out on the next one: exercises the short side of the hooks."""

    params = (("hold", 1),)

    def should_enter_short(self, symbol: str) -> bool:
        return True

    def should_exit(self, symbol: str) -> str | None:
        return "time" if self.bars_held(symbol) >= self.p.hold else None


def test_a_registered_class_plus_a_config_entry_is_a_strategy(tmp_path: Path) -> None:
    register("test_short")(_ShortEveryDay)
    assert strategy_class("test_short") is _ShortEveryDay
    cfg = load_config(write_config(tmp_path / "c.yml", strategy_params={"hold": 1},
                                   strategy_type="test_short"))
    trades = run_backtest(cfg, STRATEGY, _bars()).trades
    aud = [t for t in trades if t.symbol == "6A"]
    # Short 2 at the 23:20 open minus a tick; covered a session later at the 23:30 open plus a tick.
    assert [(t.direction, t.size, t.entry_price, t.exit_price, t.exit_reason) for t in aud] == [
        ("short", 2, pytest.approx(0.65895), pytest.approx(0.66405), "time")]
    assert aud[0].pnl == pytest.approx(-1020.0)


def test_unknown_strategy_type_names_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownStrategyTypeError, match=r"unknown strategy_type 'nope'; known: .*ibs"):
        strategy_class("nope")
    cfg = load_config(write_config(tmp_path / "c.yml"))
    with pytest.raises(StrategySetupError, match=r"unknown strategy 'other'; configured: ibs_t"):
        resolve_strategy(cfg, "other")
