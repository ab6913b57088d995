"""The data hub process (``pine hub``): the Databento live feed, or DBN files replayed, into bars on Redis.

Replay (``--replay``): every record goes through :class:`hub.aggregator.Aggregator`; each time
the data clock enters a new minute the closed bars and the watermark are published with
:class:`pine.bus.BarPublisher` (stream, latest key, pub/sub, clock). At the end of the data
the bars still open are published with the clock state ``finished``. A corrupt or truncated
file stops the replay with an error and publishes nothing more: open bars may be incomplete.

Live (no ``--replay``): :class:`hub.supervisor.LiveHub` feeds the same aggregator from the
Databento live gateway; see that module. SIGTERM/SIGINT stop it gracefully.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from hub.aggregator import Aggregator
from hub.dbn_source import DBNFileError, iter_file
from pine.bus import BarPublisher
from pine.config.schema import PineConfig
from pine.contracts import ContractMapError, load_contract_map
from pine.heartbeat import Heartbeat
from pine.notify.notifier import Notifier
from pine.redis_server import RedisUnavailableError, connect, redact_url, resolve_redis_url

log = logging.getLogger(__name__)

PROGRESS_EVERY: Final = 1_000_000
# Longest sleep while pacing, so the heartbeat keeps being written across market closures.
PACE_SLICE_S: Final = 1.0
# The live hub's Redis calls fail fast and are retried by the hub itself, in order: redis-py's own
# retries would block the feed for seconds and could apply a publish transaction twice.
LIVE_REDIS_CONNECT_TIMEOUT_S: Final = 1.0
LIVE_REDIS_TIMEOUT_S: Final = 2.0


@dataclass
class ReplayStats:
    """What a replay did."""

    files: int = 0
    records: int = 0
    trades: int = 0
    bars_published: int = 0
    duplicates_skipped: int = 0
    data_clock: datetime | None = None
    ignored: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0


def parse_speed(text: str) -> float | None:
    """``max`` → None (as fast as possible); otherwise a positive factor of real time."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = 0.0
    if not speed > 0 or speed == float("inf"):
        raise ValueError(f"--speed must be 'max' or a positive number, got {text!r}")
    return speed


