"""Warmup caches from history: the hub's bars from a DBN archive, OHLCV history, `pine warmup build`,
Databento errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import databento
import databento_dbn as dbn
import pytest
from databento_dbn import FIXED_PRICE_SCALE

from hub.aggregator import Aggregator
from hub.dbn_source import iter_records
from hub.history import (
    HistoryError,
    bars_from_archive,
    bars_from_records,
    build_caches,
    fetch_databento,
)
from hub.synthetic import write_synthetic_market
from pine.bar_cache import cache_path, complete_through, read_bar_list
from pine.bars import Bar
from pine.config import load_config
from pine.contracts import load_contract_map
from pine.sessions import SessionCalendar
from tests.conftest import REPO

ROOTS = ("CL", "ES")
CALENDAR = SessionCalendar()
EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three synthetic trading days across the March 2024 DST change (Fri 8, Mon 11, Tue 12)."""
    cfg = load_config(EXAMPLE)
    return write_synthetic_market(tmp_path_factory.mktemp("market"), ROOTS, date(2024, 3, 8), 3, 7,
                                  load_contract_map(cfg.contract_map_path))


def _hub_bars(files: list[Path]) -> list[Bar]:
    """What `pine hub --replay` publishes for these files: every closed bar, then the final flush."""
    agg = Aggregator(ROOTS, CALENDAR)
    out = []
    for record in iter_records(files):
        if (boundary := agg.on_record(record)) is not None:
            out += boundary.bars
    return out + agg.flush().bars


def test_archive_caches_hold_the_hubs_bars_with_session_daily_bars(archive: list[Path]) -> None:
    cfg = load_config(EXAMPLE)
    build = build_caches(cfg, list(ROOTS), source="archive", archive=archive)
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    # The archive ends at 16:00 Chicago, inside the maintenance hour: the last session is complete.
    last_close = datetime(2024, 3, 12, 22, 0, tzinfo=UTC)  # 17:00 CDT
    assert build.complete_through == last_close
    hub = _hub_bars(archive)
    for root in ROOTS:
        for tf in ("1min", "hourly", "daily"):
            path = cache_path(cache_dir, root, tf)
            assert complete_through(path) == last_close
            cached = read_bar_list(path)
            expected = [b.with_flags(partial=False) for b in hub if (b.symbol, b.timeframe) == (root, tf)]
            assert cached == expected, (root, tf)
        daily_ends = [b.end for b in read_bar_list(cache_path(cache_dir, root, "daily"))]
        # Session bars close at 17:00 Chicago: 23:00 UTC before the DST change, 22:00 UTC after; not midnight UTC.
        assert daily_ends == [datetime(2024, 3, 8, 23, tzinfo=UTC), datetime(2024, 3, 11, 22, tzinfo=UTC), last_close]


def test_through_cuts_history_at_an_instant(archive: list[Path]) -> None:
    through = datetime(2024, 3, 11, 15, 30, tzinfo=UTC)
    history = bars_from_archive(archive, ROOTS, CALENDAR, through=through)
    assert history.complete_through == through
    hub = [b for b in _hub_bars(archive) if b.end <= through and not b.partial]
    got = sorted((b for bars in history.bars.values() for b in bars), key=lambda b: (b.end, b.symbol, b.timeframe))
    assert got == sorted(hub, key=lambda b: (b.end, b.symbol, b.timeframe))
    assert max(b.end for b in got) == through  # the minute and hourly bars up to 15:30 are in


def _ohlcv_file(path: Path, minutes: list[Bar]) -> Path:
    """Minute bars written as Databento ohlcv-1m records (what a Historical request returns)."""
    meta = dbn.Metadata(dataset="GLBX.MDP3", start=0, stype_in=dbn.SType.PARENT, stype_out=dbn.SType.INSTRUMENT_ID,
                        schema=dbn.Schema.OHLCV_1M, symbols=["CL.FUT"])
    out = [meta.encode()]
    for b in minutes:
        out.append(bytes(dbn.OHLCVMsg(
            rtype=dbn.RType.OHLCV_1M, publisher_id=1, instrument_id=b.instrument_id,
            ts_event=int(b.timestamp.timestamp()) * 1_000_000_000,
            open=round(b.open * FIXED_PRICE_SCALE), high=round(b.high * FIXED_PRICE_SCALE),
            low=round(b.low * FIXED_PRICE_SCALE), close=round(b.close * FIXED_PRICE_SCALE), volume=b.volume)))
    path.write_bytes(b"".join(out))
    return path


def test_ohlcv_history_gives_the_same_hourly_and_session_bars(archive: list[Path], tmp_path: Path) -> None:
    trades = bars_from_archive(archive, ["CL"], CALENDAR)
    minutes = trades.bars[("CL", "1min")]
    store = databento.DBNStore.from_file(_ohlcv_file(tmp_path / "cl.ohlcv-1m.dbn", minutes))
    symbols = {b.instrument_id: b.contract_symbol for b in minutes}
    ohlcv = bars_from_records(store, symbols, ["CL"], CALENDAR, through=trades.complete_through)

    def key(b: Bar) -> tuple[object, ...]:  # OHLCV carries no trade count
        return b.timestamp, b.end, b.open, b.high, b.low, b.close, b.volume, b.contract_symbol

    for tf in ("1min", "hourly", "daily"):
        assert [key(b) for b in ohlcv.bars[("CL", tf)]] == [key(b) for b in trades.bars[("CL", tf)]], tf


def test_pine_warmup_build_writes_caches_and_reports(archive: list[Path], tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    base = [sys.executable, "-m", "pine.cli", "warmup", "build", "--config", str(EXAMPLE)]
    env = {"PINE_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([*base, "--archive", str(archive[0].parent), "--symbols", "CL", "--through", "2024-03-11"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "wrote 3 caches" in ok.stdout and "complete through 2024-03-11T22:00:00+00:00" in ok.stdout
    assert complete_through(cache_path(runtime / "warmup", "CL", "daily")) == datetime(2024, 3, 11, 22, tzinfo=UTC)
    bad = subprocess.run([*base, "--through", "next tuesday"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--through" in bad.stderr
    empty = subprocess.run([*base, "--archive", str(tmp_path / "nothing")], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert empty.returncode == 1 and "no such DBN file or archive directory" in empty.stderr


def test_databento_source_needs_a_key_and_says_when_it_cannot_be_reached() -> None:
    cfg = load_config(EXAMPLE)
    with pytest.raises(HistoryError, match="no Databento API key: set DATABENTO_API_KEY"):
        build_caches(cfg, ["ES"], source="databento")
    # The real client against a closed local port: the request path up to the network, no stand-in.
    end = datetime(2024, 3, 1, tzinfo=UTC)
    with pytest.raises(HistoryError, match=r"cannot reach the Databento Historical API|request for ohlcv-1m failed"):
        fetch_databento("db-not-a-real-key-000000000000", "GLBX.MDP3", ["ES.FUT"], end - timedelta(days=5), end,
                        max_cost_usd=1.0, gateway="127.0.0.1:9")
