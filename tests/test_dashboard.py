"""``pine dashboard`` as a real process over real workers' trades DB and Redis: the JSON API, ``/health``,
the token, and a canary search for secrets in every response."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import redis

from pine import redis_names
from pine.killswitch import Killswitch, KillswitchState
from pine.trade_stats import stats_by_strategy
from tests.dashboard_support import ML_DECISIONS, TOKEN, DashboardProc, trading_state
from tests.scenario import query
from workers.trades_db import open_reader


@pytest.mark.slow
def test_api_health_and_token(redis_url: str, tmp_path: Path) -> None:
    state = trading_state(redis_url, tmp_path)
    board = DashboardProc(state, env={"PINE_DASHBOARD_TOKEN": TOKEN})
    open_board = DashboardProc(state)  # no token configured: viewing is open, writing impossible
    try:
        client = redis.Redis.from_url(redis_url)
        beats = {c: json.loads(client.get(redis_names.heartbeat(c)) or b"{}")["status"]
                 for c in ("hub", "worker:s1", "worker:s2")}
        health = board.get("/health")
        assert health.status_code == 200, health.text
        assert health.json() == {"ok": True, "reasons": [], "components": beats}
        assert board.get("/api/overview").status_code == 401
        assert board.get("/api/overview", "wrong-token").status_code == 401
        assert board.get("/api/meta").json()["token_required"] is True
        data = board.get("/api/overview", TOKEN).json()

        # Open positions with unrealised P&L from the latest minute bar in Redis.
        rows = query(state.runtime, "SELECT strategy, symbol, direction, size, entry_price FROM positions")
        assert [(p["strategy"], p["symbol"], p["direction"], p["size"], p["entry_price"])
                for p in data["positions"]] == rows and len(rows) == 1
        latest = json.loads(client.get(redis_names.latest("CL", "1min")) or b"{}")
        (pos,) = data["positions"]
        assert pos["last_price"] == latest["close"]
        assert pos["unrealized_pnl"] == round((latest["close"] - pos["entry_price"]) * pos["size"] * 1000, 2)
        # Trades, per-day P&L and metrics are the DB's.
        trades = query(state.runtime, "SELECT trade_id FROM trades")
        assert len(data["trades"]) == len(trades) >= 3
        assert round(sum(d["net_pnl"] for d in data["pnl"]["days"]), 2) == round(
            query(state.runtime, "SELECT SUM(net_pnl) FROM trades")[0][0], 2)
        conn = open_reader(state.runtime / "trades.db")
        total, per = stats_by_strategy(conn)
        conn.close()
        assert data["metrics"] == {"all": total.to_dict(), "strategies": {s: v.to_dict() for s, v in per.items()}}
        assert data["pnl"]["equity"][-1]["value"] == round(total.net_pnl, 2)
        # ML veto decisions: the audit rows the workers' writer recorded, newest first, features parsed.
        assert data["ml"]["counts"] == {"taken": 2, "vetoed": 1, "not_ready": 1}
        assert [(r["signal_time"], r["strategy"], r["symbol"], r["model"], r["version"], r["score"], r["threshold"],
                 r["take"], r["shadow"], r["outcome"], r["features"]) for r in data["ml"]["rows"]] == [
            (d.signal_time.isoformat(), d.strategy, d.symbol, d.model, d.version, d.score, d.threshold, d.take,
             d.shadow, d.outcome, json.loads(d.features)) for d in ML_DECISIONS]
        assert board.get("/api/ml?limit=1", TOKEN).json()["rows"] == data["ml"]["rows"][:1]
        assert {c["component"]: c["status"] for c in data["health"]["components"]} == beats
        s1 = data["health"]["components"][1]
        assert s1["component"] == "worker:s1" and s1["last_bar"].startswith("2024-02-16") and s1["lag_s"] > 0

        # The killswitch: refused without the token, and impossible where none is configured.
        assert board.post("/api/killswitch", {"state": "halt"}).status_code == 401
        assert board.post("/api/killswitch", {"state": "halt"}, "wrong-token").status_code == 401
        refused = open_board.post("/api/killswitch", {"state": "halt"})
        assert refused.status_code == 403 and "dashboard.token" in refused.json()["error"]
        ks = Killswitch(client, mirror_dir=state.runtime)
        assert ks.stored().state is KillswitchState.OFF
        done = board.post("/api/killswitch", {"state": "reduce-only", "reason": "test"}, TOKEN)
        assert done.status_code == 200 and done.json()["state"] == "reduce_only"
        assert ks.stored().state is KillswitchState.REDUCE_ONLY and ks.stored().source.startswith("dashboard:")
        assert board.post("/api/killswitch", {"state": "sideways"}, TOKEN).status_code == 400

        # A worker that stops: /health turns 503 and says why.
        state.workers["s2"].stop()
        down = board.get("/health")
        assert down.status_code == 503 and down.json()["reasons"] == ["worker:s2: stopped"]
    finally:
        board.stop()
        open_board.stop()
        state.stop()


CANARY_DISCORD = "http://127.0.0.1:1/api/webhooks/998877/CANARY-discord-5e1f9a7c"
CANARY_TOKEN = "CANARY-dashboard-token-0c4d"
CANARY_KEY = "db-CANARYapikey1234567890abcd"
CANARY_CONTROL = "CANARY-control-token-77aa"
PATHS = ("/", "/static/app.js", "/static/style.css", "/static/index.html", "/static/missing.js", "/api/meta",
         "/api/overview", "/api/positions", "/api/trades?limit=5", "/api/pnl", "/api/metrics", "/api/health",
         "/api/killswitch", "/api/ml", "/health", "/api/nothing")


@pytest.mark.slow
def test_no_secret_in_any_page_or_api_response(redis_url: str, tmp_path: Path) -> None:
    state = trading_state(redis_url, tmp_path, notifications={"discord_webhook_url": CANARY_DISCORD},
                          dashboard={"token": CANARY_TOKEN}, databento={"api_key": CANARY_KEY},
                          hub={"control_token": CANARY_CONTROL})
    board = DashboardProc(state)
    try:
        bodies = []
        for path in PATHS:
            for token in (None, "wrong", CANARY_TOKEN):
                r = board.get(path, token)
                bodies.append(f"{path} {r.status_code} {dict(r.headers)} {r.text}")
        bodies.append(board.post("/api/killswitch", {"state": "bogus"}, CANARY_TOKEN).text)
        bodies.append(board.post("/api/killswitch", {"state": "halt"}, "wrong").text)
        overview = board.get("/api/overview", CANARY_TOKEN)
        assert overview.status_code == 200 and overview.json()["trades"]  # the data is there, the secrets are not
        logged = board.stop()
    finally:
        state.stop()
    everything = "\n".join(bodies) + logged
    for secret in (CANARY_DISCORD, "CANARY-discord-5e1f9a7c", "/api/webhooks/998877", CANARY_TOKEN, CANARY_KEY,
                   CANARY_CONTROL, "CANARY"):
        assert secret not in everything, secret
    # The workers' notifications (to the unreachable canary channel) wait in the outbox without the URL.
    with sqlite3.connect(state.runtime / "notifications.db") as conn:
        dump = "\n".join(conn.iterdump())
    assert "entry:" in dump and "CANARY" not in dump
