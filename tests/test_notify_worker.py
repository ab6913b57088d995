"""A slow Discord never slows trading: a worker trades while every webhook request takes 5 s to answer.

The measure: the wall-clock time between consecutive steps the worker recorded (``bar_log.processed_at``:
one timestamp per Backtrader step, written in the step's transaction). Were one notification sent on the
bar loop, a step would take at least the 5 s the server sleeps.
"""

from __future__ import annotations

import itertools
import statistics
from datetime import datetime
from pathlib import Path

import pytest
import redis

from pine.bus import BarPublisher
from pine.config import load_config
from pine.notify.notifier import outbox_path
from pine.notify.outbox import Outbox
from tests.discord_support import FAST_RETRY, MESSAGE, discord_server
from tests.scenario import DAYS, Feed, WorkerProc, market, query, write_config
from tests.webhook_server import Reply

SLEEP_S = 5.0
SYMBOLS = ["CL", "GC", "ES"]
PLAN = {d: dict.fromkeys(SYMBOLS, 0.1 if i % 2 == 0 else 0.9) for i, d in enumerate(DAYS)}


@pytest.mark.slow
def test_the_bar_loop_is_never_blocked_by_a_slow_webhook(redis_url: str, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    Feed(BarPublisher(redis.Redis.from_url(redis_url)), market(PLAN, SYMBOLS)).finish()
    with discord_server(lambda n, body: Reply(200, MESSAGE, delay_s=SLEEP_S)) as server:
        config = write_config(tmp_path / "c.yml", {"slow": {"symbols": SYMBOLS}},
                              notifications={**FAST_RETRY, "discord_webhook_url": server.url})
        worker = WorkerProc(config, "slow", redis_url, runtime, stop_at_end=True)
        worker.finish()
        requests_during_run = len(server.requests)
    stamps = sorted({datetime.fromisoformat(t).timestamp() for (t,) in
                     query(runtime, "SELECT processed_at FROM bar_log WHERE strategy = 'slow'")})
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    box = Outbox(outbox_path(load_config(config)))
    counts = box.counts()
    box.close()
    trades = query(runtime, "SELECT COUNT(*) FROM trades")[0][0]
    q = statistics.quantiles(steps, n=100, method="inclusive")
    print(f"\nbar loop with a {SLEEP_S:.0f}s-per-request Discord: {len(steps)} steps, p50 {q[49] * 1000:.1f} ms, "
          f"p99 {q[98] * 1000:.1f} ms, max {max(steps) * 1000:.1f} ms; {trades} trades, {sum(counts.values())} "
          f"notifications enqueued, {counts.get('delivered', 0)} delivered while the worker ran, "
          f"{requests_during_run} requests received")
    assert trades >= 10 and sum(counts.values()) >= 2 * trades  # an entry and an exit message per trade
    assert requests_during_run >= 1  # the sender was busy with the slow server while the worker traded
    assert counts.get("pending", 0) + counts.get("sending", 0) >= trades  # most still waiting: the loop did not
    assert max(steps) < SLEEP_S / 2, f"a step took {max(steps):.2f}s"
