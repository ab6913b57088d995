"""Live hub throughput and bar latency against a local gateway, next to the Redis publish round trip.

    .venv/bin/python bench/hub_live.py
    .venv/bin/python bench/hub_live.py --rates 10000 20000 40000 80000 --step-s 4

A local Databento live gateway (``tests/live_gateway.py``) runs in a subprocess, so that it does
not share the hub's interpreter lock, and generates trades for a few roots. The hub is the real
one (``hub.supervisor.LiveHub`` with the real ``databento.Live`` client) in this process,
publishing to a private Redis.

1. Throughput: the gateway pushes trades at increasing rates, each for ``--step-s`` seconds,
   stamped with the time they are due. The hub's lag (now − the newest ``ts_recv`` it has
   aggregated) is sampled; the sustained rate is the highest rate whose lag stayed under
   ``--max-lag-ms`` at the end of its step.
2. Latency: time runs ``--speed`` times faster for gateway and hub alike, so that many minutes
   pass; the close grace is scaled to stay 250 ms of real time. For every 1-minute bar, the
   real time from its minute boundary to its arrival on the pub/sub channel, with busy and
   with quiet roots (bars closed by the next trade vs. by the wall clock after the grace).
3. Baseline: the round trip of one ``BarPublisher.publish`` (one bar, MULTI/EXEC) to the same Redis.

Prints figures only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.live_gateway

import databento_dbn as dbn  # noqa: E402
import redis  # noqa: E402
import yaml  # noqa: E402

from hub.backoff import Backoff  # noqa: E402
from hub.live import FeedSettings  # noqa: E402
from hub.supervisor import LiveHub  # noqa: E402
from pine.bars import Bar  # noqa: E402
from pine.bus import BarPublisher  # noqa: E402
from pine.config import load_config  # noqa: E402
from pine.redis_server import RedisServer  # noqa: E402
from tests.live_gateway import TEST_KEY, Fault, LiveGateway  # noqa: E402
from tests.live_support import INSTRUMENTS, live_client  # noqa: E402

NS = 1_000_000_000
ROOTS = ("ES", "GC")
PRICES = {"ES": 5000.0, "GC": 2050.0}
TICKS = {"ES": 0.25, "GC": 0.10}


class ScaledClock:
    """Time that runs ``speed`` times faster than real time from a shared origin."""

    def __init__(self, origin_real_ns: int, origin_ns: int, speed: float) -> None:
        self.origin_real_ns = origin_real_ns
        self.origin_ns = origin_ns
        self.speed = speed

    def now_ns(self) -> int:
        """Scaled time now."""
        return self.origin_ns + int((time.time_ns() - self.origin_real_ns) * self.speed)

    def real_seconds(self, span_ns: int) -> float | None:
        """Real seconds for a span of scaled time."""
        return span_ns / self.speed / NS

    def real_ns(self, scaled_ns: int) -> int:
        """The real instant of a scaled instant."""
        return self.origin_real_ns + int((scaled_ns - self.origin_ns) / self.speed)


class RateMarket:
    """Trades of ``ROOTS`` at a schedule of (trades per second, seconds), in the clock's time.

    ``quiet`` roots trade ``quiet_per_minute`` times a minute instead, at random instants.
    """

    def __init__(self, schedule: list[tuple[float, float]], clock: ScaledClock, quiet: Sequence[str] = (),
                 quiet_per_minute: float = 0.0) -> None:
        self.schedule = schedule
        self.clock = clock
        self.parents = frozenset(f"{r}.FUT" for r in ROOTS)
        self.cond = threading.Condition()
        self.rng = random.Random(7)
        self.busy = [r for r in ROOTS if r not in quiet]
        self.quiet = list(quiet)
        self.quiet_gap_ns = int(60 * NS / quiet_per_minute) if quiet_per_minute else 0
        self.iids = {r: 1000 + n for n, r in enumerate(ROOTS)}
        self.prices = {r: round(PRICES[r] / TICKS[r]) for r in ROOTS}
        self.origin: int | None = None
        self.sent = 0
        self.next_quiet: dict[str, int] = {}
        self.seq = 0

    def now_ns(self) -> int:
        """Market time."""
        return self.clock.now_ns()

    def mappings(self, parents: frozenset[str]) -> list[bytes]:
        """One outright per root."""
        now = self.clock.now_ns()
        return [bytes(dbn.SymbolMappingMsg(
            publisher_id=1, instrument_id=self.iids[r], ts_event=now, stype_in=dbn.SType.PARENT,
            stype_in_symbol=f"{r}.FUT", stype_out=dbn.SType.RAW_SYMBOL, stype_out_symbol=f"{r}M4",
            start_ts=now, end_ts=now + 86_400 * NS)) for r in ROOTS]

    def replay(self, start: int, parents: frozenset[str]) -> list[bytes]:
        """Nothing: the bench never reconnects."""
        return []

    def _due(self, elapsed_ns: int) -> int:
        """Busy trades scheduled in the first ``elapsed_ns`` of the schedule."""
        count, t = 0.0, 0
        for rate, seconds in self.schedule:
            span = int(seconds * NS)
            if elapsed_ns <= t + span:
                return int(count + rate * (elapsed_ns - t) / NS)
            count += rate * seconds
            t += span
        return int(count)

    def _ts_of(self, index: int) -> int:
        """When busy trade ``index`` is due (scaled ns since the origin)."""
        count, t = 0.0, 0
        for rate, seconds in self.schedule:
            if index < count + rate * seconds:
                return t + int((index - count) / rate * NS)
            count += rate * seconds
            t += int(seconds * NS)
        return t

    def _trade(self, root: str, ts: int) -> bytes:
        self.prices[root] += self.rng.choice((-1, 0, 0, 1))
        self.seq += 1
        return bytes(dbn.TradeMsg(publisher_id=1, instrument_id=self.iids[root], ts_event=ts - 20_000,
                                  price=int(self.prices[root] * TICKS[root] * NS), size=self.rng.randint(1, 5),
                                  action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0, ts_recv=ts, flags=0,
                                  ts_in_delta=10_000, sequence=self.seq))

    def next_batch(self, parents: frozenset[str]) -> tuple[list[bytes], Fault | None]:
        """The trades due by now (at most 4,000 busy ones at a time)."""
        now = self.clock.now_ns()
        if self.origin is None:
            self.origin = now
            self.next_quiet = {r: now + self.rng.randint(0, self.quiet_gap_ns) for r in self.quiet}
        out = []
        due = min(self._due(now - self.origin), self.sent + 4000)
        while self.sent < due:
            out.append(self._trade(self.busy[self.sent % len(self.busy)], self.origin + self._ts_of(self.sent)))
            self.sent += 1
        for root, at in self.next_quiet.items():
            if at <= now:
                out.append(self._trade(root, at))
                self.next_quiet[root] = at + self.rng.randint(self.quiet_gap_ns // 2, 3 * self.quiet_gap_ns // 2)
        return out, None

    def wait(self, timeout: float) -> None:
        """Until more trades may be due."""
        time.sleep(min(timeout, 0.0005))


# --------------------------------------------------------------------------- the gateway subprocess


def serve(args: argparse.Namespace) -> int:
    """Run the gateway until stdin closes; prints its port."""
    clock = ScaledClock(args.origin_real, args.origin, args.speed)
    schedule = [(float(r), float(s)) for r, s in (item.split(":") for item in args.schedule.split(","))]
    market = RateMarket(schedule, clock, quiet=args.quiet, quiet_per_minute=args.quiet_per_minute)
    with LiveGateway(market) as gateway:
        print(f"PORT {gateway.port}", flush=True)
        sys.stdin.read()
    return 0


def start_gateway(schedule: list[tuple[float, float]], clock: ScaledClock, quiet: Sequence[str] = (),
                  quiet_per_minute: float = 0.0) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, __file__, "--serve", "--origin-real", str(clock.origin_real_ns), "--origin",
           str(clock.origin_ns), "--speed", str(clock.speed), "--schedule",
           ",".join(f"{r}:{s}" for r, s in schedule), "--quiet-per-minute", str(quiet_per_minute),
           "--quiet", *quiet]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        raise RuntimeError(f"the gateway did not start: {line!r}")
    return proc, int(line.split()[1])


# --------------------------------------------------------------------------- the hub side


def make_hub(tmp: Path, port: int, url: str, clock: ScaledClock, grace_ms: int) -> LiveHub:
    doc = {"runtime_dir": str(tmp / "runtime"), "heartbeat": {"write_interval": 1.0},
           "hub": {"gateway": "127.0.0.1", "port": port, "close_grace_ms": grace_ms},
           "strategies": {}, "instruments": {r: INSTRUMENTS[r] for r in ROOTS}}
    path = tmp / f"config-{port}.yml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    settings = FeedSettings(key=TEST_KEY, dataset="GLBX.MDP3", parents=tuple(f"{r}.FUT" for r in ROOTS),
                            heartbeat_s=5, gateway="127.0.0.1", port=port)
    return LiveHub(cfg, settings, list(ROOTS), live_client(url), clock=clock, backoff=Backoff(cfg.hub.reconnect),
                   tick_s=0.01)


def throughput(tmp: Path, url: str, rates: list[float], step_s: float, max_lag_ms: float) -> None:
    now = time.time_ns()
    clock = ScaledClock(now, now, 1.0)
    schedule = [(r, step_s) for r in rates]
    proc, port = start_gateway(schedule, clock)
    hub = make_hub(tmp, port, url, clock, 250)
    runner = threading.Thread(target=hub.run, daemon=True)
    runner.start()
    try:
        while hub.agg.trades == 0:
            time.sleep(0.01)
        started = time.monotonic()
        print(f"\n1. throughput ({len(ROOTS)} roots, {step_s:.0f} s per rate)")
        print(f"   {'offered/s':>10} {'aggregated/s':>13} {'lag at end':>11} {'max lag':>9}")
        sustained = 0.0
        for k, rate in enumerate(rates):
            end = started + (k + 1) * step_s
            trades0, t0 = hub.agg.trades, time.monotonic()
            lags = []
            while time.monotonic() < end:
                time.sleep(0.05)
                lags.append((clock.now_ns() - hub.dedupe.latest) / 1e6)
            done = (hub.agg.trades - trades0) / (time.monotonic() - t0)
            print(f"   {rate:>10,.0f} {done:>13,.0f} {lags[-1]:>9,.0f}ms {max(lags):>7,.0f}ms")
            if lags[-1] <= max_lag_ms:
                sustained = rate
            else:
                break
        print(f"   sustained: {sustained:,.0f} trades/s (highest offered rate with the lag under {max_lag_ms:.0f} ms "
              "at the end of its step)")
    finally:
        hub.request_stop("bench over")
        runner.join(10)
        proc.communicate("")


def latency(tmp: Path, url: str, speed: float, seconds: float, busy_rate: float, quiet_per_minute: float,
            quiet: tuple[str, ...]) -> None:
    """Run hub and gateway in scaled time; prints the latency percentiles per root."""
    redis.Redis.from_url(url).flushall()  # a run's scaled time may lie before the previous run's bars
    now = time.time_ns()
    clock = ScaledClock(now, now - now % (60 * NS), speed)  # scaled time starts on a minute boundary
    rate = 0.0 if set(quiet) == set(ROOTS) else busy_rate / speed
    proc, port = start_gateway([(rate, seconds * speed)], clock, quiet, quiet_per_minute)
    hub = make_hub(tmp, port, url, clock, int(250 * speed))
    received: list[tuple[int, dict[str, Any]]] = []
    sub = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("market:*:1min")

    def listen() -> None:
        while not hub.stopped.is_set():
            message = sub.get_message(timeout=0.05)
            if message is not None:
                received.append((time.time_ns(), json.loads(message["data"])))

    listener = threading.Thread(target=listen, daemon=True)
    runner = threading.Thread(target=hub.run, daemon=True)
    listener.start()
    runner.start()
    time.sleep(seconds)
    hub.request_stop("bench over")
    runner.join(10)
    listener.join(5)
    proc.communicate("")
    sub.close()
    ms: dict[str, list[float]] = {r: [] for r in ROOTS}
    for at, bar in received:
        if not bar["partial"] and not bar["corrected"]:
            boundary = int(datetime.fromisoformat(bar["end"]).timestamp()) * NS
            ms[bar["symbol"]].append((at - clock.real_ns(boundary)) / 1e6)
    for root in ROOTS:
        kind = f"quiet (~{quiet_per_minute:.0f} trades/minute)" if root in quiet else (
            f"busy (~{busy_rate / speed * 60:,.0f} trades/minute)")
        print(f"   {root} {kind:<28} {_percentiles(ms[root])}")


def _percentiles(ms: list[float]) -> str:
    if len(ms) < 2:
        return f"{len(ms)} bars: too few"
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {q[49]:7.1f} ms  p99 {q[98]:7.1f} ms  max {max(ms):7.1f} ms  ({len(ms)} bars)"


def redis_round_trip(url: str, n: int = 500) -> None:
    publisher = BarPublisher(redis.Redis.from_url(url))
    start = datetime(2024, 1, 2, tzinfo=UTC)
    ms = []
    for i in range(n):
        ts = start + timedelta(minutes=i)
        bar = Bar(symbol="RTT", timeframe="1min", timestamp=ts, end=ts + timedelta(minutes=1), open=1.0, high=1.0,
                  low=1.0, close=1.0, volume=1, trade_count=1, instrument_id=1, contract_symbol="RTTM4")
        t0 = time.perf_counter_ns()
        publisher.publish([bar], ts + timedelta(minutes=1))
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    print(f"\n3. Redis publish round trip (one bar: XADD + SET + PUBLISH + clock XADD in MULTI/EXEC), same Redis\n"
          f"   {_percentiles(ms).replace('bars', 'publishes')}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve``, the gateway subprocess)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[10_000, 20_000, 40_000, 80_000, 120_000, 160_000])
    parser.add_argument("--step-s", type=float, default=3.0)
    parser.add_argument("--max-lag-ms", type=float, default=500.0)
    parser.add_argument("--speed", type=float, default=30.0, help="latency run: scaled time factor")
    parser.add_argument("--latency-s", type=float, default=30.0, help="latency run: real seconds")
    parser.add_argument("--busy-rate", type=float, default=2_000.0, help="latency run: busy trades per real second")
    parser.add_argument("--quiet-per-minute", type=float, default=2.0, help="latency run: quiet root's trades")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--origin-real", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--origin", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--schedule", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)
    with tempfile.TemporaryDirectory(prefix="pine-bench-") as tmp, RedisServer(Path(tmp) / "redis") as server:
        print(f"hub live bench: {len(ROOTS)} roots ({' '.join(ROOTS)}), gateway in a subprocess, private Redis")
        throughput(Path(tmp), server.url, args.rates, args.step_s, args.max_lag_ms)
        print(f"\n2. bar publish latency after the minute boundary, real time (time runs {args.speed:.0f}x faster, "
              f"close grace 250 ms of real time, {args.latency_s:.0f} s = {args.latency_s * args.speed / 60:.0f} "
              "minutes per run)")
        print("   a busy market: every bar closes with the first trade of the next minute")
        latency(Path(tmp), server.url, args.speed, args.latency_s, args.busy_rate, args.quiet_per_minute, ("GC",))
        print("   a quiet market: bars close on the wall clock, after the grace")
        latency(Path(tmp), server.url, args.speed, args.latency_s, args.busy_rate, args.quiet_per_minute, ROOTS)
        redis_round_trip(server.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
