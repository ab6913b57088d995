"""``pine worker --strategy NAME``: one strategy trading the hub's bars through its broker.

Lifecycle: ``starting`` → ``warming_up`` (history from the parquet caches drained through
Backtrader, see ``workers.warmup``; then stream bars an earlier run already processed, replayed
silently to rebuild state, see ``workers.journal``) → ``ready`` (trading the live streams from
the first bar after the history) → ``finished`` / ``stopped`` (or ``refused`` / ``failed``).
The heartbeat carries the status, warmup state, bars and last bar time per feed, positions,
orders today and the missing optional feeds. Orders go through ``workers.execution``
(killswitch, portfolio coordinator, order journal, TradersPost or the paper broker) and
everything is recorded in the trades DB. Preflight checks run first (``--check`` runs only
them). SIGTERM/SIGINT stop it gracefully: no further bar is taken, the current step's orders
are journaled (they are before being sent), a final heartbeat is written, the DB and Redis closed.

ML veto (``workers.ml_veto``): with ML-enabled instruments the worker loads each symbol's champion
model after the warmup history is known (a model that fails to load or verify refuses the start),
and reloads them on ``{"command": "reload_models"}`` published on ``worker:{strategy}:control``
(``pine.redis_names.worker_control``), between steps; a failed reload keeps the loaded models.
The heartbeat's ``ml`` field shows feature readiness, model version per symbol and any failed reload.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import backtrader as bt
import redis

from pine import redis_names
from pine.config.schema import PineConfig
from pine.heartbeat import Heartbeat
from pine.killswitch import Killswitch
from pine.logs import register_secret
from pine.notify.notifier import Notifier
from pine.redis_server import RedisUnavailableError, connect, resolve_redis_url
from workers.bar_stream import StreamBarSource, parse_stream_id
from workers.coordinator import PortfolioCoordinator
from workers.engine import StrategySetup, StrategySetupError, build_cerebro, ml_veto, resolve_strategy
from workers.execution import Execution
from workers.feeds import LiveFeedSet
from workers.journal import LedgerJournal
from workers.ml_veto import MlSetupError, MlVeto
from workers.order_journal import OrderJournal
from workers.preflight import run_preflight, sender_for
from workers.reconcile import ReconcileError
from workers.strategies import BaseStrategy
from workers.trades_db import TradesDB
from workers.warmup import HistoryBuilder, Warmup, WarmupError, load_warmup

log = logging.getLogger(__name__)


class Worker:
    """One strategy's live Cerebro, its warmup, its order path, its trades DB journal and its heartbeat."""

    def __init__(self, cfg: PineConfig, setup: StrategySetup, client: redis.Redis, *, stop_at_end: bool,
                 history_builder: HistoryBuilder | None = None) -> None:
        self.cfg = cfg
        self.setup = setup
        self.stop_at_end = stop_at_end
        self.history_builder = history_builder
        calendar = cfg.sessions.calendar()
        self.db = TradesDB(cfg.trades_db_path, calendar=calendar)
        self.journal = LedgerJournal(self.db, setup.name, on_step=self._tick)
        self.coordinator = PortfolioCoordinator.from_config(client, setup.name, cfg)
        self.notifier = Notifier(cfg, f"worker:{setup.name}", client=client, strategy=setup.name)
        self.execution = Execution(
            setup.name, db=self.db, journal=OrderJournal(self.db), sender=sender_for(cfg, setup), calendar=calendar,
            killswitch=Killswitch(client, mirror_dir=cfg.runtime_dir), coordinator=self.coordinator,
            ticker_mode=setup.config.broker_ticker, fail_fast=cfg.preflight.fail_fast, notifier=self.notifier,
        )
        self.source = StreamBarSource(client)
        self.layout = setup.layout(cfg.instruments)
        self.warmup = Warmup(self.layout, source="pending")
        self.cerebro: bt.Cerebro | None = None
        self.strategy: BaseStrategy | None = None
        self.heartbeat = Heartbeat(f"worker:{setup.name}", cfg.heartbeat, cfg.runtime_dir, client)
        self._last_beat = 0.0
        self.status = "starting"
        self.statuses = [self.status]  # every status this run went through, in order
        self.stop_signal: int | None = None
        self.ml: MlVeto | None = None
        self.control = client.pubsub(ignore_subscribe_messages=True)

    def run(self) -> int:
        """Warm up, then trade until the hub has finished (with ``stop_at_end``) or a signal arrives.

        Returns the exit code. A signal during warmup stops before trading; during trading, after
        the current step (whose orders are journaled before they are sent).
        """
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.control.subscribe(redis_names.worker_control(self.setup.name))
            self._beat(force=True)
            self.notifier.start().started(f"{len(self.setup.symbols)} symbols ({' '.join(self.setup.symbols)}), "
                                          f"{self.execution.sender.name} broker")
            self._set_status("warming_up")
            self.warmup = load_warmup(self.cfg, self.setup.config, self.layout, builder=self.history_builder,
                                      through_hint=self._streams_start(), stop=lambda: self.stop_signal is not None)
            log.info("worker %s: %s", self.setup.name, self.warmup.describe())
            if self.warmup.layout.missing:
                log.warning("worker %s: optional reference feed(s) missing, their features take neutral defaults: %s",
                            self.setup.name, " ".join(self.warmup.layout.missing_feeds))
            if self.stop_signal is None:
                self.ml = ml_veto(self.setup, self.warmup.layout, self.cfg.runtime_dir, audit=self.db)
                if self.ml is not None:
                    self.ml.load_models()
                feeds = LiveFeedSet(self.source, stop_at_end=self.stop_at_end, on_idle=lambda: self._tick(idle=True),
                                    warmup=self.warmup.bars, handover=self.warmup.handover)
                self.cerebro = build_cerebro(self.cfg, self.setup, feeds.make_feed, self.journal, self.execution,
                                             layout=self.warmup.layout, ml=self.ml)
                self._report_gaps()
                self._report_untraded()
                self.source.start()
                log.info("worker %s: %d symbols (%s) and %d reference root(s), %s broker; trades DB %s; %s",
                         self.setup.name, len(self.setup.symbols), " ".join(self.setup.symbols),
                         len(self.warmup.layout.references), self.execution.sender.name, self.db.path,
                         f"replaying up to {len(self.journal.cursors)} feed cursor(s)" if self.journal.replaying
                         else "nothing to replay")
            if self.stop_signal is None:  # Cerebro.run() forgets a stop requested before it started
                [self.strategy] = self.cerebro.run()
            self._set_status("stopped" if self.stop_signal is not None else "finished")
            stats = self.journal.stats
            log.info("worker %s %s: %d bars (%d replayed, %d warmup), %d trades recorded in total; orders %s",
                     self.setup.name, self.status, sum(stats.bars.values()), stats.replayed_bars,
                     sum(stats.warmup_bars.values()), stats.trades_recorded, self.execution.stats.counts or "none")
            return 0
        except (ReconcileError, WarmupError, MlSetupError) as exc:
            log.error("worker %s refuses to trade: %s", self.setup.name, exc)
            self._set_status("refused")
            return 1
        except Exception:
            log.exception("worker %s failed", self.setup.name)
            self._set_status("failed")
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.notifier.stopped(self.status, f"{self.journal.stats.trades_recorded} trades recorded in total")
            self.notifier.close()
            self.control.close()
            self.db.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("worker %s: %s received, stopping", self.setup.name, signal.Signals(signum).name)
        self.stop_signal = signum
        # A delivery in progress finishes its attempt but starts no retry: the stop stays within seconds.
        if hasattr(self.execution.sender, "shutting_down"):
            self.execution.sender.shutting_down = True
        if self.cerebro is not None:
            self.cerebro.runstop()

    def _set_status(self, status: str) -> None:
        self.status = status
        self.statuses.append(status)
        self._beat(force=True)

    @property
    def warmup_state(self) -> str:
        """``loading`` (reading history), ``draining`` (through Backtrader), ``replaying`` (stream bars an
        earlier run processed), ``done``; ``none`` when there was no history."""
        if self.warmup.source == "pending":
            return "loading"
        if "ready" in self.statuses:
            return "done" if self.warmup.handover is not None else "none"
        if sum(self.journal.stats.warmup_bars.values()) < self.warmup.total:
            return "draining"
        return "replaying"

    def _tick(self, *, idle: bool = False) -> None:
        """After every step, and whenever the feeds wait for bars: readiness, then the heartbeat."""
        self.notifier.progress(self.journal.stats.last_bar_end.values())
        self._poll_control()
        if self.status == "warming_up" and self.cerebro is not None and self._caught_up(idle):
            log.info("worker %s: warmup done (%s), trading", self.setup.name, self._warmup_figures())
            self._set_status("ready")
        elif time.monotonic() - self._last_beat >= self.heartbeat.every:
            self._beat()

    def _poll_control(self) -> None:
        """Handle the worker control messages waiting now (called between steps, never within one)."""
        try:
            while (message := self.control.get_message(timeout=0)) is not None:
                self._on_control(message["data"])
        except redis.RedisError as exc:
            log.warning("worker %s: control channel unavailable: %s", self.setup.name, exc)

    def _on_control(self, data: str | bytes) -> None:
        try:
            command = json.loads(data).get("command")
        except (ValueError, AttributeError):
            log.warning("worker %s: ignored a malformed control message: %.200r", self.setup.name, data)
            return
        if command != "reload_models":
            log.warning("worker %s: ignored unknown control command %.100r", self.setup.name, command)
        elif self.ml is None:
            log.warning("worker %s: reload_models ignored: no ML-enabled instrument (or not started)",
                        self.setup.name)
        else:
            log.info("worker %s: reloading the ML models", self.setup.name)
            self.ml.reload()
            self._beat(force=True)

    def _caught_up(self, idle: bool) -> bool:
        """Every warmup bar was drained and either a bar no earlier run processed has been reached or
        the streams have nothing more to give now (the replay of processed bars is over)."""
        if sum(self.journal.stats.warmup_bars.values()) < self.warmup.total:
            return False
        return not self.journal.replaying or (idle and not self.source.has_ready())

    def _warmup_figures(self) -> str:
        stats = self.journal.stats
        return (f"{sum(stats.warmup_bars.values()):,} warmup bars, {stats.replayed_bars:,} replayed, "
                f"{self.source.warmup_overlap:,} stream bars already in the warmup skipped")

    def _streams_start(self) -> datetime | None:
        """Start of the earliest bar in this strategy's streams (the hub took over from there), if any."""
        starts = []
        for spec in self.layout.feeds:
            first = self.source.client.xrange(redis_names.stream(spec.root, spec.timeframe), count=1)
            if first:
                starts.append(parse_stream_id(first[0][0])[0])
        return datetime.fromtimestamp(min(starts) / 1000, UTC) if starts else None

    def _report_gaps(self) -> None:
        """Warn when a traded symbol's daily stream starts after the hand-over: the bars between are in neither."""
        handover = self.warmup.handover
        if handover is None:
            return
        for symbol in self.setup.symbols:
            first = self.source.client.xrange(redis_names.stream(symbol, "daily"), count=1)
            if first and (start := datetime.fromtimestamp(parse_stream_id(first[0][0])[0] / 1000, UTC)) > handover:
                log.warning("%s: the warmup history ends at %s but the daily stream starts at %s: bars in between "
                            "are missing (rebuild the caches with `pine warmup build`)", symbol, handover.isoformat(),
                            start.isoformat(), extra={"symbol": symbol})

    def _report_untraded(self) -> None:
        """Warn about bars after this strategy's ledger cursor that the warmup history already holds: the worker
        was down while the hub published them, and they are now history (indicators see them, nothing trades)."""
        by_name = {spec.name: (spec.root, spec.timeframe) for spec in self.warmup.layout.feeds}
        for feed, cursor in sorted(self.journal.cursors.items()):
            history = self.warmup.bars.get(by_name.get(feed, ("", "")), [])
            missed = [b for b in history if int(b.timestamp.timestamp() * 1000) > cursor[0]]
            if missed:
                log.warning("%s: %d bar(s) from %s to %s came after the last bar this strategy processed and are "
                            "in the warmup history: used as history, not traded", feed, len(missed),
                            missed[0].timestamp.isoformat(), missed[-1].end.isoformat())

    def _beat(self, *, force: bool = False) -> None:
        self._last_beat = time.monotonic()
        try:
            self.coordinator.touch()  # the lease that keeps this worker's reservations its own
        except redis.RedisError as exc:
            log.warning("could not refresh the portfolio lease: %s", exc)
        stats = self.journal.stats
        latest = max(stats.last_bar_end.values(), default=None) or datetime.now(UTC)
        warmup = self.warmup
        fields: dict[str, Any] = {
            "strategy": self.setup.name,
            "broker": self.execution.sender.name,
            "killswitch": self.execution.state.value,
            "orders": dict(self.execution.stats.counts),
            "orders_today": self.execution.journal.day_counts(self.setup.name, self.execution.trading_day(latest)),
            "bars": dict(stats.bars),
            "last_bar_end": {f: t.isoformat() for f, t in stats.last_bar_end.items()},
            "open_positions": dict(stats.positions),
            "trades_recorded": stats.trades_recorded,
            "replayed_bars": stats.replayed_bars,
            "warmup": {
                "state": self.warmup_state, "source": warmup.source, "built_from": warmup.built_from,
                "handover": warmup.handover.isoformat() if warmup.handover else None,
                "bars": warmup.total, "delivered": sum(stats.warmup_bars.values()),
                "stream_bars_skipped": self.source.warmup_overlap, "seconds": round(warmup.seconds, 3),
            },
            "missing_feeds": warmup.layout.missing_feeds,
            "watermark": self.source.watermark.isoformat() if self.source.watermark else None,
            "bad_messages": self.source.bad_messages,
        }
        if self.strategy is not None or self.cerebro is not None:
            fields["ml_features"] = self._feature_summary()
        if self.ml is not None:
            fields["ml"] = self.ml.status()
        self.heartbeat.beat(self.status, force=force, **fields)

    def _feature_summary(self) -> dict[str, str]:
        # Backtrader objects overload truth testing: compare with None, never ``or``.
        strategy = self.strategy if self.strategy is not None else _running_strategy(self.cerebro)
        status = getattr(strategy, "feature_status", None)
        return {s: v["features_ready"] for s, v in status().items()} if status is not None else {}


