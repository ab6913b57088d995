"""The daily summary: one message per CME trading day, sent once however many workers run.

Figures (``pine.trade_stats``, from the trades DB): total net P&L, trades, win rate, profit
factor, best and worst trade, and the same per strategy.

When: a worker reports how far it has processed its bars (:meth:`SummaryClock.progress`, the end
of its latest bar). Passing a trading day's session close (17:00 America/Chicago) means every
trade it closed that day is in the DB (bars and trades are recorded in one transaction), and it
adds itself to the day's set in Redis. The worker that completes the set of enabled strategies
enqueues the summary. A dead or stuck worker must not hold it back: every notifier also looks at
the days waiting (:meth:`SummaryClock.check_pending`) and enqueues those that have waited longer
than ``notifications.summary_wait_minutes`` since the first worker passed the close, naming the
strategies not included.

Who sends (``notifications.daily_summary_sender``): with Dagster running (``auto``: its
``dagster_presence`` sensor keeps ``ops:dagster:alive`` in Redis; ``dagster``: always assumed),
Dagster's ``daily_summary`` job sends it at the close with the day's reconciliation, and the workers
hold the day back until ``summary_wait_minutes`` after its session close (in ``auto``, or until the
key expires); then, unless the outbox already holds it, they send it themselves: a dead Dagster
delays the summary, never loses it. A day
whose close is older than that (a replay of history) is the workers' at once, as with ``workers``.

Exactly once: the message's event id is ``daily_summary:{day}``, and the shared outbox ignores an
event id it already holds for that channel. Two workers completing the set at once, a restarted
worker passing old closes again, or the Dagster schedule enqueueing the same day: one message.
The unique key (rather than a Redis ``SET NX`` claim) makes claiming and enqueueing one atomic
insert: no claim can be taken by a process that then dies before enqueueing, and a Redis restart
without persistence cannot reopen a day already sent.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

import redis

from pine import redis_names
from pine.config.schema import SummarySender
from pine.notify.events import EmbedField, Kind, Message, pnl_color
from pine.notify.messages import money
from pine.sessions import SessionCalendar
from pine.trade_stats import TradeRef, TradeStats, stats_by_strategy

log = logging.getLogger(__name__)

DAY_KEY_TTL_S: Final = 8 * 24 * 3600


def summary_event_id(day: date) -> str:
    """The one event id of ``day``'s summary."""
    return f"daily_summary:{day.isoformat()}"


def day_stats(db_path: Path, day: date) -> tuple[TradeStats, dict[str, TradeStats]]:
    """(all, per strategy) figures of the trades of trading day ``day``; zero when there is no DB yet."""
    if not db_path.exists():
        return TradeStats(), {}
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return stats_by_strategy(conn, "trading_day = ?", (day.isoformat(),))
    except sqlite3.OperationalError:
        return TradeStats(), {}  # no trades table yet: no worker has recorded anything
    finally:
        conn.close()


def _ratio(stats: TradeStats) -> str:
    if stats.profit_factor is not None:
        return f"{stats.profit_factor:.2f}"
    return "∞ (no losses)" if stats.gross_profit > 0 else "-"


def _trade(t: TradeRef | None, *, with_strategy: bool) -> str:
    if t is None:
        return "-"
    who = f" ({t.strategy})" if with_strategy else ""
    return f"{money(t.net_pnl)} {t.symbol}{who}"


def _line(stats: TradeStats) -> str:
    if not stats.trades:
        return "no trades"
    rate = f"{stats.win_rate:.0%}" if stats.win_rate is not None else "-"
    return (f"{stats.trades} trades · {money(stats.net_pnl)} · win {rate} · PF {_ratio(stats)}\n"
            f"best {_trade(stats.best, with_strategy=False)} · worst {_trade(stats.worst, with_strategy=False)}")


def summary_message(day: date, total: TradeStats, per: dict[str, TradeStats], *, strategies: Sequence[str],
                    missing: Sequence[str] = (), reconciliation: str | None = None,
                    occurred_at: float | None = None) -> Message:
    """The summary of ``day`` for ``strategies`` (every one gets a line; ``missing`` ones are flagged);
    ``reconciliation``: a line on the day's reconciliation (Dagster's summary has one)."""
    rate = f"{total.win_rate:.0%}" if total.win_rate is not None else "-"
    lines = [
        f"**{money(total.net_pnl)}** net · {total.trades} trades · win rate {rate} · profit factor {_ratio(total)}",
        f"Best {_trade(total.best, with_strategy=True)} · worst {_trade(total.worst, with_strategy=True)}",
    ]
    if missing:
        lines.append(f"⚠️ Not included (had not processed the close): {', '.join(missing)}")
    if reconciliation:
        lines.append(reconciliation)
    names = list(dict.fromkeys([*strategies, *per]))
    extra = {} if occurred_at is None else {"occurred_at": occurred_at}
    return Message(
        event_id=summary_event_id(day), kind=Kind.DAILY_SUMMARY, color=pnl_color(total.net_pnl),
        title=f"📊 Daily summary {day.isoformat()}: {money(total.net_pnl)}", description="\n".join(lines),
        fields=tuple(EmbedField(name, _line(per.get(name, TradeStats())), inline=False) for name in names), **extra,
    )


