"""The hub replays DBN files into Redis: pub/sub, streams, latest keys, heartbeat, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import databento_dbn as dbn
import pytest
import redis
import zstandard

from hub.main import ReplayStats, parse_speed, run_replay
from hub.synthetic import write_synthetic_market
from pine.config import PineConfig, load_config
from pine.contracts import load_contract_map
from pine.redis_server import free_port

REPO = Path(__file__).resolve().parents[1]
BAR_FIELDS = {"symbol", "timeframe", "timestamp", "end", "open", "high", "low", "close", "volume", "trade_count",
              "instrument_id", "contract_symbol"}
ABSURD = 99_999  # every price of the non-trade records: it must never reach a bar


@pytest.fixture(scope="module")
def es_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic trading day of ES (about 20,000 trades; ESH4 is the front contract)."""
    contract_map = load_contract_map(REPO / "data" / "contract_map.yml")
    return write_synthetic_market(tmp_path_factory.mktemp("es"), ["ES"], date(2024, 3, 5), 1, 3, contract_map)[0]


@pytest.fixture
def cfg() -> PineConfig:
    return load_config()


def stream_bars(client: redis.Redis, root: str, timeframe: str) -> list[str]:
    return [entry[b"bar"].decode() for _, entry in client.xrange(f"market:{root}:{timeframe}:stream")]


def test_a_raw_subscriber_receives_the_bars_while_the_replay_runs(
    es_day: Path, redis_url: str, cfg: PineConfig
) -> None:
    client = redis.Redis.from_url(redis_url)
    pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("market:ES:1min")
    result: list[ReplayStats | BaseException] = []

    def replay() -> None:
        try:
            result.append(run_replay(cfg, [es_day], client))
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=replay)
    worker.start()
    received: list[str] = []
    seen_while_running = False
    while True:
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            received.append(message["data"].decode())
            seen_while_running = seen_while_running or worker.is_alive()
        elif not worker.is_alive():
            break
    worker.join()
    pubsub.close()

    stats = result[0]
    assert isinstance(stats, ReplayStats), stats
    assert seen_while_running
    stream = stream_bars(client, "ES", "1min")
    assert len(stream) > 1000
    assert received == stream
    assert client.get("market:ES:1min:latest").decode() == stream[-1]
    for timeframe in ("hourly", "daily"):
        assert client.get(f"market:ES:{timeframe}:latest").decode() == stream_bars(client, "ES", timeframe)[-1]
    first = json.loads(received[0])
    assert set(first) >= BAR_FIELDS and first["symbol"] == "ES" and first["timeframe"] == "1min"
    assert first["contract_symbol"] == "ESH4" and first["timestamp"].endswith("+00:00")

    clock = client.xrange("datahub:clock")
    assert clock[-1][1][b"state"] == b"finished"
    assert len(clock) > 1000  # a tick for every minute of data, bars or not
    heartbeat = json.loads(client.get("heartbeat:hub"))
    assert heartbeat["status"] == "finished" and heartbeat["trades"] == stats.trades > 15_000
    assert heartbeat["bars_published"] == stats.bars_published
    assert json.loads((cfg.runtime_dir / "heartbeat" / "hub.json").read_text())["status"] == "finished"


def mixed_file(source: Path, out: Path) -> Path:
    """``source``'s records with MBP-1, statistics, definition and OHLCV records interleaved (zstd)."""
    records = dbn.DBNDecoder().write_and_decode(source.read_bytes())
    meta = records[0]
    header = dbn.Metadata(dataset=meta.dataset, start=meta.start, stype_in=dbn.SType.PARENT,
                          stype_out=dbn.SType.INSTRUMENT_ID, schema=None, symbols=["ES.FUT"]).encode()
    absurd = ABSURD * 1_000_000_000
    parts = [header]
    for n, rec in enumerate(records[1:]):
        if isinstance(rec, dbn.SymbolMappingMsg):
            parts.append(bytes(dbn.InstrumentDefMsg(
                publisher_id=1, instrument_id=rec.instrument_id, ts_event=rec.ts_event, ts_recv=rec.ts_event,
                min_price_increment=250_000_000, display_factor=1_000_000_000, raw_symbol=rec.stype_out_symbol,
                asset="ES", security_type="FUT", instrument_class=dbn.InstrumentClass.FUTURE,
                security_update_action=dbn.SecurityUpdateAction.ADD,
            )))
        elif n % 2 == 0:
            iid, ts = rec.instrument_id, rec.ts_recv
            parts.append(bytes(dbn.MBP1Msg(
                publisher_id=1, instrument_id=iid, ts_event=ts, price=absurd, size=500, action=dbn.Action.ADD,
                side=dbn.Side.BID, depth=0, ts_recv=ts,
                levels=dbn.BidAskPair(bid_px=absurd, ask_px=absurd, bid_sz=1, ask_sz=1, bid_ct=1, ask_ct=1),
            )))
            parts.append(bytes(dbn.StatMsg(publisher_id=1, instrument_id=iid, ts_event=ts, ts_recv=ts, ts_ref=ts,
                                           price=absurd, quantity=5, stat_type=dbn.StatType.SETTLEMENT_PRICE)))
            parts.append(bytes(dbn.OHLCVMsg(rtype=dbn.RType.OHLCV_1M, publisher_id=1, instrument_id=iid, ts_event=ts,
                                            open=absurd, high=absurd, low=absurd, close=absurd, volume=777)))
        parts.append(bytes(rec))
    out.write_bytes(zstandard.ZstdCompressor().compress(b"".join(parts)))
    return out


