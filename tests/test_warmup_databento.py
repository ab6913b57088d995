"""The Databento Historical warmup source against a local HTTPS stand-in, through the real ``databento.Historical``
client: schema fallback, cost check, failures, rate limits, the key kept secret, ``pine warmup build``; and
Databento batch files whose symbology is in the DBN header only."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import databento_dbn as dbn
import pytest
import yaml
import zstandard

from hub.dbn_source import iter_records
from hub.history import HistoryError, bars_from_archive, build_caches, fetch_databento
from hub.synthetic import write_synthetic_market
from pine.bar_cache import cache_path, complete_through, read_bar_list
from pine.bars import Bar
from pine.cli import main
from pine.config import PineConfig, load_config
from pine.contracts import load_contract_map
from pine.sessions import SessionCalendar
from tests.conftest import REPO
from tests.databento_hist_server import EMPTY, HANG, DatabentoHistServer, Reply, refusal

ROOTS = ("CL", "ES")
CALENDAR = SessionCalendar()
EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
KEY = "db-CANARY-k3y-0123456789abcdef"  # a canary: must never show up in a log line or an error
SINCE = datetime(2024, 3, 7, 23, tzinfo=UTC)  # the session start of Fri 8 March (17:00 Chicago, CST)
THROUGH = datetime(2024, 3, 12, 22, tzinfo=UTC)  # the session close of Tue 12 March (17:00 CDT)
COST, RANGE, RESOLVE = "metadata.get_cost", "timeseries.get_range", "symbology.resolve"


def _ohlcv(trades: list[Any], rtype: dbn.RType, seconds: int) -> list[Any]:
    """Trades as Databento OHLCV records per instrument and interval. Bucketed by ``ts_recv`` like the hub's bars
    (Databento buckets by ``ts_event``), so that the bars built from them must equal the hub's exactly."""
    length = seconds * 1_000_000_000
    buckets: dict[tuple[int, int], list[Any]] = {}
    for t in trades:
        buckets.setdefault((t.ts_recv // length * length, t.instrument_id), []).append(t)
    return [dbn.OHLCVMsg(rtype=rtype, publisher_id=1, instrument_id=iid, ts_event=ts, open=ts_[0].price,
                         high=max(t.price for t in ts_), low=min(t.price for t in ts_), close=ts_[-1].price,
                         volume=sum(t.size for t in ts_))
            for (ts, iid), ts_ in sorted(buckets.items())]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three synthetic trading days across the March 2024 DST change: the DBN archive, its trades as the three
    Databento schemas, the contract symbols, and the bars the archive gives."""
    cfg = load_config(EXAMPLE)
    files = write_synthetic_market(tmp_path_factory.mktemp("market"), ROOTS, date(2024, 3, 8), 3, 7,
                                   load_contract_map(cfg.contract_map_path))
    trades, symbols = [], {}
    for rec in iter_records(files):
        if isinstance(rec, dbn.TradeMsg):
            trades.append(rec)
        elif isinstance(rec, dbn.SymbolMappingMsg):
            symbols[rec.instrument_id] = rec.stype_out_symbol
    schemas = {"ohlcv-1m": _ohlcv(trades, dbn.RType.OHLCV_1M, 60), "ohlcv-1s": _ohlcv(trades, dbn.RType.OHLCV_1S, 1),
               "trades": trades}
    return {"schemas": schemas, "symbols": symbols, "archive": bars_from_archive(files, ROOTS, CALENDAR)}


@pytest.fixture
def server(tmp_path: Path, market: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabentoHistServer]:
    with DatabentoHistServer(tmp_path, KEY) as srv:
        srv.symbols = dict(market["symbols"])
        srv.data = dict(market["schemas"])
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(srv.ca_file))  # trust the stand-in's self-signed certificate
        monkeypatch.setenv("DATABENTO_API_KEY", KEY)
        yield srv


def _cfg(srv: DatabentoHistServer, **warmup: Any) -> PineConfig:
    cfg = load_config(EXAMPLE)
    return cfg.model_copy(update={
        "databento": cfg.databento.model_copy(update={"historical_gateway": srv.gateway}),
        "warmup": cfg.warmup.model_copy(update=warmup)})


def _wire(srv: DatabentoHistServer) -> list[tuple[str, str | None]]:
    """(endpoint, schema) of every request, in order."""
    return [(r.endpoint, r.schema) for r in srv.seen()]


def _ohlcv_key(b: Bar) -> tuple[object, ...]:  # OHLCV carries no exchange trade count
    return b.timestamp, b.end, b.open, b.high, b.low, b.close, b.volume, b.contract_symbol


def _assert_caches_hold_the_archive_bars(cfg: PineConfig, market: dict[str, Any], *, trade_count: bool) -> None:
    key = (lambda b: b) if trade_count else _ohlcv_key
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    for root in ROOTS:
        for tf in ("1min", "hourly", "daily"):
            path = cache_path(cache_dir, root, tf)
            assert complete_through(path) == THROUGH
            expected = market["archive"].bars[(root, tf)]
            assert expected, (root, tf)
            assert [key(b) for b in read_bar_list(path)] == [key(b) for b in expected], (root, tf)


def test_ohlcv_1m_history_gives_the_archives_bars(server: DatabentoHistServer, market: dict[str, Any],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = _cfg(server)
    with caplog.at_level(logging.DEBUG):
        build = build_caches(cfg, list(ROOTS), source="databento", since=SINCE, through=THROUGH)
    assert build.source == "databento" and build.complete_through == THROUGH
    assert build.detail == f"Databento ohlcv-1m, {len(market['schemas']['ohlcv-1m']):,} records"
    _assert_caches_hold_the_archive_bars(cfg, market, trade_count=False)
    # The cost check comes before the download; the ids are then resolved to contracts.
    assert _wire(server) == [(COST, "ohlcv-1m"), (RANGE, "ohlcv-1m"), (RESOLVE, None)]
    cost, rng, resolve = server.seen()
    assert all(r.key_ok for r in server.seen())
    for r in (cost, rng):
        assert (r.form["dataset"], r.form["symbols"], r.form["stype_in"]) == ("GLBX.MDP3", "CL.FUT,ES.FUT", "parent")
        assert (r.form["start"], r.form["end"]) == (SINCE.isoformat(), THROUGH.isoformat())
    assert (resolve.form["stype_in"], resolve.form["stype_out"]) == ("instrument_id", "raw_symbol")
    assert "estimated cost $0.01 (limit $5.00)" in caplog.text
    assert KEY not in caplog.text


def test_refused_ohlcv_1m_falls_back_to_ohlcv_1s(server: DatabentoHistServer, market: dict[str, Any]) -> None:
    server.script[(COST, "ohlcv-1m")] = [refusal(422, "schema_not_fully_available", "ohlcv-1m is not available "
                                                 "for the requested range")]
    cfg = _cfg(server)
    build = build_caches(cfg, list(ROOTS), source="databento", since=SINCE, through=THROUGH)
    assert build.detail.startswith("Databento ohlcv-1s")
    _assert_caches_hold_the_archive_bars(cfg, market, trade_count=False)
    assert _wire(server) == [(COST, "ohlcv-1m"), (COST, "ohlcv-1s"), (RANGE, "ohlcv-1s"), (RESOLVE, None)]


def test_refused_and_empty_schemas_fall_back_to_trades(server: DatabentoHistServer, market: dict[str, Any]) -> None:
    server.script[(RANGE, "ohlcv-1m")] = [refusal(422, "schema_not_fully_available", "no ohlcv-1m here")]
    server.script[(RANGE, "ohlcv-1s")] = [EMPTY]
    cfg = _cfg(server)
    build = build_caches(cfg, list(ROOTS), source="databento", since=SINCE, through=THROUGH)
    assert build.detail == f"Databento trades, {len(market['schemas']['trades']):,} records"
    # From the very trades the archive holds: the same bars, trade counts included.
    _assert_caches_hold_the_archive_bars(cfg, market, trade_count=True)
    assert _wire(server) == [(COST, "ohlcv-1m"), (RANGE, "ohlcv-1m"), (COST, "ohlcv-1s"), (RANGE, "ohlcv-1s"),
                             (COST, "trades"), (RANGE, "trades"), (RESOLVE, None)]


def test_no_schema_with_data_is_an_error_listing_each(server: DatabentoHistServer) -> None:
    server.data = {}
    with pytest.raises(HistoryError, match=r"no usable history for CL\.FUT from .*: ohlcv-1m: no records; "
                                           r"ohlcv-1s: no records; trades: no records"):
        build_caches(_cfg(server), ["CL"], source="databento", since=SINCE, through=THROUGH)


def test_a_request_above_the_cost_limit_is_refused_before_any_download(server: DatabentoHistServer) -> None:
    server.costs["ohlcv-1m"] = 12.5
    cfg = _cfg(server, databento_max_cost_usd=5.0)
    with pytest.raises(HistoryError, match=r"ohlcv-1m history for CL\.FUT, ES\.FUT .* would cost \$12\.50, above "
                                           r"warmup\.databento_max_cost_usd \(\$5\.00\); raise the limit or ask for "
                                           r"less"):
        build_caches(cfg, list(ROOTS), source="databento", since=SINCE, through=THROUGH)
    assert _wire(server) == [(COST, "ohlcv-1m")]  # no download, and no cheaper schema tried instead
    assert not cfg.runtime_path(cfg.warmup.cache_dir).exists()


def _resolve_without(srv: DatabentoHistServer) -> Reply:
    body = {"result": {}, "symbols": [], "partial": [], "not_found": [str(i) for i in srv.symbols], "message": "OK",
            "status": 0}
    return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


FAILURES = {
    "5xx": ((RANGE, "ohlcv-1m"), lambda s: [refusal(500, "internal_error", "Internal server error.")],
            r"Historical API failed on timeseries\.get_range \(ohlcv-1m\) \(500 internal_error .*\); nothing was "
            r"written, try again later"),
    "corrupt": ((RANGE, "ohlcv-1m"), lambda s: [Reply(200, b"\x28\xb5\x2f\xfd this is no zstd frame" * 20)],
                r"unreadable ohlcv-1m DBN stream .*; nothing was written, build again"),
    "not DBN": ((RANGE, "ohlcv-1m"), lambda s: [Reply(200, b"<html>502 Bad Gateway</html>")],
                r"timeseries\.get_range \(ohlcv-1m\) failed \(Could not determine compression format .*\); nothing "
                r"was written, try again"),
    "truncated": ((RANGE, "ohlcv-1m"), lambda s: [Reply(200, s.dbn_stream(
        {"dataset": "GLBX.MDP3", "schema": "ohlcv-1m", "symbols": "CL.FUT", "start": SINCE.isoformat(),
         "end": THROUGH.isoformat()})[:-7])],
        r"unreadable ohlcv-1m DBN stream \(DBN file is truncated or contains an incomplete record\)"),
    "bad key": ((COST, "ohlcv-1m"), lambda s: [refusal(401, "auth_authentication_failed", "Authentication failed.")],
                r"rejected the API key on metadata\.get_cost \(ohlcv-1m\) .*check DATABENTO_API_KEY"),
    "429 thrice": ((COST, "ohlcv-1m"), lambda s: [Reply(429, b"", {"Retry-After": "0"})] * 3,
                   r"kept rate-limiting metadata\.get_cost \(ohlcv-1m\) \(HTTP 429, 3 attempts\); wait a few minutes"),
    "unresolved ids": ((RESOLVE, None), lambda s: [_resolve_without(s)],
                       r"symbology\.resolve did not name instrument id\(s\) \[\d+.*nothing was written"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failing_api_is_a_clear_error_and_writes_nothing(server: DatabentoHistServer, case: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    where, replies, message = FAILURES[case]
    server.script[where] = replies(server)
    cfg = _cfg(server)
    with caplog.at_level(logging.DEBUG), pytest.raises(HistoryError, match=message) as err:
        build_caches(cfg, ["CL"], source="databento", since=SINCE, through=THROUGH)
    assert not cfg.runtime_path(cfg.warmup.cache_dir).exists()
    assert KEY not in str(err.value) and KEY not in caplog.text
    assert "\n" not in str(err.value)


def test_rate_limits_are_retried_and_nothing_is_fetched_twice(server: DatabentoHistServer,
                                                              market: dict[str, Any]) -> None:
    server.script[(COST, "ohlcv-1m")] = [Reply(429, b"", {"Retry-After": "0"})]
    server.script[(RANGE, "ohlcv-1m")] = [Reply(429, b"", {"Retry-After": "0"})] * 2
    cfg = _cfg(server)
    build = build_caches(cfg, list(ROOTS), source="databento", since=SINCE, through=THROUGH)
    assert build.detail.startswith("Databento ohlcv-1m")
    _assert_caches_hold_the_archive_bars(cfg, market, trade_count=False)
    assert _wire(server) == [(COST, "ohlcv-1m")] * 2 + [(RANGE, "ohlcv-1m")] * 3 + [(RESOLVE, None)]


def test_timeouts_and_an_unreachable_api_are_clear_errors(server: DatabentoHistServer) -> None:
    server.script[(RANGE, "ohlcv-1m")] = [HANG]
    with pytest.raises(HistoryError, match=r"did not answer timeseries\.get_range \(ohlcv-1m\) within 0\.5s; "
                                           r"nothing was written, try again later"):
        fetch_databento(KEY, "GLBX.MDP3", ["CL.FUT"], SINCE, THROUGH, max_cost_usd=1.0, gateway=server.gateway,
                        timeout_s=0.5)
    closed = server.gateway.rsplit(":", 1)[0] + ":9"
    with pytest.raises(HistoryError, match=r"cannot reach the Databento Historical API for metadata\.get_cost "
                                           r"\(ohlcv-1m\) .*check network access and databento\.historical_gateway"):
        fetch_databento(KEY, "GLBX.MDP3", ["CL.FUT"], SINCE, THROUGH, max_cost_usd=1.0, gateway=closed)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``pine.cli.main`` sets up the root logger (stderr, a log file); put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level


def test_pine_warmup_build_from_databento(server: DatabentoHistServer, market: dict[str, Any], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["databento"]["historical_gateway"] = server.gateway
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    argv = ["warmup", "build", "--config", str(config), "--source", "databento", "--symbols", "CL",
            "--from", "2024-03-08", "--through", "2024-03-12"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "wrote 3 caches (" in out and "from the databento (Databento ohlcv-1m" in out
    assert f"complete through {THROUGH.isoformat()}" in out
    assert "Databento ohlcv-1m for CL.FUT from 2024-03-07T23:00:00+00:00 to 2024-03-12T22:00:00+00:00: estimated " \
           "cost $0.01" in err
    cache = cache_path(tmp_path / "runtime" / "warmup", "CL", "daily")
    expected = market["archive"].bars[("CL", "daily")]
    assert [_ohlcv_key(b) for b in read_bar_list(cache)] == [_ohlcv_key(b) for b in expected]
    log_text = "".join(p.read_text() for p in (tmp_path / "runtime" / "logs").glob("*"))
    assert "estimated cost" in log_text and KEY not in log_text + out + err

    server.costs["ohlcv-1m"] = 99.0
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert "pine warmup build: Databento ohlcv-1m history for CL.FUT" in err and "would cost $99.00" in err


def _batch_file(path: Path, market: dict[str, Any], *, header_mappings: bool) -> Path:
    """The market's trades as a Databento batch file (zstd): raw symbols in, their instrument ids mapped by date
    in the header only, no SymbolMappingMsg record in the body."""
    symbols = market["symbols"]
    mappings = [SimpleNamespace(raw_symbol=raw, intervals=[
        SimpleNamespace(start_date=date(2024, 3, 7), end_date=date(2024, 3, 13), symbol=str(iid))])
        for iid, raw in symbols.items()] if header_mappings else []
    meta = dbn.Metadata(dataset="GLBX.MDP3", start=int(SINCE.timestamp()) * 10**9, end=int(THROUGH.timestamp()) * 10**9,
                        stype_in=dbn.SType.RAW_SYMBOL, stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.TRADES,
                        symbols=sorted(symbols.values()), mappings=mappings)
    body = meta.encode() + b"".join(bytes(t) for t in market["schemas"]["trades"])
    path.write_bytes(zstandard.ZstdCompressor().compress(body))
    return path


def test_a_batch_file_with_header_mappings_only_replays_like_the_archive(market: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    batch = _batch_file(tmp_path / "glbx-mdp3-20240307-20240312.trades.dbn.zst", market, header_mappings=True)
    history = bars_from_archive([batch], ROOTS, CALENDAR)
    assert history.complete_through == THROUGH
    assert history.bars == market["archive"].bars
    # Without the header's mappings no trade can be assigned to a contract: no bars.
    bare = _batch_file(tmp_path / "bare.trades.dbn.zst", market, header_mappings=False)
    assert bars_from_archive([bare], ROOTS, CALENDAR).count() == 0
