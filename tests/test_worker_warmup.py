"""Worker warmup from parquet caches with the example config: ready, indicators equal to a run over the
whole history, reference feeds (ZB as TLT_day / ZB_hour), missing optional and required feeds."""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime
from pathlib import Path

import pytest
import redis
import yaml

from pine.bars import Bar
from pine.config import PineConfig, load_config
from pine.redis_server import connect
from tests.bar_factory import publish
from tests.conftest import REPO
from tests.warmup_support import write_caches, year_of_history
from workers.engine import StrategySetupError, backtest, resolve_strategy
from workers.main import Worker
from workers.preflight import run_preflight

EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
OPTIONAL_FEEDS = ["6E_day", "6E_hour", "6J_day", "6J_hour", "PL_day", "PL_hour", "VIX_day", "VIX_hour"]
# Features kept as rolling moments (re-summed once per window since their first bar): a run that starts
# earlier rounds differently in the last bits, so these are compared to 1e-12, everything else exactly.
ROLLING = {"range_ratio_20d", "rv_20d", "z_close_20d", "rv_24h", "ES_z_close_20d", "TLT_day_z_close_20d"}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[tuple[str, str], list[Bar]], datetime, Path]:
    """270 sessions of daily bars (the last 30 with hourly bars) for every example instrument, as caches."""
    roots = sorted(load_config(EXAMPLE).instruments)
    series, handover = year_of_history(roots)
    caches = tmp_path_factory.mktemp("caches")
    write_caches(caches, series, handover)
    return series, handover, caches


def _runtime(cfg: PineConfig, caches: Path) -> Path:
    warmup = cfg.runtime_path(cfg.warmup.cache_dir)
    shutil.copytree(caches, warmup)
    return warmup


def _run(cfg: PineConfig, strategy: str, redis_url: str) -> Worker:
    """A worker over empty streams whose hub has finished: it warms up, turns ready and ends."""
    client = connect(redis_url)
    publish(client, [], finish=True)
    worker = Worker(cfg, resolve_strategy(cfg, strategy), client, stop_at_end=True)
    assert worker.run() == 0
    return worker


def _full_history(cfg: PineConfig, strategy: str, series: dict[tuple[str, str], list[Bar]],
                  handover: datetime) -> dict[str, dict[str, float | None]]:
    """Indicators of a plain Backtrader run of the same strategy over every cached bar."""
    run = backtest(cfg, strategy, [b for bars in series.values() for b in bars], warmup_until=handover)
    return run.strategy.indicators()


def test_ibs_a_is_ready_from_caches_with_indicators_of_the_whole_history(redis_url: str, history: tuple) -> None:
    series, handover, caches = history
    cfg = load_config(EXAMPLE)
    _runtime(cfg, caches)
    worker = _run(cfg, "ibs_a", redis_url)
    assert worker.statuses == ["starting", "warming_up", "ready", "finished"]
    assert worker.warmup.handover == handover

    # 250 daily bars and 15 days of hourly bars of the 6 traded symbols and the 13 reference roots.
    feeds = worker.warmup.counts()
    assert set(feeds) == {f"{r}_{tf}" for r in ("6A", "6C", "6M", "CL", "GC", "HG", "ES", "NQ", "RTY", "YM", "NG",
                                                 "SI", "ZC", "ZS", "ZW", "6B", "6N", "6S") for tf in ("day", "hour")
                          } | {"TLT_day", "ZB_hour"}
    assert all(n == 250 for f, n in feeds.items() if f.endswith("_day"))
    assert {n for f, n in feeds.items() if f.endswith("_hour")} == {11 * 23}  # 11 sessions end in 15 calendar days
    assert worker.journal.stats.warmup_bars == feeds and worker.journal.stats.bars == {}

    got = worker.strategy.indicators()
    want = _full_history(cfg, "ibs_a", series, handover)
    assert set(got) == {"6A", "6C", "6M", "CL", "GC", "HG"}
    for symbol, values in got.items():
        assert set(values) == set(want[symbol]) and len(values) == 33  # IBS and the 32 ML features
        for name, value in values.items():
            assert value is not None, (symbol, name)
            if name in ROLLING:
                assert value == pytest.approx(want[symbol][name], rel=1e-12), (symbol, name)
            else:
                assert value == want[symbol][name], (symbol, name)
        # The optional roots have no feed here: neutral defaults.
        assert values["VIX_z_close_20d"] == values["PL_ret_1d"] == values["6E_ret_1d"] == 0.0

    beat = json.loads((cfg.runtime_dir / "heartbeat" / "worker_ibs_a.json").read_text())
    assert beat["status"] == "finished"
    assert beat["missing_feeds"] == OPTIONAL_FEEDS
    assert beat["warmup"] | {"seconds": 0} == {
        "state": "done", "source": "cache", "built_from": None, "handover": handover.isoformat(),
        "bars": sum(feeds.values()), "delivered": sum(feeds.values()), "stream_bars_skipped": 0, "seconds": 0}
    assert beat["ml_features"] == dict.fromkeys(got, "32/32")
    assert beat["orders_today"] == {} and beat["open_positions"] == {} and "uptime_s" in beat

    [history] = [c for c in run_preflight(cfg, resolve_strategy(cfg, "ibs_a"), connect(redis_url)).checks
                 if c.name == "history"]
    assert history.status == "ok" and history.detail.startswith("38 of 38 warmup caches")
    assert history.detail.endswith(f"complete through {handover.isoformat()}")


