"""Warmup caches: per symbol, the parquet bar caches workers warm up from (``hub.history.build_caches``).

Built from Databento Historical when a key is configured, else from the local DBN archive (what
``pine synth`` and ``pine hub --record`` write). Three checks run with every materialisation:
gaps (missing sessions, missing trading hours inside the cached range, both against the root's CME
calendar: holidays and early closes are not gaps), duplicated bars, and session alignment (daily bars
end at the 17:00 America/Chicago close).
"""

# No `from __future__ import annotations`: Dagster reads resource annotations as live types.

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import dagster as dg
import yaml

from hub.history import HistoryError, build_caches
from orchestration.resources import PineConfigResource
from pine.bar_cache import BarCacheError, cache_path, read_bar_list
from pine.bars import TIMEFRAMES, Bar
from pine.config.loader import EXAMPLE_CONFIG
from pine.holidays import MarketCalendar
from pine.sessions import SessionCalendar

GAPS = "no_gaps"
DUPLICATES = "no_duplicate_bars"
ALIGNMENT = "daily_bars_end_at_session_close"
_LISTED = 10  # problems named in a check's metadata; the count covers them all


def _shipped_instruments() -> list[str]:
    # Partitions are fixed when the code location loads, which reads no user config (see
    # orchestration.definitions): they are the shipped config's instruments. A root missing from
    # the running config fails its partition with a clear message.
    with EXAMPLE_CONFIG.open() as fh:
        return sorted(yaml.safe_load(fh)["instruments"])


symbol_partitions = dg.StaticPartitionsDefinition(_shipped_instruments())


@dg.asset(
    group_name="market_data",
    kinds={"parquet"},
    partitions_def=symbol_partitions,
    check_specs=[
        # A warning: an illiquid root may have a quiet hour without a trade (so without a bar), and ad-hoc
        # closures (a hurricane) are not in the holiday calendar.
        dg.AssetCheckSpec(GAPS, asset="warmup_cache", description="no missing session or trading hour in the range"),
        dg.AssetCheckSpec(DUPLICATES, asset="warmup_cache", description="no bar start appears twice in a timeframe"),
        dg.AssetCheckSpec(ALIGNMENT, asset="warmup_cache", description="daily bars span one 17:00 Chicago session"),
    ],
)
def warmup_cache(context: dg.AssetExecutionContext, pine_config: PineConfigResource) -> dg.MaterializeResult:
    """The 1min, hourly and daily parquet caches of one root, rebuilt from Databento (key set) or the DBN archive."""
    root = context.partition_key
    cfg = pine_config.load(verify_contract_map=False)
    if root not in cfg.instruments:
        raise dg.Failure(f"{root} is not an instrument of the Pine config", allow_retries=False)
    try:
        build = build_caches(cfg, [root])
    except HistoryError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    try:
        bars = {tf: read_bar_list(cache_path(cache_dir, root, tf)) for tf in TIMEFRAMES}
    except BarCacheError as exc:
        raise dg.Failure(description=str(exc)) from None
    context.log.info(f"{root}: {build.bars} bars from {build.source}, complete through {build.complete_through}")
    calendar = cfg.sessions.calendar()
    market = MarketCalendar.for_root(root)
    daily = bars["daily"]
    return dg.MaterializeResult(
        metadata={
            "source": build.source,
            "market_calendar": market.name,
            "detail": build.detail or "-",
            "complete_through": build.complete_through.isoformat() if build.complete_through else "-",
            "first_session": _session(calendar, daily[0]) if daily else "-",
            "last_session": _session(calendar, daily[-1]) if daily else "-",
            **{f"bars_{tf}": dg.MetadataValue.int(len(bars[tf])) for tf in TIMEFRAMES},
            "preview": dg.MetadataValue.md(daily_preview(daily[-5:])),
            "cache_dir": dg.MetadataValue.path(str(cache_dir / root)),
        },
        check_results=check_results(bars, calendar, market),
    )


