"""The breakout strategy on hand-made trending sessions: Donchian entries both ways, channel exit, ATR stop."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from pine.bars import Bar
from pine.config import load_config
from tests.bar_factory import aggregate
from tests.scenario import INSTRUMENTS, session_close
from workers.engine import StrategySetupError, backtest, resolve_strategy
from workers.strategies.breakout import BreakoutStrategy

PARAMS = {"entry_period": 5, "exit_period": 3, "atr_period": 3, "atr_stop": 2.0, "allow_short": True}
DAYS = [date(2024, 1, 8) + timedelta(days=i) for i in range(40) if (date(2024, 1, 8) + timedelta(days=i)).weekday() < 5]
# Session closes in points: a range, a rally (long breakout), a pullback through the exit channel, a slide
# (short breakout), then a rebound; every session trades 10 points around its open and close.
CLOSES = [5000, 5004, 4998, 5002, 5000, 5001, 5030, 5060, 5090, 5120, 5150, 5110, 5070, 5030, 4990, 4950, 4910,
          4870, 4900, 4940, 4980, 5020, 5040]


def _minute(start: datetime, o: float, h: float, lo: float, c: float) -> Bar:
    return Bar("ES", "1min", start, start + timedelta(minutes=1), o, max(h, o, c), min(lo, o, c), c, 5, 3, 33, "ESH4")


def trending_market(closes: list[float], *, crash: tuple[int, float] | None = None) -> list[Bar]:
    """Three minute bars per session: a fill bar after the open, a mid bar, the closing bar; ``crash`` = (session
    index, price) puts the mid bar's low there (through a protective stop)."""
    minutes: list[Bar] = []
    prev = closes[0]
    for i, close in enumerate(closes):
        end = session_close(DAYS[i])
        start = end - timedelta(hours=24)
        low = min(prev, close) - 5
        if crash is not None and crash[0] == i:
            low = crash[1]
        minutes.append(_minute(start + timedelta(minutes=5), prev, prev + 1, prev - 1, prev))
        minutes.append(_minute(start + timedelta(hours=10), prev, max(prev, close) + 5, low, (prev + close) / 2))
        minutes.append(_minute(end - timedelta(hours=2), (prev + close) / 2, max(prev, close) + 5, low, close))
        prev = close
    return sorted(minutes + aggregate(minutes), key=lambda b: (b.end, b.timeframe))


def _config(tmp_path: Path, **params: object) -> Path:
    doc = {
        "strategies": {"trend": {"strategy_type": "breakout", "params": {**PARAMS, **params}, "slippage_ticks": 1,
                                 "instruments": {"ES": {"size": 1}}}},
        "instruments": {"ES": INSTRUMENTS["ES"]},
    }
    path = tmp_path / "breakout.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_breakout_goes_long_and_short_with_the_trend_and_exits_on_the_channel(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    trades = backtest(cfg, "trend", trending_market(CLOSES)).journal.trades
    assert [(t.direction, t.exit_reason) for t in trades] == [("long", "channel_exit"), ("short", "channel_exit")]
    long, short = trades
    # Long on the close of 5030 above the 5-session high (5009), filled at the open of the next session's first
    # bar (5030, one tick of slippage).
    assert long.entry_tag == "donchian5=high:5009.0"
    assert (long.entry_time, long.entry_price) == (session_close(DAYS[6]) + timedelta(minutes=6), 5030.25)
    # Out when the close (5070) fell below the lowest low of the 3 sessions before it (5085).
    assert (long.exit_time, long.exit_price) == (session_close(DAYS[12]) + timedelta(minutes=6), 5069.75)
    # Short on the next close (5030) below the 5-session low (5055); out when a close (4980) rose above the
    # highest high of the 3 sessions before it (4945).
    assert short.entry_tag == "donchian5=low:5055.0"
    assert (short.entry_time, short.entry_price) == (session_close(DAYS[13]) + timedelta(minutes=6), 5029.75)
    assert (short.exit_time, short.exit_price) == (session_close(DAYS[20]) + timedelta(minutes=6), 4980.25)
    assert long.pnl == (5069.75 - 5030.25) * 50 and short.pnl == (5029.75 - 4980.25) * 50


def test_the_atr_stop_closes_a_long_at_two_atrs_below_its_entry(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    run = backtest(cfg, "trend", trending_market(CLOSES[:11], crash=(8, 4900)))
    first = run.journal.trades[0]
    assert (first.direction, first.exit_reason) == ("long", "stop")
    # ATR at the entry: the mean true range of the 3 sessions up to the signal session.
    day = [b for b in trending_market(CLOSES[:11]) if b.timeframe == "daily"]
    signal = next(i for i, b in enumerate(day) if b.end.date() == DAYS[6])
    tr = [max(day[i].high, day[i - 1].close) - min(day[i].low, day[i - 1].close) for i in range(signal - 2, signal + 1)]
    stop = first.entry_price - 2.0 * sum(tr) / 3
    assert first.exit_requested_price == pytest.approx(int(stop / 0.25) * 0.25)  # on the tick grid, below
    assert first.exit_price == first.exit_requested_price - 0.25  # a stop fills at its price, one tick of slippage


def test_too_little_history_means_no_decision_rather_than_reading_past_the_data(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path))
    run = backtest(cfg, "trend", trending_market(CLOSES[:5]))  # fewer sessions than the 5-day channel needs
    assert run.journal.trades == [] and run.journal.stats.positions == {}
    strategy = run.strategy
    # The 5-session channel exists on the 5th bar, but the channel of the bars *before* it does not yet.
    assert strategy.value(strategy.upper["ES"]) == 5009.0 and strategy.value(strategy.upper["ES"], -1) is None
    # Reading past the first bar, Backtrader wraps around to the newest value or raises the seeds' IndexError;
    # value() says None instead.
    close = strategy.day["ES"].close
    assert len(close) == 5 and close[-5] == close[0]
    with pytest.raises(IndexError):
        close[-10]
    assert BreakoutStrategy.value(close, -5) is None and BreakoutStrategy.value(close, -10) is None


def test_bad_breakout_parameters_are_refused_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(StrategySetupError, match=r"strategies\.trend\.params: entry_period must be a whole number"):
        resolve_strategy(load_config(_config(tmp_path, entry_period=0)), "trend")
