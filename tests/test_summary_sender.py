"""One daily summary, whoever sends it: Dagster when it runs (with the reconciliation), else the workers.

Real Redis, the real shared outbox, a local Discord stand-in, the real ``daily_summary_job`` executed
in process and the real sensors evaluated on its run.
"""

from __future__ import annotations

import logging
import time as wall
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import redis

from assets.daily_summary import daily_summary, last_closed_trading_day
from orchestration.definitions import defs
from orchestration.resources import PineConfigResource, RedisResource
from orchestration.sensors import (
    PRESENCE_TTL_S,
    dagster_presence,
    send_daily_summary,
    send_daily_summary_after_failure,
)
from pine import redis_names
from pine.bar_cache import bars_frame, cache_path, write_bars
from pine.config import PineConfig
from pine.notify.notifier import Notifier
from pine.notify.summary import day_stats, summary_event_id, summary_message
from pine.redis_server import free_port
from pine.sessions import SessionCalendar
from pine.trade_records import TradeRecord
from tests.discord_support import discord_server, event_ids, notify_config, wait_until
from tests.webhook_server import WebhookServer
from workers.backtest import series_needed
from workers.order_journal import OrderIntent, OrderJournal, OrderStatus
from workers.trades_db import TradesDB

CHICAGO = ZoneInfo("America/Chicago")
WAIT_MIN = 7 * 24 * 60  # a week: the latest close is always inside Dagster's turn, whenever the test runs


@pytest.fixture
def server() -> Iterator[WebhookServer]:
    with discord_server() as s:
        yield s


def _live_day() -> tuple[date, datetime]:
    """The latest trading day whose session has closed, and its close."""
    day = last_closed_trading_day(SessionCalendar(), datetime.now(CHICAGO))
    return day, datetime.combine(day, time(17), tzinfo=CHICAGO)


def _config(tmp_path: Path, url: str, sender: str = "auto") -> PineConfig:
    return notify_config(tmp_path, url, strategies={"s1": {"symbols": ["CL"]}}, summary_wait_minutes=WAIT_MIN,
                         daily_summary_sender=sender)


def _presence_tick(cfg: PineConfig, redis_url: str) -> dg.SkipReason:
    context = dg.build_sensor_context(resources={"pine_config": PineConfigResource(config_path=str(cfg.source)),
                                                 "redis": RedisResource(url=redis_url)})
    return dagster_presence(context)


def _worker(cfg: PineConfig, redis_url: str) -> Notifier:
    return Notifier(cfg, "worker:s1", client=redis.Redis.from_url(redis_url), strategy="s1", watch=False).start()


def _summaries(server: WebhookServer) -> list[dict]:
    return [r.body["embeds"][0] for r in server.requests
            if r.body["embeds"][0]["footer"]["text"].startswith("daily_summary:")]


def _record(db_path: Path, strategy: str, trades: list[TradeRecord], day: date) -> None:
    """``trades`` in the trades DB, each exit order journaled as acknowledged by the broker (as a paper worker does)."""
    db = TradesDB(db_path)
    db.record_step(strategy, [], trades)
    journal = OrderJournal(db)
    for t in trades:
        assert t.exit_order_id is not None
        journal.add(OrderIntent(t.exit_order_id, strategy, t.symbol, t.contract, "exit", "sell", "exit", t.size,
                                "market", None, t.exit_price, t.exit_reason, t.exit_time, day, "paper", {}))
        journal.finish(t.exit_order_id, OrderStatus.ACKNOWLEDGED, attempts=1, http_status=200, response="ok",
                       error=None)
    db.close()


def test_presence_tick_sets_the_alive_key_with_a_ttl_and_survives_a_dead_redis(
    redis_url: str, tmp_path: Path, server: WebhookServer
) -> None:
    cfg = _config(tmp_path, server.url)
    client = redis.Redis.from_url(redis_url)
    assert not client.exists(redis_names.DAGSTER_ALIVE)
    skip = _presence_tick(cfg, redis_url)
    assert isinstance(skip, dg.SkipReason)
    assert 0 < client.ttl(redis_names.DAGSTER_ALIVE) <= PRESENCE_TTL_S
    assert abs(float(client.get(redis_names.DAGSTER_ALIVE)) - wall.time()) < 3600

    dead = _presence_tick(cfg, f"redis://127.0.0.1:{free_port()}/0")
    assert "the workers send the daily summary themselves" in (dead.skip_message or "")


REPLAYED = date(2024, 7, 10)  # a day closed long ago: Dagster's schedule will never send it


@pytest.mark.parametrize("sender, dagster_seen, replayed", [
    ("auto", False, False), ("workers", True, False), ("auto", True, True), ("dagster", False, True)])
