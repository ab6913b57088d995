"""Dropping the trades an intraday replay sends again after a reconnect.

Key. A trade is identified by ``(ts_recv, ts_event, instrument_id, sequence, price, size, side)``:

* ``ts_recv`` is Databento's capture timestamp. A replay is served from the same captured
  stream, so a trade comes back with the same ``ts_recv`` (and ``ts_event``, the venue's time).
* ``sequence`` alone is not unique: CME MDP3 sequence numbers belong to a packet/message, and
  one trade-summary message carries several trades (one per price level, several instruments).
  ``instrument_id``, ``price``, ``size`` and ``side`` tell those trades apart.
* Equal timestamps: two different trades of one message share both timestamps and the
  sequence number; price, size or side differ unless they are genuinely indistinguishable.
  For those, the key counts *occurrences*: a replay repeats the stream in the same order, so
  the first ``n`` replayed occurrences of a key are the ``n`` already seen, and any further one
  is new. A set would wrongly drop the second of two identical fills.

Fields that a replay could plausibly re-stamp (``flags``, ``ts_in_delta``) are left out.

Window. The replay starts at ``start = last ts_recv seen − overlap`` and the gateway filters it
on ``ts_event`` (≤ ``ts_recv``). Every replayed trade we may have seen therefore has
``ts_recv ≥ start``; keys of older trades are forgotten. Once a replayed trade has a
``ts_recv`` more than the overlap beyond the last one seen before the disconnect, the replay
has passed everything already seen (even if it is not strictly in ``ts_recv`` order) and the
check stops; checking longer is harmless, as no key past that last ``ts_recv`` was seen.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

TradeKey = tuple[int, int, int, int, int, int, Any]


def trade_key(rec: Any) -> TradeKey:
    """The dedupe key of a ``TradeMsg`` (see the module docstring)."""
    return rec.ts_recv, rec.ts_event, rec.instrument_id, rec.sequence, rec.price, rec.size, rec.side


class TradeDeduper:
    """Remembers the keys of the trades of the last ``window_ns`` (by ``ts_recv``); drops replayed ones."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self._recent: deque[tuple[int, TradeKey]] = deque()
        self._counts: Counter[TradeKey] = Counter()
        self._pending: Counter[TradeKey] | None = None  # occurrences a replay will send again
        self._horizon = 0
        self.latest = 0  # the largest ts_recv seen
        self.dropped = 0

    def begin_replay(self) -> None:
        """A replay from ``latest − window_ns`` is about to arrive: its first trades repeat those seen."""
        self._pending = Counter(self._counts) if self._counts else None
        self._horizon = self.latest

    def accept(self, rec: Any) -> bool:
        """True for a new trade (remembered), False for a replayed duplicate (to drop)."""
        key = trade_key(rec)
        ts = key[0]
        pending = self._pending
        if pending is not None:
            if ts > self._horizon + self.window_ns:
                self._pending = None
            elif pending[key] > 0:
                pending[key] -= 1
                self.dropped += 1
                return False
        self._recent.append((ts, key))
        self._counts[key] += 1
        if ts > self.latest:
            self.latest = ts
            horizon = ts - self.window_ns
            recent, counts = self._recent, self._counts
            while recent[0][0] < horizon:
                old = recent.popleft()[1]
                if counts[old] == 1:
                    del counts[old]
                else:
                    counts[old] -= 1
        return True
