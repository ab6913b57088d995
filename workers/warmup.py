"""A worker's historical warmup: bars from the parquet caches, drained through Backtrader before the streams.

What is loaded (per strategy, ``strategies.NAME.warmup`` and ``historical_warmup_compression``):
the last ``daily_bars`` session bars, ``hourly_days`` of hourly bars (unless the compression is
``1d``) and, with ``1min``, ``minute_days`` of the traded symbols' minute bars — for every root
with feeds (``workers.references``). Never weeks of minute bars: Backtrader is slow.

Sources, in order: the caches in ``warmup.cache_dir`` (``pine.bar_cache``); when caches are
missing, a builder composed by the CLI (``hub.history``: the Databento Historical API when a key
is set, else the DBN archive) writes them first. Without any history the worker reads its
streams from their beginning, as before warmup existed, and says so.

Hand-over: every cache says up to when it is complete; the earliest of those instants is the
*hand-over*. Warmup bars are those ending at or before it; the live streams are read from the
first bar ending after it (``workers.feeds.LiveFeedSet``), so nothing is missed or seen twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from pine.bar_cache import BarCacheError, cache_path, complete_through, read_bar_list
from pine.bars import Bar
from pine.config.schema import PineConfig, StrategyConfig
from workers.references import FeedLayout, feed_label

log = logging.getLogger(__name__)

COMPRESSION_TIMEFRAMES: Final = {"1d": ("daily",), "1h": ("daily", "hourly"), "1min": ("daily", "hourly", "1min")}


class WarmupError(RuntimeError):
    """Warmup history that is required but missing or unreadable; the message names the feeds and files."""


class HistoryBuilder(Protocol):
    """Builds missing caches for ``roots`` (complete through ``through`` when given); None: no source."""

    def __call__(self, roots: Sequence[str], timeframes: Sequence[str], through: datetime | None,
                 stop: Callable[[], bool]) -> Any: ...


@dataclass
class Warmup:
    """The history a worker starts from; ``handover`` None: no history (streams from their beginning)."""

    layout: FeedLayout
    source: str = "none"
    handover: datetime | None = None
    bars: dict[tuple[str, str], list[Bar]] = field(default_factory=dict)
    built_from: str | None = None
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Warmup bars loaded."""
        return sum(len(b) for b in self.bars.values())

    def counts(self) -> dict[str, int]:
        """Warmup bars per feed name."""
        return {feed_label(r, tf, self.layout.symbols): len(b) for (r, tf), b in sorted(self.bars.items())}

    def describe(self) -> str:
        """One line for the log."""
        if self.handover is None:
            return "no warmup history: the bar streams are read from their beginning"
        built = f" (built from the {self.built_from})" if self.built_from else ""
        return (f"{self.total:,} warmup bars of {len(self.bars)} feeds from the caches{built}, "
                f"hand-over at {self.handover.isoformat()}, loaded in {self.seconds:.2f}s")


def needed_series(cfg: StrategyConfig, layout: FeedLayout) -> list[tuple[str, str]]:
    """(root, timeframe) of every series warmed up: minute bars only for traded symbols."""
    timeframes = COMPRESSION_TIMEFRAMES[cfg.historical_warmup_compression]
    return [(root, tf) for root in layout.roots for tf in timeframes if tf != "1min" or root in layout.symbols]


