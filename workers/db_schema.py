"""Schema of the trades DB and its migrations (``PRAGMA user_version`` is the schema version).

- v1: the walking skeleton's ``trades`` and ``bar_log`` (a DB it created has user_version 0; v1's
  statements are ``IF NOT EXISTS``, so applying them to it changes nothing).
- v2: the ops record: ``trades`` gains the trading day, order ids, requested prices, entry tag,
  best/worst price and (for issue 6) ML score and model version; new ``orders`` (the outbox),
  ``fills``, ``positions`` (open positions, what a restarted worker restores) and the
  ``daily_pnl`` view.

Every step runs in its own ``BEGIN IMMEDIATE`` transaction and re-reads the version inside it,
so two workers opening one DB at the same time migrate it once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from pine.sessions import SessionCalendar

SCHEMA_VERSION: Final = 3


class SchemaError(RuntimeError):
    """The DB cannot be used by this version of Pine; the message says why."""


_V1: Final = """
CREATE TABLE IF NOT EXISTS trades (
    trade_id     TEXT PRIMARY KEY,
    strategy     TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    contract     TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('long', 'short')),
    size         INTEGER NOT NULL,
    entry_time   TEXT NOT NULL,
    entry_price  REAL NOT NULL,
    exit_time    TEXT NOT NULL,
    exit_price   REAL NOT NULL,
    pnl          REAL NOT NULL,
    commission   REAL NOT NULL,
    net_pnl      REAL NOT NULL,
    exit_reason  TEXT NOT NULL,
    bars_held    INTEGER NOT NULL,
    recorded_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_strategy_exit ON trades (strategy, exit_time);
CREATE TABLE IF NOT EXISTS bar_log (
    strategy     TEXT NOT NULL,
    feed         TEXT NOT NULL,
    stream_ms    INTEGER NOT NULL,
    stream_seq   INTEGER NOT NULL,
    bar_end      TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (strategy, feed, stream_ms, stream_seq)
);
"""

_V2_TRADE_COLUMNS: Final = (
    ("trading_day", "TEXT"),
    ("entry_order_id", "TEXT"),
    ("exit_order_id", "TEXT"),
    ("entry_requested_price", "REAL"),
    ("exit_requested_price", "REAL"),
    ("entry_tag", "TEXT"),
    ("best_price", "REAL"),
    ("worst_price", "REAL"),
    ("ml_score", "REAL"),
    ("ml_model_version", "TEXT"),
)

_V2_TABLES: Final = """
CREATE INDEX trades_day ON trades (trading_day, strategy);
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    strategy        TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    contract        TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('entry', 'exit')),
    side            TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    action          TEXT NOT NULL,
    quantity        INTEGER NOT NULL,
    order_type      TEXT NOT NULL,
    limit_price     REAL,
    requested_price REAL,
    reason          TEXT NOT NULL,
    signal_time     TEXT NOT NULL,
    trading_day     TEXT NOT NULL,
    broker          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN
                    ('pending', 'sent', 'acknowledged', 'failed', 'cancelled', 'unconfirmed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    http_status     INTEGER,
    response        TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX orders_strategy_status ON orders (strategy, status);
CREATE TABLE fills (
    client_order_id TEXT PRIMARY KEY,
    strategy        TEXT NOT NULL,
    symbol          TEXT NOT NULL,
    contract        TEXT NOT NULL,
    role            TEXT NOT NULL,
    side            TEXT NOT NULL,
    quantity        INTEGER NOT NULL,
    requested_price REAL,
    fill_price      REAL NOT NULL,
    commission      REAL NOT NULL,
    fill_time       TEXT NOT NULL,
    source          TEXT NOT NULL,
    recorded_at     TEXT NOT NULL
);
CREATE INDEX fills_strategy_time ON fills (strategy, fill_time);
CREATE TABLE positions (
    strategy              TEXT NOT NULL,
    symbol                TEXT NOT NULL,
    contract              TEXT NOT NULL,
    direction             TEXT NOT NULL CHECK (direction IN ('long', 'short')),
    size                  INTEGER NOT NULL,
    entry_time            TEXT NOT NULL,
    entry_price           REAL NOT NULL,
    entry_order_id        TEXT,
    entry_requested_price REAL,
    entry_tag             TEXT,
    stop_price            REAL,
    bars_held             INTEGER NOT NULL,
    best_price            REAL NOT NULL,
    worst_price           REAL NOT NULL,
    updated_at            TEXT NOT NULL,
    PRIMARY KEY (strategy, symbol)
);
CREATE VIEW daily_pnl AS
    SELECT strategy, trading_day, COUNT(*) AS trades, SUM(net_pnl > 0) AS wins,
           SUM(pnl) AS gross_pnl, SUM(commission) AS commission, SUM(net_pnl) AS net_pnl
    FROM trades GROUP BY strategy, trading_day;
"""


def bar_end_trading_day(calendar: SessionCalendar, end: datetime) -> str:
    """Trading day (ISO date) of the session a bar ending at ``end`` belongs to.

    A bar ending exactly at the session close belongs to the closing session, not the next.
    """
    return calendar.trading_day(end - timedelta(microseconds=1)).isoformat()


def _v1(conn: sqlite3.Connection, calendar: SessionCalendar) -> None:
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v2(conn: sqlite3.Connection, calendar: SessionCalendar) -> None:
    for name, kind in _V2_TRADE_COLUMNS:
        conn.execute(f"ALTER TABLE trades ADD COLUMN {name} {kind}")
    rows = conn.execute("SELECT trade_id, exit_time FROM trades").fetchall()
    conn.executemany(
        "UPDATE trades SET trading_day = ? WHERE trade_id = ?",
        [(bar_end_trading_day(calendar, datetime.fromisoformat(exit_time)), trade_id) for trade_id, exit_time in rows],
    )
    for statement in _V2_TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)


# v3: the ML veto audit, one row per entry signal of an ML-enabled symbol (vetoed ones included);
# keyed by the signal so a replayed step cannot record it twice.
_V3: Final = """
CREATE TABLE ml_decisions (
    strategy    TEXT NOT NULL,
    symbol      TEXT NOT NULL,
    signal_time TEXT NOT NULL,
    model       TEXT NOT NULL,
    version     TEXT,
    score       REAL,
    threshold   REAL,
    take        INTEGER,
    shadow      INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('taken', 'vetoed', 'not_ready')),
    features    TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (strategy, symbol, signal_time)
)
"""


def _v3(conn: sqlite3.Connection, calendar: SessionCalendar) -> None:
    conn.execute(_V3)


_MIGRATIONS: Final[tuple[tuple[int, Callable[[sqlite3.Connection, SessionCalendar], None]], ...]] = (
    (1, _v1),
    (2, _v2),
    (3, _v3),
)


def schema_version(conn: sqlite3.Connection) -> int:
    """The DB's ``user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, calendar: SessionCalendar) -> list[int]:
    """Bring the DB to :data:`SCHEMA_VERSION`; returns the versions applied (SchemaError if it is newer)."""
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaError(f"the trades DB has schema v{found}, newer than this Pine's v{SCHEMA_VERSION}: "
                          "upgrade Pine or use another DB (trades_db in the config)")
    applied: list[int] = []
    for version, step in _MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) < version:
                step(conn, calendar)
                conn.execute(f"PRAGMA user_version = {version}")
                applied.append(version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied
