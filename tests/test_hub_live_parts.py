"""Parts of the live hub on their own: backoff, dedupe, late trades, idempotent publishing, the Redis buffer,
the control channel, the recorder, key checks and ErrorMsg handling."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import databento_dbn as dbn
import pytest
import redis

from hub.aggregator import MINUTE_NS, Aggregator
from hub.backoff import Backoff
from hub.cold_start import plan_startup_replay, unfinished_bars
from hub.control import ControlChannel
from hub.dedupe import TradeDeduper
from hub.live import ApiKeyError, ErrorAction, check_api_key, error_action
from hub.recorder import DailyRecorder
from hub.redis_buffer import BufferedPublisher
from pine.bars import Bar
from pine.bus import BarPublisher
from pine.config import ConfigError, load_config
from pine.config.report import config_report
from pine.config.schema import ReconnectConfig
from pine.redis_server import RedisServer
from pine.sessions import SessionCalendar
from tests.live_gateway import TEST_KEY, load_records
from tests.live_support import live_client, wait_until, write_live_config

NS = 1_000_000_000
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * NS
ESH4, ESM4 = 11, 22


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_exponentially_with_jitter_below_a_cap_and_resets() -> None:
    cfg = ReconnectConfig(initial_s=0.5, max_s=4.0, multiplier=2.0, jitter=0.5)
    backoff = Backoff(cfg, random.Random(1))
    delays = [backoff.next_delay() for _ in range(7)]
    nominal = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(n * 0.5 <= d <= n for d, n in zip(delays, nominal, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5
    no_jitter = Backoff(ReconnectConfig(initial_s=1, max_s=3, jitter=0))
    assert [no_jitter.next_delay() for _ in range(3)] == [1, 2, 3]


# --------------------------------------------------------------------------- dedupe


def _trade(ts_recv: int, price: int = 100, size: int = 1, seq: int = 1, iid: int = ESH4) -> dbn.TradeMsg:
    return dbn.TradeMsg(publisher_id=1, instrument_id=iid, ts_event=ts_recv - 1000, price=price * NS, size=size,
                        action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0, ts_recv=ts_recv, flags=0,
                        ts_in_delta=0, sequence=seq)


def test_dedupe_drops_replayed_trades_counting_identical_ones_by_occurrence() -> None:
    dedupe = TradeDeduper(window_ns=2 * NS)
    seen = [_trade(T0_NS + i * NS // 10, price=100 + i % 3) for i in range(40)]
    twin = _trade(T0_NS + 40 * NS // 10)
    seen += [twin, twin]  # two identical fills at one instant: both are trades
    assert all(dedupe.accept(t) for t in seen)
    dedupe.begin_replay()
    start = dedupe.latest - dedupe.window_ns
    replay = [t for t in seen if t.ts_event >= start]
    new = [_trade(dedupe.latest + i * NS // 10, price=90) for i in range(1, 5)]
    assert [dedupe.accept(t) for t in [*replay, twin, *new]] == [False] * len(replay) + [True] * 5
    assert dedupe.dropped == len(replay)  # the third twin is new: the replay had sent only two
    assert 0 < len(replay) < len(seen)  # the window kept only the overlap


def test_dedupe_forgets_keys_older_than_the_window() -> None:
    dedupe = TradeDeduper(window_ns=NS)
    old = _trade(T0_NS)
    dedupe.accept(old)
    dedupe.accept(_trade(T0_NS + 5 * NS))
    dedupe.begin_replay()
    assert dedupe.accept(old)  # outside the replay window: the gateway would not send it again


# --------------------------------------------------------------------------- late trades


def _mapped_aggregator(**kwargs: int) -> Aggregator:
    agg = Aggregator(["ES"], SessionCalendar(), **kwargs)
    agg.on_mapping(ESH4, "ESH4", T0_NS)
    agg.on_mapping(ESM4, "ESM4", T0_NS)
    return agg


def _bars_in_order(trades: list[dbn.TradeMsg]) -> dict[tuple[str, datetime], Bar]:
    agg = _mapped_aggregator()
    bars = [b for t in sorted(trades, key=lambda t: t.ts_recv) if (x := agg.on_record(t)) for b in x.bars]
    bars += agg.flush().bars
    return {(b.timeframe, b.timestamp): b.with_flags(partial=False) for b in bars}


def test_late_trades_correct_closed_bars_to_what_in_order_data_gives() -> None:
    rng = random.Random(5)
    trades = [_trade(T0_NS + int(rng.uniform(0, 10 * 60 * NS)), price=rng.randint(90, 110), size=rng.randint(1, 9),
                     seq=n) for n in range(300)]
    trades.sort(key=lambda t: t.ts_recv)
    # Every tenth trade is delivered two minutes late (delay past the grace, or recovered by a replay).
    on_time = [t for n, t in enumerate(trades) if n % 10]
    delayed = [t for n, t in enumerate(trades) if not n % 10]
    arrivals = sorted([(t.ts_recv, t) for t in on_time] + [(t.ts_recv + 2 * MINUTE_NS, t) for t in delayed],
                      key=lambda a: a[0])
    agg = _mapped_aggregator(correction_window_ns=60 * MINUTE_NS)
    published: dict[tuple[str, datetime], Bar] = {}
    corrections = 0
    for at, trade in arrivals:
        boundary = agg.close_due(at)  # the wall clock when the trade arrives
        for bar in boundary.bars if boundary else []:
            published[bar.timeframe, bar.timestamp] = bar
        agg.on_record(trade)
        for bar in agg.take_corrections():
            assert bar.corrected
            published[bar.timeframe, bar.timestamp] = bar.with_flags(corrected=False)
            corrections += 1
    for bar in agg.flush().bars:
        published[bar.timeframe, bar.timestamp] = bar.with_flags(partial=False)
    assert agg.late_trades == len(delayed) and corrections >= 5
    assert published == _bars_in_order(trades)


def test_corrections_only_for_bars_that_changed_and_not_beyond_the_window() -> None:
    agg = _mapped_aggregator(correction_window_ns=5 * MINUTE_NS)
    agg.on_record(_trade(T0_NS + NS))
    agg.close_due(T0_NS + 20 * MINUTE_NS)
    agg.on_record(_trade(T0_NS + 19 * MINUTE_NS))  # late, within the window: a minute that had no bar
    (late_bar,) = agg.take_corrections()
    assert late_bar.corrected and late_bar.timestamp == T0 + timedelta(minutes=19) and late_bar.trade_count == 1
    assert agg.take_corrections() == []  # nothing changed since
    agg.on_record(_trade(T0_NS + 2 * NS))  # 18 minutes late: beyond the 5-minute window
    assert agg.take_corrections() == [] and agg.ignored["late_uncorrectable"] == 1
    agg.on_record(_trade(T0_NS + 19 * MINUTE_NS + NS, iid=ESM4))  # not the session's contract
    assert agg.take_corrections() == [] and agg.late_trades == 3


def test_bars_that_start_before_the_data_are_never_handed_out() -> None:
    agg = _mapped_aggregator(correction_window_ns=60 * MINUTE_NS)
    agg.start_data_at(T0_NS + 30 * NS)  # a replay from 15:00:30: that minute, its hour and its session began earlier
    agg.on_record(_trade(T0_NS + 40 * NS))
    boundary = agg.on_record(_trade(T0_NS + MINUTE_NS + NS))
    assert boundary is not None and boundary.bars == []  # minute 15:00 misses its first 30 s
    agg.on_record(_trade(T0_NS + 50 * NS))  # late for minute 15:00: it was never handed out, nothing to correct
    assert agg.take_corrections() == []
    assert [(b.timeframe, b.timestamp, b.partial) for b in agg.flush().bars] == [("1min", T0 + timedelta(minutes=1),
                                                                                  True)]
    assert agg.incomplete_bars == 3  # minute 15:00, hour 15:00, the session


def test_bars_close_by_the_wall_clock_only_past_the_boundary() -> None:
    agg = _mapped_aggregator(correction_window_ns=MINUTE_NS)
    agg.on_record(_trade(T0_NS + 30 * NS))
    assert agg.close_due(T0_NS + MINUTE_NS - 1) is None
    boundary = agg.close_due(T0_NS + MINUTE_NS)
    assert boundary is not None and [b.timeframe for b in boundary.bars] == ["1min"]
    assert boundary.watermark == T0 + timedelta(minutes=1)
    assert agg.clock == T0 + timedelta(seconds=30)  # the data clock is the data's


# --------------------------------------------------------------------------- publishing


def _bar(minute: int, price: float = 100.0, **flags: bool) -> Bar:
    start = T0 + timedelta(minutes=minute)
    return Bar(symbol="ES", timeframe="1min", timestamp=start, end=start + timedelta(minutes=1), open=price,
               high=price + 1, low=price - 1, close=price, volume=1, trade_count=1, instrument_id=ESH4,
               contract_symbol="ESH4", **flags)


def _entries(client: redis.Redis) -> list[tuple[str, dict]]:
    return [(sid.decode(), json.loads(f[b"bar"])) for sid, f in client.xrange("market:ES:1min:stream")]


def test_a_corrected_bar_is_appended_after_the_top_and_never_twice(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    publisher.publish([_bar(0), _bar(1)], T0 + timedelta(minutes=2))
    fixed = _bar(0, 101.0, corrected=True)
    assert publisher.publish([fixed], T0 + timedelta(minutes=2)) == 1
    again = BarPublisher(client)  # a restarted hub, or a retry with the tops forgotten
    assert again.publish([fixed], T0 + timedelta(minutes=2)) == 0 and again.duplicates_skipped == 1
    ms1 = int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    assert [(sid, b["corrected"]) for sid, b in _entries(client)] == [
        (f"{ms1 - 60_000}-0", False), (f"{ms1}-0", False), (f"{ms1}-1", True)]
    # The latest key keeps the newest bar: a correction of an older one does not replace it.
    assert json.loads(client.get("market:ES:1min:latest"))["timestamp"] == _bar(1).timestamp.isoformat()
    publisher.publish([_bar(2)], T0 + timedelta(minutes=3))
    assert _entries(client)[-1][0] == f"{ms1 + 60_000}-0"


def test_a_later_version_of_a_partial_newest_bar_replaces_it_as_a_correction_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    at = T0 + timedelta(minutes=2)
    BarPublisher(client).publish([_bar(0), _bar(1, partial=True)], at, state="stopped")  # a hub stopped mid-minute
    restarted = BarPublisher(client)
    assert restarted.newest_bar("ES", "1min") == _bar(1, partial=True)
    assert restarted.publish([_bar(0), _bar(1, partial=True)], at) == 0  # the same versions: duplicates
    assert restarted.publish([_bar(1, 101.0, partial=True)], at) == 1  # stopped again, with more of the minute
    assert restarted.publish([_bar(1, 102.0)], at) == 1  # the complete bar
    assert BarPublisher(client).publish([_bar(0), _bar(1, 102.0)], at) == 0  # once, whoever publishes it again
    ms1 = int((T0 + timedelta(minutes=1)).timestamp() * 1000)
    assert [(sid, b["open"], b["partial"], b["corrected"]) for sid, b in _entries(client)] == [
        (f"{ms1 - 60_000}-0", 100.0, False, False), (f"{ms1}-0", 100.0, True, False), (f"{ms1}-1", 101.0, True, True),
        (f"{ms1}-2", 102.0, False, True)]
    assert json.loads(client.get("market:ES:1min:latest")) == _bar(1, 102.0, corrected=True).to_dict()
    assert restarted.corrections_published == 2 and restarted.newest_bar("ES", "1min") == _bar(1, 102.0, corrected=True)


def _span_bar(symbol: str, timeframe: str, start: datetime, end: datetime, *, partial: bool = False) -> Bar:
    return Bar(symbol=symbol, timeframe=timeframe, timestamp=start, end=end, open=100.0, high=101.0, low=99.0,
               close=100.0, volume=1, trade_count=1, instrument_id=ESH4, contract_symbol="ESH4", partial=partial)


def test_the_startup_replay_reaches_back_to_the_earliest_unfinished_bar_within_24_hours(redis_url: str) -> None:
    calendar = SessionCalendar()  # 17:00 Chicago: 23:00 UTC in March before the DST change
    publisher = BarPublisher(redis.Redis.from_url(redis_url))
    day = datetime(2024, 3, 4, tzinfo=UTC)
    session = (day - timedelta(hours=1), day + timedelta(hours=23))  # 03-03 23:00 → 03-04 23:00

    def at(hour: int, minute: int = 0) -> datetime:
        return day + timedelta(hours=hour, minutes=minute)

    # ES: a hub stopped (SIGTERM) at 21:30:20; it flushed its open bars partial.
    publisher.publish([_span_bar("ES", "1min", at(21, 29), at(21, 30)), _span_bar("ES", "hourly", at(20), at(21))],
                      at(21, 30))
    publisher.publish([_span_bar("ES", "1min", at(21, 30), at(21, 31), partial=True),
                       _span_bar("ES", "hourly", at(21), at(22), partial=True),
                       _span_bar("ES", "daily", *session, partial=True)], at(23), state="stopped")
    # GC: a hub crashed at 22:10 in its first session: its open hourly and daily bars are nowhere.
    publisher.publish([_span_bar("GC", "1min", at(22, 9), at(22, 10)), _span_bar("GC", "hourly", at(21), at(22))],
                      at(22, 10))
    unfinished = unfinished_bars(BarPublisher(redis.Redis.from_url(redis_url)), ["ES", "GC", "NQ"], calendar)
    assert [str(u) for u in unfinished] == [
        "ES 1min 2024-03-04T21:30:00+00:00", "ES hourly 2024-03-04T21:00:00+00:00",
        "ES daily 2024-03-03T23:00:00+00:00", "GC hourly 2024-03-04T22:00:00+00:00",
        "GC daily 2024-03-03T23:00:00+00:00"]
    assert [u.partial for u in unfinished] == [True, True, True, False, False]

    def ns(ts: datetime) -> int:
        return int(ts.timestamp()) * NS

    # Restarted at 22:40, in the same session: from the session start, which every unfinished bar is in.
    plan = plan_startup_replay(ns(at(22, 40)), calendar, unfinished)
    assert (plan.start, plan.reason, plan.lost) == (ns(session[0]), "the start of the current session", [])
    # Restarted at 23:30, in the next session: the daily bars began more than 24 h ago and cannot be rebuilt; the
    # replay reaches back to the hourly bars of the previous session.
    plan = plan_startup_replay(ns(at(23, 30)), calendar, unfinished)
    assert plan.start == ns(at(21))
    assert plan.reason == "the start of the unfinished bar ES hourly 2024-03-04T21:00:00+00:00"
    assert [str(u) for u in plan.lost] == ["ES daily 2024-03-03T23:00:00+00:00", "GC daily 2024-03-03T23:00:00+00:00"]
    # Nothing published yet: the current session; nothing to replay on the session open or at the epoch.
    assert plan_startup_replay(ns(at(23, 30)), calendar, []).start == ns(at(23))
    assert plan_startup_replay(ns(at(23)), calendar, []).start is None
    assert plan_startup_replay(0, calendar, []).start is None


class CuttingProxy:
    """A TCP proxy to Redis that can hold the reply to a transaction and then cut the connection.

    Lets a test make a publish that Redis applied look failed to the client — the case where a
    retry must not create duplicates.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()  # hold the replies from the next request holding an EXEC on
        self.holding = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if not replies and self.armed.is_set() and b"EXEC" in data:
                    self.holding.set()
                if not (replies and self.holding.is_set()):
                    dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        """Close every proxied connection (held replies are lost) and stop holding."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the pump threads; a bare close() would not
            conn.close()
        self._conns = []
        self.armed.clear()
        self.holding.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_publish_applied_before_the_connection_dropped_is_not_duplicated_by_the_retry(
    redis_server: RedisServer, redis_url: str
) -> None:
    direct = redis.Redis.from_url(redis_url)
    proxy = CuttingProxy(redis_server.port)
    try:
        buffer = BufferedPublisher(BarPublisher(live_client(f"redis://127.0.0.1:{proxy.port}/0")), max_bars=100)
        buffer.submit([_bar(0), _bar(1)], T0 + timedelta(minutes=2))
        for batch, entries_after in (([_bar(2), _bar(3)], 4), ([_bar(1, 99.0, corrected=True)], 5)):
            proxy.armed.set()
            publishing = threading.Thread(target=buffer.submit, args=(batch, T0 + timedelta(minutes=4)))
            publishing.start()
            wait_until(lambda n=entries_after: len(_entries(direct)) == n, 10, "Redis to apply the transaction")
            proxy.cut()
            publishing.join(10)
            assert buffer.depth == len(batch) and buffer.publish_errors >= 1  # the client saw a failure
            assert buffer.pump(force=True) == 1 and buffer.depth == 0  # the retry
    finally:
        proxy.close()
    entries = _entries(direct)
    assert [(b["timestamp"][11:16], b["corrected"]) for _, b in entries] == [
        ("15:00", False), ("15:01", False), ("15:02", False), ("15:03", False), ("15:01", True)]
    assert buffer.publisher.duplicates_skipped == 3


def test_the_buffer_keeps_bars_in_order_while_redis_is_down_and_reports_overflow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "r").start()
    try:
        buffer = BufferedPublisher(BarPublisher(live_client(server.url)), max_bars=5)
        buffer.submit([_bar(0)], T0 + timedelta(minutes=1))
        server.stop()
        with caplog.at_level(logging.ERROR, logger="hub.redis_buffer"):
            for m in range(1, 9):
                buffer.submit([_bar(m)], T0 + timedelta(minutes=m + 1))
                buffer.submit([], T0 + timedelta(minutes=m + 1, seconds=30))  # clock-only updates coalesce
        assert buffer.depth == 5 and buffer.overflow_bars == 3 and buffer.boundaries == 5
        assert "Redis buffer overflow: 1 bars DROPPED (3 in total)" in caplog.text
        assert "Redis publish failed" in caplog.text
        server.start()
        assert buffer.drain(deadline=float("inf"))
        client = redis.Redis.from_url(server.url)
        assert [b["timestamp"][11:16] for _, b in _entries(client)] == ["15:04", "15:05", "15:06", "15:07", "15:08"]
        assert client.xrevrange("datahub:clock", count=1)[0][1][b"watermark"].decode() == (
            T0 + timedelta(minutes=9, seconds=30)).isoformat()
    finally:
        server.close()


# --------------------------------------------------------------------------- control channel


def test_without_a_configured_token_commands_need_none(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    control = ControlChannel(client, {"status": lambda cmd: {"echo": cmd.get("x")}})
    replies = client.pubsub(ignore_subscribe_messages=True)
    replies.subscribe("datahub:control:reply:me")
    reply = control.handle(json.dumps({"command": "status", "x": 7, "reply_to": "datahub:control:reply:me"}))
    assert reply == {"ok": True, "command": "status", "id": None, "result": {"echo": 7}}
    message = wait_until(lambda: replies.get_message(timeout=0.05), 5, "the reply")
    assert json.loads(message["data"]) == reply
    assert control.handle(b"\xff\xfe")["error"].startswith("malformed command, not JSON")


# --------------------------------------------------------------------------- recorder


def test_the_recorder_starts_a_self_contained_file_per_session(tmp_path: Path) -> None:
    recorder = DailyRecorder(tmp_path, SessionCalendar(), "GLBX.MDP3", ["ES.FUT"])
    mapping = dbn.SymbolMappingMsg(publisher_id=1, instrument_id=ESH4, ts_event=T0_NS, stype_in=dbn.SType.PARENT,
                                   stype_in_symbol="ES.FUT", stype_out=dbn.SType.RAW_SYMBOL, stype_out_symbol="ESH4",
                                   start_ts=T0_NS, end_ts=T0_NS)
    close = int(SessionCalendar().session_end(T0).timestamp()) * NS  # 17:00 Chicago
    recorder.write(mapping)
    for ts in (T0_NS, close - 1, close, close + NS):
        recorder.write(_trade(ts))
    recorder.close()
    files = sorted(tmp_path.glob("*.dbn"))
    second = f"glbx-mdp3-{datetime.fromtimestamp(close // NS, UTC):%Y%m%dT%H%M%S}.000000Z.live.dbn"
    assert [f.name for f in files] == ["glbx-mdp3-20240305T150000.000000Z.live.dbn", second]
    for path, count in zip(files, (2, 2), strict=True):
        records = load_records([path])
        assert isinstance(records[0], dbn.SymbolMappingMsg) and len(records) == 1 + count


# --------------------------------------------------------------------------- keys and gateway errors


def test_api_key_checks_name_the_problem_but_never_the_key() -> None:
    assert check_api_key(f" {TEST_KEY} ") == TEST_KEY
    with pytest.raises(ApiKeyError, match=r"^DATABENTO_API_KEY is not set"):
        check_api_key(None)
    with pytest.raises(ApiKeyError, match=r"^DATABENTO_API_KEY is not set"):
        check_api_key("  ")
    for bad in ("db-short", "xx-" + "a" * 29, "db-" + "a" * 28 + "!"):
        with pytest.raises(ApiKeyError, match="is not a valid Databento API key") as info:
            check_api_key(bad)
        assert bad not in str(info.value)


def test_gateway_error_codes_decide_what_the_hub_does() -> None:
    def action(code: dbn.ErrorCode) -> ErrorAction:
        return error_action(dbn.ErrorMsg(0, "x", code=code))

    assert action(dbn.ErrorCode.AUTH_FAILED) is ErrorAction.FATAL
    assert action(dbn.ErrorCode.API_KEY_DEACTIVATED) is ErrorAction.FATAL
    assert action(dbn.ErrorCode.INVALID_SUBSCRIPTION) is ErrorAction.FATAL
    assert action(dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED) is ErrorAction.SKIP_SYMBOL
    assert action(dbn.ErrorCode.SKIPPED_RECORDS_AFTER_SLOW_READING) is ErrorAction.REPLAY
    assert action(dbn.ErrorCode.REPLAY_DATA_AGED_OUT) is ErrorAction.NO_REPLAY
    assert action(dbn.ErrorCode.CONNECTION_LIMIT_EXCEEDED) is ErrorAction.RETRY
    assert action(dbn.ErrorCode.UNSET) is ErrorAction.RETRY


# --------------------------------------------------------------------------- config


def test_the_hub_section_has_defaults_names_bad_keys_and_hides_the_token(tmp_path: Path) -> None:
    cfg = load_config(write_live_config(tmp_path / "a.yml", port=13000, runtime=tmp_path, control_token="tok-xyz-123"))
    assert cfg.hub.close_grace_ms == 250 and cfg.hub.feed_heartbeat_s == 5 and cfg.hub.redis_buffer_max_bars > 0
    assert cfg.hub.control_token is not None and "tok-xyz-123" not in config_report(cfg)
    with pytest.raises(ConfigError) as info:
        load_config(write_live_config(tmp_path / "b.yml", port=13000, runtime=tmp_path, close_grace_ms=-1,
                                      reconnect={"initial_s": 5, "max_s": 1}, feed_heartbeat_s=1))
    text = str(info.value)
    assert "hub.close_grace_ms" in text and "hub.feed_heartbeat_s" in text and "hub.reconnect" in text
