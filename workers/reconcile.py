"""Restart safety: compare what the DB, the order journal, the coordinator and the strategy hold.

Two moments:

- **At start** (preflight, before any bar): every open position in the DB must have an entry
  order the broker acknowledged; slots the coordinator holds for this strategy without a DB
  position are stale (they will be released); orders left ``sent`` by a crash are in doubt.
- **When trading starts** (the first bar no earlier run processed): the positions the strategy
  rebuilt by replaying processed bars are compared with the DB. A DB position the replay did not
  rebuild (the stream was trimmed, or issue 5's warmup does not replay orders) is *restored*;
  a position the strategy holds but the DB does not, or a different size/direction, is a mismatch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pine.trade_records import PositionRecord
from workers.coordinator import Slot
from workers.order_journal import ACCEPTED, OrderJournal, OrderRecord, OrderStatus


class ReconcileError(RuntimeError):
    """A mismatch between DB, journal, coordinator and strategy, with ``fail_fast`` set."""


@dataclass(frozen=True)
class Finding:
    """One result of a check: ``fail`` (a mismatch), ``warn`` or ``info``."""

    level: str
    text: str


@dataclass
class PositionCheck:
    """Positions to restore into the strategy, mismatches (``problems``) and notes."""

    restore: list[PositionRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def describe(p: PositionRecord) -> str:
    """``long 2 @ 78.12 since 2024-03-04T23:06:00+00:00``."""
    return f"{p.direction} {p.size} @ {p.entry_price} since {p.entry_time.isoformat()}"


def entry_problem(p: PositionRecord, journal: OrderJournal) -> str | None:
    """Why the DB position ``p`` lacks an acknowledged entry order, or None if it has one."""
    order = journal.get(p.entry_order_id) if p.entry_order_id else None
    if order is None:
        return f"{p.symbol}: open in the DB ({describe(p)}) but its entry order {p.entry_order_id} is not journaled"
    if order.status not in ACCEPTED:
        return f"{p.symbol}: open in the DB ({describe(p)}) but its entry order {p.entry_order_id} is {order.status}"
    return None


def startup_findings(db_positions: Mapping[str, PositionRecord], journal: OrderJournal,
                     slots: Mapping[str, Slot], unresolved: list[OrderRecord]) -> list[Finding]:
    """Checks before any bar: DB positions vs journal acknowledgements vs coordinator slots."""
    findings = [Finding("fail", problem) for p in db_positions.values() if (problem := entry_problem(p, journal))]
    pending_entries = {o.intent.symbol for o in unresolved if o.intent.role == "entry"}
    for symbol, p in db_positions.items():
        if symbol not in slots:
            findings.append(Finding("info", f"{symbol}: open in the DB ({describe(p)}), no coordinator slot: "
                                            "it will be restored"))
    for symbol, slot in slots.items():
        if symbol not in db_positions and symbol not in pending_entries:
            findings.append(Finding("warn", f"{symbol}: the coordinator holds a {slot.state} slot "
                                            f"({slot.client_order_id}) but the DB has no position: "
                                            "it will be released"))
    for order in unresolved:
        if order.status is OrderStatus.SENT:
            findings.append(Finding("warn", f"order {order.client_order_id} was being sent when the worker stopped "
                                            "(it may have arrived): it will not be resent; check the broker"))
        else:
            findings.append(Finding("info", f"order {order.client_order_id} was journaled but never sent: it is "
                                            "sent once if the strategy signals it again, else cancelled"))
    return findings


def compare_positions(shadow: Mapping[str, PositionRecord], db_positions: Mapping[str, PositionRecord],
                      journal: OrderJournal) -> PositionCheck:
    """What the replay rebuilt (``shadow``) against the DB, when trading starts."""
    check = PositionCheck()
    for symbol, p in db_positions.items():
        mine = shadow.get(symbol)
        if mine is None:
            if (problem := entry_problem(p, journal)) is not None:
                check.problems.append(problem)
            else:
                check.restore.append(p)
        elif (mine.direction, mine.size) != (p.direction, p.size):
            check.problems.append(f"{symbol}: the strategy holds {describe(mine)} after the replay, "
                                  f"the DB {describe(p)}")
        elif (mine.entry_price, mine.entry_time) != (p.entry_price, p.entry_time):
            check.notes.append(f"{symbol}: the replay filled at {mine.entry_price} ({mine.entry_time.isoformat()}), "
                               f"the DB says {p.entry_price} ({p.entry_time.isoformat()}); keeping the replay's")
    for symbol in shadow.keys() - db_positions.keys():
        check.problems.append(f"{symbol}: the strategy holds {describe(shadow[symbol])} after the replay, "
                              "the DB has no open position")
    return check
