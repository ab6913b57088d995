"""``Notifier``: what the hub and the workers call to notify, and the background threads behind it.

Calls from trading code (``entry``, ``exit``, ``progress``, ``started``, ``stopped``) only write
to the outbox (one SQLite insert) and never raise: a notification problem is logged, never
turned into a trading problem. Two daemon threads do the rest: the sender (``pine.notify.sender``)
and the watch (``pine.notify.watch`` plus the daily summary's wait for slow workers).

Channels: a strategy's messages go to its ``discord_webhook_url``, else the global
``notifications.discord_webhook_url``; messages of no strategy (hub, killswitch, daily summary)
go to every configured channel. With no URL anywhere notifications are off, which is logged once
when the process starts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Final

import redis

from pine.config.schema import PineConfig
from pine.logs import register_secret
from pine.notify.events import Message, channel_id, level_for
from pine.notify.messages import (
    entry_message,
    exit_message,
    failure_message,
    process_message,
)
from pine.notify.outbox import OUTBOX_FILE, Outbox
from pine.notify.sender import Sender
from pine.notify.summary import SummaryClock, day_stats, summary_event_id, summary_message
from pine.notify.watch import Watcher
from pine.trade_records import FillRecord, TradeRecord

log = logging.getLogger(__name__)

WATCH_EVERY_S: Final = 1.0
FAILED: Final = frozenset({"failed", "refused"})


def outbox_path(cfg: PineConfig) -> Path:
    """``<runtime>/notifications.db``."""
    return Path(cfg.runtime_dir) / OUTBOX_FILE


def configured_channels(cfg: PineConfig) -> dict[str | None, str]:
    """Webhook URL per strategy with one (its own or the global), and under None the global one if set."""
    out: dict[str | None, str] = {}
    if cfg.notifications.discord_webhook_url is not None:
        out[None] = cfg.notifications.discord_webhook_url.get_secret_value()
    for name in cfg.strategies:
        url = cfg.discord_webhook(name)
        if url:
            out[name] = url
    return out


class Notifier:
    """One process's notifications (``component``: ``hub``, ``worker:NAME`` or a CLI)."""

    def __init__(self, cfg: PineConfig, component: str, *, client: redis.Redis | None, strategy: str | None = None,
                 watch: bool = True) -> None:
        self.cfg = cfg
        self.component = component
        self.strategy = strategy
        self.client = client
        # Names this run in the started/stopped event ids: two runs in one process and second are two events.
        self.run_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._urls = configured_channels(cfg)
        for url in self._urls.values():
            register_secret(url)
        self.channels = {channel_id(url): url for url in self._urls.values()}
        self.enabled = bool(self.channels)
        self.outbox: Outbox | None = None
        self.sender: Sender | None = None
        self.summary: SummaryClock | None = None
        self.watcher: Watcher | None = None
        self._stop = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._watch_error = ""
        if not self.enabled:
            return
        self.outbox = Outbox(outbox_path(cfg), busy_timeout_s=2.0)
        self.sender = Sender(self.outbox, self.channels, cfg.notifications, owner=component)
        if client is not None:
            enabled = list(cfg.enabled_strategies())
            self.summary = SummaryClock(cfg.sessions.calendar(), client, enabled, enqueue=self.enqueue_summary,
                                        wait_s=cfg.notifications.summary_wait_minutes * 60, strategy=strategy,
                                        sender=cfg.notifications.daily_summary_sender, sent=self._summary_sent)
            if watch:
                self.watcher = Watcher(client, self.outbox, ["hub", *(f"worker:{s}" for s in enabled)],
                                       self.publish)

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Notifier:
        """Start the background threads (or say once that notifications are off)."""
        if not self.enabled:
            log.info("Discord notifications off: no webhook URL configured (notifications.discord_webhook_url or "
                     "strategies.<name>.discord_webhook_url, e.g. ${DISCORD_WEBHOOK_URL})")
            return self
        assert self.sender is not None
        self.sender.start()
        if self.watcher is not None:
            self._watch_thread = threading.Thread(target=self._watch, name="pine-notify-watch", daemon=True)
            self._watch_thread.start()
        log.info("Discord notifications on: %d channel(s); outbox %s", len(self.channels), outbox_path(self.cfg))
        return self

    def close(self, drain_s: float = 5.0) -> None:
        """Stop the threads, delivering what is open for up to ``drain_s`` first (the rest waits in the outbox)."""
        self._stop.set()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=WATCH_EVERY_S * 2)
        if self.sender is not None:
            self.sender.stop(drain_s)
        if self.outbox is not None:
            self.outbox.close()

    # -- what happened ----------------------------------------------------------------------------
    def publish(self, msg: Message) -> int:
        """Enqueue ``msg`` for its channels per its type's setting; returns how many rows were added."""
        if self.outbox is None:
            return 0
        try:
            level = level_for(self.cfg.notifications.types, msg.kind)
            if level == "off":
                return 0
            added = sum(self.outbox.enqueue(msg, channel, level, self.component) for channel in self._targets(msg))
        except Exception:  # a notification must never break the caller (trading code)
            log.exception("could not enqueue notification %s", msg.event_id)
            return 0
        if added and self.sender is not None:
            self.sender.wake()
        return added

    def _targets(self, msg: Message) -> list[str]:
        if msg.strategy is not None and msg.strategy in self._urls:
            return [channel_id(self._urls[msg.strategy])]
        return list(self.channels)

    def started(self, detail: str) -> None:
        """The process is up."""
        self.publish(process_message(self.component, self.run_id, started=True, detail=detail,
                                     strategy=self.strategy))

    def stopped(self, status: str, detail: str) -> None:
        """The process is exiting with ``status``: an emergency if it failed or refused to trade."""
        if status in FAILED:
            msg = failure_message(self.component, self.run_id, status=status, detail=detail, strategy=self.strategy)
        else:
            msg = process_message(self.component, self.run_id, started=False, detail=f"{status}: {detail}",
                                  strategy=self.strategy)
        self.publish(msg)

    def entry(self, fill: FillRecord, *, ml_score: float | None = None) -> None:
        """A position opened; ``ml_score``: the ML veto's score on its signal (None: no model decided)."""
        if not self.enabled:
            return
        scfg = self.cfg.strategies.get(fill.strategy)
        instrument = scfg.instruments.get(fill.symbol) if scfg is not None else None
        self.publish(entry_message(fill, ml_score=ml_score, ml_enabled=instrument is not None and instrument.ml_enabled,
                                   ml_shadow=scfg is not None and scfg.ml_shadow))

    def exit(self, trade: TradeRecord) -> None:
        """A position closed."""
        if self.enabled:
            spec = self.cfg.instruments.get(trade.symbol)
            self.publish(exit_message(trade, spec.tick_size if spec is not None else None))

    def progress(self, bar_ends: Iterable[datetime]) -> None:
        """This worker has processed every bar up to the latest of ``bar_ends`` (daily summary trigger)."""
        if self.summary is None:
            return
        through = max(bar_ends, default=None)
        if through is None:
            return
        try:
            self.summary.progress(through)
        except Exception:  # Redis down: the summary waits for the next worker or the pending check
            log.exception("daily summary progress could not be recorded")

    def _summary_sent(self, day: date) -> bool:
        return self.outbox is not None and self.outbox.has_event(summary_event_id(day))

    def enqueue_summary(self, day: date, missing: list[str]) -> None:
        """Enqueue the summary of trading day ``day`` (once per day: see ``pine.notify.summary``)."""
        total, per = day_stats(self.cfg.trades_db_path, day)
        self.publish(summary_message(day, total, per, strategies=list(self.cfg.enabled_strategies()),
                                     missing=missing))

    # -- the watch thread -------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(WATCH_EVERY_S):
            try:
                if self.watcher is not None:
                    self.watcher.poll()
                if self.summary is not None:
                    self.summary.check_pending(time.time())
                self._watch_error = ""
            except Exception as exc:  # Redis or the outbox unavailable: try again next round
                text = f"{type(exc).__name__}: {exc}"
                if text != self._watch_error:  # once per distinct problem, not every second
                    log.warning("notification watch: %s", text)
                self._watch_error = text
