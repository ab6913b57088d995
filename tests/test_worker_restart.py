"""A worker SIGKILLed while the hub is replaying, and restarted, processes every bar exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from pine.bus import BarPublisher
from pine.trade_records import TradeRecord
from tests.bar_factory import boundaries
from tests.worker_support import STRATEGY, bar_log, start_worker, synthetic_market, write_config
from workers.feeds import feed_name
from workers.trades_db import TradesDB


def _wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    """Poll until ``condition``; fail if the worker exits first (a guard, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


def _kill(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the worker must still be running when it is killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    proc.stdout.close()


def _finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err


def _trades(runtime: Path) -> list[TradeRecord]:
    db = TradesDB(runtime / "trades.db")
    try:
        return db.trades(STRATEGY)
    finally:
        db.close()


def test_killed_and_restarted_worker_processes_every_bar_once(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml")
    runtime = tmp_path / "runtime"
    bars = synthetic_market()
    total = len(bars)
    groups = boundaries(bars)
    publisher = BarPublisher(redis.Redis.from_url(redis_url))
    cuts = (0, len(groups) // 2, len(groups) * 4 // 5, len(groups))

    def publish_part(i: int) -> int:
        for end, group in groups[cuts[i]:cuts[i + 1]]:
            publisher.publish(group, end)
        return sum(len(g) for _, g in groups[:cuts[i + 1]])

    # Run 1 works through a backlog of half the market and is killed once a fifth of all bars is ledgered.
    available = publish_part(0)
    first = start_worker(config, redis_url, runtime)
    _wait_for(lambda: len(bar_log(runtime)) >= total // 5, first, "a fifth of the bars")
    _kill(first)
    after_first = len(bar_log(runtime))
    assert after_first <= available < total

    # Run 2 replays what run 1 ledgered, goes on, and is killed again.
    available = publish_part(1)
    second = start_worker(config, redis_url, runtime)
    _wait_for(lambda: len(bar_log(runtime)) >= after_first + total // 8, second, "an eighth more bars")
    _kill(second)
    after_second = len(bar_log(runtime))
    assert after_first < after_second <= available < total

    # Run 3 is started while the hub is still publishing and runs to the end of the replay.
    third = start_worker(config, redis_url, runtime)
    publish_part(2)
    publisher.publish([], groups[-1][0], state="finished")
    _finish(third)

    published = Counter((feed_name(b.symbol, b.timeframe), int(b.timestamp.timestamp() * 1000), 0) for b in bars)
    assert Counter(bar_log(runtime)) == published
    beat = json.loads((runtime / "heartbeat" / f"worker_{STRATEGY}.json").read_text())
    assert beat["status"] == "finished"
    assert beat["replayed_bars"] >= after_second

    # The same bars through one uninterrupted worker.
    reference = tmp_path / "reference"
    _finish(start_worker(config, redis_url, reference))
    expected = _trades(reference)
    assert len(expected) >= 6
    assert _trades(runtime) == expected


def test_sigterm_stops_the_worker_with_a_final_heartbeat(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yml")
    runtime = tmp_path / "runtime"
    bars = synthetic_market(sessions=3)
    client = redis.Redis.from_url(redis_url)
    publisher = BarPublisher(client)
    for end, group in boundaries(bars):
        publisher.publish(group, end)

    worker = start_worker(config, redis_url, runtime, stop_at_end=False)
    _wait_for(lambda: len(bar_log(runtime)) == len(bars), worker, "every bar")
    worker.send_signal(signal.SIGTERM)
    _finish(worker)

    beat = json.loads((runtime / "heartbeat" / f"worker_{STRATEGY}.json").read_text())
    assert beat["status"] == "stopped"
    assert sum(beat["bars"].values()) == len(bars)
    assert json.loads(client.get(f"heartbeat:worker:{STRATEGY}"))["status"] == "stopped"
