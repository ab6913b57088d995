"""The order journal (outbox): every order intent is in SQLite before anything is sent.

Status transitions::

    pending ──> sent ──> acknowledged          (2xx from the broker; the paper broker at once)
       │          └────> failed                (4xx, or retries exhausted)
       │          └────> unconfirmed           (found 'sent' after a crash: it may have arrived)
       └────────> cancelled                    (never sent: killswitch, portfolio limit, stale)

``pending`` is written before the first attempt and ``sent`` (with the attempt count) before each
attempt, so after a crash a ``pending`` order certainly never left the process and is resent once
with the same client order id, while a ``sent`` one may have been delivered: it is not resent
(never twice) but marked ``unconfirmed`` and reported for reconciliation. The client order id is
deterministic (strategy, symbol, signal bar, side), so a strategy that makes the same decision
again after a restart finds its order here instead of creating a second one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final

from workers.trades_db import TradesDB


class OrderStatus(StrEnum):
    """Where an order is in the outbox."""

    PENDING = "pending"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNCONFIRMED = "unconfirmed"


# The broker has (or may have) the order: the strategy's book treats it as placed.
ACCEPTED: Final = frozenset({OrderStatus.ACKNOWLEDGED, OrderStatus.UNCONFIRMED})
UNRESOLVED: Final = frozenset({OrderStatus.PENDING, OrderStatus.SENT})
# Responses and errors are kept for the operator, not as an archive.
MAX_TEXT: Final = 2000


def client_order_id(strategy: str, symbol: str, signal_time: datetime, side: str) -> str:
    """``ibs_a-CL-20240304T230000Z-buy``: the same decision on the same bar always has the same id."""
    return f"{strategy}-{symbol}-{signal_time.astimezone(UTC):%Y%m%dT%H%M%SZ}-{side}"


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What is to be sent, fixed before the first attempt (a resend sends exactly this payload)."""

    client_order_id: str
    strategy: str
    symbol: str
    contract: str
    role: str
    side: str
    action: str
    quantity: int
    order_type: str
    limit_price: float | None
    requested_price: float | None
    reason: str
    signal_time: datetime
    trading_day: date
    broker: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """A journal row: the intent and how far it got."""

    intent: OrderIntent
    status: OrderStatus
    attempts: int
    http_status: int | None
    response: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def client_order_id(self) -> str:
        """The intent's client order id."""
        return self.intent.client_order_id


_INTENT_COLUMNS: Final = (
    "client_order_id", "strategy", "symbol", "contract", "role", "side", "action", "quantity", "order_type",
    "limit_price", "requested_price", "reason", "signal_time", "trading_day", "broker", "payload",
)
_SELECT: Final = (f"SELECT {', '.join(_INTENT_COLUMNS)}, status, attempts, http_status, response, error, "
                  "created_at, updated_at FROM orders")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _clip(text: str | None) -> str | None:
    return text if text is None or len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


