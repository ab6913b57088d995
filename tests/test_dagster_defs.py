"""The Dagster code location: ``contract_map`` materialises, its check guards the config, everything loads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.contract_map import contract_map, instruments_match_contract_map
from orchestration.definitions import defs
from orchestration.resources import PineConfigResource
from pine.contracts import ContractMap

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "data" / "config.multi_alpha.example.yml"
CONTRACT_MAP = REPO / "data" / "contract_map.yml"
DAGSTER = Path(sys.executable).parent / "dagster"
CHECK_KEY = dg.AssetCheckKey(dg.AssetKey("contract_map"), "instruments_match_contract_map")
ROOTS = 22


@pytest.fixture(autouse=True)
def _sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No developer .env from the repository root; undo what .env files write into os.environ."""
    saved = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    yield
    os.environ.clear()
    os.environ.update(saved)


def _materialize(config: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [contract_map, instruments_match_contract_map],
        resources={"pine_config": PineConfigResource(config_path=str(config))},
        raise_on_error=False,
    )


def _config_with(tmp_path: Path, text_edits: dict[str, str]) -> Path:
    text = EXAMPLE.read_text()
    for old, new in text_edits.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_materialize_contract_map_from_the_example_config() -> None:
    result = _materialize(EXAMPLE)
    assert result.success

    cmap = result.output_for_node("contract_map")
    assert isinstance(cmap, ContractMap)
    assert len(cmap.roots()) == ROOTS
    assert all(cmap[root].parent == f"{root}.FUT" for root in cmap.roots())

    (materialization,) = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    assert metadata["roots"] == dg.MetadataValue.int(ROOTS)
    assert metadata["source"] == dg.MetadataValue.path(str(CONTRACT_MAP))
    preview = metadata["preview"].value
    assert preview.startswith("| root | parent | exchange | multiplier | tick size | months |")
    assert "| ES | ES.FUT | CME | 50 | 0.25 | HMUZ |" in preview
    assert "| 6J | 6J.FUT | CME | 12500000 | 0.0000005 | HMUZ |" in preview
    assert len(preview.splitlines()) == 2 + ROOTS

    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == CHECK_KEY
    assert evaluation.passed
    assert evaluation.metadata["instruments checked"] == dg.MetadataValue.int(19)


def test_check_fails_when_an_instrument_disagrees_with_the_map(tmp_path: Path) -> None:
    config = _config_with(tmp_path, {"tick_size: 0.25,    databento_product_id: ES.FUT":
                                     "tick_size: 0.5,     databento_product_id: ES.FUT"})
    result = _materialize(config)
    # The map itself is fine and is materialised; the blocking check fails the run.
    assert len(result.get_asset_materialization_events()) == 1
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "instruments.ES.tick_size: 0.5 disagrees with contract map" in evaluation.metadata["mismatches"].value
    assert not result.success


def test_broken_config_fails_the_asset_naming_key_paths_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABENTO_API_KEY", "db-CANARY-dagster-0123456789")
    max_positions = re.search(r"max_positions: \d+", EXAMPLE.read_text())
    assert max_positions is not None
    config = _config_with(tmp_path, {max_positions.group(0): "max_positions: 0",
                                     "${DATABENTO_API_KEY:-}": "${DATABENTO_API_KEY}"})
    result = _materialize(config)
    assert not result.success
    assert result.get_asset_materialization_events() == []
    (failure,) = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description == f"{config}: portfolio.max_positions: Input should be greater than or equal to 1"
    assert "CANARY" not in repr(result.all_events)


def test_definitions_load_and_list_the_asset() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey("contract_map")
    assert key in graph.get_all_asset_keys()
    assert graph.get(key).group_name == "reference"
    assert CHECK_KEY in graph.asset_check_keys
    assert isinstance(defs.resources["pine_config"], PineConfigResource)
    warmup = dg.AssetKey("warmup_cache")
    assert graph.get(warmup).group_name == "market_data"
    assert {"ES", "CL", "ZB"} <= set(graph.get(warmup).partitions_def.get_partition_keys())
    assert {c.name for c in graph.get_check_keys_for_assets({warmup})} == {
        "no_gaps", "no_duplicate_bars", "daily_bars_end_at_session_close"}
    reconciliation = dg.AssetKey("daily_reconciliation")
    assert graph.get(reconciliation).group_name == "operations"
    assert {c.name for c in graph.get_check_keys_for_assets({reconciliation})} == {
        "live_trades_match_backtest", "orders_acknowledged", "coordinator_matches_positions"}
    assert set(defs.resolve_job_def("daily_summary_job").asset_layer.executable_asset_keys) == {
        dg.AssetKey("daily_summary"), reconciliation}
    assert {graph.get(dg.AssetKey(k)).group_name for k in ("ml_models", "champion_models")} == {"ml"}
    assert graph.get(dg.AssetKey("bar_audit")).group_name == "market_data"
    assert {s.name for s in defs.schedules or []} == {"daily_summary", "warmup_refresh"}
    assert set(defs.resolve_job_def("warmup_refresh_job").asset_layer.executable_asset_keys) == {warmup}


def test_dagster_yaml_is_a_valid_instance_config(tmp_path: Path) -> None:
    shutil.copy(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.run_monitoring_enabled
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        run_queue = instance.get_concurrency_config().run_queue_config
        assert run_queue is not None
        assert {"key": "pine/process", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            run_queue.tag_concurrency_limits
        )
        # Storage is the default: SQLite under the instance directory.
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert str(tmp_path) in instance.root_directory
    finally:
        instance.dispose()


def test_workspace_loads_with_the_dagster_cli(tmp_path: Path) -> None:
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "orchestration.definitions"
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    # A config path that does not exist proves that loading the code location reads no config.
    env = {**os.environ, "DAGSTER_HOME": str(home), "PINE_CONFIG": str(tmp_path / "absent.yml")}

    validate = subprocess.run(
        [str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert validate.returncode == 0, validate.stderr
    assert "Validation successful for code location pine" in validate.stderr + validate.stdout

    listing = subprocess.run(
        [str(DAGSTER), "asset", "list", "-m", "orchestration.definitions"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == [
        "bar_audit", "champion_models", "contract_map", "daily_reconciliation", "daily_summary", "ml_models",
        "warmup_cache"]