def load_warmup(cfg: PineConfig, scfg: StrategyConfig, layout: FeedLayout, *, builder: HistoryBuilder | None = None,
                through_hint: datetime | None = None, stop: Callable[[], bool] = lambda: False) -> Warmup:
    """Load the strategy's warmup bars (see the module docstring).

    Raises WarmupError naming every feed of a traded symbol or required reference root whose
    history is missing while other history exists. An optional root without history is left
    out of the layout (reported missing; its features take neutral defaults).
    """
    started = time.monotonic()
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    series = needed_series(scfg, layout)
    required = {*layout.symbols, *layout.required}
    missing = [(r, tf) for r, tf in series if not cache_path(cache_dir, r, tf).exists()]
    built_from = None
    if missing and builder is not None and cfg.warmup.build_missing:
        roots = sorted({r for r, _ in missing})
        log.info("warmup caches missing for %s: building them", " ".join(roots))
        try:
            build = builder(roots, COMPRESSION_TIMEFRAMES["1min"], through_hint, stop)
        except Exception as exc:  # a failed source is reported; the checks below decide what it means
            log.error("could not build the missing warmup caches: %s", exc)
        else:
            if build is not None:
                built_from = build.source
                log.info("built warmup caches from the %s: %s", build.source, build.detail)
        missing = [(r, tf) for r, tf in series if not cache_path(cache_dir, r, tf).exists()]
    lacking = [(r, tf) for r, tf in missing if r in required]
    if len(missing) == len(series) or (lacking and not any(r in required for r, _ in set(series) - set(missing))):
        log.warning("no warmup history in %s (build it with `pine warmup build`)", cache_dir)
        return Warmup(layout, seconds=time.monotonic() - started)
    if lacking:
        raise WarmupError("warmup history missing for required feed(s): " + "; ".join(
            f"{feed_label(r, tf, layout.symbols)} ({r} {tf}): {cache_path(cache_dir, r, tf)}" for r, tf in lacking)
            + " — build it with `pine warmup build`")
    gone = sorted({r for r, _ in missing})
    if gone:
        log.warning("no warmup history for optional reference root(s) %s: their features take neutral defaults",
                    " ".join(gone))
        layout = layout.without(gone)
        series = needed_series(scfg, layout)
    return _read(cache_dir, scfg, layout, series, built_from, started, stop)


def lookback_windows(scfg: StrategyConfig) -> dict[str, timedelta]:
    """How far back hourly and minute warmup bars go."""
    return {"hourly": timedelta(days=scfg.warmup.hourly_days), "1min": timedelta(days=scfg.warmup.minute_days)}


def select_warmup(series: Mapping[tuple[str, str], Sequence[Bar]], scfg: StrategyConfig,
                  handover: datetime) -> dict[tuple[str, str], list[Bar]]:
    """The warmup bars of each series (time-ordered bars): those ending by ``handover`` within its lookback."""
    windows = lookback_windows(scfg)
    out: dict[tuple[str, str], list[Bar]] = {}
    for (root, tf), bars in series.items():
        if tf == "daily":
            kept = [b for b in bars if b.end <= handover]
            out[(root, tf)] = kept[-scfg.warmup.daily_bars:] if scfg.warmup.daily_bars else []
        else:
            out[(root, tf)] = [b for b in bars if handover - windows[tf] < b.end <= handover]
    return out


def _read(cache_dir: Path, scfg: StrategyConfig, layout: FeedLayout, series: list[tuple[str, str]],
          built_from: str | None, started: float, stop: Callable[[], bool]) -> Warmup:
    windows = lookback_windows(scfg)
    ends: dict[tuple[str, str], datetime] = {}
    loaded: dict[tuple[str, str], list[Bar]] = {}
    try:
        for key in series:
            path = cache_path(cache_dir, *key)
            through = complete_through(path)
            if key[1] == "daily" or through is None:
                loaded[key] = read_bar_list(path)
                through = through or (loaded[key][-1].end if loaded[key] else None)
            if through is not None:
                ends[key] = through
    except BarCacheError as exc:
        raise WarmupError(f"unusable warmup cache: {exc}") from None
    if not ends:
        return Warmup(layout, seconds=time.monotonic() - started)
    handover = min(ends.values())
    late = {feed_label(r, tf, layout.symbols): t for (r, tf), t in ends.items() if t - handover > timedelta(days=1)}
    if late:
        log.warning("warmup caches end at different times; handing over at the earliest, %s (later: %s)",
                    handover.isoformat(), ", ".join(f"{k} {v.isoformat()}" for k, v in sorted(late.items())))
    rows: dict[tuple[str, str], list[Bar]] = {}
    for key in series:
        if stop():
            break
        if key in loaded:
            rows[key] = loaded[key]
            continue
        try:
            rows[key] = read_bar_list(cache_path(cache_dir, *key), ends_after=handover - windows[key[1]])
        except BarCacheError as exc:
            raise WarmupError(f"unusable warmup cache: {exc}") from None
    bars = select_warmup(rows, scfg, handover)
    return Warmup(layout, "cache", handover, bars, built_from, time.monotonic() - started)
