-- Schema v1 of the trades DB exactly as the walking skeleton (commit 0ac280f, workers/trades_db.py) created it.
-- Kept verbatim so that tests/test_trades_db.py migrates a DB the old code wrote.
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
