"""Preflight: what ``pine worker --check`` prints and every worker checks before it trades.

Checks: the config resolves to a runnable strategy; Redis answers; the killswitch state; the
broker can be reached (TradersPost: a TCP connect to the webhook host, since any HTTP request
to the webhook would be a trading signal; paper: nothing to reach); the trades DB opens,
migrates and takes the write lock; each bar stream has bars (an empty stream only warns: the
worker waits for the hub); the warmup history (``workers.warmup``: caches present and how far
they reach, or what the worker will build them from); the ML veto models of a strategy with
ML-enabled instruments (each symbol's champion resolves and loads, its feature list is among the
features the worker computes, the scikit-learn it was trained with; no champion: trades without
veto); and the restart checks of ``workers.reconcile`` (DB positions, journal acknowledgements,
coordinator slots, orders in doubt). A ``fail`` stops the worker when ``preflight.fail_fast`` is set.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from typing import Final

import redis

from pine import redis_names
from pine.bar_cache import BarCacheError, cache_path, complete_through
from pine.config.schema import PineConfig
from pine.killswitch import DESCRIPTIONS, Killswitch, KillswitchState
from workers.coordinator import PortfolioCoordinator
from workers.db_schema import SchemaError
from workers.delivery import OrderSender, PaperSender
from workers.engine import StrategySetup
from workers.feeds import FEED_TIMEFRAMES
from workers.order_journal import OrderJournal
from workers.reconcile import startup_findings
from workers.traderspost import TradersPostClient
from workers.trades_db import TradesDB
from workers.warmup import needed_series

OK: Final = "ok"
WARN: Final = "warn"
FAIL: Final = "fail"
SKIP: Final = "skip"


@dataclass(frozen=True)
class Check:
    """One preflight result."""

    name: str
    status: str
    detail: str


@dataclass
class PreflightReport:
    """Every check of one strategy; ``failed`` if any is a ``fail``."""

    strategy: str
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether a check failed."""
        return any(c.status == FAIL for c in self.checks)

    def add(self, name: str, status: str, detail: str) -> None:
        """Append a check."""
        self.checks.append(Check(name, status, detail))

    def render(self) -> str:
        """The report as aligned lines, with a verdict."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"preflight of worker {self.strategy}:"]
        lines += [f"  {c.status:<5} {c.name:<{width}}  {c.detail}" for c in self.checks]
        lines.append(f"  => {'FAILED' if self.failed else 'ready'}")
        return "\n".join(lines)


def sender_for(cfg: PineConfig, setup: StrategySetup) -> OrderSender:
    """The strategy's broker: TradersPost when ``broker_account`` is set, else the paper broker."""
    url = setup.config.broker_account
    if url is None:
        return PaperSender()
    return TradersPostClient(url.get_secret_value(), cfg.traderspost)


def run_preflight(cfg: PineConfig, setup: StrategySetup, client: redis.Redis | None,
                  redis_problem: str = "") -> PreflightReport:
    """Run every check (the DB is created and migrated if it does not exist)."""
    report = PreflightReport(setup.name)
    try:
        sender = sender_for(cfg, setup)
    except ValueError as exc:
        report.add("config", FAIL, f"strategies.{setup.name}.broker_account: {exc}")
        sender = None
    else:
        broker = f"TradersPost webhook at {sender.host}" if isinstance(sender, TradersPostClient) else "paper broker"
        report.add("config", OK, f"strategy {setup.name} ({setup.config.strategy_type}): "
                                 f"{' '.join(setup.symbols)}; {broker}")
    if client is None:
        report.add("redis", FAIL, redis_problem or "not connected")
    else:
        _check_redis(report, client, cfg)
    if sender is not None:
        probe = sender.probe()
        report.add("broker", SKIP if probe.skipped else (OK if probe.ok else FAIL), probe.detail)
    db = _check_db(report, cfg)
    if client is not None:
        _check_streams(report, client, setup)
    _check_history(report, cfg, setup)
    _check_ml(report, cfg, setup)
    if client is not None and db is not None:
        _check_restart(report, client, cfg, setup, db)
    if db is not None:
        db.close()
    return report


def _check_redis(report: PreflightReport, client: redis.Redis, cfg: PineConfig) -> None:
    try:
        client.ping()
    except redis.RedisError as exc:
        report.add("redis", FAIL, f"no answer: {exc}")
        return
    report.add("redis", OK, "answered")
    ks = Killswitch(client, mirror_dir=cfg.runtime_dir)
    stored = ks.stored()
    state = ks.effective()
    floor = f"; POLICY_KILLSWITCH floor {ks.floor.value}" if ks.floor is not KillswitchState.OFF else ""
    detail = f"{state.value} ({DESCRIPTIONS[state]}){floor}" + (f"; reason: {stored.reason}" if stored.reason else "")
    report.add("killswitch", OK if state is KillswitchState.OFF else WARN, detail)


