"""Order path latency and coordinator throughput, next to bare Redis and bare HTTP measured in the same run.

    .venv/bin/python bench/order_path.py                # 300 orders, 5000 reservations
    .venv/bin/python bench/order_path.py --orders 1000 --reservations 20000

signal → webhook request: from ``Execution.submit`` (the strategy's decision) to the moment a local
HTTP server standing in for TradersPost has read the request; the path includes the killswitch
read, the slot reservation (Lua), the journal write (SQLite) and the POST. signal → acknowledged
adds the reply and the journal update. Baselines: a bare ``requests`` POST to the same server and
a Redis PING. Redis is a private server started for the run; everything is on this machine.
Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from pine.config.schema import TradersPostConfig
from pine.killswitch import Killswitch
from pine.redis_server import RedisServer, connect
from pine.sessions import SessionCalendar
from workers.coordinator import PortfolioCoordinator
from workers.execution import Execution, OrderRequest, Role
from workers.order_journal import OrderJournal, client_order_id
from workers.traderspost import TradersPostClient
from workers.trades_db import TradesDB


class _Receiver:
    """A local webhook that notes when each request was read (perf_counter, same process)."""

    def __init__(self) -> None:
        self.received: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(time.perf_counter())
                body = b'{"success": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        host, port = self.httpd.server_address[:2]
        self.url = f"http://{host}:{port}/trading/webhook/bench-uuid/bench-password"


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: Sequence[float]) -> str:
    return f"{_pct(values, 0.5) * 1e3:>9.3f}{_pct(values, 0.99) * 1e3:>9.3f}"


def _rate(n: int, fn: Callable[[int], object]) -> tuple[float, list[float]]:
    laps = []
    started = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        laps.append(time.perf_counter() - t)
    return n / (time.perf_counter() - started), laps


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--reservations", type=int, default=5000)
    args = parser.parse_args(argv)

    receiver = _Receiver()
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="pine-bench-") as tmp:
        client = connect(server.url)
        ping_rate, ping_laps = _rate(args.reservations, lambda i: client.ping())

        session = requests.Session()
        post_laps = []
        for _ in range(args.orders):
            t = time.perf_counter()
            session.post(receiver.url, data=b'{"ticker": "CL"}', timeout=5)
            post_laps.append(time.perf_counter() - t)

        coordinator = PortfolioCoordinator(client, "bench", max_positions=10, daily_stop_loss=1e12, lease_ttl_s=60)
        day = datetime(2024, 3, 4, tzinfo=UTC).date()

        def reserve_release(i: int) -> None:
            coordinator.reserve("CL", f"r{i}", day)
            coordinator.release("CL")

        cycle_rate, cycle_laps = _rate(args.reservations, reserve_release)
        reserve_rate, reserve_laps = _rate(args.reservations, lambda i: coordinator.reserve("CL", "r", day))
        coordinator.release("CL")

        db = TradesDB(Path(tmp) / "trades.db")
        cfg = TradersPostConfig(connect_timeout_s=2, read_timeout_s=5, max_attempts=1)
        execution = Execution("bench", db=db, journal=OrderJournal(db), sender=TradersPostClient(receiver.url, cfg),
                              calendar=SessionCalendar(), killswitch=Killswitch(client, environ={}),
                              coordinator=coordinator)
        receiver.received.clear()
        signals, acked = [], []
        start = datetime(2024, 3, 4, 23, tzinfo=UTC)
        for i in range(args.orders):
            when = start + timedelta(minutes=i)
            req = OrderRequest(client_order_id("bench", "CL", when, "buy"), "CL", "CLK4", Role.ENTRY, "buy", 1,
                               "bench", when, 78.0, replay=False)
            t = time.perf_counter()
            decision = execution.submit(req)
            acked.append(time.perf_counter() - t)
            signals.append(t)
            assert decision.accepted, decision
            coordinator.release("CL")
        to_request = [r - s for r, s in zip(receiver.received, signals, strict=True)]
        db.close()
        client.close()

    print(f"order path on this machine ({args.orders} orders, {args.reservations} Redis operations per figure)\n")
    print(f"{'latency':<52}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"{'signal → webhook request received (full order path)':<52}{_ms(to_request)}")
    print(f"{'signal → acknowledged and journaled':<52}{_ms(acked)}")
    print(f"{'baseline: bare requests POST → reply, same server':<52}{_ms(post_laps)}")
    print(f"{'baseline: Redis PING round trip':<52}{_ms(ping_laps)}")
    print()
    print(f"{'throughput (one client)':<52}{'ops/s':>9}{'p50 ms':>9}")
    print(f"{'coordinator reserve + release (2 Lua calls)':<52}{cycle_rate:>9,.0f}"
          f"{statistics.median(cycle_laps) * 1e3:>9.3f}")
    print(f"{'coordinator reserve (slot already held)':<52}{reserve_rate:>9,.0f}"
          f"{statistics.median(reserve_laps) * 1e3:>9.3f}")
    print(f"{'baseline: Redis PING':<52}{ping_rate:>9,.0f}{statistics.median(ping_laps) * 1e3:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
