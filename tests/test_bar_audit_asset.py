"""``bar_audit``: a symbol's cached bars and the bars the hub published on Redis, against the bars its recorded
trades (the DBN archive) make."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
import redis

from assets.bar_audit import MATCH, PUBLISHED, bar_audit
from hub.history import archive_files, build_caches
from hub.main import run_replay
from hub.synthetic import write_synthetic_market
from orchestration.resources import PineConfigResource, RedisResource
from pine import redis_names
from pine.bar_cache import bars_frame, cache_path, complete_through, read_bar_list, write_bars
from pine.bars import Bar
from pine.bus import BAR_FIELD, BarPublisher
from pine.config import load_config
from pine.contracts import load_contract_map
from tests.conftest import REPO

EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
MONDAY = "2024-03-11"  # the last session of the archive (Fri 8 and Mon 11 March 2024)


@pytest.fixture
def runtime(redis_url: str) -> Path:
    """Two synthetic CL days in the archive, caches built from it, and the archive replayed by the hub into Redis."""
    runtime = Path(os.environ["PINE_RUNTIME_DIR"])
    cfg = load_config(EXAMPLE)
    write_synthetic_market(runtime / "market", ["CL"], date(2024, 3, 8), 2, 7, load_contract_map(cfg.contract_map_path))
    build_caches(cfg, ["CL"], source="archive")
    client = redis.Redis.from_url(redis_url)
    try:
        run_replay(cfg, archive_files([runtime / "market"]), client)
    finally:
        client.close()
    return runtime


def _audit(redis_url: str, trading_day: str | None = None) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"bar_audit": {"config": {"trading_day": trading_day}}}} if trading_day else None
    return dg.materialize([bar_audit], partition_key="CL", raise_on_error=False, run_config=run_config,
                          resources={"pine_config": PineConfigResource(config_path=str(EXAMPLE)),
                                     "redis": RedisResource(url=redis_url)})


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


def _stream_bars(client: redis.Redis, timeframe: str) -> list[tuple[str, Bar]]:
    return [(i.decode(), Bar.from_json(f[BAR_FIELD.encode()])) for i, f in
            client.xrange(redis_names.stream("CL", timeframe))]


def test_caches_from_the_archive_pass_and_an_altered_bar_is_named(runtime: Path, redis_url: str) -> None:
    clean = _audit(redis_url)
    assert clean.success
    (event,) = clean.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["audited_through"].value == "2024-03-11T22:00:00+00:00"
    assert meta["compared_daily"] == dg.MetadataValue.int(2) and meta["compared_1min"].value > 1000
    assert meta["published_day"].value == MONDAY
    assert meta["published_daily"] == dg.MetadataValue.int(1) and meta["published_1min"].value > 500
    checks = _checks(clean)
    assert set(checks) == {MATCH, PUBLISHED} and all(c.passed for c in checks.values())

    # One recorded hourly bar with a wrong high, as a faulty recorder or a bad OHLCV fetch would leave it.
    path = cache_path(runtime / "warmup", "CL", "hourly")
    bars = read_bar_list(path)
    bad = replace(bars[10], high=bars[10].high + 1.0)
    write_bars(path, bars_frame([*bars[:10], bad, *bars[11:]]), complete_through=complete_through(path))
    checks = _checks(_audit(redis_url))
    check = checks[MATCH]
    assert not check.passed
    assert check.metadata["differences"] == dg.MetadataValue.int(1)
    assert check.metadata["differences_hourly"] == dg.MetadataValue.int(1)
    assert f"hourly {bad.timestamp.isoformat()}: recorded" in check.metadata["examples"].value
    assert checks[PUBLISHED].passed  # what the hub published is untouched


def test_a_published_bar_altered_deleted_or_unsupported_by_trades_fails_the_check_naming_it(
        runtime: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    minutes = [b for _, b in _stream_bars(client, "1min") if b.timestamp.date() == date(2024, 3, 11)]
    hours = _stream_bars(client, "hourly")
    # A late-trade correction the recorded trades do not support, appended by the real publisher.
    altered = replace(minutes[100], volume=minutes[100].volume + 7, corrected=True)
    BarPublisher(client).publish([altered], altered.end)
    # An hourly bar lost from the stream, a minute bar no trade supports (the market stopped at 16:00 CT) and an
    # entry that is no bar.
    deleted_id, deleted = hours[-3]
    client.xdel(redis_names.stream("CL", "hourly"), deleted_id)
    extra = replace(minutes[-1], timestamp=datetime(2024, 3, 11, 21, 30, tzinfo=UTC),
                    end=datetime(2024, 3, 11, 21, 31, tzinfo=UTC))
    client.xadd(redis_names.stream("CL", "1min"), {BAR_FIELD: extra.to_json()}, id="1710192600000-0")
    client.xadd(redis_names.stream("CL", "1min"), {BAR_FIELD: "{not json"}, id="1710192660000-0")  # not the hub's
    client.close()

    result = _audit(redis_url)
    assert result.success  # the asset materialises; its check reports the differences
    check = _checks(result)[PUBLISHED]
    assert not check.passed and check.description == f"4 published bar difference(s) on {MONDAY}"
    examples = check.metadata["examples"].value
    assert f"1min {altered.timestamp.isoformat()}: published" in examples and "≠ trades" in examples
    assert f"hourly {deleted.timestamp.isoformat()}: recomputed from the trades but not published" in examples
    assert "1min 2024-03-11T21:30:00+00:00: published but no trade supports it" in examples
    assert "1min entry 1710192660000-0: not a bar" in examples
    assert _checks(result)[MATCH].passed

    # Friday's session was published intact: auditing that day passes.
    friday = _audit(redis_url, "2024-03-08")
    assert _checks(friday)[PUBLISHED].passed
    assert friday.get_asset_materialization_events()[0].materialization.metadata["published_day"].value == (
        "2024-03-08")
    # A day the recorded trades do not cover cannot be audited: the step says which days they cover.
    outside = _audit(redis_url, "2024-03-12")
    assert not outside.success
    (failure,) = outside.get_step_failure_events()
    assert "not trading day 2024-03-12" in failure.step_failure_data.user_failure_data.description


def test_an_unreachable_redis_fails_the_published_check_saying_so(runtime: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _audit(f"redis://:s3cret@127.0.0.1:{port}/0")
    checks = _checks(result)
    assert checks[MATCH].passed
    check = checks[PUBLISHED]
    assert not check.passed
    assert check.description.startswith(f"Redis streams unreadable, published bars not audited: cannot reach Redis "
                                        f"at redis://***@127.0.0.1:{port}/0")
    assert "start Redis or set REDIS_URL" in check.description
    assert "s3cret" not in repr(result.all_events)