class OrderJournal:
    """The ``orders`` table of a trades DB. Every write is its own committed transaction."""

    def __init__(self, db: TradesDB) -> None:
        self.db = db

    def get(self, cid: str) -> OrderRecord | None:
        """The order with client order id ``cid``, if journaled."""
        row = self.db.conn.execute(_SELECT + " WHERE client_order_id = ?", (cid,)).fetchone()
        return None if row is None else _record(row)

    def add(self, intent: OrderIntent) -> None:
        """Journal a new intent as ``pending`` (sqlite3.IntegrityError if the id exists)."""
        now = _now()
        values = [
            intent.client_order_id, intent.strategy, intent.symbol, intent.contract, intent.role, intent.side,
            intent.action, intent.quantity, intent.order_type, intent.limit_price, intent.requested_price,
            intent.reason, intent.signal_time.isoformat(), intent.trading_day.isoformat(), intent.broker,
            json.dumps(intent.payload, sort_keys=True),
        ]
        self.db.conn.execute(
            f"INSERT INTO orders ({', '.join(_INTENT_COLUMNS)}, status, attempts, created_at, updated_at) "
            f"VALUES ({', '.join('?' * len(_INTENT_COLUMNS))}, 'pending', 0, ?, ?)",
            (*values, now, now),
        )

    def mark_attempt(self, cid: str, attempt: int) -> None:
        """Record that attempt number ``attempt`` is about to be sent (status ``sent``)."""
        self._update(cid, status=OrderStatus.SENT, attempts=attempt)

    def finish(self, cid: str, status: OrderStatus, *, attempts: int, http_status: int | None,
               response: str | None, error: str | None) -> None:
        """Record the outcome of the delivery (``acknowledged`` or ``failed``)."""
        self._update(cid, status=status, attempts=attempts, http_status=http_status, response=_clip(response),
                     error=_clip(error))

    def resolve(self, cid: str, status: OrderStatus, error: str) -> None:
        """Close an unresolved order without sending it (``cancelled``, ``unconfirmed``), saying why."""
        self._update(cid, status=status, error=_clip(error))

    def unresolved(self, strategy: str) -> list[OrderRecord]:
        """Orders of ``strategy`` still ``pending`` or ``sent`` (oldest first)."""
        rows = self.db.conn.execute(
            _SELECT + " WHERE strategy = ? AND status IN ('pending', 'sent') ORDER BY created_at, client_order_id",
            (strategy,),
        ).fetchall()
        return [_record(r) for r in rows]

    def of_day(self, trading_day: date) -> list[OrderRecord]:
        """Every strategy's orders journaled for ``trading_day`` (in journal order)."""
        rows = self.db.conn.execute(_SELECT + " WHERE trading_day = ? ORDER BY created_at",
                                    (trading_day.isoformat(),)).fetchall()
        return [_record(r) for r in rows]

    def unplaced_entries(self, strategy: str, through: date) -> set[str]:
        """Client order ids of the entries ``strategy`` signalled through trading day ``through`` but did not
        place: refused (``cancelled`` with the reason: killswitch, portfolio limits, a restart) or ``failed``
        at the broker; the live book holds none of them."""
        rows = self.db.conn.execute(
            "SELECT client_order_id FROM orders WHERE strategy = ? AND role = 'entry' AND status IN (?, ?) "
            "AND trading_day <= ?", (strategy, OrderStatus.CANCELLED.value, OrderStatus.FAILED.value,
                                     through.isoformat()))
        return {cid for (cid,) in rows}

    def accepted_exits(self, strategy: str, reason: str) -> dict[datetime, list[str]]:
        """Symbols of the placed exits of ``strategy`` with ``reason``, by signal time."""
        out: dict[datetime, list[str]] = {}
        for signal_time, symbol in self.db.conn.execute(
                "SELECT signal_time, symbol FROM orders WHERE strategy = ? AND role = 'exit' AND reason = ? "
                "AND status IN ('acknowledged', 'unconfirmed') ORDER BY symbol", (strategy, reason)):
            out.setdefault(datetime.fromisoformat(signal_time), []).append(symbol)
        return out

    def day_counts(self, strategy: str, trading_day: date) -> dict[str, int]:
        """Orders of ``strategy`` for ``trading_day`` by status (heartbeats: orders today)."""
        rows = self.db.conn.execute("SELECT status, COUNT(*) FROM orders WHERE strategy = ? AND trading_day = ? "
                                    "GROUP BY status", (strategy, trading_day.isoformat()))
        return {status: int(n) for status, n in rows}

    def _update(self, cid: str, **values: object) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        cur = self.db.conn.execute(f"UPDATE orders SET {sets}, updated_at = ? WHERE client_order_id = ?",
                                   (*values.values(), _now(), cid))
        if cur.rowcount != 1:
            raise KeyError(f"order {cid} is not in the journal")


def _record(row: tuple[Any, ...]) -> OrderRecord:
    n = len(_INTENT_COLUMNS)
    d = dict(zip(_INTENT_COLUMNS, row[:n], strict=True))
    d["signal_time"] = datetime.fromisoformat(d["signal_time"])
    d["trading_day"] = date.fromisoformat(d["trading_day"])
    d["payload"] = json.loads(d["payload"])
    status, attempts, http_status, response, error, created, updated = row[n:]
    return OrderRecord(OrderIntent(**d), OrderStatus(status), int(attempts), http_status, response, error,
                       datetime.fromisoformat(created), datetime.fromisoformat(updated))
