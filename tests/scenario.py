"""Hand-made IBS sessions and worker processes for execution tests (small: Backtrader is slow).

Each session of each symbol has two minute bars: a *fill* bar just after the previous session's
close (where market orders decided at that close fill, at its open) and a *signal* bar two hours
before the close whose close sets the session's IBS. An optional *drop* bar in the night takes
the price down by a fraction (through a protective stop). Sessions are February 2024 (the
close is 23:00 UTC), so every time is easy to read.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pine.bars import Bar
from pine.bus import BarPublisher
from pine.sessions import SessionCalendar
from tests.bar_factory import aggregate, boundaries

REPO = Path(__file__).resolve().parents[1]
CALENDAR = SessionCalendar()
INSTRUMENTS: dict[str, dict[str, Any]] = {
    "CL": {"multiplier": 1000, "tick_size": 0.01, "databento_product_id": "CL.FUT", "exchange": "NYMEX",
           "margin": 6000, "commission": 4.5},
    "GC": {"multiplier": 100, "tick_size": 0.10, "databento_product_id": "GC.FUT", "exchange": "COMEX",
           "margin": 11000, "commission": 4.5},
    "ES": {"multiplier": 50, "tick_size": 0.25, "databento_product_id": "ES.FUT", "exchange": "CME",
           "margin": 13200, "commission": 4.0},
    "6A": {"multiplier": 100000, "tick_size": 0.00005, "databento_product_id": "6A.FUT", "exchange": "CME",
           "margin": 2200, "commission": 4.5},
}


@dataclass(frozen=True)
class Spec:
    """Price level, tick and contract of a symbol in the scenarios."""

    price: float
    tick: float
    contract: str
    instrument_id: int


SPECS = {
    "CL": Spec(78.00, 0.01, "CLH4", 11),
    "GC": Spec(2050.0, 0.10, "GCJ4", 22),
    "ES": Spec(5000.0, 0.25, "ESH4", 33),
    "6A": Spec(0.6600, 0.00005, "6AH4", 44),
}
DAYS = [date(2024, 2, d) for d in (5, 6, 7, 8, 9, 12, 13, 14, 15, 16)]
NEUTRAL = 0.5


def _round(x: float, tick: float) -> float:
    return round(round(x / tick) * tick, 10)


def _minute(symbol: str, start: datetime, o: float, h: float, low: float, c: float) -> Bar:
    spec = SPECS[symbol]
    return Bar(symbol=symbol, timeframe="1min", timestamp=start, end=start + timedelta(minutes=1), open=o,
               high=max(h, o, c), low=min(low, o, c), close=c, volume=5, trade_count=3,
               instrument_id=spec.instrument_id, contract_symbol=spec.contract)


def session_close(day: date) -> datetime:
    """The session close (UTC) of trading day ``day``."""
    return CALENDAR.session_end(datetime(day.year, day.month, day.day, 12, tzinfo=UTC))


def session_minutes(symbol: str, day: date, ibs: float, *, drop: float | None = None) -> list[Bar]:
    """The fill bar, optional drop bar and signal bar of one session (see the module docstring)."""
    spec = SPECS[symbol]
    close = session_close(day)
    p = spec.price
    bars = [_minute(symbol, close - timedelta(hours=24) + timedelta(minutes=5), p, p + spec.tick, p - spec.tick, p)]
    if drop is not None:
        low = _round(p * (1 - drop), spec.tick)
        bars.append(_minute(symbol, close - timedelta(hours=20), p, p, low, low))
    r = _round(p * 0.01, spec.tick)
    lo, hi = p - r, p + r
    if drop is not None:
        lo = min(lo, _round(p * (1 - drop), spec.tick))
    c = _round(lo + ibs * (hi - lo), spec.tick)
    bars.append(_minute(symbol, close - timedelta(hours=2), p, hi, lo, c))
    return bars


def market(plan: Mapping[date, Mapping[str, float]], symbols: Iterable[str],
           drops: Mapping[tuple[date, str], float] | None = None) -> list[Bar]:
    """Minute, hourly and daily bars of every session in ``plan`` (IBS per symbol; absent = neutral)."""
    drops = drops or {}
    out: list[Bar] = []
    for symbol in symbols:
        minutes = [b for day in sorted(plan) for b in
                   session_minutes(symbol, day, plan[day].get(symbol, NEUTRAL), drop=drops.get((day, symbol)))]
        out += minutes + aggregate(minutes)
    return sorted(out, key=lambda b: (b.end, b.symbol, b.timeframe))


class Feed:
    """Publishes a scenario's bars boundary by boundary, up to a time, as the hub would."""

    def __init__(self, publisher: BarPublisher, bars: list[Bar]) -> None:
        self.publisher = publisher
        self.groups = boundaries(bars)
        self.done = 0

    def until(self, t: datetime) -> None:
        """Publish every boundary ending at or before ``t``."""
        while self.done < len(self.groups) and self.groups[self.done][0] <= t:
            end, group = self.groups[self.done]
            self.publisher.publish(group, end)
            self.done += 1

    def finish(self) -> None:
        """Publish the rest and say the hub has finished."""
        self.until(datetime.max.replace(tzinfo=UTC))
        self.publisher.publish([], self.groups[-1][0], state="finished")

    def published(self, symbols: Iterable[str]) -> int:
        """Bars of ``symbols`` published so far."""
        wanted = set(symbols)
        return sum(1 for _, group in self.groups[:self.done] for b in group if b.symbol in wanted)


