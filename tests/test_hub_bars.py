"""Hub bars equal an independent pandas computation over the same DBN files, for every timeframe.

The range Wed 2024-03-06 .. Tue 2024-03-12 holds the ES roll (Thu 03-07), a weekend with the
US DST change (Sun 03-10) and a session boundary every day; both session calendars are checked.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import pandas as pd
import pytest
import redis

from hub.aggregator import Aggregator
from hub.main import run_replay
from hub.synthetic import write_synthetic_market
from pine.config import PineConfig, load_config
from pine.config.schema import SessionsConfig
from pine.contracts import MONTH_CODES, load_contract_map
from pine.sessions import SessionCalendar

REPO = Path(__file__).resolve().parents[1]
ROOTS = ["ES", "CL", "6M"]
UNCONFIGURED = "6J"  # in the market, not in the example config's instruments: ignored
MINUTE = 60_000_000_000
FIELDS = ("symbol", "timeframe", "timestamp", "end", "open", "high", "low", "close", "volume", "trade_count",
          "instrument_id", "contract_symbol", "partial")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    contract_map = load_contract_map(REPO / "data" / "contract_map.yml")
    return write_synthetic_market(tmp_path_factory.mktemp("m"), [*ROOTS, UNCONFIGURED], date(2024, 3, 6), 5, 5,
                                  contract_map)


# --------------------------------------------------------------------------- the independent computation


def decode_trades(files: list[Path]) -> tuple[pd.DataFrame, list[dict[int, str]]]:
    """All trades (in file order) and each file's instrument id → raw symbol mappings."""
    rows: list[tuple[int, int, int, int, int]] = []
    mappings: list[dict[int, str]] = []
    for n, path in enumerate(files):
        records = dbn.DBNDecoder().write_and_decode(path.read_bytes())
        mappings.append({r.instrument_id: r.stype_out_symbol for r in records if isinstance(r, dbn.SymbolMappingMsg)})
        rows.extend((n, r.instrument_id, r.ts_recv, r.price, r.size) for r in records if isinstance(r, dbn.TradeMsg))
    return pd.DataFrame(rows, columns=["file", "iid", "ts_recv", "price", "size"]), mappings


def expiry_key(raw: str) -> tuple[int, int]:
    return 2020 + int(raw[-1]), MONTH_CODES.index(raw[-2]) + 1


def expected_bars(files: list[Path], tz: str, close_hour: int) -> list[tuple[Any, ...]]:
    trades, mappings = decode_trades(files)
    symbols = {iid: raw for m in mappings for iid, raw in m.items()}
    clock = int(trades.ts_recv.max())
    df = trades.assign(symbol=trades.iid.map(symbols))
    df = df[~df.symbol.str.contains("-")].assign(root=lambda d: d.symbol.str[:-2])
    df = df[df.root.isin(ROOTS)].copy()

    local = pd.to_datetime(df.ts_recv, unit="ns", utc=True).dt.tz_convert(tz)
    after_close = (local.dt.hour >= close_hour).astype(int)
    close_day = local.dt.tz_localize(None).dt.normalize() + pd.to_timedelta(after_close, unit="D")
    df["session_end"] = (close_day + pd.Timedelta(hours=close_hour)).dt.tz_localize(tz).dt.tz_convert("UTC")
    df["session_start"] = (close_day - pd.Timedelta(days=1) + pd.Timedelta(hours=close_hour)).dt.tz_localize(
        tz).dt.tz_convert("UTC")

    active: dict[tuple[str, pd.Timestamp], str] = {}
    for root, g in df.groupby("root"):
        sessions = sorted(g.session_end.unique())
        known = {iid: raw for m in mappings[: int(g.file.iloc[0]) + 1] for iid, raw in m.items()}
        mapped = [s for s in known.values() if "-" not in s and s[:-2] == root]
        active[(root, sessions[0])] = min(mapped, key=expiry_key)
        for prev, cur in itertools.pairwise(sessions):
            vol = g[g.session_end == prev].groupby("symbol")["size"].sum()
            top = vol[vol == vol.max()].index
            active[(root, cur)] = min(top, key=expiry_key)
    chosen = pd.DataFrame([(r, s, sym) for (r, s), sym in active.items()], columns=["root", "session_end", "active"])
    df = df.merge(chosen, on=["root", "session_end"], how="left")
    df = df[df.symbol == df.active]

    ohlcv = {"open": ("price", "first"), "high": ("price", "max"), "low": ("price", "min"), "close": ("price", "last"),
             "volume": ("size", "sum"), "trade_count": ("size", "size"), "iid": ("iid", "first"),
             "contract": ("symbol", "first")}
    out: list[tuple[Any, ...]] = []
    for timeframe, width in (("1min", MINUTE), ("hourly", 60 * MINUTE)):
        agg = df.assign(start=df.ts_recv // width * width).groupby(["root", "start"]).agg(**ohlcv).reset_index()
        out.extend(_row(b, timeframe, _ts(b.start), _ts(b.start + width), clock) for b in agg.itertuples())
    agg = df.groupby(["root", "session_start", "session_end"]).agg(**ohlcv).reset_index()
    out.extend(_row(b, "daily", b.session_start.to_pydatetime(), b.session_end.to_pydatetime(), clock)
               for b in agg.itertuples())
    return sorted(out)


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC)


