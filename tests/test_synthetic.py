"""The synthetic market: real DBN files, seeded and deterministic, shaped like CME Globex trading."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import databento_dbn as dbn
import pytest

from hub.synthetic import expiry_and_roll, live_contracts, write_synthetic_market
from pine.contracts import load_contract_map

REPO = Path(__file__).resolve().parents[1]
CHICAGO = ZoneInfo("America/Chicago")
CONTRACT_MAP = load_contract_map(REPO / "data" / "contract_map.yml")
MINUTE = 60_000_000_000


def decode(path: Path) -> tuple[dict[int, tuple[str, str]], list[dbn.TradeMsg]]:
    """(instrument id → (parent, raw symbol), trades) of one whole file."""
    records = dbn.DBNDecoder().write_and_decode(path.read_bytes())
    assert isinstance(records[0], dbn.Metadata)
    mappings = {
        r.instrument_id: (r.stype_in_symbol, r.stype_out_symbol)
        for r in records
        if isinstance(r, dbn.SymbolMappingMsg)
    }
    return mappings, [r for r in records if isinstance(r, dbn.TradeMsg)]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Fri 2024-03-08, Mon 03-11, Tue 03-12: a weekend with the US DST change (Sun 03-10)."""
    out = tmp_path_factory.mktemp("market")
    return write_synthetic_market(out, ["ES", "CL", "6J"], date(2024, 3, 8), 3, 11, CONTRACT_MAP)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, market: list[Path]) -> None:
    again = write_synthetic_market(tmp_path / "a", ["6J", "CL", "ES"], date(2024, 3, 8), 3, 11, CONTRACT_MAP)
    other = write_synthetic_market(tmp_path / "b", ["ES", "CL", "6J"], date(2024, 3, 8), 3, 12, CONTRACT_MAP)
    assert [p.name for p in again] == [p.name for p in market]
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in market]
    assert all(a.read_bytes() != b.read_bytes() for a, b in zip(market, other, strict=True))


def test_a_day_does_not_depend_on_the_range_it_was_generated_in(tmp_path: Path, market: list[Path]) -> None:
    later = write_synthetic_market(tmp_path, ["ES", "CL", "6J"], date(2024, 3, 11), 1, 11, CONTRACT_MAP)
    assert later[0].name == market[1].name
    assert later[0].read_bytes() == market[1].read_bytes()


def test_one_file_per_trading_day_and_globex_hours(market: list[Path]) -> None:
    assert [p.name for p in market] == [
        "glbx-mdp3-20240308.trades.dbn", "glbx-mdp3-20240311.trades.dbn", "glbx-mdp3-20240312.trades.dbn",
    ]
    for path in market:
        day = date(int(path.name[10:14]), int(path.name[14:16]), int(path.name[16:18]))
        _, trades = decode(path)
        assert len(trades) > 30_000
        for t in trades:
            local = datetime.fromtimestamp(t.ts_event / 1e9, CHICAGO)
            # 17:00 CT the evening before (Sunday for Monday) until 16:00 CT on the trading day.
            assert local.weekday() != 5, local
            assert (local.date() == day and local.hour < 16) or (
                local.date() == date.fromordinal(day.toordinal() - 1) and local.hour >= 17
            ), (path.name, local)
    _, friday = decode(market[0])
    _, monday = decode(market[1])
    # Friday 16:00 CST and Sunday 17:00 CDT (after the DST change) are both 22:00 UTC.
    assert max(t.ts_event for t in friday) < datetime(2024, 3, 8, 16, tzinfo=CHICAGO).timestamp() * 1e9
    sunday_open = datetime(2024, 3, 10, 17, tzinfo=CHICAGO).timestamp() * 1e9
    assert sunday_open <= min(t.ts_event for t in monday) < sunday_open + 5 * MINUTE