def all_bars(client: redis.Redis) -> dict[str, list[str]]:
    return {tf: stream_bars(client, "ES", tf) for tf in ("1min", "hourly", "daily")}


def test_only_trades_make_bars_in_a_mixed_record_file(
    es_day: Path, tmp_path: Path, redis_url: str, cfg: PineConfig
) -> None:
    mixed = mixed_file(es_day, tmp_path / "mixed.dbn.zst")
    client = redis.Redis.from_url(redis_url)
    stats = run_replay(cfg, [mixed], client)
    from_mixed = all_bars(client)
    client.flushall()
    run_replay(cfg, [es_day], client)
    from_trades = all_bars(client)

    assert stats.records > 2 * stats.trades  # the other record types were really there
    assert from_mixed == from_trades
    assert len(from_mixed["1min"]) > 1000
    bars = [json.loads(b) for tf in from_mixed.values() for b in tf]
    assert max(b["high"] for b in bars) < ABSURD / 10
    assert sum(b["volume"] for b in bars if b["timeframe"] == "daily") > 0


def test_replaying_the_same_file_twice_adds_no_duplicate(es_day: Path, redis_url: str, cfg: PineConfig) -> None:
    client = redis.Redis.from_url(redis_url)
    first = run_replay(cfg, [es_day], client)
    before = all_bars(client)
    second = run_replay(cfg, [es_day], client)

    assert first.bars_published > 1000 and first.duplicates_skipped == 0
    assert second.bars_published == 0 and second.duplicates_skipped == first.bars_published
    assert all_bars(client) == before
    for timeframe in ("1min", "hourly", "daily"):
        ids = [sid for sid, _ in client.xrange(f"market:ES:{timeframe}:stream")]
        assert len(ids) == len(set(ids)) == len(before[timeframe])


# --------------------------------------------------------------------------- the CLI


def pine_hub(args: list[str], *, redis_url: str, runtime: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "PINE_RUNTIME_DIR": str(runtime)}
    return subprocess.run([sys.executable, "-m", "pine.cli", "hub", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


def assert_clean_failure(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pine hub: ")
    for needle in needles:
        assert needle in last
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr


def test_cli_replays_a_directory(es_day: Path, tmp_path: Path, redis_url: str) -> None:
    done = pine_hub(["--replay", str(es_day.parent), "--speed", "max"], redis_url=redis_url, runtime=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "replayed 1 file(s)" in done.stdout
    assert redis.Redis.from_url(redis_url).xlen("market:ES:1min:stream") > 1000


def test_cli_corrupt_file(es_day: Path, tmp_path: Path, redis_url: str) -> None:
    data = bytearray(es_day.read_bytes())
    start = len(data) - 5000 * 48  # the file ends with ~20,000 trades of 48 bytes
    assert data[start:start + 2] == bytes([48 // 4, int(dbn.RType.MBP_0)])
    data[start + 1] = int(dbn.RType.MBP_10)  # would make the Rust decoder panic
    bad = tmp_path / "corrupt.dbn"
    bad.write_bytes(bytes(data))
    done = pine_hub(["--replay", str(bad)], redis_url=redis_url, runtime=tmp_path)
    assert_clean_failure(done, str(bad), "corrupt record")


def test_cli_truncated_file_publishes_no_flushed_bars(es_day: Path, tmp_path: Path, redis_url: str) -> None:
    bad = tmp_path / "truncated.dbn"
    bad.write_bytes(es_day.read_bytes()[:-30])
    done = pine_hub(["--replay", str(bad)], redis_url=redis_url, runtime=tmp_path)
    assert_clean_failure(done, str(bad), "truncated: 18 trailing bytes after record")
    client = redis.Redis.from_url(redis_url)
    assert client.xlen("market:ES:1min:stream") > 1000  # what was complete got through
    assert all(not json.loads(b)["partial"] for tf in all_bars(client).values() for b in tf)
    assert b"finished" not in {entry[b"state"] for _, entry in client.xrange("datahub:clock")}
    assert json.loads(client.get("heartbeat:hub"))["status"] == "failed"


def test_cli_not_a_dbn_file_and_missing_file(tmp_path: Path, redis_url: str) -> None:
    text = tmp_path / "notes.dbn"
    text.write_text("this is not market data\n")
    assert_clean_failure(pine_hub(["--replay", str(text)], redis_url=redis_url, runtime=tmp_path), "not a DBN file")
    missing = tmp_path / "missing.dbn"
    assert_clean_failure(pine_hub(["--replay", str(missing)], redis_url=redis_url, runtime=tmp_path),
                         str(missing), "no such file")


def test_cli_redis_unreachable(es_day: Path, tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done = pine_hub(["--replay", str(es_day)], redis_url=closed, runtime=tmp_path)
    assert_clean_failure(done, "cannot reach Redis at redis://127.0.0.1:")


def test_cli_live_mode_without_a_key_points_to_replay(tmp_path: Path, redis_url: str) -> None:
    done = pine_hub([], redis_url=redis_url, runtime=tmp_path)
    assert done.returncode == 2
    assert "DATABENTO_API_KEY" in done.stderr and "--replay" in done.stderr
    assert not redis.Redis.from_url(redis_url).keys("market:*")


def test_speed_argument() -> None:
    assert parse_speed("max") is None and parse_speed("MAX") is None
    assert parse_speed("60") == 60.0 and parse_speed("0.5") == 0.5
    for bad in ("0", "-2", "fast", "nan", "inf", ""):
        with pytest.raises(ValueError, match="--speed must be 'max' or a positive number"):
            parse_speed(bad)
