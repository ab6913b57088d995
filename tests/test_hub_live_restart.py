"""A live hub started or restarted mid-session: its bars equal those of an uninterrupted run.

Real ``databento.Live`` client against ``tests.live_gateway``, real Redis. The market goes on while no
hub runs (``RecordMarket.advance_to``); the new hub's first subscription replays the session, and the
bars it publishes are compared with ``pine hub --replay`` of the same DBN files. Each hub's wall clock
is a manual clock set to when it starts, so bars close on data unless a test moves it.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import pytest
import redis

from hub.supervisor import LiveHub
from pine.config import PineConfig, load_config
from tests.live_gateway import LiveGateway, ManualClock, RecordMarket, load_records
from tests.live_support import (
    TIMEFRAMES,
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

NS = 1_000_000_000
GRACE_NS = 250_000_000


@pytest.fixture(scope="module")
def es_day(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One trading day of ES (session 2024-03-05: 03-04 23:00 → 03-05 23:00 UTC, trades from the open)."""
    return es_market(tmp_path_factory.mktemp("es"), date(2024, 3, 5), 1, 3)


@pytest.fixture(scope="module")
def es_two_days(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """ES on 2024-03-07 and 03-08: the first session's daily bar closes when the second one trades."""
    return es_market(tmp_path_factory.mktemp("two"), date(2024, 3, 7), 2, 11)


def _config(tmp_path: Path, gateway: LiveGateway) -> PineConfig:
    return load_config(write_live_config(tmp_path / "config.yml", port=gateway.port, runtime=tmp_path / "rt",
                                         roots=("ES",)))


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // NS, UTC).isoformat()


def _bars(raw: list[str]) -> list[dict[str, Any]]:
    return [json.loads(b) for b in raw]


def _without_flag(bar: dict[str, Any]) -> dict[str, Any]:
    """A bar as ``effective`` gives it: without the ``corrected`` flag."""
    return {k: v for k, v in bar.items() if k != "corrected"}


def _front(records: list[Any]) -> int:
    """Instrument id of ESH4, the contract the first session's bars are built from (nearest expiry)."""
    return next(r.instrument_id for r in records
                if isinstance(r, dbn.SymbolMappingMsg) and r.stype_out_symbol == "ESH4")


def _wait_last_trade(live_hub: LiveHub, gateway: LiveGateway) -> None:
    """Until the market has published everything and the hub has handled its last trade (whether or not it had
    the earlier ones: a hub without the replay fails the test's assertions, not this wait)."""
    market = gateway.market
    last = max(r.ts_recv for r in market.records if isinstance(r, dbn.TradeMsg))
    wait_until(lambda: market.published == len(market) and live_hub.dedupe.latest == last and not len(live_hub.inbox),
               60, "the hub to receive the last trade")


def _run_until_stopped(live_hub: LiveHub, gateway: LiveGateway, *, upto: int | None = None,
                       reason: str = "test over") -> None:
    """Run ``live_hub`` until it has handled the market's trades up to record ``upto`` (default: all), then stop it
    (it flushes its open bars marked partial)."""
    with running_hub(live_hub) as runner:
        if upto is None:
            _wait_last_trade(live_hub, gateway)
        else:
            wait_processed(live_hub, gateway, trade_count(gateway.market.records[:upto]), upto=upto)
        live_hub.request_stop(reason)
        assert runner.join() == 0
    # Its gateway session must be over before the market moves on, or it could take records the next hub misses.
    wait_until(lambda: all(s.ended_by for s in gateway.sessions), 10, "the gateway to see the hub go")


def test_a_hub_started_mid_session_replays_the_session_so_far(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    session_open = records[0].ts_event  # the synthetic day starts with its session, 17:00 Chicago
    start_at = mid_minute(records, 0.5)
    market = RecordMarket(records)
    market.advance_to(start_at)  # half the session traded before the hub started
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway)
        hub = make_hub(cfg, redis_url, clock=ManualClock(records[start_at].ts_recv))
        _run_until_stopped(hub, gateway)

    # Every bar of the session, the first hours included, as if the hub had run since the open.
    assert all_streams(redis.Redis.from_url(redis_url), ["ES"]) == replayed_streams(cfg, es_day, redis_url)
    assert [s.replay_start for s in gateway.sessions] == [session_open]
    startup = hub.status()["feed"]["startup_replay"]
    assert startup == {"start": _iso(session_open), "reason": "the start of the current session", "unfinished": [],
                       "not_recoverable": [], "trades": trade_count(records[:start_at])}


def test_a_hub_restarted_mid_session_publishes_the_daily_and_hourly_bars_of_an_uninterrupted_run(
    es_two_days: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_two_days)
    session_open = records[0].ts_event
    first_trade = next(i for i, r in enumerate(records) if isinstance(r, dbn.TradeMsg))
    day_two = next(i for i, r in enumerate(records) if i > first_trade and isinstance(r, dbn.SymbolMappingMsg))
    stop_at = mid_minute(records[:day_two], 0.6, _front(records))  # its minute has a bar when the hub stops
    restart_at = mid_minute(records[:day_two], 0.7)  # traded while no hub ran: only the replay brings it
    market = RecordMarket(records)
    market.hold(stop_at)
    client = redis.Redis.from_url(redis_url)
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway)
        first = make_hub(cfg, redis_url, clock=ManualClock(session_open))  # started on the session open
        _run_until_stopped(first, gateway, upto=stop_at)
        before = all_streams(client, ["ES"])
        market.advance_to(restart_at)
        market.release()
        second = make_hub(cfg, redis_url, clock=ManualClock(records[restart_at].ts_recv))
        _run_until_stopped(second, gateway)

    after = all_streams(client, ["ES"])
    replayed = replayed_streams(cfg, es_two_days, redis_url)
    for tf in ("hourly", "daily"):
        flushed = json.loads(before["ES", tf][-1])
        assert flushed["partial"]  # the first hub stopped mid-session
        assert after["ES", tf][:len(before["ES", tf])] == before["ES", tf]
        since_restart = _bars(after["ES", tf][len(before["ES", tf]):])
        uninterrupted = [b for b in _bars(replayed["ES", tf]) if b["timestamp"] >= flushed["timestamp"]]
        # The bar the first hub left partial comes complete (as a correction of the partial one), then every later
        # bar once, each equal to the replay's.
        assert [b["corrected"] for b in since_restart] == [True] + [False] * (len(uninterrupted) - 1)
        assert [{**b, "corrected": False} for b in since_restart] == uninterrupted
        assert not since_restart[0]["partial"]  # the second session closed the first one's daily bar
    assert {k: effective(v) for k, v in after.items()} == {k: effective(v) for k, v in replayed.items()}
    assert [s.replay_start for s in gateway.sessions] == [None, session_open]
    startup = second.status()["feed"]["startup_replay"]
    assert startup["start"] == _iso(session_open) and startup["not_recoverable"] == []
    assert startup["unfinished"] == [f"ES {tf} {json.loads(before['ES', tf][-1])['timestamp']}" for tf in TIMEFRAMES]


