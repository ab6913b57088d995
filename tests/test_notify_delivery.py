"""Discord delivery through a real local HTTP server: payload shape, 429 storms, 5xx, 4xx, duplicates,
late alerts, per-type settings, channels, and notifications off. Real SQLite outbox in the runtime dir."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pine.notify.discord import SUPPRESS_NOTIFICATIONS
from pine.notify.messages import emergency_message
from pine.notify.notifier import Notifier, outbox_path
from pine.trade_records import FillRecord, TradeRecord
from tests.discord_support import MESSAGE, discord_server, event_ids, notify_config, rate_limited, wait_until
from tests.webhook_server import Received, Reply

ENTRY = FillRecord(client_order_id="s1-CL-20240205T230000Z-buy", strategy="s1", symbol="CL", contract="CLH4",
                   role="entry", side="buy", quantity=2, requested_price=78.12, fill_price=78.15, commission=9.0,
                   fill_time=datetime(2024, 2, 5, 23, 6, tzinfo=UTC), source="paper")
WIN = TradeRecord(strategy="s1", symbol="CL", contract="CLH4", direction="long", size=2,
                  entry_time=datetime(2024, 2, 5, 23, 6, tzinfo=UTC), entry_price=78.15,
                  exit_time=datetime(2024, 2, 7, 23, 6, tzinfo=UTC), exit_price=78.75, pnl=1200.0, commission=18.0,
                  net_pnl=1182.0, exit_reason="ibs_exit", bars_held=2, ml_score=0.734)
LOSS = TradeRecord(strategy="s1", symbol="CL", contract="CLH4", direction="short", size=1,
                   entry_time=datetime(2024, 2, 8, 23, 6, tzinfo=UTC), entry_price=78.00,
                   exit_time=datetime(2024, 2, 9, 3, 36, tzinfo=UTC), exit_price=78.25, pnl=-250.0, commission=9.0,
                   net_pnl=-259.0, exit_reason="stop", bars_held=0, ml_score=None)


def _delivered(server: Any) -> list[Received]:
    """Requests the script answered 2xx (the server's ``accepted`` list, in order)."""
    return [r for r in server.requests if r.body.get("_accepted")]


def _drain(n: Notifier, timeout: float = 60) -> None:
    assert n.outbox is not None
    wait_until(lambda: n.outbox.open_count() == 0, "the outbox to drain", timeout)  # type: ignore[union-attr]


def _fields(body: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in body["embeds"][0].get("fields", [])}


def test_payload_shape_of_entry_exit_and_system_messages(tmp_path: Path) -> None:
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url)
        n = Notifier(cfg, "worker:s1", client=None, strategy="s1").start()
        n.entry(ENTRY, ml_score=0.61)
        n.exit(WIN)
        n.exit(LOSS)
        n.started("3 symbols")
        _drain(n)
        n.close()
    assert event_ids(server.requests) == [f"entry:{ENTRY.client_order_id}", f"exit:{WIN.trade_id}",
                                          f"exit:{LOSS.trade_id}", f"started:worker:s1:{n.run_id}"]
    assert all(r.path.endswith("?wait=true") for r in server.requests)
    entry, win, loss, started = (r.body for r in server.requests)
    for body in (entry, win, loss, started):
        assert body["username"] == "Pine" and body["allowed_mentions"] == {"parse": []}
        (embed,) = body["embeds"]
        assert set(embed) <= {"title", "description", "color", "fields", "footer", "timestamp"}
        assert datetime.fromisoformat(embed["timestamp"]).tzinfo is not None
    assert entry["embeds"][0]["title"] == "📈 ENTRY CL LONG 2 @ 78.15"
    assert _fields(entry) == {"Strategy": "s1", "Symbol": "CL", "Contract": "CLH4", "Side": "LONG", "Size": "2",
                              "Price": "78.15", "Signal price": "78.12", "Filled": "2024-02-05 23:06 UTC",
                              "ML score": "0.610"}
    # Exit: P&L in currency and ticks (CL tick 0.01: 60 ticks up on a long), duration, exit price and reason.
    assert win["embeds"][0]["title"] == "✅ EXIT CL LONG +$1,182.00" and win["embeds"][0]["color"] == 0x2ECC71
    assert _fields(win) == {
        "Strategy": "s1", "Symbol": "CL", "Contract": "CLH4", "Side": "LONG", "Size": "2", "Net P&L": "+$1,182.00",
        "Ticks": "+60.0", "Gross / commission": "+$1,200.00 / $18.00", "Entry → exit": "78.15 → 78.75",
        "Duration": "2d 0h 00m (2 daily bars)", "Exit reason": "ibs_exit", "Closed": "2024-02-07 23:06 UTC",
        "ML score": "0.734"}
    assert loss["embeds"][0]["color"] == 0xE74C3C and _fields(loss)["Ticks"] == "-25.0"  # short, price rose
    assert _fields(loss)["Duration"] == "4h 30m (0 daily bars)" and "ML score" not in _fields(loss)
    # Types set to "on" notify; "system" is silent by default: posted with SUPPRESS_NOTIFICATIONS.
    assert "flags" not in entry and started["flags"] == SUPPRESS_NOTIFICATIONS


