"""``pine worker --strategy NAME``: one strategy trading the hub's bars through its broker.

The worker reads its bar streams from Redis from the beginning; bars an earlier run already
processed are replayed silently to rebuild state (see ``workers.journal``), later bars are
traded. Orders go through ``workers.execution`` (killswitch, portfolio coordinator, order
journal, TradersPost or the paper broker) and everything is recorded in the trades DB. Preflight
checks run first (``--check`` runs only them). SIGTERM/SIGINT stop it gracefully.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

import redis

from pine.config.schema import PineConfig
from pine.heartbeat import Heartbeat
from pine.killswitch import Killswitch
from pine.logs import register_secret
from pine.redis_server import RedisUnavailableError, connect, resolve_redis_url
from workers.bar_stream import StreamBarSource
from workers.coordinator import PortfolioCoordinator
from workers.engine import StrategySetup, StrategySetupError, build_cerebro, resolve_strategy
from workers.execution import Execution
from workers.feeds import LiveFeedSet
from workers.journal import LedgerJournal
from workers.order_journal import OrderJournal
from workers.preflight import run_preflight, sender_for
from workers.reconcile import ReconcileError
from workers.trades_db import TradesDB

log = logging.getLogger(__name__)


class Worker:
    """One strategy's live Cerebro, its order path, its trades DB journal and its heartbeat."""

    def __init__(self, cfg: PineConfig, setup: StrategySetup, client: redis.Redis, *, stop_at_end: bool) -> None:
        self.setup = setup
        calendar = cfg.sessions.calendar()
        self.db = TradesDB(cfg.trades_db_path, calendar=calendar)
        self.journal = LedgerJournal(self.db, setup.name, on_step=self._tick)
        self.coordinator = PortfolioCoordinator.from_config(client, setup.name, cfg)
        self.execution = Execution(
            setup.name, db=self.db, journal=OrderJournal(self.db), sender=sender_for(cfg, setup), calendar=calendar,
            killswitch=Killswitch(client, mirror_dir=cfg.runtime_dir), coordinator=self.coordinator,
            ticker_mode=setup.config.broker_ticker, fail_fast=cfg.preflight.fail_fast,
        )
        self.source = StreamBarSource(client)
        feeds = LiveFeedSet(self.source, stop_at_end=stop_at_end, on_idle=self._tick)
        self.cerebro = build_cerebro(cfg, setup, feeds.make_feed, self.journal, self.execution)
        self.heartbeat = Heartbeat(f"worker:{setup.name}", cfg.heartbeat, cfg.runtime_dir, client)
        self._beat_every = cfg.heartbeat.write_interval
        self._last_beat = 0.0
        self.status = "starting"
        self.stop_signal: int | None = None

    def run(self) -> int:
        """Run until the hub has finished (with ``stop_at_end``) or a signal arrives; returns the exit code."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._beat(force=True)
            self.source.start()
            self._set_status("replaying" if self.journal.replaying else "running")
            log.info("worker %s: %d symbols (%s), %s broker; trades DB %s; %s", self.setup.name,
                     len(self.setup.symbols), " ".join(self.setup.symbols), self.execution.sender.name, self.db.path,
                     f"replaying up to {len(self.journal.cursors)} feed cursor(s)" if self.journal.replaying
                     else "nothing to replay")
            if self.stop_signal is None:  # Cerebro.run() forgets a stop requested before it started
                self.cerebro.run()
            self._set_status("stopped" if self.stop_signal is not None else "finished")
            stats = self.journal.stats
            log.info("worker %s %s: %d bars (%d replayed), %d trades recorded in total; orders %s", self.setup.name,
                     self.status, sum(stats.bars.values()), stats.replayed_bars, stats.trades_recorded,
                     self.execution.stats.counts or "none")
            return 0
        except ReconcileError as exc:
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
            self.db.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("worker %s: %s received, stopping", self.setup.name, signal.Signals(signum).name)
        self.stop_signal = signum
        self.cerebro.runstop()

    def _set_status(self, status: str) -> None:
        self.status = status
        self._beat(force=True)

    def _tick(self) -> None:
        if self.status == "replaying" and not self.journal.replaying:
            log.info("worker %s: replay done, trading", self.setup.name)
            self._set_status("running")
        elif time.monotonic() - self._last_beat >= self._beat_every:
            self._beat()

    def _beat(self, *, force: bool = False) -> None:
        self._last_beat = time.monotonic()
        try:
            self.coordinator.touch()  # the lease that keeps this worker's reservations its own
        except redis.RedisError as exc:
            log.warning("could not refresh the portfolio lease: %s", exc)
        stats = self.journal.stats
        fields: dict[str, Any] = {
            "strategy": self.setup.name,
            "broker": self.execution.sender.name,
            "killswitch": self.execution.state.value,
            "orders": dict(self.execution.stats.counts),
            "bars": dict(stats.bars),
            "last_bar_end": {f: t.isoformat() for f, t in stats.last_bar_end.items()},
            "open_positions": dict(stats.positions),
            "trades_recorded": stats.trades_recorded,
            "replayed_bars": stats.replayed_bars,
            "watermark": self.source.watermark.isoformat() if self.source.watermark else None,
            "bad_messages": self.source.bad_messages,
        }
        self.heartbeat.beat(self.status, force=force, **fields)


def worker_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """Entry point of ``pine worker``: preflight, then the worker (``--check``: preflight only)."""
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
    return Worker(cfg, setup, client, stop_at_end=args.stop_at_end).run()