def test_bars_flushed_partial_at_sigterm_are_followed_by_exactly_one_complete_correction_after_a_restart(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    session_open = records[0].ts_event
    session_close = session_open + 24 * 3600 * NS
    stop_at = mid_minute(records, 0.55, _front(records))  # its minute has a bar when the hub stops
    market = RecordMarket(records)
    market.hold(stop_at)
    client = redis.Redis.from_url(redis_url)
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway)
        # SIGTERM in `pine hub` asks the hub to stop with the signal's name (hub.main.live_command).
        _run_until_stopped(make_hub(cfg, redis_url, clock=ManualClock(session_open)), gateway, upto=stop_at,
                           reason="SIGTERM")
        before = all_streams(client, ["ES"])
        market.advance_to(stop_at + 40)  # the restart takes a moment
        market.release()
        clock = ManualClock(records[stop_at + 40].ts_recv)
        second = make_hub(cfg, redis_url, clock=clock)
        with running_hub(second) as runner:
            _wait_last_trade(second, gateway)
            clock.set(session_close + GRACE_NS)  # the session closes on the wall clock: every bar completes
            wait_until(lambda: second.agg.watermark_ns == session_close and not second.buffer.depth, 10,
                       "the bars of the session to close")
            assert runner.stop() == 0

    partial = {tf: json.loads(before["ES", tf][-1]) for tf in TIMEFRAMES}
    assert all(b["partial"] for b in partial.values())
    assert sum(b["partial"] for v in before.values() for b in _bars(v)) == 3
    replayed = replayed_streams(cfg, es_day, redis_url)
    uninterrupted = {tf: {b["timestamp"]: {**b, "partial": False} for b in effective(replayed["ES", tf])}
                     for tf in TIMEFRAMES}
    for tf in TIMEFRAMES:
        entries = [(sid, json.loads(b)) for sid, b in stream(client, "ES", tf)]
        stamp = partial[tf]["timestamp"]
        versions = [(sid, b) for sid, b in entries if b["timestamp"] == stamp]
        assert len(versions) == 2, f"{tf}: the partial bar and one correction expected, got {versions}"
        (_, flushed), (fix_id, fix) = versions
        assert flushed == partial[tf]
        assert fix["corrected"] and not fix["partial"] and _without_flag(fix) == uninterrupted[tf][stamp]
        start_ms = int(datetime.fromisoformat(stamp).timestamp() * 1000)
        assert fix_id == f"{start_ms}-1"  # the next id after the partial bar, which was the top
        # No other bar twice, no other correction; the final versions are the uninterrupted run's, all complete.
        stamps = [b["timestamp"] for _, b in entries]
        assert len(stamps) == len(set(stamps)) + 1
        assert [b for _, b in entries if b["corrected"]] == [fix]
        assert effective([json.dumps(b) for _, b in entries]) == list(uninterrupted[tf].values())
    assert stream(client, "ES", "daily")[-1][1] == json.dumps(fix, separators=(",", ":"))  # the daily stream ends so
    status = second.status()
    assert status["corrected_bars"] == 3 and status["late_trades"] == 0 and status["incomplete_bars"] == 0