def test_the_entry_says_the_ml_score_shadow_mode_or_that_no_model_vetoes(tmp_path: Path) -> None:
    ml = {"ml_enabled": True}
    strategies = {"s1": {"symbols": ["CL", "GC"], "instruments": {"CL": ml, "GC": ml}},
                  "s2": {"symbols": ["CL"], "instruments": {"CL": ml}, "ml_shadow": True},
                  "s3": {"symbols": ["GC"]}}
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url, strategies=strategies)
        n = Notifier(cfg, "test", client=None).start()
        n.entry(ENTRY, ml_score=0.6124)  # s1 CL: decided by its model
        n.entry(replace(ENTRY, client_order_id="s1-GC-x-buy", symbol="GC"))  # ML-enabled, no champion
        n.entry(replace(ENTRY, client_order_id="s2-CL-x-buy", strategy="s2"), ml_score=0.31)  # shadow: never vetoes
        n.entry(replace(ENTRY, client_order_id="s3-GC-x-buy", strategy="s3", symbol="GC"))  # no ML for s3
        _drain(n)
        n.close()
    assert [_fields(r.body).get("ML score") for r in server.requests] == [
        "0.612", "no model: no veto", "0.310 (shadow mode: recorded, never vetoes)", None]


def test_a_429_storm_is_waited_out_with_retry_after_and_every_message_arrives_once_in_order(tmp_path: Path) -> None:
    waits = {1: 0.3, 2: 0.2, 4: 0.25, 5: 0.2, 6: 0.3, 9: 0.2}  # request number → retry_after of its 429

    def script(k: int, body: dict[str, Any]) -> Reply:
        if k in waits:
            return rate_limited(waits[k], in_body=k != 6)  # Discord's JSON body; once the Retry-After header only
        body["_accepted"] = True
        return Reply(200, MESSAGE)

    with discord_server(script) as server:
        cfg = notify_config(tmp_path, server.url)
        n = Notifier(cfg, "test", client=None)
        for i in range(6):  # queued before the sender starts: the storm hits a backlog
            n.publish(emergency_message(f"e{i}", f"alert {i}"))
        n.start()
        _drain(n)
        n.close()
    assert [e for e in event_ids(_delivered(server))] == [f"e{i}" for i in range(6)]
    times = [r.received_at for r in server.requests]
    for k, wait in waits.items():
        # The next request to the channel comes no sooner than Discord asked (the header form gives whole seconds).
        assert times[k] - times[k - 1] >= (wait if k != 6 else 0.0), (k, times[k] - times[k - 1])
    assert len(server.requests) == 6 + len(waits)


