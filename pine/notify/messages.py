"""The notifications themselves: entry, exit, process started/stopped, emergencies and status.

Builders take plain values, or the trade records of ``pine.trade_records`` (what the workers record).
Event ids are deterministic where the event is (a trade, an order, a stream entry), so that the
same event enqueued by two processes or twice after a restart is one message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from pine.notify.events import BLUE, GREY, ORANGE, RED, EmbedField, Kind, Message, pnl_color
from pine.trade_records import FillRecord, TradeRecord


def money(x: float) -> str:
    """``+$1,180.00`` / ``-$45.50`` (futures P&L is in the contract currency, USD for every CME root here)."""
    return f"{'-' if x < 0 else '+'}${abs(x):,.2f}"


def price(x: float | None) -> str:
    """A price as quoted: no exponent, no trailing zeros (``0.66005``, ``5,000.25``)."""
    if x is None:
        return "-"
    text = f"{x:,.8f}".rstrip("0").rstrip(".")
    return text or "0"


def duration(d: timedelta) -> str:
    """``2d 3h 05m`` / ``3h 05m`` / ``7m``."""
    minutes = int(d.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {mins:02d}m"
    if hours:
        return f"{hours}h {mins:02d}m"
    return f"{mins}m"


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def ml_verdict(score: float | None, *, ml_enabled: bool, shadow: bool = False) -> str | None:
    """The entry's ``ML score`` field: the veto model's score, or why there is none; None where the symbol has
    no ML veto at all (the field is left out)."""
    if score is not None:
        return f"{score:.3f}" + (" (shadow mode: recorded, never vetoes)" if shadow else "")
    # An ML-enabled symbol enters without a score only when no champion model is loaded (a model that is not
    # ready skips the signal).
    return "no model: no veto" if ml_enabled else None


def entry_message(fill: FillRecord, *, ml_score: float | None = None, ml_enabled: bool = False,
                  ml_shadow: bool = False) -> Message:
    """A position opened (the entry order filled); ``ml_enabled``/``ml_shadow``: the symbol's ML veto settings."""
    direction = "LONG" if fill.side == "buy" else "SHORT"
    fields = [
        EmbedField("Strategy", fill.strategy), EmbedField("Symbol", fill.symbol),
        EmbedField("Contract", fill.contract or "-"), EmbedField("Side", direction),
        EmbedField("Size", str(fill.quantity)), EmbedField("Price", price(fill.fill_price)),
        EmbedField("Signal price", price(fill.requested_price)), EmbedField("Filled", _time(fill.fill_time)),
    ]
    verdict = ml_verdict(ml_score, ml_enabled=ml_enabled, shadow=ml_shadow)
    if verdict is not None:
        fields.append(EmbedField("ML score", verdict))
    return Message(
        event_id=f"entry:{fill.client_order_id}", kind=Kind.ENTRY, strategy=fill.strategy, color=BLUE,
        title=f"📈 ENTRY {fill.symbol} {direction} {fill.quantity} @ {price(fill.fill_price)}",
        fields=tuple(fields),
    )


def exit_message(trade: TradeRecord, tick_size: float | None) -> Message:
    """A position closed: P&L in currency and ticks, duration, exit price and reason."""
    sign = 1 if trade.direction == "long" else -1
    ticks = (trade.exit_price - trade.entry_price) * sign / tick_size if tick_size else None
    fields = [
        EmbedField("Strategy", trade.strategy), EmbedField("Symbol", trade.symbol),
        EmbedField("Contract", trade.contract or "-"),
        EmbedField("Side", trade.direction.upper()), EmbedField("Size", str(trade.size)),
        EmbedField("Net P&L", money(trade.net_pnl)),
        EmbedField("Ticks", "-" if ticks is None else f"{ticks:+.1f}"),
        EmbedField("Gross / commission", f"{money(trade.pnl)} / ${trade.commission:,.2f}"),
        EmbedField("Entry → exit", f"{price(trade.entry_price)} → {price(trade.exit_price)}"),
        EmbedField("Duration", f"{duration(trade.exit_time - trade.entry_time)} ({trade.bars_held} daily bars)"),
        EmbedField("Exit reason", trade.exit_reason or "-"), EmbedField("Closed", _time(trade.exit_time)),
    ]
    if trade.ml_score is not None:
        fields.append(EmbedField("ML score", f"{trade.ml_score:.3f}"))
    icon = "✅" if trade.net_pnl >= 0 else "🔻"
    return Message(
        event_id=f"exit:{trade.trade_id}", kind=Kind.EXIT, strategy=trade.strategy, color=pnl_color(trade.net_pnl),
        title=f"{icon} EXIT {trade.symbol} {trade.direction.upper()} {money(trade.net_pnl)}",
        fields=tuple(fields),
    )


def process_message(component: str, run_id: str, *, started: bool, detail: str, strategy: str | None = None
                    ) -> Message:
    """``component`` (hub or worker:NAME) started or stopped normally."""
    what = "started" if started else "stopped"
    return Message(
        event_id=f"{what}:{component}:{run_id}", kind=Kind.SYSTEM, strategy=strategy,
        color=BLUE if started else GREY, title=f"{'🟢' if started else '⚪'} {component} {what}", description=detail,
    )


def failure_message(component: str, run_id: str, *, status: str, detail: str, strategy: str | None = None
                    ) -> Message:
    """``component`` stopped because it failed or refused to trade (an emergency)."""
    return Message(
        event_id=f"down:{component}:{run_id}", kind=Kind.EMERGENCY, strategy=strategy, color=RED,
        title=f"🚨 {component} {status}", description=detail,
    )


def emergency_message(event_id: str, title: str, description: str = "", *, fields: Mapping[str, str] | None = None,
                      strategy: str | None = None, severe: bool = True, occurred_at: float | None = None) -> Message:
    """Daily stop, killswitch change, dead process, data gap, failed order, …"""
    extra = {} if occurred_at is None else {"occurred_at": occurred_at}
    return Message(
        event_id=event_id, kind=Kind.EMERGENCY, strategy=strategy, color=RED if severe else ORANGE,
        title=f"{'🚨' if severe else '⚠️'} {title}", description=description,
        fields=tuple(EmbedField(k, v or "-") for k, v in (fields or {}).items()), **extra,
    )


def status_message(event_id: str, lines: Iterable[str], fields: Mapping[str, str]) -> Message:
    """The state of the system, on request (``pine notify status``)."""
    return Message(
        event_id=event_id, kind=Kind.STATUS, color=BLUE, title="ℹ️ Pine status", description="\n".join(lines),
        fields=tuple(EmbedField(k, v) for k, v in fields.items()),
    )


def is_severe(kind: str) -> bool:
    """Risk events that need a person now (the rest are warnings)."""
    return kind in {"daily_stop_hit", "order_failed", "order_in_doubt", "position_mismatch", "crash_loop"}