def _running_strategy(cerebro: bt.Cerebro | None) -> BaseStrategy | None:
    """The strategy instance while ``cerebro.run()`` is still running (it returns it only at the end)."""
    runstrats = getattr(cerebro, "runningstrats", None)
    return runstrats[0] if runstrats else None


def worker_command(cfg: PineConfig, args: argparse.Namespace, history_builder: HistoryBuilder | None = None) -> int:
    """Entry point of ``pine worker``: preflight, then the worker (``--check``: preflight only).

    ``history_builder`` builds missing warmup caches (the CLI composes it from ``hub.history``;
    workers never import the hub).
    """
    try:
        setup = resolve_strategy(cfg, args.strategy)
    except StrategySetupError as exc:
        print(f"pine worker: {exc}", file=sys.stderr)
        return 1
    for secret in (setup.config.broker_account, setup.config.discord_webhook_url):
        if secret is not None:
            register_secret(secret.get_secret_value())
    if not setup.config.enabled:
        log.warning("strategy %s is disabled in the config; running it because it was asked for", setup.name)
    try:
        client = connect(resolve_redis_url(cfg.redis.resolved_url(), cfg.runtime_dir))
    except RedisUnavailableError as exc:
        if args.check:
            print(run_preflight(cfg, setup, None, str(exc)).render())
            return 1
        print(f"pine worker: {exc}", file=sys.stderr)
        return 1
    report = run_preflight(cfg, setup, client)
    if args.check:
        print(report.render())
        return 1 if report.failed else 0
    for check in report.checks:
        level = {"fail": logging.ERROR, "warn": logging.WARNING}.get(check.status, logging.INFO)
        log.log(level, "preflight %s %s: %s", check.status, check.name, check.detail)
    if report.failed:
        if cfg.preflight.fail_fast:
            print(f"pine worker: preflight failed for {setup.name}; refusing to start (preflight.fail_fast). "
                  f"Run `pine worker --strategy {setup.name} --check` for the report.", file=sys.stderr)
            return 1
        log.warning("preflight failed; starting anyway (preflight.fail_fast is off)")
    try:
        return Worker(cfg, setup, client, stop_at_end=args.stop_at_end, history_builder=history_builder).run()
    finally:
        client.close()
