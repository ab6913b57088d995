"""The trading day's summary: per strategy, the trades that closed in one CME trading day.

Materialised by the ``daily_summary`` schedule at the session close (17:00 America/Chicago); the
numbers are the run's metadata. When the run ends, passed or failed, the ``send_daily_summary``
sensors (``orchestration.sensors``) send the Discord summary with :func:`send_summary`: the figures
and the day's reconciliation result (:func:`reconciliation_line`). With Dagster running this is the
one sender of the daily summary (``notifications.daily_summary_sender``, ``pine.notify.summary``).
"""

# No `from __future__ import annotations`: Dagster reads the op's config and resource annotations
# as live types when the decorator runs.

import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from orchestration.resources import PineConfigResource
from pine.config.schema import PineConfig
from pine.notify.notifier import Notifier
from pine.notify.summary import day_stats, summary_message
from pine.sessions import SessionCalendar
from pine.trade_stats import TradeStats, stats_by_strategy
from workers.trades_db import open_reader


def summarize_day(db_path: Path, day: date) -> tuple[TradeStats, dict[str, TradeStats]]:
    """(all strategies, per strategy) over the trades of trading day ``day``; empty when there is no DB yet."""
    if not db_path.exists():
        return TradeStats(), {}
    conn = open_reader(db_path)
    try:
        return stats_by_strategy(conn, "trading_day = ?", (day.isoformat(),))
    finally:
        conn.close()


def last_closed_trading_day(calendar: SessionCalendar, now: datetime) -> date:
    """The latest Monday–Friday whose session close is at or before ``now``."""
    tz = ZoneInfo(calendar.timezone)
    day = now.astimezone(tz).date()
    if now < datetime.combine(day, calendar.close, tzinfo=tz):
        day -= timedelta(days=1)
    while day.weekday() >= 5:  # CME sessions close Monday to Friday
        day -= timedelta(days=1)
    return day


def summary_table(per_strategy: dict[str, TradeStats]) -> str:
    """Markdown table of the per-strategy figures of :func:`summarize_day`."""
    if not per_strategy:
        return "No closed trades."
    rows = ["| strategy | trades | win rate | net P&L | commission | best | worst |",
            "|---|---:|---:|---:|---:|---|---|"]
    for name, st in per_strategy.items():
        best = f"{st.best.net_pnl:,.2f} ({st.best.symbol})" if st.best else "-"
        worst = f"{st.worst.net_pnl:,.2f} ({st.worst.symbol})" if st.worst else "-"
        rows.append(f"| {name} | {st.trades} | {st.win_rate or 0:.0%} | {st.net_pnl:,.2f} | {st.commission:,.2f} "
                    f"| {best} | {worst} |")
    return "\n".join(rows)


class DailySummaryConfig(dg.Config):
    """Which trading day to summarise."""

    trading_day: str | None = Field(
        default=None, description="YYYY-MM-DD; default: the latest trading day whose session has closed"
    )


@dg.asset(group_name="operations", kinds={"sqlite"})
def daily_summary(
    context: dg.AssetExecutionContext, config: DailySummaryConfig, pine_config: PineConfigResource
) -> dg.MaterializeResult:
    """Per strategy: trades, win rate, net P&L, commission, best and worst trade of one CME trading day."""
    cfg = pine_config.load(verify_contract_map=False)
    calendar = cfg.sessions.calendar()
    try:
        day = date.fromisoformat(config.trading_day) if config.trading_day else None
    except ValueError:
        raise dg.Failure(f"trading_day must be YYYY-MM-DD, got {config.trading_day!r}", allow_retries=False) from None
    day = day or last_closed_trading_day(calendar, datetime.now(ZoneInfo(calendar.timezone)))
    try:
        total, per_strategy = summarize_day(cfg.trades_db_path, day)
    except sqlite3.Error as exc:
        raise dg.Failure(f"cannot read the trades of {day} from {cfg.trades_db_path}: {exc}") from None
    context.log.info(f"trading day {day}: {total.trades} trades across {len(per_strategy)} strategies")
    return dg.MaterializeResult(
        metadata={
            "trading_day": day.isoformat(),
            "trades": total.trades,
            "net_pnl": round(total.net_pnl, 2),
            "strategies": dg.MetadataValue.md(summary_table(per_strategy)),
            "by_strategy": dg.MetadataValue.json({name: st.to_dict() for name, st in per_strategy.items()}),
            "trades_db": dg.MetadataValue.path(str(cfg.trades_db_path)),
        }
    )


def run_trading_day(instance: dg.DagsterInstance, run: dg.DagsterRun) -> date | None:
    """The trading day a ``daily_summary_job`` run covered: its partition (the schedule sets it), else the
    ``trading_day`` its ``daily_summary`` materialisation recorded; None if neither is known."""
    key = run.tags.get("dagster/partition")
    if key is None:
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        for record in records:
            materialization = record.asset_materialization
            if materialization is not None and materialization.asset_key == dg.AssetKey("daily_summary"):
                key = str(materialization.metadata["trading_day"].value)
    try:
        return date.fromisoformat(key) if key else None
    except ValueError:
        return None


def reconciliation_line(instance: dg.DagsterInstance, run_id: str) -> str:
    """One line on the ``daily_reconciliation`` checks evaluated in run ``run_id`` (for the Discord summary)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    checks: list[dg.AssetCheckEvaluation] = []
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.event_specific_data if event is not None else None
        if isinstance(data, dg.AssetCheckEvaluation) and data.asset_key == dg.AssetKey("daily_reconciliation"):
            checks.append(data)
    if not checks:
        return f"⚠️ Reconciliation did not complete (Dagster run {run_id[:8]}: see its logs)"
    failed = [e for e in checks if not e.passed]
    if not failed:
        return f"✅ Reconciliation: {len(checks)} of {len(checks)} checks passed"
    detail = ", ".join(f"{e.check_name} ({_mismatches(e)} mismatches)" for e in failed)
    return f"❌ Reconciliation: {len(failed)} of {len(checks)} checks failed: {detail}"


def _mismatches(evaluation: dg.AssetCheckEvaluation) -> object:
    value = evaluation.metadata.get("mismatches")
    return value.value if value is not None else "?"


def send_summary(cfg: PineConfig, day: date, reconciliation: str) -> str:
    """Enqueue ``day``'s Discord summary (trades DB figures and ``reconciliation``) in the shared outbox and
    deliver it for a few seconds (the workers' senders deliver anything left); says what happened.

    The outbox's event id ``daily_summary:{day}`` makes it one message even if a worker sent it first.
    """
    notifier = Notifier(cfg, "dagster", client=None, watch=False)
    if not notifier.enabled:
        return f"summary of {day} not sent: no Discord webhook configured"
    notifier.start()
    try:
        total, per = day_stats(cfg.trades_db_path, day)
        added = notifier.publish(summary_message(day, total, per, strategies=list(cfg.enabled_strategies()),
                                                 reconciliation=reconciliation))
    finally:
        notifier.close()
    if added:
        return f"summary of {day} sent ({total.trades} trades; {reconciliation})"
    return f"summary of {day} not sent again: already in the outbox (or daily_summary notifications are off)"