def test_records_are_ordered_by_ts_recv_with_realistic_latency(market: list[Path]) -> None:
    for path in market:
        _, trades = decode(path)
        recv = [t.ts_recv for t in trades]
        assert recv == sorted(recv)
        latency = [t.ts_recv - t.ts_event for t in trades]
        assert min(latency) > 0 and max(latency) < 5_000_000
        straddling = sum(t.ts_event // MINUTE != t.ts_recv // MINUTE for t in trades)
        assert straddling > 10


def test_instruments_spreads_prices_and_thin_overnight_minutes(market: list[Path]) -> None:
    mappings, trades = decode(market[0])
    parents = {parent for parent, _ in mappings.values()}
    assert parents == {"ES.FUT", "CL.FUT", "6J.FUT"}
    symbols = sorted(raw for _, raw in mappings.values())
    assert symbols == ["6JH4", "6JH4-6JM4", "6JM4", "CLJ4", "CLJ4-CLK4", "CLK4", "ESH4", "ESH4-ESM4", "ESM4"]
    by_symbol: dict[str, list[dbn.TradeMsg]] = {}
    for t in trades:
        by_symbol.setdefault(mappings[t.instrument_id][1], []).append(t)
    assert set(by_symbol) == set(symbols)
    for raw, ts in by_symbol.items():
        tick = round(CONTRACT_MAP[raw[:2]].tick_size * 1e9)
        assert all(t.price % tick == 0 for t in ts), raw
        if "-" in raw:
            assert 5 <= len(ts) < 100
    # ES rolled on Thu 03-07: ESM4 leads, the expiring ESH4 still has 15-25% of the volume the day after.
    es_m, es_h = (sum(t.size for t in by_symbol[s]) for s in ("ESM4", "ESH4"))
    assert 0.12 < es_h / (es_h + es_m) < 0.3
    # CL is far from its roll (CLJ4 rolls on 03-18): the next contract has 5-10% of the volume.
    cl_j, cl_k = (sum(t.size for t in by_symbol[s]) for s in ("CLJ4", "CLK4"))
    assert 0.03 < cl_k / (cl_j + cl_k) < 0.12
    es_minutes = {t.ts_recv // MINUTE for t in by_symbol["ESM4"]}
    assert 1000 < len(es_minutes) < 23 * 60


def test_roll_dates() -> None:
    es, cl = CONTRACT_MAP["ES"], CONTRACT_MAP["CL"]
    assert expiry_and_roll(es, 2024, 3) == (date(2024, 3, 15), date(2024, 3, 7))
    assert expiry_and_roll(cl, 2024, 4) == (date(2024, 3, 20), date(2024, 3, 18))
    assert expiry_and_roll(cl, 2024, 3) == (date(2024, 2, 20), date(2024, 2, 16))  # Feb 25 was a Sunday
    assert [c.symbol for c in live_contracts("ES", es, date(2024, 3, 15))] == ["ESH4", "ESM4"]
    assert [c.symbol for c in live_contracts("ES", es, date(2024, 3, 18))] == ["ESM4", "ESU4"]
    assert [c.symbol for c in live_contracts("CL", cl, date(2024, 3, 21))] == ["CLK4", "CLM4"]


def test_volume_migrates_to_the_next_contract_at_the_roll(tmp_path: Path) -> None:
    files = write_synthetic_market(tmp_path, ["ES"], date(2024, 3, 5), 3, 3, CONTRACT_MAP)
    leaders = []
    for path in files:
        mappings, trades = decode(path)
        volume: dict[str, int] = {}
        for t in trades:
            raw = mappings[t.instrument_id][1]
            volume[raw] = volume.get(raw, 0) + t.size
        leaders.append(max(volume, key=lambda s: volume[s]))
    assert leaders == ["ESH4", "ESH4", "ESM4"]


def test_pine_synth_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PINE_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = [sys.executable, "-m", "pine.cli", "synth", "--days", "2", "--start", "2024-03-08", "--symbols", "ES", "GC"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "runtime" / "market").iterdir())
    assert [p.name for p in files] == ["glbx-mdp3-20240308.trades.dbn", "glbx-mdp3-20240311.trades.dbn"]
    assert "2024-03-08" in done.stdout and "2024-03-11" in done.stdout and str(files[0]) in done.stdout

    bad = subprocess.run([*cmd[:4], "--start", "8 March", "--out", str(tmp_path / "x")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--start must be YYYY-MM-DD" in bad.stderr
    unknown = subprocess.run([*cmd[:4], "--symbols", "ZZ", "--out", str(tmp_path / "x")], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "ZZ" in unknown.stderr and "Traceback" not in unknown.stderr
