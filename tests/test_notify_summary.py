"""The daily summary: figures checked against a hand-computed fixture, and one message per trading day from two
worker processes trading the same market (plus entries and exits that match the trades DB)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis

from pine import redis_names
from pine.bus import BarPublisher
from pine.config import load_config
from pine.notify.notifier import Notifier
from pine.notify.summary import day_stats, summary_message
from pine.trade_records import TradeRecord
from tests.discord_support import FAST_RETRY, discord_server, event_ids, notify_config, wait_until
from tests.scenario import DAYS, Feed, WorkerProc, market, query, write_config
from workers.trades_db import TradesDB

DAY = date(2024, 2, 5)  # Monday; the session closes 23:00 UTC


def _trade(strategy: str, symbol: str, net: float, exit_hour: int, *, day: int = 5) -> TradeRecord:
    entry = datetime(2024, 2, day - 1, 23, 30, tzinfo=UTC)
    return TradeRecord(strategy=strategy, symbol=symbol, contract=f"{symbol}H4", direction="long", size=1,
                       entry_time=entry.replace(minute=exit_hour), entry_price=100.0,
                       exit_time=datetime(2024, 2, day, exit_hour, tzinfo=UTC), exit_price=101.0, pnl=net + 4.0,
                       commission=4.0, net_pnl=net, exit_reason="signal", bars_held=1)


def test_summary_figures_match_a_hand_computed_day(tmp_path: Path) -> None:
    db = TradesDB(tmp_path / "runtime" / "trades.db")
    db.record_step("s1", [], [_trade("s1", "CL", 500.0, 10), _trade("s1", "GC", -200.0, 12),
                              _trade("s1", "ES", 300.0, 14)])
    db.record_step("s2", [], [_trade("s2", "CL", -100.0, 11), _trade("s2", "6A", 50.0, 15),
                              _trade("s2", "GC", 9999.0, 10, day=6)])  # another trading day: not counted
    db.close()
    # By hand: s1 +600 (3 trades, 2 wins, PF 800/200 = 4.00, best +500 CL, worst -200 GC);
    # s2 -50 (2 trades, 1 win, PF 50/100 = 0.50); all +550, 5 trades, 3 wins = 60%, PF 850/300 = 2.83.
    total, per = day_stats(tmp_path / "runtime" / "trades.db", DAY)
    msg = summary_message(DAY, total, per, strategies=["s1", "s2", "s3"])
    assert msg.event_id == "daily_summary:2024-02-05" and msg.color == 0x2ECC71
    assert msg.title == "📊 Daily summary 2024-02-05: +$550.00"
    assert msg.description == ("**+$550.00** net · 5 trades · win rate 60% · profit factor 2.83\n"
                               "Best +$500.00 CL (s1) · worst -$200.00 GC (s1)")
    assert [(f.name, f.value) for f in msg.fields] == [
        ("s1", "3 trades · +$600.00 · win 67% · PF 4.00\nbest +$500.00 CL · worst -$200.00 GC"),
        ("s2", "2 trades · -$50.00 · win 50% · PF 0.50\nbest +$50.00 6A · worst -$100.00 CL"),
        ("s3", "no trades"),
    ]
    # The same figures arrive at Discord through the outbox.
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url, strategies={"s1": {"symbols": ["CL"]}, "s2": {"symbols": ["GC"]},
                                                              "s3": {"symbols": ["ES"]}})
        n = Notifier(cfg, "test", client=None).start()
        n.enqueue_summary(DAY, [])
        wait_until(lambda: len(server.requests) == 1, "the summary")
        n.close()
    (embed,) = server.requests[0].body["embeds"]
    assert embed["title"] == msg.title and embed["description"] == msg.description
    assert [f["value"] for f in embed["fields"]] == [f.value for f in msg.fields]


PLAN = {d: {} for d in DAYS} | {DAYS[0]: {"CL": 0.1, "GC": 0.1}, DAYS[1]: {"CL": 0.9}, DAYS[2]: {"GC": 0.9},
                                 DAYS[3]: {"CL": 0.1}, DAYS[5]: {"CL": 0.9, "GC": 0.1}}


@pytest.mark.slow
def test_two_workers_send_one_summary_per_trading_day_and_every_entry_and_exit(redis_url: str,
                                                                                tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    Feed(BarPublisher(redis.Redis.from_url(redis_url)), market(PLAN, ["CL", "GC"])).finish()
    with discord_server() as server:
        config = write_config(tmp_path / "c.yml", {"s1": {"symbols": ["CL"]}, "s2": {"symbols": ["GC"]}},
                              notifications={**FAST_RETRY, "discord_webhook_url": server.url,
                                             "types": {"system": "off"}})
        workers = [WorkerProc(config, s, redis_url, runtime, stop_at_end=True) for s in ("s1", "s2")]
        for w in workers:
            w.finish()
        cfg = load_config(config)
        box = Notifier(cfg, "test", client=None)
        assert box.outbox is not None
        box.start()  # delivers whatever the workers left (they drain for a few seconds only)
        wait_until(lambda: box.outbox.open_count() == 0, "the outbox to drain")  # type: ignore[union-attr]
        box.close()
    ids = event_ids(server.requests)
    summaries = Counter(i for i in ids if i.startswith("daily_summary:"))
    assert summaries == Counter({f"daily_summary:{d.isoformat()}": 1 for d in DAYS}), summaries
    client = redis.Redis.from_url(redis_url)
    for d in DAYS:  # both workers passed every close: whichever completed the set sent it, the other did not
        assert client.smembers(redis_names.notify_summary_closed(d)) == {b"s1", b"s2"}
    assert client.zcard(redis_names.NOTIFY_SUMMARY_PENDING) == 0
    # The figures are the trades DB's for that day.
    by_id = {r.body["embeds"][0]["footer"]["text"]: r.body["embeds"][0] for r in server.requests}
    traded_days = 0
    for d in DAYS:
        total, per = day_stats(runtime / "trades.db", d)
        expected = summary_message(d, total, per, strategies=["s1", "s2"])
        got = by_id[expected.event_id]
        assert (got["title"], got["description"]) == (expected.title, expected.description)
        assert [f["value"] for f in got["fields"]] == [f.value for f in expected.fields]
        traded_days += total.trades > 0
    assert traded_days >= 2
    trades = query(runtime, "SELECT trade_id FROM trades")
    entries = query(runtime, "SELECT client_order_id FROM fills WHERE role = 'entry'")
    assert sorted(i for i in ids if i.startswith("exit:")) == sorted(f"exit:{t}" for (t,) in trades)
    assert sorted(i for i in ids if i.startswith("entry:")) == sorted(f"entry:{c}" for (c,) in entries)
    assert len(trades) >= 3 and len(ids) == len(set(ids))