def _row(b: Any, timeframe: str, start: datetime, end: datetime, clock: int) -> tuple[Any, ...]:
    return (b.root, timeframe, start, end, b.open / 1e9, b.high / 1e9, b.low / 1e9, b.close / 1e9, int(b.volume),
            int(b.trade_count), int(b.iid), b.contract, end.timestamp() * 1e9 > clock)


# --------------------------------------------------------------------------- the hub's bars, read back from Redis


def hub_bars(client: redis.Redis) -> list[tuple[Any, ...]]:
    out = []
    for root in ROOTS:
        for timeframe in ("1min", "hourly", "daily"):
            for _, entry in client.xrange(f"market:{root}:{timeframe}:stream"):
                d = json.loads(entry[b"bar"])
                d["timestamp"], d["end"] = datetime.fromisoformat(d["timestamp"]), datetime.fromisoformat(d["end"])
                out.append(tuple(d[f] for f in FIELDS))
    return sorted(out)


def with_sessions(cfg: PineConfig, sessions: SessionsConfig) -> PineConfig:
    return cfg.model_copy(update={"sessions": sessions})


@pytest.mark.parametrize(
    ("sessions", "tz", "close_hour", "es_contracts"),
    [
        (SessionsConfig(), "America/Chicago", 17, ["ESH4", "ESH4", "ESM4", "ESM4", "ESM4"]),
        # The legacy close makes Sunday's first hour after the DST change a session of its own.
        (SessionsConfig(fixed_utc_close_hour=23), "UTC", 23, ["ESH4", "ESH4", "ESM4", "ESM4", "ESM4", "ESM4"]),
    ],
    ids=["chicago-17", "fixed-utc-23"],
)
def test_hub_bars_equal_pandas(
    market: list[Path], redis_url: str, sessions: SessionsConfig, tz: str, close_hour: int, es_contracts: list[str]
) -> None:
    cfg = with_sessions(load_config(), sessions)
    client = redis.Redis.from_url(redis_url)
    stats = run_replay(cfg, market, client)
    assert UNCONFIGURED not in cfg.instruments and stats.ignored["unknown_root"] > 10_000
    assert not client.keys(f"market:{UNCONFIGURED}:*")
    got = hub_bars(client)
    want = expected_bars(market, tz, close_hour)

    assert stats.bars_published == len(got) == len(want)
    assert got == want
    daily = [b for b in want if b[1] == "daily"]
    # First session: nearest expiry; then the previous session's volume leader (ESM4 led from 03-07).
    assert [b[11] for b in daily if b[0] == "ES"] == es_contracts
    assert len(daily) == len(es_contracts) * len(ROOTS)
    if tz == "America/Chicago":
        assert {b[3].hour for b in daily} == {22, 23}  # 17:00 CT is 23:00 UTC in winter, 22:00 UTC in summer
    else:
        assert {b[3].hour for b in daily} == {23}
    overnight = [b for b in want if b[0] == "ES" and b[1] == "1min"
                 and datetime(2024, 3, 8, 0, tzinfo=UTC) <= b[2] < datetime(2024, 3, 8, 6, tzinfo=UTC)]
    assert 100 < len(overnight) < 360  # thin overnight trading: some minutes have no bar
    assert [b[12] for b in want].count(True) == 3 * 3  # the flushed bars: one per root and timeframe


