"""The notification outbox: SQLite in the runtime dir (``notifications.db``), shared by every Pine process.

Tables:

- ``messages``: one row per (event id, channel), in enqueue order (``seq``). The unique key is the
  duplicate suppression: the same event enqueued again, by this process after a restart or by
  another process, is ignored (``INSERT OR IGNORE``). Status ``pending`` → ``sending`` (recorded
  before the POST) → ``delivered`` | ``failed`` (Discord refused it for good) | ``expired``
  (undeliverable for ``give_up_after_h``). A row found ``sending`` by a new claim was being sent
  when its sender stopped: it is sent again, marked as a possible repeat.
- ``channels``: per channel, which sender holds it (a lease) and until when it must wait
  (Discord's ``retry_after``, or the backoff after 5xx/network errors).
- ``cursors``: how far the Redis streams have been forwarded (``pine.notify.watch``).

Order per channel: a sender only ever takes the channel's oldest open message, and only while it
holds the channel's lease, taken in the same ``BEGIN IMMEDIATE`` transaction; so across processes
one channel is drained by one sender at a time, strictly in ``seq`` order, and a message that
waits (429, 5xx) holds back the later ones of its channel only. Webhook URLs are never stored.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pine.notify.events import Message

log = logging.getLogger(__name__)

OUTBOX_FILE: Final = "notifications.db"
OPEN: Final = ("pending", "sending")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL,
    channel      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    level        TEXT NOT NULL CHECK (level IN ('on', 'silent')),
    body         TEXT NOT NULL,
    source       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'sending', 'delivered', 'failed', 'expired')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    http_status  INTEGER,
    last_error   TEXT,
    delivered_at REAL,
    UNIQUE (event_id, channel)
);
CREATE INDEX IF NOT EXISTS messages_open ON messages (status, channel, seq);
CREATE TABLE IF NOT EXISTS channels (
    channel     TEXT PRIMARY KEY,
    owner       TEXT,
    lease_until REAL NOT NULL DEFAULT 0,
    not_before  REAL NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cursors (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Claim:
    """The head message of a channel, taken by a sender; ``failures``: consecutive failed attempts on it."""

    seq: int
    channel: str
    level: str
    message: Message
    attempts: int
    failures: int
    possible_repeat: bool


class Outbox:
    """One connection to the outbox, safe to share between this process's threads."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        with self._lock:
            self.conn.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()

    def enqueue(self, msg: Message, channel: str, level: str, source: str) -> bool:
        """Add ``msg`` for ``channel``; False if this event was already enqueued for it (a duplicate)."""
        with self._lock:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO messages (event_id, channel, kind, level, body, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg.event_id, channel, msg.kind.value, level, msg.to_json(), source, msg.occurred_at))
            return cur.rowcount == 1

    def has_event(self, event_id: str) -> bool:
        """Whether ``event_id`` was enqueued for any channel."""
        with self._lock:
            return self.conn.execute("SELECT 1 FROM messages WHERE event_id = ? LIMIT 1", (event_id,)).fetchone() \
                is not None

    def has_delivered(self, event_id: str) -> bool:
        """Whether ``event_id`` was delivered to at least one channel."""
        with self._lock:
            return self.conn.execute("SELECT 1 FROM messages WHERE event_id = ? AND status = 'delivered' LIMIT 1",
                                     (event_id,)).fetchone() is not None

    def open_messages(self, limit: int = 50) -> list[tuple[int, str, str, str, int, str | None]]:
        """(seq, event id, kind, status, attempts, last error) of the oldest messages not yet delivered."""
        with self._lock:
            return self.conn.execute(
                "SELECT seq, event_id, kind, status, attempts, last_error FROM messages "
                "WHERE status IN ('pending', 'sending') ORDER BY seq LIMIT ?", (limit,)).fetchall()

    def claim(self, owner: str, channels: Collection[str], *, now: float, lease_s: float, give_up_s: float
              ) -> Claim | None:
        """Take the oldest open message of a channel in ``channels`` that is free and not waiting, or None."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                claim = self._claim(owner, channels, now, lease_s, give_up_s)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return claim

    def _claim(self, owner: str, channels: Collection[str], now: float, lease_s: float, give_up_s: float
               ) -> Claim | None:
        heads = self.conn.execute(
            "SELECT channel, MIN(seq) FROM messages WHERE status IN ('pending', 'sending') GROUP BY channel "
            "ORDER BY MIN(seq)").fetchall()
        for channel, seq in heads:
            if channel not in channels:
                continue
            row = self.conn.execute("SELECT owner, lease_until, not_before, failures FROM channels WHERE channel = ?",
                                    (channel,)).fetchone()
            holder, lease_until, not_before, failures = row or (None, 0.0, 0.0, 0)
            if (holder not in (None, owner) and lease_until > now) or not_before > now:
                continue
            self.conn.execute(
                "INSERT INTO channels (channel, owner, lease_until) VALUES (?, ?, ?) "
                "ON CONFLICT (channel) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until",
                (channel, owner, now + lease_s))
            status, level, body, created, attempts = self.conn.execute(
                "SELECT status, level, body, created_at, attempts FROM messages WHERE seq = ?", (seq,)).fetchone()
            if created < now - give_up_s:
                self.conn.execute("UPDATE messages SET status = 'expired' WHERE seq = ?", (seq,))
                log.error("notification %s dropped: undelivered %.1f h after its event", seq, (now - created) / 3600)
                return self._claim(owner, channels, now, lease_s, give_up_s)
            self.conn.execute("UPDATE messages SET status = 'sending', attempts = attempts + 1 WHERE seq = ?", (seq,))
            return Claim(seq, channel, level, Message.from_json(body), attempts + 1, int(failures),
                         possible_repeat=status == "sending")
        return None

    def finish(self, claim: Claim, status: str, *, now: float, http_status: int | None = None, error: str = "",
               wait_s: float = 0.0, failures: int = 0) -> None:
        """Record how the attempt on ``claim`` ended.

        ``status`` is the message's new status (``delivered``, ``failed``, or ``pending`` to try again);
        the channel waits ``wait_s`` before its next message and keeps ``failures`` for the backoff.
        """
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(
                    "UPDATE messages SET status = ?, http_status = ?, last_error = ?, delivered_at = ? WHERE seq = ?",
                    (status, http_status, error or None, now if status == "delivered" else None, claim.seq))
                self.conn.execute("UPDATE channels SET not_before = ?, failures = ? WHERE channel = ?",
                                  (now + wait_s, failures, claim.channel))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def release(self, owner: str) -> None:
        """Give up ``owner``'s channel leases (a stopping sender), so other processes take over at once."""
        with self._lock:
            self.conn.execute("UPDATE channels SET lease_until = 0 WHERE owner = ?", (owner,))

    def next_due(self, channels: Collection[str]) -> float | None:
        """The earliest time a waiting channel with open messages may send again (None: none waits)."""
        with self._lock:
            rows = self.conn.execute(
                "SELECT c.channel, c.not_before FROM channels c WHERE EXISTS (SELECT 1 FROM messages m "
                "WHERE m.channel = c.channel AND m.status IN ('pending', 'sending'))").fetchall()
        return min((t for ch, t in rows if ch in channels), default=None)

    def open_count(self, channels: Collection[str] | None = None) -> int:
        """Messages not yet delivered (in ``channels``, or all)."""
        with self._lock:
            rows = self.conn.execute("SELECT channel, COUNT(*) FROM messages WHERE status IN ('pending', 'sending') "
                                     "GROUP BY channel").fetchall()
        return sum(n for ch, n in rows if channels is None or ch in channels)

    def counts(self) -> dict[str, int]:
        """Messages per status."""
        with self._lock:
            return dict(self.conn.execute("SELECT status, COUNT(*) FROM messages GROUP BY status").fetchall())

    def cursor(self, name: str) -> str | None:
        """A stored position (a Redis stream id), or None."""
        with self._lock:
            row = self.conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return str(row[0]) if row else None

    def set_cursor(self, name: str, value: str) -> None:
        """Store a position."""
        with self._lock:
            self.conn.execute("INSERT INTO cursors (name, value) VALUES (?, ?) "
                              "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (name, value))
