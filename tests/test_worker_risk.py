"""Portfolio risk across two worker processes: killswitch tiers (kept over restarts, POLICY_KILLSWITCH
honoured) and the daily stop (hit by one worker, no entry anywhere on the next bar)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis

from pine import redis_names
from pine.bus import BarPublisher
from tests.scenario import DAYS, Feed, WorkerProc, fill_time, market, pine, query, session_close, write_config

A, B = "ks_a", "ks_b"
SYMBOLS = {A: ["CL", "ES"], B: ["GC", "6A"]}


def _orders(runtime: Path, strategy: str) -> list[tuple[Any, ...]]:
    """(symbol, role, status, reason) of the strategy's orders but refused entries; an entry's reason is its IBS
    tag, shown as ``ibs``."""
    rows = query(runtime, "SELECT symbol, role, status, reason FROM orders WHERE strategy = ? AND status != "
                          "'cancelled' ORDER BY created_at", strategy)
    return [(*r[:3], "ibs" if r[3].startswith("ibs=") else r[3]) for r in rows]


def _refused(runtime: Path, strategy: str) -> list[tuple[Any, ...]]:
    """(symbol, role, why) of the strategy's refused orders: journaled ``cancelled``, never sent."""
    return query(runtime, "SELECT symbol, role, error FROM orders WHERE strategy = ? AND status = 'cancelled' "
                          "ORDER BY created_at", strategy)


def _blocked(log: str, what: str, state: str) -> int:
    """How many times ``what`` (e.g. ``ES entry buy``) was logged as blocked by the killswitch ``state``."""
    return len(re.findall(re.escape(what) + r" \([^)]*\) blocked: killswitch " + state, log))


def _state(client: redis.Redis) -> str:
    return (client.hget(redis_names.KILLSWITCH, "state") or b"off").decode()


