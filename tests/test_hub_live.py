"""The live hub against a local gateway, through the real ``databento.Live`` client and a real Redis.

Each test serves a synthetic market through ``tests.live_gateway`` and compares what the hub
published with ``pine hub --replay`` of the same DBN files: a live session, a dropped
connection, a graceful close, a contract roll, bars closed by the wall clock with late trades,
must all end with the replay's bars. The hub's wall clock is a manual clock: it moves only
when a test moves it, so bars close on data unless a test says otherwise.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import pytest
import redis

from hub.aggregator import MINUTE_NS
from pine.config import PineConfig, load_config
from tests.live_gateway import LiveGateway, ManualClock, RecordMarket, load_records
from tests.live_support import (
    all_streams,
    effective,
    es_market,
    make_hub,
    mid_minute,
    replayed_streams,
    running_hub,
    stream,
    trade_count,
    wait_processed,
    wait_until,
    write_live_config,
)

ROOTS = ["ES", "GC"]
GRACE_NS = 250_000_000


@pytest.fixture(scope="module")
def es_day(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One trading day of ES only (GC is configured but the gateway does not know it)."""
    return es_market(tmp_path_factory.mktemp("es"), date(2024, 3, 5), 1, 3)


@pytest.fixture(scope="module")
def es_roll(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """ES on Thu 2024-03-07 (roll day: volume moves to ESM4) and Fri 03-08 (whose bars come from ESM4)."""
    return es_market(tmp_path_factory.mktemp("roll"), date(2024, 3, 7), 2, 11)


def _trade_indices(records: list) -> list[int]:
    return [i for i, r in enumerate(records) if isinstance(r, dbn.TradeMsg)]


def _config(tmp_path: Path, gateway: LiveGateway, **options: Any) -> PineConfig:
    return load_config(write_live_config(tmp_path / "config.yml", port=gateway.port, runtime=tmp_path / "rt",
                                         **options))


def _heartbeat(url: str) -> dict:
    return json.loads(redis.Redis.from_url(url).get("heartbeat:hub"))


def test_a_live_session_publishes_the_bars_of_a_replay_of_the_same_data(
    es_day: list[Path], tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = load_records(es_day)
    with LiveGateway(RecordMarket(records)) as gateway:
        cfg = _config(tmp_path, gateway)
        hub = make_hub(cfg, redis_url)
        with caplog.at_level(logging.INFO), running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0

    heartbeat_file = json.loads((cfg.runtime_dir / "heartbeat" / "hub.json").read_text())
    client = redis.Redis.from_url(redis_url)
    live = all_streams(client, ROOTS)
    assert live == replayed_streams(cfg, es_day, redis_url)
    assert len(live["ES", "1min"]) > 1000 and live["GC", "1min"] == []
    session = gateway.sessions[0]
    assert len(gateway.sessions) == 1 and session.heartbeat_interval_s == cfg.hub.feed_heartbeat_s == 5
    assert session.subscriptions == [{"schema": "trades", "stype_in": "parent", "symbols": "ES.FUT,GC.FUT",
                                      "snapshot": "0", "id": "0", "is_last": "1"}]
    # GC.FUT does not resolve at this gateway: named, and the session went on.
    assert any("symbol GC.FUT did not resolve" in r.getMessage() for r in caplog.records)
    beat = _heartbeat(redis_url)
    assert beat["status"] == "stopped" and beat["feed"]["unresolved_symbols"] == ["GC.FUT"]
    assert beat["trades"] == trade_count(records) and beat["bars_published"] == sum(map(len, live.values()))
    assert beat["gaps_total"] == 0 and beat["feed"]["reconnects"] == 0 and beat["corrected_bars"] == 0
    assert beat["symbols"]["ES"]["contract"] == "ESH4" and beat["symbols"]["ES"]["last_trade"].startswith("2024-03-05")
    assert heartbeat_file["status"] == "stopped" and heartbeat_file["trades"] == beat["trades"]
    assert json.loads(live["ES", "1min"][-1])["partial"]  # the open minute, flushed at the stop


@pytest.mark.parametrize("how", ["drop", "close"])
def test_a_lost_connection_is_replayed_and_the_bars_equal_an_uninterrupted_run(
    how: str, es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    market = RecordMarket(records)
    cut = mid_minute(records, 0.6)
    missed = 300  # published while the hub is away: only the replay brings them
    (market.drop_at if how == "drop" else market.close_at)(cut, missed=missed)
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway, roots=("ES",))  # every symbol resolves: no ErrorMsg in the session
        hub = make_hub(cfg, redis_url)
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0

    client = redis.Redis.from_url(redis_url)
    assert all_streams(client, ["ES"]) == replayed_streams(cfg, es_day, redis_url)  # no gap, no duplicate
    first, second = gateway.sessions[:2]
    assert len(gateway.sessions) == 2 and first.ended_by == how and second.replay_start is not None
    last_seen = max(r.ts_recv for r in records[:cut] if isinstance(r, dbn.TradeMsg))
    (gap,) = _heartbeat(redis_url)["gaps"]
    # The replay starts the overlap (2 s) before the last trade the hub received; a reset may lose
    # records in flight, a graceful close does not.
    received = second.replay_start + 2_000_000_000
    assert datetime.fromisoformat(gap["start"]) == (datetime.fromtimestamp(received // 10**9, UTC)
                                                    + timedelta(microseconds=received % 10**9 // 1000))
    assert received == last_seen if how == "close" else received <= last_seen
    missed_trades = trade_count(records[:cut + missed]) - trade_count(records[:cut])
    assert gap["recovered"] >= missed_trades and gap["duplicates"] > 0
    assert gap["recovered"] + gap["duplicates"] == second.replayed
    if how == "close":  # nothing was in flight: exactly the missed trades were new
        assert gap["recovered"] == missed_trades
        assert gap["reason"] == "the gateway closed the session"
    else:
        assert "Connection reset by peer" in gap["reason"]
    assert gap["replayed"] and gap["start"].startswith("2024-03-05") and gap["end"] > gap["start"]
    status = hub.status()
    assert status["feed"]["reconnects"] == 1 and status["duplicates_dropped"] == gap["duplicates"]
    assert status["corrected_bars"] == 0 and status["late_trades"] == 0


def test_a_fatal_gateway_error_stops_the_hub_with_a_clear_message(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    market = RecordMarket(records)
    market.error_at(mid_minute(records, 0.3), dbn.ErrorCode.API_KEY_DEACTIVATED, "API key deactivated")
    with LiveGateway(market) as gateway:
        hub = make_hub(_config(tmp_path, gateway), redis_url)
        with running_hub(hub) as runner:
            assert runner.join() == 1
        assert len(gateway.sessions) == 1  # no reconnect after a fatal error
    assert hub.fatal is not None
    assert "API key deactivated" in hub.fatal and "API_KEY_DEACTIVATED" in hub.fatal
    assert "DATABENTO_API_KEY" in hub.fatal
    beat = _heartbeat(redis_url)
    assert beat["status"] == "failed" and beat["reason"] == hub.fatal
    minute = stream(redis.Redis.from_url(redis_url), "ES", "1min")
    assert json.loads(minute[-1][1])["partial"] and not any(json.loads(b)["partial"] for _, b in minute[:-1])


def test_a_key_the_gateway_refuses_stops_the_hub_without_retrying(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    with LiveGateway(RecordMarket(load_records(es_day))) as gateway:
        hub = make_hub(_config(tmp_path, gateway), redis_url, key="db-" + "W" * 29)
        with running_hub(hub) as runner:
            assert runner.join() == 1
    assert [s.auth_error for s in gateway.sessions] == ["Authentication failed."]
    assert hub.fatal == ("the Databento gateway rejected the API key (BentoError: Authentication failed.); "
                         "check DATABENTO_API_KEY")
    assert "W" * 29 not in json.dumps(_heartbeat(redis_url))


def test_the_front_contract_rolls_during_a_live_session(es_roll: list[Path], tmp_path: Path, redis_url: str) -> None:
    records = load_records(es_roll)
    market = RecordMarket(records)
    first_trade = _trade_indices(records)[0]
    day_two = next(i for i, r in enumerate(records) if i > first_trade and isinstance(r, dbn.SymbolMappingMsg))
    market.drop_at(day_two + 500)  # a reconnect after the roll must keep the new front contract
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway)
        hub = make_hub(cfg, redis_url)
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0
        assert len(gateway.sessions) == 2

    live = all_streams(redis.Redis.from_url(redis_url), ROOTS)
    assert live == replayed_streams(cfg, es_roll, redis_url)
    contracts = [json.loads(b)["contract_symbol"] for b in live["ES", "1min"]]
    switch = contracts.index("ESM4")
    assert contracts[:switch] == ["ESH4"] * switch and set(contracts[switch:]) == {"ESM4"}
    assert [json.loads(b)["contract_symbol"] for b in live["ES", "daily"]] == ["ESH4", "ESM4"]
    assert hub.status()["symbols"]["ES"]["contract"] == "ESM4"


def test_a_minute_closes_by_the_wall_clock_and_late_trades_correct_it(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    market = RecordMarket(records)
    hold = mid_minute(records, 0.5)
    minute_start = records[hold].ts_recv - records[hold].ts_recv % MINUTE_NS
    minute_end = minute_start + MINUTE_NS
    late = [r for r in records[hold:] if isinstance(r, dbn.TradeMsg) and r.ts_recv < minute_end]
    late_es = [r for r in late if r.instrument_id == records[hold].instrument_id]  # the front contract's
    market.hold(hold)
    clock = ManualClock()
    client = redis.Redis.from_url(redis_url)
    replies = client.pubsub(ignore_subscribe_messages=True)
    replies.subscribe("datahub:control:reply")
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway)
        hub = make_hub(cfg, redis_url, clock=clock)

        def settled() -> None:
            """Until the hub has looked at the clock again: it answers a flush command after doing so."""
            client.publish("datahub:control", json.dumps({"command": "flush"}))
            wait_until(lambda: replies.get_message(timeout=0.05), 10, "the flush reply")

        def minute_bars() -> list[dict]:
            return [json.loads(b) for _, b in stream(client, "ES", "1min")
                    if json.loads(b)["timestamp"].startswith(_iso_minute(minute_start))]

        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records[:hold]), upto=hold)
            clock.set(minute_end + GRACE_NS - 1)
            settled()
            assert minute_bars() == []  # the grace period has not passed
            clock.set(minute_end + GRACE_NS)
            wait_until(minute_bars, 10, "the minute closed by the wall clock")
            (closed,) = minute_bars()
            assert not closed["corrected"] and not closed["partial"]
            market.release()
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0

    live = all_streams(client, ROOTS)
    replayed = replayed_streams(cfg, es_day, redis_url)
    # What consumers end up with equals the replay; in the stream, the minute has its first version
    # and then corrections, appended after the stream's top with the original timestamp.
    assert {k: effective(v) for k, v in live.items()} == {k: effective(v) for k, v in replayed.items()}
    entries = [(sid, json.loads(b)) for sid, b in stream(client, "ES", "1min")]
    versions = [(sid, b) for sid, b in entries if b["timestamp"] == closed["timestamp"]]
    (first_id, first), *corrections = versions
    assert first == closed and corrections and all(b["corrected"] for _, b in corrections)
    assert corrections[-1][1]["trade_count"] == closed["trade_count"] + len(late_es)
    assert first_id == f"{minute_start // 1_000_000}-0"
    for sid, _ in corrections:
        assert _sid(sid) > _sid(first_id) and _sid(sid)[1] > 0  # the next id after the top when published
    assert sum(b["corrected"] for _, b in entries) == len(corrections)
    status = hub.status()
    assert status["late_trades"] == len(late) and status["corrected_bars"] == len(corrections)


def _iso_minute(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).isoformat()


def _sid(text: str) -> tuple[int, int]:
    ms, seq = text.split("-")
    return int(ms), int(seq)


def test_a_connection_lost_before_the_first_trade_is_replayed_from_the_session_start(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    market = RecordMarket(records)
    market.drop_at(_trade_indices(records)[0] + 1, missed=200)
    clock = ManualClock(records[0].ts_event)  # the session starts streaming at the market's open
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway, roots=("ES",))
        hub = make_hub(cfg, redis_url, clock=clock)
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0
    assert all_streams(redis.Redis.from_url(redis_url), ["ES"]) == replayed_streams(cfg, es_day, redis_url)
    assert gateway.sessions[1].replay_start <= records[0].ts_event - 2_000_000_000
    assert hub.status()["gaps_total"] == 1


def test_a_minute_closed_before_a_silent_disconnect_is_corrected_by_the_replay(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    """The wall clock closes a minute while the connection is already dead but not yet noticed."""
    records = load_records(es_day)
    market = RecordMarket(records)
    hold = mid_minute(records, 0.4)
    minute_end = records[hold].ts_recv - records[hold].ts_recv % MINUTE_NS + MINUTE_NS
    market.hold(hold)
    clock = ManualClock()
    client = redis.Redis.from_url(redis_url)
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway, roots=("ES",))
        hub = make_hub(cfg, redis_url, clock=clock)
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records[:hold]), upto=hold)
            clock.set(minute_end + GRACE_NS)
            wait_until(lambda: hub.agg.watermark_ns == minute_end, 10, "the wall-clock close")
            market.drop_at(hold, missed=40)
            gateway.wait_sessions(2)
            market.release()
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0

    live = all_streams(client, ["ES"])
    assert {k: effective(v) for k, v in live.items()} == {
        k: effective(v) for k, v in replayed_streams(cfg, es_day, redis_url).items()}
    corrected = [json.loads(b) for b in live["ES", "1min"] if json.loads(b)["corrected"]]
    assert corrected and {b["end"] for b in corrected} == {_iso_minute(minute_end)}
    (gap,) = hub.status()["gaps"]
    assert gap["recovered"] >= trade_count(records[:hold + 40]) - trade_count(records[:hold])


@pytest.mark.slow
def test_a_silent_connection_is_noticed_by_the_heartbeat_timeout_and_replayed(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    """No data and no heartbeats: the client gives up after its heartbeat interval + 10 s (about 15 s)."""
    records = load_records(es_day)
    market = RecordMarket(records)
    market.silence_at(mid_minute(records, 0.5))
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway, roots=("ES",))
        hub = make_hub(cfg, redis_url)
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records), timeout=60)
            assert runner.stop() == 0
    assert all_streams(redis.Redis.from_url(redis_url), ["ES"]) == replayed_streams(cfg, es_day, redis_url)
    # The client gave up on the silent connection and closed it (no socket left behind).
    assert gateway.sessions[0].ended_by == "silence, closed by the client"
    assert gateway.sessions[1].replay_start is not None
    (gap,) = hub.status()["gaps"]
    assert "Gateway timeout" in gap["reason"]
