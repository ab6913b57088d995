"""The demo's ML veto models: trained and promoted before the workers start, so the veto path runs.

An IBS signal comes about once in six sessions per symbol, so a model needs a hundred-odd
sessions of labelled history, while the demo's DBN history (``demo_history``) costs about a
second per day to write and aggregate. The demo therefore trains on a separate, cheaper
*training history*: seeded bars written straight into parquet caches (``<runtime>/demo/ml_history``,
the ``pine.bar_cache`` layout ``pine ml train`` reads), the sessions before the DBN history,
each root moving with its synthetic profile's daily volatility (``hub.synthetic.PROFILES``) at a
few dozen minutes per session. The models go to the demo's own MLflow store, where the workers
look for ``models:/{strategy}_{SYMBOL}@champion``. Training settings are the config's ``ml``
block with the demo's overrides (``DEMO_ML``: a smaller sample is enough to show the path; the
example config keeps production values).
"""

from __future__ import annotations

import time as clock
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from hub.synthetic import instrument_id, live_contracts, profile_for
from orchestration.demo_history import demo_roots, history_days
from pine.bar_cache import bars_frame, cache_path, write_bars
from pine.bars import TIMEFRAMES, Bar
from pine.config import PineConfig
from pine.config.schema import MlConfig
from pine.contracts import load_contract_map
from pine.sessions import SessionCalendar
from workers.references import REFERENCE_TIMEFRAMES

CHICAGO: Final = ZoneInfo("America/Chicago")
# Minutes with a bar per session (the session's 23 trading hours have 1380): enough for IBS and ranges,
# few enough that the labelling backtests stay quick.
MINUTES_PER_SESSION: Final = 24
TRADING_MINUTES: Final = 23 * 60
# Sessions of training history: at about one IBS trade per six sessions and symbol, and twenty sessions
# before the features are ready, this gives most symbols the demo's ``min_trades``.
TRAINING_SESSIONS: Final = 120
# The demo's training settings over the config's ``ml`` block: fewer trades and folds than production.
DEMO_ML: Final = {"min_trades": 10, "folds": 3, "heldout_fraction": 0.25, "promotion_margin": 0.0}


@dataclass
class DemoModels:
    """What the demo trained: champion version per model name, and the symbols skipped with why."""

    strategy: str | None
    champions: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the demo's output."""
        if self.strategy is None:
            return "no enabled ibs strategy with ML-enabled instruments: the workers trade without veto"
        done = ", ".join(f"{name} v{v}" for name, v in self.champions.items()) or "none"
        skipped = "; ".join(f"{s}: {why}" for s, why in self.skipped.items())
        return (f"ML veto models trained and promoted to champion for {self.strategy} in {self.seconds:.0f}s: {done}"
                + (f" (skipped, trading without veto: {skipped})" if skipped else ""))


def demo_ml_config(cfg: PineConfig) -> PineConfig:
    """``cfg`` with the demo's training settings (validated like any config)."""
    ml = MlConfig.model_validate({**cfg.ml.model_dump(), **DEMO_ML})
    return cfg.model_copy(update={"ml": ml})


def ml_strategy(cfg: PineConfig) -> str | None:
    """The enabled ibs strategy the demo trains: the one with the fewest ML-enabled instruments (quickest),
    first by name among equals; None when there is none."""
    counts = {name: sum(inst.ml_enabled for inst in scfg.instruments.values())
              for name, scfg in cfg.enabled_strategies().items() if scfg.strategy_type == "ibs"}
    candidates = sorted((n, name) for name, n in counts.items() if n)
    return candidates[0][1] if candidates else None


def _session_minutes(calendar: SessionCalendar, day: date, rng: np.random.Generator) -> list[datetime]:
    start, _ = calendar.session_bounds(datetime.combine(day, time(12), tzinfo=CHICAGO))
    offsets = np.sort(rng.choice(TRADING_MINUTES, MINUTES_PER_SESSION, replace=False))
    return [start + timedelta(minutes=int(m)) for m in offsets]


def root_minutes(cfg: PineConfig, root: str, days: Sequence[date], seed: int) -> list[Bar]:
    """Seeded random-walk minute bars of ``root`` over the sessions of ``days``."""
    spec = load_contract_map(cfg.contract_map_path)[root]
    profile = profile_for(root, spec)
    calendar = cfg.sessions.calendar()
    rng = np.random.default_rng([seed, zlib.crc32(root.encode())])
    sigma = profile.daily_vol / np.sqrt(MINUTES_PER_SESSION)
    tick = spec.tick_size
    price = profile.price
    bars: list[Bar] = []
    for day in days:
        contract = live_contracts(root, spec, day)[0].symbol
        minutes = _session_minutes(calendar, day, rng)
        closes = price * np.exp(np.cumsum(rng.normal(0.0, sigma, len(minutes))))
        wicks = np.abs(rng.normal(0.0, sigma / 3, (len(minutes), 2)))
        for ts, close, (up, down) in zip(minutes, closes, wicks, strict=True):
            o, c = _tick(price, tick), _tick(close, tick)
            h, lo = _tick(max(o, c) * (1 + up), tick), _tick(min(o, c) * (1 - down), tick)
            bars.append(Bar(root, "1min", ts, ts + timedelta(minutes=1), o, max(h, o, c), min(lo, o, c), c,
                            int(rng.integers(1, 60)), int(rng.integers(1, 20)), instrument_id(contract), contract))
            price = close
    return bars


