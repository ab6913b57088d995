"""The trades database (SQLite, ``<runtime>/trades.db`` by default): the worker's ops record.

Tables (schema and migrations in ``workers.db_schema``):

- ``trades``: one row per closed trade, keyed by a deterministic id (``strategy:symbol:entry time``)
  so that re-recording a trade is a no-op; with requested vs filled prices, commission, exit
  reason, entry tag, bars held, best/worst price, trading day and the orders that opened and closed it.
- ``bar_log``: one row per bar a worker has processed; the largest stream id per feed is where a
  restarted worker resumes ledgering.
- ``fills``: one row per executed order (paper fills, or the modelled fills of a webhook broker).
- ``positions``: the open positions of each strategy after its latest processed step.
- ``orders``: the order outbox (``workers.order_journal``), written before anything is sent.
- ``ml_decisions``: the ML veto audit, one row per entry signal of an ML-enabled symbol (taken, vetoed
  or not ready), keyed by strategy, symbol and signal time.
- ``daily_pnl``: a view of realised P&L per strategy and CME trading day.

Trades, fills and positions are the records of ``pine.trade_records``; a row holds a record's fields in order.

Bars, trades, fills, ML decisions and positions of one Backtrader step are written in one transaction: after a
crash they are all there or none is. WAL mode: readers never block the writer (one connection, so
one writer, per process); several worker processes share the file under a busy timeout.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

from pine.sessions import SessionCalendar
from pine.trade_records import FillRecord, PositionRecord, TradeRecord
from workers.bar_stream import StreamId
from workers.db_schema import bar_end_trading_day, migrate, schema_version

BUSY_TIMEOUT_S: Final = 30.0
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A processed bar: the feed it came through, its stream id and its end."""

    feed: str
    stream_id: StreamId
    bar_end: datetime


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One ML veto decision on an entry signal. ``outcome``: ``taken``, ``vetoed`` or ``not_ready`` (no
    decision: ``version`` of the model that would have decided, score, threshold and take are None).
    ``features`` is the JSON object of the feature values (None where not ready)."""

    strategy: str
    symbol: str
    signal_time: datetime
    model: str
    version: str | None
    score: float | None
    threshold: float | None
    take: bool | None
    shadow: bool
    outcome: str
    features: str


def _columns(cls: type) -> tuple[str, ...]:
    """A record's fields, in order: the names of its table's columns."""
    return tuple(f.name for f in fields(cls))


def _insert_sql(table: str, columns: Sequence[str], *, verb: str = "INSERT OR IGNORE") -> str:
    """``verb INTO table (columns) VALUES (?, …)``."""
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# A record's own fields, plus what the DB adds: the trade's id and trading day, when the row was written.
_INSERT_TRADE: Final = _insert_sql("trades", ("trade_id", *_columns(TradeRecord), "trading_day", "recorded_at"))
_INSERT_FILL: Final = _insert_sql("fills", (*_columns(FillRecord), "recorded_at"))
_INSERT_DECISION: Final = _insert_sql("ml_decisions", (*_columns(DecisionRecord), "recorded_at"))
# Positions are replaced as a whole (deleted first): a duplicate is an error, not a no-op.
_INSERT_POSITION: Final = _insert_sql("positions", (*_columns(PositionRecord), "updated_at"), verb="INSERT")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def open_reader(path: Path | str) -> sqlite3.Connection:
    """A read-only connection (dashboards, reports, tests): never takes the write lock."""
    conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the DB to WAL (persistent, so once per file). Two processes opening a new file at once
    race for the switch, and SQLite answers the loser "database is locked" at once, without the busy
    handler: retry until the winner's switch is visible."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class TradesDB:
    """The writer connection to the trades database; one per process. Opening migrates the schema."""

    def __init__(self, path: Path | str, *, calendar: SessionCalendar | None = None) -> None:
        self.path = Path(path)
        self.calendar = calendar or SessionCalendar()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(self.conn)
        # WAL + NORMAL: a killed process loses nothing that was committed; only power loss
        # can drop the last commits, and then a step's rows go back together.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.migrated = migrate(self.conn, self.calendar)

    @property
    def schema_version(self) -> int:
        """The DB's schema version (``PRAGMA user_version``)."""
        return schema_version(self.conn)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def check_writable(self) -> None:
        """Take and release the write lock (raises sqlite3.Error if the DB cannot be written)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("ROLLBACK")

    def first_live_bar_end(self, strategy: str) -> datetime | None:
        """The end of the first bar ``strategy`` took from the live streams (None: it never ran live)."""
        (end,) = self.conn.execute("SELECT MIN(bar_end) FROM bar_log WHERE strategy = ?", (strategy,)).fetchone()
        return None if end is None else datetime.fromisoformat(end)

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

    def record_step(
        self,
        strategy: str,
        bars: Sequence[LedgerEntry],
        trades: Sequence[TradeRecord],
        fills: Sequence[FillRecord] = (),
        positions: Mapping[str, PositionRecord] | None = None,
        decisions: Sequence[DecisionRecord] = (),
    ) -> int:
        """Write one step in one transaction; returns trades newly inserted.

        ``positions`` (if given) replaces the strategy's open positions. Trades, fills and ML decisions
        already recorded are left as they are.
        """
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
                trading_day = bar_end_trading_day(self.calendar, t.exit_time)
                inserted += self.conn.execute(_INSERT_TRADE, (t.trade_id, *_to_row(t), trading_day, now)).rowcount
            self.conn.executemany(_INSERT_FILL, [(*_to_row(f), now) for f in fills])
            self.conn.executemany(_INSERT_DECISION, [(*_to_row(d), now) for d in decisions])
            if positions is not None:
                self._replace_positions(strategy, positions, now)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return inserted

    def _replace_positions(self, strategy: str, positions: Mapping[str, PositionRecord], now: str) -> None:
        self.conn.execute("DELETE FROM positions WHERE strategy = ?", (strategy,))
        self.conn.executemany(_INSERT_POSITION, [(*_to_row(p), now) for p in positions.values()])

    def _select(self, cls: type[_R], table: str, rest: str, args: Sequence[object]) -> list[_R]:
        """``cls`` records read from ``table``; ``rest`` is the query after ``FROM table`` (filter, order)."""
        columns = _columns(cls)
        rows = self.conn.execute(f"SELECT {', '.join(columns)} FROM {table} {rest}", args).fetchall()
        return [_from_row(cls, columns, r) for r in rows]

    def trades(self, strategy: str | None = None) -> list[TradeRecord]:
        """Closed trades in exit order (all strategies unless one is named)."""
        where, args = ("", ()) if strategy is None else ("WHERE strategy = ?", (strategy,))
        return self._select(TradeRecord, "trades", f"{where} ORDER BY exit_time, symbol, entry_time", args)

    def trade_count(self, strategy: str) -> int:
        """Closed trades recorded for ``strategy``."""
        return int(self.conn.execute("SELECT COUNT(*) FROM trades WHERE strategy = ?", (strategy,)).fetchone()[0])

    def fills(self, strategy: str) -> list[FillRecord]:
        """Fills of ``strategy`` in time order."""
        return self._select(FillRecord, "fills", "WHERE strategy = ? ORDER BY fill_time, client_order_id", (strategy,))

    def decisions(self, strategy: str) -> list[DecisionRecord]:
        """ML veto decisions of ``strategy`` in signal order."""
        return self._select(DecisionRecord, "ml_decisions", "WHERE strategy = ? ORDER BY signal_time, symbol",
                            (strategy,))

    def decision(self, strategy: str, symbol: str, signal_time: datetime) -> DecisionRecord | None:
        """The ML veto decision recorded on ``symbol``'s signal at ``signal_time``, if any (a replayed signal's)."""
        found = self._select(DecisionRecord, "ml_decisions", "WHERE strategy = ? AND symbol = ? AND signal_time = ?",
                             (strategy, symbol, signal_time.isoformat()))
        return found[0] if found else None  # the table's key: one at most

    def open_positions(self, strategy: str) -> dict[str, PositionRecord]:
        """Open positions of ``strategy`` after its latest recorded step, by symbol."""
        positions = self._select(PositionRecord, "positions", "WHERE strategy = ? ORDER BY symbol", (strategy,))
        return {p.symbol: p for p in positions}


def _to_row(record: object) -> Iterable[object]:
    return [v.isoformat() if isinstance(v, datetime) else v for v in astuple(record)]  # type: ignore[call-overload]


# SQLite stores times as ISO text and booleans as integers.
_TIME_FIELDS: Final = frozenset({"entry_time", "exit_time", "fill_time", "signal_time"})
_BOOL_FIELDS: Final = frozenset({"take", "shadow"})


def _from_row(cls: type[_R], columns: Sequence[str], row: Sequence[object]) -> _R:
    d = dict(zip(columns, row, strict=True))
    for name in _TIME_FIELDS & d.keys():
        d[name] = datetime.fromisoformat(str(d[name]))
    for name in _BOOL_FIELDS & d.keys():
        d[name] = None if d[name] is None else bool(d[name])
    return cls(**d)