def test_fixed_utc_close_moves_the_summer_hour_to_the_previous_session(market: list[Path]) -> None:
    """Legacy parity: with a 23:00 UTC close, 22:00-23:00 UTC in US summer belongs to the day before."""
    cfg = load_config()
    bars = {}
    for name, calendar in (("cme", cfg.sessions.calendar()), ("legacy", SessionCalendar.fixed_utc(23))):
        agg = Aggregator(["ES"], calendar)
        closed = [b for f in market for r in _records(f) if (x := agg.on_record(r)) for b in x.bars]
        closed += agg.flush().bars
        bars[name] = [b for b in closed if b.timeframe == "daily"]
    tue_cme = next(b for b in bars["cme"] if b.end == datetime(2024, 3, 12, 22, tzinfo=UTC))
    tue_legacy = next(b for b in bars["legacy"] if b.end == datetime(2024, 3, 12, 23, tzinfo=UTC))
    assert tue_cme.timestamp == datetime(2024, 3, 11, 22, tzinfo=UTC)
    assert tue_legacy.timestamp == datetime(2024, 3, 11, 23, tzinfo=UTC)
    assert tue_legacy.volume < tue_cme.volume


def _records(path: Path) -> list[Any]:
    return dbn.DBNDecoder().write_and_decode(path.read_bytes())


# --------------------------------------------------------------------------- clock and edge rules, by hand


T0 = int(datetime(2024, 3, 5, 14, 30, tzinfo=UTC).timestamp()) * 1_000_000_000


def _agg() -> Aggregator:
    agg = Aggregator(["ES"], SessionCalendar())
    for iid, raw in ((1, "ESH4"), (2, "ESM4"), (3, "ESH4-ESM4"), (4, "NQH4")):
        agg.on_mapping(iid, raw, T0)
    return agg


def test_clock_ticks_every_new_minute_and_closes_bars_at_their_end() -> None:
    agg = _agg()
    first = agg.on_trade(1, T0 + 5_000_000_000, 5_000_250_000_000, 2)
    assert first is not None and first.bars == [] and first.watermark == _ts(T0)
    assert agg.on_trade(1, T0 + 59_999_999_999, 5_000_500_000_000, 1) is None
    tick = agg.on_trade(3, T0 + MINUTE + 1, -250_000_000, 1)  # a spread trade still moves the clock
    assert tick is not None and tick.watermark == _ts(T0 + MINUTE)
    assert [(b.timeframe, b.open, b.high, b.close, b.volume, b.trade_count) for b in tick.bars] == [
        ("1min", 5000.25, 5000.5, 5000.5, 3, 2)
    ]
    empty = agg.advance(T0 + 3 * MINUTE)  # a heartbeat: time passes, no bar is due
    assert empty is not None and empty.bars == [] and empty.watermark == _ts(T0 + 3 * MINUTE)
    hour = agg.advance(T0 + 30 * MINUTE)
    assert hour is not None and [b.timeframe for b in hour.bars] == ["hourly"]
    assert hour.bars[0].timestamp == _ts(T0 - 30 * MINUTE) and hour.bars[0].end == _ts(T0 + 30 * MINUTE)


def test_ignored_trades_are_counted_not_aggregated() -> None:
    agg = _agg()
    agg.on_trade(1, T0, 5_000_000_000_000, 1)
    agg.on_trade(2, T0 + 1, 5_001_000_000_000, 1)  # next contract: not active in the first session
    agg.on_trade(3, T0 + 2, -250_000_000, 1)
    agg.on_trade(4, T0 + 3, 18_000_000_000_000, 1)  # NQ is not configured here
    agg.on_trade(9, T0 + 4, 1, 1)  # never mapped
    agg.on_trade(1, T0 + 5, dbn.UNDEF_PRICE, 1)
    agg.on_trade(1, T0 + 2 * MINUTE, 5_000_000_000_000, 1)
    agg.on_trade(1, T0 + MINUTE, 4_000_000_000_000, 1)  # its minute has been closed already
    assert dict(agg.ignored) == {
        "inactive_contract": 1, "spread": 1, "unknown_root": 1, "unmapped": 1, "undef_price": 1, "late": 1,
    }
    bars = agg.flush().bars
    assert {b.low for b in bars} == {5000.0} and all(b.partial for b in bars)


def test_a_heartbeat_record_moves_the_clock() -> None:
    agg = _agg()
    agg.on_trade(1, T0, 5_000_000_000_000, 1)
    boundary = agg.on_record(dbn.SystemMsg(ts_event=T0 + 61 * MINUTE, msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT))
    assert boundary is not None and sorted(b.timeframe for b in boundary.bars) == ["1min", "hourly"]
    ack = dbn.SystemMsg(ts_event=T0 + 70 * MINUTE, msg="Subscription successful", code=dbn.SystemCode.SUBSCRIPTION_ACK)
    assert agg.on_record(ack) is None


def test_session_close_must_be_on_the_hour() -> None:
    from datetime import time

    with pytest.raises(ValueError, match="on the hour"):
        Aggregator(["ES"], SessionCalendar(close=time(16, 30)))
