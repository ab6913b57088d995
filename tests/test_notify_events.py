"""Emergencies recorded in Redis reach Discord: daily stop, killswitch, failed order, Dagster alerts, a worker
that died without a word, a feed gap. Two watching processes still give one message per event."""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import pytest
import redis

from hub.main import hub_command
from hub.synthetic import write_synthetic_market
from orchestration.alerts import Alert, emit_alert
from pine import redis_names
from pine.contracts import load_contract_map
from pine.killswitch import Killswitch, KillswitchState
from pine.notify.notifier import Notifier
from tests.conftest import REPO
from tests.discord_support import discord_server, event_ids, notify_config, wait_until
from tests.scenario import pine
from workers.coordinator import PortfolioCoordinator


def _titles(server: object) -> list[str]:
    return [r.body["embeds"][0]["title"] for r in server.requests]  # type: ignore[attr-defined]


def test_risk_events_ops_alerts_dead_workers_and_gaps_are_forwarded_once(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url, strategies={"s1": {"symbols": ["CL"]}, "s2": {"symbols": ["GC"]}})
        # Two processes watching the same Redis and sharing the outbox (hub and a worker, say).
        hub = Notifier(cfg, "hub", client=redis.Redis.from_url(redis_url)).start()
        worker = Notifier(cfg, "worker:s2", client=redis.Redis.from_url(redis_url), strategy="s2").start()
        beat = {"component": "worker:s1", "status": "running", "pid": 4242, "time": time.time()}
        client.set(redis_names.heartbeat("worker:s1"), json.dumps(beat), ex=60)
        wait_until(lambda: hub.watcher is not None and "worker:s1" in hub.watcher._seen, "the heartbeat to be seen")

        Killswitch(client, mirror_dir=tmp_path).set(KillswitchState.HALT, reason="broker outage", source="cli:ops")
        coordinator = PortfolioCoordinator(client, "s1", max_positions=2, daily_stop_loss=500, lease_ttl_s=60)
        coordinator.record_pnl(date(2024, 2, 5), "s1:CL:t1", -650.0)
        coordinator.emit("order_failed", strategy="s1", symbol="CL", client_order_id="s1-CL-x-buy",
                         error="HTTP 500 after 4 attempts")
        emit_alert(Alert("crash_loop", "critical", "worker:s2", "worker:s2 is crash-looping"), client)
        emit_alert(Alert("process_down", "warning", "worker:s1", "worker:s1 is down"), client)  # reported below
        client.delete(redis_names.heartbeat("worker:s1"))  # SIGKILLed: the key expires, no 'stopped' status
        gap = {"start": "2024-02-05T14:00:01+00:00", "end": "2024-02-05T14:02:30+00:00", "reason": "connection lost",
               "down_at": time.time() - 8.5, "up_at": time.time(), "recovered": 120, "duplicates": 3,
               "replayed": True, "offline_s": 8.5}
        hub_beat = {"component": "hub", "status": "streaming", "pid": 1, "time": time.time(), "gaps": [gap]}
        client.set(redis_names.heartbeat("hub"), json.dumps(hub_beat), ex=60)

        wait_until(lambda: len(server.requests) >= 6, "six emergencies")
        time.sleep(2.5)  # two more watch rounds of both notifiers: nothing may be added
        hub.close()
        worker.close()
    titles = _titles(server)
    assert sorted(titles) == sorted([
        "🚨 Killswitch off → halt",
        "🚨 Daily stop hit: no new entries until the session closes",
        "🚨 Order failed after retries",
        "🚨 crash loop: worker:s2",
        "🚨 worker:s1 died: its heartbeat stopped",
        "⚠️ Data gap recovered by replay",
    ]), titles
    assert len(set(event_ids(server.requests))) == len(server.requests) == 6
    bodies = {r.body["embeds"][0]["title"]: r.body["embeds"][0] for r in server.requests}
    stop_embed = bodies["🚨 Daily stop hit: no new entries until the session closes"]
    stop = {f["name"]: f["value"] for f in stop_embed["fields"]}
    assert stop["trading_day"] == "2024-02-05" and stop["realized"] == "-650" and stop["limit"] == "500.0"
    ks = {f["name"]: f["value"] for f in bodies["🚨 Killswitch off → halt"]["fields"]}
    assert ks["reason"] == "broker outage" and ks["source"] == "cli:ops"
    gap_fields = {f["name"]: f["value"] for f in bodies["⚠️ Data gap recovered by replay"]["fields"]}
    assert gap_fields["trades recovered"] == "120"
    assert "pid 4242" in bodies["🚨 worker:s1 died: its heartbeat stopped"]["description"]


def test_status_on_request_is_sent_now(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    Killswitch(client, mirror_dir=tmp_path).set(KillswitchState.REDUCE_ONLY, reason="earnings", source="cli")
    PortfolioCoordinator(client, "s1", max_positions=2, daily_stop_loss=500, lease_ttl_s=60).hold("CL", "cid-1")
    client.set(redis_names.heartbeat("hub"), json.dumps({"status": "streaming", "time": time.time()}), ex=60)
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url)
        assert cfg.source is not None
        done = pine("notify", "status", "--config", str(cfg.source), redis_url=redis_url, runtime=tmp_path / "runtime")
        assert done.returncode == 0, done.stderr
    assert "sent to Discord" in done.stdout
    (request,) = server.requests
    embed = request.body["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["title"] == "ℹ️ Pine status" and fields["Killswitch"] == "reduce_only (earnings)"
    assert fields["Positions"] == "1 of max 10: s1:CL (reserved)"
    assert embed["description"].startswith("hub: streaming, beat ")
    assert "worker:s1: no heartbeat" in embed["description"]


def test_the_hub_says_started_and_stopped_and_a_failed_replay_is_an_emergency(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    (day,) = write_synthetic_market(tmp_path / "market", ["CL"], date(2024, 3, 5), 1, 3,
                                    load_contract_map(REPO / "data" / "contract_map.yml"))
    corrupt = tmp_path / "corrupt.dbn"
    corrupt.write_bytes(b"DBN\x02 this is not a DBN stream")
    with discord_server() as server:
        cfg = notify_config(tmp_path, server.url)
        assert hub_command(cfg, argparse.Namespace(replay=[day], record=None, speed="max")) == 0
        assert hub_command(cfg, argparse.Namespace(replay=[corrupt], record=None, speed="max")) == 1
        box = Notifier(cfg, "test", client=None).start()  # whatever the hub left undelivered at its exit
        wait_until(lambda: box.outbox is not None and box.outbox.open_count() == 0, "the outbox to drain")
        box.close()
    embeds = [r.body["embeds"][0] for r in server.requests]
    ours = [(e["title"], e.get("description", "")) for e in embeds if e["footer"]["text"].split(":")[0] in
            ("started", "stopped", "down")]
    assert ours == [("🟢 hub started", "replay of 1 DBN file(s)"), ("⚪ hub stopped", "finished: replay complete"),
                    ("🟢 hub started", "replay of 1 DBN file(s)"), ("🚨 hub failed", "the replay stopped on an error")]
    down = next(r for r in server.requests if r.body["embeds"][0]["title"] == "🚨 hub failed")
    assert "flags" not in down.body  # an emergency pushes; started/stopped are silent (system) by default
