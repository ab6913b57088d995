"""Workers trading through a local TradersPost stand-in: SIGKILL between journal and send, and between send
and acknowledgement, gives exactly one delivery per client order id; no secret is ever written anywhere."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from pine.bus import BarPublisher
from pine.config import load_config
from tests.scenario import DAYS, Feed, WorkerProc, market, pine, query, write_config
from tests.webhook_server import Reply, WebhookServer
from workers.engine import run_backtest
from workers.trades_db import TradesDB

STRATEGY = "tp"
PLAN = {DAYS[0]: {"CL": 0.1}, DAYS[1]: {"CL": 0.5}, DAYS[2]: {"CL": 0.9}, DAYS[3]: {}}
ENTRY = f"{STRATEGY}-CL-20240205T230000Z-buy"
EXIT = f"{STRATEGY}-CL-20240207T230000Z-sell"


def _config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "c.yml", {STRATEGY: {"symbols": ["CL"],
                                                         "broker_account": "${TRADERSPOST_TP_WEBHOOK}"}})


def _orders(runtime: Path) -> list[tuple[Any, ...]]:
    return query(runtime, "SELECT client_order_id, status, attempts FROM orders ORDER BY created_at")


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["after_journal", "after_send"])
def test_a_worker_killed_mid_order_delivers_each_order_exactly_once(
        redis_url: str, tmp_path: Path, crash_at: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    runtime = tmp_path / "runtime"
    bars = market(PLAN, ["CL"])
    Feed(BarPublisher(redis.Redis.from_url(redis_url)), bars).finish()
    with WebhookServer() as server:
        env = {"TRADERSPOST_TP_WEBHOOK": server.url}
        crashed = WorkerProc(config, STRATEGY, redis_url, runtime, stop_at_end=True,
                             env={**env, "PINE_TEST_CRASH_AT": crash_at})
        assert crashed.proc.wait(120) == -9, crashed.stderr  # SIGKILLed itself at the crash point
        if crash_at == "after_journal":
            assert server.requests == [] and _orders(runtime) == [(ENTRY, "pending", 0)]
        else:
            assert server.deliveries() == {ENTRY: 1} and _orders(runtime) == [(ENTRY, "sent", 1)]

        restarted = WorkerProc(config, STRATEGY, redis_url, runtime, stop_at_end=True, env=env)
        restarted.finish()
        assert server.deliveries() == {ENTRY: 1, EXIT: 1}  # exactly one delivery per client order id

    entry_status = "acknowledged" if crash_at == "after_journal" else "unconfirmed"
    assert _orders(runtime) == [(ENTRY, entry_status, 1), (EXIT, "acknowledged", 1)]
    live = TradesDB(runtime / "trades.db").trades(STRATEGY)
    monkeypatch.setenv("TRADERSPOST_TP_WEBHOOK", "http://127.0.0.1:1/unused-by-a-backtest")
    assert live == run_backtest(load_config(config), STRATEGY, bars).trades and len(live) == 1
    if crash_at == "after_send":
        assert f"order {ENTRY} was being sent when the worker stopped" in restarted.stderr
        assert "NOT resent" in restarted.stderr
    else:
        assert f"resending order {ENTRY}" in restarted.stderr


CANARY_UUID = "CANARY-9d2f-4b1e-uuid"
CANARY_PASSWORD = "canarypass-77e1c0de"


def _redis_dump(client: redis.Redis) -> bytes:
    out = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            out += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"stream":
            out += [k + b"=" + v for _, fields in client.xrange(key) for k, v in fields.items()]
        out.append(key)
    return b"\n".join(out)


@pytest.mark.slow
def test_a_canary_webhook_url_appears_nowhere(redis_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path)
    runtime = tmp_path / "runtime"
    Feed(BarPublisher(redis.Redis.from_url(redis_url)), market(PLAN, ["CL"])).finish()

    def script(n: int, body: dict[str, Any]) -> Reply:
        if body["extras"]["role"] == "exit":
            return Reply(400, '{"success": false, "message": "no open position"}')
        return Reply(500) if n == 1 else Reply()

    path = f"/trading/webhook/{CANARY_UUID}/{CANARY_PASSWORD}"
    outputs: list[str] = []
    with WebhookServer(script, path=path) as server:
        env = {"TRADERSPOST_TP_WEBHOOK": server.url}
        check = pine("worker", "--check", "--strategy", STRATEGY, "--config", str(config), "--log-level", "DEBUG",
                     redis_url=redis_url, runtime=runtime, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "TCP connect to 127.0.0.1" in check.stdout and "HTTP probe skipped" in check.stdout
        worker = WorkerProc(config, STRATEGY, redis_url, runtime, stop_at_end=True, env=env,
                            extra=["--log-level", "DEBUG"])
        worker.finish()
        # A worker that cannot reach the webhook at all (connection refused) logs errors too.
        dead_env = {"TRADERSPOST_TP_WEBHOOK": f"http://127.0.0.1:1{path}"}
        dead = pine("worker", "--check", "--strategy", STRATEGY, "--config", str(config), redis_url=redis_url,
                    runtime=runtime, env=dead_env)
        assert dead.returncode == 1 and "cannot connect to 127.0.0.1:1" in dead.stdout
        status = pine("killswitch", "status", "--config", str(config), redis_url=redis_url, runtime=runtime, env=env)
        outputs += [check.stdout, check.stderr, dead.stdout, dead.stderr, status.stdout, status.stderr]
    assert [s for _, s, _ in _orders(runtime)] == ["acknowledged", "failed"]  # errors were logged and journaled
    assert "HTTP 400" in worker.stderr and "retrying" in worker.stderr

    secrets = [CANARY_UUID, CANARY_PASSWORD, path]
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}  # DB, WAL, heartbeats, logs, mirror
    assert any(p.name == "trades.db-wal" or p.name == "trades.db" for p in written)
    assert any("heartbeat" in str(p) for p in written)
    for secret in secrets:
        for p, data in written.items():
            assert secret.encode() not in data, f"{secret} leaked into {p}"
        for text in outputs:
            assert secret not in text
        assert secret.encode() not in _redis_dump(redis.Redis.from_url(redis_url))
    assert subprocess.run(["grep", "-r", CANARY_PASSWORD, str(tmp_path)], capture_output=True).returncode == 1
