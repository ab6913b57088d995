"""Restart with an open position: the strategy's exit rule still closes it, even when the replay cannot
rebuild it (trimmed stream), and the result equals an uninterrupted backtest."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pine import redis_names
from pine.bus import BarPublisher
from pine.config import load_config
from tests.scenario import DAYS, Feed, WorkerProc, market, query, session_close, write_config
from workers.engine import run_backtest
from workers.feeds import FEED_TIMEFRAMES
from workers.trades_db import TradesDB

STRATEGY = "ibs_r"
# Enter at the close of D1, hold through D2 and D3, IBS exit at the close of D4 (3 daily bars held).
PLAN = {DAYS[0]: {"CL": 0.1}, DAYS[1]: {"CL": 0.5}, DAYS[2]: {"CL": 0.5}, DAYS[3]: {"CL": 0.9}, DAYS[4]: {}}


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "trim"), [("kill", True), ("term", False)], ids=["sigkill-trimmed", "sigterm-replay"])
def test_a_restarted_worker_closes_its_open_position_by_the_exit_rule(
        redis_url: str, tmp_path: Path, stop: str, trim: bool) -> None:
    config = write_config(tmp_path / "c.yml", {STRATEGY: {"symbols": ["CL"]}})
    runtime = tmp_path / "runtime"
    bars = market(PLAN, ["CL"])
    client = redis.Redis.from_url(redis_url)
    feed = Feed(BarPublisher(client), bars)

    first = WorkerProc(config, STRATEGY, redis_url, runtime)
    feed.until(session_close(DAYS[1]))  # entered, one daily bar held
    first.wait_bars(feed.published(["CL"]))
    if stop == "kill":
        first.kill()
    else:
        assert first.stop() == 0
    [(symbol, entry_cid, held)] = query(runtime, "SELECT symbol, entry_order_id, bars_held FROM positions")
    assert (symbol, entry_cid, held) == ("CL", f"{STRATEGY}-CL-20240205T230000Z-buy", 1)
    if trim:  # stream retention dropped every processed bar: the replay has nothing to rebuild from
        for tf in FEED_TIMEFRAMES:
            client.xtrim(redis_names.stream("CL", tf), maxlen=0)

    second = WorkerProc(config, STRATEGY, redis_url, runtime, stop_at_end=True)
    feed.finish()
    second.finish()

    db = TradesDB(runtime / "trades.db")
    live = db.trades(STRATEGY)
    expected = run_backtest(load_config(config), STRATEGY, bars).trades
    assert live == expected and len(live) == 1
    [trade] = live
    assert (trade.exit_reason, trade.bars_held, trade.entry_order_id) == ("ibs_exit", 3, entry_cid)
    assert db.open_positions(STRATEGY) == {}
    # Two orders in all: the entry was not sent again after the restart.
    assert query(runtime, "SELECT client_order_id, status FROM orders ORDER BY created_at") == [
        (entry_cid, "acknowledged"), (f"{STRATEGY}-CL-20240208T230000Z-sell", "acknowledged")]
    assert client.hlen(redis_names.PORTFOLIO_SLOTS) == 0
    restored = [f for _, f in client.xrange(redis_names.PORTFOLIO_EVENTS) if f[b"kind"] == b"position_restored"]
    assert len(restored) == (1 if trim else 0)
    assert ("restoring long 1 @" in second.stderr) == trim
    assert "position mismatch" not in second.stderr
