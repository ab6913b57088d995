"""One connection to the Databento live gateway through the real ``databento.Live`` client.

A :class:`FeedSession` runs in its own thread: it creates a ``Live`` client, subscribes (which
connects and authenticates), starts the session and waits for it to close. Records arrive on
the client's event-loop thread and go, in order, into a :class:`RecordInbox`; the session's
own events (:class:`SessionStarted`, :class:`SessionEnded`) go into the same inbox, after the
records they follow, so the hub's single consumer sees one ordered stream. The client's own
reconnect policy is not used: it resubscribes without replay and treats a graceful close as
the end; the hub's supervisor (``hub.supervisor``) decides what happens after a session ends.

This module also checks the API key before anything connects, and classifies the gateway's
``ErrorMsg`` codes.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import databento as db
import databento_dbn as dbn

log = logging.getLogger(__name__)

API_KEY_LENGTH: Final = 32
API_KEY_PREFIX: Final = "db-"
# Records the hub has not taken yet; beyond this the client's reader waits (TCP backpressure).
INBOX_LIMIT: Final = 200_000


class ApiKeyError(ValueError):
    """No usable Databento API key; the message says what to do."""


def check_api_key(key: str | None) -> str:
    """The key if it looks like a Databento API key; ApiKeyError with a clear message otherwise.

    The key itself never appears in messages.
    """
    if key is None or not key.strip():
        raise ApiKeyError(
            "DATABENTO_API_KEY is not set: the live feed needs a Databento API key (set DATABENTO_API_KEY or "
            "databento.api_key in the config); without one, replay DBN files: `pine synth` writes a synthetic "
            "market, then `pine hub --replay <runtime>/market`"
        )
    key = key.strip()
    body = key[len(API_KEY_PREFIX):]
    if len(key) != API_KEY_LENGTH or not key.startswith(API_KEY_PREFIX) or not body.isascii() or not body.isalnum():
        raise ApiKeyError(
            f"DATABENTO_API_KEY is not a valid Databento API key: expected {API_KEY_LENGTH} letters and digits "
            f"starting with {API_KEY_PREFIX!r}, got {len(key)} characters"
            + ("" if key.startswith(API_KEY_PREFIX) else f" not starting with {API_KEY_PREFIX!r}")
            + " (copy it again from the Databento portal)"
        )
    return key


class ErrorAction(enum.Enum):
    """What the hub does about an ``ErrorMsg`` from the gateway."""

    FATAL = "fatal"  # retrying cannot help: stop with a clear message
    SKIP_SYMBOL = "skip_symbol"  # one symbol did not resolve: name it, go on with the others
    REPLAY = "replay"  # the gateway skipped records: resubscribe with replay to recover them
    NO_REPLAY = "no_replay"  # the replay start is too old: resubscribe live, the gap stays
    RETRY = "retry"  # transient: the session ends, reconnect with backoff


ERROR_ACTIONS: Final = {
    dbn.ErrorCode.AUTH_FAILED: ErrorAction.FATAL,
    dbn.ErrorCode.API_KEY_DEACTIVATED: ErrorAction.FATAL,
    # The same request would fail again.
    dbn.ErrorCode.INVALID_SUBSCRIPTION: ErrorAction.FATAL,
    dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED: ErrorAction.SKIP_SYMBOL,
    dbn.ErrorCode.SKIPPED_RECORDS_AFTER_SLOW_READING: ErrorAction.REPLAY,
    dbn.ErrorCode.REPLAY_DATA_AGED_OUT: ErrorAction.NO_REPLAY,
    # Usually our own previous connection that the gateway has not released yet.
    dbn.ErrorCode.CONNECTION_LIMIT_EXCEEDED: ErrorAction.RETRY,
    dbn.ErrorCode.INTERNAL_ERROR: ErrorAction.RETRY,
}


def error_action(rec: Any) -> ErrorAction:
    """The action for an ``ErrorMsg``; unknown and unset codes are treated as transient."""
    code = getattr(rec, "code", None)
    return ERROR_ACTIONS.get(code, ErrorAction.RETRY) if code is not None else ErrorAction.RETRY


@dataclass(frozen=True)
class FeedSettings:
    """Everything a session needs to connect and subscribe."""

    key: str
    dataset: str
    parents: tuple[str, ...]
    heartbeat_s: int
    gateway: str | None = None
    port: int = 13000

    def __repr__(self) -> str:  # the key must never reach a log line
        return (f"FeedSettings(dataset={self.dataset!r}, parents={self.parents!r}, gateway={self.gateway!r}, "
                f"port={self.port})")


@dataclass(frozen=True)
class SessionStarted:
    """Session ``number`` is authenticated and subscribed; its records follow."""

    number: int
    session_id: str | None
    replay_from: int | None


@dataclass(frozen=True)
class SessionEnded:
    """Session ``number`` is over: ``error`` None for a graceful close."""

    number: int
    error: str | None
    connected: bool  # whether it got past authentication
    auth_rejected: bool


class RecordInbox:
    """Ordered hand-over from the client's threads to the hub's one consumer.

    ``deque.append``/``popleft`` are atomic; the event only wakes a waiting consumer.
    """

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.limit = limit
        self._items: deque[Any] = deque()
        self._ready = threading.Event()
        self.closed = False

    def put(self, item: Any) -> None:
        """Add a record or event; waits while the inbox is full (the client then stops reading its socket)."""
        while len(self._items) >= self.limit and not self.closed:
            time.sleep(0.001)
        if self.closed:
            return
        self._items.append(item)
        self._ready.set()

    def take(self, limit: int) -> list[Any]:
        """Up to ``limit`` items, oldest first, without waiting."""
        items = self._items
        out = []
        while items and len(out) < limit:
            out.append(items.popleft())
        return out

    def wait(self, timeout: float) -> None:
        """Until something arrives or ``timeout`` seconds pass."""
        self._ready.clear()
        if not self._items:
            self._ready.wait(timeout)

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        """Stop accepting items (a producer blocked on a full inbox returns)."""
        self.closed = True


def is_auth_rejection(exc: BaseException) -> bool:
    """Whether an error raised while connecting is the gateway refusing the key.

    ``databento.Live`` 0.87 raises ``BentoError`` with the gateway's own error text for a
    refused authentication, and messages starting "Connection to" / "Authentication with" for
    network failures and timeouts.
    """
    return isinstance(exc, db.BentoError) and not str(exc).startswith(("Connection to", "Authentication with"))


class FeedSession:
    """One live connection in a background thread; see the module docstring."""

    def __init__(self, number: int, settings: FeedSettings, inbox: RecordInbox, replay_from: int | None) -> None:
        self.number = number
        self.settings = settings
        self.inbox = inbox
        self.replay_from = replay_from
        self._client: Any = None
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"feed-session-{number}", daemon=True)

    def start(self) -> None:
        """Connect in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Close the connection gracefully; the session then ends with no error."""
        with self._lock:
            self._stopping = True
            client = self._client
        if client is not None:
            client.stop()

    def terminate(self) -> None:
        """Drop the connection at once."""
        with self._lock:
            self._stopping = True
            client = self._client
        if client is not None:
            client.terminate()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the session thread; True if it has finished."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        s = self.settings
        connected = False
        loop: Any = None
        transport: Any = None
        ended = SessionEnded(self.number, None, connected=False, auth_rejected=False)
        try:
            client = db.Live(key=s.key, gateway=s.gateway, port=s.port, heartbeat_interval_s=s.heartbeat_s,
                             slow_reader_behavior="warn")
            client.add_callback(self.inbox.put)
            with self._lock:
                if self._stopping:
                    return
                self._client = client
            client.subscribe(dataset=s.dataset, schema="trades", stype_in="parent", symbols=list(s.parents),
                             start=self.replay_from)
            connected = True
            # databento 0.87 ends a session on a heartbeat timeout without closing its socket
            # (live/session.py, _heartbeat_monitor), then forgets it: keep it to close it ourselves.
            loop, transport = client._session._loop, client._session._transport
            self.inbox.put(SessionStarted(self.number, client.session_id, self.replay_from))
            client.start()
            client.block_for_close()
            ended = SessionEnded(self.number, None, connected=True, auth_rejected=False)
        except Exception as exc:  # BentoError, OSError, ValueError: every way a session can end
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            ended = SessionEnded(self.number, error, connected, not connected and is_auth_rejection(exc))
        finally:
            if transport is not None and not transport.is_closing():
                loop.call_soon_threadsafe(transport.abort)  # transports belong to their loop's thread
            with self._lock:
                self._client = None
            # Always last: after every record of this session (the client has delivered them by now).
            self.inbox.put(ended)
