"""Trades DB: migration of a skeleton (v1) DB, schema version, WAL readers, steps, the order outbox."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from pine.trade_records import FillRecord, PositionRecord, TradeRecord
from tests.conftest import REPO
from workers.db_schema import SCHEMA_VERSION, SchemaError
from workers.order_journal import OrderIntent, OrderJournal, OrderStatus, client_order_id
from workers.trades_db import LedgerEntry, TradesDB, open_reader

V1_SQL = Path(__file__).parent / "data" / "trades_db_v1.sql"
T0 = datetime(2024, 3, 4, 23, 6, tzinfo=UTC)


def _v1_db(path: Path) -> None:
    """A DB as the walking skeleton wrote it: its schema, a trade, a ledgered bar, user_version 0."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SQL.read_text())
    conn.execute(
        "INSERT INTO trades VALUES ('ibs_a:CL:2024-03-04T23:06:00+00:00', 'ibs_a', 'CL', 'CLK4', 'long', 1, "
        "'2024-03-04T23:06:00+00:00', 79.22, '2024-03-05T23:01:00+00:00', 78.56, -660.0, 9.0, -669.0, 'max_bars', "
        "1, '2024-03-06T00:00:00+00:00')")
    conn.execute("INSERT INTO bar_log VALUES ('ibs_a', 'CL_minute', 1709593500000, 0, '2024-03-04T23:06:00+00:00', "
                 "'2024-03-06T00:00:00+00:00')")
    conn.commit()
    conn.close()


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def test_a_skeleton_db_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "trades.db"
    _v1_db(path)
    db = TradesDB(path)
    assert db.migrated == [1, 2, 3] and db.schema_version == SCHEMA_VERSION == 3
    [trade] = db.trades("ibs_a")
    assert (trade.symbol, trade.net_pnl, trade.exit_reason, trade.entry_order_id) == ("CL", -669.0, "max_bars", None)
    assert db.cursors("ibs_a") == {"CL_minute": (1709593500000, 0)}
    # The exit at 23:01 UTC on 5 March is after that day's 17:00 Chicago close: trading day 6 March.
    assert db.conn.execute("SELECT trading_day FROM trades").fetchone() == ("2024-03-06",)
    assert {"requested_price", "status", "attempts"} <= _columns(db.conn, "orders")
    assert {"best_price", "worst_price", "ml_score", "ml_model_version", "entry_tag"} <= _columns(db.conn, "trades")
    assert {"signal_time", "version", "score", "threshold", "take", "shadow", "outcome", "features"} <= _columns(
        db.conn, "ml_decisions")
    assert db.conn.execute("SELECT strategy, trading_day, trades, net_pnl FROM daily_pnl").fetchall() == [
        ("ibs_a", "2024-03-06", 1, -669.0)]
    db.close()
    again = TradesDB(path)  # nothing left to do
    assert again.migrated == [] and again.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    again.close()


def test_two_processes_opening_a_new_db_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "trades.db"
    code = "import sys; from workers.trades_db import TradesDB; print(TradesDB(sys.argv[1]).migrated)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    applied = [v for p in procs for v in ast.literal_eval(p.communicate(timeout=60)[0].strip())]
    assert sorted(applied) == [1, 2, 3]  # each version applied by exactly one of them
    assert TradesDB(path).schema_version == 3


def test_a_db_from_a_newer_pine_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trades.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(SchemaError, match="schema v9, newer than this Pine's v3"):
        TradesDB(path)


def test_readers_never_block_the_writer(tmp_path: Path) -> None:
    db = TradesDB(tmp_path / "trades.db")
    reader = open_reader(db.path)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM bar_log").fetchone() == (0,)  # a read transaction is open
    db.record_step("s", [LedgerEntry("CL_minute", (1, 0), T0)], [])  # the writer commits regardless
    assert reader.execute("SELECT COUNT(*) FROM bar_log").fetchone() == (0,)  # the reader keeps its snapshot
    reader.execute("COMMIT")
    assert reader.execute("SELECT COUNT(*) FROM bar_log").fetchone() == (1,)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM bar_log")


