"""Warmup → live hand-over: stream bars the caches already hold are skipped, bars published while the
worker warms up are all processed after it, none twice; the trades equal a backtest over the same bars."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import redis

from pine.bars import Bar
from pine.bus import BarPublisher
from pine.config import load_config
from pine.redis_server import connect
from tests.bar_factory import boundaries
from tests.warmup_support import session_close, write_caches
from tests.worker_support import STRATEGY, bar_log, synthetic_market, write_config
from workers.backtest import backtest_window
from workers.engine import resolve_strategy
from workers.feeds import feed_name
from workers.main import Worker
from workers.trades_db import TradesDB


def _series(bars: list[Bar]) -> dict[tuple[str, str], list[Bar]]:
    out: dict[tuple[str, str], list[Bar]] = {}
    for b in sorted(bars, key=lambda b: b.end):
        out.setdefault((b.symbol, b.timeframe), []).append(b)
    return out


def test_bars_published_during_warmup_are_neither_lost_nor_processed_twice(redis_url: str, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "config.yml"))
    bars = synthetic_market()
    days = sorted({b.end.date() for b in bars if b.timeframe == "daily"})
    handover = session_close(days[11])
    # The caches hold everything up to the hand-over; the hub's streams start two sessions earlier (overlap).
    write_caches(cfg.runtime_path(cfg.warmup.cache_dir), _series([b for b in bars if b.end <= handover]), handover)
    stream = [b for b in bars if b.end > handover - timedelta(days=2)]
    groups = boundaries(stream)
    cut = next(i for i, (end, _) in enumerate(groups) if end > handover + timedelta(days=3))
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    for end, group in groups[:cut]:
        publisher.publish(group, end)

    worker = Worker(cfg, resolve_strategy(cfg, STRATEGY), connect(redis_url), stop_at_end=True)
    tick = worker.journal.on_step
    during: list[str] = []

    def publish_the_rest_while_warming_up() -> None:
        if not during:  # the first warmup step: the worker has read its streams' first batch already
            during.append(worker.status)
            for end, group in groups[cut:]:
                publisher.publish(group, end)
            publisher.publish([], groups[-1][0], state="finished")
        tick()

    worker.journal.on_step = publish_the_rest_while_warming_up
    assert worker.run() == 0
    assert during == ["warming_up"] and worker.warmup_state == "done"
    assert worker.statuses == ["starting", "warming_up", "ready", "finished"]

    live = [b for b in stream if b.end > handover]
    assert Counter(bar_log(cfg.runtime_dir)) == Counter(
        (feed_name(b.symbol, b.timeframe), int(b.timestamp.timestamp() * 1000), 0) for b in live)
    # Stream bars ending by the hand-over were read (the minute streams from a day before it) and skipped.
    assert worker.source.warmup_overlap > 0
    assert worker.source.bad_messages == 0
    assert sum(worker.journal.stats.warmup_bars.values()) == worker.warmup.total > 0

    expected = backtest_window(cfg, STRATEGY, _series(bars), handover, max(b.end for b in bars)).journal.trades
    db = TradesDB(cfg.trades_db_path)
    trades = db.trades(STRATEGY)
    db.close()
    assert trades == sorted(expected, key=lambda t: (t.exit_time, t.symbol, t.entry_time))
    assert len(trades) >= 3 and min(t.entry_time for t in trades) > handover

