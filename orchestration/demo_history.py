"""The demo's history: synthetic trading days before the replayed ones, aggregated into warmup caches.

The demo's workers start from these caches (``workers.warmup``) exactly as production workers
start from the caches ``pine warmup build`` writes: the history is written as DBN files (the
demo's archive), aggregated by the hub's own code (``hub.history``) and handed over to the
replayed market at the session close before its first day.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from hub.history import bars_from_archive, write_caches
from hub.synthetic import trading_days, write_synthetic_market
from pine.bars import TIMEFRAMES
from pine.config import PineConfig
from pine.contracts import load_contract_map
from workers.engine import resolve_strategy


def demo_roots(cfg: PineConfig, strategies: Sequence[str]) -> list[str]:
    """Every root the strategies trade or read as a reference (the market must have them all)."""
    return sorted({r for s in strategies for r in resolve_strategy(cfg, s).layout(cfg.instruments).roots})


def history_days(start: date, days: int) -> list[date]:
    """The ``days`` trading days before ``start``."""
    back = trading_days(start - timedelta(days=days * 7 // 5 + 7), days * 2)
    return [d for d in back if d < start][-days:]


def prepare_history(cfg: PineConfig, root_dir: Path, roots: Sequence[str], start: date, days: int,
                    seed: int) -> datetime | None:
    """Write ``days`` days of history before ``start`` to the demo's DBN archive (``warmup.archive_dir`` in
    ``root_dir``) and their caches to its warmup dir; returns the instant the caches are complete through.

    None without history: none asked for, or ``warmup.cache_dir``/``archive_dir`` is absolute (the demo
    never writes outside its own runtime dir, so it would not overwrite production history).
    """
    if days < 1 or cfg.warmup.cache_dir.is_absolute() or cfg.warmup.archive_dir.is_absolute():
        return None
    first = history_days(start, days)[0]
    files = write_synthetic_market(root_dir / cfg.warmup.archive_dir, roots, first, days, seed,
                                   load_contract_map(cfg.contract_map_path))
    history = bars_from_archive(files, roots, cfg.sessions.calendar(), timeframes=TIMEFRAMES)
    write_caches(history, root_dir / cfg.warmup.cache_dir, roots, TIMEFRAMES)
    return history.complete_through
