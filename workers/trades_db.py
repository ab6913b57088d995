"""The trades database (SQLite, ``<runtime>/trades.db``): paper trades and the bar ledger.

``trades`` holds one row per closed trade, keyed by a deterministic id
(``strategy:symbol:entry time``) so that re-recording a trade is a no-op.
``bar_log`` holds one row per bar a worker has processed, written in the same transaction
as the trades of that Backtrader step: after a crash both are there or neither is, and the
largest stream id per feed is where a restarted worker resumes ledgering.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from workers.bar_stream import StreamId

_SCHEMA: Final = """
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


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One closed paper trade. Times are UTC-aware; ``pnl`` is gross, in the contract currency."""

    strategy: str
    symbol: str
    contract: str
    direction: str
    size: int
    entry_time: datetime
    entry_price: float
    exit_time: datetime
    exit_price: float
    pnl: float
    commission: float
    net_pnl: float
    exit_reason: str
    bars_held: int

    @property
    def trade_id(self) -> str:
        """``strategy:symbol:entry time``: the same trade recorded twice is one row."""
        return f"{self.strategy}:{self.symbol}:{self.entry_time.isoformat()}"


_TRADE_COLUMNS: Final = tuple(f.name for f in fields(TradeRecord))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A processed bar: the feed it came through, its stream id and its end."""

    feed: str
    stream_id: StreamId
    bar_end: datetime


def _now() -> str:
    return datetime.now(UTC).isoformat()


class TradesDB:
    """Connection to the trades database; one per process (WAL lets readers run alongside)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL: a killed process loses nothing that was committed; only power loss
        # can drop the last commits, and then bar_log and trades go back together.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def cursors(self, strategy: str) -> dict[str, StreamId]:
        """Per feed, the largest stream id already ledgered for ``strategy``."""
        feeds = [r[0] for r in self.conn.execute("SELECT DISTINCT feed FROM bar_log WHERE strategy = ?", (strategy,))]
        out: dict[str, StreamId] = {}
        for feed in feeds:
            ms, seq = self.conn.execute(
                "SELECT stream_ms, stream_seq FROM bar_log WHERE strategy = ? AND feed = ? "
                "ORDER BY stream_ms DESC, stream_seq DESC LIMIT 1",
                (strategy, feed),
            ).fetchone()
            out[feed] = (int(ms), int(seq))
        return out

    def record_step(self, strategy: str, bars: Sequence[LedgerEntry], trades: Sequence[TradeRecord]) -> int:
        """Ledger ``bars`` and insert ``trades`` in one transaction; returns trades newly inserted."""
        now = _now()
        inserted = 0
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(
                "INSERT INTO bar_log (strategy, feed, stream_ms, stream_seq, bar_end, processed_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(strategy, b.feed, b.stream_id[0], b.stream_id[1], b.bar_end.isoformat(), now) for b in bars],
            )
            for t in trades:
                cur = self.conn.execute(
                    f"INSERT OR IGNORE INTO trades (trade_id, {', '.join(_TRADE_COLUMNS)}, recorded_at) "
                    f"VALUES ({', '.join('?' * (len(_TRADE_COLUMNS) + 2))})",
                    (t.trade_id, *_to_row(t), now),
                )
                inserted += cur.rowcount
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return inserted

    def trades(self, strategy: str | None = None) -> list[TradeRecord]:
        """Closed trades in exit order (all strategies unless one is named)."""
        sql = f"SELECT {', '.join(_TRADE_COLUMNS)} FROM trades"
        args: tuple[str, ...] = ()
        if strategy is not None:
            sql += " WHERE strategy = ?"
            args = (strategy,)
        rows = self.conn.execute(sql + " ORDER BY exit_time, symbol, entry_time", args).fetchall()
        return [_from_row(r) for r in rows]

    def trade_count(self, strategy: str) -> int:
        """Closed trades recorded for ``strategy``."""
        return int(self.conn.execute("SELECT COUNT(*) FROM trades WHERE strategy = ?", (strategy,)).fetchone()[0])


def _to_row(t: TradeRecord) -> Iterable[object]:
    return [v.isoformat() if isinstance(v, datetime) else v for v in astuple(t)]


def _from_row(row: Sequence[object]) -> TradeRecord:
    d = dict(zip(_TRADE_COLUMNS, row, strict=True))
    d["entry_time"] = datetime.fromisoformat(str(d["entry_time"]))
    d["exit_time"] = datetime.fromisoformat(str(d["exit_time"]))
    return TradeRecord(**d)  # type: ignore[arg-type]
