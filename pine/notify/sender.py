"""The background sender: drains the outbox to Discord, one channel's messages in order.

A daemon thread per process. Each round it claims the oldest open message of a channel it has a
URL for (see ``pine.notify.outbox`` for the cross-process lease), posts it, and records the
outcome: delivered; 429 → the channel waits Discord's ``retry_after``; 5xx/network → the channel
waits ``backoff_s × 2^(failures-1)`` (at most ``backoff_max_s``); another 4xx → failed for good
(logged). Nothing here ever runs on a trading thread: enqueueing is one SQLite insert, and a
slow or dead Discord only delays this thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

import requests

from pine.config.schema import NotificationsConfig
from pine.notify.discord import build_payload, post
from pine.notify.outbox import Outbox

log = logging.getLogger(__name__)

IDLE_POLL_S = 0.5  # how soon messages enqueued by other processes are noticed


class Sender:
    """Delivers the outbox's messages for ``urls`` (channel id → webhook URL) from a background thread."""

    def __init__(self, outbox: Outbox, urls: Mapping[str, str], settings: NotificationsConfig, *, owner: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.urls = dict(urls)
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self.session = requests.Session()
        self.delivered = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Longer than one request can take, so a live sender never loses its channel mid-POST.
        self.lease_s = settings.connect_timeout_s + settings.read_timeout_s + 15.0

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="pine-notify-sender", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Something was enqueued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, drain_s: float) -> None:
        """Keep delivering for up to ``drain_s`` while messages are open, then stop and free the leases."""
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and self.outbox.open_count(self.urls) and self._alive():
            due = self.outbox.next_due(self.urls)
            if due is not None and due - self.clock() > deadline - time.monotonic():
                break  # every open channel waits (429, backoff) past the deadline: nothing more can go now
            self.wake()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            # A request in flight ends within its timeout; the process may exit before (the row stays
            # 'sending' and is resent, marked as a possible repeat, by the next sender).
            self._thread.join(timeout=1.0)
        try:
            self.outbox.release(self.owner)
        except Exception as exc:  # stopping must not fail the process
            log.warning("could not release notification channels: %s", exc)

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.send_one()
            except Exception:  # the thread must survive anything (DB locked, bad row, …)
                log.exception("notification sender error; retrying")
                busy = False
            if not busy:
                self._wake.wait(self._idle_wait())
                self._wake.clear()

    def _idle_wait(self) -> float:
        due = self.outbox.next_due(self.urls)
        if due is None:
            return IDLE_POLL_S
        return min(IDLE_POLL_S, max(0.01, due - self.clock()))

    def send_one(self) -> bool:
        """Claim and attempt one message; False when nothing could be claimed."""
        s = self.settings
        now = self.clock()
        claim = self.outbox.claim(self.owner, self.urls, now=now, lease_s=self.lease_s,
                                  give_up_s=s.give_up_after_h * 3600)
        if claim is None:
            return False
        payload = build_payload(claim.message, username=s.username, silent=claim.level == "silent", now=now,
                                late_after_s=s.late_after_s, possible_repeat=claim.possible_repeat)
        attempt = post(self.session, self.urls[claim.channel], payload,
                       timeout=(s.connect_timeout_s, s.read_timeout_s))
        done = self.clock()
        what = f"notification {claim.message.event_id} ({claim.message.kind.value}) attempt {claim.attempts}"
        if attempt.outcome == "delivered":
            self.outbox.finish(claim, "delivered", now=done, http_status=attempt.status, wait_s=attempt.wait_s)
            self.delivered += 1
        elif attempt.outcome == "rate_limited":
            log.warning("%s: rate limited by Discord, waiting %.2fs", what, attempt.wait_s)
            self.outbox.finish(claim, "pending", now=done, http_status=attempt.status, error=attempt.detail,
                               wait_s=attempt.wait_s, failures=claim.failures)
        elif attempt.outcome == "retry":
            failures = claim.failures + 1
            wait = min(s.backoff_s * 2 ** (failures - 1), s.backoff_max_s)
            log.warning("%s failed (%s); retrying in %.2fs", what, attempt.detail, wait)
            self.outbox.finish(claim, "pending", now=done, http_status=attempt.status, error=attempt.detail,
                               wait_s=wait, failures=failures)
        else:
            log.error("%s refused by Discord (%s): dropped", what, attempt.detail)
            self.outbox.finish(claim, "failed", now=done, http_status=attempt.status, error=attempt.detail)
        return True
