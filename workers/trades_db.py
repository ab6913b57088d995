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

Bars, trades, fills, ML decisions and positions of one Backtrader step are written in one transaction: after a
crash they are all there or none is. WAL mode: readers never block the writer (one connection, so
one writer, per process); several worker processes share the file under a busy timeout.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

from pine.sessions import SessionCalendar
from workers.bar_stream import StreamId
from workers.db_schema import bar_end_trading_day, migrate, schema_version

BUSY_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One closed trade. Times are UTC-aware; ``pnl`` is gross, in the contract currency.

    Equality is the trade's economics (what live/backtest parity is about); the annotations
    after ``bars_held`` (order ids, requested prices, tags, price extremes, ML) are not compared.
    """

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
    entry_order_id: str | None = field(default=None, compare=False)
    exit_order_id: str | None = field(default=None, compare=False)
    entry_requested_price: float | None = field(default=None, compare=False)
    exit_requested_price: float | None = field(default=None, compare=False)
    entry_tag: str | None = field(default=None, compare=False)
    best_price: float | None = field(default=None, compare=False)
    worst_price: float | None = field(default=None, compare=False)
    ml_score: float | None = field(default=None, compare=False)
    ml_model_version: str | None = field(default=None, compare=False)

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


@dataclass(frozen=True, slots=True)
class FillRecord:
    """An executed order. ``source`` is ``paper`` (the paper broker is the execution) or ``model``
    (a webhook broker reports no fills: the fill is the paper model of the order that was sent)."""

    client_order_id: str
    strategy: str
    symbol: str
    contract: str
    role: str
    side: str
    quantity: int
    requested_price: float | None
    fill_price: float
    commission: float
    fill_time: datetime
    source: str


_FILL_COLUMNS: Final = tuple(f.name for f in fields(FillRecord))


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """An open position as the strategy holds it: enough to restore it after a restart."""

    strategy: str
    symbol: str
    contract: str
    direction: str
    size: int
    entry_time: datetime
    entry_price: float
    entry_order_id: str | None
    entry_requested_price: float | None
    entry_tag: str | None
    stop_price: float | None
    bars_held: int
    best_price: float
    worst_price: float


_POSITION_COLUMNS: Final = tuple(f.name for f in fields(PositionRecord))


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


_DECISION_COLUMNS: Final = tuple(f.name for f in fields(DecisionRecord))


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
                cur = self.conn.execute(
                    f"INSERT OR IGNORE INTO trades (trade_id, {', '.join(_TRADE_COLUMNS)}, trading_day, recorded_at) "
                    f"VALUES ({', '.join('?' * (len(_TRADE_COLUMNS) + 3))})",
                    (t.trade_id, *_to_row(t), bar_end_trading_day(self.calendar, t.exit_time), now),
                )
                inserted += cur.rowcount
            self.conn.executemany(
                f"INSERT OR IGNORE INTO fills ({', '.join(_FILL_COLUMNS)}, recorded_at) "
                f"VALUES ({', '.join('?' * (len(_FILL_COLUMNS) + 1))})",
                [(*_to_row(f), now) for f in fills],
            )
            self.conn.executemany(
                f"INSERT OR IGNORE INTO ml_decisions ({', '.join(_DECISION_COLUMNS)}, recorded_at) "
                f"VALUES ({', '.join('?' * (len(_DECISION_COLUMNS) + 1))})",
                [(*_to_row(d), now) for d in decisions],
            )
            if positions is not None:
                self._replace_positions(strategy, positions, now)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return inserted

    def _replace_positions(self, strategy: str, positions: Mapping[str, PositionRecord], now: str) -> None:
        self.conn.execute("DELETE FROM positions WHERE strategy = ?", (strategy,))
        self.conn.executemany(
            f"INSERT INTO positions ({', '.join(_POSITION_COLUMNS)}, updated_at) "
            f"VALUES ({', '.join('?' * (len(_POSITION_COLUMNS) + 1))})",
            [(*_to_row(p), now) for p in positions.values()],
        )

    def trades(self, strategy: str | None = None) -> list[TradeRecord]:
        """Closed trades in exit order (all strategies unless one is named)."""
        sql = f"SELECT {', '.join(_TRADE_COLUMNS)} FROM trades"
        args: tuple[str, ...] = ()
        if strategy is not None:
            sql += " WHERE strategy = ?"
            args = (strategy,)
        rows = self.conn.execute(sql + " ORDER BY exit_time, symbol, entry_time", args).fetchall()
        return [_from_row(TradeRecord, _TRADE_COLUMNS, r) for r in rows]

    def trade_count(self, strategy: str) -> int:
        """Closed trades recorded for ``strategy``."""
        return int(self.conn.execute("SELECT COUNT(*) FROM trades WHERE strategy = ?", (strategy,)).fetchone()[0])

    def fills(self, strategy: str) -> list[FillRecord]:
        """Fills of ``strategy`` in time order."""
        rows = self.conn.execute(
            f"SELECT {', '.join(_FILL_COLUMNS)} FROM fills WHERE strategy = ? ORDER BY fill_time, client_order_id",
            (strategy,),
        ).fetchall()
        return [_from_row(FillRecord, _FILL_COLUMNS, r) for r in rows]

    def decisions(self, strategy: str) -> list[DecisionRecord]:
        """ML veto decisions of ``strategy`` in signal order."""
        rows = self.conn.execute(
            f"SELECT {', '.join(_DECISION_COLUMNS)} FROM ml_decisions WHERE strategy = ? ORDER BY signal_time, symbol",
            (strategy,),
        ).fetchall()
        return [_decision_from_row(r) for r in rows]

    def decision(self, strategy: str, symbol: str, signal_time: datetime) -> DecisionRecord | None:
        """The ML veto decision recorded on ``symbol``'s signal at ``signal_time``, if any (a replayed signal's)."""
        row = self.conn.execute(
            f"SELECT {', '.join(_DECISION_COLUMNS)} FROM ml_decisions WHERE strategy = ? AND symbol = ? "
            "AND signal_time = ?",
            (strategy, symbol, signal_time.isoformat()),
        ).fetchone()
        return None if row is None else _decision_from_row(row)

    def open_positions(self, strategy: str) -> dict[str, PositionRecord]:
        """Open positions of ``strategy`` after its latest recorded step, by symbol."""
        rows = self.conn.execute(
            f"SELECT {', '.join(_POSITION_COLUMNS)} FROM positions WHERE strategy = ? ORDER BY symbol", (strategy,)
        ).fetchall()
        return {p.symbol: p for p in (_from_row(PositionRecord, _POSITION_COLUMNS, r) for r in rows)}


def _to_row(record: object) -> Iterable[object]:
    return [v.isoformat() if isinstance(v, datetime) else v for v in astuple(record)]  # type: ignore[call-overload]


def _decision_from_row(row: Sequence[object]) -> DecisionRecord:
    d = _from_row(DecisionRecord, _DECISION_COLUMNS, row)
    # SQLite hands booleans back as integers.
    return replace(d, take=None if d.take is None else bool(d.take), shadow=bool(d.shadow))


_TIME_FIELDS: Final = frozenset({"entry_time", "exit_time", "fill_time", "signal_time"})
_R = TypeVar("_R")


def _from_row(cls: type[_R], columns: Sequence[str], row: Sequence[object]) -> _R:
    d = dict(zip(columns, row, strict=True))
    for name in _TIME_FIELDS & d.keys():
        d[name] = datetime.fromisoformat(str(d[name]))
    return cls(**d)
