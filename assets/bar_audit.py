"""Bar audit: the recorded bars of one symbol (its warmup caches) against bars recomputed from the recorded
trades (the DBN archive, replayed through the hub's aggregator by ``hub.history.bars_from_archive``).

Compared where both cover the same time: from the first recomputed bar through the earlier of the
two completeness instants, per timeframe, on open, high, low, close, volume and contract. The trade
count is left out: caches built from Databento OHLCV count source records, not trades.

A second check compares what the hub actually published, the Redis streams ``market:{ROOT}:{tf}:stream``
(entry id = bar start in ms, ``pine.bus``), with the bars of the recorded trades over one CME trading
day: by default the last session the trades cover. A bar's published version is its latest entry (a
correction or the complete version of a partial bar is appended after the original). A Redis that
cannot be read fails the check, saying so.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations as live types.

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field
from redis import Redis, RedisError

from assets.warmup_cache import symbol_partitions
from hub.history import HistoryError, archive_files, bars_from_archive
from orchestration.resources import PineConfigResource, RedisResource
from pine import redis_names
from pine.bar_cache import BarCacheError, cache_path, complete_through, read_bar_list
from pine.bars import TIMEFRAMES, Bar, BarFormatError
from pine.bus import BAR_FIELD
from pine.config.schema import PineConfig
from pine.redis_server import RedisUnavailableError
from pine.sessions import SessionCalendar

MATCH = "recorded_bars_match_trades"
PUBLISHED = "published_bars_match_trades"
_LISTED = 20
_PAGE = 5_000  # stream entries per XRANGE call


class BarAuditConfig(dg.Config):
    """Which trading day's published bars to audit."""

    trading_day: str | None = Field(
        default=None,
        description="CME trading day (YYYY-MM-DD) whose Redis stream bars are compared with the recorded trades; "
                    "default: the last session the recorded trades cover",
    )


def _values(b: Bar) -> tuple[object, ...]:
    return b.end, b.open, b.high, b.low, b.close, b.volume, b.contract_symbol


def bar_differences(recorded: Sequence[Bar], recomputed: Sequence[Bar], since: datetime,
                    through: datetime, *, source: str = "recorded") -> list[str]:
    """Bars of one timeframe from ``since`` through ``through`` that are missing, extra or different.

    ``source`` names where ``recorded`` comes from in the messages ("recorded", "published").
    """
    def window(bars: Sequence[Bar]) -> dict[datetime, Bar]:
        return {b.timestamp: b for b in bars if b.timestamp >= since and b.end <= through}

    have, want = window(recorded), window(recomputed)
    out = []
    for ts in sorted(have.keys() | want.keys()):
        got, expected = have.get(ts), want.get(ts)
        if got is None:
            out.append(f"{ts.isoformat()}: recomputed from the trades but not {source}")
        elif expected is None:
            out.append(f"{ts.isoformat()}: {source} but no trade supports it")
        elif _values(got) != _values(expected):
            out.append(f"{ts.isoformat()}: {source} {_values(got)[1:]} ≠ trades {_values(expected)[1:]}")
    return out


def published_bars(client: Redis, root: str, timeframe: str, since: datetime,
                   through: datetime) -> tuple[list[Bar], list[str]]:
    """The latest version of every bar starting at or after ``since`` in the root's stream, and the unreadable
    entries with ids from ``since`` to ``through``.

    Read to the stream's end: a correction is appended after the stream's top, wherever its bar starts.
    """
    stream = redis_names.stream(root, timeframe)
    versions: dict[datetime, Bar] = {}
    unreadable: list[str] = []
    cursor = redis_names.bar_stream_id(since)
    last_ms = int(through.timestamp() * 1000)
    while True:
        entries = client.xrange(stream, min=cursor, max="+", count=_PAGE)
        for entry_id, fields in entries:
            try:
                bar = Bar.from_json(fields.get(BAR_FIELD) or "")
            except BarFormatError as exc:
                if int(entry_id.partition("-")[0]) < last_ms:
                    unreadable.append(f"{timeframe} entry {entry_id}: not a bar ({exc})")
                continue
            versions[bar.timestamp] = bar  # entries come in id order: a later version replaces the earlier
        if len(entries) < _PAGE:
            return [versions[ts] for ts in sorted(versions) if ts >= since], unreadable
        ms, _, seq = entries[-1][0].partition("-")
        cursor = f"{ms}-{int(seq) + 1}"


def session_window(calendar: SessionCalendar, day: date) -> tuple[datetime, datetime]:
    """(start, end) of trading day ``day``'s session, UTC."""
    end = calendar.session_end(datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(calendar.timezone)))
    return calendar.session_bounds(end - timedelta(microseconds=1))


def _listing(items: list[str]) -> dg.MetadataValue:
    more = f"\n- … and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return dg.MetadataValue.md("\n".join(f"- `{x}`" for x in items[:_LISTED]) + more or "none")


