"""Helpers for ML tests: a multi-root synthetic market with a learnable signal, bar caches, a config."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from hub.synthetic import trading_days
from pine.bar_cache import bars_frame, cache_path, write_bars
from pine.bars import Bar
from pine.config import PineConfig, load_config
from tests.bar_factory import CALENDAR, SymbolSpec, aggregate, minute_bars
from tests.conftest import REPO

STRATEGY = "ibs_ml"
TRADED = (
    SymbolSpec("CL", 78.00, 0.01, "CLK4", 202),
    SymbolSpec("GC", 2050.0, 0.10, "GCJ4", 303),
)
REFERENCES = (
    SymbolSpec("ES", 5000.0, 0.25, "ESM4", 1),
    SymbolSpec("NQ", 18000.0, 0.25, "NQM4", 2),
    SymbolSpec("RTY", 2000.0, 0.10, "RTYM4", 3),
    SymbolSpec("YM", 39000.0, 1.0, "YMM4", 4),
    SymbolSpec("NG", 2.500, 0.001, "NGK4", 5),
    SymbolSpec("SI", 23.00, 0.005, "SIK4", 6),
    SymbolSpec("ZC", 450.0, 0.25, "ZCK4", 7),
    SymbolSpec("ZS", 1200.0, 0.25, "ZSK4", 8),
    SymbolSpec("ZW", 600.0, 0.25, "ZWK4", 9),
    SymbolSpec("6B", 1.2700, 0.0001, "6BM4", 10),
    SymbolSpec("6N", 0.6100, 0.00005, "6NM4", 11),
    SymbolSpec("6S", 1.1300, 0.00005, "6SM4", 12),
    SymbolSpec("ZB", 120.0, 0.03125, "ZBM4", 13),
)
OPTIONAL = (
    SymbolSpec("VIX", 15.0, 0.05, "VXK4", 20),
    SymbolSpec("PL", 950.0, 0.10, "PLN4", 21),
    SymbolSpec("6E", 1.0800, 0.00005, "6EM4", 22),
    SymbolSpec("6J", 0.0067, 0.0000005, "6JM4", 23),
)
INSTRUMENTS = {
    "CL": {"multiplier": 1000, "tick_size": 0.01, "databento_product_id": "CL.FUT", "exchange": "NYMEX",
           "margin": 6000, "commission": 4.5},
    "GC": {"multiplier": 100, "tick_size": 0.10, "databento_product_id": "GC.FUT", "exchange": "COMEX",
           "margin": 11000, "commission": 4.5},
}
# Entry on weaker-than-usual closes gives enough trades for a model on a year of sessions.
IBS_PARAMS = {"entry_low": 0.35, "exit_high": 0.7, "max_bars_held": 3, "stop_pct": 0.03}
ML_SETTINGS = {"folds": 3, "embargo_days": 2, "heldout_fraction": 0.25, "min_trades": 20}


def days(sessions: int) -> list[date]:
    """``sessions`` trading days from 2023-01-02."""
    return trading_days(date(2023, 1, 2), sessions)


def _session_returns(daily: Sequence[Bar]) -> dict[date, float]:
    out: dict[date, float] = {}
    prev: float | None = None
    for bar in sorted(daily, key=lambda b: b.end):
        out[CALENDAR.trading_day(bar.timestamp)] = 0.0 if prev is None else bar.close / prev - 1.0
        prev = bar.close
    return out


def _with_lead(minutes: Sequence[Bar], lead: dict[date, float], beta: float, tick: float) -> list[Bar]:
    """Each session drifts by ``beta`` × the leader's return of the previous session."""
    by_day: dict[date, list[Bar]] = {}
    for b in minutes:
        by_day.setdefault(CALENDAR.trading_day(b.timestamp), []).append(b)
    level, out, prev_day = 1.0, [], None
    for day in sorted(by_day):
        drift = beta * lead.get(prev_day, 0.0) if prev_day is not None else 0.0
        group = by_day[day]
        for i, b in enumerate(group):
            f = level * (1.0 + drift) ** ((i + 1) / len(group))
            o, h, lo, c = (round(round(p * f / tick) * tick, 10) for p in (b.open, b.high, b.low, b.close))
            out.append(Bar(b.symbol, b.timeframe, b.timestamp, b.end, o, max(h, o, c), min(lo, o, c), c, b.volume,
                           b.trade_count, b.instrument_id, b.contract_symbol))
        level *= 1.0 + drift
        prev_day = day
    return out


