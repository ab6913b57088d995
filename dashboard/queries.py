"""What the dashboard reads from the trades DB, always through a read-only connection (totals over every
trade are in ``dashboard.totals``).

Every function takes an open read-only connection (``workers.trades_db.open_reader``) and returns
plain JSON-ready data. A DB without some table (a fresh runtime dir, or an older schema without the ML
veto table) gives empty results rather than errors.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Final

RECENT_TRADES: Final = 50
# The ML veto audit table (trades DB schema v3); a DB from before v3 has none.
ML_TABLE: Final = "ml_decisions"
ML_ROWS: Final = 50
_ML_COLUMNS: Final = ("signal_time", "strategy", "symbol", "model", "version", "score", "threshold", "take",
                      "shadow", "outcome", "features", "recorded_at")
ML_OUTCOMES: Final = ("taken", "vetoed", "not_ready")

_TRADE_COLUMNS: Final = ("strategy", "symbol", "contract", "direction", "size", "entry_time", "entry_price",
                         "exit_time", "exit_price", "pnl", "commission", "net_pnl", "exit_reason", "bars_held",
                         "trading_day", "ml_score")
_POSITION_COLUMNS: Final = ("strategy", "symbol", "contract", "direction", "size", "entry_time", "entry_price",
                            "stop_price", "bars_held", "best_price", "worst_price", "updated_at")


def tables(conn: sqlite3.Connection) -> set[str]:
    """Names of the DB's tables and views."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}


def _rows(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def open_positions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Open positions of every strategy (as of each worker's latest step)."""
    if "positions" not in tables(conn):
        return []
    return _rows(conn, f"SELECT {', '.join(_POSITION_COLUMNS)} FROM positions ORDER BY strategy, symbol")


def recent_trades(conn: sqlite3.Connection, strategies: list[str], limit: int = RECENT_TRADES
                  ) -> list[dict[str, Any]]:
    """The latest closed trades, newest first.

    Read per strategy through the ``(strategy, exit_time)`` index and merged: one ``ORDER BY exit_time``
    over the whole table would sort every trade.
    """
    if "trades" not in tables(conn):
        return []
    rows = [r for s in strategies for r in _rows(
        conn, f"SELECT trade_id, {', '.join(_TRADE_COLUMNS)} FROM trades WHERE strategy = ? "
              "ORDER BY exit_time DESC LIMIT ?", (s, limit))]
    rows.sort(key=lambda r: (r["exit_time"], r["trade_id"]), reverse=True)
    return rows[:limit]


def _features(text: Any) -> dict[str, Any] | None:
    """The decision's feature values (a JSON object in the DB); None if they cannot be read."""
    try:
        doc = json.loads(text)
    except (TypeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def ml_decisions(conn: sqlite3.Connection, limit: int = ML_ROWS) -> dict[str, Any] | None:
    """The latest ML veto decisions, newest first, and how many of each outcome the table holds; None if the DB
    has no audit table.

    ``take`` is what the model said (None when the features were not ready), ``outcome`` what the worker did
    (``taken`` — in shadow mode even when the model said no —, ``vetoed`` or ``not_ready``).
    """
    if ML_TABLE not in tables(conn):
        return None
    rows = _rows(conn, f"SELECT {', '.join(_ML_COLUMNS)} FROM {ML_TABLE} "
                       "ORDER BY signal_time DESC, strategy, symbol LIMIT ?", (limit,))
    for r in rows:
        # SQLite stores booleans as integers.
        r["take"] = None if r["take"] is None else bool(r["take"])
        r["shadow"] = bool(r["shadow"])
        r["features"] = _features(r["features"])
    counts = dict(conn.execute(f"SELECT outcome, COUNT(*) FROM {ML_TABLE} GROUP BY outcome").fetchall())
    return {"table": ML_TABLE, "counts": {o: counts.get(o, 0) for o in ML_OUTCOMES}, "rows": rows}
