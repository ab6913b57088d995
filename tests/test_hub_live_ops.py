"""Operating the live hub: control channel, Redis outages, recording, the CLI, SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import pytest
import redis

from hub.clock import SystemClock
from hub.synthetic import write_synthetic_market
from pine.config import PineConfig, load_config
from pine.contracts import load_contract_map
from pine.redis_server import RedisServer
from tests.live_gateway import TEST_KEY, LiveGateway, RecordMarket, load_records, shifted
from tests.live_support import (
    REPO,
    all_streams,
    effective,
    make_hub,
    replayed_streams,
    running_hub,
    trade_count,
    wait_processed,
    wait_until,
    write_live_config,
)

TOKEN = "s3cret-control-token"


@pytest.fixture(scope="module")
def es_day(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    contract_map = load_contract_map(REPO / "data" / "contract_map.yml")
    return write_synthetic_market(tmp_path_factory.mktemp("es"), ["ES"], date(2024, 3, 5), 1, 3, contract_map)


def _config(tmp_path: Path, gateway: LiveGateway, **hub: Any) -> PineConfig:
    path = write_live_config(tmp_path / "config.yml", port=gateway.port, runtime=tmp_path / "rt", roots=("ES",),
                             **hub)
    return load_config(path)


class Replies:
    """A subscriber to reply channels; ``next(channel)`` waits for the next reply there."""

    def __init__(self, url: str, *channels: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*channels)

    def send(self, command: dict[str, Any] | str) -> None:
        self.client.publish("datahub:control", command if isinstance(command, str) else json.dumps(command))

    def next(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        message = wait_until(lambda: self.pubsub.get_message(timeout=0.05), timeout, "a control reply")
        return message["channel"].decode(), json.loads(message["data"])


def test_control_commands_with_and_without_the_token(
    es_day: list[Path], tmp_path: Path, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    records = load_records(es_day)
    market = RecordMarket(records)
    half = len(records) // 2
    market.hold(half)
    mine = "datahub:control:reply:t1"
    replies = Replies(redis_url, "datahub:control:reply", mine)
    with LiveGateway(market) as gateway, caplog.at_level(logging.INFO):
        cfg = _config(tmp_path, gateway, control_token=TOKEN)
        hub = make_hub(cfg, redis_url)
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records[:half]), upto=half)

            replies.send({"command": "status", "reply_to": mine, "id": 1})
            assert replies.next() == (mine, {"ok": False, "command": "status", "id": 1,
                                             "error": "command 'status' refused: missing token"})
            replies.send({"command": "status", "reply_to": mine, "id": 2, "token": "guess"})
            assert replies.next()[1]["error"] == "command 'status' refused: wrong token"
            replies.send({"command": "status", "reply_to": mine, "id": 3, "token": TOKEN})
            channel, reply = replies.next()
            assert channel == mine and reply["ok"] and reply["id"] == 3
            status = reply["result"]
            assert status["trades"] == trade_count(records[:half]) and status["status"] == "streaming"
            assert status["symbols"]["ES"]["contract"] == "ESH4" and status["feed"]["streaming"]

            replies.send("{not json")
            channel, reply = replies.next()
            assert channel == "datahub:control:reply" and not reply["ok"]
            assert reply["error"].startswith("malformed command, not JSON")
            replies.send("[1, 2]")
            assert replies.next()[1]["error"] == "malformed command: expected a JSON object, got list"
            replies.send({"command": "reboot", "token": TOKEN})
            assert replies.next()[1]["error"] == "unknown command 'reboot'; known: flush, resubscribe, shutdown, status"
            # Replies never go to a market channel: the command is refused and answered on the default channel.
            replies.send({"command": "status", "token": TOKEN, "reply_to": "market:ES:1min"})
            channel, reply = replies.next()
            assert channel == "datahub:control:reply" and reply["error"].startswith("reply_to must be")

            replies.send({"command": "flush", "token": TOKEN, "reply_to": mine})
            assert replies.next()[1] == {"ok": True, "command": "flush", "id": None,
                                         "result": {"boundaries_published": 0, "buffer_bars": 0}}
            replies.send({"command": "resubscribe", "token": TOKEN, "reply_to": mine})
            assert replies.next()[1]["ok"]
            assert gateway.wait_sessions(2).replay_start is not None  # a resubscription replays
            market.release()
            wait_processed(hub, gateway, trade_count(records))
            replies.send({"command": "shutdown", "token": TOKEN, "reply_to": mine})
            assert replies.next()[1] == {"ok": True, "command": "shutdown", "id": None, "result": {"stopping": True}}
            assert runner.join() == 0  # stopped by the command
    assert all_streams(replies.client, ["ES"]) == replayed_streams(cfg, es_day, redis_url)
    assert hub.status()["control"] == {"commands": 4, "refused": 6}
    assert hub.status()["gaps"][0]["reason"] == "resubscribe"
    assert TOKEN not in caplog.text
    assert "control command refused: command 'status' refused: missing token" in caplog.text


def test_redis_restarted_while_the_hub_runs_gets_every_bar_in_order_once(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    records = load_records(es_day)
    market = RecordMarket(records)
    first, second = len(records) // 3, 2 * len(records) // 3
    market.hold(first)
    server = RedisServer(tmp_path / "redis").start()
    try:
        client = redis.Redis.from_url(server.url)
        with LiveGateway(market) as gateway:
            cfg = _config(tmp_path, gateway)
            hub = make_hub(cfg, server.url)
            with running_hub(hub) as runner:
                wait_processed(hub, gateway, trade_count(records[:first]), upto=first)
                before = all_streams(client, ["ES"])  # what a consumer read before Redis went away
                server.stop()
                market.release(second)
                wait_processed(hub, gateway, trade_count(records[:second]), upto=second)
                wait_until(lambda: hub.buffer.depth > 0 and hub.buffer.publish_errors > 0, 10, "buffering")
                buffered = hub.buffer.depth
                beat = wait_until(lambda: _file_beat(cfg, lambda b: b["redis"]["buffer_bars"] == buffered), 10,
                                  "a heartbeat showing the buffer")
                assert beat["redis"]["last_error"].startswith("ConnectionError")
                server.start()  # same port, empty: Redis lost everything it had
                wait_until(lambda: hub.buffer.depth == 0, 20, "the buffer to drain")
                market.release()
                wait_processed(hub, gateway, trade_count(records))
                assert runner.stop() == 0
        after = all_streams(client, ["ES"])
        assert buffered > 10 and all(after[k][0] not in before[k] for k in before if before[k] and after[k])
        combined = {k: before[k] + after[k] for k in before}
        assert combined == replayed_streams(cfg, es_day, redis_url)  # all bars, in order, once
        watermarks = [e[b"watermark"] for _, e in client.xrange("datahub:clock")]
        assert watermarks == sorted(watermarks)
        assert hub.status()["redis"]["overflow_bars_dropped"] == 0
    finally:
        server.close()


def _file_beat(cfg: PineConfig, ok: Any) -> dict[str, Any] | None:
    path = cfg.runtime_dir / "heartbeat" / "hub.json"
    if not path.exists():
        return None
    beat = json.loads(path.read_text())
    return beat if ok(beat) else None


def test_the_recording_replays_to_the_live_bars(tmp_path: Path, redis_url: str) -> None:
    contract_map = load_contract_map(REPO / "data" / "contract_map.yml")
    days = write_synthetic_market(tmp_path / "market", ["ES"], date(2024, 3, 7), 2, 11, contract_map)
    records = load_records(days)
    market = RecordMarket(records)
    trades = [i for i, r in enumerate(records) if isinstance(r, dbn.TradeMsg)]
    market.close_at(trades[len(trades) // 3], missed=100)  # the replay's duplicates must not be recorded
    with LiveGateway(market) as gateway:
        cfg = _config(tmp_path, gateway)
        hub = make_hub(cfg, redis_url, record_dir=tmp_path / "rec")
        with running_hub(hub) as runner:
            wait_processed(hub, gateway, trade_count(records))
            assert runner.stop() == 0
    live = all_streams(redis.Redis.from_url(redis_url), ["ES"])
    files = sorted((tmp_path / "rec").glob("*.dbn"))
    assert len(files) == 2  # one per trading session
    assert [f.name[:19] for f in files] == ["glbx-mdp3-20240306T", "glbx-mdp3-20240307T"]
    assert sum(trade_count(load_records([f])) for f in files) == trade_count(records)
    assert replayed_streams(cfg, files, redis_url) == live
    assert hub.status()["recording"] == str(files[-1])


# --------------------------------------------------------------------------- the CLI


def pine_hub(args: list[str], env: dict[str, str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pine.cli", "hub", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def test_cli_without_a_key_says_so_before_connecting(tmp_path: Path, redis_url: str) -> None:
    done = pine_hub([], {"REDIS_URL": redis_url, "PINE_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("pine hub: DATABENTO_API_KEY is not set")
    assert "Traceback" not in done.stderr and not redis.Redis.from_url(redis_url).keys("*")


def test_cli_with_a_malformed_key_says_so_without_showing_it(tmp_path: Path, redis_url: str) -> None:
    done = pine_hub([], {"REDIS_URL": redis_url, "PINE_RUNTIME_DIR": str(tmp_path), "DATABENTO_API_KEY": "abc123"})
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pine hub: DATABENTO_API_KEY is not a valid Databento API key") and "abc123" not in last
    assert "Traceback" not in done.stderr


def test_cli_record_needs_the_live_feed(es_day: list[Path], tmp_path: Path, redis_url: str) -> None:
    done = pine_hub(["--replay", str(es_day[0]), "--record", str(tmp_path / "rec")], {"REDIS_URL": redis_url})
    assert done.returncode == 2 and "--record records the live feed" in done.stderr


@pytest.mark.slow
def test_cli_a_key_the_gateway_refuses_is_a_clear_error(es_day: list[Path], tmp_path: Path, redis_url: str) -> None:
    with LiveGateway(RecordMarket(load_records(es_day))) as gateway:
        config = write_live_config(tmp_path / "config.yml", port=gateway.port, runtime=tmp_path / "rt")
        done = pine_hub(["--config", str(config)], {"REDIS_URL": redis_url, "DATABENTO_API_KEY": "db-" + "Q" * 29})
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "pine hub: the Databento gateway rejected the API key (BentoError: Authentication failed.); "
        "check DATABENTO_API_KEY")
    assert "Traceback" not in done.stderr and "Q" * 29 not in done.stderr


@pytest.mark.slow
def test_sigterm_mid_minute_publishes_the_open_bars_marked_partial_and_exits_within_5s(
    es_day: list[Path], tmp_path: Path, redis_url: str
) -> None:
    # The hub needs a few seconds to start and see trades; SIGTERM must come before the minute ends.
    if (left := 60 - time.time() % 60) < 15:
        time.sleep(left + 0.5)
    records = load_records(es_day)
    # The regular-hours open (08:30 Chicago), when trades come every second or so.
    busy = next(i for i, r in enumerate(records) if isinstance(r, dbn.TradeMsg)
                and datetime.fromtimestamp(r.ts_recv // 10**9, UTC) >= datetime(2024, 3, 5, 14, 30, tzinfo=UTC))
    now = time.time_ns()
    market = RecordMarket(shifted(records, now - records[busy].ts_recv), clock=SystemClock())
    market.advance_to(busy)  # a session without replay starts now: trades happen in real time from here
    env = {"REDIS_URL": redis_url, "DATABENTO_API_KEY": TEST_KEY}
    with LiveGateway(market) as gateway:
        config = write_live_config(tmp_path / "config.yml", port=gateway.port, runtime=tmp_path / "rt",
                                   roots=("ES",))
        cfg = load_config(config)
        proc = subprocess.Popen([sys.executable, "-m", "pine.cli", "hub", "--config", str(config), "--record",
                                 str(tmp_path / "rec")], cwd=REPO, env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            minute = time.time_ns() // 60_000_000_000

            def traded_this_minute(beat: dict[str, Any]) -> bool:
                last = beat.get("symbols", {}).get("ES", {}).get("last_trade")
                return last is not None and int(datetime.fromisoformat(last).timestamp()) // 60 == minute

            wait_until(lambda: _file_beat(cfg, traded_this_minute), 12, "a trade in this minute")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
            exited_after = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert exited_after < 5.0, f"exit took {exited_after:.1f}s after SIGTERM"
    assert "Traceback" not in err and "SIGTERM" in err and "live hub stopped" in out
    client = redis.Redis.from_url(redis_url)
    live = all_streams(client, ["ES"])
    last = {tf: json.loads(live["ES", tf][-1]) for tf in ("1min", "hourly", "daily")}
    assert all(bar["partial"] for bar in last.values())
    assert int(datetime.fromisoformat(last["1min"]["timestamp"]).timestamp()) // 60 == minute
    assert not any(json.loads(b)["partial"] for b in live["ES", "1min"][:-1])
    beat = json.loads(client.get("heartbeat:hub"))
    assert beat["status"] == "stopped" and beat["reason"] == "SIGTERM"
    assert json.loads((cfg.runtime_dir / "heartbeat" / "hub.json").read_text())["status"] == "stopped"
    assert client.xrevrange("datahub:clock", count=1)[0][1][b"state"] == b"stopped"
    # The recording of the same run replays to the same bars.
    files = sorted((tmp_path / "rec").glob("*.dbn"))
    assert {k: effective(v) for k, v in replayed_streams(cfg, files, redis_url).items()} == {
        k: effective(v) for k, v in live.items()}