def _tick(x: float, tick: float) -> float:
    return round(round(x / tick) * tick, 10)


def aggregate(minutes: Sequence[Bar], calendar: SessionCalendar) -> dict[str, list[Bar]]:
    """Hourly (UTC hours) and daily (CME sessions) bars of one root's minute bars, as the hub builds them."""
    groups: dict[str, dict[tuple[datetime, datetime], list[Bar]]] = {"hourly": {}, "daily": {}}
    for b in minutes:
        hour = b.timestamp.replace(minute=0, second=0, microsecond=0)
        groups["hourly"].setdefault((hour, hour + timedelta(hours=1)), []).append(b)
        groups["daily"].setdefault(calendar.session_bounds(b.timestamp), []).append(b)
    return {tf: [_combine(g, tf, start, end) for (start, end), g in by.items()] for tf, by in groups.items()}


def _combine(group: Sequence[Bar], timeframe: str, start: datetime, end: datetime) -> Bar:
    return Bar(group[0].symbol, timeframe, start, end, group[0].open, max(b.high for b in group),
               min(b.low for b in group), group[-1].close, sum(b.volume for b in group),
               sum(b.trade_count for b in group), group[-1].instrument_id, group[-1].contract_symbol)


def write_training_history(cfg: PineConfig, out_dir: Path, roots: Sequence[str], traded: Collection[str],
                           before: date, days: int, seed: int) -> Path:
    """Bar caches of ``roots`` over the ``days`` trading days before ``before``; returns ``out_dir``.

    Hourly and daily caches for every root, minute caches for the ``traded`` ones (their trades fill on
    minute bars; references are read as hourly and daily series only)."""
    sessions = history_days(before, days)
    calendar = cfg.sessions.calendar()
    last_end = calendar.session_bounds(datetime.combine(sessions[-1], time(12), tzinfo=CHICAGO))[1]
    for root in roots:
        minutes = root_minutes(cfg, root, sessions, seed)
        series = {"1min": minutes, **aggregate(minutes, calendar)}
        for tf in TIMEFRAMES if root in traded else REFERENCE_TIMEFRAMES:
            write_bars(cache_path(out_dir, root, tf), bars_frame(series[tf]), complete_through=last_end.astimezone(UTC))
    return out_dir


def train_demo_models(cfg: PineConfig, runtime_dir: Path, history_dir: Path, strategy: str) -> DemoModels:
    """Train, register and promote (alias ``champion``) the models of ``strategy``'s ML-enabled symbols
    on the bar caches in ``history_dir``, in the MLflow store of ``runtime_dir``."""
    from ml.history import BarHistory
    from ml.registry import Registry
    from ml.training import TrainingSkipped, ml_symbols, train_symbol

    demo = demo_ml_config(cfg)
    history = BarHistory(history_dir)
    registry = Registry(runtime_dir)
    out = DemoModels(strategy)
    for symbol in ml_symbols(demo, strategy):
        try:
            result = train_symbol(demo, strategy, symbol, history)
        except TrainingSkipped as exc:
            out.skipped[symbol] = str(exc).split(": ", 1)[-1]
            continue
        registry.register(result)
        promotion = registry.promote(strategy, symbol, demo.ml.promotion_metric, demo.ml.promotion_margin)
        if promotion.promoted and promotion.candidate is not None:
            out.champions[promotion.name] = promotion.candidate
        else:
            out.skipped[symbol] = promotion.reason
    return out


def prepare_models(cfg: PineConfig, root_dir: Path, before: date, seed: int,
                   sessions: int = TRAINING_SESSIONS) -> DemoModels:
    """Write the training history of the demo's ML strategy to ``<root_dir>/ml_history`` (``sessions`` trading
    days before ``before``), then train and promote its models in the MLflow store of ``root_dir``."""
    from ml.training import ml_symbols

    started = clock.monotonic()
    strategy = ml_strategy(cfg)
    if strategy is None:
        return DemoModels(None)
    history = write_training_history(cfg, root_dir / "ml_history", demo_roots(cfg, [strategy]),
                                     ml_symbols(cfg, strategy), before, sessions, seed)
    models = train_demo_models(cfg, root_dir, history, strategy)
    models.seconds = clock.monotonic() - started
    return models
