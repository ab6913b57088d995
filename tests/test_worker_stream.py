"""Reading bar streams: the clock watermark, the COUNT-limit rule, bad messages."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from pine import redis_names
from pine.bars import Bar
from pine.bus import BarPublisher
from tests.bar_factory import boundaries
from tests.worker_support import bar_log, start_worker, synthetic_market, write_config
from workers.bar_stream import StreamBarSource, StreamedBar, parse_stream_id
from workers.feeds import feed_name

T0 = datetime(2024, 3, 5, 14, 0, tzinfo=UTC)


def _bar(symbol: str, timeframe: str, start_min: int, length_min: int = 1, price: float = 100.0) -> Bar:
    start = T0 + timedelta(minutes=start_min)
    return Bar(symbol=symbol, timeframe=timeframe, timestamp=start, end=start + timedelta(minutes=length_min),
               open=price, high=price + 1, low=price - 1, close=price, volume=1, trade_count=1,
               instrument_id=1, contract_symbol=f"{symbol}H4")


def _xadd_bar(client: redis.Redis, bar: Bar) -> None:
    client.xadd(redis_names.stream(bar.symbol, bar.timeframe), {"bar": bar.to_json()},
                id=redis_names.bar_stream_id(bar.timestamp))


def _clock(client: redis.Redis, minute: int, state: str = "running") -> None:
    client.xadd(redis_names.CLOCK_STREAM, {"watermark": (T0 + timedelta(minutes=minute)).isoformat(), "state": state})


def _drain(source: StreamBarSource, *streams: str) -> list[StreamedBar]:
    out = []
    for s in streams:
        while (sb := source.pop_ready(s)) is not None:
            out.append(sb)
    return out


def _source(client: redis.Redis, count: int = 1000) -> tuple[StreamBarSource, str, str]:
    source = StreamBarSource(client, count=count, block_ms=10)
    return source, source.subscribe("CL", "1min"), source.subscribe("CL", "daily")


def test_a_bar_is_released_only_when_the_clock_reaches_its_end(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    source, minute, _ = _source(client)
    _xadd_bar(client, _bar("CL", "1min", 0))
    _xadd_bar(client, _bar("CL", "1min", 5))
    source.start()
    assert source.watermark is None and not source.has_ready()

    _clock(client, 1)
    source.poll(block=False)
    assert [sb.bar.timestamp for sb in _drain(source, minute)] == [T0]

    _clock(client, 5)
    source.poll(block=False)
    assert _drain(source, minute) == []  # the 14:05 bar ends at 14:06
    _clock(client, 6)
    source.poll(block=False)
    assert len(_drain(source, minute)) == 1


def test_start_reads_the_latest_clock_entry_before_the_bars(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    for m in range(3):
        publisher.publish([_bar("CL", "1min", m)], T0 + timedelta(minutes=m + 1))
    source, minute, _ = _source(client)
    source.start()
    assert len(_drain(source, minute)) == 3
    assert not source.finished


def test_full_stream_holds_the_watermark_back_to_its_last_bar(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    for m in range(5):
        _xadd_bar(client, _bar("CL", "1min", m))  # ends 14:01 … 14:05
    _xadd_bar(client, _bar("CL", "daily", -57, 60))  # ends 14:03
    _clock(client, 5)
    source, minute, daily = _source(client, count=2)
    source.start()
    # Only two minute bars were read: the daily bar ending 14:03 must wait for the 14:03 minute bar.
    assert source.watermark == T0 + timedelta(minutes=2)
    assert [sb.end.minute for sb in _drain(source, minute, daily)] == [1, 2]
    source.poll(block=False)
    assert source.watermark == T0 + timedelta(minutes=4)
    assert [(sb.bar.timeframe, sb.end.minute) for sb in _drain(source, minute, daily)] == [
        ("1min", 3), ("1min", 4), ("daily", 3)]
    source.poll(block=False)
    assert source.watermark == T0 + timedelta(minutes=5)
    assert [sb.end.minute for sb in _drain(source, minute, daily)] == [5]


def test_finished_releases_everything_published(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    publisher.publish([_bar("CL", "1min", 0)], T0 + timedelta(minutes=1))
    # A partial bar flushed at the end of a replay ends after the final watermark.
    publisher.publish([_bar("CL", "daily", -60, 120).with_flags(partial=True)], T0 + timedelta(minutes=1),
                      state="finished")
    source, minute, daily = _source(client)
    source.start()
    assert source.finished
    assert len(_drain(source, minute, daily)) == 2
    assert source.drained(minute) and source.drained(daily)


def test_bad_bar_messages_are_logged_with_their_stream_id_and_skipped(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    stream = redis_names.stream("CL", "1min")
    _xadd_bar(client, _bar("CL", "1min", 0))
    bad = {
        "1709647260001-0": {"bar": "{not json"},
        "1709647260002-0": {"bar": '{"symbol": "CL", "timeframe": "1min"}'},
        "1709647260003-0": {"note": "no bar field"},
        "1709647260004-0": {"bar": _bar("CL", "1min", 0).to_json()},  # ends before the bar above it
        "1709647260005-0": {"bar": _bar("GC", "1min", 1).to_json()},  # another symbol's bar
    }
    for sid, fields in bad.items():
        client.xadd(stream, fields, id=sid)
    _xadd_bar(client, _bar("CL", "1min", 2))
    _clock(client, 3)
    source, minute, _ = _source(client)
    with caplog.at_level(logging.ERROR, logger="workers.bar_stream"):
        source.start()
    assert [sb.end.minute for sb in _drain(source, minute)] == [1, 3]
    assert source.bad_messages == len(bad)
    for sid in bad:
        assert any(f"{stream} {sid}" in r.getMessage() for r in caplog.records), sid


def test_worker_skips_a_malformed_bar_and_logs_it(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml")
    runtime = tmp_path / "runtime"
    bars = synthetic_market(sessions=3)
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    groups = boundaries(bars)
    half = len(groups) // 2
    for end, group in groups[:half]:
        publisher.publish(group, end)
    last_cl = max((b for _, g in groups[:half] for b in g if b.symbol == "CL" and b.timeframe == "1min"),
                  key=lambda b: b.timestamp)
    bad_id = f"{int(last_cl.timestamp.timestamp() * 1000) + 1}-0"
    client.xadd(redis_names.stream("CL", "1min"), {"bar": '{"symbol": "CL", "open": "NaN"'}, id=bad_id)
    for end, group in groups[half:]:
        publisher.publish(group, end)
    publisher.publish([], groups[-1][0], state="finished")

    worker = start_worker(config, redis_url, runtime)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert f"skipping bad bar message market:CL:1min:stream {bad_id}" in err
    published = Counter((feed_name(b.symbol, b.timeframe), int(b.timestamp.timestamp() * 1000), 0) for b in bars)
    assert Counter(bar_log(runtime)) == published


def test_a_corrected_bar_replaces_a_queued_bar_and_keeps_its_place(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    for m in range(3):
        publisher.publish([_bar("CL", "1min", m)], T0 + timedelta(minutes=1))  # only 14:00 is complete
    source, minute, _ = _source(client)
    source.start()
    assert [sb.bar.timestamp.minute for sb in _drain(source, minute)] == [0]  # 14:01 and 14:02 are queued
    fixed = _bar("CL", "1min", 1, price=101.0).with_flags(corrected=True)
    publisher.publish([fixed], T0 + timedelta(minutes=3))
    source.poll(block=False)
    released = _drain(source, minute)
    assert [sb.bar for sb in released] == [fixed, _bar("CL", "1min", 2)]
    # The stream holds the correction after the top; the worker keeps the original's place (ledger order).
    assert [sb.stream_id for sb in released] == [parse_stream_id(redis_names.bar_stream_id(T0 + timedelta(minutes=m)))
                                                 for m in (1, 2)]
    assert client.xrevrange(redis_names.stream("CL", "1min"), count=1)[0][0].endswith(b"-1")
    assert source.corrections_applied == 1 and source.corrections_ignored == 0 and source.bad_messages == 0


def test_a_correction_for_a_processed_bar_is_logged_and_not_traded_again(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    for m in range(2):
        publisher.publish([_bar("CL", "1min", m)], T0 + timedelta(minutes=m + 1))
    source, minute, _ = _source(client)
    source.start()
    assert len(_drain(source, minute)) == 2
    publisher.publish([_bar("CL", "1min", 0, price=99.0).with_flags(corrected=True)], T0 + timedelta(minutes=2))
    publisher.publish([_bar("CL", "1min", 2)], T0 + timedelta(minutes=3))
    with caplog.at_level(logging.WARNING, logger="workers.bar_stream"):
        source.poll(block=False)
    assert [sb.bar.timestamp.minute for sb in _drain(source, minute)] == [2]
    assert source.corrections_ignored == 1 and source.bad_messages == 0
    assert any("arrived after that bar was processed" in r.getMessage() for r in caplog.records)


def test_a_partial_bar_is_held_until_its_complete_version_arrives(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    publisher.publish([_bar("CL", "1min", 0)], T0 + timedelta(minutes=1))
    # The hub stops mid-minute: the open bar is flushed partial and the clock covers it.
    partial = _bar("CL", "1min", 1).with_flags(partial=True)
    publisher.publish([partial], T0 + timedelta(minutes=2), state="stopped")
    source, minute, _ = _source(client)
    source.start()
    assert [sb.bar for sb in _drain(source, minute)] == [_bar("CL", "1min", 0)]
    assert not source.has_ready()  # the partial bar is not traded
    # The restarted hub replays the session and publishes the complete bar as a correction.
    complete = _bar("CL", "1min", 1, price=102.0).with_flags(corrected=True)
    publisher.publish([complete], T0 + timedelta(minutes=2))
    source.poll(block=False)
    assert [sb.bar for sb in _drain(source, minute)] == [complete]
    assert source.partial_released == 0 and source.corrections_applied == 1


def test_a_partial_bar_the_hub_never_completes_is_released_when_the_stream_moves_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    partial = _bar("CL", "1min", 0).with_flags(partial=True)
    publisher.publish([partial], T0 + timedelta(minutes=1), state="stopped")
    source, minute, _ = _source(client)
    source.start()
    assert not source.has_ready()
    publisher.publish([_bar("CL", "1min", 3)], T0 + timedelta(minutes=4))
    with caplog.at_level(logging.WARNING, logger="workers.bar_stream"):
        source.poll(block=False)
        released = _drain(source, minute)
    assert [sb.bar for sb in released] == [partial, _bar("CL", "1min", 3)]
    assert source.partial_released == 1
    assert any("releasing partial bar" in r.getMessage() for r in caplog.records)