def ml_market(
    sessions: int, *, seed: int = 5, optional: Iterable[str] = (), beta: float = 0.0, traded_minutes: int = 40
) -> list[Bar]:
    """Minute, hourly and daily bars of the traded roots, the required references and ``optional`` ones.

    With ``beta`` the traded roots drift each session by ``beta`` × ES's previous session
    return, which ``ES_ret_1d`` at the decision reveals: a signal a model can learn.
    """
    d = days(sessions)
    wanted = set(optional)
    bars: list[Bar] = []
    es_daily: list[Bar] = []
    for spec in (*REFERENCES, *(s for s in OPTIONAL if s.symbol in wanted)):
        minutes = minute_bars(spec, d, seed=seed, per_session=8, sigma=0.0015)
        agg = aggregate(minutes)
        if spec.symbol == "ES":
            es_daily = [b for b in agg if b.timeframe == "daily"]
        bars += minutes + agg
    lead = _session_returns(es_daily)
    for spec in TRADED:
        minutes = minute_bars(spec, d, seed=seed, per_session=traded_minutes)
        if beta:
            minutes = _with_lead(minutes, lead, beta, spec.tick)
        bars += minutes + aggregate(minutes)
    return sorted(bars, key=lambda b: (b.end, b.symbol, b.timeframe))


def write_caches(warmup_dir: Path, bars: Iterable[Bar]) -> Path:
    """Parquet bar caches (``pine.bar_cache`` layout) of every root and timeframe in ``bars``."""
    groups: dict[tuple[str, str], list[Bar]] = {}
    for b in bars:
        groups.setdefault((b.symbol, b.timeframe), []).append(b)
    for (root, tf), group in groups.items():
        write_bars(cache_path(warmup_dir, root, tf), bars_frame(group))
    return warmup_dir


def write_ml_config(path: Path, *, ml: dict[str, Any] | None = None, live: bool = False,
                    notifications: dict[str, Any] | None = None, **strategy: Any) -> Path:
    """A config with one ML-enabled IBS strategy ``ibs_ml`` trading CL and GC; ``strategy`` adds to its section.

    ``live``: for a worker fed by the hub: heartbeats every second, portfolio limits that never bind and the
    reference roots the features read among the instruments (the hub publishes configured instruments only).
    """
    instruments = dict(INSTRUMENTS)
    doc: dict[str, Any] = {}
    if live:
        doc["heartbeat"] = {"interval": 1, "write_interval": 0.2, "ttl": 30}
        doc["portfolio"] = {"starting_cash": 250000, "max_positions": 50, "daily_stop_loss": 10_000_000}
        example = yaml.safe_load((REPO / "data" / "config.multi_alpha.example.yml").read_text())["instruments"]
        instruments |= {spec.symbol: example[spec.symbol] for spec in REFERENCES}
    doc["strategies"] = {
        STRATEGY: {
            "strategy_type": "ibs",
            "starting_cash": 150000,
            "slippage_ticks": 1,
            "params": IBS_PARAMS,
            "instruments": {"CL": {"size": 1, "ml_enabled": True}, "GC": {"size": 1, "ml_enabled": True}},
            **strategy,
        }
    }
    doc["instruments"] = instruments
    doc["ml"] = {**ML_SETTINGS, **(ml or {})}
    if notifications is not None:
        doc["notifications"] = notifications
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def live_ml_config(tmp_path: Path, caches: Path, *, notifications: dict[str, Any] | None = None,
                   **strategy: Any) -> PineConfig:
    """The ``live`` ML config (see :func:`write_ml_config`) in ``tmp_path``, with the bar ``caches`` as the
    warmup history of its runtime dir."""
    cfg = load_config(write_ml_config(tmp_path / "config.yml", live=True, notifications=notifications, **strategy))
    shutil.copytree(caches, cfg.runtime_path(cfg.warmup.cache_dir))
    return cfg
