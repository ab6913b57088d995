"""Bar audit: the recorded bars of one symbol (its warmup caches) against bars recomputed from the recorded
trades (the DBN archive, replayed through the hub's aggregator by ``hub.history.bars_from_archive``).

Compared where both cover the same time: from the first recomputed bar through the earlier of the
two completeness instants, per timeframe, on open, high, low, close, volume and contract. The trade
count is left out: caches built from Databento OHLCV count source records, not trades.
"""

# No `from __future__ import annotations`: Dagster reads resource annotations as live types.

from collections.abc import Sequence
from datetime import datetime

import dagster as dg

from assets.warmup_cache import symbol_partitions
from hub.history import HistoryError, archive_files, bars_from_archive
from orchestration.resources import PineConfigResource
from pine.bar_cache import BarCacheError, cache_path, complete_through, read_bar_list
from pine.bars import TIMEFRAMES, Bar

MATCH = "recorded_bars_match_trades"
_LISTED = 20


def _values(b: Bar) -> tuple[object, ...]:
    return b.end, b.open, b.high, b.low, b.close, b.volume, b.contract_symbol


def bar_differences(recorded: Sequence[Bar], recomputed: Sequence[Bar], since: datetime,
                    through: datetime) -> list[str]:
    """Bars of one timeframe ending in (``since``, ``through``] that are missing, extra or different."""
    def window(bars: Sequence[Bar]) -> dict[datetime, Bar]:
        return {b.timestamp: b for b in bars if b.timestamp >= since and b.end <= through}

    have, want = window(recorded), window(recomputed)
    out = []
    for ts in sorted(have.keys() | want.keys()):
        got, expected = have.get(ts), want.get(ts)
        if got is None:
            out.append(f"{ts.isoformat()}: recomputed from the trades but not recorded")
        elif expected is None:
            out.append(f"{ts.isoformat()}: recorded but no trade supports it")
        elif _values(got) != _values(expected):
            out.append(f"{ts.isoformat()}: recorded {_values(got)[1:]} ≠ trades {_values(expected)[1:]}")
    return out


@dg.asset(
    group_name="market_data",
    kinds={"parquet", "dbn"},
    partitions_def=symbol_partitions,
    deps=["warmup_cache"],
    check_specs=[dg.AssetCheckSpec(MATCH, asset="bar_audit", description="recorded bars equal bars from the trades")],
)
def bar_audit(context: dg.AssetExecutionContext, pine_config: PineConfigResource) -> dg.MaterializeResult:
    """One symbol's cached bars compared with the bars its recorded trades make, timeframe by timeframe."""
    root = context.partition_key
    cfg = pine_config.load(verify_contract_map=False)
    cache_dir = cfg.runtime_path(cfg.warmup.cache_dir)
    try:
        recorded = {tf: read_bar_list(cache_path(cache_dir, root, tf)) for tf in TIMEFRAMES}
        cached_through = complete_through(cache_path(cache_dir, root, "daily"))
        recomputed = bars_from_archive(archive_files([cfg.runtime_path(cfg.warmup.archive_dir)]), [root],
                                       cfg.sessions.calendar())
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
    more = f"\n- … and {len(listed) - _LISTED} more" if len(listed) > _LISTED else ""
    compared = {tf: sum(1 for b in recorded[tf] if b.timestamp >= since and b.end <= through) for tf in TIMEFRAMES}
    context.log.info(f"{root}: {len(listed)} difference(s) between {since} and {through}")
    return dg.MaterializeResult(
        metadata={
            "audited_from": since.isoformat(),
            "audited_through": through.isoformat(),
            **{f"compared_{tf}": dg.MetadataValue.int(n) for tf, n in compared.items()},
            "trades_replayed": recomputed.detail,
        },
        check_results=[dg.AssetCheckResult(
            check_name=MATCH, passed=not listed,
            description=f"{len(listed)} bar difference(s)" if listed else None,
            metadata={"differences": len(listed), **{f"differences_{tf}": len(d) for tf, d in differences.items()},
                      "examples": dg.MetadataValue.md("\n".join(f"- `{x}`" for x in listed[:_LISTED]) + more
                                                      or "none")},
        )],
    )