def check_results(bars: dict[str, list[Bar]], calendar: SessionCalendar,
                  market: MarketCalendar) -> list[dg.AssetCheckResult]:
    """The three warmup-cache checks over one root's bars per timeframe (``market``: the root's CME calendar)."""
    missing_sessions = missing_daily_sessions(bars["daily"], calendar, market)
    missing_hours = missing_hourly_bars(bars["hourly"], market)
    holidays = holidays_in_range(bars["daily"], calendar, market)
    duplicates = {tf: duplicated_starts(bars[tf]) for tf in TIMEFRAMES}
    misaligned = misaligned_daily_bars(bars["daily"], calendar)
    n_dup = sum(len(v) for v in duplicates.values())
    return [
        dg.AssetCheckResult(
            check_name=GAPS,
            passed=not missing_sessions and not missing_hours,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{len(missing_sessions)} missing session(s), {len(missing_hours)} missing hour(s)",
            metadata={"missing_sessions": len(missing_sessions), "missing_hours": len(missing_hours),
                      "examples": _listing([*missing_sessions, *missing_hours]),
                      "market_calendar": market.name, "holidays": _listing(holidays)},
        ),
        dg.AssetCheckResult(
            check_name=DUPLICATES,
            passed=not n_dup,
            description=f"{n_dup} duplicated bar(s)",
            metadata={"duplicates": n_dup, **{f"duplicates_{tf}": len(v) for tf, v in duplicates.items()},
                      "examples": _listing([f"{tf} {ts}" for tf, v in duplicates.items() for ts in v])},
        ),
        dg.AssetCheckResult(
            check_name=ALIGNMENT,
            passed=not misaligned,
            description=f"{len(misaligned)} daily bar(s) off the {calendar.close:%H:%M} {calendar.timezone} close",
            metadata={"daily_bars": len(bars["daily"]), "misaligned": len(misaligned),
                      "examples": _listing(misaligned)},
        ),
    ]


def missing_daily_sessions(daily: Sequence[Bar], calendar: SessionCalendar, market: MarketCalendar) -> list[str]:
    """Trading days of ``market`` between the first and last daily bar that have no bar (ISO trading days).

    A holiday is no gap; a bar on a day the market was closed (the synthetic market ignores holidays) is
    not one either.
    """
    if not daily:
        return []
    have = _trading_days(daily, calendar)
    return [day.isoformat() for day in market.trading_days(min(have), max(have)) if day not in have]


def missing_hourly_bars(hourly: Sequence[Bar], market: MarketCalendar) -> list[str]:
    """Trading hours of ``market`` between the first and last hourly bar that have no bar (ISO bar starts, UTC).

    Only hours the market is open for in full count: weekends, holidays, the maintenance halt and the
    hours after an early close are not gaps.
    """
    if not hourly:
        return []
    have = {b.timestamp for b in hourly}
    first, last = min(have), max(have)
    # A day either side: the sessions around the first and last bar, whatever their local dates.
    expected = market.full_hours(first.date() - timedelta(days=1), last.date() + timedelta(days=1))
    return [t.isoformat() for t in sorted(expected) if first < t <= last and t not in have]


def holidays_in_range(daily: Sequence[Bar], calendar: SessionCalendar, market: MarketCalendar) -> list[str]:
    """The weekdays between the first and last daily bar on which ``market`` is closed, with the holiday's name."""
    if not daily:
        return []
    have = _trading_days(daily, calendar)
    return [f"{day.isoformat()} {name}" for day, name in market.holidays(min(have), max(have)).items()]


def duplicated_starts(bars: Sequence[Bar]) -> list[str]:
    """Bar starts that appear more than once (ISO, UTC)."""
    seen: set[datetime] = set()
    dups = []
    for b in bars:
        if b.timestamp in seen:
            dups.append(b.timestamp.isoformat())
        seen.add(b.timestamp)
    return dups


def misaligned_daily_bars(daily: Sequence[Bar], calendar: SessionCalendar) -> list[str]:
    """Daily bars that are not exactly one session, start at one close and end at the next."""
    out = []
    for b in daily:
        start, end = calendar.session_bounds(b.end - timedelta(microseconds=1))
        if (b.timestamp, b.end) != (start, end):
            out.append(f"{b.timestamp.isoformat()} → {b.end.isoformat()}")
    return out


def daily_preview(daily: Sequence[Bar]) -> str:
    """Markdown table of daily bars."""
    rows = ["| session end (UTC) | open | high | low | close | volume | contract |",
            "|---|---:|---:|---:|---:|---:|---|"]
    rows += [f"| {b.end:%Y-%m-%d %H:%M} | {b.open:g} | {b.high:g} | {b.low:g} | {b.close:g} | {b.volume} "
             f"| {b.contract_symbol} |" for b in daily]
    return "\n".join(rows)


def _trading_days(daily: Sequence[Bar], calendar: SessionCalendar) -> set[date]:
    return {calendar.trading_day(b.end - timedelta(microseconds=1)) for b in daily}


def _session(calendar: SessionCalendar, daily_bar: Bar) -> str:
    return calendar.trading_day(daily_bar.end - timedelta(microseconds=1)).isoformat()


def _listing(items: list[str]) -> dg.MetadataValue:
    more = f"\n- … and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return dg.MetadataValue.md("\n".join(f"- `{i}`" for i in items[:_LISTED]) + more or "none")