class SummaryClock:
    """Decides when a trading day's summary is enqueued (see the module docstring)."""

    def __init__(self, calendar: SessionCalendar, client: redis.Redis, required: Iterable[str], *,
                 enqueue: Callable[[date, list[str]], None], wait_s: float, strategy: str | None = None,
                 sender: SummarySender = "auto", sent: Callable[[date], bool] | None = None) -> None:
        """``sent(day)``: whether the day's summary is in the outbox already (Dagster may have sent it)."""
        self.calendar = calendar
        self.client = client
        self.required = sorted(required)
        self.enqueue = enqueue
        self.wait_s = wait_s
        self.strategy = strategy
        self.sender = sender
        self.sent = sent or (lambda day: False)
        self._next_close: datetime | None = None
        self._deferred: set[date] = set()  # days this process left to Dagster (to say so if it falls back)

    def progress(self, through: datetime) -> None:
        """This worker has processed every bar ending at or before ``through``; cheap unless a close is passed."""
        if self._next_close is None:
            self._next_close = self.calendar.session_end(through - timedelta(microseconds=1))
        while through >= self._next_close:
            close = self._next_close
            self._next_close = self.calendar.session_end(close)
            day = close.astimezone(ZoneInfo(self.calendar.timezone)).date()
            if day.weekday() < 5:  # CME sessions close Monday to Friday
                self._closed(day)

    def _closed(self, day: date) -> None:
        if self.strategy is None:
            return
        key = redis_names.notify_summary_closed(day)
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(key, self.strategy)
        pipe.expire(key, DAY_KEY_TTL_S)
        pipe.zadd(redis_names.NOTIFY_SUMMARY_PENDING, {day.isoformat(): time.time()}, nx=True)
        pipe.smembers(key)
        done = {_text(m) for m in pipe.execute()[-1]}
        if set(self.required) <= done and not self.defers(day, time.time()):
            self._send(day, [])

    def defers(self, day: date, now: float) -> bool:
        """Whether the workers leave ``day``'s summary to Dagster at ``now`` (see the module docstring)."""
        if self.sender == "workers":
            return False
        close = datetime.combine(day, self.calendar.close, tzinfo=ZoneInfo(self.calendar.timezone)).timestamp()
        if now >= close + self.wait_s:
            return False  # Dagster's turn is over (or, for a replayed day, never came)
        if self.sender == "auto" and not self.client.exists(redis_names.DAGSTER_ALIVE):
            return False
        self._deferred.add(day)
        return True

    def check_pending(self, now: float) -> None:
        """Enqueue the days that waited longer than ``wait_s`` for the slowest worker (or for Dagster)."""
        for raw, since in self.client.zrange(redis_names.NOTIFY_SUMMARY_PENDING, 0, -1, withscores=True):
            day = date.fromisoformat(_text(raw))
            if self.sent(day):  # Dagster's job (or another process) has enqueued it
                self.client.zrem(redis_names.NOTIFY_SUMMARY_PENDING, day.isoformat())
                self._deferred.discard(day)
                continue
            if self.defers(day, now):
                continue
            done = {_text(m) for m in self.client.smembers(redis_names.notify_summary_closed(day))}
            missing = [s for s in self.required if s not in done]
            if not missing or now - since >= self.wait_s:
                if day in self._deferred:
                    log.warning("daily summary %s: Dagster has not sent it %.0f min after the close; the workers "
                                "send it (without the reconciliation)", day, self.wait_s / 60)
                if missing:
                    log.warning("daily summary %s: %s had not passed the close after %.0fs; sending without them",
                                day, ", ".join(missing), now - since)
                self._send(day, missing)

    def _send(self, day: date, missing: list[str]) -> None:
        self.enqueue(day, missing)
        self.client.zrem(redis_names.NOTIFY_SUMMARY_PENDING, day.isoformat())
        self._deferred.discard(day)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