def test_breakout_is_ready_with_exactly_the_channels_of_the_whole_history(redis_url: str, history: tuple) -> None:
    series, handover, caches = history
    cfg = load_config(EXAMPLE)
    assert cfg.strategies["breakout"].enabled
    _runtime(cfg, caches)
    worker = _run(cfg, "breakout", redis_url)
    assert worker.statuses == ["starting", "warming_up", "ready", "finished"]
    assert worker.warmup.layout.references == ()
    got = worker.strategy.indicators()
    assert got == _full_history(cfg, "breakout", series, handover)  # windowed indicators: exactly equal
    assert set(got) == {"ES", "NQ", "RTY", "YM"} and all(None not in v.values() for v in got.values())


def _with(config: dict, path: Path) -> PineConfig:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return load_config(path)


def test_an_optional_feed_without_history_takes_neutral_defaults_and_is_reported(
        redis_url: str, history: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, _, caches = history
    doc = yaml.safe_load(EXAMPLE.read_text())
    # PL is configured (the hub would publish it) but has no warmup history; VIX is not configured at all.
    doc["instruments"]["PL"] = {"multiplier": 50, "tick_size": 0.10, "databento_product_id": "PL.FUT",
                                "exchange": "NYMEX"}
    cfg = _with(doc, tmp_path / "pl.yml")
    _runtime(cfg, caches)
    with caplog.at_level(logging.WARNING):
        worker = _run(cfg, "ibs_a", redis_url)
    assert "no warmup history for optional reference root(s) PL" in caplog.text
    assert worker.warmup.layout.missing_feeds == OPTIONAL_FEEDS
    assert {v["PL_ret_1d"] for v in worker.strategy.indicators().values()} == {0.0}
    beat = json.loads((cfg.runtime_dir / "heartbeat" / "worker_ibs_a.json").read_text())
    assert beat["missing_feeds"] == OPTIONAL_FEEDS


def test_a_required_feed_without_history_or_configuration_is_an_error_naming_it(
        redis_url: str, history: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, _, caches = history
    cfg = load_config(EXAMPLE)
    warmup = _runtime(cfg, caches)
    (warmup / "ZB" / "daily.parquet").unlink()
    client = connect(redis_url)
    publish(client, [], finish=True)
    worker = Worker(cfg, resolve_strategy(cfg, "ibs_a"), client, stop_at_end=True)
    with caplog.at_level(logging.ERROR):
        assert worker.run() == 1
    assert worker.statuses[-1] == "refused"
    assert f"TLT_day (ZB daily): {warmup / 'ZB' / 'daily.parquet'}" in caplog.text
    assert json.loads(redis.Redis.from_url(redis_url).get("heartbeat:worker:ibs_a"))["status"] == "refused"

    doc = yaml.safe_load(EXAMPLE.read_text())
    del doc["instruments"]["NG"]
    with pytest.raises(StrategySetupError, match=r"strategies\.ibs_a\.reference_feeds: required reference feed\(s\) "
                                                 r"NG_day/NG_hour \(NG\) not available"):
        resolve_strategy(_with(doc, tmp_path / "no_ng.yml"), "ibs_a")
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["strategies"]["ibs_a"]["reference_feeds"] = {"required": ["ES", "ZB"], "optional": ["VIX"]}
    with pytest.raises(StrategySetupError, match=r"strategies\.ibs_a\.reference_feeds: the ML features of the "
                                                 r"ML-enabled instruments need NQ, RTY, YM, NG, SI, ZC, ZS, ZW, 6B"):
        resolve_strategy(_with(doc, tmp_path / "few.yml"), "ibs_a")