def fill_time(day: date) -> datetime:
    """End of the fill bar of session ``day`` (the first bar after the previous close)."""
    return session_close(day) - timedelta(hours=24) + timedelta(minutes=6)


def write_config(path: Path, strategies: Mapping[str, Mapping[str, Any]], *, portfolio: Mapping[str, Any] | None = None,
                 **top: Any) -> Path:
    """A config with IBS ``strategies`` ({name: {symbols: [...], **overrides}}) over the scenario instruments."""
    strats = {}
    for name, s in strategies.items():
        s = dict(s)
        symbols = s.pop("symbols")
        strats[name] = {
            "strategy_type": "ibs",
            "starting_cash": 150000,
            "slippage_ticks": 1,
            "params": {"entry_low": 0.25, "exit_high": 0.75, "max_bars_held": 10, "stop_pct": 0.05},
            "instruments": {sym: {"size": 1} for sym in symbols},
            **s,
        }
    doc = {
        "heartbeat": {"interval": 1, "write_interval": 0.2, "ttl": 30},
        "portfolio": {"starting_cash": 250000, "max_positions": 10, "daily_stop_loss": 100000, **(portfolio or {})},
        "traderspost": {"connect_timeout_s": 1, "read_timeout_s": 2, "max_attempts": 3, "backoff_s": 0.01,
                        "backoff_max_s": 0.05},
        "strategies": strats,
        "instruments": {sym: INSTRUMENTS[sym] for s in strategies.values() for sym in s["symbols"]},
        **top,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class WorkerProc:
    """A ``pine worker`` subprocess with stdout/stderr in files (read them after it exits)."""

    def __init__(self, config: Path, strategy: str, redis_url: str, runtime: Path, *, stop_at_end: bool = False,
                 env: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> None:
        self.strategy = strategy
        self.runtime = runtime
        logs = runtime.parent / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        n = len(list(logs.glob(f"{strategy}-*.err")))
        self.out_path = logs / f"{strategy}-{n}.out"
        self.err_path = logs / f"{strategy}-{n}.err"
        cmd = [sys.executable, "-m", "pine.cli", "worker", "--config", str(config), "--strategy", strategy, *extra]
        if stop_at_end:
            cmd.append("--stop-at-end")
        full_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PINE_CONFIG")}
        full_env.update({"REDIS_URL": redis_url, "PINE_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO),
                         **(env or {})})
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(cmd, env=full_env, cwd=REPO, stdout=out, stderr=err, text=True)

    @property
    def stderr(self) -> str:
        """What the worker logged so far."""
        return self.err_path.read_text()

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
        """Poll until ``condition``; fail if the worker exits first (a guard, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.strategy} exited ({self.proc.returncode}) before {what}:\n"
                                     f"{self.stderr[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}:\n{self.stderr[-4000:]}")
            time.sleep(0.01)

    def wait_bars(self, n: int) -> None:
        """Until the worker has ledgered ``n`` bars."""
        self.wait_for(lambda: ledgered(self.runtime, self.strategy) >= n, f"{n} bars of {self.strategy}")

    def kill(self) -> None:
        """SIGKILL (the worker must still be running)."""
        assert self.proc.poll() is None, f"worker {self.strategy} exited early:\n{self.stderr[-4000:]}"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def finish(self, timeout: float = 240) -> None:
        """Wait for a ``--stop-at-end`` worker; it must exit 0."""
        code = self.proc.wait(timeout)
        assert code == 0, self.stderr[-4000:]


def ledgered(runtime: Path, strategy: str) -> int:
    """Bars ``strategy`` has ledgered in ``<runtime>/trades.db`` (0 before the schema exists)."""
    db = runtime / "trades.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM bar_log WHERE strategy = ?", (strategy,)).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def query(runtime: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the trades DB."""
    conn = sqlite3.connect(f"file:{runtime / 'trades.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def pine(*args: str, redis_url: str, runtime: Path, env: Mapping[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    """Run ``pine ARGS`` to completion (output captured)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PINE_CONFIG")}
    full_env.update({"REDIS_URL": redis_url, "PINE_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO),
                     **(env or {})})
    return subprocess.run([sys.executable, "-m", "pine.cli", *args], env=full_env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
