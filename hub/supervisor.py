"""The live hub: supervises feed sessions and turns their records into bars on Redis.

One thread (``LiveHub.run``) owns all state. It takes records from the current
:class:`~hub.live.FeedSession` and feeds them to the same :class:`~hub.aggregator.Aggregator`
as replay; between batches it closes bars by the wall clock, publishes corrections, retries
Redis, answers the control channel and writes the heartbeat.

Cold start. The first subscription replays the current session — or from the earliest bar left
unfinished in the streams by the previous hub, if earlier — so that a hub started or restarted
mid-session publishes complete bars (``hub.cold_start``); bars already complete in the streams are
skipped, a complete bar replaces its partial version as a correction.

Sessions and gaps. A session can end with an error, a dropped connection, a heartbeat timeout
or a graceful close by the gateway; every one of them, unless the hub is stopping or the cause
is fatal, leads to a reconnect after an exponential backoff with jitter (reset once a session
has caught up). The new session subscribes with intraday replay from the last ``ts_recv``
seen minus ``hub.replay_overlap_s``; :class:`~hub.dedupe.TradeDeduper` drops what was already
seen. The gap — last ``ts_recv`` before, data time when the replay caught up, trades
recovered, duplicates dropped, seconds offline — is logged and kept in the heartbeat.

Closing bars. While a session streams and has caught up, a minute closes ``hub.close_grace_ms``
after its end on the wall clock, once every record received so far has been aggregated;
trades of the next minute close it earlier, exactly as in replay. While the feed is down or
still replaying, the wall clock closes nothing: the replay completes those minutes, so an
outage delays bars instead of publishing them incomplete. A trade arriving after its minute
was closed anyway (delivered later than the grace, or a silently dead connection noticed
late) is counted as late and produces a corrected bar.

Fatal conditions (the gateway refuses the key, or sends a fatal ``ErrorMsg``) stop the hub
with a clear message. Stopping — on request, signal or fatal error — closes the session,
aggregates what was received, publishes the open bars marked partial, writes a final
heartbeat and closes connections within a few seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import databento_dbn as dbn
import redis

from hub.aggregator import NS, Aggregator, Boundary
from hub.backoff import Backoff
from hub.clock import Clock, SystemClock
from hub.cold_start import StartupReplay, plan_startup_replay, unfinished_bars
from hub.control import ControlChannel
from hub.dedupe import TradeDeduper
from hub.live import ErrorAction, FeedSession, FeedSettings, RecordInbox, SessionEnded, SessionStarted, error_action
from hub.recorder import DailyRecorder
from hub.redis_buffer import BufferedPublisher
from pine.bus import BarPublisher
from pine.config.schema import PineConfig
from pine.heartbeat import Heartbeat

log = logging.getLogger(__name__)

BATCH: Final = 5_000  # records aggregated between two rounds of housekeeping
CONTROL_EVERY_S: Final = 0.05
RECORDER_FLUSH_EVERY_S: Final = 1.0
GAPS_IN_HEARTBEAT: Final = 10
# Stopping: the whole sequence stays within the 5 s a supervisor grants after SIGTERM.
STOP_SESSION_WAIT_S: Final = 1.0
STOP_BUDGET_S: Final = 4.0

_TRADE: Final = dbn.TradeMsg
_SYSTEM: Final = dbn.SystemMsg
_ERROR: Final = dbn.ErrorMsg


def _iso(ns: int) -> str | None:
    """ISO 8601 UTC to the microsecond (integer arithmetic: floats would round), None for 0."""
    if ns <= 0:
        return None
    return (datetime.fromtimestamp(ns // NS, UTC) + timedelta(microseconds=ns % NS // 1000)).isoformat()


@dataclass
class Gap:
    """A stretch of feed the hub was not connected for, and what the replay recovered of it."""

    start: str | None  # last ts_recv received before the feed was lost
    reason: str
    down_at: float  # wall time the session ended
    end: str | None = None  # data time the replay caught up to
    up_at: float | None = None
    recovered: int = 0  # trades from the replay that had not been seen
    duplicates: int = 0  # trades from the replay that had been seen, dropped
    replayed: bool = True  # False: the gateway could not replay it, the trades are missing

    @property
    def offline_s(self) -> float | None:
        """Seconds from the end of one session to the catch-up of the next."""
        return round(self.up_at - self.down_at, 3) if self.up_at is not None else None

    def to_dict(self) -> dict[str, Any]:
        """Heartbeat form."""
        return {**asdict(self), "offline_s": self.offline_s}


class LiveHub:
    """Runs the live feed into Redis until stopped; see the module docstring."""

    def __init__(
        self,
        cfg: PineConfig,
        settings: FeedSettings,
        roots: list[str],
        client: redis.Redis,
        *,
        clock: Clock | None = None,
        record_dir: Path | None = None,
        tick_s: float = 0.05,
        backoff: Backoff | None = None,
    ) -> None:
        hub = cfg.hub
        self.settings = settings
        self.clock = clock or SystemClock()
        self.tick_s = tick_s
        self.grace_ns = hub.close_grace_ms * 1_000_000
        calendar = cfg.sessions.calendar()
        self.agg = Aggregator(roots, calendar, correction_window_ns=hub.correction_window_minutes * 60 * NS)
        self.publisher = BarPublisher(client)
        self.buffer = BufferedPublisher(self.publisher, hub.redis_buffer_max_bars)
        self.heartbeat = Heartbeat("hub", cfg.heartbeat, cfg.runtime_dir, client)
        self._beat_every = self.heartbeat.every
        token = hub.control_token.get_secret_value() if hub.control_token is not None else None
        self.control = ControlChannel(client, {
            "status": lambda _: self.status(),
            "flush": lambda _: self._flush(),
            "resubscribe": lambda _: self._resubscribe("control command"),
            "shutdown": lambda _: self._shutdown_command(),
        }, token)
        self.dedupe = TradeDeduper(int(hub.replay_overlap_s * NS))
        self.backoff = backoff or Backoff(hub.reconnect)
        self.recorder = (DailyRecorder(record_dir, calendar, settings.dataset, list(settings.parents))
                         if record_dir is not None else None)
        self.inbox = RecordInbox()

        self._session: FeedSession | None = None
        self._session_no = 0
        self._session_id: str | None = None
        self._streaming = False
        self._caught_up = False
        self._next_connect: float | None = 0.0  # monotonic time of the next connection attempt
        self._replay_next = True  # False after the gateway said the replay start is too old
        self._resubscribe_asked = False
        self._gap: Gap | None = None
        self._gap_dups = 0  # duplicates dropped before the gap opened
        self._gap_end = 0  # ts_recv of the last trade the gap's replay recovered
        # Where the data starts (the replay start of the first session that streamed, else when it did):
        # what a replay starts from while no trade has been received yet.
        self._data_start: int | None = None
        self.startup: StartupReplay | None = None
        self.gaps: list[Gap] = []
        self.connects = 0
        self.reconnects = 0
        self.unresolved: set[str] = set()
        self.last_gateway_error: str | None = None
        self.last_session_error: str | None = None
        self._session_errors: list[str] = []  # ErrorMsg texts of the current session

        self._stop_reason: str | None = None
        self.fatal: str | None = None
        self._status = "starting"
        self._last_beat = 0.0
        self._last_control = 0.0
        self._last_flush = time.monotonic()
        self.stopped = threading.Event()

    # ------------------------------------------------------------------ running

    def run(self) -> int:
        """Run until asked to stop or a fatal error; returns 0 (stopped) or 1 (fatal)."""
        log.info("live hub: %s %s via %s, roots %s", self.settings.dataset, " ".join(self.settings.parents),
                 f"{self.settings.gateway}:{self.settings.port}" if self.settings.gateway else "Databento",
                 " ".join(self.agg.roots))
        self._beat(force=True)
        try:
            while self._stop_reason is None:
                items = self.inbox.take(BATCH)
                if items:
                    self._handle(items)
                else:
                    self.inbox.wait(self._idle_wait())
                self._housekeeping()
        except Exception as exc:
            log.exception("live hub failed")
            self.request_stop(f"internal error: {exc}", fatal=True)
        return self._shutdown()

    def request_stop(self, reason: str, *, fatal: bool = False) -> None:
        """Ask the hub to stop (safe from signal handlers and other threads)."""
        if fatal and self.fatal is None:
            self.fatal = reason
        if self._stop_reason is None:
            self._stop_reason = reason

    def _handle(self, items: list[Any]) -> None:
        on_record = self.agg.on_record
        accept = self.dedupe.accept
        recorder = self.recorder
        for rec in items:
            kind = type(rec)
            if kind is _TRADE:
                if not accept(rec):
                    continue
                gap = self._gap
                if gap is not None and self._streaming:
                    gap.recovered += 1
                    self._gap_end = rec.ts_recv
            elif kind is _SYSTEM:
                self._on_system(rec)
            elif kind is _ERROR:
                self._on_error(rec)
            elif kind is SessionStarted:
                self._on_started(rec)
                continue
            elif kind is SessionEnded:
                self._on_ended(rec)
                continue
            if recorder is not None:
                recorder.write(rec)
            boundary = on_record(rec)
            if boundary is not None:
                if self.agg.has_corrections:  # corrections go out before later bars
                    self._publish_corrections()
                self._publish(boundary)
        if self.agg.has_corrections:
            self._publish_corrections()

    def _publish(self, boundary: Boundary, *, state: str = "running") -> None:
        self.buffer.submit(boundary.bars, boundary.watermark, state=state)

    def _publish_corrections(self) -> None:
        bars = self.agg.take_corrections()
        if bars:
            log.warning("late trades changed %d closed bar(s): publishing corrections (%s)", len(bars),
                        ", ".join(f"{b.symbol} {b.timeframe} {b.timestamp:%H:%M}" for b in bars[:6]))
            self.buffer.submit(bars, datetime.fromtimestamp(self.agg.watermark_ns // NS, UTC))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._session is None and self._next_connect is not None and now >= self._next_connect:
            self._connect()
        if self._streaming and self._caught_up and not len(self.inbox):
            boundary = self.agg.close_due(self.clock.now_ns() - self.grace_ns)
            if boundary is not None:
                self._publish(boundary)
        self.buffer.pump()
        if now - self._last_control >= CONTROL_EVERY_S:
            self._last_control = now
            self.control.poll()
        if self.recorder is not None and now - self._last_flush >= RECORDER_FLUSH_EVERY_S:
            self._last_flush = now
            self.recorder.flush()
        if now - self._last_beat >= self._beat_every:
            self._beat()

    def _idle_wait(self) -> float:
        """Seconds to wait for records: a tick, or less when the next wall-clock close is sooner."""
        wait = self.tick_s
        if self._streaming and self._caught_up:
            real = self.clock.real_seconds(self.agg.next_boundary_ns + self.grace_ns - self.clock.now_ns())
            if real is not None:
                wait = min(wait, max(real, 0.0005))
        return wait

    # ------------------------------------------------------------------ sessions

    def _seen_until(self) -> int | None:
        """Data time up to which the hub has everything: the last trade, else where its data starts."""
        return self.dedupe.latest or self._data_start

    def _connect(self) -> None:
        seen = self._seen_until()
        if not self._replay_next:
            replay_from = None
        elif seen is not None:
            replay_from = max(seen - self.dedupe.window_ns, 0)
        else:
            self.startup = self._plan_startup()
            replay_from = self.startup.start
        self._replay_next = True
        self._next_connect = None
        self._session_no += 1
        self.connects += 1
        self._status = "connecting"
        if replay_from is not None:
            log.info("connecting (session %d), replaying from %s", self._session_no, _iso(replay_from))
        self._session = FeedSession(self._session_no, self.settings, self.inbox, replay_from)
        self._session.start()

    def _plan_startup(self) -> StartupReplay:
        """The first subscription's replay: the current session, or the earliest bar left unfinished."""
        calendar = self.agg.calendar
        try:
            unfinished = unfinished_bars(self.publisher, self.agg.roots, calendar)
        except redis.RedisError as exc:
            log.warning("cannot read the bar streams (%s): the startup replay covers the current session only", exc)
            unfinished = []
        plan = plan_startup_replay(self.clock.now_ns(), calendar, unfinished)
        if plan.lost:
            log.warning("unfinished bar(s) %s started more than 24 h ago, beyond the intraday replay: they cannot be "
                        "rebuilt and stay as the streams have them", ", ".join(map(str, plan.lost)))
        if plan.start is not None:
            log.info("startup: replaying from %s (%s)", _iso(plan.start), plan.reason)
        return plan

    def _on_started(self, event: SessionStarted) -> None:
        if event.number != self._session_no:
            return
        self._streaming = True
        self._session_id = event.session_id
        if not self.dedupe.latest:
            # No trade received yet: the data starts with this session. A bar that began earlier misses
            # trades, so the aggregator never hands it out.
            self._data_start = event.replay_from if event.replay_from is not None else self.clock.now_ns()
            self.agg.start_data_at(self._data_start)
        if event.replay_from is not None:
            self.dedupe.begin_replay()
            self._caught_up = False
            self._status = "catching_up"
        else:
            self._caught_up_now()
        log.info("session %d streaming (gateway session id %s)", event.number, event.session_id)

    def _on_ended(self, event: SessionEnded) -> None:
        if event.number != self._session_no:
            return
        self._session = None
        self._streaming = self._caught_up = False
        error = event.error
        if error is not None and self._session_errors and all(e in error for e in self._session_errors):
            # The client reports the session's ErrorMsg texts as the cause of any disconnection, graceful
            # or not; those were handled when they arrived.
            error = "connection closed or lost"
        self._session_errors = []
        self.last_session_error = error
        if self._stop_reason is not None:
            return
        if event.auth_rejected:
            self.request_stop(f"the Databento gateway rejected the API key ({event.error}); check DATABENTO_API_KEY",
                              fatal=True)
            return
        reason = error or ("resubscribe" if self._resubscribe_asked else "the gateway closed the session")
        seen = self._seen_until()
        if self._gap is None and seen is not None:
            # Without a replay next (the gateway refused one, the session ended to resubscribe live) the gap stays.
            self._gap = Gap(start=_iso(seen), reason=reason, down_at=time.time(), replayed=self._replay_next)
            self._gap_dups = self.dedupe.dropped
        if self._resubscribe_asked:
            self._resubscribe_asked = False
            delay = 0.0
        else:
            delay = self.backoff.next_delay()
            self.reconnects += 1
            log.warning("feed session %d %s (%s); reconnecting in %.2fs (attempt %d)", event.number,
                        "ended" if event.connected else "could not connect", reason, delay, self.backoff.attempts)
        self._status = "reconnecting"
        self._next_connect = time.monotonic() + delay

    def _on_system(self, rec: Any) -> None:
        if rec.is_heartbeat():
            if not self._caught_up and self._streaming:
                self._caught_up_now()  # the gateway is idle: nothing older is left to send
            return
        code = rec.code
        if code == dbn.SystemCode.REPLAY_COMPLETED or ("replay" in rec.msg.lower() and "finished" in rec.msg.lower()):
            self._caught_up_now()
        elif code == dbn.SystemCode.SLOW_READER_WARNING:
            log.warning("gateway: %s (the hub is falling behind the feed)", rec.msg)
        else:
            log.info("gateway: %s", rec.msg)

    def _caught_up_now(self) -> None:
        if self._caught_up:
            return
        self._caught_up = True
        self._status = "streaming"
        self.backoff.reset()
        startup = self.startup
        if startup is not None and startup.trades is None and startup.start is not None:
            startup.trades = self.agg.trades
            log.info("startup replay caught up: %d trades since %s", startup.trades, _iso(startup.start))
        gap, self._gap = self._gap, None
        if gap is None:
            return
        gap.up_at = time.time()
        gap.duplicates = self.dedupe.dropped - self._gap_dups
        gap.end = _iso(self._gap_end) if gap.recovered else gap.start
        self.gaps.append(gap)
        if gap.replayed:
            log.warning("feed gap %s .. %s (%s): %d trades recovered by replay, %d duplicates dropped, "
                        "%.1fs offline", gap.start, gap.end, gap.reason, gap.recovered, gap.duplicates,
                        gap.offline_s or 0.0)
        else:
            log.error("feed gap from %s (%s) NOT recovered: the gateway could not replay it; %.1fs offline",
                      gap.start, gap.reason, gap.offline_s or 0.0)

    def _on_error(self, rec: Any) -> None:
        action = error_action(rec)
        code = getattr(rec.code, "name", str(rec.code))
        self.last_gateway_error = f"{code}: {rec.err}"
        self._session_errors.append(rec.err)
        if action is ErrorAction.FATAL:
            hint = "; check DATABENTO_API_KEY" if rec.code in (dbn.ErrorCode.AUTH_FAILED,
                                                               dbn.ErrorCode.API_KEY_DEACTIVATED) else ""
            self.request_stop(f"the Databento gateway ended the session: {rec.err} ({code}){hint}", fatal=True)
        elif action is ErrorAction.SKIP_SYMBOL:
            named = [p for p in self.settings.parents if p in rec.err] or [rec.err]
            self.unresolved.update(named)
            log.error("symbol %s did not resolve at the gateway (%s); continuing with the other symbols",
                      ", ".join(named), rec.err)
        elif action is ErrorAction.REPLAY:
            log.error("gateway skipped records (%s): resubscribing with replay to recover them", rec.err)
            self._resubscribe("records skipped by the gateway")
        elif action is ErrorAction.NO_REPLAY:
            log.error("gateway cannot replay from the requested start (%s): resubscribing without replay, "
                      "the trades of this gap are lost", rec.err)
            if self._gap is not None:
                self._gap.replayed = False
            self._replay_next = False
            self._resubscribe("replay unavailable")
        else:
            log.error("gateway error %s: %s", code, rec.err)

    def _resubscribe(self, reason: str) -> dict[str, Any]:
        """End the current session and reconnect at once with replay."""
        if self._session is not None:
            log.info("resubscribing (%s)", reason)
            self._resubscribe_asked = True
            self._session.stop()
        else:
            self._next_connect = time.monotonic()
        return {"session": self._session_no, "reason": reason}

    # ------------------------------------------------------------------ control commands

    def _flush(self) -> dict[str, Any]:
        """Publish what is due now: buffered boundaries (ignoring the retry delay), due bars, the recording."""
        if self._streaming and self._caught_up:
            boundary = self.agg.close_due(self.clock.now_ns() - self.grace_ns)
            if boundary is not None:
                self._publish(boundary)
        published = self.buffer.pump(force=True)
        if self.recorder is not None:
            self.recorder.flush()
        return {"boundaries_published": published, "buffer_bars": self.buffer.depth}

    def _shutdown_command(self) -> dict[str, Any]:
        self.request_stop("shutdown command")
        return {"stopping": True}

    # ------------------------------------------------------------------ stopping

    def _shutdown(self) -> int:
        deadline = time.monotonic() + STOP_BUDGET_S
        log.info("stopping (%s)", self._stop_reason)
        self._status = "stopping"
        self._next_connect = None
        session = self._session
        if session is not None:
            session.stop()
            if not session.join(STOP_SESSION_WAIT_S):
                session.terminate()
        self._streaming = False
        # Records already received belong in the bars; session events no longer matter.
        while (items := self.inbox.take(BATCH)) and time.monotonic() < deadline - 2.0:
            self._handle([i for i in items if not isinstance(i, (SessionStarted, SessionEnded))])
        self.inbox.close()
        if self.agg.has_corrections:
            self._publish_corrections()
        final = self.agg.flush()
        self.buffer.submit(final.bars, final.watermark, state="stopped")
        if final.bars:
            log.info("published %d open bar(s) marked partial", len(final.bars))
        if not self.buffer.drain(deadline - 0.5):
            log.error("%d bar(s) could not be published before exit: Redis is unreachable (%s)",
                      self.buffer.depth, self.buffer.last_error)
        if self.recorder is not None:
            self.recorder.close()
        self.control.close()
        self._status = "failed" if self.fatal else "stopped"
        self._beat(force=True, reason=self._stop_reason)
        self.stopped.set()
        return 1 if self.fatal else 0

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Everything the heartbeat and the ``status`` command report."""
        now = self.clock.now_ns()
        symbols = {}
        for root in self.agg.roots:
            last = self.agg.last_trade(root)
            symbols[root] = {"contract": self.agg.active_contract(root), "last_trade": _iso(last),
                             "lag_s": round((now - last) / NS, 3) if last else None}
        clock = self.agg.clock
        buffer = self.buffer
        return {
            "mode": "live",
            "status": self._status,
            "feed": {
                "gateway": f"{self.settings.gateway}:{self.settings.port}" if self.settings.gateway else "databento",
                "session": self._session_no,
                "session_id": self._session_id,
                "streaming": self._streaming,
                "caught_up": self._caught_up,
                "connects": self.connects,
                "reconnects": self.reconnects,
                "last_session_error": self.last_session_error,
                "last_gateway_error": self.last_gateway_error,
                "unresolved_symbols": sorted(self.unresolved),
                "startup_replay": self.startup.to_dict() if self.startup is not None else None,
            },
            "records": self.agg.records,
            "trades": self.agg.trades,
            "bars_published": self.publisher.published,
            "corrected_bars": self.publisher.corrections_published,
            "late_trades": self.agg.late_trades,
            "incomplete_bars": self.agg.incomplete_bars,
            "duplicates_dropped": self.dedupe.dropped,
            "ignored": dict(self.agg.ignored),
            "data_clock": clock.isoformat() if clock else None,
            "watermark": _iso(self.agg.watermark_ns),
            "symbols": symbols,
            "gaps": [g.to_dict() for g in self.gaps[-GAPS_IN_HEARTBEAT:]],
            "gaps_total": len(self.gaps),
            "gaps_unrecovered": sum(not g.replayed for g in self.gaps),
            "redis": {
                "publish_errors": buffer.publish_errors,
                "buffer_bars": buffer.depth,
                "buffer_boundaries": buffer.boundaries,
                "buffer_limit": buffer.max_bars,
                "overflow_bars_dropped": buffer.overflow_bars,
                "last_error": buffer.last_error,
            },
            "inbox": len(self.inbox),
            "control": {"commands": self.control.commands, "refused": self.control.refused},
            "recording": str(self.recorder.path) if self.recorder and self.recorder.path else None,
            "recording_error": self.recorder.failed if self.recorder else None,
        }

    def _beat(self, *, force: bool = False, **extra: Any) -> None:
        self._last_beat = time.monotonic()
        fields = self.status()
        del fields["status"]
        self.heartbeat.beat(self._status, force=force, **fields, **extra)