def _published_check(redis_resource: RedisResource, cfg: PineConfig, root: str, recomputed: dict[str, list[Bar]],
                     since: datetime, through: datetime, day: date) -> tuple[dg.AssetCheckResult, dict[str, int]]:
    """The published-bars check over ``since``–``through`` (trading day ``day``); the bars compared per timeframe."""
    meta: dict[str, object] = {"trading_day": day.isoformat(), "from": since.isoformat(),
                               "through": through.isoformat()}
    try:
        client = redis_resource.client(cfg)
    except RedisUnavailableError as exc:
        return _unreadable(exc, meta), {}
    try:
        published = {tf: published_bars(client, root, tf, since, through) for tf in TIMEFRAMES}
    except RedisError as exc:
        return _unreadable(exc, meta), {}
    finally:
        client.close()
    problems = [u for _, unreadable in published.values() for u in unreadable]
    counts = {}
    for tf in TIMEFRAMES:
        bars = published[tf][0]
        counts[tf] = sum(1 for b in bars if b.end <= through)
        problems += [f"{tf} {d}" for d in bar_differences(bars, recomputed.get(tf, []), since, through,
                                                         source="published")]
        if bars and bars[0].timestamp > since:
            meta[f"first_published_{tf}"] = bars[0].timestamp.isoformat()
    return dg.AssetCheckResult(
        check_name=PUBLISHED, passed=not problems,
        description=f"{len(problems)} published bar difference(s) on {day}" if problems else None,
        metadata={**meta, "differences": len(problems), **{f"published_{tf}": n for tf, n in counts.items()},
                  "examples": _listing(problems)},
    ), counts


def _unreadable(exc: Exception, meta: dict[str, object]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=PUBLISHED, passed=False,
        description=f"Redis streams unreadable, published bars not audited: {exc} — start Redis or set REDIS_URL "
                    "(or the redis resource's url), then materialise again",
        metadata={**meta, "redis_error": str(exc)},
    )


@dg.asset(
    group_name="market_data",
    kinds={"parquet", "dbn"},
    partitions_def=symbol_partitions,
    deps=["warmup_cache"],
    check_specs=[
        dg.AssetCheckSpec(MATCH, asset="bar_audit", description="recorded bars equal bars from the trades"),
        dg.AssetCheckSpec(PUBLISHED, asset="bar_audit",
                          description="the day's bars in the Redis streams equal bars from the trades"),
    ],
)
def bar_audit(context: dg.AssetExecutionContext, config: BarAuditConfig, pine_config: PineConfigResource,
              redis: RedisResource) -> dg.MaterializeResult:
    """One symbol's cached and published bars compared with the bars its recorded trades make, per timeframe."""
    root = context.partition_key
    cfg = pine_config.load(verify_contract_map=False)
    calendar = cfg.sessions.calendar()
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    try:
        recorded = {tf: read_bar_list(cache_path(cache_dir, root, tf)) for tf in TIMEFRAMES}
        cached_through = complete_through(cache_path(cache_dir, root, "daily"))
        recomputed = bars_from_archive(archive_files([cfg.runtime_path(cfg.warmup.archive_dir)]), [root], calendar)
    except (BarCacheError, HistoryError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    starts = [b.timestamp for bars in recomputed.bars.values() for b in bars]
    ends = [t for t in (cached_through, recomputed.complete_through) if t is not None]
    if not starts or not ends:
        raise dg.Failure(f"{root}: no recorded trades to audit against", allow_retries=False)
    since, through = min(starts), min(ends)
    differences = {tf: bar_differences(recorded[tf], recomputed.bars.get((root, tf), []), since, through)
                   for tf in TIMEFRAMES}
    listed = [f"{tf} {d}" for tf, diffs in differences.items() for d in diffs]
    compared = {tf: sum(1 for b in recorded[tf] if b.timestamp >= since and b.end <= through) for tf in TIMEFRAMES}
    context.log.info(f"{root}: {len(listed)} difference(s) between {since} and {through}")
    # The published day: the trading day asked for, else the last one the trades cover (complete or not).
    traded_through = recomputed.complete_through or through
    try:
        day = (date.fromisoformat(config.trading_day) if config.trading_day
               else calendar.trading_day(traded_through - timedelta(microseconds=1)))
    except ValueError:
        raise dg.Failure(f"trading_day must be YYYY-MM-DD, got {config.trading_day!r}", allow_retries=False) from None
    day_start, day_end = session_window(calendar, day)
    day_from, day_through = max(day_start, since), min(day_end, traded_through)
    if day_from >= day_through:
        raise dg.Failure(f"{root}: the recorded trades cover {since.isoformat()} to {traded_through.isoformat()}, "
                         f"not trading day {day}", allow_retries=False)
    recomputed_bars = {tf: recomputed.bars.get((root, tf), []) for tf in TIMEFRAMES}
    published, published_counts = _published_check(redis, cfg, root, recomputed_bars, day_from, day_through, day)
    return dg.MaterializeResult(
        metadata={
            "audited_from": since.isoformat(),
            "audited_through": through.isoformat(),
            **{f"compared_{tf}": dg.MetadataValue.int(n) for tf, n in compared.items()},
            "trades_replayed": recomputed.detail,
            "published_day": day.isoformat(),
            **{f"published_{tf}": dg.MetadataValue.int(n) for tf, n in published_counts.items()},
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=MATCH, passed=not listed,
                description=f"{len(listed)} bar difference(s)" if listed else None,
                metadata={"differences": len(listed), **{f"differences_{tf}": len(d) for tf, d in differences.items()},
                          "examples": _listing(listed)},
            ),
            published,
        ],
    )