@pytest.mark.slow
def test_killswitch_tiers_across_two_workers_and_restarts(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yml", {name: {"symbols": syms} for name, syms in SYMBOLS.items()})
    runtime = tmp_path / "runtime"
    client = redis.Redis.from_url(redis_url)
    plan = {
        DAYS[0]: {"CL": 0.1, "GC": 0.1},                        # both enter
        DAYS[1]: {"CL": 0.9, "ES": 0.1, "6A": 0.1},             # exit CL, enter ES and 6A: under HALT
        DAYS[2]: {"CL": 0.9, "ES": 0.1, "6A": 0.1},             # the same, after a restart: still HALT
        DAYS[3]: {"CL": 0.9, "ES": 0.1, "6A": 0.1},             # under REDUCE_ONLY: only the CL exit
        DAYS[4]: {},                                            # FLATTEN: GC closed at market, then HALT
        DAYS[5]: {"ES": 0.1, "6A": 0.1},                        # OFF, but ks_b has POLICY_KILLSWITCH=true
        DAYS[6]: {},
    }
    feed = Feed(BarPublisher(client), market(plan, ["CL", "ES", "GC", "6A"]))

    def run(until_day: int, *workers: WorkerProc) -> None:
        feed.until(fill_time(DAYS[until_day]))
        for w in workers:
            w.wait_bars(feed.published(SYMBOLS[w.strategy]))

    def killswitch(action: str) -> None:
        done = pine("killswitch", action, "--config", str(config), redis_url=redis_url, runtime=runtime)
        assert done.returncode == 0, done.stderr

    a, b = WorkerProc(config, A, redis_url, runtime), WorkerProc(config, B, redis_url, runtime)
    run(1, a, b)
    assert _orders(runtime, A) == [("CL", "entry", "acknowledged", "ibs")]
    assert _orders(runtime, B) == [("GC", "entry", "acknowledged", "ibs")]

    killswitch("halt")
    run(2, a, b)
    assert _blocked(a.stderr, "CL exit sell", "halt") == 1
    assert _blocked(a.stderr, "ES entry buy", "halt") == 1 and _blocked(b.stderr, "6A entry buy", "halt") == 1
    a.kill()
    b.kill()
    a, b = WorkerProc(config, A, redis_url, runtime), WorkerProc(config, B, redis_url, runtime)
    run(3, a, b)
    # The same again after the restart: the state was kept.
    assert _blocked(a.stderr, "CL exit sell", "halt") == _blocked(a.stderr, "ES entry buy", "halt") == 1
    assert _blocked(b.stderr, "6A entry buy", "halt") == 1
    assert len(_orders(runtime, A)) == len(_orders(runtime, B)) == 1  # nothing was sent under HALT
    # Each refused entry is journaled once, as cancelled with the reason (the replay kept the first refused);
    # a refused exit is not: the position stays and its exit is signalled again.
    assert _refused(runtime, A) == [("ES", "entry", "blocked: killswitch halt")] * 2
    assert _refused(runtime, B) == [("6A", "entry", "blocked: killswitch halt")] * 2

    killswitch("reduce-only")
    run(4, a, b)
    assert _orders(runtime, A)[1:] == [("CL", "exit", "acknowledged", "ibs_exit")]
    assert _blocked(a.stderr, "ES entry buy", "reduce_only") == 1
    assert _blocked(b.stderr, "6A entry buy", "reduce_only") == 1
    assert len(_orders(runtime, B)) == 1
    assert _refused(runtime, B)[2:] == [("6A", "entry", "blocked: killswitch reduce_only")]

    killswitch("flatten")
    run(5, a, b)
    assert _orders(runtime, B)[1:] == [("GC", "exit", "acknowledged", "flatten")]
    assert query(runtime, "SELECT strategy, symbol, exit_reason FROM trades ORDER BY exit_time") == [
        (A, "CL", "ibs_exit"), (B, "GC", "flatten")]
    assert _state(client) == "halt"  # the portfolio is flat: FLATTEN became HALT
    assert client.hget(redis_names.KILLSWITCH, "reason") == b"flatten complete: the portfolio is flat"

    killswitch("off")
    b.kill()
    b = WorkerProc(config, B, redis_url, runtime, env={"POLICY_KILLSWITCH": "true"})
    run(6, a, b)
    assert _orders(runtime, A)[2:] == [("ES", "entry", "acknowledged", "ibs")]  # OFF for ks_a
    assert len(_orders(runtime, B)) == 2  # the legacy variable still halts ks_b
    assert _blocked(b.stderr, "6A entry buy", "halt") == 1
    assert a.stop() == 0 and b.stop() == 0
    changes = [(f[b"state"], f[b"source"].split(b":")[0]) for _, f in client.xrange(redis_names.PORTFOLIO_EVENTS)
               if f[b"kind"] == b"killswitch_changed"]
    assert changes == [(b"halt", b"cli"), (b"reduce_only", b"cli"), (b"flatten", b"cli"), (b"halt", b"worker"),
                       (b"off", b"cli")]


@pytest.mark.slow
def test_a_daily_stop_hit_by_one_worker_stops_entries_everywhere(redis_url: str, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yml",
        {"ds_a": {"symbols": ["CL"], "params": {"entry_low": 0.25, "exit_high": 0.75, "max_bars_held": 10,
                                                "stop_pct": 0.008}},
         "ds_b": {"symbols": ["GC"]}},
        portfolio={"daily_stop_loss": 500},
    )
    runtime = tmp_path / "runtime"
    client = redis.Redis.from_url(redis_url)
    plan = {DAYS[0]: {"CL": 0.1}, DAYS[1]: {"GC": 0.1}, DAYS[2]: {"GC": 0.1}, DAYS[3]: {}}
    # In the night of D2 CL falls 2%: ds_a's stop loses more than the daily limit.
    feed = Feed(BarPublisher(client), market(plan, ["CL", "GC"], drops={(DAYS[1], "CL"): 0.02}))
    a = WorkerProc(config, "ds_a", redis_url, runtime, stop_at_end=True)
    b = WorkerProc(config, "ds_b", redis_url, runtime, stop_at_end=True)
    feed.until(session_close(DAYS[1]).replace(hour=4))  # up to the drop, in the night of D2
    a.wait_bars(feed.published(["CL"]))
    b.wait_bars(feed.published(["GC"]))
    [(reason, net)] = query(runtime, "SELECT exit_reason, net_pnl FROM trades WHERE strategy = 'ds_a'")
    assert reason == "stop" and net < -500
    feed.finish()  # GC signals an entry at the close of D2 (same trading day) and again at the close of D3
    a.finish()
    b.finish()
    assert _orders(runtime, "ds_b") == [("GC", "entry", "acknowledged", "ibs")]
    assert query(runtime, "SELECT client_order_id, status, error FROM orders WHERE strategy = 'ds_b' "
                          "ORDER BY created_at") == [
        ("ds_b-GC-20240206T230000Z-buy", "cancelled", "denied: portfolio: daily_stop"),  # the stop day's
        ("ds_b-GC-20240207T230000Z-buy", "acknowledged", None)]  # the entry of the next trading day
    assert re.search(r"GC entry buy \(ibs=[0-9.]+\) denied: portfolio: daily_stop", b.stderr)
    assert "DAILY STOP HIT for trading day 2024-02-06" in a.stderr
    hits = [f for _, f in client.xrange(redis_names.PORTFOLIO_EVENTS) if f[b"kind"] == b"daily_stop_hit"]
    assert [(h[b"trading_day"], h[b"by"]) for h in hits] == [(b"2024-02-06", b"ds_a")]
