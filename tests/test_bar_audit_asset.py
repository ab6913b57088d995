"""``bar_audit``: a symbol's cached bars against the bars its recorded trades (the DBN archive) make."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import dagster as dg

from assets.bar_audit import MATCH, bar_audit
from hub.history import build_caches
from hub.synthetic import write_synthetic_market
from orchestration.resources import PineConfigResource
from pine.bar_cache import bars_frame, cache_path, complete_through, read_bar_list, write_bars
from pine.config import load_config
from pine.contracts import load_contract_map
from tests.conftest import REPO

EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"


def _audit() -> dg.ExecuteInProcessResult:
    return dg.materialize([bar_audit], partition_key="CL", raise_on_error=False,
                          resources={"pine_config": PineConfigResource(config_path=str(EXAMPLE))})


def test_caches_from_the_archive_pass_and_an_altered_bar_is_named() -> None:
    runtime = Path(os.environ["PINE_RUNTIME_DIR"])
    cfg = load_config(EXAMPLE)
    write_synthetic_market(runtime / "market", ["CL"], date(2024, 3, 8), 2, 7, load_contract_map(cfg.contract_map_path))
    build_caches(cfg, ["CL"], source="archive")

    clean = _audit()
    assert clean.success
    (event,) = clean.get_asset_materialization_events()
    meta = event.materialization.metadata
    assert meta["audited_through"].value == "2024-03-11T22:00:00+00:00"
    assert meta["compared_daily"] == dg.MetadataValue.int(2) and meta["compared_1min"].value > 1000
    (check,) = clean.get_asset_check_evaluations()
    assert check.asset_check_key.name == MATCH and check.passed

    # One recorded hourly bar with a wrong high, as a faulty recorder or a bad OHLCV fetch would leave it.
    path = cache_path(runtime / "warmup", "CL", "hourly")
    bars = read_bar_list(path)
    bad = replace(bars[10], high=bars[10].high + 1.0)
    write_bars(path, bars_frame([*bars[:10], bad, *bars[11:]]), complete_through=complete_through(path))
    altered = _audit()
    (check,) = altered.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["differences"] == dg.MetadataValue.int(1)
    assert check.metadata["differences_hourly"] == dg.MetadataValue.int(1)
    assert f"hourly {bad.timestamp.isoformat()}: recorded" in check.metadata["examples"].value