def _check_db(report: PreflightReport, cfg: PineConfig) -> TradesDB | None:
    path = cfg.trades_db_path
    try:
        db = TradesDB(path, calendar=cfg.sessions.calendar())
        db.check_writable()
    except (sqlite3.Error, OSError, SchemaError) as exc:
        report.add("trades db", FAIL, f"{path}: {exc}")
        return None
    migrated = f", migrated to v{db.migrated[-1]}" if db.migrated else ""
    report.add("trades db", OK, f"{path} writable (schema v{db.schema_version}{migrated}, WAL)")
    return db


def _check_streams(report: PreflightReport, client: redis.Redis, setup: StrategySetup) -> None:
    empty = [redis_names.stream(s, tf) for s in setup.symbols for tf in FEED_TIMEFRAMES
             if not client.xlen(redis_names.stream(s, tf))]
    total = len(setup.symbols) * len(FEED_TIMEFRAMES)
    if empty:
        report.add("warmup data", WARN, f"{len(empty)} of {total} bar streams have no bars yet ({', '.join(empty[:3])}"
                                        f"{', …' if len(empty) > 3 else ''}): the worker waits for the hub")
    else:
        report.add("warmup data", OK, f"all {total} bar streams have bars")


def _check_history(report: PreflightReport, cfg: PineConfig, setup: StrategySetup) -> None:
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    layout = setup.layout(cfg.instruments)
    series = needed_series(setup.config, layout)
    required = {*layout.symbols, *layout.required}
    present = [(r, tf) for r, tf in series if cache_path(cache_dir, r, tf).exists()]
    lacking = sorted(f"{r} {tf}" for r, tf in series if (r, tf) not in present and r in required)
    if not present:
        archive = cfg.runtime_path(cfg.warmup.archive_dir)
        key = cfg.databento.api_key is not None or bool(os.environ.get("DATABENTO_API_KEY"))
        source = ("the Databento Historical API" if key
                  else f"the DBN archive {archive}" if archive.is_dir() and any(archive.glob("*.dbn*")) else None)
        if source and cfg.warmup.build_missing:
            report.add("history", WARN, f"no warmup caches in {cache_dir}: they will be built from {source} at start")
        else:
            report.add("history", WARN, f"no warmup history in {cache_dir} (`pine warmup build`): indicators start "
                                        "from the bar streams' beginning")
        return
    if lacking and cfg.warmup.build_missing:
        report.add("history", WARN, f"warmup caches missing for {', '.join(lacking)}: built at start if a source has "
                                    "them, else the worker refuses to trade")
        return
    if lacking:
        report.add("history", FAIL, f"warmup caches missing for {', '.join(lacking)} in {cache_dir}")
        return
    try:
        ends = [complete_through(cache_path(cache_dir, r, tf)) for r, tf in present]
    except BarCacheError as exc:
        report.add("history", FAIL, str(exc))
        return
    known = [e for e in ends if e is not None]
    through = f", complete through {min(known).isoformat()}" if known else ""
    report.add("history", OK, f"{len(present)} of {len(series)} warmup caches in {cache_dir}{through}")


def _check_ml(report: PreflightReport, cfg: PineConfig, setup: StrategySetup) -> None:
    """One line per ML-enabled symbol: its champion loads and fits the worker's features, or why not."""
    if not setup.ml_symbols:
        return  # a worker without ML never imports the ML libraries, nor does its preflight
    from ml.features import MissingFeedError, feature_set
    from ml.registry import CHAMPION, model_name, registry_exists
    from ml.serving import ModelLoadError, load_champion

    if not registry_exists(cfg.runtime_dir):
        report.add("ml", WARN, f"no model registry in {cfg.runtime_dir / 'mlflow'} (nor MLFLOW_TRACKING_URI): "
                               f"{' '.join(setup.ml_symbols)} trade without veto (`pine ml train`, `pine ml promote`)")
        return
    roots = {spec.root for spec in setup.layout(cfg.instruments).feeds}
    for symbol in setup.ml_symbols:
        try:
            computed = feature_set(symbol, roots).names
            model = load_champion(setup.name, symbol, cfg.runtime_dir, computed)
        except (MissingFeedError, ModelLoadError) as exc:
            report.add("ml", FAIL, f"{symbol}: {exc}")
            continue
        if model is None:
            report.add("ml", WARN, f"{symbol}: no {model_name(setup.name, symbol)}@{CHAMPION}: trades without veto")
        elif model.sklearn_mismatch:
            report.add("ml", WARN, f"{symbol}: {model.sklearn_mismatch}")
        else:
            report.add("ml", OK, f"{symbol}: {model.name} version {model.version} loads, its {len(model.features)} "
                                 f"features are the worker's (threshold {model.threshold:.4f})")


def _check_restart(report: PreflightReport, client: redis.Redis, cfg: PineConfig, setup: StrategySetup,
                   db: TradesDB) -> None:
    journal = OrderJournal(db)
    coordinator = PortfolioCoordinator.from_config(client, setup.name, cfg)
    positions = db.open_positions(setup.name)
    findings = startup_findings(positions, journal, coordinator.owned(), journal.unresolved(setup.name))
    for f in findings:
        report.add("reconcile", {"fail": FAIL, "warn": WARN}.get(f.level, OK), f.text)
    if not findings:
        report.add("reconcile", OK, f"{len(positions)} open position(s) in the DB, consistent with the order "
                                    "journal and the coordinator")