def _position(**kw: object) -> PositionRecord:
    base: dict[str, object] = dict(
        strategy="s", symbol="CL", contract="CLK4", direction="long", size=1, entry_time=T0, entry_price=79.22,
        entry_order_id="s-CL-20240304T230000Z-buy", entry_requested_price=79.1, entry_tag="ibs=0.070",
        stop_price=78.58, bars_held=0, best_price=79.3, worst_price=79.1)
    return PositionRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_a_step_writes_bars_trades_fills_and_positions_together(tmp_path: Path) -> None:
    db = TradesDB(tmp_path / "trades.db")
    fill = FillRecord("s-CL-20240304T230000Z-buy", "s", "CL", "CLK4", "entry", "buy", 1, 79.1, 79.22, 4.5, T0,
                      "paper")
    db.record_step("s", [LedgerEntry("CL_minute", (1, 0), T0)], [], [fill], {"CL": _position()})
    assert db.open_positions("s") == {"CL": _position()}
    assert db.fills("s") == [fill]
    trade = TradeRecord("s", "CL", "CLK4", "long", 1, T0, 79.22, datetime(2024, 3, 5, 2, 1, tzinfo=UTC), 78.56,
                        -660.0, 9.0, -669.0, "stop", 0, entry_order_id=fill.client_order_id, best_price=79.3,
                        worst_price=78.56)
    assert db.record_step("s", [LedgerEntry("CL_minute", (2, 0), T0)], [trade], [], {}) == 1
    assert db.open_positions("s") == {}
    [stored] = db.trades("s")
    assert (stored.worst_price, stored.entry_order_id) == (78.56, fill.client_order_id)
    with pytest.raises(sqlite3.IntegrityError):  # the bar is ledgered already: the whole step rolls back
        db.record_step("s", [LedgerEntry("CL_minute", (2, 0), T0)], [], [], {"CL": _position()})
    assert db.open_positions("s") == {}


def test_order_journal_transitions(tmp_path: Path) -> None:
    journal = OrderJournal(TradesDB(tmp_path / "trades.db"))
    cid = client_order_id("s", "CL", datetime(2024, 3, 4, 23, tzinfo=UTC), "buy")
    assert cid == "s-CL-20240304T230000Z-buy"
    intent = OrderIntent(cid, "s", "CL", "CLK4", "entry", "buy", "buy", 1, "market", None, 79.1, "ibs=0.070",
                         datetime(2024, 3, 4, 23, tzinfo=UTC), date(2024, 3, 4), "traderspost", {"ticker": "CLK2024"})
    journal.add(intent)
    with pytest.raises(sqlite3.IntegrityError):
        journal.add(intent)  # one row per client order id, ever
    assert [o.status for o in journal.unresolved("s")] == [OrderStatus.PENDING]
    journal.mark_attempt(cid, 1)
    journal.mark_attempt(cid, 2)
    assert (journal.get(cid).status, journal.get(cid).attempts) == (OrderStatus.SENT, 2)  # type: ignore[union-attr]
    journal.finish(cid, OrderStatus.ACKNOWLEDGED, attempts=2, http_status=200, response='{"success": true}',
                   error=None)
    row = journal.get(cid)
    assert row is not None and (row.status, row.attempts, row.http_status, row.intent) == (
        OrderStatus.ACKNOWLEDGED, 2, 200, intent)
    assert journal.unresolved("s") == []
    with pytest.raises(KeyError):
        journal.mark_attempt("nope", 1)



def test_opening_waits_for_a_writer_that_holds_the_lock_of_a_new_db(tmp_path: Path) -> None:
    """Workers started together on a fresh runtime dir: while one holds the write lock of the new
    (not yet WAL) file, SQLite refuses another's WAL switch at once, without the busy timeout."""
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE early (x)")
    release = threading.Timer(0.5, holder.execute, ("COMMIT",))
    release.start()
    try:
        db = TradesDB(path)
    finally:
        release.join()
        holder.close()
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.schema_version == SCHEMA_VERSION
    db.close()