def test_5xx_is_retried_with_backoff_and_a_4xx_is_dropped_without_holding_the_channel(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def script(k: int, body: dict[str, Any]) -> Reply:
        event = body["embeds"][0]["footer"]["text"]
        if k <= 3:
            return Reply(500 + k, '{"message": "upstream"}')  # 501, 502, 503 on e0
        if event == "bad":
            return Reply(400, '{"message": "Invalid Form Body", "code": 50035}')
        body["_accepted"] = True
        return Reply(204, "")

    with discord_server(script) as server, caplog.at_level(logging.WARNING):
        cfg = notify_config(tmp_path, server.url, backoff_s=0.1, backoff_max_s=0.3)
        n = Notifier(cfg, "test", client=None)
        for event in ("e0", "bad", "e1"):
            n.publish(emergency_message(event, event))
        n.start()
        _drain(n)
        counts = n.outbox.counts()  # type: ignore[union-attr]
        n.close()
    assert event_ids(server.requests) == ["e0", "e0", "e0", "e0", "bad", "e1"]
    assert event_ids(_delivered(server)) == ["e0", "e1"] and counts == {"delivered": 2, "failed": 1}
    gaps = [b.received_at - a.received_at for a, b in zip(server.requests[:3], server.requests[1:4], strict=True)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.3  # 0.1 × 2^(n-1), capped at 0.3
    assert "refused by Discord (HTTP 400" in caplog.text and server.url not in caplog.text


def test_duplicates_are_suppressed_and_a_late_alert_says_how_late(tmp_path: Path) -> None:
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url)
        a = Notifier(cfg, "worker:a", client=None)
        b = Notifier(cfg, "worker:b", client=None)  # another process's view of the same shared outbox
        assert a.publish(emergency_message("stop:2024-02-05", "Daily stop hit")) == 1
        assert a.publish(emergency_message("stop:2024-02-05", "Daily stop hit")) == 0
        assert b.publish(emergency_message("stop:2024-02-05", "Daily stop hit, seen by b")) == 0
        b.publish(emergency_message("old", "Killswitch changed", occurred_at=time.time() - 3 * 3600 - 125))
        a.start()
        _drain(a)
        a.close()
        b.close()
    assert event_ids(server.requests) == ["stop:2024-02-05", "old"]
    on_time, late = (r.body["embeds"][0] for r in server.requests)
    assert "Late" not in on_time.get("description", "")
    assert late["description"].startswith("⏱ **Late by 3h 02m** (event at ")


def test_per_type_settings_and_per_strategy_channels(tmp_path: Path) -> None:
    with discord_server() as glob, discord_server() as own:
        strategies = {"s1": {"symbols": ["CL"], "discord_webhook_url": own.url}, "s2": {"symbols": ["GC"]}}
        cfg = notify_config(tmp_path, glob.url, strategies=strategies,
                            types={"entry": "off", "exit": "silent", "system": "on"})
        s1 = Notifier(cfg, "worker:s1", client=None, strategy="s1").start()
        s2 = Notifier(cfg, "worker:s2", client=None, strategy="s2").start()
        s1.entry(ENTRY)  # entries are off: nothing is written
        s1.exit(WIN)  # s1's own channel only
        s2.started("s2 up")  # s2 has no URL of its own: the global channel
        s1.publish(emergency_message("killswitch", "Killswitch off → halt"))  # no strategy: every channel
        _drain(s1)
        _drain(s2)
        s1.close()
        s2.close()
    assert event_ids(own.requests) == [f"exit:{WIN.trade_id}", "killswitch"]
    assert event_ids(glob.requests) == [f"started:worker:s2:{s2.run_id}", "killswitch"]
    assert own.requests[0].body["flags"] == SUPPRESS_NOTIFICATIONS and "flags" not in glob.requests[0].body


def test_without_a_webhook_notifications_are_off_and_said_once(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = notify_config(tmp_path, None)
    with caplog.at_level(logging.INFO):
        n = Notifier(cfg, "worker:s1", client=None, strategy="s1").start()
        n.started("up")
        n.entry(ENTRY)
        n.exit(WIN)
        n.stopped("finished", "done")
        n.close()
    assert caplog.text.count("Discord notifications off: no webhook URL configured") == 1
    assert not outbox_path(cfg).exists()