def replay_files(paths: Sequence[Path]) -> list[Path]:
    """Files to replay in order; a directory stands for its ``*.dbn`` / ``*.dbn.zst`` files by name."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.endswith((".dbn", ".dbn.zst")))
            if not found:
                raise FileNotFoundError(f"{path}: no .dbn or .dbn.zst files in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file")
    return files


def configured_roots(cfg: PineConfig) -> list[str]:
    """Every root of ``cfg.instruments``; each must be in the contract map."""
    contract_map = load_contract_map(cfg.contract_map_path)
    unknown = sorted(r for r in cfg.instruments if r not in contract_map)
    if unknown:
        raise ContractMapError(f"{contract_map.source}: configured instrument(s) {', '.join(unknown)} are missing")
    return sorted(cfg.instruments)


class _Pacer:
    """Holds data time to ``speed`` × wall time (None: no pacing)."""

    def __init__(self, speed: float | None, idle: Callable[[], Any]) -> None:
        self.speed = speed
        self.idle = idle
        self._origin: tuple[float, float] | None = None

    def wait_until(self, data_time: datetime) -> None:
        if self.speed is None:
            return
        t = data_time.timestamp()
        if self._origin is None:
            self._origin = (t, time.monotonic())
            return
        due = self._origin[1] + (t - self._origin[0]) / self.speed
        while (delay := due - time.monotonic()) > 0:
            time.sleep(min(delay, PACE_SLICE_S))
            self.idle()


def run_replay(
    cfg: PineConfig,
    files: Sequence[Path],
    client: redis.Redis,
    *,
    speed: float | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> ReplayStats:
    """Replay ``files`` in order into Redis; raises DBNFileError on a corrupt or truncated file.

    ``speed`` None replays as fast as possible; a factor paces data time at that multiple of wall time.
    """
    agg = Aggregator(configured_roots(cfg), cfg.sessions.calendar())
    publisher = BarPublisher(client)
    heartbeat = Heartbeat("hub", cfg.heartbeat, cfg.runtime_dir, client)
    stats = ReplayStats()
    started = time.perf_counter()

    def status() -> dict[str, Any]:
        stats.records, stats.trades = agg.records, agg.trades
        stats.bars_published, stats.duplicates_skipped = publisher.published, publisher.duplicates_skipped
        stats.data_clock, stats.ignored = agg.clock, dict(agg.ignored)
        stats.elapsed_s = time.perf_counter() - started
        return {
            "mode": "replay",
            "records": stats.records,
            "trades": stats.trades,
            "bars_published": stats.bars_published,
            "duplicates_skipped": stats.duplicates_skipped,
            "data_clock": stats.data_clock.isoformat() if stats.data_clock else None,
            "files_done": stats.files,
            "files": len(files),
        }

    pacer = _Pacer(speed, lambda: heartbeat.beat("running", **status()))
    heartbeat.beat("running", force=True, **status())
    next_progress = progress_every
    try:
        for path in files:
            log.info("replaying %s (%.1f MB)", path, path.stat().st_size / 1e6)
            on_record = agg.on_record
            for record in iter_file(path):
                boundary = on_record(record)
                if boundary is None:
                    continue
                pacer.wait_until(boundary.watermark)
                publisher.publish(boundary.bars, boundary.watermark)
                heartbeat.beat("running", **status())
                if agg.records >= next_progress:
                    next_progress += progress_every
                    _log_progress(status(), stats.elapsed_s)
            stats.files += 1
    except (DBNFileError, redis.RedisError) as exc:
        heartbeat.beat("failed", force=True, error=str(exc), **status())
        raise
    except KeyboardInterrupt:
        heartbeat.beat("stopped", force=True, **status())
        raise
    final = agg.flush()
    publisher.publish(final.bars, final.watermark, state="finished")
    heartbeat.beat("finished", force=True, **status())
    _log_progress(status(), stats.elapsed_s)
    if stats.ignored:
        log.info("trades not aggregated: %s", ", ".join(f"{k} {v:,}" for k, v in sorted(stats.ignored.items())))
    if stats.ignored.get("late"):
        log.warning("%s trades arrived after their minute was closed (files out of time order?)",
                    f"{stats.ignored['late']:,}")
    return stats


def _log_progress(status: dict[str, Any], elapsed: float) -> None:
    log.info(
        "%s records, %s trades, %s bars published (%s duplicates skipped), data clock %s, %.1fs",
        f"{status['records']:,}", f"{status['trades']:,}", f"{status['bars_published']:,}",
        f"{status['duplicates_skipped']:,}", status["data_clock"], elapsed,
    )


def hub_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """``pine hub``: 0 after a complete replay or a requested stop, 1 on bad data, no Redis or a fatal
    feed error, 2 on unusable arguments or no API key."""
    if args.replay is None:
        return live_command(cfg, args)
    if args.record is not None:
        print("pine hub: --record records the live feed; it cannot be combined with --replay", file=sys.stderr)
        return 2
    try:
        speed = parse_speed(args.speed)
    except ValueError as exc:
        print(f"pine hub: {exc}", file=sys.stderr)
        return 2
    try:
        files = replay_files(args.replay)
        url = resolve_redis_url(cfg.redis.resolved_url(), cfg.runtime_dir)
        client = connect(url)
    except (FileNotFoundError, RedisUnavailableError) as exc:
        print(f"pine hub: {exc}", file=sys.stderr)
        return 1
    log.info("publishing to Redis at %s", redact_url(url))
    notifier = Notifier(cfg, "hub", client=client).start()
    notifier.started(f"replay of {len(files)} DBN file(s)")
    outcome = "failed"
    try:
        stats = run_replay(cfg, files, client, speed=speed)
        outcome = "finished"
    except (DBNFileError, ContractMapError) as exc:
        print(f"pine hub: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        print(f"pine hub: Redis failed during the replay: {exc}", file=sys.stderr)
        return 1
    finally:
        notifier.stopped(outcome, "replay complete" if outcome == "finished" else "the replay stopped on an error")
        notifier.close()
        client.close()
    print(
        f"replayed {stats.files} file(s): {stats.records:,} records, {stats.trades:,} trades, "
        f"{stats.bars_published:,} bars published, {stats.duplicates_skipped:,} duplicates skipped "
        f"in {stats.elapsed_s:.1f}s"
    )
    return 0


def live_command(cfg: PineConfig, args: argparse.Namespace) -> int:
    """``pine hub`` without ``--replay``: the live feed until SIGTERM/SIGINT, a shutdown command or a fatal error."""
    from hub.live import ApiKeyError, FeedSettings, check_api_key
    from hub.supervisor import LiveHub

    configured = cfg.databento.api_key.get_secret_value() if cfg.databento.api_key is not None else None
    try:
        key = check_api_key(configured or os.environ.get("DATABENTO_API_KEY"))
    except ApiKeyError as exc:
        print(f"pine hub: {exc}", file=sys.stderr)
        return 2
    if cfg.databento.schema_ != "trades":
        print(f"pine hub: databento.schema must be 'trades' (bars are built from trades), got "
              f"{cfg.databento.schema_!r}", file=sys.stderr)
        return 2
    try:
        roots = configured_roots(cfg)
        url = resolve_redis_url(cfg.redis.resolved_url(), cfg.runtime_dir)
        connect(url).close()
    except (ContractMapError, RedisUnavailableError) as exc:
        print(f"pine hub: {exc}", file=sys.stderr)
        return 1
    # The client logs every symbol mapping (hundreds of spreads) at INFO; the hub reports what matters.
    logging.getLogger("databento").setLevel(max(logging.WARNING, logging.getLogger().level))
    client = redis.Redis.from_url(url, socket_connect_timeout=LIVE_REDIS_CONNECT_TIMEOUT_S,
                                  socket_timeout=LIVE_REDIS_TIMEOUT_S, retry=Retry(NoBackoff(), 0))
    log.info("publishing to Redis at %s", redact_url(url))
    settings = FeedSettings(key=key, dataset=cfg.databento.dataset,
                            parents=tuple(cfg.instruments[r].databento_product_id for r in roots),
                            heartbeat_s=cfg.hub.feed_heartbeat_s, gateway=cfg.hub.gateway, port=cfg.hub.port)
    hub = LiveHub(cfg, settings, roots, client, record_dir=args.record)

    def on_signal(signum: int, frame: Any) -> None:
        hub.request_stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    notifier = Notifier(cfg, "hub", client=client).start()
    notifier.started(f"live feed {cfg.databento.dataset}: {', '.join(roots)}")
    code = 1
    try:
        code = hub.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        notifier.stopped("stopped" if code == 0 else "failed", str(hub.fatal or "stop requested"))
        notifier.close()
        client.close()
    if code:
        print(f"pine hub: {hub.fatal}", file=sys.stderr)
    else:
        status = hub.status()
        print(f"live hub stopped: {status['trades']:,} trades, {status['bars_published']:,} bars published "
              f"({status['corrected_bars']} corrected), {status['gaps_total']} feed gap(s), "
              f"{status['feed']['reconnects']} reconnect(s)")
    return code
