"""ML models end to end on a real MLflow sqlite store: train → register → promote → serve, rollback, failures.

The market has a learnable signal (the traded roots drift with ES's previous session), so
a trained model is measurably better than one fitted to the opposite labels.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from ml.history import BarHistory
from ml.registry import CHAMPION, PREVIOUS, Registry, RegistryError, tracking_uri
from ml.serving import FeatureMismatchError, FeaturesNotReadyError, ModelLoadError, load_champion, load_champions
from ml.training import TrainResult, make_classifier, train_symbol
from pine.cli import main
from pine.config import load_config
from tests.conftest import REPO
from tests.ml_support import STRATEGY, ml_market, write_caches, write_ml_config

NAME = f"{STRATEGY}_CL"


@pytest.fixture(scope="module")
def warmup_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bar caches of 500 sessions with the ES lead-lag signal (read-only for the tests)."""
    return write_caches(tmp_path_factory.mktemp("ml") / "warmup", ml_market(500, beta=3.0))


@pytest.fixture(scope="module")
def trained(warmup_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    cfg = load_config(write_ml_config(tmp_path_factory.mktemp("cfg") / "config.yml"))
    return train_symbol(cfg, STRATEGY, "CL", BarHistory(warmup_dir))


@pytest.fixture(scope="module")
def inverted(trained: TrainResult) -> TrainResult:
    """The same trades fitted to the opposite outcome: a candidate that keeps losers and vetoes winners."""
    train = trained.dataset.samples.iloc[trained.split.train]
    x, y = train[trained.features].to_numpy(dtype=float), train["label"].to_numpy()
    return replace(trained, model=make_classifier(0.1).fit(x, 1 - y))


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    return Path(os.environ["PINE_RUNTIME_DIR"])


def test_training_learns_the_signal_with_walk_forward_validation(trained: TrainResult) -> None:
    m = trained.metrics
    assert m["val_auc"] > 0.65 and m["heldout_auc"] > 0.65, m
    coef = dict(zip(trained.features, trained.model[-1].coef_[0], strict=True))
    assert max(coef, key=lambda f: abs(coef[f])) == "ES_ret_1d"
    # The threshold keeps at least min_kept_fraction of the validation trades, and the veto pays on held-out trades.
    assert 0 < trained.threshold < 1
    assert trained.validation.kept >= 0.25 * trained.validation.trades
    held = trained.heldout_metrics
    assert held.pnl_kept > held.pnl_all and held.precision > held.base_rate
    assert held.kept + held.vetoed == held.trades == trained.params["trades_heldout"]
    # Walk-forward folds on the real trades: no training label horizon reaches its test window (+ embargo).
    train = trained.dataset.samples.iloc[trained.split.train].reset_index(drop=True)
    embargo = np.timedelta64(2, "D")
    for fold in trained.folds:
        first_test = train["decision_time"].iloc[fold.test].min()
        assert (train["exit_time"].iloc[fold.train] < first_test - embargo).all()
    first_held = trained.heldout["decision_time"].min()
    assert (train["exit_time"] < first_held - embargo).all()
    assert trained.params["missing_feeds"] == "6E_day,6J_day,PL_day,VIX_day"


def test_register_promote_and_serve_the_champion(trained: TrainResult, runtime: Path) -> None:
    registry = Registry(runtime)
    assert registry.uri == f"sqlite:///{runtime / 'mlflow' / 'mlflow.db'}"
    reg = registry.register(trained)
    assert (reg.name, reg.version) == (NAME, "1")
    promotion = registry.promote(STRATEGY, "CL")
    assert promotion.promoted and promotion.candidate == "1" and "no champion yet" in promotion.reason

    model = load_champion(STRATEGY, "CL", runtime, computed=trained.features)
    assert model is not None and model.version == "1" and model.name == NAME
    assert model.features == trained.features and model.threshold == trained.threshold
    assert model.sklearn_mismatch is None
    row = trained.heldout.iloc[0]
    decision = model.decide({**row[trained.features].to_dict(), "not_a_model_feature": 1.0})
    expected = trained.model.predict_proba(row[trained.features].to_numpy(dtype=float).reshape(1, -1))[0, 1]
    assert decision.score == pytest.approx(expected)
    assert decision.take == (decision.score >= trained.threshold) and decision.version == "1"
    assert list(decision.features) == trained.features
    # A worker loads all its symbols at once: GC has no model and trades without veto.
    both = load_champions(STRATEGY, {"CL": trained.features, "GC": trained.features}, runtime)
    assert both["GC"] is None and both["CL"] is not None and both["CL"].version == "1"

    # Lineage in MLflow: params, metrics, features, windows, sklearn version, signature and input example.
    client = registry.client
    run = client.get_run(reg.run_id)
    assert run.data.params["train_start"] == trained.params["train_start"]
    assert run.data.params["sklearn_version"] == trained.params["sklearn_version"]
    assert float(run.data.params["threshold"]) == pytest.approx(trained.threshold)
    assert run.data.metrics["heldout_pnl_kept"] == pytest.approx(trained.heldout_metrics.pnl_kept)
    assert {"val_precision", "val_pf_kept", "val_pnl_vetoed", "heldout_kept", "val_auc"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(reg.run_id)}
    assert {"features.json", "heldout.parquet", "trades.parquet", "walk_forward.json"} <= artifacts
    features_doc = json.loads(Path(client.download_artifacts(reg.run_id, "features.json", str(runtime))).read_text())
    assert features_doc["features"] == trained.features and features_doc["missing_feeds"] == ["6E_day", "6J_day",
                                                                                                "PL_day", "VIX_day"]
    model_dir = next((runtime / "mlflow" / "artifacts" / "models").glob("*/artifacts"))
    mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert [c["name"] for c in json.loads(mlmodel["signature"]["inputs"])] == trained.features
    assert (model_dir / "input_example.json").exists() and (model_dir / "model.skops").exists()
    assert mlmodel["metadata"]["pine"]["train_end"] == trained.params["train_end"]
    tags = client.get_model_version(NAME, "1").tags
    assert tags["symbol"] == "CL" and tags["heldout_window"].startswith(trained.params["heldout_start"])


def test_worse_candidate_is_not_promoted(trained: TrainResult, inverted: TrainResult, runtime: Path) -> None:
    registry = Registry(runtime)
    registry.register(trained)
    assert registry.promote(STRATEGY, "CL").promoted
    registry.register(inverted)
    decision = registry.promote(STRATEGY, "CL")
    assert not decision.promoted and (decision.candidate, decision.champion) == ("2", "1")
    assert "candidate v2 pnl" in decision.reason and "vs champion v1" in decision.reason
    assert "does not beat it by more than 0.0" in decision.reason
    assert registry.client.get_model_version_by_alias(NAME, CHAMPION).version in ("1", 1)
    logged = json.loads(registry.client.get_model_version(NAME, "2").tags["pine.promotion"])
    assert logged["promoted"] is False and logged["reason"] == decision.reason
    served = load_champion(STRATEGY, "CL", runtime)
    assert served is not None and served.version == "1"
    # A candidate that is already champion, or nothing registered, is reported, not promoted.
    assert "no registered version" in registry.promote(STRATEGY, "GC").reason


def test_better_candidate_needs_the_margin_then_rollback_restores(
    trained: TrainResult, inverted: TrainResult, runtime: Path
) -> None:
    registry = Registry(runtime)
    registry.register(inverted)
    assert registry.promote(STRATEGY, "CL").promoted  # first champion: nothing to beat
    registry.register(trained)
    held_out_gain = trained.heldout_metrics.pnl_kept
    blocked = registry.promote(STRATEGY, "CL", margin=abs(held_out_gain) * 10 + 1e6)
    assert not blocked.promoted and "does not beat it by more than" in blocked.reason
    promoted = registry.promote(STRATEGY, "CL")
    assert promoted.promoted and (promoted.candidate, promoted.champion) == ("2", "1")
    assert "beats it by more than 0.0" in promoted.reason
    status = registry.status(STRATEGY, "CL")
    assert status is not None and (status.champion, status.previous, status.history) == ("2", "1", ["1", "2"])
    assert load_champion(STRATEGY, "CL", runtime).version == "2"  # type: ignore[union-attr]

    back = registry.rollback(STRATEGY, "CL")
    assert back.reason == "rolled back from version 2 to version 1"
    status = registry.status(STRATEGY, "CL")
    assert status is not None and (status.champion, status.previous, status.history) == ("1", None, ["1"])
    assert load_champion(STRATEGY, "CL", runtime).version == "1"  # type: ignore[union-attr]
    assert "pine.rolled_back_at" in registry.client.get_model_version(NAME, "2").tags
    with pytest.raises(RegistryError, match="version 1 is the first champion; nothing to roll back to"):
        registry.rollback(STRATEGY, "CL")
    # The rolled-back version can win again; the history keeps every champion.
    assert registry.promote(STRATEGY, "CL").promoted
    assert registry.status(STRATEGY, "CL").history == ["1", "2"]  # type: ignore[union-attr]
    assert registry.client.get_model_version_by_alias(NAME, PREVIOUS).version in ("1", 1)


def _model_dir(runtime: Path) -> Path:
    (path,) = (runtime / "mlflow" / "artifacts" / "models").glob("*/artifacts")
    return path


def test_corrupt_artifact_is_a_clear_error(trained: TrainResult, runtime: Path) -> None:
    registry = Registry(runtime)
    registry.register(trained)
    registry.promote(STRATEGY, "CL")
    (_model_dir(runtime) / "model.skops").write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(ModelLoadError, match=r"model ibs_ml_CL version 1: model\.skops is not a loadable skops model"):
        load_champion(STRATEGY, "CL", runtime)
    with pytest.raises(ModelLoadError, match=r"^model ibs_ml_CL version 1: model\.skops"):
        load_champions(STRATEGY, {"GC": [], "CL": trained.features}, runtime)
    (_model_dir(runtime) / "MLmodel").write_text("flavors: [unbalanced")
    with pytest.raises(ModelLoadError, match=r"model ibs_ml_CL version 1: cannot read its artifact"):
        load_champion(STRATEGY, "CL", runtime)


def test_corrupt_candidate_is_not_promoted(trained: TrainResult, runtime: Path) -> None:
    registry = Registry(runtime)
    registry.register(trained)
    (_model_dir(runtime) / "model.skops").write_bytes(b"garbage")
    decision = registry.promote(STRATEGY, "CL")
    assert not decision.promoted and "candidate version 1 unusable: model ibs_ml_CL version 1" in decision.reason


def test_feature_mismatch_and_unready_features_are_clear_errors(trained: TrainResult, runtime: Path) -> None:
    registry = Registry(runtime)
    registry.register(trained)
    registry.promote(STRATEGY, "CL")
    computed = [f for f in trained.features if f not in ("ES_ret_1d", "ZB_hour_ret_1h")] + ["ES_ret_2d"]
    with pytest.raises(FeatureMismatchError, match=r"model ibs_ml_CL version 1 needs feature\(s\) the worker does not "
                                                   r"compute: ES_ret_1d, ZB_hour_ret_1h \(the worker computes, unused "
                                                   r"by the model: ES_ret_2d\)"):
        load_champion(STRATEGY, "CL", runtime, computed=computed)
    model = load_champion(STRATEGY, "CL", runtime)
    assert model is not None
    values = trained.heldout.iloc[0][trained.features].to_dict()
    with pytest.raises(FeaturesNotReadyError, match=r"ibs_ml_CL version 1: features not ready: rv_20d, ret_4h"):
        model.decide({**values, "rv_20d": None, "ret_4h": float("nan")})


def test_sklearn_version_mismatch_is_reported(
    trained: TrainResult, runtime: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sklearn

    registry = Registry(runtime)
    registry.register(trained)
    registry.promote(STRATEGY, "CL")
    mlmodel = _model_dir(runtime) / "MLmodel"
    doc = yaml.safe_load(mlmodel.read_text())
    doc["flavors"]["sklearn"]["sklearn_version"] = "1.7.1"
    mlmodel.write_text(yaml.safe_dump(doc))
    with caplog.at_level(logging.WARNING, logger="ml.serving"):
        model = load_champion(STRATEGY, "CL", runtime)
    assert model is not None
    expected = f"model ibs_ml_CL version 1 was trained with scikit-learn 1.7.1, this process runs scikit-learn " \
               f"{sklearn.__version__}"
    assert model.sklearn_mismatch is not None and model.sklearn_mismatch.startswith(expected)
    assert expected in caplog.text
    assert model.decide(trained.heldout.iloc[0][trained.features].to_dict()).version == "1"


def test_symbol_without_champion_trades_without_veto(trained: TrainResult, runtime: Path) -> None:
    assert load_champion(STRATEGY, "CL", runtime) is None
    Registry(runtime).register(trained)  # registered, never promoted
    assert load_champion(STRATEGY, "CL", runtime) is None


def test_workers_never_create_the_registry(tmp_path: Path) -> None:
    # Several workers starting on a fresh runtime dir would race MLflow's migrations of a new store.
    assert load_champions(STRATEGY, {"CL": ["ibs"], "GC": ["ibs"]}, tmp_path) == {"CL": None, "GC": None}
    assert not (tmp_path / "mlflow").exists()


def test_tracking_uri_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_cli_train_promote_status_rollback(
    warmup_dir: Path, runtime: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_ml_config(tmp_path / "config.yml"))
    assert main(["ml", "train", "--config", config, "--symbols", "CL"]) == 1
    assert "pine warmup build" in capsys.readouterr().err
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / "warmup").symlink_to(warmup_dir)

    assert main(["ml", "train", "--config", config, "--symbols", "CL"]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}: registered version 1" in out and "held-out:" in out
    assert main(["ml", "promote", "--config", config, "--strategy", STRATEGY]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}: promoted version 1: no champion yet" in out
    assert f"{STRATEGY}_GC: not promoted: no registered version" in out
    assert main(["ml", "status", "--config", config]) == 0
    out = capsys.readouterr().out
    assert f"{NAME}: 1 version(s), latest v1; champion v1 (threshold" in out
    assert f"{STRATEGY}_GC: no registered model (trades without veto)" in out
    assert main(["ml", "rollback", "--config", config, "--strategy", STRATEGY, "--symbol", "CL"]) == 1
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["ml", "train", "--config", config, "--strategy", "nope"]) == 2
    assert "unknown strategy 'nope'" in capsys.readouterr().err


def test_cli_does_not_import_mlflow_until_an_ml_command_runs() -> None:
    code = "import sys, pine.cli; pine.cli.build_parser(); print('mlflow' in sys.modules, 'ml.registry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
