"""Helpers for live-hub tests: a small config, a hub running in a thread, reading bars back from Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import databento_dbn as dbn
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry

from hub.aggregator import MINUTE_NS
from hub.backoff import Backoff
from hub.clock import Clock
from hub.live import FeedSettings
from hub.main import configured_roots, run_replay
from hub.supervisor import LiveHub
from hub.synthetic import write_synthetic_market
from pine.config import PineConfig
from pine.contracts import load_contract_map
from tests.live_gateway import TEST_KEY, LiveGateway, ManualClock

REPO = Path(__file__).resolve().parents[1]
INSTRUMENTS = {
    "ES": {"multiplier": 50, "tick_size": 0.25, "databento_product_id": "ES.FUT", "exchange": "CME"},
    "GC": {"multiplier": 100, "tick_size": 0.10, "databento_product_id": "GC.FUT", "exchange": "COMEX"},
}
TIMEFRAMES = ("1min", "hourly", "daily")


def write_live_config(path: Path, *, port: int, runtime: Path, roots: tuple[str, ...] = ("ES", "GC"),
                      **hub: Any) -> Path:
    """A config for ``roots`` whose live gateway is ``127.0.0.1:port``; ``hub`` overrides ``hub:`` keys."""
    doc = {
        "runtime_dir": str(runtime),
        "heartbeat": {"interval": 1, "write_interval": 0.2, "ttl": 30},
        "hub": {"gateway": "127.0.0.1", "port": port, "reconnect": {"initial_s": 0.02, "max_s": 0.2}, **hub},
        "strategies": {},
        "instruments": {r: INSTRUMENTS[r] for r in roots},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def live_client(url: str) -> redis.Redis:
    """A Redis client configured like the live hub's (fails fast, no hidden retries)."""
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def make_hub(cfg: PineConfig, url: str, *, key: str = TEST_KEY, clock: Clock | None = None,
             record_dir: Path | None = None) -> LiveHub:
    """A live hub for ``cfg`` (its gateway and port) publishing to ``url``."""
    roots = configured_roots(cfg)
    settings = FeedSettings(key=key, dataset="GLBX.MDP3",
                            parents=tuple(cfg.instruments[r].databento_product_id for r in roots),
                            heartbeat_s=cfg.hub.feed_heartbeat_s, gateway=cfg.hub.gateway, port=cfg.hub.port)
    return LiveHub(cfg, settings, roots, live_client(url), clock=clock or ManualClock(), record_dir=record_dir,
                   backoff=Backoff(cfg.hub.reconnect))


class HubThread:
    """``LiveHub.run`` in a thread; ``code`` is its exit code once it has returned."""

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub
        self.code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="live-hub", daemon=True)

    def _run(self) -> None:
        try:
            self.code = self.hub.run()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float = 15.0) -> int:
        """Ask the hub to stop and wait; returns its exit code."""
        self.hub.request_stop("test over")
        return self.join(timeout)

    def join(self, timeout: float = 15.0) -> int:
        """Wait for the hub to return by itself; returns its exit code."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the hub did not stop"
        assert self.error is None, self.error
        assert self.code is not None
        return self.code


@contextmanager
def running_hub(hub: LiveHub) -> Iterator[HubThread]:
    """Run ``hub`` for the ``with`` block; it is stopped (if still running) on the way out."""
    runner = HubThread(hub)
    runner.thread.start()
    try:
        yield runner
    finally:
        if runner.thread.is_alive():
            hub.request_stop("test over")
            runner.thread.join(15)


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy (returned); AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mid_minute(records: list[Any], fraction: float, instrument_id: int | None = None) -> int:
    """Index of a trade at about ``fraction`` of the stream whose minute has trades before and after it
    (both of ``instrument_id``, if given: the contract the bars are built from)."""
    trades = [i for i, r in enumerate(records) if isinstance(r, dbn.TradeMsg)]
    for i in trades[int(len(trades) * fraction):]:
        before, at = records[i - 1], records[i]
        if not isinstance(before, dbn.TradeMsg) or before.ts_recv // MINUTE_NS != at.ts_recv // MINUTE_NS:
            continue
        if instrument_id is None or before.instrument_id == at.instrument_id == instrument_id:
            return i
    raise AssertionError("no mid-minute trade")


def trade_count(records: list[Any], parents: set[str] | None = None) -> int:
    """Trades among ``records`` (of instruments mapped to ``parents``, if given)."""
    parent_of = {r.instrument_id: r.stype_in_symbol for r in records if isinstance(r, dbn.SymbolMappingMsg)}
    return sum(1 for r in records if isinstance(r, dbn.TradeMsg)
               and (parents is None or parent_of.get(r.instrument_id) in parents))


def wait_processed(hub: LiveHub, gateway: LiveGateway, trades: int, *, upto: int | None = None,
                   timeout: float = 60.0) -> None:
    """Until the market has published up to record ``upto`` (default: all) and the hub has aggregated
    ``trades`` trades."""
    market = gateway.market
    upto = len(market) if upto is None else upto
    wait_until(lambda: market.published >= upto and hub.agg.trades >= trades and not len(hub.inbox),
               timeout, f"the hub to aggregate {trades} trades")


def stream(client: redis.Redis, root: str, timeframe: str) -> list[tuple[str, str]]:
    """(stream id, bar JSON) of every entry of a bar stream."""
    return [(sid.decode(), fields[b"bar"].decode()) for sid, fields in
            client.xrange(f"market:{root}:{timeframe}:stream")]


def all_streams(client: redis.Redis, roots: list[str]) -> dict[tuple[str, str], list[str]]:
    """Bar JSON per (root, timeframe), in stream order."""
    return {(r, tf): [bar for _, bar in stream(client, r, tf)] for r in roots for tf in TIMEFRAMES}


def effective(bars: list[str]) -> list[dict[str, Any]]:
    """The bars a consumer ends up with: the last version per bar start, without the ``corrected`` flag."""
    latest: dict[str, dict[str, Any]] = {}
    for raw in bars:
        bar = json.loads(raw)
        bar.pop("corrected")
        latest[bar["timestamp"]] = bar
    return [latest[t] for t in sorted(latest)]


def replayed_streams(cfg: PineConfig, files: list[Path], url: str) -> dict[tuple[str, str], list[str]]:
    """The streams ``pine hub --replay`` writes for ``files``, from an empty Redis database 1 of ``url``'s server."""
    replay_url = url.rsplit("/", 1)[0] + "/1"
    client = redis.Redis.from_url(replay_url)
    client.flushdb()
    run_replay(cfg, files, client)
    out = all_streams(client, configured_roots(cfg))
    client.flushdb()
    client.close()
    return out


def es_market(folder: Path, start: date, days: int, seed: int) -> list[Path]:
    """Synthetic ES trades (DBN files in ``folder``) for ``days`` trading days from ``start``."""
    contract_map = load_contract_map(REPO / "data" / "contract_map.yml")
    return write_synthetic_market(folder, ["ES"], start, days, seed, contract_map)