def test_workers_send_at_once_without_dagster_when_told_to_or_for_a_replayed_day(
    sender: str, dagster_seen: bool, replayed: bool, redis_url: str, tmp_path: Path, server: WebhookServer
) -> None:
    cfg = _config(tmp_path, server.url, sender)
    if dagster_seen:
        _presence_tick(cfg, redis_url)
    day, close = (REPLAYED, datetime.combine(REPLAYED, time(17), tzinfo=CHICAGO)) if replayed else _live_day()
    worker = _worker(cfg, redis_url)
    try:
        worker.progress([close])  # the only enabled worker passed the close: the set is complete
        assert worker.outbox is not None and worker.outbox.has_event(summary_event_id(day))
        wait_until(lambda: len(_summaries(server)) == 1, "the workers' summary")
    finally:
        worker.close()
    (embed,) = _summaries(server)
    assert embed["footer"]["text"] == summary_event_id(day) and "Reconciliation" not in embed["description"]


@pytest.mark.parametrize("sender, dagster_seen", [("auto", True), ("dagster", False)])
def test_when_dagster_never_sends_the_workers_fall_back_after_the_wait(
    sender: str, dagster_seen: bool, redis_url: str, tmp_path: Path, server: WebhookServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _config(tmp_path, server.url, sender)
    if dagster_seen:
        _presence_tick(cfg, redis_url)
    day, close = _live_day()
    deadline = close.timestamp() + WAIT_MIN * 60
    worker = _worker(cfg, redis_url)
    assert worker.summary is not None and worker.outbox is not None
    try:
        worker.progress([close])
        worker.summary.check_pending(deadline - 1)
        assert not worker.outbox.has_event(summary_event_id(day))  # held back for Dagster
        assert redis.Redis.from_url(redis_url).zscore(redis_names.NOTIFY_SUMMARY_PENDING, day.isoformat())
        with caplog.at_level(logging.WARNING, logger="pine.notify.summary"):
            worker.summary.check_pending(deadline)
        wait_until(lambda: len(_summaries(server)) == 1, "the fallback summary")
        worker.summary.check_pending(deadline + 60)  # nothing pending any more: no second one
    finally:
        worker.close()
    assert [e["footer"]["text"] for e in _summaries(server)] == [summary_event_id(day)]
    assert "Dagster has not sent it" in caplog.text
    assert redis.Redis.from_url(redis_url).zcard(redis_names.NOTIFY_SUMMARY_PENDING) == 0


def test_when_dagster_stops_the_workers_send_once_its_presence_key_expires(
    redis_url: str, tmp_path: Path, server: WebhookServer
) -> None:
    cfg = _config(tmp_path, server.url)
    _presence_tick(cfg, redis_url)
    day, close = _live_day()
    worker = _worker(cfg, redis_url)
    assert worker.summary is not None and worker.outbox is not None
    try:
        worker.progress([close])
        worker.summary.check_pending(wall.time())
        assert not worker.outbox.has_event(summary_event_id(day))
        redis.Redis.from_url(redis_url).delete(redis_names.DAGSTER_ALIVE)  # what its TTL does when Dagster stops
        worker.summary.check_pending(wall.time())
        wait_until(lambda: len(_summaries(server)) == 1, "the workers' summary")
    finally:
        worker.close()
    assert [e["footer"]["text"] for e in _summaries(server)] == [summary_event_id(day)]


def test_with_dagster_running_its_job_is_the_one_sender_even_when_reconciliation_fails(
    redis_url: str, tmp_path: Path, server: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, server.url)
    assert cfg.source is not None
    monkeypatch.setenv("PINE_CONFIG", str(cfg.source))  # what the code location's resources read
    monkeypatch.setenv("REDIS_URL", redis_url)
    _presence_tick(cfg, redis_url)
    day, close = _live_day()
    # A trade the backtest cannot reproduce (no bars cached for it): the parity check must fail.
    exit_time = datetime.combine(day, time(14), tzinfo=CHICAGO).astimezone(UTC)
    _record(cfg.trades_db_path, "s1", [TradeRecord(
        strategy="s1", symbol="CL", contract="CLZ6", direction="long", size=1,
        entry_time=exit_time - timedelta(hours=1),
        entry_price=70.0, exit_time=exit_time, exit_price=70.5, pnl=500.0, commission=4.0, net_pnl=496.0,
        exit_reason="signal", bars_held=60, exit_order_id="s1-x-1")], day)
    worker = _worker(cfg, redis_url)
    assert worker.summary is not None and worker.outbox is not None
    try:
        worker.progress([close])
        worker.summary.check_pending(wall.time())
        assert not worker.outbox.has_event(summary_event_id(day))  # the workers stay quiet

        # The parity check is blocking: its failure fails the run.
        job = defs.resolve_job_def("daily_summary_job")
        with dg.instance_for_test() as instance:
            result = job.execute_in_process(
                instance=instance, partition_key=day.isoformat(), raise_on_error=False,
                run_config={"ops": {"daily_summary": {"config": {"trading_day": day.isoformat()}}}})
            assert not result.success
            context = dg.build_run_status_sensor_context(
                sensor_name="send_daily_summary_after_failure", dagster_event=result.get_run_failure_event(),
                dagster_instance=instance, dagster_run=result.dagster_run,
                resources={"pine_config": PineConfigResource()})
            send_daily_summary_after_failure(context)
            send_daily_summary_after_failure(context)  # a second evaluation of the same run
        wait_until(lambda: len(_summaries(server)) == 1, "Dagster's summary")
        worker.summary.check_pending(close.timestamp() + WAIT_MIN * 60 + 1)  # the fallback finds it sent
    finally:
        worker.close()
    (embed,) = _summaries(server)
    assert embed["footer"]["text"] == summary_event_id(day)
    assert embed["title"] == f"📊 Daily summary {day.isoformat()}: +$496.00"
    assert embed["description"].splitlines()[-1] == (
        "❌ Reconciliation: 1 of 3 checks failed: live_trades_match_backtest (1 mismatches)")
    assert f"reconciliation:{day.isoformat()}" in event_ids(server.requests)  # the reconciliation's own alert
    assert Counter(event_ids(server.requests))[summary_event_id(day)] == 1
    assert redis.Redis.from_url(redis_url).zcard(redis_names.NOTIFY_SUMMARY_PENDING) == 0


def test_a_reconciled_day_gets_dagsters_summary_saying_the_checks_passed(
    redis_url: str, tmp_path: Path, server: WebhookServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, server.url)
    monkeypatch.setenv("PINE_CONFIG", str(cfg.source))
    monkeypatch.setenv("REDIS_URL", redis_url)
    _presence_tick(cfg, redis_url)
    day, close = _live_day()  # no trades, no orders, no positions: nothing to disagree
    for root, tf in series_needed(cfg, "s1"):  # caches through the close (bars of a quiet day: none)
        write_bars(cache_path(cfg.runtime_path(cfg.warmup.cache_dir), root, tf), bars_frame([]), complete_through=close)
    worker = _worker(cfg, redis_url)
    assert worker.summary is not None and worker.outbox is not None
    try:
        worker.progress([close])
        assert not worker.outbox.has_event(summary_event_id(day))
        job = defs.resolve_job_def("daily_summary_job")
        with dg.instance_for_test() as instance:
            result = job.execute_in_process(instance=instance, partition_key=day.isoformat(), raise_on_error=False)
            assert result.success
            send_daily_summary(dg.build_run_status_sensor_context(
                sensor_name="send_daily_summary", dagster_event=result.get_run_success_event(),
                dagster_instance=instance, dagster_run=result.dagster_run,
                resources={"pine_config": PineConfigResource()}))
        wait_until(lambda: len(_summaries(server)) == 1, "Dagster's summary")
    finally:
        worker.close()
    total, per = day_stats(cfg.trades_db_path, day)
    expected = summary_message(day, total, per, strategies=["s1"],
                               reconciliation="✅ Reconciliation: 3 of 3 checks passed")
    (embed,) = _summaries(server)
    assert (embed["title"], embed["description"]) == (expected.title, expected.description)
    assert [f["value"] for f in embed["fields"]] == [f.value for f in expected.fields] == ["no trades"]


def test_with_sender_workers_dagster_sends_no_summary(redis_url: str, tmp_path: Path, server: WebhookServer) -> None:
    cfg = _config(tmp_path, server.url, "workers")
    resources = {"pine_config": PineConfigResource(config_path=str(cfg.source))}
    with dg.instance_for_test() as instance:
        result = dg.materialize([daily_summary], instance=instance, resources=resources,
                                run_config={"ops": {"daily_summary": {"config": {"trading_day": "2024-07-10"}}}})
        send_daily_summary(dg.build_run_status_sensor_context(
            sensor_name="send_daily_summary", dagster_event=result.get_run_success_event(), dagster_instance=instance,
            dagster_run=result.dagster_run, resources=resources))
    box = Notifier(cfg, "test", client=None)
    assert box.outbox is not None and not box.outbox.has_event(summary_event_id(date(2024, 7, 10)))
    box.close()
    assert server.requests == []
