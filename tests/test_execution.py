"""The order path (killswitch → coordinator → journal → TradersPost) on real Redis, SQLite and HTTP."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from pine.config.schema import TradersPostConfig
from pine.killswitch import Killswitch, KillswitchState
from pine.redis_server import free_port
from pine.sessions import SessionCalendar
from tests.webhook_server import Reply, WebhookServer, ok
from workers.coordinator import PortfolioCoordinator
from workers.execution import Execution, OrderRequest, Role
from workers.order_journal import OrderJournal, OrderStatus, client_order_id
from workers.traderspost import TradersPostClient
from workers.trades_db import TradesDB, open_reader

SIGNAL = datetime(2024, 3, 4, 23, tzinfo=UTC)  # the close of trading day 2024-03-04
FAST = TradersPostConfig(connect_timeout_s=1, read_timeout_s=1, max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)


class Rig:
    """An Execution of strategy ``s`` wired to a webhook server, a trades DB and the test Redis."""

    def __init__(self, redis_url: str, tmp_path: Path, server: WebhookServer, *, max_positions: int = 2,
                 environ: dict[str, str] | None = None) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.db = TradesDB(tmp_path / "trades.db")
        self.journal = OrderJournal(self.db)
        self.killswitch = Killswitch(self.client, environ=environ or {})
        self.coordinator = PortfolioCoordinator(self.client, "s", max_positions=max_positions, daily_stop_loss=500,
                                                lease_ttl_s=60)
        self.execution = Execution("s", db=self.db, journal=self.journal, sender=TradersPostClient(server.url, FAST),
                                   calendar=SessionCalendar(), killswitch=self.killswitch,
                                   coordinator=self.coordinator)

    def submit(self, symbol: str = "CL", role: Role = Role.ENTRY, side: str = "buy", *, replay: bool = False,
               when: datetime = SIGNAL) -> Any:
        cid = client_order_id("s", symbol, when, side)
        return self.execution.submit(OrderRequest(cid, symbol, f"{symbol}K4", role, side, 1, "ibs=0.070", when,
                                                  78.12, replay))

    def status(self, symbol: str = "CL", side: str = "buy") -> OrderStatus | None:
        row = self.journal.get(client_order_id("s", symbol, SIGNAL, side))
        return None if row is None else row.status

    def error(self, symbol: str = "CL", side: str = "buy") -> str | None:
        row = self.journal.get(client_order_id("s", symbol, SIGNAL, side))
        return None if row is None else row.error


def test_the_intent_is_journaled_before_the_request_leaves(redis_url: str, tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def look_in_the_db(body: dict[str, Any]) -> None:
        conn = open_reader(tmp_path / "trades.db")
        seen.extend(conn.execute("SELECT status, attempts FROM orders WHERE client_order_id = ?",
                                 (body["extras"]["clientOrderId"],)).fetchall())
        conn.close()

    with WebhookServer(ok, on_request=look_in_the_db) as server:
        rig = Rig(redis_url, tmp_path, server)
        decision = rig.submit()
    assert decision.accepted and decision.status == "acknowledged"
    assert seen == [("sent", 1)]  # when the request arrived, the journal already had it
    row = rig.journal.get("s-CL-20240304T230000Z-buy")
    assert row is not None and (row.status, row.attempts, row.http_status) == (OrderStatus.ACKNOWLEDGED, 1, 200)
    assert (row.intent.trading_day, row.intent.requested_price) == (date(2024, 3, 4), 78.12)
    assert rig.coordinator.owned()["CL"].state == "reserved"


def test_payloads_of_an_entry_and_an_exit(redis_url: str, tmp_path: Path) -> None:
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server)
        rig.submit()
        rig.submit(role=Role.EXIT, side="sell")
    entry, exit_ = server.bodies()
    assert entry == {
        "ticker": "CLK2024", "action": "buy", "quantity": 1, "orderType": "market", "timeInForce": "day",
        "signalPrice": 78.12, "time": "2024-03-04T23:00:00+00:00",
        "extras": {"clientOrderId": "s-CL-20240304T230000Z-buy", "strategy": "s", "symbol": "CL", "contract": "CLK4",
                   "role": "entry", "reason": "ibs=0.070", "signalBar": "2024-03-04T23:00:00+00:00",
                   "tradingDay": "2024-03-04"},
    }
    assert (exit_["action"], exit_["extras"]["clientOrderId"], exit_["extras"]["role"]) == (
        "exit", "s-CL-20240304T230000Z-sell", "exit")
    assert "limitPrice" not in exit_


def test_replayed_bars_never_send_and_follow_the_journal(redis_url: str, tmp_path: Path) -> None:
    with WebhookServer(lambda n, b: Reply(400) if b["extras"]["symbol"] == "GC" else Reply()) as server:
        rig = Rig(redis_url, tmp_path, server)
        assert rig.submit("CL").accepted
        assert not rig.submit("GC").accepted  # 400: failed
        sent = len(server.requests)
        assert rig.submit("CL", replay=True).accepted  # acknowledged earlier: placed again, not sent
        assert not rig.submit("GC", replay=True).accepted  # failed earlier: not placed
        assert not rig.submit("ES", replay=True).accepted  # never journaled: the earlier run did not place it
        assert len(server.requests) == sent == 2
    assert rig.status("GC") is OrderStatus.FAILED
    assert "GC" not in rig.coordinator.owned()  # a failed entry gives its slot back


def test_after_a_crash_pending_is_sent_once_and_sent_is_never_resent(redis_url: str, tmp_path: Path) -> None:
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server)
        pending = rig.execution._intent(OrderRequest(client_order_id("s", "CL", SIGNAL, "buy"), "CL", "CLK4",
                                                     Role.ENTRY, "buy", 1, "ibs", SIGNAL, 78.12, False))
        rig.journal.add(pending)  # crashed after the journal write
        in_doubt = rig.execution._intent(OrderRequest(client_order_id("s", "GC", SIGNAL, "buy"), "GC", "GCK4",
                                                      Role.ENTRY, "buy", 1, "ibs", SIGNAL, 2050.0, False))
        rig.journal.add(in_doubt)
        rig.journal.mark_attempt(in_doubt.client_order_id, 1)  # crashed between send and acknowledgement
        # The restarted worker signals both again on the same bars.
        assert rig.submit("CL").status == "acknowledged"
        assert rig.submit("GC").status == "unconfirmed"
        assert rig.submit("CL").status == "acknowledged"  # and once more: still not resent
        assert server.deliveries() == {pending.client_order_id: 1}
        assert server.bodies()[0] == pending.payload  # exactly what was journaled
    assert rig.status("GC") is OrderStatus.UNCONFIRMED
    assert set(rig.coordinator.owned()) == {"CL", "GC"}  # the in-doubt entry is treated as placed


def test_orders_left_unresolved_and_not_signalled_again_are_resolved_without_sending(
        redis_url: str, tmp_path: Path) -> None:
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server)
        for symbol, doubt in (("CL", False), ("GC", True)):
            intent = rig.execution._intent(OrderRequest(client_order_id("s", symbol, SIGNAL, "buy"), symbol, "X",
                                                        Role.ENTRY, "buy", 1, "ibs", SIGNAL, 1.0, False))
            rig.journal.add(intent)
            if doubt:
                rig.journal.mark_attempt(intent.client_order_id, 1)
        rig.execution.end_step(flat=True)
        assert server.requests == []
    assert (rig.status("CL"), rig.status("GC")) == (OrderStatus.CANCELLED, OrderStatus.UNCONFIRMED)


@pytest.mark.parametrize(("state", "entry_ok", "exit_ok"), [
    (KillswitchState.OFF, True, True),
    (KillswitchState.REDUCE_ONLY, False, True),
    (KillswitchState.HALT, False, False),
    (KillswitchState.FLATTEN, False, True),
])
def test_killswitch_is_checked_before_every_order(redis_url: str, tmp_path: Path, state: KillswitchState,
                                                  entry_ok: bool, exit_ok: bool) -> None:
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server)
        rig.killswitch.set(state)
        entry = rig.submit("CL")
        exit_ = rig.submit("GC", Role.EXIT, "sell")
    assert (entry.accepted, exit_.accepted) == (entry_ok, exit_ok)
    assert len(server.requests) == entry_ok + exit_ok
    if not entry_ok:  # a blocked entry gets no slot and is journaled as cancelled, saying why
        assert (entry.status, rig.status("CL")) == ("blocked", OrderStatus.CANCELLED)
        assert rig.error("CL") == f"blocked: killswitch {state.value}"
        assert rig.coordinator.owned() == {}
    if not exit_ok:  # a blocked exit is not journaled: the position stays, its exit is signalled again later
        assert rig.status("GC", "sell") is None


def test_policy_killswitch_true_blocks_this_process(redis_url: str, tmp_path: Path) -> None:
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server, environ={"POLICY_KILLSWITCH": "true"})
        assert rig.submit().status == "blocked"
        assert not rig.submit("GC", Role.EXIT, "sell").accepted
    assert server.requests == []


def test_portfolio_limits_deny_entries_but_not_exits(redis_url: str, tmp_path: Path) -> None:
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server, max_positions=1)
        assert rig.submit("CL").accepted
        denied = rig.submit("GC")
        assert (denied.accepted, denied.status, denied.detail) == (False, "denied", "portfolio: max_positions")
        assert (rig.status("GC"), rig.error("GC")) == (OrderStatus.CANCELLED, "denied: portfolio: max_positions")
        assert rig.submit("CL", Role.EXIT, "sell").accepted
        rig.coordinator.release("CL")  # the exit filled
        rig.coordinator.record_pnl(date(2024, 3, 4), "t-1", -600.0)  # the daily stop
        later = datetime(2024, 3, 4, 20, tzinfo=UTC)
        assert rig.submit("ES", when=later).detail == "portfolio: daily_stop"
        assert rig.submit("ES", when=datetime(2024, 3, 5, 20, tzinfo=UTC)).accepted  # next trading day
    assert len(server.requests) == 3


def test_a_refused_entry_stays_refused_after_a_restart(redis_url: str, tmp_path: Path) -> None:
    """The refusal is durable: a replay of its bar, or the same live step run again, does not place it."""
    with WebhookServer() as server:
        rig = Rig(redis_url, tmp_path, server, max_positions=1)
        assert rig.submit("CL").accepted
        assert rig.submit("GC").status == "denied"
        rig.coordinator.release("CL")  # a slot is free now: a fresh decision would be granted
        restarted = Rig(redis_url, tmp_path, server, max_positions=1)
        replayed = restarted.submit("GC", replay=True)
        again = restarted.submit("GC")  # the crashed step run again on the same bar
        assert len(server.requests) == 1  # only CL's entry was ever sent
    assert (replayed.accepted, replayed.status) == (False, "cancelled")
    assert (again.accepted, again.status) == (False, "cancelled")
    assert (rig.status("GC"), rig.error("GC")) == (OrderStatus.CANCELLED, "denied: portfolio: max_positions")
    assert "GC" not in rig.coordinator.owned()


def test_retries_and_final_states_in_the_journal(redis_url: str, tmp_path: Path) -> None:
    def script(n: int, body: dict[str, Any]) -> Reply:
        symbol = body["extras"]["symbol"]
        if symbol == "CL":
            return Reply(500) if n == 1 else Reply()
        return Reply(502)

    with WebhookServer(script) as server:
        rig = Rig(redis_url, tmp_path, server)
        assert rig.submit("CL").accepted
        assert not rig.submit("GC").accepted
    cl, gc = rig.journal.get("s-CL-20240304T230000Z-buy"), rig.journal.get("s-GC-20240304T230000Z-buy")
    assert cl is not None and (cl.status, cl.attempts) == (OrderStatus.ACKNOWLEDGED, 2)
    assert gc is not None and (gc.status, gc.attempts, gc.http_status, gc.error) == (
        OrderStatus.FAILED, 3, 502, "HTTP 502")
    assert server.deliveries() == {cl.client_order_id: 2, gc.client_order_id: 3}
    assert set(rig.coordinator.owned()) == {"CL"}


def test_connection_refused_and_a_timeout_end_in_the_journal(redis_url: str, tmp_path: Path) -> None:
    with WebhookServer(lambda n, b: Reply(delay_s=1.5) if n == 1 else Reply()) as server:
        rig = Rig(redis_url, tmp_path, server)
        assert rig.submit("CL").accepted  # the first attempt timed out (1 s), the second was acknowledged
        rig.execution.sender = TradersPostClient(f"http://127.0.0.1:{free_port()}/trading/webhook/x-uuid/x-pass", FAST)
        refused = rig.submit("GC")
    cl, gc = rig.journal.get("s-CL-20240304T230000Z-buy"), rig.journal.get("s-GC-20240304T230000Z-buy")
    assert cl is not None and (cl.status, cl.attempts, cl.http_status) == (OrderStatus.ACKNOWLEDGED, 2, 200)
    assert server.deliveries() == {cl.client_order_id: 2}  # the timed-out request had arrived too
    assert (refused.accepted, refused.status) == (False, "failed")
    assert gc is not None and (gc.status, gc.attempts, gc.http_status) == (OrderStatus.FAILED, 3, None)
    assert gc.error is not None and gc.error.startswith("connection error") and "x-uuid" not in gc.error
    assert set(rig.coordinator.owned()) == {"CL"}
