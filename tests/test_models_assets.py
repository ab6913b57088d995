"""``ml_models`` and ``champion_models`` on a real MLflow sqlite store (the runtime dir's): train, register, gate."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from assets.models import CHAMPIONS, TRAINED, champion_models, ml_models
from ml.registry import Registry
from orchestration.resources import PineConfigResource
from tests.ml_support import STRATEGY, ml_market, write_caches, write_ml_config

MODELS = {f"{STRATEGY}_CL", f"{STRATEGY}_GC"}


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dg.MetadataValue]:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return event.materialization.metadata


@pytest.mark.slow
def test_models_are_registered_then_promoted_and_an_equal_candidate_is_not(tmp_path: Path) -> None:
    runtime = Path(os.environ["PINE_RUNTIME_DIR"])
    write_caches(runtime / "warmup", ml_market(500, beta=3.0))
    config = write_ml_config(tmp_path / "config.yml")

    def run() -> dg.ExecuteInProcessResult:
        result = dg.materialize([ml_models, champion_models],
                                resources={"pine_config": PineConfigResource(config_path=str(config))})
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert all(e.passed for e in evaluations), [e.metadata for e in evaluations]
        assert {e.asset_check_key.name for e in evaluations} == {TRAINED, CHAMPIONS}
        return result

    first = run()
    registered = _metadata(first, "ml_models")["registered"].value
    assert set(registered) == MODELS and all(m["version"] == "1" for m in registered.values())
    champions = _metadata(first, "champion_models")["champions"].value
    assert champions == registered  # no champion before: each first version is promoted
    registry = Registry(runtime)
    for name, model in registered.items():
        assert registry.client.get_model_version(name, "1").run_id == model["run_id"]
        assert f"| {name} | 1 | `{model['run_id']}` |" in _metadata(first, "ml_models")["models"].value

    # The same data again: version 2 equals the champion, which the gate (beat by more than the margin) keeps.
    second = run()
    assert {m["version"] for m in _metadata(second, "ml_models")["registered"].value.values()} == {"2"}
    assert _metadata(second, "champion_models")["champions"].value == champions
    assert "| no |" in _metadata(second, "champion_models")["decisions"].value
